//! Who may publish and subscribe to which topics: JWT verification and topic
//! patterns, as the contract's "Authorization" section describes.
//!
//! A token is a JWT signed with HS256 (a shared secret) or with RS256/ES256
//! (a key pair; the server holds only the public key). Its claim `tinysse`
//! lists topic patterns:
//!
//! ```json
//! {"exp": 1767225600, "tinysse": {"publish": ["orders/*"], "subscribe": ["user/42/*", "news"]}}
//! ```
//!
//! [`Authorizer`] verifies tokens and answers [`Authorizer::check_subscribe`]
//! and [`Authorizer::check_publish`] with a [`Grant`] or an [`AuthError`]
//! (`401` or `403`). [`token_from`] finds the token in a request. An embedding
//! program may replace all of it with its own check: anything implementing
//! [`Authorize`], closures included.
//!
//! Signatures are checked by the `jsonwebtoken` crate on its pure-Rust
//! backend (RustCrypto); HS256 tags are compared in constant time there
//! (`hmac`'s `verify_slice`). See `docs/auth.md`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::hub::valid_topic;
use crate::request::StreamRequest;

/// Clock skew allowed on `exp` and `nbf` unless [`Authorizer::with_leeway`]
/// says otherwise: a token is accepted until `exp` + 30 s, and from
/// `nbf` − 30 s.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Longer tokens are refused before any decoding: a token is sent on every
/// request, and a request head is bounded anyway.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The name of the cookie a browser's `EventSource` carries the token in.
pub const TOKEN_COOKIE: &str = "tinysse_token";

/// The query parameter that may carry the token.
pub const TOKEN_QUERY: &str = "access_token";

// ---------------------------------------------------------------------------
// Patterns

/// A topic pattern: a topic name (`news`), a prefix ending in `*`
/// (`user/42/*`), or `*` alone.
///
/// A prefix pattern matches every topic that starts with the text before the
/// `*`, taken literally, so `*` stands for zero or more characters:
/// `user/42/*` matches `user/42/x`, `user/42/a/b` and `user/42/` itself, but
/// not `user/42` nor `user/421/x`. End the prefix with `/` to mean "under
/// this path"; `user/42*` would also match `user/421`. `*` alone matches
/// every topic. A `*` anywhere but at the end is an error.
///
/// ```
/// use tinysse::Pattern;
///
/// let p: Pattern = "user/42/*".parse()?;
/// assert!(p.matches("user/42/x"));
/// assert!(p.matches("user/42/"));
/// assert!(!p.matches("user/421/x"));
/// assert!(!p.matches("user/42"));
/// assert!("user/*/x".parse::<Pattern>().is_err());
/// # Ok::<(), tinysse::PatternError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    prefix: bool,
}

/// A string that is not a topic pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    pattern: String,
    reason: &'static str,
}

impl PatternError {
    /// Why the pattern was refused, in a few words.
    ///
    /// ```
    /// let e = tinysse::Pattern::parse("a*b").unwrap_err();
    /// assert_eq!(e.reason(), "`*` may only end a pattern");
    /// ```
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Escaped and cut short: a pattern may come from an env var or a
        // file, and this text ends up on one line of stderr.
        let shown: String = self.pattern.chars().take(64).collect();
        write!(f, "invalid topic pattern {shown:?}: {}", self.reason)
    }
}

impl std::error::Error for PatternError {}

impl Pattern {
    /// Parses one pattern.
    ///
    /// ```
    /// use tinysse::Pattern;
    ///
    /// assert!(Pattern::parse("news").is_ok());
    /// assert!(Pattern::parse("orders/*").is_ok());
    /// assert!(Pattern::parse("*").is_ok());
    /// assert!(Pattern::parse("").is_err());
    /// assert!(Pattern::parse("bad topic").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Pattern, PatternError> {
        let err = |reason| {
            Err(PatternError {
                pattern: s.to_string(),
                reason,
            })
        };
        if s.is_empty() {
            return err("empty");
        }
        let (body, prefix) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        if body.contains('*') {
            return err("`*` may only end a pattern");
        }
        if prefix {
            // A prefix of 128 characters could only match topics longer
            // than the longest valid one.
            if body.len() >= 128 {
                return err("prefix longer than 127 characters");
            }
            if !body.is_empty() && !valid_topic(body) {
                return err("prefix has characters a topic cannot have (A-Z a-z 0-9 _ - . : /)");
            }
        } else if !valid_topic(body) {
            return err("not a topic name (1 to 128 of A-Z a-z 0-9 _ - . : /)");
        }
        Ok(Pattern {
            text: s.to_string(),
            prefix,
        })
    }

    /// Parses a comma-separated list, as `--open-topics` takes it. Spaces
    /// around each item are ignored; an empty string is an empty list, an
    /// empty item (`a,,b`) an error.
    ///
    /// ```
    /// use tinysse::Pattern;
    ///
    /// let open = Pattern::parse_list("news, status/*")?;
    /// assert_eq!(open.len(), 2);
    /// assert!(open[1].matches("status/db"));
    /// assert!(Pattern::parse_list("").unwrap().is_empty());
    /// assert!(Pattern::parse_list("news,,status").is_err());
    /// # Ok::<(), tinysse::PatternError>(())
    /// ```
    pub fn parse_list(list: &str) -> Result<Vec<Pattern>, PatternError> {
        if list.trim().is_empty() {
            return Ok(Vec::new());
        }
        list.split(',').map(|p| Pattern::parse(p.trim())).collect()
    }

    /// Whether `topic` matches. Topics are compared as given: validating
    /// them (and answering `400`) is the caller's job.
    ///
    /// ```
    /// use tinysse::Pattern;
    ///
    /// assert!(Pattern::parse("*")?.matches("anything/at/all"));
    /// assert!(Pattern::parse("news")?.matches("news"));
    /// assert!(!Pattern::parse("news")?.matches("news/x"));
    /// # Ok::<(), tinysse::PatternError>(())
    /// ```
    pub fn matches(&self, topic: &str) -> bool {
        if self.prefix {
            topic.starts_with(&self.text[..self.text.len() - 1])
        } else {
            topic == self.text
        }
    }

    /// The pattern as written.
    ///
    /// ```
    /// assert_eq!(tinysse::Pattern::parse("user/42/*").unwrap().as_str(), "user/42/*");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Pattern, PatternError> {
        Pattern::parse(s)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

