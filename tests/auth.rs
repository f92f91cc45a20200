//! Authorization by JWT (`tinysse::Authorizer`): every rule of the
//! contract's "Authorization" section, with real tokens signed by real keys.
//! HS256 tokens are minted with `jsonwebtoken` and, through the recipes in
//! docs/auth.md, with the `openssl` command line and Python; RSA and EC keys
//! are made with `openssl genpkey` for each run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tinysse::{
    Action, AuthError, AuthRequest, Authorize, Authorizer, Grant, JwtAlgorithm, Pattern,
    StreamRequest, token_from,
};

const SECRET: &[u8] = b"test secret, 32 bytes or more, really";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs(secret: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

fn sign_pem(alg: Algorithm, private_pem: &[u8], claims: &Value) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem),
        _ => EncodingKey::from_rsa_pem(private_pem),
    }
    .unwrap();
    encode(&Header::new(alg), claims, &key).unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn status(r: Result<Grant, AuthError>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(e) => e.status(),
    }
}

fn reason(r: Result<impl std::fmt::Debug, AuthError>) -> String {
    r.expect_err("refused").reason().to_string()
}

fn sub_claims(patterns: &[&str]) -> Value {
    json!({"exp": now() + 600, "tinysse": {"subscribe": patterns}})
}

// ---------------------------------------------------------------------------
// Temporary directories and openssl-made keys

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("tinysse-auth-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A private key made by `openssl genpkey` and its public half (PEM).
struct KeyPair {
    private: Vec<u8>,
    public: Vec<u8>,
}

fn genpkey(dir: &Path, name: &str, opts: &[&str]) -> KeyPair {
    let file = format!("{name}.pem");
    let mut args = vec!["genpkey", "-out", &file];
    args.extend_from_slice(opts);
    openssl(dir, &args);
    KeyPair {
        private: std::fs::read(dir.join(&file)).unwrap(),
        public: openssl(dir, &["pkey", "-in", &file, "-pubout"]),
    }
}

struct Keys {
    rsa: KeyPair,
    rsa_other: KeyPair,
    rsa_pkcs1_public: Vec<u8>,
    ec: KeyPair,
    ec_other: KeyPair,
    rsa_1024: KeyPair,
    p384: KeyPair,
    certificate: Vec<u8>,
}

/// The keys, made once per test binary (RSA generation takes a moment), or
/// `None` when openssl is missing (skipped with a reason; a failure in CI).
fn keys(test: &str) -> Option<&'static Keys> {
    if !common::require(test, &["openssl"], "apt-get install -y openssl") {
        return None;
    }
    static KEYS: OnceLock<Keys> = OnceLock::new();
    Some(KEYS.get_or_init(|| {
        let dir = TempDir::new();
        let d = dir.0.as_path();
        let rsa = |bits: &'static str| ["-algorithm", "RSA", "-pkeyopt", bits];
        let ec = |curve: &'static str| ["-algorithm", "EC", "-pkeyopt", curve];
        Keys {
            rsa: genpkey(d, "rsa", &rsa("rsa_keygen_bits:2048")),
            rsa_other: genpkey(d, "rsa2", &rsa("rsa_keygen_bits:2048")),
            rsa_pkcs1_public: openssl(d, &["rsa", "-in", "rsa.pem", "-RSAPublicKey_out"]),
            ec: genpkey(d, "ec", &ec("ec_paramgen_curve:P-256")),
            ec_other: genpkey(d, "ec2", &ec("ec_paramgen_curve:P-256")),
            rsa_1024: genpkey(d, "rsa1024", &rsa("rsa_keygen_bits:1024")),
            p384: genpkey(d, "p384", &ec("ec_paramgen_curve:P-384")),
            certificate: openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-new",
                    "-key",
                    "ec.pem",
                    "-subj",
                    "/CN=tinysse",
                    "-days",
                    "1",
                ],
            ),
        }
    }))
}

// ---------------------------------------------------------------------------
// Where the token comes from

