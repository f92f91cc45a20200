//! The library surface as an embedding program meets it: defaults, errors
//! for unusable settings, and the types it shares across threads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tinysse::{Event, EventStream, Server, StartError, StreamRequest};

fn get_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("a status line");
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

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
    assert_eq!(get_status(server.addr(), "/async"), 404);
    assert_eq!(get_status(server.addr(), "/"), 404);
    assert_eq!(get_status(server.addr(), "/healthz"), 200);
    // Nothing publishes on its own.
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
fn a_route_handler_resumes_from_last_event_id() {
    let server = Server::builder()
        .addr("127.0.0.1:0")
        .retry(None)
        .stream_route("/count", |rq, tx| {
            let after: u64 = rq.last_event_id().and_then(|v| v.parse().ok()).unwrap_or(0);
            for n in after + 1..=after + 2 {
                let ev = Event::data(n.to_string()).with_id(n.to_string()).unwrap();
                if tx.send(ev).is_err() {
                    return;
                }
            }
        })
        .start()
        .unwrap();
    let read = |headers: &[(&str, &str)], target: &str| -> Vec<String> {
        let s = EventStream::connect(server.addr(), target, headers).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.map(|m| m.unwrap().data).collect()
    };
    assert_eq!(read(&[], "/count"), ["1", "2"]);
    assert_eq!(read(&[("Last-Event-ID", "7")], "/count"), ["8", "9"]);
    assert_eq!(read(&[], "/count?lastEventId=3"), ["4", "5"]);
    // The header wins over the query parameter, as on /events.
    assert_eq!(
        read(&[("Last-Event-ID", "10")], "/count?lastEventId=3"),
        ["11", "12"]
    );
    assert!(server.join());
}

#[test]
fn a_panicking_handler_ends_its_stream_cleanly() {
    let server = Server::builder()
        .addr("127.0.0.1:0")
        .retry(None)
        .stream_route("/boom", |_rq, tx| {
            let _ = tx.send(Event::data("before"));
            panic!("handler bug");
        })
        .start()
        .unwrap();
    let s = EventStream::connect(server.addr(), "/boom", &[]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let got: Vec<String> = s.map(|m| m.unwrap().data).collect();
    assert_eq!(got, ["before"]);
    // The server goes on serving.
    assert_eq!(get_status(server.addr(), "/healthz"), 200);
    assert!(server.join());
}

#[test]
fn a_stream_without_retry_gets_its_head_at_once() {
    let server = Server::builder()
        .addr("127.0.0.1:0")
        .retry(None)
        .start()
        .unwrap();
    let started = std::time::Instant::now();
    let s = EventStream::connect(server.addr(), "/events?topic=t", &[]).unwrap();
    assert_eq!(s.status(), 200);
    // Not held back until the first heartbeat (15 s).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    s.close();
    server.join();
}

#[test]
fn an_event_published_before_shutdown_is_written_before_the_end() {
    // The writer used to pick the shutdown arm over queued frames at random
    // (about one run in twenty): repeat enough to catch that.
    for round in 0..100 {
        let server = Server::builder().addr("127.0.0.1:0").start().unwrap();
        let mut s = EventStream::connect(server.addr(), "/events?topic=t", &[]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        server.hub().publish("t", &Event::data("last")).unwrap();
        assert!(server.join());
        let got = s.next_message().unwrap().map(|m| m.data);
        assert_eq!(got.as_deref(), Some("last"), "round {round}");
        assert_eq!(s.next_message().unwrap(), None);
    }
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
