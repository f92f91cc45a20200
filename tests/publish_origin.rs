//! Token-less publishing is local and same-site only: a proxy header, a
//! cross-site `Origin` or `Sec-Fetch-Site`, or a `Host` that is not a
//! loopback name gets `403` (CSRF, DNS rebinding, forwarders); a token, when
//! set, is the only rule. IPv4-mapped loopback counts as loopback.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use common::*;

const BODY: &str = r#"{"topic":"t","data":1}"#;

/// A named case: the `Host` line (none when `None`) and the other headers.
type Case<'a> = (&'a str, Option<&'a str>, &'a [(&'a str, &'a str)]);
/// The same with the HTTP version after the name.
type VersionCase<'a> = (&'a str, &'a str, Option<&'a str>, &'a [(&'a str, &'a str)]);

/// A publish with exactly these headers: `host` is the `Host` line (none
/// when `None`), `version` the HTTP version.
fn publish_as(
    addr: SocketAddr,
    version: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = format!("POST /publish HTTP/{version}\r\n");
    if let Some(h) = host {
        req.push_str(&format!("Host: {h}\r\n"));
    }
    req.push_str(&format!(
        "Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        BODY.len()
    ));
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(BODY);
    raw(addr, req.as_bytes())
}

fn forbidden(srv: &Running, r: &Reply, case: &str) {
    assert_eq!(r.status, 403, "{case}: {}", r.body);
    assert_eq!(r.body.trim_end().lines().count(), 1, "{case}: {:?}", r.body);
    assert_eq!(srv.handle().metrics().events_published(), 0, "{case}");
}

#[test]
fn proxies_cross_site_requests_and_foreign_hosts_are_refused() {
    let srv = start(builder());
    let a = srv.addr();
    let own = a.to_string();
    let own_origin = format!("http://{a}");
    let other_port = format!("http://127.0.0.1:{}", a.port().wrapping_add(1).max(1));
    let https_own = format!("https://{a}");
    let cases: &[Case] = &[
        ("Via", Some(&own), &[("Via", "1.1 proxy")]),
        ("Forwarded", Some(&own), &[("Forwarded", "for=192.0.2.1")]),
        (
            "X-Forwarded-For",
            Some(&own),
            &[("X-Forwarded-For", "192.0.2.1")],
        ),
        ("X-Real-IP", Some(&own), &[("x-real-ip", "192.0.2.1")]),
        (
            "cross-site Origin",
            Some(&own),
            &[("Origin", "http://evil.example")],
        ),
        ("Origin null", Some(&own), &[("Origin", "null")]),
        (
            "Origin on another port",
            Some(&own),
            &[("Origin", &other_port)],
        ),
        ("Origin over https", Some(&own), &[("Origin", &https_own)]),
        (
            "own and foreign Origin",
            Some(&own),
            &[("Origin", &own_origin), ("Origin", "http://evil.example")],
        ),
        (
            "Sec-Fetch-Site: cross-site",
            Some(&own),
            &[("Sec-Fetch-Site", "cross-site")],
        ),
        (
            "cross-site with the own Origin",
            Some(&own),
            &[("Origin", &own_origin), ("Sec-Fetch-Site", "cross-site")],
        ),
        ("Host: evil.example", Some("evil.example"), &[]),
        ("Host: evil.example:8080", Some("evil.example:8080"), &[]),
        (
            "Host: localhost.evil.example",
            Some("localhost.evil.example"),
            &[],
        ),
        (
            "Host: 127.0.0.1.evil.example",
            Some("127.0.0.1.evil.example"),
            &[],
        ),
        ("Host: 0.0.0.0", Some("0.0.0.0"), &[]),
        ("Host: t", Some("t"), &[]),
        (
            "rebinding with its own Origin",
            Some("evil.example:8080"),
            &[("Origin", "http://evil.example:8080")],
        ),
    ];
    for (case, host, headers) in cases {
        forbidden(&srv, &publish_as(a, "1.1", *host, headers), case);
    }
    // Without a Host, the Origin cannot be the server's own.
    forbidden(
        &srv,
        &publish_as(a, "1.0", None, &[("Origin", &own_origin)]),
        "no Host, an Origin",
    );
    assert_eq!(get(a, "/healthz").status, 200);
    srv.stop();
}

