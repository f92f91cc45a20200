//! Every example builds and does what its doc says in a short real run:
//! each is started as a process, talked to over 127.0.0.1, and must exit
//! cleanly within a bound.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};
use tinysse::{EventStream, Message};

/// Builds the examples once (cargo test does not build them for
/// `--test examples`) and returns the path of one.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = Command::new(env!("CARGO"))
            .args(["build", "--examples", "--quiet"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(e) = built {
        panic!("cargo build --examples failed:\n{e}");
    }
    // This test runs from target/<profile>/deps; examples live beside deps.
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A running example: its stdout line by line; killed on drop if still up.
struct Proc {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn start(name: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(example(name))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = unbounded();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn line(&mut self, within: Duration) -> Option<String> {
        let l = self.lines.recv_timeout(within).ok()?;
        self.seen.push(l.clone());
        Some(l)
    }

    /// The address from the first line, `listening on http://ADDR`.
    fn listening(&mut self) -> SocketAddr {
        let first = self
            .line(Duration::from_secs(30))
            .expect("the example printed nothing");
        first
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
    }

    /// Waits for the exit, reading the rest of stdout; fails past `within`.
    fn exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                while self.line(Duration::from_millis(200)).is_some() {}
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {within:?}; output so far: {:?}",
                self.seen
            );
            let _ = self.line(Duration::from_millis(20));
        }
    }

    fn terminate(&self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A stream that answered 200, with room for an example's slow steps.
fn connect(addr: SocketAddr, target: &str) -> EventStream {
    let s = common::sse(addr, target, &[]);
    assert_eq!(s.status(), 200, "{target}");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

fn next(s: &mut EventStream) -> Message {
    s.next_message()
        .expect("read an event")
        .expect("the stream ended early")
}

fn json(m: &Message) -> serde_json::Value {
    serde_json::from_str(&m.data).unwrap_or_else(|e| panic!("{}: {e}", m.data))
}

#[test]
fn progress_serves_its_page_streams_every_step_and_exits() {
    let mut p = Proc::start(
        "progress",
        &[
            "--addr",
            "127.0.0.1:0",
            "--limit",
            "300000",
            "--blocks",
            "10",
            "--wait-ms",
            "30000",
            "--linger-ms",
            "300",
        ],
    );
    let addr = p.listening();

    let mut page = TcpStream::connect(addr).expect("connect");
    page.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(page, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut html = String::new();
    page.read_to_string(&mut html).expect("read the page");
    assert!(
        html.starts_with("HTTP/1.") && html[8..].starts_with(" 200 "),
        "{html}"
    );
    assert!(
        html.contains("new EventSource(\"/events?topic=progress"),
        "{html}"
    );

    // The program waits for this first viewer before it starts working.
    let mut s = connect(addr, "/events?topic=progress&lastEventId=0");
    let mut m = next(&mut s);
    if m.event == "gap" {
        m = next(&mut s);
    }
    for step in 1..=10 {
        assert_eq!(m.event, "progress");
        let v = json(&m);
        assert_eq!(
            (v["done"].as_u64(), v["total"].as_u64()),
            (Some(step), Some(10))
        );
        m = next(&mut s);
    }
    assert_eq!(m.event, "done");
    assert_eq!(json(&m)["primes"], 25997); // primes below 300,000
    // Then the program shuts down: the stream ends cleanly, the process exits 0.
    assert!(s.next_message().expect("a clean end").is_none());
    assert!(p.exit(Duration::from_secs(10)).success());
    assert!(
        p.seen
            .contains(&"done: 25997 primes below 300000".to_string()),
        "{:?}",
        p.seen
    );
}

#[test]
fn progress_without_a_viewer_just_runs_and_exits() {
    let mut p = Proc::start(
        "progress",
        &["--addr", "127.0.0.1:0", "--limit", "20000", "--blocks", "4"],
    );
    p.listening();
    assert!(p.exit(Duration::from_secs(20)).success());
    assert_eq!(
        p.seen.last().map(String::as_str),
        Some("done: 2262 primes below 20000")
    );
}

#[test]
fn seed_routes_end_by_dropping_the_sender_and_sigterm_is_graceful() {
    let mut p = Proc::start("seed", &["--addr", "127.0.0.1:0", "--tick-ms", "20"]);
    let addr = p.listening();

    let mut s = connect(addr, "/countdown?from=3");
    for n in [3, 2, 1] {
        let m = next(&mut s);
        assert_eq!(json(&m)["n"], n);
        assert_eq!(m.id.as_deref(), Some(n.to_string().as_str()));
    }
    assert_eq!(json(&next(&mut s))["msg"], "end");
    assert!(s.next_message().expect("a clean end").is_none());

    let s = connect(addr, "/job");
    let steps: Vec<String> = s.map(|m| m.expect("an event").data).collect();
    assert_eq!(steps, ["queued", "running", "finished"]);

    // A long stream open at SIGTERM ends with a complete response.
    let mut long = connect(addr, "/countdown?from=1000");
    assert_eq!(json(&next(&mut long))["n"], 1000);
    p.terminate();
    let end = loop {
        match long.next_message() {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(matches!(end, Ok(None)), "not a clean end: {end:?}");
    assert!(p.exit(Duration::from_secs(5)).success());
}

#[test]
fn client_reconnects_with_last_event_id_and_loses_nothing() {
    let mut p = Proc::start("client", &["--count", "12", "--drop-every", "4"]);
    let status = p.exit(Duration::from_secs(60));
    assert!(status.success(), "{status}: {:?}", p.seen);
    let connects: Vec<&String> = p
        .seen
        .iter()
        .filter(|l| l.starts_with("connected"))
        .collect();
    assert_eq!(connects.len(), 3, "{:?}", p.seen);
    assert_eq!(connects[0], "connected (Last-Event-ID: \"\")");
    // Each reconnect resumes from the id of the last event printed before it.
    for (i, line) in p.seen.iter().enumerate() {
        if let Some(id) = line
            .strip_prefix("connected (Last-Event-ID: \"")
            .and_then(|r| r.strip_suffix("\")"))
            .filter(|id| !id.is_empty())
        {
            let before = p.seen[..i]
                .iter()
                .rev()
                .find(|l| l.contains(" tick "))
                .expect("an event before the reconnect");
            assert!(before.starts_with(&format!("{id} ")), "{before} vs {id}");
        }
    }
    assert_eq!(
        p.seen.last().map(String::as_str),
        Some("ok: 12 events, none lost, none repeated")
    );
}
