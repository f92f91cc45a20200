//! Deployment as shipped in `deploy/`: tinysse behind a real nginx running
//! `deploy/nginx.conf` (events pass one by one, unbuffered, over HTTP/1.1
//! and HTTP/2 with TLS; `Last-Event-ID` replay works through the proxy; a
//! buffering proxy is caught by the same check; publishing through it needs
//! a token), request smuggling through that nginx (issue #10, finding 1),
//! and `deploy/tinysse.service`, a valid and hardened systemd unit.
//!
//! The nginx tests need `nginx`, `curl` and `openssl` (`apt-get install -y
//! nginx curl openssl`), the systemd ones `systemd-analyze` (it needs no
//! running systemd): each skips saying so without them, or fails when CI is
//! set.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::nginx::Nginx;
use common::*;
use crossbeam_channel::{Receiver, RecvTimeoutError, unbounded};
use tinysse::{Event, ServerBuilder, ServerHandle};

const INSTALL: &str = "apt-get install -y nginx curl openssl";

/// Far below anything a buffering proxy would take to flush (it waits for
/// kilobytes or the end of the response), far above loopback latency on a
/// busy 2-core CI machine.
const PER_EVENT: Duration = Duration::from_millis(1500);

/// Whether nginx, curl and openssl are here; if not, `test` skips saying
/// what to install, or fails when CI is set (tests/common's one policy).
fn tools(test: &str) -> bool {
    require(
        &format!("deployment::{test}"),
        &["nginx", "curl", "openssl"],
        INSTALL,
    )
}

/// curl streaming a response: its stdout (head from `-D -`, then the body),
/// line by line, on a channel. Killed on drop.
struct Curl {
    child: Child,
    lines: Receiver<String>,
}

impl Curl {
    fn get(args: &[&str], url: &str) -> Curl {
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "-k", "-D", "-", "--max-time", "30"])
            .args(["-H", "Accept-Encoding: gzip, br"])
            .args(args)
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start curl");
        let out = child.stdout.take().expect("curl stdout");
        let (tx, lines) = unbounded();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line.trim_end_matches('\r').to_string()).is_err() {
                    return;
                }
            }
        });
        Curl { child, lines }
    }

    /// The next line, or a failure naming `what` after `within`.
    fn line(&self, what: &str, within: Duration) -> String {
        match self.lines.recv_timeout(within) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                panic!("timed out after {within:?} waiting for {what}")
            }
            Err(RecvTimeoutError::Disconnected) => panic!("curl ended before {what}"),
        }
    }

    /// The response head, lower-cased, up to the blank line.
    fn head(&self) -> Vec<String> {
        let mut head = Vec::new();
        loop {
            let l = self.line("the response head", Duration::from_secs(10));
            if l.is_empty() {
                return head;
            }
            head.push(l.to_ascii_lowercase());
        }
    }

    /// The next `data:` line, skipping `retry:`, `id:`, comments and blanks.
    fn data(&self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self.line("a data line", left);
            if let Some(d) = l.strip_prefix("data: ") {
                return d.to_string();
            }
        }
    }
}

impl Drop for Curl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn quiet_server() -> ServerBuilder {
    builder().retry(Some(500))
}

/// Publishes one event at a time and waits for it through curl before the
/// next exists: a proxy that buffers fails at the first one.
fn one_by_one(server: &ServerHandle, curl: &Curl, topic: &str) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for i in 0..5 {
        let text = format!("{topic}-{i}");
        let sent = Instant::now();
        server
            .hub()
            .publish(topic, &Event::data(text.clone()))
            .expect("publish");
        assert_eq!(curl.data(PER_EVENT), text, "event {i} out of order");
        latencies.push(sent.elapsed());
    }
    latencies
}

fn sse_head_checks(head: &[String], version: &str) {
    assert!(
        head[0].starts_with(&format!("http/{version} 200")),
        "expected HTTP/{version} 200, got {head:?}"
    );
    assert!(
        head.iter()
            .any(|h| h.starts_with("content-type: text/event-stream")),
        "{head:?}"
    );
    assert!(
        !head.iter().any(|h| h.starts_with("content-encoding")),
        "the event stream was compressed: {head:?}"
    );
}

#[test]
fn events_arrive_one_by_one_over_http2() {
    if !tools("events_arrive_one_by_one_over_http2") {
        return;
    }
    let server = start(quiet_server().heartbeat(Some(Duration::from_millis(300))));
    let nginx = Nginx::start(server.addr());
    let curl = Curl::get(&["--http2"], &nginx.https("/events?topic=h2"));
    let head = curl.head();
    sse_head_checks(&head, "2");
    let latencies = one_by_one(server.handle(), &curl, "h2");
    eprintln!("HTTP/2 latencies through nginx: {latencies:?}");
    // Idle now: the heartbeat comes through too, so nginx's read timeout
    // never fires on a quiet stream.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let l = curl.line(
            "a heartbeat",
            deadline.saturating_duration_since(Instant::now()),
        );
        if l == ": keep-alive" {
            break;
        }
    }
}

