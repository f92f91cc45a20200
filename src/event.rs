//! Events and their encoding to the WHATWG `text/event-stream` format.

use std::fmt;
use std::sync::Arc;

/// One server-sent event, validated when built, so encoding never fails and
/// never produces a frame a client would parse differently.
///
/// ```
/// use tinysse::Event;
///
/// let ev = Event::data("line one\nline two").with_event("note")?.with_id("7")?;
/// assert_eq!(ev.to_bytes(), b"event: note\nid: 7\ndata: line one\ndata: line two\n\n");
/// # Ok::<(), tinysse::EventError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    event: Option<String>,
    id: Option<String>,
    data: Option<String>,
    retry: Option<u64>,
    comment: Option<String>,
}

/// Why an [`Event`] could not be built.
///
/// ```
/// use std::error::Error;
///
/// let err = tinysse::Event::data("x").with_event("a\nb").unwrap_err();
/// assert!(matches!(err, tinysse::EventError::EventHasLineBreak));
/// assert_eq!(err.to_string(), "event type contains CR or LF");
/// assert!(err.source().is_none());
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum EventError {
    /// The event type held CR or LF, which would end the field early.
    EventHasLineBreak,
    /// The id held CR or LF, which would end the field early.
    IdHasLineBreak,
    /// The id held NUL, which makes clients ignore the whole field.
    IdHasNul,
    /// The value could not be serialised as JSON; the error is the source.
    Json(serde_json::Error),
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventError::EventHasLineBreak => f.write_str("event type contains CR or LF"),
            EventError::IdHasLineBreak => f.write_str("event id contains CR or LF"),
            EventError::IdHasNul => f.write_str("event id contains NUL"),
            EventError::Json(e) => write!(f, "data is not serialisable as JSON: {e}"),
        }
    }
}

impl std::error::Error for EventError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EventError::Json(e) => Some(e),
            _ => None,
        }
    }
}

fn has_line_break(s: &str) -> bool {
    s.bytes().any(|b| b == b'\r' || b == b'\n')
}

impl Event {
    /// An event carrying `text` as its data; line breaks (CR, LF, CRLF) split
    /// it into several `data:` lines, which a client joins back with LF.
    ///
    /// ```
    /// assert_eq!(tinysse::Event::data("a\r\nb").to_bytes(), b"data: a\ndata: b\n\n");
    /// ```
    pub fn data(text: impl Into<String>) -> Event {
        Event {
            data: Some(text.into()),
            ..Event::default()
        }
    }

    /// An event whose data is `value` as compact JSON; a value JSON cannot
    /// hold is an [`EventError::Json`], with serde_json's error as its source.
    ///
    /// ```
    /// let ev = tinysse::Event::json(&serde_json::json!({"val": 42}))?;
    /// assert_eq!(ev.to_bytes(), b"data: {\"val\":42}\n\n");
    ///
    /// // JSON object keys are strings: a map keyed by pairs is refused.
    /// let pairs = std::collections::BTreeMap::from([((1, 2), 3)]);
    /// let err = tinysse::Event::json(&pairs).unwrap_err();
    /// assert!(matches!(err, tinysse::EventError::Json(_)));
    /// assert!(std::error::Error::source(&err).is_some());
    /// # Ok::<(), tinysse::EventError>(())
    /// ```
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Event, EventError> {
        serde_json::to_string(value)
            .map(Event::data)
            .map_err(EventError::Json)
    }

    /// A comment frame (`: text`), ignored by clients.
    ///
    /// ```
    /// assert_eq!(tinysse::Event::comment("keep-alive").to_bytes(), b": keep-alive\n\n");
    /// ```
    pub fn comment(text: impl Into<String>) -> Event {
        Event {
            comment: Some(text.into()),
            ..Event::default()
        }
    }

