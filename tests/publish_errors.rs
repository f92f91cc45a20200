//! Every bad publish gets its status and a one-line reason, the first in the
//! contract's order wins, and nothing is published.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

const JSON: (&str, &str) = ("Content-Type", "application/json");

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
