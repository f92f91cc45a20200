//! `tinysse-bench`: load generator and measurement for a tinysse server.
//!
//! Plain threads and blocking sockets, like the server: HTTP/1.1 over
//! `std::net::TcpStream`, SSE parsed with the crate's own `EventStream`.
//! It starts the server binary itself (one fresh process per workload, so
//! one workload's leftovers never skew the next) or targets `--url`.
//!
//! Every loop is bounded in count and in time: a server that stalls makes a
//! workload fail with a reason, never hang.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tinysse::EventStream;

const USAGE: &str = "\
tinysse-bench: throughput, latency and footprint of a tinysse server

Usage: tinysse-bench [WORKLOAD...] [OPTIONS]

Workloads (default: suite = the standard set with the target parameters):
  firehose      C clients read /firehose?count=N&size=B; every id 1..=N checked
  broadcast     C subscribers on one topic, P keep-alive publishers POST M events
  idle          C idle subscribers: RSS and threads per stream, connect time, heartbeat CPU
  max-streams   streams held with heartbeats on time (--heartbeat 1), in steps
  suite         all of the above with the parameters of the README table:
                firehose 1 x 200000 x 64 B and 50 x 20000 x 64 B; broadcast 100 subs,
                4 publishers, 20000 events, max rate, and 1000 subs at 200 events/s
                for 2000 events; idle 5000; max-streams up to 10000

Options:
  --server PATH       server binary (default: tinysse next to this binary)
  --url URL           use a running server at http://HOST:PORT instead
  --pid PID           with --url: the server's pid, for RSS/CPU from /proc
  --clients C         clients / subscribers / streams (per workload default)
  --count N           firehose events per client (default 200000)
  --size B            event data bytes (default 64)
  --publishers P      broadcast publishers (default 4)
  --events M          broadcast events in total (default 50000)
  --rate R            broadcast events/s in total; 0 = as fast as possible (default 0)
  --queue Q           server --queue for broadcast (default 8192)
  --heartbeat S       server --heartbeat for idle / max-streams (default 1)
  --hold S            seconds to hold idle streams / each max-streams step (default 5 / 3)
  --step N            max-streams step (default 1000)
  --tolerance MS      max-streams: allowed heartbeat lateness (default 500)
  --store MODE        broadcast: memory (default), or --store in a temp file with
                      --store-sync normal | full
  --redis             broadcast: start a redis-server of its own (free loopback port,
                      throwaway dir, no persistence) and --instances servers on it
                      with --redis URL; subscribers are spread evenly over them and
                      publishers alternate between them. Not with --store or --url
  --instances N       with --redis: servers sharing the Redis (default 2)
  --redis-server PATH with --redis: the redis-server binary (default: redis-server on PATH)
  --redis-aof FSYNC   with --redis: --appendonly yes with --appendfsync FSYNC
                      (everysec | always); default: no persistence at all
  -h, --help          this text
";

#[derive(Clone, Debug)]
struct Opts {
    workloads: Vec<String>,
    server: Option<PathBuf>,
    url: Option<SocketAddr>,
    pid: Option<u32>,
    clients: Option<usize>,
    count: u64,
    size: usize,
    publishers: usize,
    events: u64,
    rate: f64,
    queue: usize,
    heartbeat: u64,
    hold: Option<u64>,
    step: usize,
    tolerance_ms: u64,
    /// broadcast: `memory`, or a store's sync mode (`normal`, `full`).
    store: String,
    /// broadcast: several servers on one Redis of the bench's own.
    redis: bool,
    /// With `redis`: how many servers share it.
    instances: usize,
    redis_server: PathBuf,
    /// With `redis`: Redis's `--appendfsync`, with the AOF on.
    redis_aof: Option<String>,
}

