//! A flood of publishes to distinct new topics: the topic count stops at
//! `--max-topics`, the rest get `429`, and the server's memory stays bounded.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use common::*;

#[test]
fn a_flood_of_new_topics_is_capped() {
    let bin = Bin::start(&[
        "--addr",
        "127.0.0.1:0",
        "--no-demo",
        "--max-topics",
        "500",
        "--history",
        "4",
    ]);
    let before = bin.rss_kib();
    // One keep-alive connection, 3,000 publishes to distinct topics, each
    // with 1 KiB of data.
    let s = TcpStream::connect(bin.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let data = "d".repeat(1024);
    let (mut ok, mut limited) = (0, 0);
    for i in 0..3000 {
        let body = format!(r#"{{"topic":"flood-{i}","data":"{data}"}}"#);
        // One write per request: several small ones would wait on Nagle.
        let req = format!(
            "POST /publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        w.write_all(req.as_bytes()).unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        std::io::Read::read_exact(&mut reader, &mut body).unwrap();
        match &status[9..12] {
            "200" => ok += 1,
            "429" => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (500, 2500));
    let after = bin.rss_kib();
    // 500 topics x 4 events x ~1 KiB is about 2 MiB; allow generous slack,
    // but 3,000 topics' worth (or unbounded growth) would not fit.
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    let m = get(bin.addr, "/metrics");
    assert!(m.body.contains("tinysse_topics 500"), "{}", m.body);
}
