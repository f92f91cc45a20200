//! Authorization through real HTTP: a server with an `Authorizer` (or a
//! custom check), real HS256 tokens from `jsonwebtoken`, and every rule of
//! the contract's "Authorization" section as a client sees it: where the
//! token comes from, what is refused and with which status, that a refusal
//! subscribes, creates or publishes nothing, the publish error order, and
//! CORS with credentials.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tinysse::{
    Action, AuthError, AuthRequest, Authorizer, Event, EventStream, Grant, Pattern, StartError,
};

const KEY: &[u8] = b"auth_http test key, 32 bytes or more!";
const ORIGIN: &str = "http://app.example:8000";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(key: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(key).unwrap(),
    )
    .unwrap()
}

/// A token valid for ten minutes with these lists.
fn token(subscribe: &[&str], publish: &[&str]) -> String {
    sign(
        KEY,
        &json!({"exp": now() + 600, "tinysse": {"subscribe": subscribe, "publish": publish}}),
    )
}

fn authorizer() -> Authorizer {
    Authorizer::from_secret(KEY).unwrap()
}

fn server() -> Running {
    start(builder().authorizer(authorizer()))
}

/// What a `GET` (or `HEAD`) on a stream endpoint answered: the status, the
/// body of a refusal, and its `WWW-Authenticate`. A `200` stream is closed.
fn answer(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Option<String>) {
    if method == "HEAD" {
        let mut req = format!("HEAD {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let r = raw(addr, req.as_bytes());
        let www = r.header("WWW-Authenticate").map(str::to_string);
        return (r.status, String::new(), www);
    }
    let s = EventStream::connect(addr, target, headers).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let status = s.status();
    let www = s.header("WWW-Authenticate").map(str::to_string);
    if status == 200 {
        return (200, String::new(), www);
    }
    let body = s.body_text().expect("refusal body");
    (status, body.trim_end().to_string(), www)
}

fn status(addr: std::net::SocketAddr, target: &str, headers: &[(&str, &str)]) -> u16 {
    answer(addr, "GET", target, headers).0
}

/// Opens `target` with `headers` and checks that an event published to
/// `topic` after the head arrives: the subscription is really live.
fn receives(srv: &Running, target: &str, headers: &[(&str, &str)], topic: &str) {
    let mut s = sse(srv.addr(), target, headers);
    assert_eq!(s.status(), 200, "{target}");
    let data = format!("for {topic}");
    srv.handle()
        .hub()
        .publish(topic, &Event::data(data.clone()))
        .unwrap();
    let m = s.next_message().expect("read").expect("an event");
    assert_eq!(m.data, data);
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn cookie(t: &str) -> String {
    format!("theme=dark; tinysse_token={t}; lang=en")
}

/// `POST /publish` with these headers and body (`Content-Length` added).
fn post(addr: std::net::SocketAddr, headers: &[(&str, &str)], body: &str) -> Reply {
    request(addr, "POST", "/publish", headers, body.as_bytes())
}

/// Sends only the head of a publish that announces a body of `len` bytes,
/// and reads the answer: one that comes was decided without the body.
/// (tiny_http reads a body of up to 1 KiB with the head: give more.)
fn head_only_post(addr: std::net::SocketAddr, headers: &[(&str, &str)], len: usize) -> Reply {
    let mut req = format!("POST /publish HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {len}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw(addr, req.as_bytes())
}

fn json_post(addr: std::net::SocketAddr, auth: Option<&str>, body: &str) -> Reply {
    let b;
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(t) = auth {
        b = bearer(t);
        h.push(("Authorization", b.as_str()));
    }
    post(addr, &h, body)
}

// ---------------------------------------------------------------------------
// Subscribing

#[test]
fn the_token_comes_from_the_header_the_query_or_the_cookie() {
    let srv = server();
    let a = srv.addr();
    let t = token(&["user/42/*"], &[]);
    let target = "/events?topic=user/42/inbox";
    receives(
        &srv,
        target,
        &[("Authorization", &bearer(&t))],
        "user/42/inbox",
    );
    // The scheme in any case.
    receives(
        &srv,
        target,
        &[("Authorization", &format!("bEaReR {t}"))],
        "user/42/inbox",
    );
    receives(
        &srv,
        &format!("{target}&access_token={t}"),
        &[],
        "user/42/inbox",
    );
    receives(&srv, target, &[("Cookie", &cookie(&t))], "user/42/inbox");
    // A proxy's Basic credentials are passed over for the cookie.
    receives(
        &srv,
        target,
        &[
            ("Authorization", "Basic dXNlcjpwdw=="),
            ("Cookie", &cookie(&t)),
        ],
        "user/42/inbox",
    );

    // No token at all, and a cookie of another name.
    let (st, body, www) = answer(a, "GET", target, &[]);
    assert_eq!((st, body.as_str()), (401, "no token"));
    assert_eq!(www.as_deref(), Some("Bearer"));
    let other = format!("my_tinysse_token={t}");
    assert_eq!(status(a, target, &[("Cookie", &other)]), 401);
    // The first source present wins: a bad header is not rescued by a good
    // query parameter or cookie.
    let wrong = sign(b"another key", &json!({"tinysse": {"subscribe": ["*"]}}));
    let (st, body, _) = answer(
        a,
        "GET",
        &format!("{target}&access_token={t}"),
        &[("Authorization", &bearer(&wrong)), ("Cookie", &cookie(&t))],
    );
    assert_eq!((st, body.as_str()), (401, "bad token signature"));
    let (st, _, _) = answer(
        a,
        "GET",
        &format!("{target}&access_token={wrong}"),
        &[("Cookie", &cookie(&t))],
    );
    assert_eq!(st, 401);
}

#[test]
fn bad_tokens_are_401_with_a_reason_that_never_shows_them() {
    let srv = server();
    let a = srv.addr();
    let claims = json!({"exp": now() + 600, "tinysse": {"subscribe": ["*"]}});
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let hs512 = encode(
        &Header::new(Algorithm::HS512),
        &claims,
        &EncodingKey::from_secret(KEY).unwrap(),
    )
    .unwrap();
    let good = sign(KEY, &claims);
    let mut tampered = good.clone();
    // A payload that grants more than the signature covers.
    let parts: Vec<&str> = good.split('.').collect();
    let more = json!({"exp": now() + 600, "tinysse": {"subscribe": ["*"], "publish": ["*"]}});
    tampered = tampered.replace(parts[1], &URL_SAFE_NO_PAD.encode(more.to_string()));
    let cases: Vec<(String, &str)> = vec![
        (
            none,
            "malformed token or unsupported algorithm (HS256 expected)",
        ),
        (hs512, "token algorithm HS512 refused (HS256 expected)"),
        (sign(b"the wrong key", &claims), "bad token signature"),
        (tampered, "bad token signature"),
        (
            "not.a.jwt".into(),
            "malformed token or unsupported algorithm (HS256 expected)",
        ),
        (
            sign(
                KEY,
                &json!({"exp": now() - 120, "tinysse": {"subscribe": ["*"]}}),
            ),
            "token expired",
        ),
        (
            sign(
                KEY,
                &json!({"nbf": now() + 120, "tinysse": {"subscribe": ["*"]}}),
            ),
            "token not yet valid (nbf)",
        ),
        (
            sign(
                KEY,
                &json!({"exp": "tomorrow", "tinysse": {"subscribe": ["*"]}}),
            ),
            "token exp is not a number of seconds",
        ),
        (
            sign(KEY, &json!({"tinysse": {"subscribe": ["user/*/x"]}})),
            "token claim tinysse is malformed",
        ),
    ];
    for (t, want) in &cases {
        for (target, headers) in [
            (
                "/events?topic=t".to_string(),
                vec![("Authorization", bearer(t))],
            ),
            (format!("/events?topic=t&access_token={t}"), vec![]),
            ("/events?topic=t".to_string(), vec![("Cookie", cookie(t))]),
        ] {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (st, body, www) = answer(a, "GET", &target, &h);
            assert_eq!((st, body.as_str()), (401, *want), "{target} {h:?}");
            assert_eq!(www.as_deref(), Some("Bearer"));
            assert!(!body.contains(t.as_str()) || t.len() < 3, "{body}");
        }
        // HEAD answers the same status, with nothing opened.
        let (st, _, _) = answer(
            a,
            "HEAD",
            "/events?topic=t",
            &[("Authorization", &bearer(t))],
        );
        assert_eq!(st, 401);
        // A publish too, before its body is read.
        let r = json_post(a, Some(t), r#"{"topic":"t","data":1}"#);
        assert_eq!((r.status, r.body.trim_end()), (401, *want));
    }
    let m = srv.handle().metrics();
    assert_eq!(m.streams_total(), 0, "a refused request opened a stream");
    assert_eq!(m.events_published(), 0);
    assert_eq!(srv.handle().hub().topic_count(), 0);
    // Within the 30 s leeway, exp and nbf still pass.
    let t = sign(
        KEY,
        &json!({"exp": now() - 5, "nbf": now() + 5, "tinysse": {"subscribe": ["t"]}}),
    );
    receives(
        &srv,
        "/events?topic=t",
        &[("Authorization", &bearer(&t))],
        "t",
    );
}

#[test]
fn patterns_and_their_edges() {
    let srv = server();
    let a = srv.addr();
    let t = token(&["user/42/*", "news", "pre*"], &[]);
    let h = bearer(&t);
    let h = [("Authorization", h.as_str())];
    for ok in [
        "user/42/x",
        "user/42/a/b",
        "user/42/",
        "news",
        "pre",
        "prefix",
        "pre/x",
    ] {
        assert_eq!(status(a, &format!("/events?topic={ok}"), &h), 200, "{ok}");
    }
    for (no, shown) in [
        ("user/421/x", "user/421/x"),
        ("user/42", "user/42"),
        ("user/4", "user/4"),
        ("news2", "news2"),
        ("new", "new"),
        ("pr", "pr"),
    ] {
        let (st, body, _) = answer(a, "GET", &format!("/events?topic={no}"), &h);
        assert_eq!(
            (st, body),
            (403, format!("token does not allow subscribing to {shown}")),
            "{no}"
        );
    }
    // Every topic must be covered: one outside the token refuses them all.
    let (st, body, _) = answer(a, "GET", "/events?topic=news&topic=user/43/x", &h);
    assert_eq!(
        (st, body.as_str()),
        (403, "token does not allow subscribing to user/43/x")
    );
    assert_eq!(
        answer(a, "HEAD", "/events?topic=news&topic=user/43/x", &h).0,
        403
    );
    // `*` covers everything; an empty or missing list nothing.
    let all = bearer(&token(&["*"], &[]));
    assert_eq!(
        status(a, "/events?topic=a&topic=b/c", &[("Authorization", &all)]),
        200
    );
    let nothing = bearer(&sign(KEY, &json!({"exp": now() + 60})));
    assert_eq!(
        status(a, "/events?topic=a", &[("Authorization", &nothing)]),
        403
    );
    // Publish rights do not open subscribing.
    let publisher = bearer(&token(&[], &["*"]));
    assert_eq!(
        status(a, "/events?topic=a", &[("Authorization", &publisher)]),
        403
    );
    // An invalid topic is 400 before the token is looked at.
    assert_eq!(status(a, "/events?topic=bad%20topic", &h), 400);
    assert_eq!(status(a, "/events?topic=bad%20topic", &[]), 400);
}

#[test]
fn open_topics_mixed_with_private_ones() {
    let auth = authorizer().with_open_topics(Pattern::parse_list("news,status/*").unwrap());
    let srv = start(builder().authorizer(auth));
    let a = srv.addr();
    // Open topics need no token.
    receives(&srv, "/events?topic=news", &[], "news");
    receives(&srv, "/events?topic=news&topic=status/db", &[], "status/db");
    assert_eq!(answer(a, "HEAD", "/events?topic=status/x", &[]).0, 200);
    // A stale cookie (expired, or signed with an old key) does not break
    // a public page.
    let stale = sign(KEY, &json!({"exp": now() - 3600}));
    receives(
        &srv,
        "/events?topic=news",
        &[("Cookie", &cookie(&stale))],
        "news",
    );
    let old_key = sign(b"last year's key", &json!({}));
    assert_eq!(
        status(a, "/events?topic=news", &[("Cookie", &cookie(&old_key))]),
        200
    );
    // Mixed with a private topic: a token is needed, and must cover the
    // private ones only.
    let (st, body, _) = answer(a, "GET", "/events?topic=news&topic=user/42/x", &[]);
    assert_eq!((st, body.as_str()), (401, "no token"));
    assert_eq!(
        status(
            a,
            "/events?topic=news&topic=user/42/x",
            &[("Cookie", &cookie(&stale))]
        ),
        401
    );
    let t = token(&["user/42/*"], &[]);
    receives(
        &srv,
        "/events?topic=news&topic=user/42/x",
        &[("Cookie", &cookie(&t))],
        "user/42/x",
    );
    assert_eq!(
        status(
            a,
            "/events?topic=news&topic=user/43/x",
            &[("Cookie", &cookie(&t))]
        ),
        403
    );
    // `status` alone is not under `status/*`.
    assert_eq!(status(a, "/events?topic=status", &[]), 401);
    // Open topics never open publishing.
    let before = srv.handle().metrics().events_published();
    let r = json_post(a, None, r#"{"topic":"news","data":1}"#);
    assert_eq!(r.status, 401);
    assert_eq!(srv.handle().metrics().events_published(), before);
}

#[test]
fn a_refused_subscribe_registers_nothing() {
    let srv = start(builder().authorizer(authorizer()).max_topics(1));
    let a = srv.addr();
    let hub = srv.handle().hub();
    let m = srv.handle().metrics();
    let wrong = bearer(&token(&["other"], &[]));
    for _ in 0..20 {
        assert_eq!(status(a, "/events?topic=t1&topic=t2", &[]), 401);
        assert_eq!(
            status(a, "/events?topic=t1", &[("Authorization", &wrong)]),
            403
        );
        assert_eq!(answer(a, "HEAD", "/events?topic=t1", &[]).0, 401);
    }
    // No topic was created (a subscriber keeps its topic), no stream slot
    // taken or refused, nothing counted as active.
    assert_eq!(hub.topic_count(), 0);
    assert_eq!(m.topics(), 0);
    assert_eq!(m.streams_total(), 0);
    assert_eq!(m.streams_rejected(), 0);
    assert_eq!(m.streams_active(), 0);
    // With --max-topics 1, the refusals left room for the one real topic.
    let ok = bearer(&token(&["t1"], &[]));
    receives(&srv, "/events?topic=t1", &[("Authorization", &ok)], "t1");
    assert_eq!(hub.topic_count(), 1);
}

#[test]
fn metrics_healthz_and_files_need_no_token_and_custom_routes_stay_open() {
    let dir = TempDir::new();
    std::fs::write(dir.path().join("index.html"), "<p>hi</p>").unwrap();
    let srv = start(
        builder()
            .authorizer(authorizer())
            .public_dir(Some(dir.path().to_path_buf()))
            .firehose(true)
            .stream_route("/custom", |_rq, tx| {
                let _ = tx.send(Event::data("open"));
            }),
    );
    let a = srv.addr();
    // The control: this server does refuse a token-less subscription.
    assert_eq!(status(a, "/events?topic=t", &[]), 401);
    assert_eq!(get(a, "/metrics").status, 200);
    assert_eq!(get(a, "/healthz").status, 200);
    assert_eq!(get(a, "/").status, 200);
    let mut s = sse(a, "/custom", &[]);
    assert_eq!(s.status(), 200);
    assert_eq!(s.next_message().unwrap().unwrap().data, "open");
    let s = sse(a, "/firehose?count=1&size=1", &[]);
    assert_eq!(s.status(), 200);
}

// ---------------------------------------------------------------------------
// Publishing

#[test]
fn publishing_needs_a_token_that_allows_the_topic() {
    let srv = server();
    let a = srv.addr();
    let t = token(&[], &["orders/*"]);
    let mut sub = sse(
        a,
        "/events?topic=orders/7",
        &[("Authorization", &bearer(&token(&["orders/*"], &[])))],
    );
    let r = json_post(a, Some(&t), r#"{"topic":"orders/7","data":{"n":1}}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(sub.next_message().unwrap().unwrap().data, r#"{"n":1}"#);
    // The query parameter and the cookie carry it too (a program's own
    // origin: no Origin header).
    let r = request(
        a,
        "POST",
        &format!("/publish?access_token={t}"),
        &[("Content-Type", "application/json")],
        br#"{"topic":"orders/8","data":2}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(
        a,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &cookie(&t)),
        ],
        "topic=orders/9&data=3",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Another topic: 403, nothing published.
    let before = srv.handle().metrics().events_published();
    let r = json_post(a, Some(&t), r#"{"topic":"order","data":1}"#);
    assert_eq!(
        (r.status, r.body.trim_end()),
        (403, "token does not allow publishing to order")
    );
    let r = json_post(a, Some(&t), r#"{"topic":"orders","data":1}"#);
    assert_eq!(r.status, 403);
    // Subscribe rights do not open publishing.
    let reader = token(&["*"], &[]);
    let r = json_post(a, Some(&reader), r#"{"topic":"orders/7","data":1}"#);
    assert_eq!(r.status, 403);
    assert_eq!(srv.handle().metrics().events_published(), before);
    assert_eq!(srv.handle().hub().topic_count(), 3);
}

#[test]
fn publish_errors_come_in_the_contract_order() {
    let srv = start(
        builder()
            .authorizer(authorizer())
            .max_topics(1)
            .max_body(64),
    );
    let a = srv.addr();
    let t = token(&[], &["a", "b", "c"]);
    let only_c = token(&[], &["c"]);
    let h = bearer(&t);
    // 405 first: the wrong method, with or without a token.
    let r = request(a, "GET", "/publish", &[], b"");
    assert_eq!(r.status, 405);
    let r = request(a, "PUT", "/publish", &[("Authorization", &h)], b"");
    assert_eq!(r.status, 405);
    // 401 before 415, 413 and 400: the body is never read.
    let r = post(a, &[("Content-Type", "text/plain")], "x");
    assert_eq!(r.status, 401);
    let huge = "x".repeat(1000);
    let r = head_only_post(a, &[("Content-Type", "application/json")], 10_000_000);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("Connection"), Some("close"));
    let wrong = bearer(&sign(b"wrong key", &json!({"tinysse": {"publish": ["a"]}})));
    let r = head_only_post(
        a,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &wrong),
        ],
        10_000_000,
    );
    assert_eq!(r.status, 401);
    let r = json_post(a, None, "not json");
    assert_eq!(r.status, 401);
    // With a valid token: 415, then 413, then 400, each before the topic's
    // 403.
    let r = post(
        a,
        &[("Content-Type", "text/plain"), ("Authorization", &h)],
        "x",
    );
    assert_eq!(r.status, 415);
    let r = post(
        a,
        &[
            ("Content-Type", "text/plain"),
            ("Authorization", &bearer(&only_c)),
        ],
        r#"{"topic":"a","data":1}"#,
    );
    assert_eq!(r.status, 415);
    let r = json_post(a, Some(&only_c), &huge);
    assert_eq!(r.status, 413);
    let r = json_post(a, Some(&only_c), r#"{"topic":"a","data":1,"event":"gap"}"#);
    assert_eq!(r.status, 400);
    let r = json_post(a, Some(&only_c), r#"{"topic":"a"}"#);
    assert_eq!(r.status, 400);
    // 403 before 429: with --max-topics 1 and topic `a` taken, a topic the
    // token does not allow is 403, one it allows 429.
    let r = json_post(a, Some(&t), r#"{"topic":"a","data":1}"#);
    assert_eq!(r.status, 200);
    let r = json_post(a, Some(&only_c), r#"{"topic":"b","data":1}"#);
    assert_eq!(r.status, 403);
    let r = json_post(a, Some(&t), r#"{"topic":"b","data":1}"#);
    assert_eq!(r.status, 429);
    assert_eq!(srv.handle().metrics().events_published(), 1);
}

#[test]
fn with_auth_the_token_decides_wherever_the_request_comes_from() {
    let srv = start(
        builder()
            .authorizer(authorizer())
            .cors_origin(Some(ORIGIN.into())),
    );
    let a = srv.addr();
    let t = token(&[], &["p"]);
    let h = bearer(&t);
    let body = br#"{"topic":"p","data":1}"#;
    // Through a proxy, from another origin, with a public Host: the token
    // is enough (without auth, each of these is 403).
    for extra in [
        ("X-Forwarded-For", "203.0.113.9"),
        ("Via", "1.1 nginx"),
        ("Origin", "https://elsewhere.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let r = request(
            a,
            "POST",
            "/publish",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &h),
                extra,
            ],
            body,
        );
        assert_eq!(r.status, 200, "{extra:?}: {}", r.body);
    }
    let r = raw(
        a,
        format!(
            "POST /publish HTTP/1.1\r\nHost: sse.example.com\r\nAuthorization: {h}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            std::str::from_utf8(body).unwrap()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // A plain local request without a token is no longer enough.
    let r = json_post(a, None, r#"{"topic":"p","data":1}"#);
    assert_eq!(r.status, 401);

    // A token in a cookie publishes only from the server's own origin or
    // --cors-origin: a browser sends the cookie with a form posted from any
    // page of the same site (CSRF).
    let c = cookie(&t);
    let form = "topic=p&data=x";
    let ctype = ("Content-Type", "application/x-www-form-urlencoded");
    let own = format!("http://{a}");
    for (origin, want) in [
        (Some(own.as_str()), 200),
        (Some(ORIGIN), 200),
        (None, 200),
        (Some("http://evil.example"), 403),
        (Some("null"), 403),
    ] {
        let mut h = vec![ctype, ("Cookie", c.as_str())];
        if let Some(o) = origin {
            h.push(("Origin", o));
        }
        let r = post(a, &h, form);
        assert_eq!(r.status, want, "Origin {origin:?}: {}", r.body);
    }
    let r = post(
        a,
        &[ctype, ("Cookie", &c), ("Sec-Fetch-Site", "cross-site")],
        form,
    );
    assert_eq!(r.status, 403);
    assert!(r.body.contains("Authorization header"), "{}", r.body);
}

#[test]
fn publish_token_is_unchanged_without_an_authorizer_and_refused_with_one() {
    let srv = start(builder().publish_token(Some("plain-token".into())));
    let a = srv.addr();
    let r = json_post(a, Some("plain-token"), r#"{"topic":"p","data":1}"#);
    assert_eq!(r.status, 200);
    let r = json_post(a, Some("wrong"), r#"{"topic":"p","data":1}"#);
    assert_eq!(r.status, 401);
    // Without either, a plain local request publishes, as before.
    let srv = start(builder());
    assert_eq!(
        publish_json(srv.addr(), r#"{"topic":"p","data":1}"#).status,
        200
    );

    let err = builder()
        .publish_token(Some("plain-token".into()))
        .authorizer(authorizer())
        .start()
        .unwrap_err();
    assert!(matches!(err, StartError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("publish_token"), "{err}");
}

// ---------------------------------------------------------------------------
// An embedding program's own check

#[test]
fn a_custom_check_decides_subscribing_publishing_and_custom_routes() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CALLS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static STREAMS: AtomicUsize = AtomicUsize::new(0);
    let check = |rq: &AuthRequest<'_>, topics: &[&str]| -> Result<Grant, AuthError> {
        let req = rq.request();
        CALLS
            .lock()
            .unwrap()
            .push(format!("{:?} {}", rq.action(), topics.join(",")));
        let tenant = req.header("X-Tenant");
        match rq.action() {
            Action::Stream if req.path() == "/private" => {
                Err(AuthError::Unauthorized("no private routes".into()))
            }
            Action::Stream => Ok(Grant::unlimited()),
            _ if tenant.is_none() => Err(AuthError::Unauthorized("who are you?".into())),
            _ if topics.iter().all(|t| t.starts_with(tenant.unwrap())) => Ok(Grant::unlimited()),
            _ => Err(AuthError::Forbidden(
                "another tenant's topic\r\nX-Evil: 1".into(),
            )),
        }
    };
    let srv = start(
        builder()
            .authorize(check)
            .stream_route("/private", |_rq, tx| {
                STREAMS.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(Event::data("x"));
            })
            .stream_route("/public", |_rq, tx| {
                let _ = tx.send(Event::data("y"));
            }),
    );
    let a = srv.addr();
    let t7 = [("X-Tenant", "t7")];
    receives(&srv, "/events?topic=t7/a&topic=t7/b", &t7, "t7/b");
    let (st, body, _) = answer(a, "GET", "/events?topic=t8/a", &t7);
    assert_eq!((st, body.as_str()), (403, "another tenant's topic"));
    let (st, body, _) = answer(a, "GET", "/events?topic=t7/a", &[]);
    assert_eq!((st, body.as_str()), (401, "who are you?"));
    assert_eq!(answer(a, "HEAD", "/events?topic=t8/a", &t7).0, 403);
    // Custom routes: what the check says, and a refused one never runs.
    assert_eq!(status(a, "/private", &[]), 401);
    assert_eq!(answer(a, "HEAD", "/private", &[]).0, 401);
    assert_eq!(STREAMS.load(Ordering::SeqCst), 0);
    assert_eq!(status(a, "/public", &[]), 200);

    // A publish asks twice: with no topic before the body, with the topic
    // after it.
    CALLS.lock().unwrap().clear();
    let ctype = ("Content-Type", "application/json");
    let r = post(a, &[ctype, t7[0]], r#"{"topic":"t7/x","data":1}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(*CALLS.lock().unwrap(), ["Publish ", "Publish t7/x"]);
    let r = post(a, &[ctype, t7[0]], r#"{"topic":"t8/x","data":1}"#);
    assert_eq!(r.status, 403);
    assert!(r.header("X-Evil").is_none());
    let r = head_only_post(a, &[ctype], 10_000_000);
    assert_eq!(r.status, 401, "refused before the body");
    // One by the hub in `receives`, one through /publish.
    assert_eq!(srv.handle().metrics().events_published(), 2);
}

// ---------------------------------------------------------------------------
// CORS with credentials

#[test]
fn cors_with_credentials_names_the_origin() {
    let srv = start(
        builder()
            .authorizer(authorizer().with_open_topics(vec![Pattern::parse("news").unwrap()]))
            .cors_origin(Some(ORIGIN.into()))
            .stream_route("/custom", |_rq, tx| {
                let _ = tx.send(Event::data("x"));
            }),
    );
    let a = srv.addr();
    let creds = |get: &dyn Fn(&str) -> Option<String>| {
        assert_eq!(get("Access-Control-Allow-Origin").as_deref(), Some(ORIGIN));
        assert_eq!(
            get("Access-Control-Allow-Credentials").as_deref(),
            Some("true")
        );
    };
    let t = token(&["news", "p"], &["p"]);
    for target in ["/events?topic=news", "/custom"] {
        let s = sse(a, target, &[("Origin", ORIGIN), ("Cookie", &cookie(&t))]);
        assert_eq!(s.status(), 200);
        creds(&|h| s.header(h).map(str::to_string));
    }
    let r = raw(
        a,
        format!("HEAD /events?topic=news HTTP/1.1\r\nHost: {a}\r\nOrigin: {ORIGIN}\r\n\r\n")
            .as_bytes(),
    );
    creds(&|h| r.header(h).map(str::to_string));
    // Refusals too, so a page can read why.
    let r = json_post(a, None, r#"{"topic":"p","data":1}"#);
    assert_eq!(r.status, 401);
    creds(&|h| r.header(h).map(str::to_string));
    let r = json_post(a, Some(&t), r#"{"topic":"p","data":1}"#);
    assert_eq!(r.status, 200);
    creds(&|h| r.header(h).map(str::to_string));
    // The preflight allows the Authorization header, with credentials.
    let r = request(
        a,
        "OPTIONS",
        "/publish",
        &[
            ("Origin", ORIGIN),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        b"",
    );
    assert_eq!(r.status, 204);
    creds(&|h| r.header(h).map(str::to_string));
    let allowed = r
        .header("Access-Control-Allow-Headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");

    // `*` never goes with credentials; without auth, no credentials.
    for b in [
        builder()
            .authorizer(authorizer())
            .cors_origin(Some("*".into())),
        builder().cors_origin(Some(ORIGIN.into())),
    ] {
        let srv = start(b);
        let r = request(
            srv.addr(),
            "OPTIONS",
            "/publish",
            &[("Origin", ORIGIN)],
            b"",
        );
        assert!(r.header("Access-Control-Allow-Origin").is_some());
        assert_eq!(r.header("Access-Control-Allow-Credentials"), None);
    }
}