fn parse_opts() -> Result<Opts, String> {
    use lexopt::prelude::*;
    let mut o = Opts {
        workloads: Vec::new(),
        server: None,
        url: None,
        pid: None,
        clients: None,
        count: 200_000,
        size: 64,
        publishers: 4,
        events: 50_000,
        rate: 0.0,
        queue: 8192,
        heartbeat: 1,
        hold: None,
        step: 1000,
        tolerance_ms: 500,
        store: "memory".into(),
        redis: false,
        instances: 2,
        redis_server: "redis-server".into(),
        redis_aof: None,
    };
    let mut p = lexopt::Parser::from_env();
    fn num<T: std::str::FromStr>(name: &str, v: OsString) -> Result<T, String> {
        v.to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("--{name}: not a valid number"))
    }
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            Long("server") => o.server = Some(p.value().map_err(|e| e.to_string())?.into()),
            Long("redis") => o.redis = true,
            Long("redis-server") => {
                o.redis_server = p.value().map_err(|e| e.to_string())?.into();
            }
            Long("url") => {
                let v = p.value().map_err(|e| e.to_string())?;
                let v = v.to_string_lossy();
                let hostport = v.trim_start_matches("http://").trim_end_matches('/');
                o.url = Some(
                    hostport
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.next())
                        .ok_or_else(|| format!("--url: cannot resolve {v}"))?,
                );
            }
            Long(name) => {
                let name = name.to_string();
                let v = p.value().map_err(|e| e.to_string())?;
                match name.as_str() {
                    "pid" => o.pid = Some(num(&name, v)?),
                    "clients" => o.clients = Some(num(&name, v)?),
                    "count" => o.count = num(&name, v)?,
                    "size" => o.size = num(&name, v)?,
                    "publishers" => o.publishers = num::<usize>(&name, v)?.max(1),
                    "events" => o.events = num::<u64>(&name, v)?.max(1),
                    "rate" => o.rate = num(&name, v)?,
                    "queue" => o.queue = num(&name, v)?,
                    "heartbeat" => o.heartbeat = num(&name, v)?,
                    "hold" => o.hold = Some(num(&name, v)?),
                    "step" => o.step = num::<usize>(&name, v)?.max(1),
                    "tolerance" => o.tolerance_ms = num(&name, v)?,
                    "instances" => o.instances = num::<usize>(&name, v)?.max(1),
                    "redis-aof" => {
                        let v = v.to_string_lossy().into_owned();
                        if !["everysec", "always"].contains(&v.as_str()) {
                            return Err(format!("--redis-aof: {v} is not everysec or always"));
                        }
                        o.redis_aof = Some(v);
                    }
                    "store" => {
                        let v = v.to_string_lossy().into_owned();
                        if !["memory", "normal", "full"].contains(&v.as_str()) {
                            return Err(format!("--store: {v} is not memory, normal or full"));
                        }
                        o.store = v;
                    }
                    _ => return Err(format!("unknown option --{name}")),
                }
            }
            Value(w) => {
                let w = w.to_string_lossy().into_owned();
                if !["firehose", "broadcast", "idle", "max-streams", "suite"].contains(&w.as_str())
                {
                    return Err(format!("unknown workload {w}"));
                }
                o.workloads.push(w);
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    if o.workloads.is_empty() {
        o.workloads.push("suite".into());
    }
    if o.redis && o.store != "memory" {
        return Err("--redis and --store: one or the other (as for the server)".into());
    }
    if o.redis && o.url.is_some() {
        return Err("--redis starts its own servers and Redis: not with --url".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------
// The server under test and what /proc says about it.

struct Target {
    addr: SocketAddr,
    pid: Option<u32>,
    child: Option<Child>,
}

impl Target {
    fn start(o: &Opts, args: &[String]) -> Result<Target, String> {
        if let Some(addr) = o.url {
            return Ok(Target {
                addr,
                pid: o.pid,
                child: None,
            });
        }
        let path = match &o.server {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| e.to_string())?
                .with_file_name("tinysse"),
        };
        let mut child = Command::new(&path)
            .args(["--addr", "127.0.0.1:0", "--firehose", "--no-demo"])
            .args(args)
            .env("TINYSSE_LOG", "error")
            // Only --redis in `args` may point a server at a Redis: one from
            // the environment would make a memory run a Redis run.
            .env_remove("TINYSSE_REDIS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                // The bench is its own package: building it does not build
                // the server next to it.
                let hint = if o.server.is_none() {
                    " (build the server first: `cargo build --release`, or pass --server)"
                } else {
                    ""
                };
                format!("cannot start {}: {e}{hint}", path.display())
            })?;
        let mut line = String::new();
        let out = child.stdout.take().ok_or("no stdout")?;
        BufReader::new(out)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("unexpected first line from the server: {line:?}"));
        };
        Ok(Target {
            addr,
            pid: Some(child.id()),
            child: Some(child),
        })
    }

    /// (VmRSS KiB, threads) from /proc/PID/status.
    fn status(&self) -> Option<(u64, u64)> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let field = |name: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some((field("VmRSS:")?, field("Threads:")?))
    }

    /// CPU seconds used (user + system) from /proc/PID/stat.
    fn cpu(&self) -> Option<f64> {
        proc_cpu(self.pid?)
    }
}

