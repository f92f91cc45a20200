//! A strict decoder for `Transfer-Encoding: chunked` request bodies
//! (RFC 9112, 7.1), replacing `chunked_transfer::Decoder` (PATCHES.md, 14).
//!
//! The upstream decoder accepted sign-prefixed sizes (`+18`), so a body could
//! be framed differently here than by a proxy in front. Here a chunk size is
//! hex digits only and fits in a `u64`, every line ends in CRLF, the size
//! line (extensions included) and the trailers are bounded, and the first
//! error sticks: the body is never resynchronised and read on.

use std::convert::TryFrom;
use std::io::{BufRead, Error, ErrorKind, Read, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Longest chunk-size line, extensions included, CRLF excluded.
const MAX_SIZE_LINE: usize = 1024;
/// Most bytes of trailer fields after the last chunk, CRLFs included.
const MAX_TRAILERS: usize = 8 * 1024;

enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes to go.
    Data(u64),
    /// After a chunk's data: expecting its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty line.
    Trailers,
    /// The body is complete.
    Done,
    /// A framing error was seen; every read fails from now on.
    Failed(ErrorKind, &'static str),
}

/// Reads a chunked body from `R`, which is left right after the body (the
/// decoder never reads past the final CRLF).
pub struct ChunkedDecoder<R> {
    inner: R,
    state: State,
    /// Set once the whole body, trailers included, has been read.
    done: Option<Arc<AtomicBool>>,
    trailer_bytes: usize,
}

impl<R: BufRead> ChunkedDecoder<R> {
    /// A decoder that sets `done` once the body was read in full.
    pub fn new(inner: R, done: Option<Arc<AtomicBool>>) -> Self {
        ChunkedDecoder {
            inner,
            state: State::Size,
            done,
            trailer_bytes: 0,
        }
    }

    fn fail(&mut self, kind: ErrorKind, why: &'static str) -> Error {
        self.state = State::Failed(kind, why);
        Error::new(kind, why)
    }

    /// One line, without its CRLF, of at most `max` bytes. A bare LF or CR,
    /// a longer line, and the end of input are errors.
    fn line(&mut self, max: usize) -> std::result::Result<Vec<u8>, (ErrorKind, &'static str)> {
        let mut line = Vec::new();
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err((e.kind(), "reading the chunked body failed")),
            };
            if buf.is_empty() {
                return Err((ErrorKind::UnexpectedEof, "chunked body cut short"));
            }
            let b = buf[0];
            self.inner.consume(1);
            match b {
                b'\r' => {
                    let next = match self.inner.fill_buf() {
                        Ok(b) => b.first().copied(),
                        Err(e) => return Err((e.kind(), "reading the chunked body failed")),
                    };
                    return match next {
                        Some(b'\n') => {
                            self.inner.consume(1);
                            Ok(line)
                        }
                        None => Err((ErrorKind::UnexpectedEof, "chunked body cut short")),
                        Some(_) => Err((ErrorKind::InvalidData, "bare CR in a chunked body")),
                    };
                }
                b'\n' => return Err((ErrorKind::InvalidData, "bare LF in a chunked body")),
                _ => {
                    if line.len() >= max {
                        return Err((ErrorKind::InvalidData, "chunked body line too long"));
                    }
                    line.push(b);
                }
            }
        }
    }

    /// Moves on until there is chunk data to read (`Data`) or the body is
    /// over (`Done`).
    fn advance(&mut self) -> Result<()> {
        loop {
            match self.state {
                State::Data(n) if n > 0 => return Ok(()),
                State::Done => return Ok(()),
                State::Failed(kind, why) => return Err(Error::new(kind, why)),
                State::Data(_) => self.state = State::DataEnd,
                State::DataEnd => match self.line(0) {
                    Ok(_) => self.state = State::Size,
                    Err((kind, why)) => {
                        let why = if kind == ErrorKind::InvalidData {
                            "chunk data longer than its size"
                        } else {
                            why
                        };
                        return Err(self.fail(kind, why));
                    }
                },
                State::Size => {
                    let line = match self.line(MAX_SIZE_LINE) {
                        Ok(l) => l,
                        Err((kind, why)) => return Err(self.fail(kind, why)),
                    };
                    match parse_size_line(&line) {
                        Some(0) => self.state = State::Trailers,
                        Some(n) => self.state = State::Data(n),
                        None => return Err(self.fail(ErrorKind::InvalidData, "bad chunk size")),
                    }
                }
                State::Trailers => {
                    let left = MAX_TRAILERS.saturating_sub(self.trailer_bytes);
                    let line = match self.line(left) {
                        Ok(l) => l,
                        Err((ErrorKind::InvalidData, _)) if left > 0 => {
                            return Err(self.fail(ErrorKind::InvalidData, "bad chunked trailers"))
                        }
                        Err((ErrorKind::InvalidData, _)) => {
                            return Err(self.fail(ErrorKind::InvalidData, "trailers too large"))
                        }
                        Err((kind, why)) => return Err(self.fail(kind, why)),
                    };
                    self.trailer_bytes += line.len() + 2;
                    if line.is_empty() {
                        self.state = State::Done;
                        if let Some(done) = &self.done {
                            done.store(true, Ordering::Release);
                        }
                    } else if line[0] == b' ' || line[0] == b'\t' || !line.contains(&b':') {
                        // Trailers are dropped, but must still look like
                        // fields: anything else means the framing is off.
                        return Err(self.fail(ErrorKind::InvalidData, "bad chunked trailers"));
                    }
                }
            }
        }
    }
}