// ---------------------------------------------------------------------------
// Errors and grants

/// A refusal: `401` (no usable token) or `403` (a valid token that does not
/// cover the request). The text is a short reason for the response body; it
/// never holds the token or the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// `401`: the token is missing, malformed, badly signed, expired or not
    /// yet valid.
    Unauthorized(String),
    /// `403`: the token is valid but does not allow this topic.
    Forbidden(String),
}

impl AuthError {
    /// The HTTP status: `401` or `403`.
    ///
    /// ```
    /// use tinysse::AuthError;
    ///
    /// assert_eq!(AuthError::Unauthorized("no token".into()).status(), 401);
    /// assert_eq!(AuthError::Forbidden("not yours".into()).status(), 403);
    /// ```
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Unauthorized(_) => 401,
            AuthError::Forbidden(_) => 403,
        }
    }

    /// The reason, cut at its first line break, so a custom check's text
    /// cannot add lines to a response.
    ///
    /// ```
    /// use tinysse::AuthError;
    ///
    /// let e = AuthError::Forbidden("not yours\r\nX-Evil: 1".into());
    /// assert_eq!(e.reason(), "not yours");
    /// ```
    pub fn reason(&self) -> &str {
        let (AuthError::Unauthorized(r) | AuthError::Forbidden(r)) = self;
        r.split(['\r', '\n']).next().unwrap_or("")
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}

impl std::error::Error for AuthError {}

fn unauthorized(reason: &str) -> AuthError {
    AuthError::Unauthorized(reason.to_string())
}

/// What an accepted request may keep: until when. A stream should end at
/// [`Grant::expires_at`], so that a browser reconnects with a fresh token
/// (or gets `401`).
///
/// For a token with `exp`, that is `exp` plus the leeway: the last moment
/// the same token would still be accepted, so a client reconnecting with it
/// at the end of its stream is refused rather than served a stream that
/// ends at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    expires_at: Option<SystemTime>,
}

impl Grant {
    /// No end: no token was needed, or the token has no `exp`.
    ///
    /// ```
    /// assert_eq!(tinysse::Grant::unlimited().expires_at(), None);
    /// ```
    pub fn unlimited() -> Grant {
        Grant { expires_at: None }
    }

    /// Ends at `t` (for a custom check whose own credentials expire).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    ///
    /// let t = SystemTime::now() + Duration::from_secs(60);
    /// assert_eq!(tinysse::Grant::until(t).expires_at(), Some(t));
    /// ```
    pub fn until(t: SystemTime) -> Grant {
        Grant {
            expires_at: Some(t),
        }
    }

    /// When the grant ends, if it does.
    ///
    /// ```
    /// assert!(tinysse::Grant::unlimited().expires_at().is_none());
    /// ```
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// How long is left from `now`: `None` for no end, zero once it has
    /// passed.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    ///
    /// let now = SystemTime::now();
    /// let g = tinysse::Grant::until(now + Duration::from_secs(5));
    /// assert_eq!(g.remaining(now), Some(Duration::from_secs(5)));
    /// assert_eq!(g.remaining(now + Duration::from_secs(9)), Some(Duration::ZERO));
    /// ```
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        self.expires_at
            .map(|t| t.duration_since(now).unwrap_or(Duration::ZERO))
    }
}

// ---------------------------------------------------------------------------
// Verified claims

/// What a valid token allows: its `tinysse` patterns and its `exp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    publish: Vec<Pattern>,
    subscribe: Vec<Pattern>,
    exp: Option<u64>,
}

impl Claims {
    /// Whether the token allows publishing to `topic`.
    ///
    /// ```
    /// use jsonwebtoken::{EncodingKey, Header, encode};
    /// use tinysse::Authorizer;
    ///
    /// let claims = serde_json::json!({"tinysse": {"publish": ["orders/*"]}});
    /// let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(b"k")?)?;
    /// let c = Authorizer::from_secret(b"k")?.verify(&token)?;
    /// assert!(c.may_publish("orders/7"));
    /// assert!(!c.may_subscribe("orders/7"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|p| p.matches(topic))
    }

    /// Whether the token allows subscribing to `topic`.
    ///
    /// ```
    /// use jsonwebtoken::{EncodingKey, Header, encode};
    /// use tinysse::Authorizer;
    ///
    /// let claims = serde_json::json!({"tinysse": {"subscribe": ["user/42/*"]}});
    /// let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(b"k")?)?;
    /// let c = Authorizer::from_secret(b"k")?.verify(&token)?;
    /// assert!(c.may_subscribe("user/42/inbox"));
    /// assert!(!c.may_subscribe("user/421/inbox"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe.iter().any(|p| p.matches(topic))
    }

    /// The `publish` patterns (empty when the claim has none).
    ///
    /// ```
    /// use jsonwebtoken::{EncodingKey, Header, encode};
    ///
    /// let token = encode(&Header::default(), &serde_json::json!({}), &EncodingKey::from_secret(b"k")?)?;
    /// let c = tinysse::Authorizer::from_secret(b"k")?.verify(&token)?;
    /// assert!(c.publish().is_empty() && c.subscribe().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish(&self) -> &[Pattern] {
        &self.publish
    }

    /// The `subscribe` patterns (empty when the claim has none).
    ///
    /// ```
    /// use jsonwebtoken::{EncodingKey, Header, encode};
    ///
    /// let claims = serde_json::json!({"tinysse": {"subscribe": ["news", "user/1/*"]}});
    /// let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(b"k")?)?;
    /// let c = tinysse::Authorizer::from_secret(b"k")?.verify(&token)?;
    /// assert_eq!(c.subscribe()[1].as_str(), "user/1/*");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscribe(&self) -> &[Pattern] {
        &self.subscribe
    }

    /// The token's `exp` (seconds since the Unix epoch), if it has one.
    ///
    /// ```
    /// use jsonwebtoken::{EncodingKey, Header, encode};
    ///
    /// let exp = jsonwebtoken::get_current_timestamp() + 600;
    /// let token = encode(&Header::default(), &serde_json::json!({"exp": exp}), &EncodingKey::from_secret(b"k")?)?;
    /// assert_eq!(tinysse::Authorizer::from_secret(b"k")?.verify(&token)?.exp(), Some(exp));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exp(&self) -> Option<u64> {
        self.exp
    }
}

