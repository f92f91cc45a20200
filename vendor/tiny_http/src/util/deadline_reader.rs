//! The connection's reader as a request body sees it: buffered, and with one
//! deadline for the whole body (PATCHES.md, 15).

use std::io::{BufRead, BufReader, Error, ErrorKind, Read, Result};
use std::time::Instant;

use crate::util::{RefinedTcpStream, SequentialReader};

/// Reads the connection after a request head. With a deadline, each socket
/// read waits only for the time left (`SO_RCVTIMEO` set to it), and once it
/// has passed every read fails with `TimedOut`: a body trickled in a byte at
/// a time is cut off on time, not after one timeout per byte.
pub struct DeadlineReader {
    inner: SequentialReader<BufReader<RefinedTcpStream>>,
    deadline: Option<Instant>,
}

impl DeadlineReader {
    pub fn new(
        inner: SequentialReader<BufReader<RefinedTcpStream>>,
        deadline: Option<Instant>,
    ) -> Self {
        DeadlineReader { inner, deadline }
    }
}

fn gone() -> Error {
    Error::new(ErrorKind::NotConnected, "the connection was handed over")
}

fn timed_out() -> Error {
    Error::new(ErrorKind::TimedOut, "the request body did not come in time")
}

impl BufRead for DeadlineReader {
    fn fill_buf(&mut self) -> Result<&[u8]> {
        let deadline = self.deadline;
        let reader = self.inner.inner_mut().ok_or_else(gone)?;
        if reader.buffer().is_empty() {
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(timed_out());
                    }
                    Some(left)
                }
                None => None,
            };
            reader.get_ref().set_read_timeout(wait)?;
        }
        reader.fill_buf().map_err(|e| match e.kind() {
            // What SO_RCVTIMEO running out looks like.
            ErrorKind::WouldBlock | ErrorKind::TimedOut => timed_out(),
            _ => e,
        })
    }

    fn consume(&mut self, amt: usize) {
        if let Some(reader) = self.inner.inner_mut() {
            reader.consume(amt);
        }
    }
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(buf.len());
            buf[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}
