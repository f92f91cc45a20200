//! The `/firehose` producer: a throughput test stream of `count` events of
//! exactly `size` data bytes, as fast as the client reads.

use crossbeam_channel::Sender;

use crate::event::Frame;

/// Bytes of events the firehose gathers into one frame while the writer is
/// still busy with the previous ones.
const FIREHOSE_BATCH: usize = 32 * 1024;

/// `count` events of exactly `size` data bytes, ids 1..=count; encoded here,
/// on the producer's thread, so the writer only copies bytes.
///
/// While the writer has frames waiting, events are gathered into one frame
/// (one allocation and one channel hand-off for many events); when it is
/// waiting for us, each event goes at once, so none is held back.
pub(crate) fn firehose(count: u64, size: usize, tx: Sender<Frame>) {
    // The data is only ever `x`s, so it needs none of Event's line splitting.
    let data = "x".repeat(size);
    let mut buf = Vec::with_capacity(FIREHOSE_BATCH + size + 32);
    let mut id = Digits([0; 20]);
    for i in 1..=count {
        buf.extend_from_slice(b"id: ");
        buf.extend_from_slice(id.format(i));
        buf.extend_from_slice(b"\ndata: ");
        buf.extend_from_slice(data.as_bytes());
        buf.extend_from_slice(b"\n\n");
        if i == count || buf.len() >= FIREHOSE_BATCH || tx.is_empty() {
            if tx.send(Frame::new(i, buf.as_slice())).is_err() {
                return;
            }
            buf.clear();
        }
    }
}

/// Decimal formatting without an allocation per number.
struct Digits([u8; 20]);

impl Digits {
    fn format(&mut self, mut n: u64) -> &[u8] {
        let mut i = self.0.len();
        loop {
            i -= 1;
            self.0[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return &self.0[i..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::SseReader;

    #[test]
    fn firehose_frames_hold_every_event_in_order() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let t = std::thread::spawn(move || firehose(1000, 3, tx));
        let mut bytes = Vec::new();
        for f in rx.iter() {
            bytes.extend_from_slice(f.bytes());
        }
        t.join().unwrap();
        let mut r = SseReader::new(&bytes[..]);
        for i in 1..=1000u64 {
            let m = r.next_message().unwrap().unwrap();
            assert_eq!(m.id.as_deref(), Some(i.to_string().as_str()));
            assert_eq!(m.data, "xxx");
        }
        assert_eq!(r.next_message().unwrap(), None);
    }
}