// ---------------------------------------------------------------------------
// The authorizer

/// The signature algorithm an [`Authorizer`] accepts: exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and an RSA public key.
    Rs256,
    /// ECDSA on P-256 with SHA-256 and an EC public key.
    Es256,
}

impl JwtAlgorithm {
    fn jwt(self) -> Algorithm {
        match self {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::Es256 => Algorithm::ES256,
        }
    }

    /// The name used in a JWT's `alg`.
    ///
    /// ```
    /// assert_eq!(tinysse::JwtAlgorithm::Es256.as_str(), "ES256");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Es256 => "ES256",
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key that cannot be used: an empty secret, a file that is not a PEM
/// public key, a key of another kind. The reason never holds key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyError {
    reason: String,
}

impl KeyError {
    fn new(reason: impl Into<String>) -> KeyError {
        KeyError {
            reason: reason.into(),
        }
    }

    /// Why the key was refused.
    ///
    /// ```
    /// let e = tinysse::Authorizer::from_secret(b"").unwrap_err();
    /// assert_eq!(e.reason(), "empty secret");
    /// ```
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for KeyError {}

/// Verifies tokens with one key and one algorithm, and decides subscribe and
/// publish requests. Cheap to share (`Arc`) between threads.
///
/// - Only the key's algorithm is accepted: HS256 for a secret, RS256 for an
///   RSA key, ES256 for a P-256 key. Any other `alg`, `none` included, is
///   `401`; so is an HS256 token against a public key (the "algorithm
///   confusion" attack: the public key used as an HMAC secret).
/// - `exp` and `nbf` are honoured with a leeway ([`DEFAULT_LEEWAY`], 30 s)
///   for clocks that disagree. A token without `exp` never expires: mint
///   browser tokens with one. `exp` and `nbf` are seconds since the Unix
///   epoch (a fraction is rounded). `aud`, `iss` and `sub` are not checked.
/// - The claim `tinysse` = `{"publish": [...], "subscribe": [...]}` lists
///   patterns; a missing claim or list allows nothing, an invalid pattern in
///   it makes the token malformed (`401`).
///
/// ```
/// use jsonwebtoken::{EncodingKey, Header, encode};
/// use tinysse::{AuthError, Authorizer, Pattern};
///
/// let auth = Authorizer::from_secret(b"a long random secret")?
///     .with_open_topics(Pattern::parse_list("news")?);
/// let claims = serde_json::json!({
///     "exp": jsonwebtoken::get_current_timestamp() + 3600,
///     "tinysse": {"subscribe": ["user/42/*"]},
/// });
/// let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(b"a long random secret")?)?;
///
/// assert!(auth.check_subscribe(None, &["news"]).is_ok());
/// assert!(auth.check_subscribe(Some(&token), &["news", "user/42/inbox"]).is_ok());
/// assert!(matches!(auth.check_subscribe(None, &["user/42/inbox"]), Err(AuthError::Unauthorized(_))));
/// assert!(matches!(auth.check_subscribe(Some(&token), &["user/43/inbox"]), Err(AuthError::Forbidden(_))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Authorizer {
    key: DecodingKey,
    alg: JwtAlgorithm,
    validation: Validation,
    leeway: Duration,
    open: Vec<Pattern>,
}

impl fmt::Debug for Authorizer {
    // By hand: the derived one would print the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer")
            .field("alg", &self.alg)
            .field("leeway", &self.leeway)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    fn new(key: DecodingKey, alg: JwtAlgorithm) -> Authorizer {
        let mut validation = Validation::new(alg.jwt());
        validation.algorithms = vec![alg.jwt()];
        // `exp` is optional (see the type's docs); when present it is checked.
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = DEFAULT_LEEWAY.as_secs();
        Authorizer {
            key,
            alg,
            validation,
            leeway: DEFAULT_LEEWAY,
            open: Vec::new(),
        }
    }