#[test]
fn events_arrive_one_by_one_over_http1_with_tls() {
    if !tools("events_arrive_one_by_one_over_http1_with_tls") {
        return;
    }
    let server = start(quiet_server());
    let nginx = Nginx::start(server.addr());
    let curl = Curl::get(&["--http1.1"], &nginx.https("/events?topic=h1"));
    let head = curl.head();
    sse_head_checks(&head, "1.1");
    let latencies = one_by_one(server.handle(), &curl, "h1");
    eprintln!("HTTP/1.1 latencies through nginx: {latencies:?}");
}

/// The same check against a proxy that holds events back: the event must
/// not come through in time, and must come through once the stream ends
/// (held, not lost). Without this, a check that always passes would look the
/// same as one that works.
#[test]
fn a_buffering_proxy_is_caught() {
    if !tools("a_buffering_proxy_is_caught") {
        return;
    }
    let server = start(quiet_server());
    let nginx = Nginx::start(server.addr());
    // Resuming after an event published first: "held back", published
    // below, reaches the stream whether the subscription is made before it
    // (live) or after it (replayed), so no wait for the subscription.
    let before = server
        .handle()
        .hub()
        .publish("b", &Event::data("before"))
        .expect("publish");
    let url = format!("http://127.0.0.1:{}/events?topic=b", nginx.buffered);
    let last = format!("Last-Event-ID: {before}");
    let curl = Curl::get(&["--http1.1", "--compressed", "-H", &last], &url);
    // Even the head is held back, so watch the stream open instead.
    assert!(
        wait_until(TIMEOUT, || server.handle().metrics().streams_active() == 1),
        "the stream never opened"
    );
    server
        .handle()
        .hub()
        .publish("b", &Event::data("held back"))
        .expect("publish");
    let deadline = Instant::now() + PER_EVENT;
    loop {
        match curl
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Err(RecvTimeoutError::Timeout) => break,
            Ok(l) if l.starts_with("data:") => {
                panic!("a buffering proxy passed the event on at once: {l}")
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("curl ended"),
        }
    }
    // Ending the stream flushes what nginx held.
    assert!(server.stop(), "the stream did not end");
    assert_eq!(curl.data(Duration::from_secs(10)), "held back");
}

#[test]
fn last_event_id_replays_through_the_proxy() {
    if !tools("last_event_id_replays_through_the_proxy") {
        return;
    }
    let server = start(quiet_server());
    let nginx = Nginx::start(server.addr());
    let hub = server.handle().hub();
    for (version, topic) in [("--http2", "r2"), ("--http1.1", "r1")] {
        let ids: Vec<u64> = (0..3)
            .map(|i| {
                hub.publish(topic, &Event::data(format!("r{i}")))
                    .expect("publish")
            })
            .collect();
        let last = format!("Last-Event-ID: {}", ids[0]);
        let url = nginx.https(&format!("/events?topic={topic}"));
        let curl = Curl::get(&[version, "-H", &last], &url);
        curl.head();
        // Replayed, in order, with their ids.
        for (i, id) in ids.iter().enumerate().skip(1) {
            let mut saw_id = None;
            let data = loop {
                let l = curl.line("a replayed event", PER_EVENT);
                if let Some(v) = l.strip_prefix("id: ") {
                    saw_id = Some(v.to_string());
                }
                if let Some(d) = l.strip_prefix("data: ") {
                    break d.to_string();
                }
            };
            assert_eq!(data, format!("r{i}"), "{version}");
            assert_eq!(saw_id, Some(id.to_string()), "{version}");
        }
        // Then live.
        let live = format!("live{version}");
        hub.publish(topic, &Event::data(live.clone()))
            .expect("publish");
        assert_eq!(curl.data(PER_EVENT), live, "{version}");
    }
}

