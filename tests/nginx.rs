//! tinysse behind a real nginx running `deploy/nginx.conf`: events pass one
//! by one, unbuffered, over HTTP/1.1 and HTTP/2 (TLS), `Last-Event-ID` replay
//! works through the proxy, and a buffering proxy is caught by the same check.
//!
//! Needs `nginx`, `curl` and `openssl` on the PATH (`apt-get install -y nginx
//! curl openssl`). Without them each test skips, saying so; with CI set it fails.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::nginx::Nginx;
use crossbeam_channel::{Receiver, RecvTimeoutError, unbounded};
use tinysse::{Event, Server, ServerBuilder, ServerHandle};

/// Far below anything a buffering proxy would take to flush (it waits for
/// kilobytes or the end of the response), far above loopback latency on a
/// busy 2-core CI machine.
const PER_EVENT: Duration = Duration::from_millis(1500);

/// Whether nginx, curl and openssl are here; if not, `test` skips saying
/// what to install, or fails when CI is set (tests/common's one policy).
fn tools(test: &str) -> bool {
    common::require(
        &format!("nginx::{test}"),
        &["nginx", "curl", "openssl"],
        "apt-get install -y nginx curl openssl",
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
    Server::builder()
        .addr("127.0.0.1:0")
        .public_dir(None)
        .retry(Some(500))
}

struct Running(Option<ServerHandle>);

impl Running {
    fn start(b: ServerBuilder) -> Running {
        Running(Some(b.start().expect("start tinysse")))
    }
    fn get(&self) -> &ServerHandle {
        self.0.as_ref().expect("running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.join();
        }
    }
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
    let server = Running::start(quiet_server().heartbeat(Some(Duration::from_millis(300))));
    let nginx = Nginx::start(server.get().addr());
    let curl = Curl::get(&["--http2"], &nginx.https("/events?topic=h2"));
    let head = curl.head();
    sse_head_checks(&head, "2");
    let latencies = one_by_one(server.get(), &curl, "h2");
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
    let server = Running::start(quiet_server());
    let nginx = Nginx::start(server.get().addr());
    let curl = Curl::get(&["--http1.1"], &nginx.https("/events?topic=h1"));
    let head = curl.head();
    sse_head_checks(&head, "1.1");
    let latencies = one_by_one(server.get(), &curl, "h1");
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
    let mut server = Running::start(quiet_server());
    let nginx = Nginx::start(server.get().addr());
    let url = format!("http://127.0.0.1:{}/events?topic=b", nginx.buffered);
    let curl = Curl::get(&["--http1.1", "--compressed"], &url);
    // Even the head is held back, so watch the subscription appear instead.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.get().metrics().streams_active() == 0 {
        assert!(Instant::now() < deadline, "the stream never opened");
        thread::sleep(Duration::from_millis(10));
    }
    // The slot is taken just before the subscription is made.
    thread::sleep(Duration::from_millis(100));
    server
        .get()
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
    if let Some(s) = server.0.take() {
        assert!(s.join(), "the stream did not end");
    }
    assert_eq!(curl.data(Duration::from_secs(10)), "held back");
}

#[test]
fn last_event_id_replays_through_the_proxy() {
    if !tools("last_event_id_replays_through_the_proxy") {
        return;
    }
    let server = Running::start(quiet_server());
    let nginx = Nginx::start(server.get().addr());
    let hub = server.get().hub();
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
    let open = Running::start(quiet_server());
    let nginx = Nginx::start(open.get().addr());
    assert_eq!(post(&nginx, None), "403");
    drop(nginx);
    let guarded = Running::start(quiet_server().publish_token(Some("s3cret".into())));
    let nginx = Nginx::start(guarded.get().addr());
    assert_eq!(post(&nginx, None), "401");
    assert_eq!(post(&nginx, Some("s3cret")), "200");
    assert_eq!(guarded.get().metrics().events_published(), 1);
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