    /// Accepts HS256 tokens signed with `secret` (the raw bytes, as given:
    /// not base64-decoded). Use at least 32 random bytes
    /// (`openssl rand -hex 32`); an empty secret is an error.
    ///
    /// ```
    /// use tinysse::{Authorizer, JwtAlgorithm};
    ///
    /// let auth = Authorizer::from_secret(b"0123456789abcdef0123456789abcdef")?;
    /// assert_eq!(auth.algorithm(), JwtAlgorithm::Hs256);
    /// assert!(Authorizer::from_secret(b"").is_err());
    /// # Ok::<(), tinysse::KeyError>(())
    /// ```
    pub fn from_secret(secret: &[u8]) -> Result<Authorizer, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::new("empty secret"));
        }
        let key = DecodingKey::from_secret(secret).map_err(|_| KeyError::new("unusable secret"))?;
        Ok(Authorizer::new(key, JwtAlgorithm::Hs256))
    }

    /// Accepts HS256 tokens signed with the key in a file, as
    /// `--jwt-secret-file` reads it: the file's bytes without trailing line
    /// breaks (`openssl rand -hex 32 > jwt.key` writes one).
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("tinysse-doc-key-{}", std::process::id()));
    /// std::fs::write(&path, "0123456789abcdef0123456789abcdef\n")?;
    /// let auth = tinysse::Authorizer::from_secret_file(&path);
    /// std::fs::remove_file(&path)?;
    /// assert_eq!(auth?.algorithm(), tinysse::JwtAlgorithm::Hs256);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_secret_file(path: impl AsRef<std::path::Path>) -> Result<Authorizer, KeyError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| KeyError::new(format!("cannot read {}: {e}", path.display())))?;
        let end = bytes
            .iter()
            .rposition(|b| !matches!(b, b'\r' | b'\n'))
            .map_or(0, |i| i + 1);
        Authorizer::from_secret(&bytes[..end])
    }

    /// Accepts tokens signed by the private half of a PEM public key: RS256
    /// for an RSA key (`PUBLIC KEY` or `RSA PUBLIC KEY`, at least 2048
    /// bits), ES256 for an EC key on P-256. A private key, a certificate or
    /// another curve is an error that says what to do instead.
    ///
    /// ```
    /// use tinysse::{Authorizer, JwtAlgorithm};
    ///
    /// let pem = b"-----BEGIN PUBLIC KEY-----
    /// MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEfxe9Bl1NULPrtc4ISElm8r3O+YaR
    /// plG/AkF+Mh+kwZP8lM6ZVPivEB+G/MYwkHWetNXxYqUi2G3Wk7tQ7GKVhg==
    /// -----END PUBLIC KEY-----
    /// ";
    /// let auth = Authorizer::from_public_key_pem(pem)?;
    /// assert_eq!(auth.algorithm(), JwtAlgorithm::Es256);
    /// assert!(Authorizer::from_public_key_pem(b"not a key").is_err());
    /// # Ok::<(), tinysse::KeyError>(())
    /// ```
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Authorizer, KeyError> {
        let alg = public_key_algorithm(pem)?;
        let key = match alg {
            JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem),
            _ => DecodingKey::from_ec_pem(pem),
        }
        .map_err(|_| KeyError::new("the public key could not be read"))?;
        Ok(Authorizer::new(key, alg))
    }

    /// Topics anyone may subscribe to without a token (`--open-topics`).
    /// They do not open publishing.
    ///
    /// ```
    /// use tinysse::{Authorizer, Pattern};
    ///
    /// let auth = Authorizer::from_secret(b"k")?.with_open_topics(Pattern::parse_list("news,status/*")?);
    /// assert!(auth.check_subscribe(None, &["news", "status/db"]).is_ok());
    /// assert_eq!(auth.check_publish(None, "news").unwrap_err().status(), 401);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_open_topics(mut self, patterns: Vec<Pattern>) -> Authorizer {
        self.open = patterns;
        self
    }

    /// Sets the clock leeway on `exp` and `nbf` (whole seconds; the default
    /// is [`DEFAULT_LEEWAY`]).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let auth = tinysse::Authorizer::from_secret(b"k")?.with_leeway(Duration::from_secs(5));
    /// assert_eq!(auth.leeway(), Duration::from_secs(5));
    /// # Ok::<(), tinysse::KeyError>(())
    /// ```
    pub fn with_leeway(mut self, leeway: Duration) -> Authorizer {
        self.leeway = Duration::from_secs(leeway.as_secs());
        self.validation.leeway = leeway.as_secs();
        self
    }

    /// The one algorithm accepted.
    ///
    /// ```
    /// let auth = tinysse::Authorizer::from_secret(b"k")?;
    /// assert_eq!(auth.algorithm().as_str(), "HS256");
    /// # Ok::<(), tinysse::KeyError>(())
    /// ```
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.alg
    }

    /// The clock leeway on `exp` and `nbf`.
    ///
    /// ```
    /// let auth = tinysse::Authorizer::from_secret(b"k")?;
    /// assert_eq!(auth.leeway(), tinysse::DEFAULT_LEEWAY);
    /// # Ok::<(), tinysse::KeyError>(())
    /// ```
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// The open-topic patterns.
    ///
    /// ```
    /// let auth = tinysse::Authorizer::from_secret(b"k")?;
    /// assert!(auth.open_topics().is_empty());
    /// # Ok::<(), tinysse::KeyError>(())
    /// ```
    pub fn open_topics(&self) -> &[Pattern] {
        &self.open
    }

    /// Whether `topic` matches an open-topic pattern.
    ///
    /// ```
    /// use tinysse::{Authorizer, Pattern};
    ///
    /// let auth = Authorizer::from_secret(b"k")?.with_open_topics(vec![Pattern::parse("news")?]);
    /// assert!(auth.is_open("news") && !auth.is_open("secret"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_open(&self, topic: &str) -> bool {
        self.open.iter().any(|p| p.matches(topic))
    }

    /// Verifies a token: structure, algorithm, signature, `exp`, `nbf` and
    /// the `tinysse` claim's shape. Every failure is
    /// [`AuthError::Unauthorized`]. Use it to answer `401` before reading a
    /// publish body, then [`Claims::may_publish`] once the topic is known.
    ///
    /// ```
    /// use jsonwebtoken::{EncodingKey, Header, encode};
    ///
    /// let auth = tinysse::Authorizer::from_secret(b"k")?;
    /// let good = encode(&Header::default(), &serde_json::json!({}), &EncodingKey::from_secret(b"k")?)?;
    /// let bad = encode(&Header::default(), &serde_json::json!({}), &EncodingKey::from_secret(b"other")?)?;
    /// assert!(auth.verify(&good).is_ok());
    /// assert_eq!(auth.verify(&bad).unwrap_err().reason(), "bad token signature");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(unauthorized("token too long"));
        }
        // The header first, for a reason that names the refused algorithm;
        // `decode` below checks it again, against the key's family too.
        match jsonwebtoken::decode_header(token) {
            Ok(h) if h.alg != self.alg.jwt() => {
                return Err(AuthError::Unauthorized(format!(
                    "token algorithm {:?} refused ({} expected)",
                    h.alg, self.alg
                )));
            }
            Ok(_) => {}
            Err(_) => {
                return Err(AuthError::Unauthorized(format!(
                    "malformed token or unsupported algorithm ({} expected)",
                    self.alg
                )));
            }
        }
        let data = jsonwebtoken::decode::<Value>(token, &self.key, &self.validation)
            .map_err(|e| unauthorized(jwt_reason(e.kind())))?;
        let claims = claims_from(&data.claims)?;
        // jsonwebtoken compares whole seconds, so it accepts a token for up
        // to a second past `exp` + leeway, when its grant has ended: a
        // client reconnecting as its stream ends would be handed a stream
        // that ends at once. Refused from the grant's end on.
        if self
            .grant(&claims)
            .expires_at()
            .is_some_and(|end| SystemTime::now() >= end)
        {
            return Err(unauthorized("token expired"));
        }
        Ok(claims)
    }

    /// Decides a subscription to `topics`:
    ///
    /// - every topic matches an open pattern: `Ok`, with no end, whatever
    ///   the token (a stale cookie must not break public topics);
    /// - otherwise no token, or one that fails [`Authorizer::verify`]: `401`;
    /// - a topic that is neither open nor in the token's `subscribe`: `403`;
    /// - else `Ok`, ending when the token does.
    ///
    /// ```
    /// use jsonwebtoken::{EncodingKey, Header, encode};
    /// use tinysse::{Authorizer, Pattern};
    ///
    /// let key = b"a long random secret";
    /// let auth = Authorizer::from_secret(key)?.with_open_topics(vec![Pattern::parse("news")?]);
    /// let exp = jsonwebtoken::get_current_timestamp() + 60;
    /// let claims = serde_json::json!({"exp": exp, "tinysse": {"subscribe": ["user/42/*"]}});
    /// let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(key)?)?;
    ///
    /// let grant = auth.check_subscribe(Some(&token), &["news", "user/42/x"])?;
    /// assert!(grant.expires_at().is_some());
    /// assert_eq!(auth.check_subscribe(None, &["news", "user/42/x"]).unwrap_err().status(), 401);
    /// assert_eq!(auth.check_subscribe(Some(&token), &["user/421/x"]).unwrap_err().status(), 403);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_subscribe(
        &self,
        token: Option<&str>,
        topics: &[&str],
    ) -> Result<Grant, AuthError> {
        if topics.iter().all(|t| self.is_open(t)) {
            return Ok(Grant::unlimited());
        }
        let claims = self.verify(token.ok_or_else(|| unauthorized("no token"))?)?;
        if let Some(t) = topics
            .iter()
            .find(|t| !self.is_open(t) && !claims.may_subscribe(t))
        {
            return Err(AuthError::Forbidden(format!(
                "token does not allow subscribing to {}",
                shown_topic(t)
            )));
        }
        Ok(self.grant(&claims))
    }

    /// Decides a publish to `topic`: no token or an invalid one is `401`, a
    /// topic outside the token's `publish` patterns `403`. Open topics do
    /// not open publishing.
    ///
    /// ```
    /// use jsonwebtoken::{EncodingKey, Header, encode};
    ///
    /// let auth = tinysse::Authorizer::from_secret(b"k")?;
    /// let claims = serde_json::json!({"tinysse": {"publish": ["orders/*"]}});
    /// let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(b"k")?)?;
    /// assert!(auth.check_publish(Some(&token), "orders/1").is_ok());
    /// assert_eq!(auth.check_publish(Some(&token), "news").unwrap_err().status(), 403);
    /// assert_eq!(auth.check_publish(None, "orders/1").unwrap_err().status(), 401);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_publish(&self, token: Option<&str>, topic: &str) -> Result<Grant, AuthError> {
        let claims = self.verify(token.ok_or_else(|| unauthorized("no token"))?)?;
        if !claims.may_publish(topic) {
            return Err(AuthError::Forbidden(format!(
                "token does not allow publishing to {}",
                shown_topic(topic)
            )));
        }
        Ok(self.grant(&claims))
    }

    fn grant(&self, claims: &Claims) -> Grant {
        // An `exp` too far out to represent is as good as none.
        let end = claims.exp.and_then(|exp| {
            UNIX_EPOCH
                .checked_add(Duration::from_secs(exp))?
                .checked_add(self.leeway)
        });
        Grant { expires_at: end }
    }
}