#[test]
fn publishing_through_the_proxy_needs_a_token() {
    if !tools("publishing_through_the_proxy_needs_a_token") {
        return;
    }
    let post = |nginx: &Nginx, auth: Option<&str>| -> String {
        let mut c = Command::new("curl");
        c.args(["-sS", "-k", "--max-time", "10", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "-H", "Content-Type: application/json"])
            .args(["-d", r#"{"topic":"p","data":"x"}"#]);
        if let Some(a) = auth {
            c.args(["-H", &format!("Authorization: Bearer {a}")]);
        }
        let out = c.arg(nginx.https("/publish")).output().expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // No token: every peer is nginx on loopback, so tinysse must not trust it.
    let open = start(quiet_server());
    let nginx = Nginx::start(open.addr());
    assert_eq!(post(&nginx, None), "403");
    drop(nginx);
    let guarded = start(quiet_server().publish_token(Some("s3cret".into())));
    let nginx = Nginx::start(guarded.addr());
    assert_eq!(post(&nginx, None), "401");
    assert_eq!(post(&nginx, Some("s3cret")), "200");
    assert_eq!(guarded.handle().metrics().events_published(), 1);
    // The plain-HTTP server only redirects to HTTPS.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .arg(format!("http://127.0.0.1:{}/", nginx.plain))
        .output()
        .expect("run curl");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.starts_with("301 https://"), "{out}");
}

// ---------------------------------------------------------------------------
// Request smuggling through nginx (issue #10, finding 1). The attack: a
// `GET /index.html` whose body is 65,536 filler bytes and then a raw
// `POST /publish`, over nginx's kept-alive upstream connection. tinysse
// answers the GET without reading the body; upstream tiny_http then skipped
// 64 KiB and ran the rest as a request from 127.0.0.1 with no proxy header:
// a token-less publish. Left incomplete, the smuggled publish swallowed the
// next user's request as its body, and that user got the attacker's answer.
// ---------------------------------------------------------------------------

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
fn curl_once(args: &[&str], url: &str) -> (String, String) {
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
    curl_once(
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
    curl_once(
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
    if !tools("a_publish_smuggled_through_nginx_never_runs") {
        return;
    }
    let (server, nginx, dir) = setup();
    for (version, topic) in [("--http1.1", "smuggled1"), ("--http2", "smuggled2")] {
        // The attacker watches the topic it publishes to, directly.
        let stream = sse(server.addr(), &format!("/events?topic={topic}"), &[]);
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
    if !tools("a_smuggled_request_cannot_swallow_the_next_users_request") {
        return;
    }
    let (server, nginx, dir) = setup();
    for (version, topic) in [("--http1.1", "stolen1"), ("--http2", "stolen2")] {
        let stream = sse(server.addr(), &format!("/events?topic={topic}"), &[]);
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

// ---------------------------------------------------------------------------
// deploy/tinysse.service: `systemd-analyze verify` accepts it without a
// warning, and `systemd-analyze security` rates it as well protected
// ---------------------------------------------------------------------------

fn unit_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/tinysse.service"))
        .expect("read deploy/tinysse.service")
}

/// Whether systemd-analyze is here; if not, `test` skips saying what to
/// install, or fails when CI is set (tests/common's one policy).
fn have_systemd_analyze(test: &str) -> bool {
    require(
        &format!("deployment::{test}"),
        &["systemd-analyze"],
        "apt-get install -y systemd",
    )
}

/// The unit in a temp dir, with ExecStart pointing at the binary just built
/// (verify refuses a unit whose command does not exist).
/// Each test gets its own directory: they run in parallel and each removes
/// its own when done.
fn unit_in_temp_dir(test: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("tinysse-systemd-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let text = unit_text();
    assert!(
        text.contains("ExecStart=/usr/local/bin/tinysse "),
        "deploy/tinysse.service no longer starts /usr/local/bin/tinysse: update tests/deployment.rs"
    );
    let text = text.replace("/usr/local/bin/tinysse", env!("CARGO_BIN_EXE_tinysse"));
    let path = dir.join("tinysse.service");
    std::fs::write(&path, text).expect("write unit");
    (dir, path)
}

#[test]
fn the_unit_has_the_hardening_it_promises() {
    let text = unit_text();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for want in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "LimitNOFILE=65536",
        "KillSignal=SIGTERM",
        "EnvironmentFile=/etc/tinysse/env",
    ] {
        assert!(lines.contains(&want), "deploy/tinysse.service lacks {want}");
    }
    // The flags it passes must be ones the binary knows.
    let exec = lines
        .iter()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_tinysse"))
        .args(&args)
        .arg("--help")
        .output()
        .expect("run tinysse --help");
    assert!(
        out.status.success(),
        "tinysse refuses the unit's flags {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    if !have_systemd_analyze("systemd_analyze_verify_accepts_the_unit") {
        return;
    }
    let (dir, path) = unit_in_temp_dir("verify");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown or misspelt keys are only warnings (exit 0): refuse them too.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

#[test]
fn systemd_analyze_security_rates_the_unit_ok() {
    if !have_systemd_analyze("systemd_analyze_security_rates_the_unit_ok") {
        return;
    }
    let (dir, path) = unit_in_temp_dir("security");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && !stdout.contains("exposure level") {
        skip_or_fail(
            "deployment::systemd_analyze_security_rates_the_unit_ok",
            &format!(
                "this systemd-analyze cannot rate a unit offline: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            ),
            "systemd 252 or later",
        );
        return;
    }
    let level: f64 = stdout
        .lines()
        .find_map(|l| l.split("exposure level for tinysse.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
    // 0 is fully locked down, 10 is unprotected; systemd calls below 2 "OK".
    assert!(level <= 2.0, "exposure {level}:\n{stdout}");
}
