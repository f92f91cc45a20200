//! A blocking SSE parser over any [`BufRead`], following the WHATWG
//! event-stream parsing rules.

use std::fmt;
use std::io::{self, BufRead};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A dispatched event, as an `EventSource` would deliver it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The event type; `"message"` when the stream named none.
    pub event: String,
    /// The data lines joined with LF.
    pub data: String,
    /// The last event id buffer at dispatch (it carries over from earlier events).
    pub last_event_id: String,
    /// The `id:` field of this event's own block, if it had one.
    pub id: Option<String>,
}

/// What the parser saw: an event, a comment line, or a `retry:` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A dispatched event.
    Event(Message),
    /// A comment line (`: text`), without the colon and one leading space.
    Comment(String),
    /// A valid `retry:` field (all ASCII digits), in milliseconds.
    Retry(u64),
}

/// Reads events from a byte stream.
///
/// ```
/// use tinysse::SseReader;
///
/// let mut r = SseReader::new(&b"data: a\r\ndata: b\r\n\r\n: hi\n"[..]);
/// let m = r.next_message()?.unwrap();
/// assert_eq!(m.data, "a\nb");
/// assert_eq!(r.next_message()?, None); // the comment is skipped, then EOF
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct SseReader<R> {
    inner: R,
    max_line: usize,
    line: Vec<u8>,
    at_start: bool,
    skip_lf: bool,
    data: String,
    has_data: bool,
    event: String,
    last_event_id: String,
    block_id: Option<String>,
}

/// Shows the parser's state, not the input (which need not be `Debug`).
impl<R> fmt::Debug for SseReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseReader")
            .field("max_line", &self.max_line)
            .field("last_event_id", &self.last_event_id)
            .field("pending_event", &self.event)
            .field("pending_data", &self.data)
            .finish_non_exhaustive()
    }
}

