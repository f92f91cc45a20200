//! The library surface as an embedding program meets it: defaults, errors
//! for unusable settings, the client's refusals, and the types it shares
//! across threads. (What a custom route's handler sees is in routes.rs.)

mod common;

use std::time::Duration;

use common::get;
use tinysse::{EventStream, Server, StartError, StreamRequest};

#[test]
fn shared_types_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<tinysse::ServerHandle>();
    send_sync::<tinysse::Hub>();
    send_sync::<tinysse::Subscription>();
    send_sync::<tinysse::Metrics>();
    send_sync::<StartError>();
    send_sync::<tinysse::PublishError>();
    fn send<T: Send>() {}
    send::<EventStream>();
}

#[test]
fn the_library_builder_serves_no_demo_and_no_files() {
    let server = Server::builder().addr("127.0.0.1:0").start().unwrap();
    assert_eq!(get(server.addr(), "/async").status, 404);
    assert_eq!(get(server.addr(), "/").status, 404);
    assert_eq!(get(server.addr(), "/healthz").status, 200);
    // Nothing publishes on its own: an absence, so the wait is the test's
    // (the binary's demo publishes once a second).
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(server.metrics().events_published(), 0);
    assert!(server.join());
}

#[test]
fn unusable_settings_are_refused_at_start() {
    let refused = |b: tinysse::ServerBuilder, needle: &str| match b.addr("127.0.0.1:0").start() {
        Err(e @ StartError::Invalid(_)) => {
            assert!(e.to_string().contains(needle), "{e}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(s) => {
            s.join();
            panic!("started with {needle}");
        }
    };
    let noop = |_: &StreamRequest, _| {};
    refused(Server::builder().stream_route("ticks", noop), "\"ticks\"");
    refused(Server::builder().stream_route("/t?x=1", noop), "/t?x=1");
    refused(Server::builder().stream_route("/events", noop), "built-in");
    refused(
        Server::builder()
            .firehose(true)
            .stream_route("/firehose", noop),
        "built-in",
    );
    refused(
        Server::builder().cors_origin(Some("https://a\r\nSet-Cookie: x".into())),
        "cors_origin",
    );
    refused(
        Server::builder().publish_token(Some(String::new())),
        "publish_token",
    );
    // /firehose is free when the firehose is off.
    let s = Server::builder()
        .addr("127.0.0.1:0")
        .stream_route("/firehose", noop)
        .start()
        .unwrap();
    s.join();
}

#[test]
fn errors_are_std_errors_with_reasons() {
    let e: Box<dyn std::error::Error> =
        Box::new(Server::builder().addr("127.0.0.1:1:2").start().unwrap_err());
    assert!(
        e.to_string().starts_with("cannot resolve 127.0.0.1:1:2"),
        "{e}"
    );
    assert!(e.source().is_some());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = Server::builder()
        .addr(taken.local_addr().unwrap().to_string())
        .start()
        .unwrap_err();
    assert!(matches!(busy, StartError::Bind(..)), "{busy}");
}

#[test]
fn the_client_refuses_header_injection() {
    let server = Server::builder().addr("127.0.0.1:0").start().unwrap();
    let e = EventStream::connect(server.addr(), "/events?topic=a\r\nX: y", &[]).err();
    assert_eq!(e.map(|e| e.kind()), Some(std::io::ErrorKind::InvalidInput));
    let e = EventStream::connect(
        server.addr(),
        "/events?topic=a",
        &[("Last-Event-ID", "1\n")],
    )
    .err();
    assert_eq!(e.map(|e| e.kind()), Some(std::io::ErrorKind::InvalidInput));
    server.join();
}

#[test]
fn a_builder_debug_line_names_its_settings_but_not_the_token() {
    let b = Server::builder()
        .publish_token(Some("hunter2".into()))
        .queue(17)
        .stream_route("/ticks", |_: &StreamRequest, _| {});
    let line = format!("{b:?}");
    assert!(!line.contains("hunter2"), "{line}");
    assert!(line.contains("publish_token: Some(\"<set>\")"), "{line}");
    assert!(line.contains("queue: 17"), "{line}");
    assert!(line.contains("\"/ticks\""), "{line}");
}

#[cfg(feature = "redis")]
#[test]
fn a_builder_debug_line_hides_the_redis_password() {
    let b = Server::builder().redis(Some("redis://:hunter2@127.0.0.1:6379/".into()));
    let line = format!("{b:?}");
    assert!(!line.contains("hunter2"), "{line}");
    assert!(line.contains("redis: Some(\"<set>\")"), "{line}");
}