#[test]
fn token_sources_and_precedence() {
    // Header (any case of the scheme), else query, else cookie.
    assert_eq!(
        token_from(Some("Bearer H"), Some("Q"), Some("tinysse_token=C")),
        Some("H")
    );
    assert_eq!(token_from(Some("bEaReR H"), None, None), Some("H"));
    assert_eq!(
        token_from(None, Some("Q"), Some("tinysse_token=C")),
        Some("Q")
    );
    assert_eq!(token_from(None, None, Some("tinysse_token=C")), Some("C"));
    assert_eq!(
        token_from(None, None, Some("a=1; tinysse_token=XYZ; b=2")),
        Some("XYZ")
    );
    // Another scheme is passed over; empty values are absent.
    assert_eq!(token_from(Some("Basic dTpw"), Some("Q"), None), Some("Q"));
    assert_eq!(
        token_from(Some("Bearer "), Some(""), Some("tinysse_token=C")),
        Some("C")
    );
    // Cookie names compare exactly.
    assert_eq!(
        token_from(None, None, Some("xtinysse_token=1; TINYSSE_TOKEN=2")),
        None
    );
    assert_eq!(token_from(None, None, None), None);

    // With real tokens: the first source present decides, a bad header is
    // not rescued by a good cookie.
    let auth = Authorizer::from_secret(SECRET).unwrap();
    let good = hs(SECRET, &sub_claims(&["a"]));
    let bad = hs(b"another secret", &sub_claims(&["a"]));
    let cookie_good = format!("x=1; tinysse_token={good}; y=2");
    let cookie_bad = format!("tinysse_token={bad}");
    let header = |t: &str| format!("Bearer {t}");
    // (Authorization header, access_token, Cookie header, status)
    type Case<'a> = (Option<String>, Option<&'a str>, Option<&'a str>, u16);
    let cases: [Case; 7] = [
        (
            Some(header(&good)),
            Some(bad.as_str()),
            Some(cookie_bad.as_str()),
            200,
        ),
        (
            Some(header(&bad)),
            Some(good.as_str()),
            Some(cookie_good.as_str()),
            401,
        ),
        (None, Some(good.as_str()), Some(cookie_bad.as_str()), 200),
        (None, Some(bad.as_str()), Some(cookie_good.as_str()), 401),
        (None, None, Some(cookie_good.as_str()), 200),
        (None, None, Some(cookie_bad.as_str()), 401),
        (
            Some("Basic dTpw".into()),
            None,
            Some(cookie_good.as_str()),
            200,
        ),
    ];
    for (i, (h, q, c, want)) in cases.iter().enumerate() {
        let token = token_from(h.as_deref(), *q, *c);
        assert_eq!(
            status(auth.check_subscribe(token, &["a"])),
            *want,
            "case {i}"
        );
    }
}

#[test]
fn request_tokens_through_the_authorize_trait() {
    let auth = Authorizer::from_secret(SECRET).unwrap();
    let token = hs(
        SECRET,
        &json!({"tinysse": {"subscribe": ["a"], "publish": ["p/*"]}}),
    );
    let rq = StreamRequest::new("GET", &format!("/events?topic=a&access_token={token}"));
    let sub = AuthRequest::new(Action::Subscribe, &rq);
    assert_eq!(sub.token(), Some(token.as_str()));
    assert!(auth.authorize(&sub, &["a"]).is_ok());
    assert_eq!(status(auth.authorize(&sub, &["b"])), 403);
    let publish = AuthRequest::new(Action::Publish, &rq);
    assert!(auth.authorize(&publish, &["p/1"]).is_ok());
    assert_eq!(status(auth.authorize(&publish, &["a"])), 403);
    let anonymous = StreamRequest::new("GET", "/events?topic=a");
    assert_eq!(
        status(auth.authorize(&AuthRequest::new(Action::Subscribe, &anonymous), &["a"])),
        401
    );

    // A custom check replaces the JWT rules: it sees the action, the request
    // and the topics, and may end the grant at a time of its choosing.
    let until = SystemTime::now() + Duration::from_secs(60);
    let check = move |rq: &AuthRequest<'_>, topics: &[&str]| -> Result<Grant, AuthError> {
        match (rq.action(), rq.request().query("tenant")) {
            (Action::Subscribe, Some(t)) if topics.iter().all(|x| x.starts_with(t)) => {
                Ok(Grant::until(until))
            }
            (Action::Subscribe, Some(_)) => Err(AuthError::Forbidden("other tenant".into())),
            _ => Err(AuthError::Unauthorized("no tenant".into())),
        }
    };
    let boxed: Box<dyn Authorize> = Box::new(check);
    let rq = StreamRequest::new("GET", "/events?topic=t7/x&tenant=t7");
    let ar = AuthRequest::new(Action::Subscribe, &rq);
    assert_eq!(
        boxed.authorize(&ar, &["t7/x"]).unwrap().expires_at(),
        Some(until)
    );
    assert_eq!(status(boxed.authorize(&ar, &["t8/x"])), 403);
    let ar = AuthRequest::new(Action::Publish, &rq);
    assert_eq!(status(boxed.authorize(&ar, &["t7/x"])), 401);
}

