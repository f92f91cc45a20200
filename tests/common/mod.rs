//! Helpers shared by the integration tests: start the real server on
//! 127.0.0.1:0 and talk raw HTTP to it over `TcpStream`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tinysse::{EventStream, ServerBuilder, ServerHandle};

pub mod nginx;
pub mod redis;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A builder for tests: any free port, no static files, no heartbeat.
pub fn builder() -> ServerBuilder {
    tinysse::Server::builder()
        .addr("127.0.0.1:0")
        .public_dir(None)
        .heartbeat(None)
}

/// Starts the server, stopping it when the guard drops (even on a failed
/// assertion), so no test leaves a server behind.
pub struct Running(pub Option<ServerHandle>);

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.0.as_ref().expect("running").addr()
    }
    pub fn handle(&self) -> &ServerHandle {
        self.0.as_ref().expect("running")
    }
    pub fn stop(mut self) -> bool {
        self.0.take().expect("running").join()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.join();
        }
    }
}

pub fn start(b: ServerBuilder) -> Running {
    Running(Some(b.start().expect("server starts")))
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw request bytes and reads one response (its body too, unless
/// `head_only`, as for a HEAD request).
pub fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    (&s).write_all(request).expect("send request");
    let head_only = request.starts_with(b"HEAD ");
    let stream = EventStream::from_socket(s).expect("response head");
    let status = stream.status();
    let headers = stream.headers().to_vec();
    let body = if head_only || status == 204 {
        String::new()
    } else {
        stream.body_text().expect("response body")
    };
    Reply {
        status,
        headers,
        body,
    }
}

pub fn get(addr: SocketAddr, target: &str) -> Reply {
    raw(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    // The address as Host, as a real client sends it: a token-less publish
    // needs a loopback Host.
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes)
}

/// `POST /publish` with a JSON body; returns the reply.
pub fn publish_json(addr: SocketAddr, body: &str) -> Reply {
    request(
        addr,
        "POST",
        "/publish",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// Publishes and returns the id the server gave.
pub fn publish_ok(addr: SocketAddr, topic: &str, data: &serde_json::Value) -> u64 {
    let body = serde_json::json!({"topic": topic, "data": data}).to_string();
    let r = publish_json(addr, &body);
    assert_eq!(r.status, 200, "publish failed: {}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON answer");
    v["id"]
        .as_str()
        .expect("id string")
        .parse()
        .expect("decimal id")
}

/// Opens an SSE stream with a read timeout, so no test can hang on it.
pub fn sse(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> EventStream {
    let s = EventStream::connect(addr, target, headers).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Polls `cond` every few ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// The tinysse binary, running; killed on drop if the test did not stop it.
pub struct Bin {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Bin {
    pub fn start(args: &[&str]) -> Bin {
        Bin::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Bin {
        Bin::start_cmd(Command::new(env!("CARGO_BIN_EXE_tinysse")), args, env)
    }

    /// Starts `cmd` (the binary, or a wrapper such as `prlimit ... tinysse`
    /// or `ip netns exec NAME tinysse`) with `args`, and waits for its
    /// `listening on` line. Logging is off unless `env` turns it on.
    pub fn start_cmd(mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Bin {
        cmd.args(args)
            .env("TINYSSE_LOG", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Inherited, not piped: a pipe nobody reads could fill and block
            // the server on a log line.
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tinysse");
        let mut out = child.stdout.take().expect("stdout");
        // Read the first line byte by byte: nothing else may be consumed.
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while out.read(&mut b).map(|n| n == 1).unwrap_or(false) && b[0] != b'\n' {
            line.push(b[0]);
        }
        let line = String::from_utf8(line).expect("UTF-8 line");
        let addr = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .parse()
            .expect("HOST:PORT");
        Bin { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn threads(&self) -> usize {
        proc_threads(self.pid())
    }

    pub fn fds(&self) -> usize {
        proc_fds(self.pid())
    }

    pub fn rss_kib(&self) -> usize {
        proc_status(self.pid(), "VmRSS:")
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, and the process must exit 0 within 2 s.
    pub fn stop(mut self) {
        self.sigterm();
        let st = self.wait_exit(Duration::from_secs(2));
        assert!(
            st.is_some_and(|s| s.success()),
            "tinysse did not exit 0 within 2 s: {st:?}"
        );
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `/proc/PID/status` field's number (KiB for memory, a count otherwise).
pub fn proc_status(pid: u32, key: &str) -> usize {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn proc_threads(pid: u32) -> usize {
    proc_status(pid, "Threads:")
}

pub fn proc_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A network namespace with a veth pair to the host (`scripts/netns.sh`),
/// removed on drop: the server runs inside at `{net}.1`, the test connects
/// from `{net}.2`, a real non-loopback peer. Needs root, `ip` and `nft`.
pub struct Netns {
    pub name: String,
    /// The /30's first three octets, e.g. `10.213.77`.
    pub net: &'static str,
}

const NETNS_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netns.sh");

impl Netns {
    /// Why namespaces cannot be made here, if they cannot.
    pub fn unusable() -> Option<String> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        if !root {
            return Some("not root".into());
        }
        ["ip", "nft"]
            .into_iter()
            .find(|tool| {
                !Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .map(|tool| format!("{tool} is not installed"))
    }

    /// Makes the namespace `{prefix}{pid}`; tests that may run at once use
    /// different `net`s.
    pub fn up(prefix: &str, net: &'static str) -> Netns {
        let ns = Netns {
            name: format!("{prefix}{}", std::process::id() % 100_000),
            net,
        };
        assert!(ns.script(&["up"]), "cannot set up the namespace");
        ns
    }

    /// Runs the script with `args` after the command (name added); success.
    pub fn script(&self, args: &[&str]) -> bool {
        let mut all = vec![NETNS_SCRIPT, args[0], &self.name];
        all.extend_from_slice(&args[1..]);
        Command::new("bash")
            .env("NETNS_NET", self.net)
            .args(all)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The server binary with `args`, inside the namespace.
    pub fn start(&self, args: &[&str]) -> Bin {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_tinysse")]);
        Bin::start_cmd(cmd, args, &[])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.script(&["down"]);
    }
}

/// Whether `program` is on the PATH, as a shell's `command -v` finds it.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program)).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

/// The one policy for tests that need a program the machine may lack: when
/// each of `programs` is on the PATH, `true`. Otherwise, outside CI, prints
/// `SKIPPED <test>: <reason> (install: <install>)` and returns `false` (the
/// caller returns); with `CI` set (`.ci/run` runs with `CI=true`), panics
/// with the same reason, so CI never skips silently.
pub fn require(test: &str, programs: &[&str], install: &str) -> bool {
    match programs.iter().find(|p| !have(p)) {
        None => true,
        Some(missing) => skip_or_fail(test, &format!("`{missing}` not found"), install),
    }
}

/// Skips `test` with a one-line `reason` outside CI; fails it in CI (see
/// [`require`]). Returns `false` so a caller can `return` on it.
pub fn skip_or_fail(test: &str, reason: &str, install: &str) -> bool {
    let line = format!("SKIPPED {test}: {reason} (install: {install})");
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false") {
        panic!("{line}; CI is set, so a missing prerequisite is a failure");
    }
    // Straight to stderr: the test harness captures `println!`/`eprintln!`
    // of a passing test, which would hide the line from a plain `cargo test`.
    let _ = writeln!(std::io::stderr(), "{line}");
    false
}

/// A directory of its own under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "tinysse-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends `raw` on a fresh connection and reads until the server closes (10 s
/// at most): the status (0 when refused or closed without an answer) and
/// every byte of the answer.
pub fn exchange_raw(addr: SocketAddr, raw: &[u8]) -> (u16, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, Vec::new());
    };
    let _ = s.set_read_timeout(Some(TIMEOUT));
    if s.write_all(raw).is_err() {
        return (0, Vec::new());
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let status = std::str::from_utf8(out.get(9..12).unwrap_or(b""))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (status, out)
}

/// Whether the tests run as root (mounts, namespaces).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A tmpfs of `size` mounted at `dir` (as root), unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot mount a tmpfs at {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
