//! Flags and environment variables to a [`Config`], with errors that name
//! the flag (or variable) at fault.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tinysse::{Authorizer, Pattern, Server, ServerBuilder, StoreSync, defaults};

/// The binary's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `--addr`
    pub addr: String,
    /// `--public`
    pub public: PathBuf,
    /// `--heartbeat` in seconds; 0 is off.
    pub heartbeat_secs: u64,
    /// `--retry` in milliseconds.
    pub retry_ms: u64,
    /// `--max-streams`
    pub max_streams: u64,
    /// `--queue`
    pub queue: usize,
    /// `--history`
    pub history: usize,
    /// `--max-topics`
    pub max_topics: usize,
    /// `--history-bytes`
    pub history_bytes: usize,
    /// `--max-body`
    pub max_body: u64,
    /// `--publish-token`
    pub publish_token: Option<Secret>,
    /// `--jwt-secret`
    pub jwt_secret: Option<Secret>,
    /// `--jwt-secret-file`
    pub jwt_secret_file: Option<PathBuf>,
    /// `--jwt-public-key`
    pub jwt_public_key: Option<PathBuf>,
    /// `--open-topics`, when given.
    pub open_topics: Option<Vec<Pattern>>,
    /// `--cors-origin`
    pub cors_origin: Option<String>,
    /// Off with `--no-demo`.
    pub demo: bool,
    /// `--firehose`
    pub firehose: bool,
    /// `--store`
    pub store: Option<PathBuf>,
    /// `--store-sync`
    pub store_sync: StoreSync,
    /// `--history-age` in seconds; 0 is off.
    pub history_age_secs: u64,
    /// `--redis` (its URL may hold a password).
    pub redis: Option<Secret>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: defaults::ADDR.into(),
            public: PathBuf::from(PUBLIC),
            heartbeat_secs: defaults::HEARTBEAT.as_secs(),
            retry_ms: defaults::RETRY_MS,
            max_streams: defaults::MAX_STREAMS,
            queue: defaults::QUEUE,
            history: defaults::HISTORY,
            max_topics: defaults::MAX_TOPICS,
            history_bytes: defaults::HISTORY_BYTES,
            max_body: defaults::MAX_BODY,
            publish_token: None,
            jwt_secret: None,
            jwt_secret_file: None,
            jwt_public_key: None,
            open_topics: None,
            cors_origin: None,
            demo: true,
            firehose: false,
            store: None,
            store_sync: StoreSync::Normal,
            history_age_secs: 0,
            redis: None,
        }
    }
}

/// A token or a key: its `Debug` never shows it (a `Debug` line may end up
/// in a log).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the server (boxed: the settings are large, the others empty).
    Run(Box<Config>),
    /// Print usage and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
}

/// A bad flag or value; the message names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The binary's own default for `--public` (the library serves no files
/// unless told to); every other default is the library's, from
/// [`tinysse::defaults`].
const PUBLIC: &str = "public";

