//! CORS: with `--cors-origin`, SSE and publish answers carry the header and
//! the preflight works; without it, no CORS header at all.

mod common;

use common::*;

const ORIGIN: &str = "https://app.example";

#[test]
fn cors_headers_and_preflight() {
    let srv = start(builder().cors_origin(Some(ORIGIN.into())).stream_route(
        "/custom",
        |_rq, tx| {
            let _ = tx.send(tinysse::Event::data("x"));
        },
    ));
    let a = srv.addr();
    let s = sse(a, "/events?topic=c", &[("Origin", ORIGIN)]);
    assert_eq!(s.header("Access-Control-Allow-Origin"), Some(ORIGIN));
    // A custom stream route's answer too (the binary's /async is one).
    let s = sse(a, "/custom", &[]);
    assert_eq!(s.header("Access-Control-Allow-Origin"), Some(ORIGIN));

    let r = publish_json(a, r#"{"topic":"c","data":1}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(ORIGIN));
    // Errors carry it too, so the page can read the reason.
    let r = publish_json(a, "nope");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(ORIGIN));

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
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(ORIGIN));
    assert!(
        r.header("Access-Control-Allow-Methods")
            .unwrap()
            .contains("POST")
    );
    let allowed = r
        .header("Access-Control-Allow-Headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in ["authorization", "content-type", "last-event-id"] {
        assert!(allowed.contains(h), "{allowed}");
    }
    srv.stop();
}

#[test]
fn no_cors_headers_without_the_flag() {
    let srv = start(builder());
    let a = srv.addr();
    let s = sse(a, "/events?topic=c", &[("Origin", ORIGIN)]);
    assert!(
        s.headers()
            .iter()
            .all(|(k, _)| !k.to_ascii_lowercase().starts_with("access-control"))
    );
    let r = publish_json(a, r#"{"topic":"c","data":1}"#);
    assert!(
        r.headers
            .iter()
            .all(|(k, _)| !k.to_ascii_lowercase().starts_with("access-control"))
    );
    let r = request(a, "OPTIONS", "/publish", &[("Origin", ORIGIN)], b"");
    assert!(
        r.headers
            .iter()
            .all(|(k, _)| !k.to_ascii_lowercase().starts_with("access-control"))
    );
    srv.stop();
}