    /// A frame that only sets the client's reconnection delay.
    ///
    /// ```
    /// assert_eq!(tinysse::Event::retry(2000).to_bytes(), b"retry: 2000\n\n");
    /// ```
    pub fn retry(millis: u64) -> Event {
        Event {
            retry: Some(millis),
            ..Event::default()
        }
    }

    /// Sets the event type (`event:`); an empty type means none.
    ///
    /// ```
    /// assert!(tinysse::Event::data("x").with_event("a\nb").is_err());
    /// ```
    pub fn with_event(mut self, event: impl Into<String>) -> Result<Event, EventError> {
        let event = event.into();
        if has_line_break(&event) {
            return Err(EventError::EventHasLineBreak);
        }
        self.event = (!event.is_empty()).then_some(event);
        Ok(self)
    }

    /// Sets the event id (`id:`), which the client echoes as `Last-Event-ID`.
    ///
    /// ```
    /// assert!(tinysse::Event::data("x").with_id("1\u{0}").is_err());
    /// ```
    pub fn with_id(mut self, id: impl Into<String>) -> Result<Event, EventError> {
        let id = id.into();
        if has_line_break(&id) {
            return Err(EventError::IdHasLineBreak);
        }
        if id.contains('\0') {
            return Err(EventError::IdHasNul);
        }
        self.id = Some(id);
        Ok(self)
    }

    /// Sets the reconnection delay sent with this event.
    ///
    /// ```
    /// let ev = tinysse::Event::data("x").with_retry(500);
    /// assert_eq!(ev.to_bytes(), b"retry: 500\ndata: x\n\n");
    /// ```
    pub fn with_retry(mut self, millis: u64) -> Event {
        self.retry = Some(millis);
        self
    }

    /// The event type, if any.
    ///
    /// ```
    /// let ev = tinysse::Event::data("x").with_event("note")?;
    /// assert_eq!(ev.event_type(), Some("note"));
    /// assert_eq!(ev.with_event("")?.event_type(), None);
    /// # Ok::<(), tinysse::EventError>(())
    /// ```
    pub fn event_type(&self) -> Option<&str> {
        self.event.as_deref()
    }

    /// The id, if any.
    ///
    /// ```
    /// let ev = tinysse::Event::data("x").with_id("7")?;
    /// assert_eq!(ev.id(), Some("7"));
    /// # Ok::<(), tinysse::EventError>(())
    /// ```
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The data, if any.
    ///
    /// ```
    /// assert_eq!(tinysse::Event::data("a\nb").data_text(), Some("a\nb"));
    /// assert_eq!(tinysse::Event::comment("hi").data_text(), None);
    /// ```
    pub fn data_text(&self) -> Option<&str> {
        self.data.as_deref()
    }

    /// Appends the encoded frame to `out`, so a writer can batch frames into
    /// one buffer without allocating per frame.
    ///
    /// ```
    /// let mut out = Vec::new();
    /// tinysse::Event::data("1").encode_into(&mut out);
    /// tinysse::Event::data("2").encode_into(&mut out);
    /// assert_eq!(out, b"data: 1\n\ndata: 2\n\n");
    /// ```
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_fields(out, true)
    }

    /// Encodes without the `id:` line, for the hub, which sets its own.
    pub(crate) fn encode_fields(&self, out: &mut Vec<u8>, with_id: bool) {
        if let Some(c) = &self.comment {
            write_lines(out, b":", c);
        }
        if let Some(e) = &self.event {
            field(out, b"event: ", e.as_bytes());
        }
        if let Some(id) = self.id.as_ref().filter(|_| with_id) {
            field(out, b"id: ", id.as_bytes());
        }
        if let Some(r) = self.retry {
            field(out, b"retry: ", r.to_string().as_bytes());
        }
        if let Some(d) = &self.data {
            write_lines(out, b"data:", d);
        }
        out.push(b'\n');
    }

    /// The encoded frame.
    ///
    /// ```
    /// let ev = tinysse::Event::data("hello").with_event("greeting")?;
    /// assert_eq!(ev.to_bytes(), b"event: greeting\ndata: hello\n\n");
    /// # Ok::<(), tinysse::EventError>(())
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.as_ref().map_or(0, |d| d.len()) + 32);
        self.encode_into(&mut out);
        out
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Writes `text` as one `prefix` line per line of text, splitting on CR, LF
/// and CRLF alike: a lone CR left inside a field would end it early.
fn write_lines(out: &mut Vec<u8>, prefix: &[u8], text: &str) {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    loop {
        let at_end = i == bytes.len();
        if at_end || bytes[i] == b'\r' || bytes[i] == b'\n' {
            out.extend_from_slice(prefix);
            let line = &bytes[start..i];
            // A space after the colon keeps a line that starts with a space intact:
            // the parser strips exactly one.
            if !line.is_empty() {
                out.push(b' ');
            }
            out.extend_from_slice(line);
            out.push(b'\n');
            if at_end {
                return;
            }
            if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            start = i + 1;
        }
        i += 1;
    }
}

