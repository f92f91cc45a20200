//! Helpers for the reliability tests: run the real binary, talk raw HTTP,
//! read a process's threads, descriptors and memory from /proc.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `tinysse` binary, running; killed on drop if the test did not stop it.
pub struct Bin {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Bin {
    pub fn start(args: &[&str]) -> Bin {
        Bin::start_with(Command::new(env!("CARGO_BIN_EXE_tinysse")), args)
    }

    /// Starts `cmd` (the binary, or a wrapper such as `prlimit ... tinysse`)
    /// with `args`, and waits for its `listening on` line.
    pub fn start_with(mut cmd: Command, args: &[&str]) -> Bin {
        let mut child = cmd
            .args(args)
            .env("TINYSSE_LOG", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tinysse");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the first line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("an address");
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

    pub fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
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
            std::thread::sleep(Duration::from_millis(10));
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

/// Polls `f` every 20 ms until it holds or `limit` passes; whether it held.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Sends `raw` on a fresh connection and reads until the server closes or
/// `limit` passes: (status, the whole answer). Status 0: closed without an
/// answer, or refused (a server shutting down closes its listener first).
pub fn exchange(addr: SocketAddr, raw: &[u8], limit: Duration) -> (u16, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, Vec::new());
    };
    s.set_read_timeout(Some(limit)).expect("timeout");
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let end = Instant::now() + limit;
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if complete_response(&out) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (status_of(&out), out)
}

/// Whether `b` holds a whole response with a Content-Length body.
fn complete_response(b: &[u8]) -> bool {
    let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    len.is_some_and(|n| b.len() >= end + 4 + n)
}

pub fn status_of(b: &[u8]) -> u16 {
    let s = String::from_utf8_lossy(b);
    s.strip_prefix("HTTP/1.1 ")
        .or_else(|| s.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let (st, body) = exchange(addr, req.as_bytes(), Duration::from_secs(5));
    (st, String::from_utf8_lossy(&body).into_owned())
}

/// A metric's value from `/metrics`.
pub fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    let (_, text) = get(addr, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

pub fn publish(addr: SocketAddr, topic: &str, data: &str) -> u16 {
    exchange(addr, &publish_request(topic, data), Duration::from_secs(5)).0
}

fn publish_request(topic: &str, data: &str) -> Vec<u8> {
    let body = format!("{{\"topic\":\"{topic}\",\"data\":\"{data}\"}}");
    format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Opens `GET path` and reads the response head; the stream is left for
/// the caller (its read timeout is 5 s).
pub fn open_stream(addr: SocketAddr, path: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())?;
    let head = read_head(&mut s)?;
    if status_of(&head) != 200 {
        return Err(std::io::Error::other(format!(
            "status {}",
            String::from_utf8_lossy(&head)
        )));
    }
    Ok(s)
}

/// Reads byte by byte up to the end of a response head.
pub fn read_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
    }
    Ok(head)
}

/// Reads until `needle` has been seen or `limit` passes; the bytes read.
pub fn read_until(s: &mut TcpStream, needle: &[u8], limit: Duration) -> (bool, Vec<u8>) {
    let end = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if out.windows(needle.len()).any(|w| w == needle) {
            return (true, out);
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (false, out);
        }
        let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {
                return (out.windows(needle.len()).any(|w| w == needle), out);
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}
