//! Publishing: every bad publish gets its status and a one-line reason,
//! the first in the contract's order wins, and nothing is published; form
//! bodies publish text; and who may publish. Without a token, only plain
//! local and same-site requests: a proxy header, a cross-site `Origin` or
//! `Sec-Fetch-Site`, a `Host` that is not a loopback name (CSRF, DNS
//! rebinding, forwarders) or a peer that is not loopback gets `403`, and a
//! forwarder that adds none of the proxy headers does not open it either
//! (finding 8: the `Host` rule catches one that passes the public name or
//! names its upstream; what no rule can catch, for a client without
//! `Origin`, is a forwarder that says `Host: localhost`, or nginx's default
//! `Host` when `proxy_pass` names `127.0.0.1:PORT`: that is why the README
//! says behind any proxy or forwarder, set a token). With a token, the
//! token rule alone applies.
//!
//! The peer test makes a real non-loopback peer with a network namespace
//! (the server runs inside it, the test connects from outside over a veth
//! pair): it needs root, `ip` and `nft`. The proxy test runs a real nginx.
//! Each skips saying so without them, or fails when CI is set.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::nginx::Custom;
use common::*;

const JSON: (&str, &str) = ("Content-Type", "application/json");
const BODY: &str = r#"{"topic":"t","data":1}"#;

// ---------------------------------------------------------------------------
// Bodies and errors
// ---------------------------------------------------------------------------