// ---------------------------------------------------------------------------
// Algorithms

#[test]
fn alg_none_and_other_hmac_algorithms_are_refused() {
    let auth = Authorizer::from_secret(SECRET).unwrap();
    let claims = json!({"tinysse": {"subscribe": ["*"], "publish": ["*"]}});
    let body = b64(&claims);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let head = b64(&json!({"alg": alg, "typ": "JWT"}));
        for token in [format!("{head}.{body}."), format!("{head}.{body}.AAAA")] {
            let r = auth.check_subscribe(Some(&token), &["a"]);
            assert_eq!(status(r.clone()), 401, "alg {alg} accepted");
            assert!(reason(r).contains("HS256 expected"));
            assert_eq!(status(auth.check_publish(Some(&token), "a")), 401);
        }
    }
    // An honest HS256 header with the signature cut off.
    let good = hs(SECRET, &claims);
    let unsigned = &good[..good.rfind('.').unwrap() + 1];
    assert_eq!(
        reason(auth.check_subscribe(Some(unsigned), &["a"])),
        "bad token signature"
    );
    // HS384 and HS512 with the right secret: only HS256 is accepted.
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let t = encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap();
        let why = reason(auth.check_subscribe(Some(&t), &["a"]));
        assert_eq!(
            why,
            format!("token algorithm {alg:?} refused (HS256 expected)")
        );
    }
    // A header claiming HS256 over an HS512 signature.
    let t512 = encode(
        &Header::new(Algorithm::HS512),
        &claims,
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap();
    let sig = t512.rsplit('.').next().unwrap();
    let forged = format!(
        "{}.{body}.{sig}",
        b64(&json!({"alg": "HS256", "typ": "JWT"}))
    );
    assert_eq!(
        reason(auth.check_subscribe(Some(&forged), &["a"])),
        "bad token signature"
    );
}