/// The usage text for `--help`, with the defaults in force.
pub fn usage() -> String {
    format!(
        "\
tinysse: a synchronous Server-Sent Events server

Usage: tinysse [OPTIONS]

Options (each also read from the environment variable shown):
  --addr HOST:PORT      listen address, port 0 = any free port [TINYSSE_ADDR] ({addr})
  --public DIR          static files; / serves DIR/index.html [TINYSSE_PUBLIC] ({PUBLIC})
  --heartbeat SECS      comment frame on idle streams, 0 = off [TINYSSE_HEARTBEAT] ({heartbeat})
  --retry MS            retry: sent at the start of each stream [TINYSSE_RETRY] ({retry})
  --max-streams N       open SSE streams allowed at once [TINYSSE_MAX_STREAMS] ({max_streams})
  --queue N             frames buffered per subscriber before eviction [TINYSSE_QUEUE] ({queue})
  --history N           events kept per topic for Last-Event-ID replay [TINYSSE_HISTORY] ({history})
  --max-topics N        topics held at once [TINYSSE_MAX_TOPICS] ({max_topics})
  --history-bytes BYTES retained events of all topics together, K/M/G suffixes;
                        over it, the oldest go first [TINYSSE_HISTORY_BYTES] ({history_bytes})
  --history-age SECS    also drop retained events older than this, 0 = off [TINYSSE_HISTORY_AGE] (0)
  --store FILE          keep history in this SQLite file, so it survives restarts
                        and crashes [TINYSSE_STORE] (memory only)
  --store-sync MODE     normal: an acknowledged publish survives a crash of the
                        process; full: a power loss too [TINYSSE_STORE_SYNC] (normal)
  --redis URL           share topics, ids and history with other instances
                        through Redis (redis://[user:password@]host[:port][/db]);
                        not with --store [TINYSSE_REDIS] (unset)
  --max-body BYTES      largest publish body [TINYSSE_MAX_BODY] ({max_body})
  --publish-token T     require Authorization: Bearer T to publish [TINYSSE_PUBLISH_TOKEN]
  --jwt-secret KEY      publishing and subscribing need a JWT signed with this
                        key (HS256); visible in ps, so prefer --jwt-secret-file
                        [TINYSSE_JWT_SECRET]
  --jwt-secret-file FILE
                        the same, with the key read from FILE (trailing line
                        breaks ignored) [TINYSSE_JWT_SECRET_FILE]
  --jwt-public-key FILE the same, with JWTs signed with RS256 or ES256, checked
                        with this PEM public key [TINYSSE_JWT_PUBLIC_KEY]
  --open-topics PATTERNS
                        with a JWT key: topic patterns anyone may subscribe to,
                        comma-separated (news,status/*) [TINYSSE_OPEN_TOPICS]
  --cors-origin O       Access-Control-Allow-Origin value [TINYSSE_CORS_ORIGIN]
  --no-demo             turn off /async and the demo producer [TINYSSE_DEMO=0]
  --firehose            turn on /firehose [TINYSSE_FIREHOSE=1]
  -h, --help            print this help
  -V, --version         print the version
",
        addr = defaults::ADDR,
        heartbeat = defaults::HEARTBEAT.as_secs(),
        retry = defaults::RETRY_MS,
        max_streams = defaults::MAX_STREAMS,
        queue = defaults::QUEUE,
        history = defaults::HISTORY,
        max_topics = defaults::MAX_TOPICS,
        history_bytes = size_text(defaults::HISTORY_BYTES),
        max_body = defaults::MAX_BODY,
    )
}

/// A size as `--history-bytes` takes it: `64M` rather than `67108864`.
fn size_text(n: usize) -> String {
    for (shift, suffix) in [(30, "G"), (20, "M"), (10, "K")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", n >> shift);
        }
    }
    n.to_string()
}

fn number<T>(name: &str, value: &str, min: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let n: T = value
        .trim()
        .parse()
        .map_err(|_| ConfigError(format!("{name}: '{value}' is not a number")))?;
    if n < min {
        return Err(ConfigError(format!("{name}: must be at least {min}")));
    }
    Ok(n)
}

/// A size in bytes: digits with an optional `K`, `M` or `G` (1024-based,
/// either case), at least 1.
fn size(name: &str, value: &str) -> Result<usize, ConfigError> {
    let bad = || {
        ConfigError(format!(
            "{name}: '{value}' is not a size (like 65536, 512K, 64M, 1G)"
        ))
    };
    let v = value.trim();
    let (digits, shift) = match v.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&v[..v.len() - 1], 10),
        Some(b'M') => (&v[..v.len() - 1], 20),
        Some(b'G') => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: usize = digits.parse().map_err(|_| bad())?;
    let n = n
        .checked_mul(1 << shift)
        .ok_or_else(|| ConfigError(format!("{name}: '{value}' is too large")))?;
    if n == 0 {
        return Err(ConfigError(format!("{name}: must be at least 1")));
    }
    Ok(n)
}

/// Applies one setting by its flag name (without `--`); `source` names where
/// the value came from in errors (`--queue` or `TINYSSE_QUEUE`).
fn apply(c: &mut Config, flag: &str, source: &str, value: &str) -> Result<(), ConfigError> {
    match flag {
        "addr" => {
            use std::net::ToSocketAddrs;
            if value
                .to_socket_addrs()
                .map_or(true, |mut a| a.next().is_none())
            {
                return Err(ConfigError(format!(
                    "{source}: '{value}' is not a HOST:PORT address"
                )));
            }
            c.addr = value.to_string();
        }
        "public" => c.public = PathBuf::from(value),
        "heartbeat" => c.heartbeat_secs = number(source, value, 0)?,
        "retry" => c.retry_ms = number(source, value, 0)?,
        "max-streams" => c.max_streams = number(source, value, 1)?,
        "queue" => c.queue = number(source, value, 1)?,
        "history" => c.history = number(source, value, 1)?,
        "max-topics" => c.max_topics = number(source, value, 1)?,
        "history-bytes" => c.history_bytes = size(source, value)?,
        "max-body" => c.max_body = number(source, value, 1)?,
        "publish-token" => {
            if value.is_empty() {
                return Err(ConfigError(format!("{source}: must not be empty")));
            }
            c.publish_token = Some(Secret(value.to_string()))
        }
        // The value never goes into an error: it is a key.
        "jwt-secret" => {
            if value.is_empty() {
                return Err(ConfigError(format!("{source}: must not be empty")));
            }
            c.jwt_secret = Some(Secret(value.to_string()))
        }
        "jwt-secret-file" | "jwt-public-key" => {
            if value.is_empty() {
                return Err(ConfigError(format!("{source}: must not be empty")));
            }
            let path = Some(PathBuf::from(value));
            if flag == "jwt-secret-file" {
                c.jwt_secret_file = path;
            } else {
                c.jwt_public_key = path;
            }
        }
        "open-topics" => {
            let patterns =
                Pattern::parse_list(value).map_err(|e| ConfigError(format!("{source}: {e}")))?;
            c.open_topics = Some(patterns);
        }
        "cors-origin" => c.cors_origin = Some(value.to_string()),
        "history-age" => c.history_age_secs = number(source, value, 0)?,
        "store" => {
            if value.is_empty() {
                return Err(ConfigError(format!("{source}: must not be empty")));
            }
            c.store = Some(PathBuf::from(value))
        }
        "redis" => {
            if value.is_empty() {
                return Err(ConfigError(format!("{source}: must not be empty")));
            }
            c.redis = Some(Secret(value.to_string()))
        }
        "store-sync" => {
            c.store_sync = match value {
                "normal" => StoreSync::Normal,
                "full" => StoreSync::Full,
                _ => {
                    return Err(ConfigError(format!(
                        "{source}: '{value}' is not normal or full"
                    )));
                }
            }
        }
        _ => return Err(ConfigError(format!("unknown setting {source}"))),
    }
    Ok(())
}

const VALUED: [&str; 20] = [
    "addr",
    "public",
    "heartbeat",
    "retry",
    "max-streams",
    "queue",
    "history",
    "max-topics",
    "history-bytes",
    "max-body",
    "publish-token",
    "jwt-secret",
    "jwt-secret-file",
    "jwt-public-key",
    "open-topics",
    "cors-origin",
    "history-age",
    "store",
    "store-sync",
    "redis",
];

fn boolean(source: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError(format!("{source}: '{value}' is not 0 or 1"))),
    }
}

impl Config {
    /// Parses `args` (without the program name) over the environment read by
    /// `env`; a flag wins over its variable.
    pub fn parse<I, E>(args: I, env: E) -> Result<Command, ConfigError>
    where
        I: IntoIterator<Item = OsString>,
        E: Fn(&str) -> Option<String>,
    {
        let mut c = Config::default();
        for flag in VALUED {
            let var = format!("TINYSSE_{}", flag.replace('-', "_").to_ascii_uppercase());
            if let Some(v) = env(&var) {
                apply(&mut c, flag, &var, &v)?;
            }
        }
        if let Some(v) = env("TINYSSE_DEMO") {
            c.demo = boolean("TINYSSE_DEMO", &v)?;
        }
        if let Some(v) = env("TINYSSE_FIREHOSE") {
            c.firehose = boolean("TINYSSE_FIREHOSE", &v)?;
        }

        use lexopt::prelude::*;
        let mut parser = lexopt::Parser::from_args(args);
        while let Some(arg) = parser.next().map_err(|e| ConfigError(e.to_string()))? {
            match arg {
                Short('h') | Long("help") => return Ok(Command::Help),
                Short('V') | Long("version") => return Ok(Command::Version),
                Long("no-demo") => c.demo = false,
                Long("firehose") => c.firehose = true,
                Long(name) if VALUED.contains(&name) => {
                    let name = name.to_string();
                    let source = format!("--{name}");
                    let value = parser
                        .value()
                        .map_err(|_| ConfigError(format!("{source}: missing value")))?;
                    let value = value
                        .into_string()
                        .map_err(|_| ConfigError(format!("{source}: value is not UTF-8")))?;
                    apply(&mut c, &name, &source, &value)?;
                }
                other => return Err(ConfigError(other.unexpected().to_string())),
            }
        }
        c.check_auth()?;
        if c.redis.is_some() && c.store.is_some() {
            return Err(ConfigError(
                "--redis and --store cannot be used together: with --redis, Redis keeps the history"
                    .into(),
            ));
        }
        Ok(Command::Run(Box::new(c)))
    }

    /// Refuses settings that contradict each other: one key at most, and
    /// none with a publish token (the token would be ignored).
    fn check_auth(&self) -> Result<(), ConfigError> {
        let keys: Vec<&str> = [
            (self.jwt_secret.is_some(), "--jwt-secret"),
            (self.jwt_secret_file.is_some(), "--jwt-secret-file"),
            (self.jwt_public_key.is_some(), "--jwt-public-key"),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| *name)
        .collect();
        match keys.as_slice() {
            [] if self.open_topics.is_some() => Err(ConfigError(
                "--open-topics needs a JWT key (--jwt-secret-file, --jwt-secret or --jwt-public-key)"
                    .into(),
            )),
            [a, b, ..] => Err(ConfigError(format!(
                "{a} and {b} cannot be used together: give one key"
            ))),
            [key] if self.publish_token.is_some() => Err(ConfigError(format!(
                "--publish-token and {key} cannot be used together: with a JWT key, \
                 publishing needs a token that allows the topic"
            ))),
            _ => Ok(()),
        }
    }

    /// The JWT authorizer the settings ask for, with the key read (from
    /// its file); `None` without a key. A key that cannot be read or used
    /// is an error that names the flag, never the key.
    pub fn authorizer(&self) -> Result<Option<Authorizer>, ConfigError> {
        let auth = if let Some(key) = &self.jwt_secret {
            Authorizer::from_secret(key.0.as_bytes())
                .map_err(|e| ConfigError(format!("--jwt-secret: {e}")))?
        } else if let Some(path) = &self.jwt_secret_file {
            Authorizer::from_secret_file(path)
                .map_err(|e| ConfigError(format!("--jwt-secret-file: {e}")))?
        } else if let Some(path) = &self.jwt_public_key {
            let shown = path.display();
            let pem = std::fs::read(path)
                .map_err(|e| ConfigError(format!("--jwt-public-key: cannot read {shown}: {e}")))?;
            Authorizer::from_public_key_pem(&pem)
                .map_err(|e| ConfigError(format!("--jwt-public-key: {shown}: {e}")))?
        } else {
            return Ok(None);
        };
        Ok(Some(auth.with_open_topics(
            self.open_topics.clone().unwrap_or_default(),
        )))
    }

    /// A server builder with these settings (the demo's `/async` route
    /// included; its producer is started by `main` once the server is up),
    /// or why the JWT key cannot be used.
    pub fn builder(&self) -> Result<ServerBuilder, ConfigError> {
        let mut b = Server::builder()
            .addr(self.addr.clone())
            .public_dir(Some(self.public.clone()))
            .heartbeat((self.heartbeat_secs > 0).then(|| Duration::from_secs(self.heartbeat_secs)))
            .retry(Some(self.retry_ms))
            .max_streams(self.max_streams)
            .queue(self.queue)
            .history(self.history)
            .max_topics(self.max_topics)
            .history_bytes(self.history_bytes)
            .max_body(self.max_body)
            .publish_token(self.publish_token.as_ref().map(|t| t.0.clone()))
            .cors_origin(self.cors_origin.clone())
            .firehose(self.firehose)
            .history_age(
                (self.history_age_secs > 0).then(|| Duration::from_secs(self.history_age_secs)),
            )
            .store(self.store.clone())
            .store_sync(self.store_sync);
        #[cfg(feature = "redis")]
        {
            b = b.redis(self.redis.as_ref().map(|u| u.0.clone()));
        }
        #[cfg(not(feature = "redis"))]
        if self.redis.is_some() {
            return Err(ConfigError(
                "--redis: this build has no Redis support (build with the `redis` feature)".into(),
            ));
        }
        if let Some(auth) = self.authorizer()? {
            b = b.authorizer(auth);
        }
        if self.demo {
            b = b.stream_route("/async", crate::demo::async_route);
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Command, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::parse(args.iter().map(OsString::from), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> Config {
        match parse(args, env).unwrap() {
            Command::Run(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_win_over_env() {
        let c = run(
            &["--queue", "9"],
            &[("TINYSSE_QUEUE", "3"), ("TINYSSE_HISTORY", "7")],
        );
        assert_eq!(c.queue, 9);
        assert_eq!(c.history, 7);
        assert_eq!(run(&["--queue=4"], &[]).queue, 4);
    }

    #[test]
    fn errors_name_the_flag() {
        let e = parse(&["--queue", "0"], &[]).unwrap_err();
        assert!(e.0.contains("--queue"), "{e}");
        let e = parse(&["--max-streams", "x"], &[]).unwrap_err();
        assert!(e.0.contains("--max-streams"), "{e}");
        let e = parse(&["--bogus"], &[]).unwrap_err();
        assert!(e.0.contains("--bogus"), "{e}");
        let e = parse(&[], &[("TINYSSE_RETRY", "-1")]).unwrap_err();
        assert!(e.0.contains("TINYSSE_RETRY"), "{e}");
        let e = parse(&["--addr", "nonsense"], &[]).unwrap_err();
        assert!(e.0.contains("--addr"), "{e}");
        assert!(
            parse(&["--heartbeat"], &[])
                .unwrap_err()
                .0
                .contains("--heartbeat")
        );
    }

    #[test]
    fn history_bytes_takes_suffixes() {
        assert_eq!(run(&[], &[]).history_bytes, 64 << 20);
        assert_eq!(
            run(&["--history-bytes", "16M"], &[]).history_bytes,
            16 << 20
        );
        assert_eq!(
            run(&["--history-bytes", "512k"], &[]).history_bytes,
            512 << 10
        );
        assert_eq!(run(&["--history-bytes", "1G"], &[]).history_bytes, 1 << 30);
        assert_eq!(run(&["--history-bytes", "1000"], &[]).history_bytes, 1000);
        assert_eq!(
            run(&[], &[("TINYSSE_HISTORY_BYTES", "2K")]).history_bytes,
            2048
        );
        for bad in [
            "0",
            "0M",
            "",
            "M",
            "-1",
            "+5",
            "1.5M",
            "12X",
            "1MB",
            "99999999999999999999G",
        ] {
            let e = parse(&["--history-bytes", bad], &[]).unwrap_err();
            assert!(e.0.contains("--history-bytes"), "{bad}: {e}");
        }
        let e = parse(&[], &[("TINYSSE_HISTORY_BYTES", "lots")]).unwrap_err();
        assert!(e.0.contains("TINYSSE_HISTORY_BYTES"), "{e}");
    }

    #[test]
    fn sizes_print_as_they_are_read() {
        for n in [1, 1000, 1024, 1536, 64 << 20, 3 << 30] {
            assert_eq!(size("x", &size_text(n)).unwrap(), n, "{}", size_text(n));
        }
        assert_eq!(size_text(64 << 20), "64M");
        assert!(usage().contains("[TINYSSE_HISTORY_BYTES] (64M)"));
    }

    #[test]
    fn jwt_flags_and_their_conflicts() {
        let c = run(
            &["--jwt-secret", "k", "--open-topics", "news, status/*"],
            &[],
        );
        assert_eq!(c.jwt_secret, Some(Secret("k".into())));
        assert_eq!(c.open_topics.as_ref().map(Vec::len), Some(2));
        let c = run(
            &[],
            &[
                ("TINYSSE_JWT_SECRET_FILE", "/k"),
                ("TINYSSE_OPEN_TOPICS", "a"),
            ],
        );
        assert_eq!(c.jwt_secret_file, Some(PathBuf::from("/k")));
        // Flags, environment, and the name the error must give.
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let refused: &[Case] = &[
            (
                &["--jwt-secret", "k", "--publish-token", "t"],
                &[],
                "--publish-token",
            ),
            (
                &["--jwt-secret-file", "/k"],
                &[("TINYSSE_PUBLISH_TOKEN", "t")],
                "--publish-token",
            ),
            (
                &["--jwt-public-key", "/p", "--jwt-secret", "k"],
                &[],
                "--jwt-public-key",
            ),
            (
                &["--jwt-public-key", "/p", "--jwt-secret-file", "/k"],
                &[],
                "--jwt-public-key",
            ),
            (
                &["--jwt-secret", "k", "--jwt-secret-file", "/k"],
                &[],
                "--jwt-secret-file",
            ),
            (&["--open-topics", "news"], &[], "--open-topics"),
            (
                &["--jwt-secret", "k", "--open-topics", "a*b"],
                &[],
                "--open-topics",
            ),
            (&["--jwt-secret", ""], &[], "--jwt-secret"),
            (
                &[],
                &[("TINYSSE_OPEN_TOPICS", "x y")],
                "TINYSSE_OPEN_TOPICS",
            ),
        ];
        for (args, env, names) in refused {
            let e = parse(args, env).unwrap_err();
            assert!(e.0.contains(names), "{args:?} {env:?}: {e}");
        }
        // The key shows in no error and no Debug line.
        let e = parse(
            &["--jwt-secret", "KEY123", "--publish-token", "TOK456"],
            &[],
        )
        .unwrap_err();
        assert!(!e.0.contains("KEY123") && !e.0.contains("TOK456"), "{e}");
        let c = run(&["--jwt-secret", "KEY123"], &[]);
        let shown = format!("{c:?} {:?}", c.builder().unwrap());
        assert!(!shown.contains("KEY123"), "{shown}");
        let c = run(&["--publish-token", "TOK456"], &[]);
        let shown = format!("{c:?} {:?}", c.builder().unwrap());
        assert!(!shown.contains("TOK456"), "{shown}");
    }

    #[test]
    fn switches() {
        assert!(!run(&["--no-demo"], &[]).demo);
        assert!(!run(&[], &[("TINYSSE_DEMO", "0")]).demo);
        assert!(run(&[], &[("TINYSSE_FIREHOSE", "1")]).firehose);
        assert_eq!(parse(&["--help"], &[]).unwrap(), Command::Help);
        assert_eq!(parse(&["-V"], &[]).unwrap(), Command::Version);
    }
}
