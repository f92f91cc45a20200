//! Request smuggling through a real nginx running `deploy/nginx.conf`
//! (issue #10, finding 1). The attack: a `GET /index.html` whose body is
//! 65,536 filler bytes and then a raw `POST /publish`, over nginx's
//! kept-alive upstream connection. tinysse answers the GET without reading
//! the body; upstream tiny_http then skipped 64 KiB and ran the rest as a
//! request from 127.0.0.1 with no proxy header: a token-less publish. Left
//! incomplete, the smuggled publish swallowed the next user's request as
//! its body, and that user got the attacker's answer.
//!
//! Needs `nginx`, `curl` and `openssl` (`apt-get install -y nginx curl
//! openssl`): skipped with a reason without them, failed in CI.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::nginx::{Nginx, TempDir};
use common::{Running, builder, start};
use tinysse::Event;

const INSTALL: &str = "apt-get install -y nginx curl openssl";
const COOKIE: &str = "session=innocent-cookie-4711";

/// A token-less server (publishing trusts plain loopback peers, which is
/// what nginx's upstream connection is) serving `index.html`, behind nginx.
fn setup() -> (Running, Nginx, TempDir) {
    let public = TempDir::new();
    std::fs::write(public.path().join("index.html"), "<p>index</p>\n").expect("write index.html");
    let server = start(
        builder()
            .public_dir(Some(public.path().to_path_buf()))
            .header_timeout(Some(Duration::from_secs(5))),
    );
    let nginx = Nginx::start(server.addr());
    (server, nginx, public)
}

/// Runs curl; returns (status, body without its trailing newline).
fn curl(args: &[&str], url: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "20", "-H", "Expect:"])
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_string(), body.trim_end().to_string())
}

/// The attacker's request: `GET /index.html` with `smuggled` after 65,536
/// filler bytes, all inside the body nginx forwards.
fn attack(nginx: &Nginx, dir: &TempDir, version: &str, smuggled: &str) -> (String, String) {
    let mut body = vec![b'a'; 65_536];
    body.extend_from_slice(smuggled.as_bytes());
    let file = dir.path().join(format!("attack{version}.bin"));
    std::fs::write(&file, &body).expect("write the attack body");
    let data = format!("@{}", file.display());
    curl(
        &[
            version,
            "-X",
            "GET",
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            &data,
        ],
        &nginx.https("/index.html"),
    )
}

/// The innocent user, right after: their own `/healthz` answer, or not.
fn innocent(nginx: &Nginx, version: &str) -> (String, String) {
    curl(
        &[version, "-H", &format!("Cookie: {COOKIE}")],
        &nginx.https("/healthz?who=innocent-user"),
    )
}

/// What the attacker's subscription to `topic` got before a sentinel the
/// test publishes now: anything there was published by the attack.
fn before_sentinel(server: &Running, stream: tinysse::EventStream, topic: &str) -> Vec<String> {
    server
        .handle()
        .hub()
        .publish(topic, &Event::data("sentinel"))
        .expect("publish the sentinel");
    let mut got = Vec::new();
    for m in stream {
        let m = m.expect("the attacker's stream");
        if m.data == "sentinel" {
            return got;
        }
        got.push(m.data);
    }
    panic!("the attacker's stream ended before the sentinel: {got:?}");
}

#[test]
fn a_publish_smuggled_through_nginx_never_runs() {
    if !common::require("nginx_smuggling", &["nginx", "curl", "openssl"], INSTALL) {
        return;
    }
    let (server, nginx, dir) = setup();
    for (version, topic) in [("--http1.1", "smuggled1"), ("--http2", "smuggled2")] {
        // The attacker watches the topic it publishes to, directly.
        let stream = common::sse(server.addr(), &format!("/events?topic={topic}"), &[]);
        let json = format!(r#"{{"topic":"{topic}","data":"pwned"}}"#);
        let smuggled = format!(
            "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{json}",
            json.len()
        );
        let (status, body) = attack(&nginx, &dir, version, &smuggled);
        assert_eq!(status, "200", "{version}: the attacker's GET: {body}");
        assert_eq!(body, "<p>index</p>", "{version}");
        let (status, body) = innocent(&nginx, version);
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("200", "ok"),
            "{version}: the next user got someone else's answer{}",
            nginx.error_log()
        );
        let got = before_sentinel(&server, stream, topic);
        assert!(
            got.is_empty(),
            "{version}: the smuggled publish ran: {got:?}"
        );
    }
    // Only the two sentinels were ever published.
    assert_eq!(server.handle().metrics().events_published(), 2);
}

#[test]
fn a_smuggled_request_cannot_swallow_the_next_users_request() {
    if !common::require("nginx_smuggling", &["nginx", "curl", "openssl"], INSTALL) {
        return;
    }
    let (server, nginx, dir) = setup();
    for (version, topic) in [("--http1.1", "stolen1"), ("--http2", "stolen2")] {
        let stream = common::sse(server.addr(), &format!("/events?topic={topic}"), &[]);
        // Incomplete: its body is to be whatever comes next on the upstream
        // connection, the next user's request line and Cookie included.
        let smuggled = format!(
            "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 150\r\n\r\ntopic={topic}&data="
        );
        let (status, attacker) = attack(&nginx, &dir, version, &smuggled);
        assert_eq!(status, "200", "{version}: the attacker's GET: {attacker}");
        let (status, body) = innocent(&nginx, version);
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("200", "ok"),
            "{version}: the next user got someone else's answer{}",
            nginx.error_log()
        );
        assert!(!attacker.contains("innocent"), "{version}: {attacker}");
        let got = before_sentinel(&server, stream, topic);
        assert!(
            !got.iter()
                .any(|d| d.contains("innocent") || d.contains(COOKIE)),
            "{version}: the next user's request reached the attacker: {got:?}"
        );
        assert!(
            got.is_empty(),
            "{version}: something was published: {got:?}"
        );
    }
    assert_eq!(server.handle().metrics().events_published(), 2);
}
