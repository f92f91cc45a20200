//! A real `redis-server` for the Redis tests: its own free loopback port
//! and throwaway directory, stopped (SIGTERM, then SIGKILL) and removed on
//! drop. Callers check `common::require(name, &["redis-server"], ...)`
//! first.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The install hint for `common::require`.
pub const INSTALL: &str = "apt-get install -y redis-server";

/// How long a start (AOF loading included) or a stop may take.
const LIMIT: Duration = Duration::from_secs(10);

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "tinysse-redis-{}-{}",
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

/// One `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    /// `--appendonly yes`: what it acknowledged survives a restart.
    pub aof: bool,
    paused: bool,
}

impl RedisServer {
    /// Starts one on a free port; with `aof`, writes are persisted in an
    /// append-only file in its directory.
    pub fn start(aof: bool) -> RedisServer {
        let mut r = RedisServer {
            child: None,
            port: 0,
            dir: TempDir::new(),
            aof,
            paused: false,
        };
        // A free port can be taken by someone else before Redis binds it:
        // try a few.
        for _ in 0..5 {
            r.port = free_port();
            if r.spawn() {
                return r;
            }
        }
        panic!(
            "redis-server did not start: see {}",
            r.dir().join("redis.log").display()
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Starts the process on `self.port`; false if it exited (port taken).
    fn spawn(&mut self) -> bool {
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", ""])
            .args(["--appendonly", if self.aof { "yes" } else { "no" }])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server");
        self.child = Some(child);
        self.paused = false;
        let end = Instant::now() + LIMIT;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.as_mut().expect("child").try_wait() {
                self.child = None;
                return false;
            }
            if ping(self.port) {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} redis-server failed");
    }

    /// SIGTERM (Redis writes its AOF and exits), SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        if self.paused {
            self.cont();
        }
        self.signal("TERM");
        if !self.wait_exit(LIMIT) {
            self.kill();
        }
        self.child = None;
    }

    /// SIGKILL: gone at once, as on a crash (what it acknowledged is in the
    /// AOF already: Redis writes it before it answers).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// Starts it again on the same port and directory; `aof: false` with
    /// `wipe` is a Redis restarted without persistence: empty.
    pub fn start_again(&mut self, aof: bool, wipe: bool) {
        assert!(self.child.is_none(), "stop or kill it first");
        if wipe {
            for e in std::fs::read_dir(self.dir.path())
                .expect("read dir")
                .flatten()
            {
                if e.file_name() != "redis.log" {
                    let p = e.path();
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
            }
        }
        self.aof = aof;
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Stop and start again with the same data (when `aof`).
    pub fn restart(&mut self) {
        self.stop();
        let aof = self.aof;
        self.start_again(aof, false);
    }

    /// SIGSTOP: the process hangs, its port still accepts connections.
    pub fn pause(&mut self) {
        self.signal("STOP");
        self.paused = true;
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn cont(&mut self) {
        self.signal("CONT");
        self.paused = false;
    }

    fn wait_exit(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let c = self.child.as_mut().expect("running");
        while Instant::now() < end {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// A command through `redis-cli` (e.g. `FLUSHALL`, `XLEN k`): its
    /// output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            if self.paused {
                let _ = Command::new("kill")
                    .args(["-CONT", &self.pid().to_string()])
                    .status();
            }
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
            if !self.wait_exit(Duration::from_secs(5)) {
                self.kill();
            }
            self.child = None;
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Whether Redis answers `PING` with `PONG` (not `LOADING`) within 1 s.
pub fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}