/// An encoded frame whose bytes are shared, not copied, between every
/// subscriber it is sent to. Frames come from a [`Hub`](crate::Hub) (a
/// [`Subscription`](crate::Subscription)'s replay and queue) or from an
/// [`Event`], so their bytes are always a well-formed event-stream frame.
///
/// ```
/// use tinysse::{Event, Frame};
///
/// let frame = Frame::from(Event::data("hi").with_id("7")?);
/// assert_eq!(frame.id(), 7);
/// assert_eq!(frame.bytes(), b"id: 7\ndata: hi\n\n");
/// # Ok::<(), tinysse::EventError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    id: u64,
    start: usize,
    bytes: Arc<[u8]>,
    /// When the hub took it, in ms since the epoch (0 if it did not look):
    /// what `history_age` measures.
    at_ms: u64,
}

impl Frame {
    /// A frame from encoded bytes; `id` is 0 for frames without one. The
    /// bytes are not checked: only the crate's own encoders call it.
    pub(crate) fn new(id: u64, bytes: impl Into<Arc<[u8]>>) -> Frame {
        Frame {
            id,
            start: 0,
            bytes: bytes.into(),
            at_ms: 0,
        }
    }

    /// A frame whose `id:` line is written into room reserved at the head of
    /// `bytes` (see [`ID_ROOM`]), so the hub can encode the payload before it
    /// knows the id, and give the id without copying the payload again.
    pub(crate) fn with_reserved_id(mut bytes: Arc<[u8]>, id: u64) -> Frame {
        let mut line = [0u8; ID_ROOM];
        let mut n = id;
        let mut i = ID_ROOM - 1;
        line[i] = b'\n';
        loop {
            i -= 1;
            line[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        i -= 4;
        line[i..i + 4].copy_from_slice(b"id: ");
        let start = i;
        match Arc::get_mut(&mut bytes) {
            Some(b) => b[start..ID_ROOM].copy_from_slice(&line[start..]),
            None => {
                // Shared already: fall back to a copy rather than corrupt it.
                let mut v = bytes.to_vec();
                v[start..ID_ROOM].copy_from_slice(&line[start..]);
                bytes = v.into();
            }
        }
        Frame {
            id,
            start,
            bytes,
            at_ms: 0,
        }
    }

    /// The same frame, published at `at_ms` (ms since the epoch).
    pub(crate) fn at(mut self, at_ms: u64) -> Frame {
        self.at_ms = at_ms;
        self
    }

    /// When the hub took it (ms since the epoch; 0 if it did not look).
    pub(crate) fn at_ms(&self) -> u64 {
        self.at_ms
    }

    /// The numeric id: the one the hub gave the event, or for a frame made
    /// from an [`Event`], its id when that is a decimal number; 0 for none.
    ///
    /// ```
    /// let hub = tinysse::Hub::new();
    /// let sub = hub.subscribe(&["t"], None)?;
    /// let id = hub.publish("t", &tinysse::Event::data("x"))?;
    /// assert_eq!(sub.receiver().recv()?.id(), id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The encoded bytes, ready for the wire.
    ///
    /// ```
    /// let frame = tinysse::Frame::from(tinysse::Event::comment("hi"));
    /// assert_eq!(frame.bytes(), b": hi\n\n");
    /// ```
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

impl From<&Event> for Frame {
    /// Encodes the event once; see [`Frame::id`] for the id it gets.
    fn from(event: &Event) -> Frame {
        let id = event
            .id()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Frame::new(id, event.to_bytes())
    }
}

impl From<Event> for Frame {
    /// Encodes the event once; see [`Frame::id`] for the id it gets.
    fn from(event: Event) -> Frame {
        Frame::from(&event)
    }
}

/// Bytes reserved for `id: <u64>\n` ahead of a hub frame's payload.
pub(crate) const ID_ROOM: usize = 25;

/// Anything a stream writer can put on the wire: an [`Event`] (encoded as it
/// is written) or a pre-encoded [`Frame`]. Crate-private: the public
/// `StreamWriter` has a method for each.
pub(crate) trait Encode {
    /// Appends the wire bytes to `out`.
    fn encode_into(&self, out: &mut Vec<u8>);
}

impl Encode for Event {
    fn encode_into(&self, out: &mut Vec<u8>) {
        Event::encode_into(self, out)
    }
}

impl Encode for Frame {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(e: &Event) -> String {
        String::from_utf8(e.to_bytes()).unwrap()
    }

    #[test]
    fn splits_data_on_every_kind_of_line_break() {
        assert_eq!(
            enc(&Event::data("a\rb\nc\r\nd")),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(enc(&Event::data("")), "data:\n\n");
        assert_eq!(enc(&Event::data("x\n")), "data: x\ndata:\n\n");
        assert_eq!(enc(&Event::data(" lead")), "data:  lead\n\n");
    }

    #[test]
    fn a_frame_from_an_event_has_its_bytes_and_decimal_id() {
        let ev = Event::data("a\nb").with_id("42").unwrap();
        let f = Frame::from(&ev);
        assert_eq!((f.id(), f.bytes()), (42, &ev.to_bytes()[..]));
        for id in ["", "x1", "+5", "-1", " 7", "99999999999999999999"] {
            let ev = Event::data("x").with_id(id).unwrap();
            assert_eq!(Frame::from(ev).id(), 0, "{id:?}");
        }
        assert_eq!(Frame::from(Event::comment("c")).id(), 0);
    }

    #[test]
    fn refuses_fields_that_would_corrupt_the_frame() {
        assert!(matches!(
            Event::data("x").with_event("a\rb"),
            Err(EventError::EventHasLineBreak)
        ));
        assert!(matches!(
            Event::data("x").with_id("1\n2"),
            Err(EventError::IdHasLineBreak)
        ));
        assert!(matches!(
            Event::data("x").with_id("1\0"),
            Err(EventError::IdHasNul)
        ));
    }

    #[test]
    fn comment_lines_are_split_too() {
        assert_eq!(enc(&Event::comment("a\nb")), ": a\n: b\n\n");
        assert_eq!(enc(&Event::comment("")), ":\n\n");
    }

    #[test]
    fn reserved_id_is_written_in_place() {
        for id in [0, 7, 1_700_000_000_000_000, u64::MAX] {
            let mut v = vec![0u8; ID_ROOM];
            v.extend_from_slice(b"data: x\n\n");
            let f = Frame::with_reserved_id(v.into(), id);
            assert_eq!(f.bytes(), format!("id: {id}\ndata: x\n\n").as_bytes());
            assert_eq!(f.id(), id);
        }
    }

    #[test]
    fn empty_event_type_means_none() {
        assert_eq!(
            enc(&Event::data("x").with_event("").unwrap()),
            "data: x\n\n"
        );
    }
}
