//! What a stream handler sees of its request: method, path, decoded query,
//! headers and peer, copied out of the HTTP layer so handlers never depend on
//! it.

use std::fmt;
use std::net::SocketAddr;

use crate::files::percent_decode;

/// A request, as handed to a custom stream route.
///
/// Its `Debug` output leaves credentials out: the values of the
/// `Authorization`, `Proxy-Authorization` and `Cookie` headers and of the
/// `access_token` query parameter show as `<redacted>`.
///
/// ```
/// let rq = tinysse::StreamRequest::new("GET", "/events?topic=a&access_token=SECRET");
/// let shown = format!("{rq:?}");
/// assert!(shown.contains("topic") && !shown.contains("SECRET"));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StreamRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Pairs,
    pub(crate) headers: Pairs,
    pub(crate) remote_addr: Option<SocketAddr>,
}

impl fmt::Debug for StreamRequest {
    // By hand: headers and query may carry a token, and a `Debug` line
    // may end up in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn shown(pairs: &Pairs, secret: fn(&str) -> bool) -> Vec<(&str, &str)> {
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str(),
                        if secret(k) { "<redacted>" } else { v.as_str() },
                    )
                })
                .collect()
        }
        f.debug_struct("StreamRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field(
                "query",
                &shown(&self.query, |k| k == crate::auth::TOKEN_QUERY),
            )
            .field(
                "headers",
                &shown(&self.headers, |k| {
                    ["authorization", "proxy-authorization", "cookie"]
                        .iter()
                        .any(|h| k.eq_ignore_ascii_case(h))
                }),
            )
            .field("remote_addr", &self.remote_addr)
            .finish()
    }
}

/// The query string could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BadQuery;

/// Decoded `name=value` pairs, in order, repeats kept.
pub(crate) type Pairs = Vec<(String, String)>;

/// Splits a request target into its path and its decoded query pairs
/// (`+` as space, as HTML forms send it).
pub(crate) fn split_target(target: &str) -> Result<(&str, Pairs), BadQuery> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    Ok((path, parse_pairs(query)?))
}

/// Decodes `a=1&b=2` pairs (also the form-urlencoded body format).
pub(crate) fn parse_pairs(s: &str) -> Result<Pairs, BadQuery> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((
                percent_decode(k, true).ok_or(BadQuery)?,
                percent_decode(v, true).ok_or(BadQuery)?,
            ))
        })
        .collect()
}

impl StreamRequest {
    pub(crate) fn from_http(rq: &tiny_http::Request) -> Result<StreamRequest, BadQuery> {
        let (path, query) = split_target(rq.url())?;
        Ok(StreamRequest {
            method: rq.method().as_str().to_string(),
            path: path.to_string(),
            query,
            headers: rq
                .headers()
                .iter()
                .map(|h| (h.field.as_str().to_string(), h.value.as_str().to_string()))
                .collect(),
            remote_addr: rq.remote_addr().copied(),
        })
    }

    /// A request for tests and for calling handlers directly.
    ///
    /// ```
    /// let rq = tinysse::StreamRequest::new("GET", "/ticks?n=3");
    /// assert_eq!(rq.query("n"), Some("3"));
    /// ```
    pub fn new(method: &str, target: &str) -> StreamRequest {
        let (path, query) = split_target(target).unwrap_or((target, Vec::new()));
        StreamRequest {
            method: method.to_string(),
            path: path.to_string(),
            query,
            ..StreamRequest::default()
        }
    }

    /// The method, e.g. `GET`.
    ///
    /// ```
    /// assert_eq!(tinysse::StreamRequest::new("GET", "/ticks").method(), "GET");
    /// ```
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path, without the query string, as sent (not percent-decoded).
    ///
    /// ```
    /// assert_eq!(tinysse::StreamRequest::new("GET", "/a%20b?x=1").path(), "/a%20b");
    /// ```
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The first value of a query parameter, decoded.
    ///
    /// ```
    /// let rq = tinysse::StreamRequest::new("GET", "/search?q=a%2Fb+c&q=second");
    /// assert_eq!(rq.query("q"), Some("a/b c"));
    /// assert_eq!(rq.query("missing"), None);
    /// ```
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a query parameter, in order.
    ///
    /// ```
    /// let rq = tinysse::StreamRequest::new("GET", "/events?topic=a&topic=b");
    /// assert_eq!(rq.query_all("topic").collect::<Vec<_>>(), ["a", "b"]);
    /// ```
    pub fn query_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a header, by case-insensitive name.
    ///
    /// ```
    /// use tinysse::{Event, EventStream, Server};
    ///
    /// let server = Server::builder()
    ///     .addr("127.0.0.1:0")
    ///     .stream_route("/whoami", |req, tx| {
    ///         let agent = req.header("user-agent").unwrap_or("unknown");
    ///         let _ = tx.send(Event::data(agent));
    ///     })
    ///     .start()?;
    /// let mut stream = EventStream::connect(server.addr(), "/whoami", &[("User-Agent", "doc")])?;
    /// assert_eq!(stream.next_message()?.unwrap().data, "doc");
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The peer's address (`None` for a request made with [`new`](Self::new)).
    ///
    /// ```
    /// use tinysse::{Event, EventStream, Server};
    ///
    /// let server = Server::builder()
    ///     .addr("127.0.0.1:0")
    ///     .stream_route("/peer", |req, tx| {
    ///         let local = req.remote_addr().is_some_and(|a| a.ip().is_loopback());
    ///         let _ = tx.send(Event::data(local.to_string()));
    ///     })
    ///     .start()?;
    /// let mut stream = EventStream::connect(server.addr(), "/peer", &[])?;
    /// assert_eq!(stream.next_message()?.unwrap().data, "true");
    /// assert_eq!(tinysse::StreamRequest::new("GET", "/peer").remote_addr(), None);
    /// server.join();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// Where a reconnecting client wants to resume: its `Last-Event-ID`
    /// header, or else the `lastEventId` query parameter (for a first
    /// connection that already knows where it stands), as `/events` reads it.
    ///
    /// ```
    /// let rq = tinysse::StreamRequest::new("GET", "/ticks?lastEventId=41");
    /// assert_eq!(rq.last_event_id(), Some("41"));
    /// ```
    pub fn last_event_id(&self) -> Option<&str> {
        self.header("Last-Event-ID")
            .or_else(|| self.query("lastEventId"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_and_decode() {
        let (p, q) = split_target("/events?topic=a&topic=b%2Fc&x=1+2").unwrap();
        assert_eq!(p, "/events");
        assert_eq!(
            q,
            vec![
                ("topic".into(), "a".into()),
                ("topic".into(), "b/c".into()),
                ("x".into(), "1 2".into())
            ]
        );
        assert_eq!(split_target("/e?topic=%zz"), Err(BadQuery));
    }

    #[test]
    fn debug_leaves_credentials_out() {
        let mut rq = StreamRequest::new("GET", "/events?topic=t&access_token=Q1&x=shown1");
        rq.headers = [
            ("authorization", "Bearer H1"),
            ("Cookie", "tinysse_token=C1"),
            ("Proxy-Authorization", "Basic P1"),
            ("X-Other", "shown2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let shown = format!("{rq:?}");
        for secret in ["Q1", "H1", "C1", "P1"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("shown1") && shown.contains("shown2") && shown.contains("/events"));
    }
}
