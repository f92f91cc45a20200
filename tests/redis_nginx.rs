//! `deploy/nginx-cluster.conf` as written (only ports, certificate paths
//! and the instances' addresses rewritten), in a real nginx in front of two
//! real tinysse binaries sharing one real `redis-server` (issue #13, "Load
//! balancing"): a subscriber on either instance gets what was published on
//! both, in one order, over HTTP/1.1 and HTTP/2; and when the instance
//! holding a stream is killed, the client's reconnect through nginx with its
//! `Last-Event-ID` lands on the other one and gets exactly what it missed.
//!
//! Needs `nginx`, `redis-server`, `curl` and `openssl`; without them the
//! tests skip, saying so, or fail when CI is set.
#![cfg(feature = "redis")]

mod common;

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use common::nginx::{Custom, make_cert, rewrite};
use common::redis::RedisServer;
use common::*;
use tinysse::{Message, SseReader};

/// Both instances need it: behind nginx every peer is loopback.
const TOKEN: &str = "redis-nginx-test-token";

/// How long any one step may take on a busy 2-core machine.
const LIMIT: Duration = Duration::from_secs(20);

fn tools(test: &str) -> bool {
    require(
        &format!("redis_nginx::{test}"),
        &["nginx", "redis-server", "curl", "openssl"],
        "apt-get install -y nginx redis-server curl openssl",
    )
}

/// One Redis, two instances on it, nginx in front. Fields drop in order:
/// nginx, the instances, Redis, the certificate.
struct Cluster {
    nginx: Custom,
    a: Bin,
    b: Bin,
    _redis: RedisServer,
    dir: TempDir,
    /// nginx's TLS port (HTTP/1.1 and HTTP/2).
    tls: u16,
}