/// Topics go into reasons only when they are valid names, so a reason stays
/// one short line whatever a caller passes.
fn shown_topic(topic: &str) -> &str {
    if valid_topic(topic) {
        topic
    } else {
        "an invalid topic"
    }
}

/// Fixed texts only: the crate's own messages may quote parts of the token.
fn jwt_reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => "bad token signature",
        K::ExpiredSignature => "token expired",
        K::ImmatureSignature => "token not yet valid (nbf)",
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
            "token algorithm refused"
        }
        K::InvalidClaimFormat(c) if c == "exp" => "token exp is not a number of seconds",
        K::InvalidClaimFormat(c) if c == "nbf" => "token nbf is not a number of seconds",
        _ => "malformed token",
    }
}

fn claims_from(payload: &Value) -> Result<Claims, AuthError> {
    let malformed = || unauthorized("token claim tinysse is malformed");
    let list = |claim: &Value, name: &str| -> Result<Vec<Pattern>, AuthError> {
        match claim.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|p| {
                    p.as_str()
                        .and_then(|s| Pattern::parse(s).ok())
                        .ok_or_else(malformed)
                })
                .collect(),
            Some(_) => Err(malformed()),
        }
    };
    let (publish, subscribe) = match payload.get("tinysse") {
        None | Some(Value::Null) => (Vec::new(), Vec::new()),
        Some(c @ Value::Object(_)) => (list(c, "publish")?, list(c, "subscribe")?),
        Some(_) => return Err(malformed()),
    };
    // As jsonwebtoken reads `exp` (a fraction rounds), so the grant ends
    // when validation would start refusing; an `exp` read one way there and
    // another here must refuse, never grant without end.
    let exp = match payload.get("exp") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                        .map(|f| f.round() as u64)
                })
                .ok_or_else(|| unauthorized("token exp is not a number of seconds"))?,
        ),
    };
    Ok(Claims {
        publish,
        subscribe,
        exp,
    })
}