/// `1*HEXDIG [ *(SP / HTAB) ";" chunk-ext ]`: the size, or `None`. The
/// extensions are ignored but may not hold control characters.
fn parse_size_line(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16)? as u64;
        size = size.checked_mul(16)?.checked_add(d)?;
    }
    let rest = &line[digits..];
    let ext = rest.iter().position(|&b| b != b' ' && b != b'\t');
    match ext {
        None if rest.is_empty() => Some(size),
        // Whitespace after the size is only allowed before an extension.
        None => None,
        Some(i) if rest[i] == b';' => {
            let ok = rest[i..]
                .iter()
                .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
            ok.then_some(size)
        }
        Some(_) => None,
    }
}

impl<R: BufRead> Read for ChunkedDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.advance()?;
        let left = match self.state {
            State::Data(n) => n,
            _ => return Ok(0),
        };
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(0) => return Err(self.fail(ErrorKind::UnexpectedEof, "chunked body cut short")),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                // A timeout or a reset: the framing is lost, no retry.
                self.state = State::Failed(e.kind(), "reading the chunked body failed");
                return Err(e);
            }
        };
        self.state = State::Data(left - n as u64);
        Ok(n)
    }
}

/// Decodes the chunked body at the start of `input`: the body or the
/// error, and how many bytes of `input` were read. For the fuzz target.
#[doc(hidden)]
pub fn decode_chunked(input: &[u8]) -> (Result<Vec<u8>>, usize) {
    let mut rest = input;
    let mut body = Vec::new();
    let r = ChunkedDecoder::new(&mut rest, None).read_to_end(&mut body);
    (r.map(|_| body), input.len() - rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> (Result<Vec<u8>>, usize, bool) {
        let done = Arc::new(AtomicBool::new(false));
        let mut cursor = input;
        let mut out = Vec::new();
        let r = ChunkedDecoder::new(&mut cursor, Some(done.clone())).read_to_end(&mut out);
        let left = cursor.len();
        (
            r.map(|_| out),
            input.len() - left,
            done.load(Ordering::Acquire),
        )
    }

    #[test]
    fn decodes_and_stops_at_the_end() {
        let input = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nX-T: 1\r\n\r\nGET /";
        let (r, used, done) = decode(input);
        assert_eq!(r.unwrap(), b"hello!");
        // The next request is left alone.
        assert_eq!(&input[used..], b"GET /");
        assert!(done);
        let (r, _, done) = decode(b"A\r\n0123456789\r\n0\r\n\r\n");
        assert_eq!(r.unwrap(), b"0123456789");
        assert!(done);
    }

    #[test]
    fn refuses_bad_framing() {
        for bad in [
            &b"+5\r\nhello\r\n0\r\n\r\n"[..],
            b"-5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello!\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"5;\x01\r\nhello\r\n0\r\n\r\n",
            b"0\r\n folded: x\r\n\r\n",
            b"0\r\nnocolon\r\n\r\n",
            b"5\r\nhel",
            b"",
        ] {
            let (r, _, done) = decode(bad);
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(bad));
            assert!(!done);
        }
    }

    #[test]
    fn bounds_lines_and_trailers() {
        let mut long = b"1;".to_vec();
        long.resize(MAX_SIZE_LINE + 1, b'a');
        long.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert!(decode(&long).0.is_err());
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..1000 {
            trailers.extend_from_slice(b"X-Pad: 0123456789\r\n");
        }
        trailers.extend_from_slice(b"\r\n");
        assert!(decode(&trailers).0.is_err());
    }

    #[test]
    fn errors_stick() {
        let mut input = &b"+5\r\n5\r\nhello\r\n0\r\n\r\n"[..];
        let mut d = ChunkedDecoder::new(&mut input, None);
        let mut buf = [0u8; 16];
        assert!(d.read(&mut buf).is_err());
        assert!(d.read(&mut buf).is_err());
    }
}
