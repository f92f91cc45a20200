//! A real nginx in front of a tinysse: [`Nginx`] runs `deploy/nginx.conf`
//! (tests/deployment.rs), [`Custom`] a config of the test's own
//! (tests/publish.rs). Needs `nginx` (and `openssl` for `Nginx`) on the
//! PATH; callers check with `common::require` first.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A directory removed when dropped.
pub use super::TempDir;
use super::free_port;

/// nginx (master and worker) with its temp dir; stopped and removed on drop.
pub struct Nginx {
    child: Child,
    pub dir: TempDir,
    conf: PathBuf,
    /// `deploy/nginx.conf`'s TLS server (HTTP/1.1 and HTTP/2).
    pub tls: u16,
    /// `deploy/nginx.conf`'s plain-HTTP server (it only redirects).
    pub plain: u16,
    /// A control server that proxies with buffering and compression.
    pub buffered: u16,
}

/// A self-signed certificate for 127.0.0.1: `cert.pem` and `key.pem` in `dir`.
pub fn make_cert(dir: &Path) {
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl could not make a certificate");
}

impl Nginx {
    /// Runs `deploy/nginx.conf` in front of `upstream`, rewritten only where
    /// a machine differs: ports, certificate paths, the upstream address.
    /// Plus a control server on `buffered` that proxies with buffering.
    pub fn start(upstream: SocketAddr) -> Nginx {
        let dir = TempDir::new();
        let d = dir.0.clone();
        make_cert(&d);

        let (tls, plain, buffered) = (free_port(), free_port(), free_port());
        let site = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf"),
        )
        .expect("read deploy/nginx.conf");
        let site = rewrite(
            &site,
            &[
                ("server 127.0.0.1:8080;", format!("server {upstream};")),
                ("listen 80;", format!("listen 127.0.0.1:{plain};")),
                ("listen [::]:80;", String::new()),
                (
                    "listen 443 ssl http2;",
                    format!("listen 127.0.0.1:{tls} ssl http2;"),
                ),
                ("listen [::]:443 ssl http2;", String::new()),
                (
                    "/etc/letsencrypt/live/sse.example.com/fullchain.pem",
                    d.join("cert.pem").display().to_string(),
                ),
                (
                    "/etc/letsencrypt/live/sse.example.com/privkey.pem",
                    d.join("key.pem").display().to_string(),
                ),
            ],
        );
        std::fs::write(d.join("site.conf"), site).expect("write site.conf");
        let t = d.display();
        let main = format!(
            "worker_processes 1;
error_log {t}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {t}/access.log;
    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    include {t}/site.conf;
    # The control: a proxy that buffers, ignores X-Accel-Buffering and
    # compresses event streams. (Buffering alone does not hold events back
    # from a client that keeps up; the gzip filter does.)
    server {{
        listen 127.0.0.1:{buffered};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_buffering on;
            proxy_ignore_headers X-Accel-Buffering;
            gzip on;
            gzip_min_length 1;
            gzip_types text/event-stream;
        }}
    }}
}}
"
        );
        let conf = d.join("nginx.conf");
        std::fs::write(&conf, main).expect("write nginx.conf");
        let child = spawn(&d, &conf);
        let mut nginx = Nginx {
            child,
            dir,
            conf,
            tls,
            plain,
            buffered,
        };
        wait_ready(&mut nginx.child, &nginx.dir.0, &[tls, plain, buffered]);
        nginx
    }

    /// nginx's error log, for a failure message.
    pub fn error_log(&self) -> String {
        error_log(&self.dir.0)
    }

    /// The URL of `path` on the TLS server.
    pub fn https(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.tls)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child, &self.dir.0, &self.conf);
    }
}

/// nginx with a config of the test's own: `http_extra` in `http {}`,
/// `server_body` in its one `server {}`, listening on a free loopback port
/// (`addr`). Stopped and its directory removed on drop.
pub struct Custom {
    child: Child,
    dir: TempDir,
    conf: PathBuf,
    pub addr: SocketAddr,
}

impl Custom {
    pub fn start(http_extra: &str, server_body: &str) -> Custom {
        let dir = TempDir::new();
        let d = dir.0.display();
        let port = free_port();
        let conf = dir.0.join("nginx.conf");
        let text = format!(
            "worker_processes 1;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    {http_extra}
    server {{
        listen 127.0.0.1:{port};
        {server_body}
    }}
}}
"
        );
        std::fs::write(&conf, text).expect("write nginx.conf");
        let child = spawn(&dir.0, &conf);
        let mut custom = Custom {
            child,
            dir,
            conf,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        wait_ready(&mut custom.child, &custom.dir.0, &[port]);
        custom
    }

    /// nginx's error log, for a failure message or a check of what it tried.
    pub fn error_log(&self) -> String {
        error_log(&self.dir.0)
    }
}

impl Drop for Custom {
    fn drop(&mut self) {
        stop(&mut self.child, &self.dir.0, &self.conf);
    }
}

/// nginx in the foreground with `conf`, its pid file in `dir`.
fn spawn(dir: &Path, conf: &Path) -> Child {
    Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .arg("-g")
        .arg(format!("daemon off; pid {}/nginx.pid;", dir.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nginx")
}

/// Waits until nginx accepts on every one of `ports`; fails, with its error
/// log, if it exits or takes longer than 10 s.
fn wait_ready(child: &mut Child, dir: &Path, ports: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("nginx exited ({status}) at start: {err}{}", error_log(dir));
        }
        let up = ports.iter().all(|p| {
            TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], *p)),
                Duration::from_millis(200),
            )
            .is_ok()
        });
        if up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nginx did not listen within 10 s{}",
            error_log(dir)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// nginx's error log in `dir`, for a failure message.
fn error_log(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    format!("\n--- nginx error.log ---\n{log}")
}

/// Stops the nginx that `spawn` started with `conf` in `dir`.
fn stop(child: &mut Child, dir: &Path, conf: &Path) {
    // A killed master leaves its worker behind, still listening: ask the
    // master to stop, and only then fall back to killing it.
    let _ = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .arg("-g")
        .arg(format!("pid {}/nginx.pid;", dir.display()))
        .args(["-s", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Replaces each `from` exactly where it occurs; a missing one fails the
/// test, so deploy/nginx.conf cannot drift from what is tested.
pub fn rewrite(text: &str, pairs: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (from, to) in pairs {
        assert!(
            out.contains(from),
            "the deploy/ config no longer contains `{from}`: update the test that rewrites it"
        );
        out = out.replace(from, to);
    }
    out
}