/// Reads what kind of public key a PEM holds, refusing anything tinysse
/// cannot verify with, with a hint on what to give instead.
fn public_key_algorithm(pem: &[u8]) -> Result<JwtAlgorithm, KeyError> {
    let block = pem::parse(pem).map_err(|_| KeyError::new("not a PEM file"))?;
    let der = simple_asn1::from_der(block.contents())
        .map_err(|_| KeyError::new("the PEM content is not a valid key"))?;
    match block.tag() {
        "PUBLIC KEY" => spki_algorithm(&der),
        "RSA PUBLIC KEY" => rsa_key_size(&der).map(|_| JwtAlgorithm::Rs256),
        tag if tag.contains("PRIVATE KEY") => Err(KeyError::new(
            "a private key: give its public key (openssl pkey -in KEY -pubout)",
        )),
        "CERTIFICATE" => Err(KeyError::new(
            "a certificate: give its public key (openssl x509 -in CERT -pubkey -noout)",
        )),
        _ => Err(KeyError::new(
            "not a public key (PEM `PUBLIC KEY` or `RSA PUBLIC KEY` expected)",
        )),
    }
}

/// SubjectPublicKeyInfo: `SEQUENCE { SEQUENCE { algorithm OID, parameters }, BIT STRING key }`.
fn spki_algorithm(der: &[simple_asn1::ASN1Block]) -> Result<JwtAlgorithm, KeyError> {
    use simple_asn1::{ASN1Block as B, oid};
    let bad = || KeyError::new("the PEM content is not a valid public key");
    let [B::Sequence(_, spki)] = der else {
        return Err(bad());
    };
    let [B::Sequence(_, alg), B::BitString(_, _, key)] = spki.as_slice() else {
        return Err(bad());
    };
    match alg.as_slice() {
        [B::ObjectIdentifier(_, id), ..] if *id == oid!(1, 2, 840, 113_549, 1, 1, 1) => {
            let inner = simple_asn1::from_der(key).map_err(|_| bad())?;
            rsa_key_size(&inner).map(|_| JwtAlgorithm::Rs256)
        }
        [B::ObjectIdentifier(_, id), B::ObjectIdentifier(_, curve)]
            if *id == oid!(1, 2, 840, 10_045, 2, 1) =>
        {
            if *curve == oid!(1, 2, 840, 10_045, 3, 1, 7) {
                Ok(JwtAlgorithm::Es256)
            } else {
                Err(KeyError::new(
                    "an EC key on another curve: ES256 needs P-256 (prime256v1)",
                ))
            }
        }
        _ => Err(KeyError::new(
            "unsupported key type (RSA for RS256 or EC P-256 for ES256)",
        )),
    }
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn rsa_key_size(der: &[simple_asn1::ASN1Block]) -> Result<u64, KeyError> {
    use simple_asn1::ASN1Block as B;
    let [B::Sequence(_, parts)] = der else {
        return Err(KeyError::new("not a valid RSA public key"));
    };
    let [B::Integer(_, n), B::Integer(_, _)] = parts.as_slice() else {
        return Err(KeyError::new("not a valid RSA public key"));
    };
    let bits = n.bits();
    if bits < 2048 {
        return Err(KeyError::new(format!(
            "RSA key of {bits} bits: at least 2048 needed"
        )));
    }
    Ok(bits)
}

// ---------------------------------------------------------------------------
// Where tokens come from

/// The token of a request: the `Authorization: Bearer` header (scheme in
/// any case), else the `access_token` query parameter, else the
/// `tinysse_token` cookie. An `Authorization` header of another scheme
/// (`Basic`, for a proxy) is passed over; empty values count as absent.
///
/// ```
/// use tinysse::token_from;
///
/// assert_eq!(token_from(Some("bearer abc"), Some("q"), None), Some("abc"));
/// assert_eq!(token_from(Some("Basic dXNlcg=="), Some("q"), None), Some("q"));
/// assert_eq!(token_from(None, None, Some("a=1; tinysse_token=XYZ; b=2")), Some("XYZ"));
/// assert_eq!(token_from(None, None, Some("my_tinysse_token=no")), None);
/// ```
pub fn token_from<'a>(
    authorization_header: Option<&'a str>,
    query_access_token: Option<&'a str>,
    cookie_header: Option<&'a str>,
) -> Option<&'a str> {
    authorization_header
        .and_then(bearer)
        .or_else(|| query_access_token.filter(|t| !t.is_empty()))
        .or_else(|| cookie_header.and_then(|c| cookie(c, TOKEN_COOKIE)))
}

fn bearer(header: &str) -> Option<&str> {
    let header = header.trim();
    let (scheme, rest) = header.split_once([' ', '\t'])?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A cookie's value from a `Cookie` header (`a=1; b=2`, RFC 6265 §4.2):
/// names compare exactly, a quoted value loses its quotes, the first
/// non-empty one wins.
fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        (k.trim() == name && !v.is_empty()).then_some(v)
    })
}

// ---------------------------------------------------------------------------
// Custom checks

/// What is being asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// `GET /events` (and the topics are the subscribed ones).
    Subscribe,
    /// `POST /publish`. Asked twice: first with no topic, before the body
    /// is read (a refusal then is answered before the body, as the
    /// contract's error order wants `401` before `415`), then with the
    /// topic once the body is parsed.
    Publish,
    /// A custom stream route, or `/firehose` (no topics; the route is
    /// [`AuthRequest::request`]'s path). The JWT [`Authorizer`] lets every
    /// one through: a route is the embedding program's own, and it decides
    /// here who may open it.
    Stream,
}

/// A request as an [`Authorize`] check sees it: the action, and the request
/// itself (headers, query, peer address).
#[derive(Clone, Copy)]
pub struct AuthRequest<'a> {
    action: Action,
    request: &'a StreamRequest,
}

impl fmt::Debug for AuthRequest<'_> {
    // By hand: headers and query may hold the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("action", &self.action)
            .field("method", &self.request.method())
            .field("path", &self.request.path())
            .field("remote_addr", &self.request.remote_addr())
            .finish_non_exhaustive()
    }
}