#[test]
fn public_key_tokens_and_algorithm_confusion() {
    let Some(k) = keys("public_key_tokens_and_algorithm_confusion") else {
        return;
    };
    let claims = sub_claims(&["user/42/*"]);
    let rs = Authorizer::from_public_key_pem(&k.rsa.public).unwrap();
    let rs1 = Authorizer::from_public_key_pem(&k.rsa_pkcs1_public).unwrap();
    let es = Authorizer::from_public_key_pem(&k.ec.public).unwrap();
    assert_eq!(rs.algorithm(), JwtAlgorithm::Rs256);
    assert_eq!(rs1.algorithm(), JwtAlgorithm::Rs256);
    assert_eq!(es.algorithm(), JwtAlgorithm::Es256);

    let rs_token = sign_pem(Algorithm::RS256, &k.rsa.private, &claims);
    let es_token = sign_pem(Algorithm::ES256, &k.ec.private, &claims);
    for (auth, token) in [(&rs, &rs_token), (&rs1, &rs_token), (&es, &es_token)] {
        assert!(auth.check_subscribe(Some(token), &["user/42/x"]).is_ok());
        assert_eq!(
            status(auth.check_subscribe(Some(token), &["user/421/x"])),
            403
        );
    }

    // The public key used as an HMAC secret (with and without the PEM's
    // trailing line break): refused by algorithm before any HMAC.
    for (auth, public) in [(&rs, &k.rsa.public), (&es, &k.ec.public)] {
        for secret in [&public[..], public.trim_ascii_end()] {
            let t = hs(secret, &claims);
            let why = reason(auth.check_subscribe(Some(&t), &["user/42/x"]));
            assert!(why.starts_with("token algorithm HS256 refused"), "{why}");
        }
    }
    // A secret server refuses RS256 and ES256, even signed by "its" key.
    let secret_auth = Authorizer::from_secret(&k.rsa.public).unwrap();
    for t in [&rs_token, &es_token] {
        let why = reason(secret_auth.check_subscribe(Some(t), &["user/42/x"]));
        assert!(why.ends_with("refused (HS256 expected)"), "{why}");
    }
    // RSA and EC servers refuse each other's tokens, and RSA refuses the
    // other RSA algorithms made with the right key.
    assert_eq!(
        status(rs.check_subscribe(Some(&es_token), &["user/42/x"])),
        401
    );
    assert_eq!(
        status(es.check_subscribe(Some(&rs_token), &["user/42/x"])),
        401
    );
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let t = sign_pem(alg, &k.rsa.private, &claims);
        assert_eq!(
            status(rs.check_subscribe(Some(&t), &["user/42/x"])),
            401,
            "{alg:?}"
        );
    }
}

#[test]
fn wrong_keys_are_refused() {
    let auth = Authorizer::from_secret(SECRET).unwrap();
    let t = hs(b"not the secret", &sub_claims(&["a"]));
    assert_eq!(
        reason(auth.check_subscribe(Some(&t), &["a"])),
        "bad token signature"
    );
    assert_eq!(
        reason(auth.check_publish(Some(&t), "a")),
        "bad token signature"
    );
    // One byte more or less of the secret is another key.
    let longer = [SECRET, b"x"].concat();
    let t = hs(&longer, &sub_claims(&["a"]));
    assert_eq!(status(auth.check_subscribe(Some(&t), &["a"])), 401);
    let t = hs(&SECRET[..SECRET.len() - 1], &sub_claims(&["a"]));
    assert_eq!(status(auth.check_subscribe(Some(&t), &["a"])), 401);

    let Some(k) = keys("wrong_keys_are_refused") else {
        return;
    };
    let claims = sub_claims(&["a"]);
    let rs = Authorizer::from_public_key_pem(&k.rsa.public).unwrap();
    let es = Authorizer::from_public_key_pem(&k.ec.public).unwrap();
    let t = sign_pem(Algorithm::RS256, &k.rsa_other.private, &claims);
    assert_eq!(
        reason(rs.check_subscribe(Some(&t), &["a"])),
        "bad token signature"
    );
    let t = sign_pem(Algorithm::ES256, &k.ec_other.private, &claims);
    assert_eq!(
        reason(es.check_subscribe(Some(&t), &["a"])),
        "bad token signature"
    );

    // A payload changed after signing.
    let good = sign_pem(Algorithm::ES256, &k.ec.private, &claims);
    let mut parts: Vec<&str> = good.split('.').collect();
    let wider = b64(&json!({"exp": now() + 600, "tinysse": {"subscribe": ["*"]}}));
    parts[1] = &wider;
    assert_eq!(
        reason(es.check_subscribe(Some(&parts.join(".")), &["b"])),
        "bad token signature"
    );
}