/// CPU seconds a process used (user + system), from /proc/PID/stat.
fn proc_cpu(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields are counted after its ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// The CPU seconds of all the servers, if /proc has every one.
fn cpu_sum(targets: &[Target]) -> Option<f64> {
    targets.iter().map(Target::cpu).sum()
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `redis-server` of the bench's own for `--redis`: a free loopback port,
/// a throwaway directory under the temp dir, stopped (SIGTERM, then SIGKILL)
/// and the directory removed when dropped.
struct RedisProc {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisProc {
    fn start(o: &Opts) -> Result<RedisProc, String> {
        let dir = std::env::temp_dir().join(format!(
            "tinysse-bench-redis-{}-{}",
            std::process::id(),
            now_ns()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Owns the directory from here on, so an early return removes it.
        let mut r = RedisProc {
            child: None,
            port: 0,
            dir,
        };
        let log = r.dir.join("redis.log");
        // A free port can be taken by someone else before Redis binds it.
        for _ in 0..5 {
            r.port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("a free port: {e}"))?
                .port();
            let mut cmd = Command::new(&o.redis_server);
            cmd.args(["--port", &r.port.to_string(), "--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(&r.dir)
                .args(["--save", ""])
                .args(["--daemonize", "no", "--loglevel", "warning"])
                .arg("--logfile")
                .arg(&log);
            match &o.redis_aof {
                Some(fsync) => cmd.args(["--appendonly", "yes", "--appendfsync", fsync]),
                None => cmd.args(["--appendonly", "no"]),
            };
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        format!(
                            "--redis: {} not found (apt-get install -y redis-server, \
                             or pass --redis-server PATH)",
                            o.redis_server.display()
                        )
                    } else {
                        format!("--redis: cannot start {}: {e}", o.redis_server.display())
                    }
                })?;
            r.child = Some(child);
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Some(c) = &mut r.child
                    && let Ok(Some(_)) = c.try_wait()
                {
                    r.child = None;
                    break;
                }
                if redis_ping(r.port) {
                    return Ok(r);
                }
                thread::sleep(Duration::from_millis(10));
            }
            r.stop();
        }
        Err(format!(
            "--redis: redis-server did not start; its log: {}",
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .last()
                .unwrap_or("(empty)")
        ))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn cpu(&self) -> Option<f64> {
        proc_cpu(self.child.as_ref()?.id())
    }

    #[allow(unsafe_code)]
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: a plain syscall on our own child's pid, not yet reaped.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether Redis answers `PING` with `PONG` (not `LOADING`) within 1 s.
fn redis_ping(port: u16) -> bool {
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

#[allow(unsafe_code)]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Raises this process's open-file limit (a socket per stream); the server
/// it starts inherits the same limit.
#[allow(unsafe_code)]
// rlim_t is not u64 on every target.
#[allow(clippy::unnecessary_cast)]
fn raise_nofile(want: u64) -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        let mut new = libc::rlimit {
            rlim_cur: want.max(rl.rlim_cur as u64) as libc::rlim_t,
            rlim_max: want.max(rl.rlim_max as u64) as libc::rlim_t,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &new) != 0 {
            // Not allowed to raise the hard limit: go as far as it allows.
            new.rlim_cur = rl.rlim_max;
            new.rlim_max = rl.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &new);
        }
        let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
    }
    rl.rlim_cur as u64
}

// ---------------------------------------------------------------------------
// Results.

struct Row {
    workload: &'static str,
    params: String,
    result: String,
    cpu: String,
    ok: bool,
}

fn print_header() {
    println!("| workload | parameters | result | server CPU | target |");
    println!("|---|---|---|---|---|");
}

fn print_row(r: &Row) {
    println!(
        "| {} | {} | {} | {} | {} |",
        r.workload,
        r.params,
        r.result,
        r.cpu,
        if r.ok { "ok" } else { "MISSED" }
    );
}

fn cpu_text(secs: Option<f64>, wall: f64) -> String {
    match secs {
        Some(s) => format!("{s:.2} s ({:.0}% of a core)", 100.0 * s / wall.max(1e-9)),
        None => "n/a".into(),
    }
}

fn since(start: Option<f64>, end: Option<f64>) -> Option<f64> {
    Some(end? - start?)
}

fn kib(v: f64) -> String {
    if v >= 1024.0 {
        format!("{:.2} MiB", v / 1024.0)
    } else {
        format!("{v:.1} KiB")
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .name(name.into())
        .stack_size(256 * 1024)
        .spawn(f)
        .expect("spawn a bench thread")
}

// ---------------------------------------------------------------------------
// firehose

fn firehose(o: &Opts, clients: usize) -> Result<Row, String> {
    let (count, size) = (o.count, o.size);
    let t = Target::start(o, &["--max-streams".into(), (clients + 16).to_string()])?;
    let addr = t.addr;
    let target = format!("/firehose?count={count}&size={size}");
    let barrier = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (target, barrier) = (target.clone(), barrier.clone());
            spawn(
                "firehose",
                move || -> Result<(u64, Instant, Instant), String> {
                    barrier.wait();
                    let began = Instant::now();
                    let mut s =
                        EventStream::connect(addr, &target, &[]).map_err(|e| e.to_string())?;
                    if s.status() != 200 {
                        return Err(format!("status {}", s.status()));
                    }
                    s.set_read_timeout(Some(Duration::from_secs(30)))
                        .map_err(|e| e.to_string())?;
                    let mut expect = 1u64;
                    while let Some(m) = s.next_message().map_err(|e| e.to_string())? {
                        let id: Option<u64> = m.id.as_deref().and_then(|v| v.parse().ok());
                        if id != Some(expect) {
                            return Err(format!("expected id {expect}, got {:?}", m.id));
                        }
                        if m.data.len() != size {
                            return Err(format!("event {expect}: {} data bytes", m.data.len()));
                        }
                        expect += 1;
                    }
                    Ok((expect - 1, began, Instant::now()))
                },
            )
        })
        .collect();
    let cpu0 = t.cpu();
    let wall0 = Instant::now();
    barrier.wait();
    let mut received = 0;
    let mut errors = Vec::new();
    // Timed by the clients themselves: on a loaded machine this thread may
    // run late after the barrier, which would make the run look shorter.
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    for h in handles {
        match h.join() {
            Ok(Ok((n, began, ended))) => {
                received += n;
                first = Some(first.map_or(began, |f| f.min(began)));
                last = Some(last.map_or(ended, |l| l.max(ended)));
            }
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("client thread panicked".into()),
        }
    }
    let wall = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => wall0.elapsed().as_secs_f64(),
    };
    let cpu = since(cpu0, t.cpu());
    let total = count * clients as u64;
    let rate = received as f64 / wall;
    let goal = if clients == 1 { 1.5e6 } else { 2.0e6 };
    let complete = received == total && errors.is_empty();
    Ok(Row {
        workload: "firehose",
        params: format!("{clients} x {count} x {size} B"),
        result: format!(
            "{:.2} M events/s, {:.1} MB/s of data, {received}/{total} received in order{}",
            rate / 1e6,
            rate * size as f64 / 1e6,
            if errors.is_empty() {
                String::new()
            } else {
                format!(", errors: {}", errors[0])
            }
        ),
        cpu: cpu_text(cpu, wall),
        ok: complete && (size != 64 || rate >= goal),
    })
}

