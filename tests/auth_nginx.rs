//! Authorization behind a real nginx running `deploy/nginx.conf` (TLS,
//! HTTP/1.1 and HTTP/2): a publisher's token in the `Authorization` header
//! and a browser's token in the `tinysse_token` cookie pass through the
//! proxy, and the proxy's `X-Forwarded-For` changes nothing: the token
//! decides.
//!
//! Needs `nginx`, `curl` and `openssl` (`apt-get install -y nginx curl
//! openssl`); without them the tests skip, saying so, or fail when CI is set.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::nginx::Nginx;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use tinysse::Authorizer;

const KEY: &[u8] = b"auth_nginx test key, 32 bytes or more";

fn tools(test: &str) -> bool {
    require(
        &format!("auth_nginx::{test}"),
        &["nginx", "curl", "openssl"],
        "apt-get install -y nginx curl openssl",
    )
}

fn token(subscribe: &[&str], publish: &[&str]) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"exp": exp, "tinysse": {"subscribe": subscribe, "publish": publish}}),
        &EncodingKey::from_secret(KEY).unwrap(),
    )
    .unwrap()
}

/// `curl` publishing through nginx: the status and the body.
fn curl_publish(url: &str, version: &str, headers: &[String], body: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-k", "--max-time", "10", version])
        .args(["-o", "-", "-w", "\n%{http_code}"])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.trim().to_string())
}

/// `curl -N` reading a stream through nginx, line by line; killed on drop.
struct Stream {
    child: Child,
    lines: Receiver<String>,
}

impl Stream {
    fn open(url: &str, headers: &[String]) -> Stream {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-N", "-k", "--http2", "-D", "-", "--max-time", "30"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        let mut child = cmd
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start curl");
        let out = child.stdout.take().expect("curl stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line.trim_end_matches('\r').to_string()).is_err() {
                    return;
                }
            }
        });
        Stream { child, lines }
    }

    /// The first line that `pred` accepts, within 10 s.
    fn find(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("no {what} within 10 s"),
                Err(RecvTimeoutError::Disconnected) => panic!("curl ended before {what}"),
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tokens_pass_through_nginx() {
    if !tools("tokens_pass_through_nginx") {
        return;
    }
    let srv = start(
        tinysse::Server::builder()
            .addr("127.0.0.1:0")
            .authorizer(Authorizer::from_secret(KEY).unwrap()),
    );
    let nginx = Nginx::start(srv.addr());
    let publish_url = nginx.https("/publish");
    let publisher = token(&[], &["user/*"]);
    let reader = token(&["user/42/*"], &[]);

    // A browser's stream with the cookie, over HTTP/2.
    let stream = Stream::open(
        &nginx.https("/events?topic=user/42/inbox"),
        &[format!("Cookie: tinysse_token={reader}")],
    );
    let status = stream.find("the status line", |l| l.starts_with("HTTP/"));
    assert!(status.contains(" 200"), "{status}{}", nginx.error_log());

    for version in ["--http1.1", "--http2"] {
        let body = json!({"topic": "user/42/inbox", "data": format!("via {version}")}).to_string();
        // No token: nginx's X-Forwarded-For made it 403 before; now the
        // token decides: 401.
        let (code, text) = curl_publish(&publish_url, version, &[], &body);
        assert_eq!(code, 401, "{version}: {text}{}", nginx.error_log());
        let wrong = format!("Authorization: Bearer {reader}");
        let (code, _) = curl_publish(&publish_url, version, &[wrong], &body);
        assert_eq!(code, 403, "{version}: a reader's token may not publish");
        let auth = format!("Authorization: Bearer {publisher}");
        let (code, text) = curl_publish(&publish_url, version, &[auth], &body);
        assert_eq!(code, 200, "{version}: {text}{}", nginx.error_log());
        assert!(text.starts_with("{\"id\":"), "{text}");
        let want = format!("data: via {version}");
        stream.find(&want, |l| l == want);
    }
    assert_eq!(srv.handle().metrics().events_published(), 2);
    // A stream without the cookie is refused through the proxy too.
    let refused = Stream::open(&nginx.https("/events?topic=user/42/inbox"), &[]);
    let status = refused.find("the status line", |l| l.starts_with("HTTP/"));
    assert!(status.contains(" 401"), "{status}");
}