#[test]
fn keys_that_cannot_be_used() {
    assert_eq!(
        Authorizer::from_secret(b"").unwrap_err().reason(),
        "empty secret"
    );
    assert!(Authorizer::from_public_key_pem(b"").is_err());
    assert!(
        Authorizer::from_public_key_pem(
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err()
    );
    let Some(k) = keys("keys_that_cannot_be_used") else {
        return;
    };
    let why = |pem: &[u8]| {
        Authorizer::from_public_key_pem(pem)
            .unwrap_err()
            .to_string()
    };
    assert!(why(&k.rsa.private).starts_with("a private key"));
    assert!(why(&k.ec.private).starts_with("a private key"));
    assert!(why(&k.certificate).starts_with("a certificate"));
    assert_eq!(
        why(&k.rsa_1024.public),
        "RSA key of 1024 bits: at least 2048 needed"
    );
    assert!(why(&k.p384.public).contains("P-256"));
    // Reasons carry no key material.
    for pem in [&k.rsa.private, &k.ec.private, &k.certificate] {
        let body = String::from_utf8_lossy(pem);
        let line = body.lines().nth(1).unwrap();
        assert!(!why(pem).contains(line));
    }
}

// ---------------------------------------------------------------------------
// Time

#[test]
fn exp_and_nbf_with_the_leeway() {
    let auth = Authorizer::from_secret(SECRET).unwrap();
    let t = now();
    let at = |claims: Value| {
        let mut c = claims;
        c["tinysse"] = json!({"subscribe": ["a"], "publish": ["a"]});
        hs(SECRET, &c)
    };
    // Past exp by more than the 30 s leeway, and before nbf by more.
    let expired = at(json!({"exp": t - 120}));
    assert_eq!(
        reason(auth.check_subscribe(Some(&expired), &["a"])),
        "token expired"
    );
    assert_eq!(
        reason(auth.check_publish(Some(&expired), "a")),
        "token expired"
    );
    let early = at(json!({"nbf": t + 120, "exp": t + 600}));
    assert_eq!(
        reason(auth.check_subscribe(Some(&early), &["a"])),
        "token not yet valid (nbf)"
    );
    // Within the leeway on both sides.
    let just_expired = at(json!({"exp": t - 10}));
    let g = auth.check_subscribe(Some(&just_expired), &["a"]).unwrap();
    assert_eq!(
        g.expires_at(),
        Some(UNIX_EPOCH + Duration::from_secs(t - 10) + Duration::from_secs(30))
    );
    assert!(
        auth.check_subscribe(Some(&at(json!({"nbf": t + 10}))), &["a"])
            .is_ok()
    );
    // With no leeway the same tokens are refused.
    let strict = Authorizer::from_secret(SECRET)
        .unwrap()
        .with_leeway(Duration::ZERO);
    assert_eq!(
        status(strict.check_subscribe(Some(&just_expired), &["a"])),
        401
    );
    assert_eq!(
        status(strict.check_subscribe(Some(&at(json!({"nbf": t + 10}))), &["a"])),
        401
    );
    // The grant ends at exp + leeway; without exp it does not end.
    let g = auth
        .check_publish(Some(&at(json!({"exp": t + 600}))), "a")
        .unwrap();
    assert_eq!(
        g.expires_at(),
        Some(UNIX_EPOCH + Duration::from_secs(t + 630))
    );
    assert_eq!(
        auth.check_subscribe(Some(&at(json!({}))), &["a"]).unwrap(),
        Grant::unlimited()
    );
    // Fractional seconds (Python's `time.time() + 600`) round, and the
    // grant still ends; an expired one is still refused.
    let g = auth.check_subscribe(Some(&at(json!({"exp": (t + 600) as f64 + 0.4}))), &["a"]);
    assert_eq!(
        g.unwrap().expires_at(),
        Some(UNIX_EPOCH + Duration::from_secs(t + 630))
    );
    let r = auth.check_subscribe(Some(&at(json!({"exp": (t - 120) as f64 + 0.4}))), &["a"]);
    assert_eq!(reason(r), "token expired");
    // Not a number of seconds: refused, with a reason that says so.
    for bad in [json!("soon"), json!(-5), json!(null), json!(1e300)] {
        let r = auth.check_subscribe(Some(&at(json!({"exp": bad}))), &["a"]);
        assert_eq!(reason(r), "token exp is not a number of seconds", "{bad}");
    }
    assert_eq!(
        status(auth.check_subscribe(Some(&at(json!({"exp": [1]}))), &["a"])),
        401
    );
    let r = auth.check_subscribe(Some(&at(json!({"nbf": "now"}))), &["a"]);
    assert_eq!(reason(r), "token nbf is not a number of seconds");
    // An exp too far out to represent never ends.
    let far = at(json!({"exp": u64::MAX}));
    assert_eq!(
        auth.check_subscribe(Some(&far), &["a"]).unwrap(),
        Grant::unlimited()
    );
}

// ---------------------------------------------------------------------------
// Patterns and claims

#[test]
fn patterns_in_tokens() {
    let auth = Authorizer::from_secret(SECRET).unwrap();
    let sub = |patterns: &[&str], topics: &[&str]| {
        status(auth.check_subscribe(Some(&hs(SECRET, &sub_claims(patterns))), topics))
    };
    assert_eq!(sub(&["user/42/*"], &["user/42/x"]), 200);
    assert_eq!(sub(&["user/42/*"], &["user/42/a/b"]), 200);
    assert_eq!(sub(&["user/42/*"], &["user/42/"]), 200);
    assert_eq!(sub(&["user/42/*"], &["user/421/x"]), 403);
    assert_eq!(sub(&["user/42/*"], &["user/42"]), 403);
    assert_eq!(sub(&["user/42*"], &["user/421"]), 200);
    assert_eq!(sub(&["*"], &["anything", "user/1/x"]), 200);
    assert_eq!(sub(&["news"], &["news"]), 200);
    assert_eq!(sub(&["news"], &["news2"]), 403);
    assert_eq!(sub(&["news"], &["news/x"]), 403);
    // Every requested topic must be covered, by one pattern or another.
    assert_eq!(sub(&["a", "b/*"], &["a", "b/1", "b/2"]), 200);
    assert_eq!(sub(&["a", "b/*"], &["a", "b/1", "c"]), 403);
    assert_eq!(sub(&[], &["a"]), 403);
    let r = auth.check_subscribe(Some(&hs(SECRET, &sub_claims(&["a"]))), &["a", "c/1"]);
    assert_eq!(reason(r), "token does not allow subscribing to c/1");

    // An invalid pattern or a claim of the wrong shape: a malformed token.
    for claim in [
        json!({"subscribe": ["user/*/x"]}),
        json!({"subscribe": ["a b"]}),
        json!({"subscribe": [""]}),
        json!({"subscribe": ["**"]}),
        json!({"subscribe": [42]}),
        json!({"subscribe": "a"}),
        json!({"publish": {"a": 1}}),
        json!(["a"]),
        json!("*"),
    ] {
        let t = hs(SECRET, &json!({"tinysse": claim}));
        let r = auth.check_subscribe(Some(&t), &["a"]);
        assert_eq!(reason(r), "token claim tinysse is malformed", "{claim}");
    }
    // Missing claim, missing lists, null lists: nothing allowed.
    for claims in [
        json!({}),
        json!({"tinysse": {}}),
        json!({"tinysse": null}),
        json!({"tinysse": {"subscribe": null, "publish": null}}),
    ] {
        let t = hs(SECRET, &claims);
        assert_eq!(
            status(auth.check_subscribe(Some(&t), &["a"])),
            403,
            "{claims}"
        );
        assert_eq!(status(auth.check_publish(Some(&t), "a")), 403, "{claims}");
    }
}

#[test]
fn pattern_syntax() {
    for good in [
        "news",
        "user/42/*",
        "user/42*",
        "*",
        "a-b_c.d:e/f",
        &"a".repeat(128),
    ] {
        assert_eq!(Pattern::parse(good).unwrap().as_str(), good);
    }
    for bad in [
        "",
        "**",
        "*a",
        "a*b",
        "user/*/x",
        "a b",
        "a?",
        "é",
        &"a".repeat(129),
    ] {
        assert!(Pattern::parse(bad).is_err(), "{bad:?}");
    }
    let open = Pattern::parse_list(" news , status/* ").unwrap();
    assert_eq!(
        open.iter().map(Pattern::as_str).collect::<Vec<_>>(),
        ["news", "status/*"]
    );
    assert!(Pattern::parse_list("").unwrap().is_empty());
    assert!(Pattern::parse_list("a,").is_err());
    assert!(Pattern::parse_list("a,b c").is_err());
}

#[test]
fn open_topics_mixed_with_private_ones() {
    let auth = Authorizer::from_secret(SECRET)
        .unwrap()
        .with_open_topics(Pattern::parse_list("news,public/*").unwrap());
    let mine = hs(SECRET, &sub_claims(&["user/42/*"]));
    let nothing = hs(SECRET, &sub_claims(&[]));
    let expired = hs(
        SECRET,
        &json!({"exp": now() - 3600, "tinysse": {"subscribe": ["*"]}}),
    );
    let bad = hs(b"wrong", &sub_claims(&["*"]));

    // All open: no token needed, and whatever token comes is not looked at.
    for token in [
        None,
        Some(&mine),
        Some(&nothing),
        Some(&expired),
        Some(&bad),
    ] {
        let g = auth.check_subscribe(token.map(String::as_str), &["news", "public/x"]);
        assert_eq!(g, Ok(Grant::unlimited()));
    }
    assert_eq!(
        auth.check_subscribe(Some("garbage"), &["news"]),
        Ok(Grant::unlimited())
    );
    // Mixed: the private topics need a valid token covering them.
    let mixed = ["news", "user/42/inbox"];
    assert_eq!(reason(auth.check_subscribe(None, &mixed)), "no token");
    assert_eq!(status(auth.check_subscribe(Some(&expired), &mixed)), 401);
    assert_eq!(status(auth.check_subscribe(Some(&bad), &mixed)), 401);
    assert_eq!(
        reason(auth.check_subscribe(Some(&nothing), &mixed)),
        "token does not allow subscribing to user/42/inbox"
    );
    let g = auth.check_subscribe(Some(&mine), &mixed).unwrap();
    assert!(g.expires_at().is_some());
    assert_eq!(
        status(auth.check_subscribe(Some(&mine), &["news", "user/43/inbox"])),
        403
    );
    // `public/*` does not open `public` itself, nor `publication`.
    assert_eq!(status(auth.check_subscribe(None, &["public"])), 401);
    assert_eq!(status(auth.check_subscribe(None, &["publication"])), 401);
    // Open topics do not open publishing.
    assert_eq!(reason(auth.check_publish(None, "news")), "no token");
    assert_eq!(status(auth.check_publish(Some(&mine), "news")), 403);
}

#[test]
fn publish_and_subscribe_lists_are_separate() {
    let auth = Authorizer::from_secret(SECRET).unwrap();
    let t = hs(
        SECRET,
        &json!({"exp": now() + 600, "tinysse": {"publish": ["orders/*"], "subscribe": ["user/42/*"]}}),
    );
    assert!(auth.check_publish(Some(&t), "orders/1").is_ok());
    assert_eq!(
        reason(auth.check_publish(Some(&t), "user/42/x")),
        "token does not allow publishing to user/42/x"
    );
    assert_eq!(status(auth.check_subscribe(Some(&t), &["orders/1"])), 403);
    assert!(auth.check_subscribe(Some(&t), &["user/42/x"]).is_ok());
    assert_eq!(reason(auth.check_publish(None, "orders/1")), "no token");
    // The two-step form: 401 from verify alone, then 403 by topic.
    let c = auth.verify(&t).unwrap();
    assert!(c.may_publish("orders/9") && !c.may_publish("orders"));
    assert!(c.may_subscribe("user/42/") && !c.may_subscribe("orders/9"));
}

#[test]
fn reasons_never_show_the_token_or_the_key() {
    let auth = Authorizer::from_secret(SECRET).unwrap();
    let secret = std::str::from_utf8(SECRET).unwrap();
    assert!(!format!("{auth:?}").contains(secret));
    let t = now();
    let tokens = [
        hs(
            SECRET,
            &json!({"exp": t - 999, "tinysse": {"subscribe": ["a"]}}),
        ),
        hs(b"other", &sub_claims(&["a"])),
        hs(SECRET, &json!({"tinysse": {"subscribe": ["bad pattern"]}})),
        hs(SECRET, &sub_claims(&[])),
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none"})),
            b64(&sub_claims(&["*"]))
        ),
        "not.a.token".to_string(),
        "x".repeat(20_000),
        format!("{}.e30.", b64(&json!({"alg": "HS256\nX-Injected: 1"}))),
    ];
    for token in &tokens {
        for r in [
            auth.check_subscribe(Some(token), &["a", "line\nbreak"])
                .map(|_| ()),
            auth.check_publish(Some(token), "a").map(|_| ()),
        ] {
            let e = r.expect_err("refused");
            let why = e.reason();
            assert!(!why.is_empty() && why.len() < 100, "{why:?}");
            assert!(!why.contains(['\r', '\n']), "{why:?}");
            assert!(!why.contains(secret), "{why:?}");
            for part in token.split('.').filter(|p| p.len() > 8) {
                assert!(!why.contains(part), "{why:?}");
            }
        }
    }
    // A topic that is not a valid name is not echoed.
    let r = auth.check_subscribe(Some(&tokens[3]), &["line\nbreak"]);
    assert_eq!(
        reason(r),
        "token does not allow subscribing to an invalid topic"
    );
}

