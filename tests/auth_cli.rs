//! The binary's authorization flags: `--jwt-secret`, `--jwt-secret-file`,
//! `--jwt-public-key` and `--open-topics`, end to end with real tokens
//! (RSA and EC keys made with `openssl genpkey` for each run), and every
//! combination the contract refuses: exit 2 with one line naming the flag,
//! and never the key.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tinysse::EventStream;

const KEY: &str = "cli-test-key-0123456789abcdef0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(subscribe: &[&str], publish: &[&str]) -> Value {
    json!({"exp": now() + 600, "tinysse": {"subscribe": subscribe, "publish": publish}})
}

fn hs(key: &[u8], c: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        c,
        &EncodingKey::from_secret(key).unwrap(),
    )
    .unwrap()
}

/// Runs the binary to its exit, which these arguments should make it do at
/// once; one that starts serving instead is killed after 10 s (and then
/// has no exit code).
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tinysse"));
    cmd.args(args).env("TINYSSE_LOG", "debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tinysse");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("tinysse's output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn openssl(dir: &Path, args: &[&str]) {
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
}

fn status(addr: std::net::SocketAddr, target: &str, headers: &[(&str, &str)]) -> u16 {
    let s = EventStream::connect(addr, target, headers).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.status()
}

fn publish(addr: std::net::SocketAddr, token: Option<&str>, topic: &str) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        h.push(("Authorization", a.as_str()));
    }
    let body = json!({"topic": topic, "data": "x"}).to_string();
    request(addr, "POST", "/publish", &h, body.as_bytes())
}

#[test]
fn conflicting_or_unusable_settings_exit_2_with_one_line() {
    let dir = TempDir::new();
    let d = dir.path();
    let key_file = d.join("jwt.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let empty = d.join("empty.key");
    std::fs::write(&empty, "\n").unwrap();
    let not_pem = d.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let missing = d.join("missing.key");
    let (k, m, e, n) = (
        key_file.to_str().unwrap(),
        missing.to_str().unwrap(),
        empty.to_str().unwrap(),
        not_pem.to_str().unwrap(),
    );
    // Flags, environment, and the name the error must give.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--jwt-secret", KEY, "--publish-token", "tok-123"],
            vec![],
            "--publish-token",
        ),
        (
            vec!["--jwt-secret-file", k],
            vec![("TINYSSE_PUBLISH_TOKEN", "tok-123")],
            "--publish-token",
        ),
        (
            vec!["--jwt-public-key", n, "--jwt-secret", KEY],
            vec![],
            "--jwt-public-key",
        ),
        (
            vec!["--jwt-public-key", n],
            vec![("TINYSSE_JWT_SECRET_FILE", k)],
            "--jwt-public-key",
        ),
        (
            vec!["--jwt-secret", KEY, "--jwt-secret-file", k],
            vec![],
            "--jwt-secret-file",
        ),
        (vec!["--open-topics", "news"], vec![], "--open-topics"),
        (
            vec![],
            vec![("TINYSSE_OPEN_TOPICS", "news")],
            "--open-topics",
        ),
        (
            vec!["--jwt-secret", KEY, "--open-topics", "news,user/*/x"],
            vec![],
            "--open-topics",
        ),
        (
            vec!["--jwt-secret", KEY, "--open-topics", "news,,x"],
            vec![],
            "--open-topics",
        ),
        (vec!["--jwt-secret", ""], vec![], "--jwt-secret"),
        (vec!["--jwt-secret-file", m], vec![], "--jwt-secret-file"),
        (vec!["--jwt-secret-file", e], vec![], "--jwt-secret-file"),
        (vec!["--jwt-public-key", n], vec![], "--jwt-public-key"),
        (vec!["--jwt-public-key", m], vec![], "--jwt-public-key"),
        // A secret given where a public key is expected.
        (vec!["--jwt-public-key", k], vec![], "--jwt-public-key"),
    ];
    for (args, env, name) in &cases {
        let mut all = vec!["--addr", "127.0.0.1:0", "--no-demo"];
        all.extend_from_slice(args);
        let (code, out, err) = run(&all, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?} {env:?}: {err}");
        assert!(err.contains(name), "{args:?} {env:?}: {err}");
        assert!(!err.contains(KEY) && !err.contains("tok-123"), "{err}");
        assert!(out.is_empty(), "{args:?}: started: {out}");
    }
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, Some(0));
    for flag in [
        "--jwt-secret KEY",
        "--jwt-secret-file FILE",
        "--jwt-public-key FILE",
        "--open-topics PATTERNS",
        "TINYSSE_JWT_SECRET_FILE",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn a_secret_from_a_flag_a_file_or_the_environment() {
    let dir = TempDir::new();
    let file = dir.path().join("jwt.key");
    // As `openssl rand -hex 32 > jwt.key` writes it: a trailing line break.
    std::fs::write(&file, format!("{KEY}\n")).unwrap();
    let f = file.to_str().unwrap();
    let sub = hs(KEY.as_bytes(), &claims(&["user/42/*"], &["user/*"]));
    let bearer = format!("Bearer {sub}");
    for (args, env) in [
        (vec!["--jwt-secret-file", f], vec![]),
        (vec!["--jwt-secret", KEY], vec![]),
        (vec![], vec![("TINYSSE_JWT_SECRET", KEY)]),
        (vec![], vec![("TINYSSE_JWT_SECRET_FILE", f)]),
    ] {
        let mut all = vec![
            "--addr",
            "127.0.0.1:0",
            "--no-demo",
            "--open-topics",
            "news",
        ];
        all.extend_from_slice(&args);
        let mut env = env.clone();
        env.push(("TINYSSE_LOG", "debug"));
        let bin = Bin::start_env(&all, &env);
        let a = bin.addr;
        assert_eq!(status(a, "/events?topic=news", &[]), 200, "{args:?}");
        assert_eq!(status(a, "/events?topic=user/42/x", &[]), 401);
        assert_eq!(
            status(a, "/events?topic=user/42/x", &[("Authorization", &bearer)]),
            200
        );
        assert_eq!(
            status(a, "/events?topic=user/43/x", &[("Authorization", &bearer)]),
            403
        );
        assert_eq!(publish(a, Some(&sub), "user/9/x").status, 200);
        assert_eq!(publish(a, None, "user/9/x").status, 401);
        // The token decides, not the loopback rules.
        assert_eq!(publish(a, Some(&sub), "news").status, 403);
        assert_eq!(get(a, "/metrics").status, 200);
        assert_eq!(get(a, "/healthz").status, 200);
        bin.stop();
    }
    // The demo's /async stays open with auth on.
    let bin = Bin::start(&["--addr", "127.0.0.1:0", "--jwt-secret-file", f]);
    assert_eq!(status(bin.addr, "/async", &[]), 200);
    assert_eq!(status(bin.addr, "/events?topic=demo", &[]), 401);
    bin.stop();
}

#[test]
fn public_key_tokens_rs256_and_es256() {
    if !require(
        "auth_cli::public_key_tokens_rs256_and_es256",
        &["openssl"],
        "apt-get install -y openssl",
    ) {
        return;
    }
    let dir = TempDir::new();
    let d = dir.path();
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ],
    );
    openssl(
        d,
        &["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub.pem"],
    );
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ],
    );
    openssl(
        d,
        &["pkey", "-in", "ec.pem", "-pubout", "-out", "ec.pub.pem"],
    );
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec2.pem",
        ],
    );
    let read = |f: &str| std::fs::read(d.join(f)).unwrap();
    let c = claims(&["user/42/*"], &["user/*"]);
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &c,
        &EncodingKey::from_rsa_pem(&read("rsa.pem")).unwrap(),
    )
    .unwrap();
    let es = encode(
        &Header::new(Algorithm::ES256),
        &c,
        &EncodingKey::from_ec_pem(&read("ec.pem")).unwrap(),
    )
    .unwrap();
    let es_other = encode(
        &Header::new(Algorithm::ES256),
        &c,
        &EncodingKey::from_ec_pem(&read("ec2.pem")).unwrap(),
    )
    .unwrap();
    // The public key used as an HMAC secret: the "algorithm confusion" attack.
    let confused = hs(&read("rsa.pub.pem"), &c);
    for (pubkey, good, bad) in [
        ("rsa.pub.pem", &rs, vec![&es, &confused]),
        ("ec.pub.pem", &es, vec![&rs, &es_other]),
    ] {
        let path = d.join(pubkey);
        let bin = Bin::start(&[
            "--addr",
            "127.0.0.1:0",
            "--no-demo",
            "--jwt-public-key",
            path.to_str().unwrap(),
        ]);
        let a = bin.addr;
        let target = "/events?topic=user/42/inbox";
        assert_eq!(
            status(a, &format!("{target}&access_token={good}"), &[]),
            200
        );
        let cookie = format!("tinysse_token={good}");
        assert_eq!(status(a, target, &[("Cookie", &cookie)]), 200);
        assert_eq!(publish(a, Some(good), "user/7/x").status, 200);
        for b in &bad {
            assert_eq!(
                status(a, &format!("{target}&access_token={b}")[..], &[]),
                401,
                "{pubkey}"
            );
            assert_eq!(publish(a, Some(b), "user/7/x").status, 401);
        }
        bin.stop();
    }
}

