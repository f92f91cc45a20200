//! Generated round trip: whatever the encoder writes, the reader gives back,
//! for many random events with awkward line breaks and unicode, in memory and
//! through the real server.

mod common;

use common::*;
use tinysse::{Event, SseReader};

/// A small deterministic generator, so a failure can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn text(&mut self, max: u64, breaks: bool) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", " ", "  ", ":", "data:", "id:", "é", "日本", "🦀", "\u{feff}", "\t", "\u{0}",
            "%", "\\", "\"", "{}", "x y",
        ];
        const BREAKS: &[&str] = &["\n", "\r", "\r\n", "\n\n", "\r\r", "\n\r"];
        let len = self.below(max + 1);
        let mut s = String::new();
        for _ in 0..len {
            if breaks && self.below(4) == 0 {
                s.push_str(BREAKS[self.below(BREAKS.len() as u64) as usize]);
            } else {
                s.push_str(PIECES[self.below(PIECES.len() as u64) as usize]);
            }
        }
        s
    }
}

/// What the reader must give back for `data`: every break becomes LF.
fn normalise(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

fn random_event(rng: &mut Rng) -> Event {
    let mut ev = Event::data(rng.text(12, true));
    if rng.below(2) == 0 {
        ev = ev.with_event(rng.text(4, false)).unwrap();
    }
    if rng.below(2) == 0 {
        let id = rng.text(4, false).replace('\0', "");
        ev = ev.with_id(id).unwrap();
    }
    ev
}

#[test]
fn reader_gives_back_what_the_encoder_wrote() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let events: Vec<Event> = (0..rng.below(20) + 1)
            .map(|_| random_event(&mut rng))
            .collect();
        let mut wire = Vec::new();
        if seed % 3 == 0 {
            wire.extend_from_slice(b"\xEF\xBB\xBF");
        }
        for ev in &events {
            ev.encode_into(&mut wire);
            if rng.below(3) == 0 {
                Event::comment(rng.text(5, true)).encode_into(&mut wire);
            }
        }
        let mut reader = SseReader::new(&wire[..]);
        let mut last_id = String::new();
        for (i, ev) in events.iter().enumerate() {
            let m = reader
                .next_message()
                .unwrap()
                .unwrap_or_else(|| panic!("seed {seed}: event {i} missing"));
            assert_eq!(
                m.data,
                normalise(ev.data_text().unwrap()),
                "seed {seed} event {i}"
            );
            let expected_type = ev.event_type().unwrap_or("message");
            assert_eq!(m.event, expected_type, "seed {seed} event {i}");
            if let Some(id) = ev.id() {
                last_id = id.to_string();
            }
            assert_eq!(m.last_event_id, last_id, "seed {seed} event {i}");
            assert_eq!(m.id.as_deref(), ev.id(), "seed {seed} event {i}");
        }
        assert_eq!(
            reader.next_message().unwrap(),
            None,
            "seed {seed}: extra event"
        );
    }
}

#[test]
fn round_trip_through_the_server() {
    let srv = start(builder());
    let mut s = sse(srv.addr(), "/events?topic=rt", &[]);
    let mut rng = Rng(0xDEAD_BEEF);
    let mut sent = Vec::new();
    for _ in 0..200 {
        let ev = Event::data(rng.text(30, true))
            .with_event(rng.text(3, false))
            .unwrap();
        let id = srv.handle().hub().publish("rt", &ev).unwrap();
        sent.push((id, ev));
    }
    for (id, ev) in sent {
        let m = s.next_message().unwrap().expect("event");
        assert_eq!(m.id, Some(id.to_string()));
        assert_eq!(m.data, normalise(ev.data_text().unwrap()));
        assert_eq!(m.event, ev.event_type().unwrap_or("message"));
    }
    srv.stop();
}