// ---------------------------------------------------------------------------
// broadcast

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64
}

/// One keep-alive connection that POSTs to /publish.
struct Publisher {
    out: TcpStream,
    input: BufReader<TcpStream>,
    req: Vec<u8>,
}

impl Publisher {
    fn connect(addr: SocketAddr) -> io::Result<Publisher> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Publisher {
            input: BufReader::new(s.try_clone()?),
            out: s,
            req: Vec::with_capacity(512),
        })
    }

    /// Makes sure the connection is being served before the clock starts.
    fn healthz(&mut self) -> io::Result<()> {
        self.out
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        self.answer().map(drop)
    }

    fn publish(&mut self, body: &str) -> io::Result<u64> {
        self.req.clear();
        write!(
            self.req,
            "POST /publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        self.out.write_all(&self.req)?;
        let body = self.answer()?;
        // {"id":"123"}
        let text = String::from_utf8_lossy(&body);
        text.split('"')
            .nth(3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad answer {text}")))
    }

    /// Reads one response; its body when the status is 200.
    fn answer(&mut self) -> io::Result<Vec<u8>> {
        let mut line = String::new();
        let mut status = 0;
        let mut len = 0usize;
        for i in 0..100 {
            line.clear();
            if self.input.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end();
            if i == 0 {
                status = l
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if l.is_empty() {
                break;
            } else if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len.min(1 << 16)];
        self.input.read_exact(&mut body)?;
        if status != 200 {
            return Err(io::Error::other(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        Ok(body)
    }
}

struct SubResult {
    received: u64,
    latencies_us: Vec<u32>,
    error: Option<String>,
    /// The ids received, folded in order: subscribers that got every event
    /// must agree, whichever instance they are on.
    ids_hash: u64,
}

/// Waits until a server's `/healthz` answers 200 (a server on Redis may
/// report 503 until it reaches it).
fn wait_healthy(addr: SocketAddr) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let e = match Publisher::connect(addr) {
            Ok(mut c) => match c.healthz() {
                Ok(()) => return Ok(()),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if Instant::now() > end {
            return Err(format!("{addr} not healthy within 10 s: {e}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn broadcast(o: &Opts, subs: usize) -> Result<Row, String> {
    let (pubs, events, size, rate) = (o.publishers, o.events, o.size, o.rate);
    let mut args: Vec<String> = vec![
        "--queue".into(),
        o.queue.to_string(),
        "--max-streams".into(),
        (subs + 16).to_string(),
    ];
    // A store in a fresh file of its own, removed afterwards.
    let store = (o.store != "memory").then(|| {
        std::env::temp_dir().join(format!(
            "tinysse-bench-{}-{}.db",
            std::process::id(),
            now_ns()
        ))
    });
    if let Some(path) = &store {
        args.extend([
            "--store".into(),
            path.display().to_string(),
            "--store-sync".into(),
            o.store.clone(),
        ]);
    }
    let _cleanup = RemoveOnDrop(store.clone());
    // Declared before the servers, so they are stopped before it is.
    let redis = if o.redis {
        Some(RedisProc::start(o)?)
    } else {
        None
    };
    if let Some(r) = &redis {
        args.extend(["--redis".into(), r.url()]);
    }
    let n = if redis.is_some() { o.instances } else { 1 };
    let targets = (0..n)
        .map(|_| Target::start(o, &args))
        .collect::<Result<Vec<_>, _>>()?;
    if redis.is_some() {
        for t in &targets {
            wait_healthy(t.addr)?;
        }
    }
    let topic = "bench";
    base();
    // Publishing can take a while at a low rate: give every wait room for it.
    let expected_secs = if rate > 0.0 {
        events as f64 / rate
    } else {
        0.0
    };
    let read_timeout = Duration::from_secs(20);
    // Connected one at a time: tiny_http 0.12's connection pool can leave a
    // connection that arrives in a burst unserved while every pool thread is
    // held by a stream (see docs/benchmarks.md), and a bench that only works
    // by luck measures nothing.
    let mut streams = Vec::with_capacity(subs);
    let connect_deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..subs {
        let addr = targets[i % n].addr;
        let s = EventStream::connect(addr, &format!("/events?topic={topic}"), &[])
            .map_err(|e| format!("subscriber {i}: {e}"))?;
        if s.status() != 200 {
            return Err(format!("subscriber {i}: status {}", s.status()));
        }
        s.set_read_timeout(Some(read_timeout))
            .map_err(|e| e.to_string())?;
        streams.push(s);
        if Instant::now() > connect_deadline {
            return Err("subscribers did not connect within 120 s".into());
        }
    }
    let sub_handles: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            spawn("subscriber", move || -> SubResult {
                let mut r = SubResult {
                    received: 0,
                    latencies_us: Vec::with_capacity(events as usize),
                    error: None,
                    ids_hash: 0,
                };
                let mut last_id = 0u64;
                while r.received < events {
                    match s.next_message() {
                        Ok(Some(m)) => {
                            let now = now_ns();
                            let id: u64 = m.id.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
                            if id <= last_id {
                                r.error = Some(format!("id {id} after {last_id}"));
                                break;
                            }
                            last_id = id;
                            r.ids_hash = r.ids_hash.wrapping_mul(1_000_003) ^ id;
                            let sent: u64 = m
                                .data
                                .strip_prefix('t')
                                .and_then(|d| d.split(' ').next())
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(now);
                            r.latencies_us
                                    .push((now.saturating_sub(sent) / 1000).min(u32::MAX as u64)
                                        as u32);
                            r.received += 1;
                        }
                        Ok(None) => {
                            r.error = Some("stream ended (evicted?)".into());
                            break;
                        }
                        Err(e) => {
                            r.error = Some(e.to_string());
                            break;
                        }
                    }
                }
                r
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(pubs);
    for p in 0..pubs {
        let addr = targets[p % n].addr;
        let mut c = Publisher::connect(addr).map_err(|e| format!("publisher: {e}"))?;
        c.healthz().map_err(|e| format!("publisher: {e}"))?;
        conns.push(c);
    }

    let cpu0 = cpu_sum(&targets);
    let redis_cpu0 = redis.as_ref().and_then(RedisProc::cpu);
    let start = Instant::now();
    let pub_handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(p, mut conn)| {
            spawn("publisher", move || -> Result<Vec<u32>, String> {
                let mut body = String::with_capacity(size + 64);
                let mut data = String::with_capacity(size + 32);
                let mine = (events + (pubs - 1 - p) as u64) / pubs as u64;
                let mut took_us = Vec::with_capacity(mine as usize);
                let deadline = start + Duration::from_secs_f64(expected_secs * 1.5 + 120.0);
                for k in 0..mine {
                    if rate > 0.0 {
                        let at = start
                            + Duration::from_secs_f64((k * pubs as u64 + p as u64) as f64 / rate);
                        let now = Instant::now();
                        if at > now {
                            thread::sleep(at - now);
                        }
                    }
                    if Instant::now() > deadline {
                        return Err("publishing took too long".into());
                    }
                    data.clear();
                    use std::fmt::Write as _;
                    let _ = write!(data, "t{} p{p} s{k} ", now_ns());
                    while data.len() < size {
                        data.push('x');
                    }
                    body.clear();
                    let _ = write!(body, r#"{{"topic":"{topic}","data":"{data}"}}"#);
                    let t0 = Instant::now();
                    conn.publish(&body).map_err(|e| format!("publish: {e}"))?;
                    took_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                Ok(took_us)
            })
        })
        .collect();
    let mut published = 0;
    let mut errors = Vec::new();
    let mut pub_lat: Vec<u64> = Vec::with_capacity(events as usize);
    for h in pub_handles {
        match h.join() {
            Ok(Ok(took)) => {
                published += took.len() as u64;
                pub_lat.extend(took.iter().map(|&v| v as u64));
            }
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("publisher panicked".into()),
        }
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let mut delivered = 0;
    let mut missed_max = 0;
    let mut missed_subs = 0;
    let mut lat: Vec<u64> = Vec::with_capacity(subs * events as usize);
    let mut complete_hash = None;
    let mut disagree = 0;
    for h in sub_handles {
        match h.join() {
            Ok(r) => {
                if r.received == events && r.error.is_none() {
                    match complete_hash {
                        None => complete_hash = Some(r.ids_hash),
                        Some(h) if h != r.ids_hash => disagree += 1,
                        Some(_) => {}
                    }
                }
                delivered += r.received;
                let missed = events - r.received.min(events);
                missed_max = missed_max.max(missed);
                if missed > 0 {
                    missed_subs += 1;
                }
                if let Some(e) = r.error {
                    errors.push(e);
                }
                lat.extend(r.latencies_us.iter().map(|&v| v as u64));
            }
            Err(_) => errors.push("subscriber panicked".into()),
        }
    }
    if disagree > 0 {
        errors.push(format!(
            "{disagree} subscribers got every event with other ids or in another order"
        ));
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = since(cpu0, cpu_sum(&targets));
    let redis_cpu = since(redis_cpu0, redis.as_ref().and_then(RedisProc::cpu));
    lat.sort_unstable();
    pub_lat.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    let pub_rate = published as f64 / publish_secs;
    let del_rate = delivered as f64 / wall;
    let ok = errors.is_empty()
        && missed_max == 0
        && if rate > 0.0 {
            pub_rate >= rate * 0.975 && ms(percentile(&lat, 0.99)) < 50.0
        } else {
            del_rate >= 500_000.0
        };
    Ok(Row {
        workload: "broadcast",
        params: format!(
            "{subs} subs, {pubs} publishers, {events} events x {size} B, {}, --queue {}{}{}",
            if rate > 0.0 {
                format!("{rate} events/s")
            } else {
                "max rate".into()
            },
            o.queue,
            if o.store == "memory" {
                String::new()
            } else {
                format!(", --store-sync {}", o.store)
            },
            match &redis {
                None => String::new(),
                Some(_) => format!(
                    ", {n} instances on one Redis ({})",
                    o.redis_aof
                        .as_ref()
                        .map_or("no persistence".into(), |f| format!("AOF, fsync {f}"))
                ),
            }
        ),
        result: format!(
            "{pub_rate:.0} published/s (publish p50 {:.2} ms p99 {:.2} ms), {del_rate:.0} \
             delivered/s, latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms, missed {missed_max} \
             (max per subscriber, {missed_subs} subscribers short){}",
            ms(percentile(&pub_lat, 0.5)),
            ms(percentile(&pub_lat, 0.99)),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            ms(lat.last().copied().unwrap_or(0)),
            if errors.is_empty() {
                String::new()
            } else {
                format!(", {} errors, first: {}", errors.len(), errors[0])
            }
        ),
        cpu: match &redis {
            None => cpu_text(cpu, wall),
            Some(_) => format!(
                "{} in all {n}; redis-server {}",
                cpu_text(cpu, wall),
                cpu_text(redis_cpu, wall)
            ),
        },
        ok,
    })
}

/// Removes a store file (and its WAL) when the workload is done.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// idle and max-streams: many sockets, one thread

/// Opens an SSE stream without a reader thread: the request goes out, the
/// head comes back, and the socket is left non-blocking for sweeps.
fn open_stream(addr: SocketAddr, target: &str) -> Result<TcpStream, String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    (&s).write_all(format!("GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = (&s).read(&mut buf).map_err(|e| format!("head: {e}"))?;
        if n == 0 || head.len() > 8192 {
            return Err("connection closed before the head".into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        let line = head.split(|&b| b == b'\r').next().unwrap_or(&[]);
        return Err(format!("answer {}", String::from_utf8_lossy(line)));
    }
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Reads whatever each socket has; returns the indexes that had bytes, and
/// any socket that reached its end.
fn sweep(socks: &[TcpStream], buf: &mut [u8], got: &mut Vec<usize>) -> usize {
    got.clear();
    let mut closed = 0;
    for (i, s) in socks.iter().enumerate() {
        let mut any = false;
        for _ in 0..16 {
            match (&*s).read(buf) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => any = true,
                Err(_) => break,
            }
        }
        if any {
            got.push(i);
        }
    }
    closed
}

fn idle(o: &Opts, clients: usize) -> Result<Row, String> {
    let hold = o.hold.unwrap_or(5);
    let t = Target::start(
        o,
        &[
            "--heartbeat".into(),
            o.heartbeat.to_string(),
            "--max-streams".into(),
            (clients + 16).to_string(),
        ],
    )?;
    thread::sleep(Duration::from_millis(300));
    let before = t.status();
    let mut socks = Vec::with_capacity(clients);
    let mut times = Vec::with_capacity(clients);
    let start = Instant::now();
    for _ in 0..clients {
        let t0 = Instant::now();
        socks.push(open_stream(t.addr, "/events?topic=idle")?);
        times.push(t0.elapsed().as_micros() as u64);
        if start.elapsed() > Duration::from_secs(120) {
            return Err("opening streams took over 120 s".into());
        }
    }
    let open_secs = start.elapsed().as_secs_f64();
    // Let the server's threads settle into their idle wait before measuring.
    thread::sleep(Duration::from_millis(500));
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    sweep(&socks, &mut buf, &mut got);
    let after = t.status();
    let cpu0 = t.cpu();
    let t0 = Instant::now();
    let mut closed = 0;
    while t0.elapsed() < Duration::from_secs(hold) {
        thread::sleep(Duration::from_millis(200));
        closed += sweep(&socks, &mut buf, &mut got);
    }
    let cpu = since(cpu0, t.cpu());
    let wall = t0.elapsed().as_secs_f64();
    times.sort_unstable();
    let (rss, threads) = match (before, after) {
        (Some((r0, t0)), Some((r1, t1))) => (
            Some((r1 as f64 - r0 as f64) / clients as f64),
            Some((t1 as f64 - t0 as f64) / clients as f64),
        ),
        _ => (None, None),
    };
    let start_rss = before.map(|(r, _)| r);
    let ok = closed == 0
        && rss.is_none_or(|r| r <= 20.0)
        && start_rss.is_none_or(|r| (r as f64) < 2048.0);
    Ok(Row {
        workload: "idle",
        params: format!("{clients} streams, --heartbeat {}", o.heartbeat),
        result: format!(
            "{} RSS per stream, {} threads per stream, server RSS at start {}, with streams {}; \
             connect+head p50 {:.2} ms p99 {:.2} ms ({:.0} streams/s opened){}",
            rss.map_or("n/a".into(), kib),
            threads.map_or("n/a".into(), |t| format!("{t:.2}")),
            start_rss.map_or("n/a".into(), |r| kib(r as f64)),
            after.map_or("n/a".into(), |(r, _)| kib(r as f64)),
            percentile(&times, 0.5) as f64 / 1000.0,
            percentile(&times, 0.99) as f64 / 1000.0,
            clients as f64 / open_secs,
            if closed > 0 {
                format!(", {closed} streams closed by the server")
            } else {
                String::new()
            }
        ),
        cpu: format!("heartbeats: {}", cpu_text(cpu, wall)),
        ok,
    })
}

fn max_streams(o: &Opts, limit: usize) -> Result<Row, String> {
    let hold = o.hold.unwrap_or(3);
    let hb = o.heartbeat.max(1);
    let t = Target::start(
        o,
        &[
            "--heartbeat".into(),
            hb.to_string(),
            "--max-streams".into(),
            (limit + 16).to_string(),
        ],
    )?;
    let allowed = Duration::from_millis(hb * 1000 + o.tolerance_ms);
    let mut socks: Vec<TcpStream> = Vec::with_capacity(limit);
    let mut best = 0;
    let mut best_note = String::new();
    let mut stop_note = String::new();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    let started = Instant::now();
    let mut cpu_note = String::from("n/a");
    while socks.len() < limit {
        let level = (socks.len() + o.step).min(limit);
        let mut open_err = None;
        while socks.len() < level {
            match open_stream(t.addr, "/events?topic=max") {
                Ok(s) => socks.push(s),
                Err(e) => {
                    open_err = Some(e);
                    break;
                }
            }
            if socks.len().is_multiple_of(200) {
                // Keep the streams already open drained while the next open.
                sweep(&socks, &mut buf, &mut got);
            }
        }
        if let Some(e) = open_err {
            stop_note = format!("stream {} could not open: {e}", socks.len() + 1);
            break;
        }
        // Measure: every stream must see data at least every heartbeat + tolerance.
        sweep(&socks, &mut buf, &mut got);
        let t0 = Instant::now();
        let cpu0 = t.cpu();
        let mut last = vec![t0; socks.len()];
        let mut worst = Duration::ZERO;
        let mut closed = 0;
        while t0.elapsed() < Duration::from_secs(hold) {
            thread::sleep(Duration::from_millis(50));
            closed += sweep(&socks, &mut buf, &mut got);
            let now = Instant::now();
            for &i in &got {
                worst = worst.max(now - last[i]);
                last[i] = now;
            }
        }
        let now = Instant::now();
        for l in &last {
            worst = worst.max(now - *l);
        }
        let cpu = since(cpu0, t.cpu());
        let status = t.status();
        let on_time = worst <= allowed && closed == 0;
        eprintln!(
            "max-streams: {} streams, longest silence {} ms, {closed} closed, RSS/threads {:?}",
            socks.len(),
            worst.as_millis(),
            status
        );
        if !on_time {
            stop_note = format!(
                "at {} streams the longest silence was {} ms ({closed} closed)",
                socks.len(),
                worst.as_millis()
            );
            break;
        }
        best = socks.len();
        cpu_note = format!("heartbeats at {best}: {}", cpu_text(cpu, hold as f64));
        best_note = format!(
            "longest silence {} ms{}",
            worst.as_millis(),
            status.map_or(String::new(), |(r, th)| format!(
                ", server RSS {}, {th} threads",
                kib(r as f64)
            ))
        );
        if started.elapsed() > Duration::from_secs(600) {
            stop_note = "stopped after 600 s".into();
            break;
        }
    }
    Ok(Row {
        workload: "max-streams",
        params: format!(
            "up to {limit} in steps of {}, --heartbeat {hb}, on time = silence <= {} ms",
            o.step,
            allowed.as_millis()
        ),
        result: format!(
            "{best} streams held with heartbeats on time ({best_note}){}",
            if stop_note.is_empty() {
                String::new()
            } else {
                format!("; {stop_note}")
            }
        ),
        cpu: cpu_note,
        ok: best >= 10_000.min(limit),
    })
}

// ---------------------------------------------------------------------------

fn run(o: &Opts, workload: &str) -> Vec<Result<Row, String>> {
    match workload {
        "firehose" => vec![firehose(o, o.clients.unwrap_or(1))],
        "broadcast" => vec![broadcast(o, o.clients.unwrap_or(100))],
        "idle" => vec![idle(o, o.clients.unwrap_or(5000))],
        "max-streams" => vec![max_streams(o, o.clients.unwrap_or(10_000))],
        _ => {
            let mut rows = Vec::new();
            let f1 = Opts {
                count: 200_000,
                size: 64,
                ..o.clone()
            };
            rows.push(firehose(&f1, 1));
            let f50 = Opts {
                count: 20_000,
                size: 64,
                ..o.clone()
            };
            rows.push(firehose(&f50, 50));
            let fast = Opts {
                publishers: 4,
                events: 20_000,
                size: 64,
                rate: 0.0,
                ..o.clone()
            };
            rows.push(broadcast(&fast, 100));
            let slow = Opts {
                publishers: 4,
                events: 2_000,
                size: 64,
                rate: 200.0,
                ..o.clone()
            };
            rows.push(broadcast(&slow, 1000));
            rows.push(idle(o, 5000));
            rows.push(max_streams(o, 10_000));
            rows
        }
    }
}

fn main() -> ExitCode {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tinysse-bench: {e} (see --help)");
            return ExitCode::from(2);
        }
    };
    let nofile = raise_nofile(65_536);
    eprintln!("tinysse-bench: open-file limit {nofile}");
    print_header();
    let mut all_ok = true;
    for w in &o.workloads {
        for r in run(&o, w) {
            match r {
                Ok(row) => {
                    all_ok &= row.ok;
                    print_row(&row);
                }
                Err(e) => {
                    all_ok = false;
                    println!("| {w} | | FAILED: {e} | | MISSED |");
                }
            }
            let _ = io::stdout().flush();
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