// ---------------------------------------------------------------------------
// The recipes in docs/auth.md, run as written

/// The fenced block after the `<!-- tests/auth.rs runs this block (NAME) -->`
/// marker in docs/auth.md.
fn doc_block(name: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/auth.md"))
        .expect("docs/auth.md");
    let marker = format!("<!-- tests/auth.rs runs this block ({name}) -->");
    let after = &doc[doc.find(&marker).expect("marker in docs/auth.md") + marker.len()..];
    let body = after.split_once("```").unwrap().1;
    let body = body.split_once('\n').unwrap().1; // the info string
    body.split_once("```").unwrap().0.to_string()
}

fn run_in(dir: &Path, program: &str, script: &str) -> String {
    let out = Command::new(program)
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Makes `jwt.key` with the doc's commands, and the authorizer the server
/// would build from it (`--jwt-secret-file jwt.key`).
fn doc_key(dir: &Path) -> Authorizer {
    run_in(dir, "sh", &doc_block("make-key"));
    let key = std::fs::read(dir.join("jwt.key")).unwrap();
    assert_eq!(key.len(), 65, "64 hex characters and a line break");
    Authorizer::from_secret_file(dir.join("jwt.key")).unwrap()
}

fn check_user_42_token(auth: &Authorizer, token: &str) {
    assert_eq!(token.matches('.').count(), 2, "{token}");
    let g = auth
        .check_subscribe(Some(token), &["user/42/inbox"])
        .unwrap();
    let left = g.remaining(SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3630));
    assert_eq!(
        status(auth.check_subscribe(Some(token), &["user/421/inbox"])),
        403
    );
    assert_eq!(
        status(auth.check_publish(Some(token), "user/42/inbox")),
        403
    );
    // The same token against another key.
    let other = Authorizer::from_secret(b"another key").unwrap();
    assert_eq!(
        status(other.check_subscribe(Some(token), &["user/42/inbox"])),
        401
    );
}

#[test]
fn openssl_minted_token_from_the_readme_recipe() {
    if !common::require(
        "openssl_minted_token_from_the_readme_recipe",
        &["openssl", "sh"],
        "apt-get install -y openssl",
    ) {
        return;
    }
    let dir = TempDir::new();
    let auth = doc_key(&dir.0);
    let token = run_in(&dir.0, "sh", &doc_block("mint-openssl"));
    check_user_42_token(&auth, &token);
    // The key file's trailing line break is not part of the key: a token
    // signed with it included does not verify.
    let raw = std::fs::read(dir.0.join("jwt.key")).unwrap();
    let with_newline = hs(&raw, &sub_claims(&["user/42/*"]));
    assert_eq!(
        status(auth.check_subscribe(Some(&with_newline), &["user/42/x"])),
        401
    );
}

#[test]
fn python_minted_token_from_the_readme_recipe() {
    if !common::require(
        "python_minted_token_from_the_readme_recipe",
        &["openssl", "sh", "python3"],
        "apt-get install -y openssl python3",
    ) {
        return;
    }
    let dir = TempDir::new();
    let auth = doc_key(&dir.0);
    let token = run_in(&dir.0, "python3", &doc_block("mint-python"));
    check_user_42_token(&auth, &token);
}
