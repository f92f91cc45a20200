//! Streams whose authorization ends: a stream opened with a token ends at
//! the token's expiry with a complete response (the chunked terminator),
//! so a browser reconnects with the token it holds then; the same token is
//! refused (`401`). A stream that needed no token, or whose token has no
//! `exp`, goes on. A custom check's `Grant::until` ends custom routes too.
//!
//! The library's `Authorizer::with_leeway(0)` keeps these tests short: the
//! binary's 30 s leeway only moves the same end later.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tinysse::{AuthError, AuthRequest, Authorizer, Event, EventStream, Grant, Pattern};

const KEY: &[u8] = b"auth_expiry test key, 32 bytes or more";

fn sign(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(KEY).unwrap(),
    )
    .unwrap()
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// A token for `topics` that expires 2 s from now (rounded up to the next
/// whole second, as `exp` is in seconds), and that instant.
fn expiring_token(topics: &[&str]) -> (String, SystemTime) {
    let exp = unix_now().as_secs() + 2;
    let t = sign(&json!({"exp": exp, "tinysse": {"subscribe": topics}}));
    (t, UNIX_EPOCH + Duration::from_secs(exp))
}

fn server() -> Running {
    let auth = Authorizer::from_secret(KEY)
        .unwrap()
        .with_leeway(Duration::ZERO)
        .with_open_topics(vec![Pattern::parse("news").unwrap()]);
    start(builder().authorizer(auth))
}

/// Reads the stream's events until its response ends cleanly; the
/// messages' data. An error (a cut connection, a chunk left open) fails.
fn until_end(s: &mut EventStream) -> Vec<String> {
    let mut got = Vec::new();
    // Bounded by the read timeout (common::TIMEOUT) and this count.
    for _ in 0..1000 {
        match s.next_message() {
            Ok(Some(m)) => got.push(m.data),
            Ok(None) => return got,
            Err(e) => panic!("the stream did not end cleanly: {e}"),
        }
    }
    panic!("the stream never ended");
}

#[test]
fn a_stream_ends_cleanly_when_its_token_expires() {
    let srv = server();
    let a = srv.addr();
    let hub = srv.handle().hub().clone();
    let (token, exp) = expiring_token(&["user/42/*"]);
    let bearer = format!("Bearer {token}");
    let mut s = sse(
        a,
        "/events?topic=user/42/inbox",
        &[("Authorization", &bearer)],
    );
    assert_eq!(s.status(), 200);
    // Alongside: the same token on an open topic (not looked at), and a
    // token without exp. Neither ends.
    let cookie = format!("tinysse_token={token}");
    let mut open = sse(a, "/events?topic=news", &[("Cookie", &cookie)]);
    assert_eq!(open.status(), 200);
    let forever = format!(
        "Bearer {}",
        sign(&json!({"tinysse": {"subscribe": ["user/42/*"]}}))
    );
    let mut lasting = sse(
        a,
        "/events?topic=user/42/inbox",
        &[("Authorization", &forever)],
    );
    assert_eq!(lasting.status(), 200);

    hub.publish("user/42/inbox", &Event::data("before"))
        .unwrap();
    assert_eq!(s.next_message().unwrap().unwrap().data, "before");
    assert_eq!(lasting.next_message().unwrap().unwrap().data, "before");
    let got = until_end(&mut s);
    let ended = SystemTime::now();
    assert!(got.is_empty(), "{got:?}");
    assert!(
        ended >= exp,
        "ended {:?} before the token's exp",
        exp.duration_since(ended).unwrap()
    );
    let late = ended.duration_since(exp).unwrap();
    assert!(
        late < Duration::from_millis(1500),
        "ended {late:?} after exp"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        srv.handle().metrics().streams_active() == 2
    }));

    // The browser's reconnect with the same token: refused.
    let again = EventStream::connect(
        a,
        "/events?topic=user/42/inbox",
        &[("Authorization", &bearer)],
    )
    .unwrap();
    assert_eq!(again.status(), 401);
    assert_eq!(again.body_text().unwrap().trim_end(), "token expired");

    // The others are still live.
    hub.publish("user/42/inbox", &Event::data("after")).unwrap();
    hub.publish("news", &Event::data("news after")).unwrap();
    assert_eq!(lasting.next_message().unwrap().unwrap().data, "after");
    assert_eq!(open.next_message().unwrap().unwrap().data, "news after");
}

#[test]
fn the_end_is_the_chunked_terminator_on_the_wire() {
    let srv = server();
    let a = srv.addr();
    let (token, _) = expiring_token(&["t"]);
    let mut sock = TcpStream::connect(a).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        sock,
        "GET /events?topic=t&access_token={token} HTTP/1.1\r\nHost: {a}\r\n\r\n"
    )
    .unwrap();
    let started = Instant::now();
    let mut bytes = Vec::new();
    sock.read_to_end(&mut bytes)
        .expect("the server closes after the end");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Transfer-Encoding: chunked\r\n"), "{text}");
    assert!(text.ends_with("\r\n0\r\n\r\n"), "no terminator: {text:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_custom_checks_grant_ends_events_and_custom_routes() {
    let until = Arc::new(Mutex::new(SystemTime::now()));
    let u = until.clone();
    let check = move |_rq: &AuthRequest<'_>, _topics: &[&str]| -> Result<Grant, AuthError> {
        Ok(Grant::until(*u.lock().unwrap()))
    };
    let producer_stopped = Arc::new(AtomicBool::new(false));
    let stopped = producer_stopped.clone();
    let srv = start(
        builder()
            .authorize(check)
            .stream_route("/ticks", move |rq, tx| {
                assert_eq!(rq.path(), "/ticks");
                // Sends until the stream is gone; bounded at 30 s of ticks.
                for i in 0..300 {
                    if tx.send(Event::data(i.to_string())).is_err() {
                        stopped.store(true, Ordering::SeqCst);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }),
    );
    let a = srv.addr();
    let end = SystemTime::now() + Duration::from_millis(1500);
    *until.lock().unwrap() = end;
    let mut ticks = sse(a, "/ticks", &[]);
    let mut events = sse(a, "/events?topic=x", &[]);
    assert_eq!((ticks.status(), events.status()), (200, 200));
    let got = until_end(&mut ticks);
    assert!(SystemTime::now() >= end);
    assert!(got.len() >= 3 && got[0] == "0", "{got:?}");
    assert!(until_end(&mut events).is_empty());
    assert!(
        wait_until(Duration::from_secs(5), || producer_stopped
            .load(Ordering::SeqCst)),
        "the route's producer was not told the stream ended"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        srv.handle().metrics().streams_active() == 0
    }));
    // A grant already over: the head, then the end at once.
    *until.lock().unwrap() = SystemTime::now() - Duration::from_secs(1);
    let mut s = sse(a, "/events?topic=x", &[]);
    assert_eq!(s.status(), 200);
    assert!(until_end(&mut s).is_empty());
}