#[test]
fn debug_logs_never_show_the_key_or_a_token() {
    let dir = TempDir::new();
    let log = dir.path().join("stderr.log");
    // The binary's stderr into a file (Bin inherits the shell's).
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!("exec \"$0\" \"$@\" 2>>'{}'", log.display()),
        env!("CARGO_BIN_EXE_tinysse"),
    ]);
    let bin = Bin::start_cmd(
        cmd,
        &[
            "--addr",
            "127.0.0.1:0",
            "--jwt-secret",
            KEY,
            "--open-topics",
            "news",
        ],
        &[("TINYSSE_LOG", "debug")],
    );
    let a = bin.addr;
    let good = hs(KEY.as_bytes(), &claims(&["t"], &["t"]));
    let wrong = hs(b"another key", &claims(&["t"], &["t"]));
    for (t, ok, topic_refused) in [(&good, 200, 403), (&wrong, 401, 401)] {
        let cookie = format!("tinysse_token={t}");
        let bearer = format!("Bearer {t}");
        let target = format!("/events?topic=t&access_token={t}");
        assert_eq!(status(a, &target, &[]), ok);
        assert_eq!(status(a, "/events?topic=t", &[("Cookie", &cookie)]), ok);
        let h = [("Authorization", bearer.as_str())];
        assert_eq!(status(a, "/events?topic=t", &h), ok);
        assert_eq!(status(a, "/events?topic=u", &h), topic_refused);
        assert_eq!(publish(a, Some(t), "t").status, ok);
        assert_eq!(publish(a, Some(t), "u").status, topic_refused);
    }
    bin.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("tinysse: "), "no debug log at all: {text}");
    for secret in [KEY, good.as_str(), wrong.as_str()] {
        // Any of a token's three parts would do: its signature is the
        // one that is secret-derived.
        let sig = secret.rsplit('.').next().unwrap();
        assert!(!text.contains(sig), "the log shows a secret:\n{text}");
    }
}