#[test]
fn form_bodies_publish_text() {
    let srv = start(builder());
    let a = srv.addr();
    let mut s = sse(a, "/events?topic=f", &[]);
    let r = request(
        a,
        "POST",
        "/publish",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"topic=f&data=caf%C3%A9+au+lait&event=drink",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let m = s.next_message().unwrap().unwrap();
    assert_eq!(
        (m.event.as_str(), m.data.as_str()),
        ("drink", "café au lait")
    );
    srv.stop();
}

/// Asserts the status and a one-line reason, and that nothing reached the
/// topic's subscriber nor the published counter.
fn refused(srv: &Running, r: Reply, status: u16) {
    assert_eq!(r.status, status, "body: {}", r.body);
    assert_eq!(r.body.trim_end().lines().count(), 1, "{:?}", r.body);
    assert!(r.body.trim().len() > 3);
    assert_eq!(srv.handle().metrics().events_published(), 0);
}

#[test]
fn each_error_has_its_status_and_publishes_nothing() {
    let srv = start(builder().max_body(64).max_topics(2));
    let a = srv.addr();
    let mut watcher = sse(a, "/events?topic=t", &[]);
    let bad_bodies: &[&[u8]] = &[
        b"{not json",
        b"[1,2]",
        br#"{"data":1}"#,
        br#"{"topic":"t"}"#,
        br#"{"topic":7,"data":1}"#,
        br#"{"topic":"a b","data":1}"#,
        br#"{"topic":"t","data":1,"event":"x\ny"}"#,
        br#"{"topic":"t","data":1,"event":"x\ry"}"#,
        br#"{"topic":"t","data":1,"event":5}"#,
    ];
    for body in bad_bodies {
        let r = request(a, "POST", "/publish", &[JSON], body);
        refused(&srv, r, 400);
    }
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    for body in [
        &b"data=x"[..],
        b"topic=t",
        b"topic=t&topic=u&data=x",
        b"topic=t&data=%zz",
        b"topic=t&data=\xff",
        b"topic=t&data=x&event=a%0Ab",
    ] {
        let r = request(a, "POST", "/publish", &[form], body);
        refused(&srv, r, 400);
    }
    refused(
        &srv,
        request(
            a,
            "POST",
            "/publish",
            &[("Content-Type", "text/plain")],
            b"x",
        ),
        415,
    );
    refused(
        &srv,
        request(a, "POST", "/publish", &[], br#"{"topic":"t","data":1}"#),
        415,
    );
    refused(&srv, request(a, "PUT", "/publish", &[JSON], b"{}"), 405);
    refused(&srv, request(a, "GET", "/publish", &[], b""), 405);
    let big = format!(r#"{{"topic":"t","data":"{}"}}"#, "x".repeat(60));
    refused(
        &srv,
        request(a, "POST", "/publish", &[JSON], big.as_bytes()),
        413,
    );

    // Topics: two fit, a third is refused with 429.
    publish_ok(a, "t", &serde_json::json!(1));
    publish_ok(a, "u", &serde_json::json!(2));
    let r = publish_json(a, r#"{"topic":"v","data":3}"#);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(srv.handle().metrics().events_published(), 2);
    // And subscribing to a new topic is refused the same way.
    assert_eq!(get(a, "/events?topic=w").status, 429);

    // The only event the watcher got is the one good publish to its topic.
    assert_eq!(watcher.next_message().unwrap().unwrap().data, "1");
    srv.stop();
}

#[test]
fn a_body_of_exactly_max_body_is_accepted() {
    let body = r#"{"topic":"t","data":"xx"}"#;
    let srv = start(builder().max_body(body.len() as u64));
    let r = request(srv.addr(), "POST", "/publish", &[JSON], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    let longer = r#"{"topic":"t","data":"xxx"}"#;
    let r = request(srv.addr(), "POST", "/publish", &[JSON], longer.as_bytes());
    assert_eq!(r.status, 413);
    srv.stop();
}

#[test]
fn a_large_content_length_is_refused_before_the_body_is_read() {
    let srv = start(builder().max_body(1000));
    let mut s = TcpStream::connect(srv.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Announce 10 MB and send none of it: the answer must come anyway.
    s.write_all(
        b"POST /publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = s
        .read(&mut buf)
        .expect("an answer without sending the body");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    // A chunked body that grows past the limit is cut off too.
    let r = raw(
        srv.addr(),
        format!(
            "POST /publish HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n{}\r\n0\r\n\r\n",
            "x".repeat(2000)
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 413);
    assert_eq!(get(srv.addr(), "/healthz").status, 200);
    srv.stop();
}

#[test]
fn the_first_error_in_contract_order_wins() {
    let srv = start(builder().max_body(30).publish_token(Some("s3cret".into())));
    let a = srv.addr();
    let long = br#"{"topic":"t","data":"far, far too long"}"#;
    // 405 beats everything.
    refused(
        &srv,
        request(
            a,
            "PATCH",
            "/publish",
            &[("Content-Type", "text/plain")],
            long,
        ),
        405,
    );
    // 401 beats 415 and 413.
    refused(
        &srv,
        request(
            a,
            "POST",
            "/publish",
            &[("Content-Type", "text/plain")],
            long,
        ),
        401,
    );
    refused(
        &srv,
        request(
            a,
            "POST",
            "/publish",
            &[JSON, ("Authorization", "Bearer wrong")],
            long,
        ),
        401,
    );
    // 415 beats 413.
    refused(
        &srv,
        request(
            a,
            "POST",
            "/publish",
            &[
                ("Content-Type", "text/plain"),
                ("Authorization", "Bearer s3cret"),
            ],
            long,
        ),
        415,
    );
    // 413 beats 400.
    refused(
        &srv,
        request(
            a,
            "POST",
            "/publish",
            &[JSON, ("Authorization", "Bearer s3cret")],
            &[b'{'; 31],
        ),
        413,
    );
    refused(
        &srv,
        request(
            a,
            "POST",
            "/publish",
            &[JSON, ("Authorization", "Bearer s3cret")],
            b"{{",
        ),
        400,
    );
    let r = request(
        a,
        "POST",
        "/publish",
        &[JSON, ("Authorization", "Bearer s3cret")],
        br#"{"topic":"t","data":1}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    srv.stop();
}

#[test]
fn with_a_token_any_peer_needs_it() {
    let srv = start(builder().publish_token(Some("tok".into())));
    let body = br#"{"topic":"t","data":1}"#;
    let r = request(srv.addr(), "POST", "/publish", &[JSON], body);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
    let r = request(
        srv.addr(),
        "POST",
        "/publish",
        &[JSON, ("Authorization", "Bearer tok")],
        body,
    );
    assert_eq!(r.status, 200);
    srv.stop();
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let srv = start(builder().publish_token(Some("tok".into())));
    let body = br#"{"topic":"t","data":1}"#;
    for (n, auth) in ["bearer tok", "BEARER tok", "Bearer  tok"]
        .iter()
        .enumerate()
    {
        let r = request(
            srv.addr(),
            "POST",
            "/publish",
            &[JSON, ("Authorization", auth)],
            body,
        );
        assert_eq!(r.status, 200, "{auth}: {}", r.body);
        assert_eq!(srv.handle().metrics().events_published(), n as u64 + 1);
    }
    for auth in ["Basic tok", "bearertok", "tok", "bearer TOK"] {
        let r = request(
            srv.addr(),
            "POST",
            "/publish",
            &[JSON, ("Authorization", auth)],
            body,
        );
        assert_eq!(r.status, 401, "{auth}: {}", r.body);
    }
    srv.stop();
}

#[test]
fn event_type_gap_is_reserved_for_the_server() {
    let srv = start(builder());
    let a = srv.addr();
    let mut watcher = sse(a, "/events?topic=t", &[]);
    refused(
        &srv,
        request(
            a,
            "POST",
            "/publish",
            &[JSON],
            br#"{"topic":"t","data":1,"event":"gap"}"#,
        ),
        400,
    );
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    refused(
        &srv,
        request(a, "POST", "/publish", &[form], b"topic=t&data=x&event=gap"),
        400,
    );
    // Any other type is fine, and is the first thing the watcher sees.
    let r = request(
        a,
        "POST",
        "/publish",
        &[JSON],
        br#"{"topic":"t","data":2,"event":"gaps"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let m = watcher.next_message().unwrap().unwrap();
    assert_eq!((m.event.as_str(), m.data.as_str()), ("gaps", "2"));
    srv.stop();
}

#[test]
fn a_403_comes_after_405_and_before_415_413_and_400() {
    let srv = start(builder().max_body(30));
    let a = srv.addr();
    let long = br#"{"topic":"t","data":"far, far too long"}"#;
    let cross = ("Origin", "http://evil.example");
    let text_plain = ("Content-Type", "text/plain");
    // 405 beats 403.
    refused(
        &srv,
        request(a, "PUT", "/publish", &[cross, text_plain], long),
        405,
    );
    // 403 beats 415, 413 and 400, for each way of not being plain local.
    for hostile in [
        cross,
        ("Sec-Fetch-Site", "cross-site"),
        ("Via", "1.1 proxy"),
        ("X-Forwarded-For", "192.0.2.1"),
    ] {
        refused(
            &srv,
            request(a, "POST", "/publish", &[hostile, text_plain], long),
            403,
        );
        refused(
            &srv,
            request(a, "POST", "/publish", &[hostile, JSON], long),
            403,
        );
        refused(
            &srv,
            request(a, "POST", "/publish", &[hostile, JSON], b"{{"),
            403,
        );
    }
    // A foreign Host too.
    let mut req = format!(
        "POST /publish HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        long.len()
    )
    .into_bytes();
    req.extend_from_slice(long);
    refused(&srv, raw(a, &req), 403);
    srv.stop();
}

// ---------------------------------------------------------------------------
// Who may publish without a token: origins, hosts and proxy headers
// ---------------------------------------------------------------------------

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
                "publish::ipv4_mapped_loopback_counts_as_loopback",
                &format!("cannot listen on [::]: {e}"),
                "an IPv6-enabled kernel",
            );
            return;
        }
    };
    let v4: SocketAddr = format!("127.0.0.1:{}", srv.addr().port()).parse().unwrap();
    if TcpStream::connect(v4).is_err() {
        skip_or_fail(
            "publish::ipv4_mapped_loopback_counts_as_loopback",
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

// ---------------------------------------------------------------------------
// Peers: only loopback without a token
// ---------------------------------------------------------------------------

/// Not the /30 `faults::vanished_client_is_released` uses, so the two may
/// run at once.
const PEER_NET: &str = "10.213.78";
const PEER_BODY: &[u8] = br#"{"topic":"p","data":1}"#;

#[test]
fn only_loopback_may_publish_without_a_token() {
    if let Some(why) = Netns::unusable() {
        skip_or_fail(
            "publish::only_loopback_may_publish_without_a_token",
            &why,
            "run as root; apt-get install -y iproute2 nftables",
        );
        return;
    }
    let ns = Netns::up("tspp", PEER_NET);

    let json = [("Content-Type", "application/json")];
    let open = ns.start(&["--addr", &format!("{PEER_NET}.1:0"), "--no-demo"]);
    assert!(!open.addr.ip().is_loopback());
    let r = request(open.addr, "POST", "/publish", &json, PEER_BODY);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("loopback"), "{}", r.body);
    // Subscribing from afar is fine, and the refused publish left no trace.
    assert!(
        get(open.addr, "/metrics")
            .body
            .contains("tinysse_events_published_total 0")
    );
    drop(open);

    let guarded = ns.start(&[
        "--addr",
        &format!("{PEER_NET}.1:0"),
        "--no-demo",
        "--publish-token",
        "k3y",
    ]);
    let r = request(guarded.addr, "POST", "/publish", &json, PEER_BODY);
    assert_eq!(r.status, 401);
    let auth = [
        ("Content-Type", "application/json"),
        ("Authorization", "Bearer k3y"),
    ];
    let r = request(guarded.addr, "POST", "/publish", &auth, PEER_BODY);
    assert_eq!(r.status, 200, "{}", r.body);
}

// ---------------------------------------------------------------------------
// Forwarders and proxies that add no proxy header (finding 8)
// ---------------------------------------------------------------------------

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

#[test]
fn nginx_in_front_does_not_open_publishing_to_pages_or_public_names() {
    if !require(
        "publish::nginx_in_front_does_not_open_publishing_to_pages_or_public_names",
        &["nginx"],
        "apt-get install -y nginx",
    ) {
        return;
    }
    let srv = start(builder());
    let up = srv.addr();
    // The shortest config that proxies, with nginx's defaults: no proxy
    // header, `Host` = the upstream as written in proxy_pass.
    let stock = Custom::start("", &format!("location / {{ proxy_pass http://{up}; }}"));
    // The same with a named upstream, and with the public name passed on
    // (what most configs do, deploy/nginx.conf included).
    let named = Custom::start(
        &format!("upstream tinysse_up {{ server {up}; }}"),
        "location / { proxy_pass http://tinysse_up; }",
    );
    let public = Custom::start(
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
    let stock = Custom::start(
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