impl<R: BufRead> SseReader<R> {
    /// A reader with a 16 MiB limit on one line.
    ///
    /// ```
    /// let file = std::io::Cursor::new("data: saved\n\n");
    /// let mut r = tinysse::SseReader::new(std::io::BufReader::new(file));
    /// assert_eq!(r.next_message()?.unwrap().data, "saved");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(inner: R) -> SseReader<R> {
        SseReader {
            inner,
            max_line: 16 << 20,
            line: Vec::new(),
            at_start: true,
            skip_lf: false,
            data: String::new(),
            has_data: false,
            event: String::new(),
            last_event_id: String::new(),
            block_id: None,
        }
    }

    /// Sets the longest line accepted; a longer one is an `InvalidData` error,
    /// so a hostile server cannot make the client buffer without bound.
    ///
    /// ```
    /// let mut r = tinysse::SseReader::new(&b"data: far too long\n\n"[..]).max_line(8);
    /// assert_eq!(r.next_message().unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    /// ```
    pub fn max_line(mut self, bytes: usize) -> SseReader<R> {
        self.max_line = bytes;
        self
    }

    /// The underlying reader.
    ///
    /// ```
    /// let mut r = tinysse::SseReader::new(&b"data: a\n\nrest"[..]);
    /// r.next_message()?;
    /// assert_eq!(*r.get_mut(), b"rest"); // what is left unread
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The last event id buffer (what a reconnect sends as `Last-Event-ID`):
    /// it carries over events without an `id:` of their own.
    ///
    /// ```
    /// let mut r = tinysse::SseReader::new(&b"id: 5\ndata: a\n\ndata: b\n\n"[..]);
    /// r.next_message()?;
    /// r.next_message()?;
    /// assert_eq!(r.last_event_id(), "5");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The next event, skipping comments and `retry:`; `None` at the end of
    /// the stream (an unterminated event there is discarded).
    ///
    /// ```
    /// let mut r = tinysse::SseReader::new(&b"retry: 10\n\nevent: note\ndata: a\n\ndata: cut"[..]);
    /// let m = r.next_message()?.unwrap();
    /// assert_eq!((m.event.as_str(), m.data.as_str()), ("note", "a"));
    /// assert_eq!(r.next_message()?, None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn next_message(&mut self) -> io::Result<Option<Message>> {
        loop {
            match self.next_item()? {
                Some(Item::Event(m)) => return Ok(Some(m)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    /// The next event, comment or retry; `None` at the end of the stream.
    ///
    /// ```
    /// use tinysse::{Item, SseReader};
    ///
    /// let mut r = SseReader::new(&b": keep-alive\n\nretry: 2000\n\n"[..]);
    /// assert_eq!(r.next_item()?, Some(Item::Comment("keep-alive".into())));
    /// assert_eq!(r.next_item()?, Some(Item::Retry(2000)));
    /// assert_eq!(r.next_item()?, None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn next_item(&mut self) -> io::Result<Option<Item>> {
        loop {
            if !self.read_line()? {
                return Ok(None);
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            if let Some(item) = self.process(&line) {
                return Ok(Some(item));
            }
        }
    }

    fn process(&mut self, line: &str) -> Option<Item> {
        if line.is_empty() {
            return self.dispatch();
        }
        if let Some(comment) = line.strip_prefix(':') {
            return Some(Item::Comment(
                comment.strip_prefix(' ').unwrap_or(comment).to_string(),
            ));
        }
        let (name, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match name {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => {
                self.last_event_id = value.to_string();
                self.block_id = Some(value.to_string());
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // Too many digits to fit is as good as "wait forever".
                return Some(Item::Retry(value.parse().unwrap_or(u64::MAX)));
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<Item> {
        let event = std::mem::take(&mut self.event);
        let block_id = self.block_id.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(Item::Event(Message {
            event: if event.is_empty() {
                "message".to_string()
            } else {
                event
            },
            data: std::mem::take(&mut self.data),
            last_event_id: self.last_event_id.clone(),
            id: block_id,
        }))
    }

    /// Reads one line ended by CR, LF or CRLF into `self.line`; false at EOF.
    /// A CR is taken as the end at once (the LF that may follow is skipped
    /// later), so a live stream is never held up waiting for the next byte.
    fn read_line(&mut self) -> io::Result<bool> {
        self.line.clear();
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(false);
            }
            let mut consumed = 0;
            if self.skip_lf {
                self.skip_lf = false;
                if buf[0] == b'\n' {
                    consumed = 1;
                }
            }
            let rest = &buf[consumed..];
            match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
                Some(i) => {
                    self.line.extend_from_slice(&rest[..i]);
                    self.skip_lf = rest[i] == b'\r';
                    self.inner.consume(consumed + i + 1);
                    if self.line.len() > self.max_line {
                        return Err(too_long());
                    }
                    // The BOM holds no line break, so it is always at the
                    // head of the first line.
                    if std::mem::take(&mut self.at_start) && self.line.starts_with(BOM) {
                        self.line.drain(..BOM.len());
                    }
                    return Ok(true);
                }
                None => {
                    self.line.extend_from_slice(rest);
                    let n = buf.len();
                    self.inner.consume(n);
                }
            }
            if self.line.len() > self.max_line {
                return Err(too_long());
            }
        }
    }
}

fn too_long() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "event-stream line longer than the reader's limit",
    )
}

impl<R: BufRead> Iterator for SseReader<R> {
    type Item = io::Result<Message>;

    fn next(&mut self) -> Option<io::Result<Message>> {
        self.next_message().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Vec<Item> {
        let mut r = SseReader::new(input);
        let mut out = Vec::new();
        while let Some(i) = r.next_item().unwrap() {
            out.push(i);
        }
        out
    }

    fn msg(event: &str, data: &str, last: &str, id: Option<&str>) -> Item {
        Item::Event(Message {
            event: event.into(),
            data: data.into(),
            last_event_id: last.into(),
            id: id.map(Into::into),
        })
    }

    #[test]
    fn mixed_line_endings_and_bom() {
        let items = all(b"\xEF\xBB\xBFdata:a\rdata: b\r\n\ndata:c\n\r");
        assert_eq!(
            items,
            vec![
                msg("message", "a\nb", "", None),
                msg("message", "c", "", None)
            ]
        );
    }

    #[test]
    fn bom_only_at_start_and_split_bom() {
        struct OneByte<'a>(&'a [u8]);
        impl io::Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let input = b"\xEF\xBB\xBFdata: x\n\n";
        let mut r = SseReader::new(io::BufReader::with_capacity(1, OneByte(input)));
        assert_eq!(r.next_message().unwrap().unwrap().data, "x");
        // A BOM later is part of the field name, so the line is ignored.
        assert_eq!(all(b"data: x\n\n\xEF\xBB\xBFdata: y\n\n").len(), 1);
    }

    #[test]
    fn fields_comments_ids_and_retry() {
        let items =
            all(b": hello\nevent: up\nid: 5\ndata\nretry: 12\nretry: 1x\nid: a\0b\n\ndata: z\n\n");
        assert_eq!(
            items,
            vec![
                Item::Comment("hello".into()),
                Item::Retry(12),
                msg("up", "", "5", Some("5")),
                msg("message", "z", "5", None),
            ]
        );
    }

    #[test]
    fn unterminated_event_at_eof_is_discarded() {
        assert_eq!(
            all(b"data: x\n\ndata: y\n"),
            vec![msg("message", "x", "", None)]
        );
    }

    #[test]
    fn event_without_data_is_not_dispatched_but_id_sticks() {
        assert_eq!(
            all(b"id: 9\n\ndata: q\n\n"),
            vec![msg("message", "q", "9", None)]
        );
    }

    #[test]
    fn long_lines_are_refused() {
        let mut r = SseReader::new(&b"data: 0123456789\n\n"[..]).max_line(4);
        assert_eq!(
            r.next_item().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
