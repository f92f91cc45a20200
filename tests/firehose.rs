//! `/firehose`: only with the flag, exact sizes, ids 1..N, and `400` for
//! missing or out-of-range parameters.

mod common;

use common::*;

#[test]
fn firehose_sends_exactly_what_was_asked() {
    let srv = start(builder().firehose(true).retry(None));
    let s = sse(srv.addr(), "/firehose?count=300&size=777", &[]);
    assert_eq!(s.status(), 200);
    assert_eq!(s.header("Content-Type"), Some("text/event-stream"));
    let got: Vec<_> = s.map(|m| m.unwrap()).collect();
    assert_eq!(got.len(), 300);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.id, Some((i + 1).to_string()));
        assert_eq!(m.data.len(), 777);
    }
    srv.stop();
}

#[test]
fn firehose_parameters_are_checked() {
    let srv = start(builder().firehose(true));
    let a = srv.addr();
    for q in [
        "",
        "?count=10",
        "?size=10",
        "?count=0&size=10",
        "?count=10000001&size=10",
        "?count=10&size=0",
        "?count=10&size=65537",
        "?count=ten&size=10",
        "?count=-1&size=10",
    ] {
        let r = get(a, &format!("/firehose{q}"));
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.body.lines().count(), 1, "{q}: {}", r.body);
    }
    assert_eq!(srv.handle().metrics().streams_active(), 0);
    // Both ends of the ranges are fine.
    let s = sse(a, "/firehose?count=1&size=65536", &[]);
    let all: Vec<_> = s.map(|m| m.unwrap()).collect();
    assert_eq!((all.len(), all[0].data.len()), (1, 65536));
    srv.stop();
}

#[test]
fn firehose_is_off_without_the_flag() {
    let srv = start(builder());
    assert_eq!(get(srv.addr(), "/firehose?count=1&size=1").status, 404);
    srv.stop();
}