impl<'a> AuthRequest<'a> {
    /// Wraps a request for a check.
    ///
    /// ```
    /// use tinysse::{Action, AuthRequest, StreamRequest};
    ///
    /// let rq = StreamRequest::new("GET", "/events?topic=news");
    /// let ar = AuthRequest::new(Action::Subscribe, &rq);
    /// assert_eq!(ar.action(), Action::Subscribe);
    /// ```
    pub fn new(action: Action, request: &'a StreamRequest) -> AuthRequest<'a> {
        AuthRequest { action, request }
    }

    /// Subscribe or publish.
    ///
    /// ```
    /// use tinysse::{Action, AuthRequest, StreamRequest};
    ///
    /// let rq = StreamRequest::new("POST", "/publish");
    /// assert_eq!(AuthRequest::new(Action::Publish, &rq).action(), Action::Publish);
    /// ```
    pub fn action(&self) -> Action {
        self.action
    }

    /// The request: method, path, query, headers, peer.
    ///
    /// ```
    /// use tinysse::{Action, AuthRequest, StreamRequest};
    ///
    /// let rq = StreamRequest::new("GET", "/events?topic=a&tenant=7");
    /// assert_eq!(AuthRequest::new(Action::Subscribe, &rq).request().query("tenant"), Some("7"));
    /// ```
    pub fn request(&self) -> &'a StreamRequest {
        self.request
    }

    /// The token, found as [`token_from`] finds it (every `Cookie` header
    /// is searched, for proxies that split them).
    ///
    /// ```
    /// use tinysse::{Action, AuthRequest, StreamRequest};
    ///
    /// let rq = StreamRequest::new("GET", "/events?topic=a&access_token=T");
    /// assert_eq!(AuthRequest::new(Action::Subscribe, &rq).token(), Some("T"));
    /// ```
    pub fn token(&self) -> Option<&'a str> {
        request_token(self.request).map(|(t, _)| t)
    }
}

/// The request's token and whether it came from the cookie.
fn request_token(rq: &StreamRequest) -> Option<(&str, bool)> {
    token_from(rq.header("Authorization"), rq.query(TOKEN_QUERY), None)
        .map(|t| (t, false))
        .or_else(|| {
            rq.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
                .find_map(|(_, v)| cookie(v, TOKEN_COOKIE))
                .map(|t| (t, true))
        })
}