#[test]
fn plain_local_and_same_origin_requests_may_publish() {
    let cors = "http://app.example:3000";
    let srv = start(builder().cors_origin(Some(cors.into())));
    let a = srv.addr();
    let port = a.port();
    let own = a.to_string();
    let own_origin = format!("http://{a}");
    let localhost = format!("localhost:{port}");
    let v6 = format!("[::1]:{port}");
    let sub = format!("app.localhost:{port}");
    let cases: &[VersionCase] = &[
        ("no Origin", "1.1", Some(&own), &[]),
        (
            "own Origin",
            "1.1",
            Some(&own),
            &[("Origin", &own_origin), ("Sec-Fetch-Site", "same-origin")],
        ),
        ("--cors-origin", "1.1", Some(&own), &[("Origin", cors)]),
        (
            "--cors-origin, from another site",
            "1.1",
            Some(&own),
            &[("Origin", cors), ("Sec-Fetch-Site", "cross-site")],
        ),
        (
            "Sec-Fetch-Site: none",
            "1.1",
            Some(&own),
            &[("Sec-Fetch-Site", "none")],
        ),
        ("Host: localhost:PORT", "1.1", Some(&localhost), &[]),
        ("Host: localhost", "1.1", Some("localhost"), &[]),
        ("Host: [::1]:PORT", "1.1", Some(&v6), &[]),
        ("Host: 127.0.0.2", "1.1", Some("127.0.0.2"), &[]),
        ("Host: app.localhost:PORT", "1.1", Some(&sub), &[]),
        ("HTTP/1.0 with a Host", "1.0", Some(&own), &[]),
        // Anyone who can leave Host out could send `Host: localhost`.
        ("HTTP/1.0 without a Host", "1.0", None, &[]),
    ];
    for (n, (case, version, host, headers)) in cases.iter().enumerate() {
        let r = publish_as(a, version, *host, headers);
        assert_eq!(r.status, 200, "{case}: {}", r.body);
        assert_eq!(srv.handle().metrics().events_published(), n as u64 + 1);
    }
    srv.stop();
}

#[test]
fn cors_origin_trusts_that_origin_only() {
    let cors = "https://app.example";
    let srv = start(builder().cors_origin(Some(cors.into())));
    let a = srv.addr();
    let own = a.to_string();
    let cases: &[Case] = &[
        (
            "another origin",
            Some(&own),
            &[("Origin", "https://evil.example")],
        ),
        (
            "the trusted one and another",
            Some(&own),
            &[("Origin", cors), ("Origin", "https://evil.example")],
        ),
        (
            "a prefix of it",
            Some(&own),
            &[("Origin", "https://app.example.evil")],
        ),
        (
            "cross-site without Origin",
            Some(&own),
            &[("Sec-Fetch-Site", "cross-site")],
        ),
        // The other rules still hold for the trusted origin.
        (
            "through a proxy",
            Some(&own),
            &[("Origin", cors), ("Via", "1.1 p")],
        ),
        ("a foreign Host", Some("evil.example"), &[("Origin", cors)]),
    ];
    for (case, host, headers) in cases {
        forbidden(&srv, &publish_as(a, "1.1", *host, headers), case);
    }
    srv.stop();
}

#[test]
fn with_a_token_the_token_rule_alone_applies() {
    let srv = start(builder().publish_token(Some("tok".into())));
    let a = srv.addr();
    let hostile: &[(&str, &str)] = &[
        ("Via", "1.1 proxy"),
        ("X-Forwarded-For", "192.0.2.1"),
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ];
    // Without it: 401, not 403, whatever else the request says.
    let r = publish_as(a, "1.1", Some("evil.example"), hostile);
    assert_eq!(r.status, 401, "{}", r.body);
    let mut with_token = hostile.to_vec();
    with_token.push(("Authorization", "Bearer tok"));
    let r = publish_as(a, "1.1", Some("evil.example"), &with_token);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(srv.handle().metrics().events_published(), 1);
    srv.stop();
}

/// On a dual-stack `[::]` listener an IPv4 loopback client shows up as
/// `::ffff:127.0.0.1`: it is still loopback.
#[test]
fn ipv4_mapped_loopback_counts_as_loopback() {
    let srv = match builder().addr("[::]:0").start() {
        Ok(h) => Running(Some(h)),
        Err(e) => {
            skip_or_fail(
                "ipv4_mapped_loopback_counts_as_loopback",
                &format!("cannot listen on [::]: {e}"),
                "an IPv6-enabled kernel",
            );
            return;
        }
    };
    let v4: SocketAddr = format!("127.0.0.1:{}", srv.addr().port()).parse().unwrap();
    if TcpStream::connect(v4).is_err() {
        skip_or_fail(
            "ipv4_mapped_loopback_counts_as_loopback",
            "the [::] listener is IPv6-only (net.ipv6.bindv6only=1)",
            "sysctl net.ipv6.bindv6only=0",
        );
        return;
    }
    let r = publish_as(v4, "1.1", Some(&v4.to_string()), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(srv.handle().metrics().events_published(), 1);
    srv.stop();
}

/// Runs the binary with `args` and logging at its default level, and returns
/// what it wrote on stderr until it was stopped.
fn startup_stderr(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tinysse"))
        .args(args)
        .arg("--no-demo")
        .env_remove("TINYSSE_LOG")
        .env_remove("TINYSSE_PUBLISH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tinysse");
    // The warning is written before the "listening on" line: once that line
    // is here, so is any warning.
    let mut line = String::new();
    let got = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    assert!(
        got.is_ok() && line.starts_with("listening on "),
        "no listening line: {line:?}; stderr: {err}"
    );
    err
}

#[test]
fn a_non_loopback_listener_without_a_token_warns_at_start_up() {
    let warns = |err: &str| err.contains("warn") && err.contains("--publish-token");
    let err = startup_stderr(&["--addr", "0.0.0.0:0"]);
    assert!(warns(&err), "no warning on stderr: {err:?}");
    let err = startup_stderr(&["--addr", "127.0.0.1:0"]);
    assert!(!warns(&err), "a loopback listener warned: {err:?}");
    let err = startup_stderr(&["--addr", "0.0.0.0:0", "--publish-token", "tok"]);
    assert!(!warns(&err), "a listener with a token warned: {err:?}");
}