impl Cluster {
    fn start() -> Cluster {
        let redis = RedisServer::start(false);
        let url = redis.url();
        let instance = || {
            Bin::start(&[
                "--addr",
                "127.0.0.1:0",
                "--redis",
                &url,
                "--publish-token",
                TOKEN,
                "--no-demo",
            ])
        };
        let (a, b) = (instance(), instance());
        let dir = TempDir::new();
        make_cert(dir.path());
        let (tls, plain) = (free_port(), free_port());
        let site = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx-cluster.conf"),
        )
        .expect("read deploy/nginx-cluster.conf");
        let site = rewrite(
            &site,
            &[
                ("server 127.0.0.1:8080 ", format!("server {} ", a.addr)),
                ("server 127.0.0.1:8081 ", format!("server {} ", b.addr)),
                ("listen 80;", format!("listen 127.0.0.1:{plain};")),
                ("listen [::]:80;", String::new()),
                (
                    "listen 443 ssl http2;",
                    format!("listen 127.0.0.1:{tls} ssl http2;"),
                ),
                ("listen [::]:443 ssl http2;", String::new()),
                (
                    "/etc/letsencrypt/live/sse.example.com/fullchain.pem",
                    dir.path().join("cert.pem").display().to_string(),
                ),
                (
                    "/etc/letsencrypt/live/sse.example.com/privkey.pem",
                    dir.path().join("key.pem").display().to_string(),
                ),
            ],
        );
        // The site goes into `http {}` whole; the helper's own server is
        // unused (nginx binds every listener before it accepts on that one).
        let nginx = Custom::start(&site, "return 404;");
        Cluster {
            nginx,
            a,
            b,
            _redis: redis,
            dir,
            tls,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.tls)
    }

    /// Open streams on each instance, read from its own /metrics.
    fn streams(&self) -> (Option<u64>, Option<u64>) {
        let m = |addr| metric(addr, "tinysse_streams_active");
        (m(self.a.addr), m(self.b.addr))
    }

    /// `GET path` through nginx over HTTP/2: the status code.
    fn get_via_nginx(&self, path: &str) -> String {
        let out = Command::new("curl")
            .args(["-sS", "-k", "--http2", "--max-time", "20"])
            .args(["-o", "/dev/null", "-w", "%{http_code}"])
            .arg(self.url(path))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Publishes through nginx over HTTP/2, with the token; the new id.
    fn publish_via_nginx(&self, topic: &str, data: &str) -> u64 {
        let body = serde_json::json!({"topic": topic, "data": data}).to_string();
        let out = Command::new("curl")
            .args(["-sS", "-k", "--http2", "--max-time", "20"])
            .args(["-o", "-", "-w", "\n%{http_code}"])
            .args(["-H", "Content-Type: application/json"])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .args(["--data-binary", &body])
            .arg(self.url("/publish"))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (answer, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        assert_eq!(
            code,
            "200",
            "publish through nginx: {answer}{}",
            self.nginx.error_log()
        );
        id_of(answer)
    }
}

/// The id in a publish answer (`{"id":"123",...}`).
fn id_of(answer: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(answer).expect("JSON answer");
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no decimal id in {answer}"))
}

/// Publishes straight to one instance, with the token; the new id.
fn publish(addr: SocketAddr, topic: &str, data: &str) -> u64 {
    let body = serde_json::json!({"topic": topic, "data": data}).to_string();
    let r = request(
        addr,
        "POST",
        "/publish",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {TOKEN}")),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "publish on {addr}: {}", r.body);
    id_of(&r.body)
}

/// A subscriber through nginx: curl streaming the body into the crate's
/// own parser on a thread, each event on a channel (which disconnects when
/// the stream ends). curl is killed on drop.
struct Sub {
    child: Child,
    events: Receiver<Message>,
    head: PathBuf,
}

impl Sub {
    /// `GET /events?topic=...` over `version` (`--http1.1`, `--http2`),
    /// with `Last-Event-ID` when resuming, as an EventSource reconnects.
    fn open(c: &Cluster, name: &str, version: &str, topic: &str, last: Option<&str>) -> Sub {
        let head = c.dir.path().join(format!("{name}.head"));
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-N", "-k", version, "--max-time", "60"])
            .arg("-D")
            .arg(&head);
        if let Some(id) = last {
            cmd.args(["-H", &format!("Last-Event-ID: {id}")]);
        }
        let mut child = cmd
            .arg(c.url(&format!("/events?topic={topic}")))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start curl");
        let out = child.stdout.take().expect("curl stdout");
        let (tx, events) = channel();
        std::thread::spawn(move || {
            let mut r = SseReader::new(BufReader::new(out));
            while let Ok(Some(m)) = r.next_message() {
                if tx.send(m).is_err() {
                    return;
                }
            }
        });
        Sub {
            child,
            events,
            head,
        }
    }

    /// The next event: (id, data).
    fn next(&self, what: &str) -> (u64, String) {
        match self.events.recv_timeout(LIMIT) {
            Ok(m) => {
                let id =
                    m.id.as_deref()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("{what}: an event without a decimal id: {m:?}"));
                (id, m.data)
            }
            Err(RecvTimeoutError::Timeout) => panic!("{what}: nothing within {LIMIT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("{what}: the stream ended"),
        }
    }

    /// Waits for the stream to end; the events that came before the end.
    fn until_end(&self) -> Vec<Message> {
        let end = Instant::now() + LIMIT;
        let mut extra = Vec::new();
        loop {
            match self
                .events
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(m) => extra.push(m),
                Err(RecvTimeoutError::Disconnected) => return extra,
                Err(RecvTimeoutError::Timeout) => panic!("the stream did not end: {extra:?}"),
            }
        }
    }

    /// The response's status line (curl wrote the head before the body).
    fn status_line(&self) -> String {
        let head = std::fs::read_to_string(&self.head).unwrap_or_default();
        head.lines().next().unwrap_or_default().trim().to_string()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_subscriber_on_either_instance_gets_every_event_in_one_order() {
    if !tools("a_subscriber_on_either_instance_gets_every_event_in_one_order") {
        return;
    }
    let c = Cluster::start();
    // One over HTTP/1.1, one over HTTP/2, and one on each instance: the
    // second goes to the instance with fewer streams (least_conn), even
    // after a short request between them (round-robin would put it on the
    // first one's instance).
    let s1 = Sub::open(&c, "s1", "--http1.1", "one", None);
    assert!(
        wait_until(LIMIT, || matches!(
            c.streams(),
            (Some(1), Some(0)) | (Some(0), Some(1))
        )),
        "the first stream never opened: {:?}{}",
        c.streams(),
        c.nginx.error_log()
    );
    assert_eq!(c.get_via_nginx("/healthz"), "200");
    let s2 = Sub::open(&c, "s2", "--http2", "one", None);
    assert!(
        wait_until(LIMIT, || c.streams() == (Some(1), Some(1))),
        "not one stream on each instance: {:?}{}",
        c.streams(),
        c.nginx.error_log()
    );

    // Published on each instance in turn, then once through nginx.
    let mut sent = Vec::new();
    for i in 0..6 {
        let on = if i % 2 == 0 { c.a.addr } else { c.b.addr };
        let data = format!("e{i}");
        sent.push((publish(on, "one", &data), data));
    }
    sent.push((c.publish_via_nginx("one", "via nginx"), "via nginx".into()));
    assert!(
        sent.windows(2).all(|w| w[0].0 < w[1].0),
        "ids across the instances do not grow: {sent:?}"
    );
    for s in [&s1, &s2] {
        let got: Vec<(u64, String)> = (0..sent.len()).map(|_| s.next("an event")).collect();
        assert_eq!(got, sent, "{}", s.status_line());
    }
    assert!(
        s1.status_line().starts_with("HTTP/1.1 200"),
        "{}",
        s1.status_line()
    );
    assert!(
        s2.status_line().starts_with("HTTP/2 200"),
        "{}",
        s2.status_line()
    );
}

/// Waits until exactly one stream is open, on either instance; whether it
/// is on `a`.
fn one_stream_on_a(c: &Cluster) -> bool {
    let mut on = (0, 0);
    assert!(
        wait_until(LIMIT, || {
            if let (Some(a), Some(b)) = c.streams() {
                on = (a, b);
            }
            on.0 + on.1 == 1
        }),
        "the stream never opened: {:?}{}",
        c.streams(),
        c.nginx.error_log()
    );
    on.0 == 1
}

/// Whether nginx's error log shows a connection to `dead` refused for a
/// request starting with `request` (e.g. `POST /publish`): it tried the
/// dead instance first, so the request that still succeeded was retried.
fn refused(c: &Cluster, request: &str, dead: SocketAddr) -> bool {
    c.nginx.error_log().lines().any(|l| {
        l.contains("connect() failed (111")
            && l.contains(&format!("request: \"{request}"))
            && l.contains(&format!("upstream: \"http://{dead}/"))
    })
}

/// Kills an instance with SIGKILL, as a crash would, and reaps it.
fn kill(bin: &mut Bin) {
    bin.child.kill().expect("SIGKILL the instance");
    bin.child.wait().expect("reap it");
}

/// The instance holding a client's stream is killed (SIGKILL) mid-stream,
/// events are published meanwhile on the other one, and the client
/// reconnects through nginx with its `Last-Event-ID`, as an EventSource
/// does: it gets exactly those, once each, in order, then live ones. A
/// bystander on the other instance holds one stream there, so nginx's
/// least_conn sends the reconnect to the dead instance first: the test
/// sees it retried on the live one.
fn failover(version: &str) {
    let mut c = Cluster::start();
    let client = Sub::open(&c, "client", version, "f", None);
    let victim_is_a = one_stream_on_a(&c);
    let bystander = Sub::open(&c, "bystander", version, "f", None);
    assert!(
        wait_until(LIMIT, || c.streams() == (Some(1), Some(1))),
        "not one stream on each instance: {:?}{}",
        c.streams(),
        c.nginx.error_log()
    );
    let (victim_addr, survivor) = if victim_is_a {
        (c.a.addr, c.b.addr)
    } else {
        (c.b.addr, c.a.addr)
    };

    // Before: published on both instances, read by both clients.
    let mut last = String::new();
    let mut all = Vec::new();
    for (i, addr) in [c.a.addr, c.b.addr, c.a.addr].into_iter().enumerate() {
        let data = format!("before{i}");
        let id = publish(addr, "f", &data);
        assert_eq!(client.next("an event before the kill"), (id, data.clone()));
        last = id.to_string();
        all.push((id, data));
    }

    kill(if victim_is_a { &mut c.a } else { &mut c.b });
    // What the browser sees: its stream ends, with nothing more on it.
    let extra = client.until_end();
    assert!(extra.is_empty(), "events after the last one: {extra:?}");
    drop(client);

    // Meanwhile, on the instance that is left.
    let mut missed = Vec::new();
    for i in 0..3 {
        let data = format!("meanwhile{i}");
        missed.push((publish(survivor, "f", &data), data));
    }
    all.extend(missed.iter().cloned());

    // The reconnect, as EventSource makes it.
    let client = Sub::open(&c, "reconnect", version, "f", Some(&last));
    for want in &missed {
        assert_eq!(
            &client.next("a missed event"),
            want,
            "{}",
            c.nginx.error_log()
        );
    }
    let want_version = if version == "--http2" {
        "HTTP/2 200"
    } else {
        "HTTP/1.1 200"
    };
    let status = client.status_line();
    assert!(status.starts_with(want_version), "{status}");
    assert!(
        refused(&c, "GET /events?topic=f", victim_addr),
        "the reconnect never tried the dead instance, so no retry was tested:{}",
        c.nginx.error_log()
    );
    // Nothing repeated or left over: the next event is the live one, here
    // published through nginx, which now skips the dead instance.
    let live = c.publish_via_nginx("f", "live");
    assert_eq!(client.next("the live event"), (live, "live".to_string()));
    all.push((live, "live".to_string()));
    assert_eq!(metric(survivor, "tinysse_streams_active"), Some(2));
    // The bystander's stream went on through all of it.
    let seen: Vec<(u64, String)> = (0..all.len())
        .map(|_| bystander.next("the bystander's event"))
        .collect();
    assert_eq!(seen, all);
}

#[test]
fn failover_over_http2_replays_exactly_what_was_missed() {
    if !tools("failover_over_http2_replays_exactly_what_was_missed") {
        return;
    }
    failover("--http2");
}

#[test]
fn failover_over_http1_replays_exactly_what_was_missed() {
    if !tools("failover_over_http1_replays_exactly_what_was_missed") {
        return;
    }
    failover("--http1.1");
}

/// With one instance dead, a publish through nginx that picks it first
/// (least_conn: the other holds a stream) is refused before anything is
/// sent, so nginx retries it on the live one even though POST is not
/// idempotent: one `200`, and the event delivered once.
#[test]
fn a_publish_that_never_reached_the_dead_instance_is_retried() {
    if !tools("a_publish_that_never_reached_the_dead_instance_is_retried") {
        return;
    }
    let mut c = Cluster::start();
    let sub = Sub::open(&c, "sub", "--http2", "p", None);
    let holder_is_a = one_stream_on_a(&c);
    let (dead, holder) = if holder_is_a {
        kill(&mut c.b);
        (c.b.addr, c.a.addr)
    } else {
        kill(&mut c.a);
        (c.a.addr, c.b.addr)
    };
    let id = c.publish_via_nginx("p", "through");
    assert!(
        refused(&c, "POST /publish", dead),
        "the publish never tried the dead instance, so no retry was tested:{}",
        c.nginx.error_log()
    );
    assert_eq!(sub.next("the published event"), (id, "through".to_string()));
    let next = publish(holder, "p", "after");
    assert_eq!(sub.next("the next event"), (next, "after".to_string()));
}