/// A decision on who may subscribe or publish: the JWT [`Authorizer`], or
/// an embedding program's own check. Any
/// `Fn(&AuthRequest, &[&str]) -> Result<Grant, AuthError>` that is
/// `Send + Sync` is one; it gets the request and the topics (see
/// [`Action`] for what each action passes), runs on the request's thread
/// before anything is subscribed or published, and must not block for
/// long. A server takes one with [`ServerBuilder::authorize`](crate::ServerBuilder::authorize).
///
/// ```
/// use tinysse::{Action, AuthError, AuthRequest, Authorize, Grant, StreamRequest};
///
/// // Readers with a session cookie see everything; only loopback publishes.
/// let check = |rq: &AuthRequest<'_>, _topics: &[&str]| -> Result<Grant, AuthError> {
///     match rq.action() {
///         Action::Subscribe if rq.request().header("Cookie").is_some_and(|c| c.contains("session=")) => {
///             Ok(Grant::unlimited())
///         }
///         Action::Subscribe => Err(AuthError::Unauthorized("no session".into())),
///         Action::Publish if rq.request().remote_addr().is_some_and(|a| a.ip().is_loopback()) => {
///             Ok(Grant::unlimited())
///         }
///         Action::Publish => Err(AuthError::Forbidden("publishing is local".into())),
///         _ => Ok(Grant::unlimited()), // custom stream routes stay open
///     }
/// };
/// let rq = StreamRequest::new("GET", "/events?topic=a");
/// let err = check.authorize(&AuthRequest::new(Action::Subscribe, &rq), &["a"]).unwrap_err();
/// assert_eq!(err.status(), 401);
/// ```
pub trait Authorize: Send + Sync {
    /// `Ok` with how long the request may last, or the refusal.
    fn authorize(&self, request: &AuthRequest<'_>, topics: &[&str]) -> Result<Grant, AuthError>;
}

impl<F> Authorize for F
where
    F: Fn(&AuthRequest<'_>, &[&str]) -> Result<Grant, AuthError> + Send + Sync,
{
    fn authorize(&self, request: &AuthRequest<'_>, topics: &[&str]) -> Result<Grant, AuthError> {
        self(request, topics)
    }
}

/// The JWT rules: the token from [`AuthRequest::token`], then
/// [`Authorizer::check_subscribe`], or [`Authorizer::check_publish`] for
/// every topic given.
///
/// ```
/// use jsonwebtoken::{EncodingKey, Header, encode};
/// use tinysse::{Action, AuthRequest, Authorize, Authorizer, StreamRequest};
///
/// let auth = Authorizer::from_secret(b"k")?;
/// let claims = serde_json::json!({"tinysse": {"subscribe": ["a"]}});
/// let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(b"k")?)?;
/// let rq = StreamRequest::new("GET", &format!("/events?topic=a&access_token={token}"));
/// assert!(auth.authorize(&AuthRequest::new(Action::Subscribe, &rq), &["a"]).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl Authorize for Authorizer {
    fn authorize(&self, request: &AuthRequest<'_>, topics: &[&str]) -> Result<Grant, AuthError> {
        let token = request.token();
        match request.action() {
            Action::Subscribe => self.check_subscribe(token, topics),
            Action::Stream => Ok(Grant::unlimited()),
            Action::Publish => {
                let mut grant = Grant::unlimited();
                for topic in topics {
                    grant = self.check_publish(token, topic)?;
                }
                if topics.is_empty() {
                    // Nothing to publish to still needs a valid token.
                    grant =
                        self.grant(&self.verify(token.ok_or_else(|| unauthorized("no token"))?)?);
                }
                Ok(grant)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A server's check

/// The check a server runs: the JWT rules, asked in two steps for a publish
/// (the token before the body is read, the topic once it is parsed), or an
/// embedding program's own [`Authorize`].
#[derive(Clone)]
pub(crate) enum AuthCheck {
    Jwt(Arc<Authorizer>),
    Custom(Arc<dyn Authorize>),
}

impl fmt::Debug for AuthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthCheck::Jwt(a) => a.fmt(f),
            AuthCheck::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// What the first step of a publish's check found.
pub(crate) enum PublishPass {
    /// A valid token's claims, and whether the token came from the cookie.
    Jwt(Claims, bool),
    /// The custom check let it through; it is asked again with the topic.
    Custom,
}

impl AuthCheck {
    /// `GET /events` (and its `HEAD`) for `topics`.
    pub(crate) fn subscribe(
        &self,
        rq: &StreamRequest,
        topics: &[&str],
    ) -> Result<Grant, AuthError> {
        let ar = AuthRequest::new(Action::Subscribe, rq);
        match self {
            AuthCheck::Jwt(a) => a.authorize(&ar, topics),
            AuthCheck::Custom(c) => c.authorize(&ar, topics),
        }
    }

    /// A custom stream route or `/firehose`.
    pub(crate) fn stream(&self, rq: &StreamRequest) -> Result<Grant, AuthError> {
        let ar = AuthRequest::new(Action::Stream, rq);
        match self {
            AuthCheck::Jwt(a) => a.authorize(&ar, &[]),
            AuthCheck::Custom(c) => c.authorize(&ar, &[]),
        }
    }

    /// A publish, before its body is read: `401` (or a custom check's
    /// refusal) comes first in the contract's error order.
    pub(crate) fn publish_head(&self, rq: &StreamRequest) -> Result<PublishPass, AuthError> {
        match self {
            AuthCheck::Jwt(a) => {
                let (token, from_cookie) =
                    request_token(rq).ok_or_else(|| unauthorized("no token"))?;
                Ok(PublishPass::Jwt(a.verify(token)?, from_cookie))
            }
            AuthCheck::Custom(c) => c
                .authorize(&AuthRequest::new(Action::Publish, rq), &[])
                .map(|_| PublishPass::Custom),
        }
    }

    /// A publish to `topic`, once the body is parsed: `403` for a topic the
    /// token does not cover. A JWT is not verified again.
    pub(crate) fn publish_topic(
        &self,
        rq: &StreamRequest,
        pass: &PublishPass,
        topic: &str,
    ) -> Result<(), AuthError> {
        match (self, pass) {
            (_, PublishPass::Jwt(claims, _)) if claims.may_publish(topic) => Ok(()),
            (_, PublishPass::Jwt(..)) => Err(AuthError::Forbidden(format!(
                "token does not allow publishing to {}",
                shown_topic(topic)
            ))),
            (AuthCheck::Custom(c), PublishPass::Custom) => c
                .authorize(&AuthRequest::new(Action::Publish, rq), &[topic])
                .map(drop),
            (AuthCheck::Jwt(_), PublishPass::Custom) => Err(unauthorized("token was not checked")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_their_edges() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert!(p("user/42/*").matches("user/42/x"));
        assert!(p("user/42/*").matches("user/42/a/b"));
        assert!(p("user/42/*").matches("user/42/"));
        assert!(!p("user/42/*").matches("user/421/x"));
        assert!(!p("user/42/*").matches("user/42"));
        assert!(!p("user/42/*").matches("user/4"));
        assert!(p("user/42*").matches("user/421"));
        assert!(p("*").matches("x"));
        assert!(p("news").matches("news"));
        assert!(!p("news").matches("news2"));
        assert!(!p("news").matches("new"));
        let long_prefix = format!("{}*", "a".repeat(127));
        assert!(p(&long_prefix).matches(&"a".repeat(128)));
        assert!(p(&"a".repeat(128)).matches(&"a".repeat(128)));
        for bad in [
            "",
            "**",
            "*a",
            "a*b",
            "user/*/x",
            "a b",
            "a b*",
            "é",
            &"a".repeat(129),
            &format!("{}*", "a".repeat(128)),
            "news\n",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Pattern::parse("a*b").unwrap_err().to_string(),
            "invalid topic pattern \"a*b\": `*` may only end a pattern"
        );
    }

    #[test]
    fn cookie_header_parsing() {
        assert_eq!(cookie("tinysse_token=A", TOKEN_COOKIE), Some("A"));
        assert_eq!(cookie("a=1;tinysse_token=A;b=2", TOKEN_COOKIE), Some("A"));
        assert_eq!(cookie("a=1; tinysse_token=\"A\"", TOKEN_COOKIE), Some("A"));
        assert_eq!(cookie("a=tinysse_token=A", TOKEN_COOKIE), None);
        assert_eq!(cookie("Tinysse_token=A", TOKEN_COOKIE), None);
        assert_eq!(
            cookie("tinysse_token=; tinysse_token=B", TOKEN_COOKIE),
            Some("B")
        );
        assert_eq!(cookie("tinysse_token", TOKEN_COOKIE), None);
        assert_eq!(cookie("", TOKEN_COOKIE), None);
    }

    #[test]
    fn request_token_from_headers_query_and_every_cookie_header() {
        let rq = |target: &str, headers: &[(&str, &str)]| {
            let mut rq = StreamRequest::new("GET", target);
            rq.headers = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            rq
        };
        fn token(r: &StreamRequest) -> Option<&str> {
            AuthRequest::new(Action::Subscribe, r).token()
        }
        let r = rq(
            "/events?access_token=Q",
            &[("authorization", "Bearer H"), ("Cookie", "tinysse_token=C")],
        );
        assert_eq!(token(&r), Some("H"));
        let r = rq(
            "/events?access_token=Q",
            &[("Authorization", "Basic x"), ("Cookie", "tinysse_token=C")],
        );
        assert_eq!(token(&r), Some("Q"));
        // A proxy may split cookies over several headers.
        let r = rq(
            "/events",
            &[("Cookie", "a=1"), ("cookie", "b=2; tinysse_token=C2")],
        );
        assert_eq!(token(&r), Some("C2"));
        assert_eq!(token(&rq("/events", &[("Cookie", "a=1")])), None);
        let r = rq(
            "/events?access_token=SECRET1",
            &[("Cookie", "tinysse_token=SECRET2")],
        );
        let shown = format!("{:?}", AuthRequest::new(Action::Publish, &r));
        assert!(
            shown.contains("Publish") && !shown.contains("SECRET"),
            "{shown}"
        );
    }

    #[test]
    fn bearer_scheme() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearerabc"), None);
        assert_eq!(bearer("Token abc"), None);
    }
}
