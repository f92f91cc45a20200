//! Finding 8: a forwarder that adds none of the proxy headers must not make
//! token-less publishing open. The `Host` rule catches one that passes the
//! public name or names its upstream; a browser's `Origin` passes through
//! any of them. What no rule can catch, for a client without `Origin`, is a
//! forwarder that says `Host: localhost`, or nginx's default `Host` when
//! `proxy_pass` names `127.0.0.1:PORT`: that is why the README says behind
//! any proxy or forwarder, set a token.

mod common;

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;

use common::*;

const BODY: &str = r#"{"topic":"t","data":1}"#;

/// A publish as a remote client sends it to the public name.
fn publish_via(front: SocketAddr, host: &str, extra: &str) -> Reply {
    raw(
        front,
        format!(
            "POST /publish HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{BODY}",
            BODY.len()
        )
        .as_bytes(),
    )
}

/// A free loopback port: bound, read, released for nginx to take.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A real nginx: `http_extra` in `http {}`, `server_body` in its one
/// `server {}` on a free loopback port; everything it writes is kept in a
/// temp directory. Killed on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    fn start(name: &str, http_extra: &str, server_body: &str) -> Nginx {
        let dir = std::env::temp_dir().join(format!(
            "tinysse-publish-proxy-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let port = free_port();
        let conf = format!(
            "worker_processes 1;\n\
             error_log {d}/error.log;\n\
             pid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               {http_extra}\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 {server_body}\n\
               }}\n\
             }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nginx");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut ng = Nginx { child, dir, addr };
        let up = wait_until(TIMEOUT, || {
            TcpStream::connect(addr).is_ok() || !matches!(ng.child.try_wait(), Ok(None))
        });
        let log = std::fs::read_to_string(ng.dir.join("error.log")).unwrap_or_default();
        assert!(
            up && matches!(ng.child.try_wait(), Ok(None)),
            "nginx did not start: {log}"
        );
        ng
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A killed master leaves its worker behind, still listening: SIGTERM
        // first (the master stops its worker), a kill only if that fails.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: a signal to our own child, which has not been reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let child = &mut self.child;
        if !wait_until(TIMEOUT, || !matches!(child.try_wait(), Ok(None))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn nginx_in_front_does_not_open_publishing_to_pages_or_public_names() {
    if !require("publish_proxy", &["nginx"], "apt-get install -y nginx") {
        return;
    }
    let srv = start(builder());
    let up = srv.addr();
    // The shortest config that proxies, with nginx's defaults: no proxy
    // header, `Host` = the upstream as written in proxy_pass.
    let stock = Nginx::start(
        "stock",
        "",
        &format!("location / {{ proxy_pass http://{up}; }}"),
    );
    // The same with a named upstream, and with the public name passed on
    // (what most configs do, deploy/nginx.conf included).
    let named = Nginx::start(
        "named",
        &format!("upstream tinysse_up {{ server {up}; }}"),
        "location / { proxy_pass http://tinysse_up; }",
    );
    let public = Nginx::start(
        "public",
        "",
        &format!("location / {{ proxy_set_header Host $host; proxy_pass http://{up}; }}"),
    );
    let m = srv.handle().metrics();
    // A browser page on another site, through each of them: its Origin
    // passes through.
    for ng in [&stock, &named, &public] {
        let r = publish_via(
            ng.addr,
            "sse.example.com",
            "Origin: https://evil.example\r\n",
        );
        assert_eq!(r.status, 403, "{}", r.body);
    }
    // A plain client: the Host nginx sends is not a loopback name. (Through
    // `stock` it is `127.0.0.1:PORT`, over HTTP/1.0 with `Connection:
    // close`, exactly what a local client may send: no rule can tell them
    // apart, hence "behind any proxy, set a token".)
    for ng in [&named, &public] {
        let r = publish_via(ng.addr, "sse.example.com", "");
        assert_eq!(r.status, 403, "{}", r.body);
    }
    assert_eq!(m.events_published(), 0);
    // The proxies do work: a GET goes through, and so does a publish with a
    // token on a server that has one (see below), so the 403s above are the
    // rule's, not a broken proxy's.
    assert_eq!(
        raw(
            stock.addr,
            b"GET /healthz HTTP/1.1\r\nHost: sse.example.com\r\nConnection: close\r\n\r\n"
        )
        .status,
        200
    );
    drop((stock, named, public));
    srv.stop();

    let srv = start(builder().publish_token(Some("tok".into())));
    let stock = Nginx::start(
        "token",
        "",
        &format!("location / {{ proxy_pass http://{}; }}", srv.addr()),
    );
    let r = publish_via(
        stock.addr,
        "sse.example.com",
        "Authorization: Bearer tok\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    drop(stock);
    srv.stop();
}

/// A TCP forwarder: accepts on loopback and copies bytes both ways to
/// `upstream`, one connection at a time, until dropped.
struct Forwarder {
    addr: SocketAddr,
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start(upstream: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.try_recv() != Err(crossbeam_channel::TryRecvError::Empty) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(Shutdown::Write);
                });
                let (mut c, mut s) = (client, server);
                let _ = std::io::copy(&mut s, &mut c);
                let _ = c.shutdown(Shutdown::Both);
                let _ = up.join();
            }
        });
        Forwarder {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        drop(self.stop.take());
        // Wakes the accept loop, which then sees the stop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_tcp_forwarder_passing_a_public_host_does_not_open_publishing() {
    let srv = start(builder());
    let fwd = Forwarder::start(srv.addr());
    for host in ["sse.example.com", "sse.example.com:443", "203.0.113.7"] {
        let r = publish_via(fwd.addr, host, "");
        assert_eq!(r.status, 403, "Host: {host}: {}", r.body);
    }
    assert_eq!(srv.handle().metrics().events_published(), 0);
    // The forwarder works, so the 403s are the Host rule's.
    let r = publish_via(fwd.addr, &srv.addr().to_string(), "");
    assert_eq!(r.status, 200, "{}", r.body);
    drop(fwd);
    srv.stop();
}
