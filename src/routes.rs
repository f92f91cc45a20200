//! Request handlers: streams (`/events`, `/firehose`, custom
//! routes) and short requests (`/publish`, `/healthz`, `/metrics`, files).

use std::io::{Cursor, Read};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_channel::bounded;
use tiny_http::{Header, Method, Request, Response};

use crate::auth::{AuthError, Grant, PublishPass};
use crate::engine::Spec;
use crate::event::{Event, Frame};
use crate::files;
use crate::hub::{PublishError, Ready, SubscribeError};
use crate::pool::{Feed, Notify, StreamSpec};
use crate::request::{StreamRequest, parse_pairs};
use crate::state::{Shared, StreamSlot, spawn_producer};

/// The `/firehose` producer's stack: it only encodes into one buffer.
const FIREHOSE_STACK: usize = 64 * 1024;

pub(crate) type Reply = Response<Cursor<Vec<u8>>>;

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

/// A plain-text answer: the status and a one-line reason.
pub(crate) fn text(status: u16, body: &str) -> Reply {
    let mut r = Response::from_data(format!("{body}\n").into_bytes()).with_status_code(status);
    if let Some(h) = header("Content-Type", "text/plain; charset=utf-8") {
        r.add_header(h);
    }
    r
}

fn with_cors(sh: &Shared, mut r: Reply) -> Reply {
    if let Some(o) = &sh.config.cors_origin
        && let Some(h) = header("Access-Control-Allow-Origin", o)
    {
        r.add_header(h);
        if let Some(v) = header("Vary", "Origin") {
            r.add_header(v);
        }
        if cors_credentials(sh)
            && let Some(h) = header("Access-Control-Allow-Credentials", "true")
        {
            r.add_header(h);
        }
    }
    r
}

/// Whether CORS answers allow credentials: with authorization on, a page on
/// `--cors-origin` sends the token cookie
/// (`EventSource(url, {withCredentials: true})`), and a browser hands it
/// the answer only with `Access-Control-Allow-Credentials: true` and its
/// origin named (never `*`, which it refuses with credentials).
fn cors_credentials(sh: &Shared) -> bool {
    sh.config.auth.is_some() && sh.config.cors_origin.as_deref().is_some_and(|o| o != "*")
}

/// `401` or `403` with the reason (never the token), and nothing opened.
fn refusal(sh: &Shared, e: &AuthError) -> Reply {
    let mut r = text(e.status(), e.reason());
    if e.status() == 401
        && let Some(h) = header("WWW-Authenticate", "Bearer")
    {
        r.add_header(h);
    }
    with_cors(sh, r)
}

/// The check for a custom stream route or `/firehose`: open unless an
/// embedding program's own check says otherwise.
fn authorize_route(sh: &Shared, sreq: &StreamRequest) -> Result<Grant, Reply> {
    match &sh.config.auth {
        Some(auth) => auth.stream(sreq).map_err(|e| refusal(sh, &e)),
        None => Ok(Grant::unlimited()),
    }
}

/// The check for `GET`/`HEAD /events`, once the topics are known valid:
/// before anything is subscribed or created.
fn authorize_events(sh: &Shared, sreq: &StreamRequest, topics: &[&str]) -> Result<Grant, Reply> {
    match &sh.config.auth {
        Some(auth) => auth.subscribe(sreq, topics).map_err(|e| refusal(sh, &e)),
        None => Ok(Grant::unlimited()),
    }
}

fn method_not_allowed(allow: &str) -> Reply {
    let mut r = text(405, &format!("method not allowed (allowed: {allow})"));
    if let Some(h) = header("Allow", allow) {
        r.add_header(h);
    }
    r
}

fn request_header<'a>(rq: &'a Request, name: &str) -> Option<&'a str> {
    rq.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

fn path_of(rq: &Request) -> &str {
    let url = rq.url();
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

/// Answers one request, on its connection's thread. A panic here (a bug)
/// ends this connection only: the client gets a `500` from the request's
/// drop, and everyone else is served on.
pub(crate) fn handle(sh: &Arc<Shared>, rq: tiny_http::Request) {
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if sh.stopping.load(std::sync::atomic::Ordering::Acquire) {
            let _ = rq.respond(text(503, "shutting down"));
            return;
        }
        if let Some(rq) = try_stream(sh, rq) {
            handle_short(sh, rq);
        }
    }));
    if served.is_err() {
        log::error!("a request handler panicked; its connection was closed");
    }
}

/// Takes over stream requests; hands anything else back for the worker pool.
pub(crate) fn try_stream(sh: &Arc<Shared>, rq: Request) -> Option<Request> {
    let path = path_of(&rq);
    let kind = if path == "/events" {
        Kind::Events
    } else if path == "/firehose" && sh.config.firehose {
        Kind::Firehose
    } else if let Some(h) = sh.routes.get(path) {
        Kind::Custom(h.clone())
    } else {
        return Some(rq);
    };
    let head = match rq.method() {
        Method::Get => false,
        Method::Head => true,
        _ => {
            let _ = rq.respond(method_not_allowed("GET, HEAD"));
            return None;
        }
    };
    let sreq = match StreamRequest::from_http(&rq) {
        Ok(s) => s,
        Err(_) => {
            let _ = rq.respond(text(400, "malformed query string"));
            return None;
        }
    };
    // /events is checked with its topics, once they are known valid.
    let grant = match kind {
        Kind::Events => Grant::unlimited(),
        _ => match authorize_route(sh, &sreq) {
            Ok(g) => g,
            Err(reply) => {
                let _ = rq.respond(reply);
                return None;
            }
        },
    };
    if head {
        let _ = rq.respond(stream_head(sh, &kind, &sreq));
        return None;
    }
    match kind {
        Kind::Events => start_events(sh, rq, &sreq),
        Kind::Firehose => start_firehose(sh, rq, &sreq, grant),
        Kind::Custom(h) => start_custom(sh, rq, sreq, h, grant),
    }
    None
}

enum Kind {
    Events,
    Firehose,
    Custom(Arc<crate::state::StreamHandler>),
}

/// The answer to `HEAD` on a stream: the status and head a `GET` would get,
/// from the same checks, but nothing opened: no slot taken, no subscriber
/// registered, no producer started (tiny_http sends no body for `HEAD`).
fn stream_head(sh: &Shared, kind: &Kind, sreq: &StreamRequest) -> Reply {
    match kind {
        Kind::Events => {
            let topics = match events_topics(sreq) {
                Ok(t) => t,
                Err(reason) => return text(400, &reason),
            };
            if let Err(reply) = authorize_events(sh, sreq, &topics) {
                return reply;
            }
        }
        Kind::Firehose => {
            if let Err(reason) = firehose_params(sreq) {
                return text(400, &reason);
            }
        }
        Kind::Custom(_) => {}
    }
    if sh.metrics.streams_active() >= sh.config.max_streams {
        return over_capacity_reply();
    }
    let mut r = Response::new(
        tiny_http::StatusCode(200),
        Vec::new(),
        Cursor::new(Vec::new()),
        None,
        None,
    );
    let cors = sh.config.cors_origin.as_deref();
    for (k, v) in [
        ("Content-Type", Some("text/event-stream")),
        ("Cache-Control", Some("no-cache")),
        ("X-Accel-Buffering", Some("no")),
        ("Access-Control-Allow-Origin", cors),
        (
            "Access-Control-Allow-Credentials",
            cors_credentials(sh).then_some("true"),
        ),
    ] {
        if let Some(h) = v.and_then(|v| header(k, v)) {
            r.add_header(h);
        }
    }
    r
}

/// How a stream on `rq` is written; `slot` is held until it ends, and the
/// response ends when `grant` does.
fn stream_spec(sh: &Shared, rq: &Request, slot: StreamSlot, grant: &Grant) -> StreamSpec {
    let mut headers = Vec::new();
    // start() refused a value with a line break.
    if let Some(o) = &sh.config.cors_origin {
        headers.push(("Access-Control-Allow-Origin".to_string(), o.clone()));
    }
    if cors_credentials(sh) {
        headers.push((
            "Access-Control-Allow-Credentials".to_string(),
            "true".into(),
        ));
    }
    StreamSpec {
        spec: Spec {
            chunked: *rq.http_version() >= (1, 1),
            retry: sh.config.retry,
            heartbeat: sh.config.heartbeat,
            headers,
        },
        write_timeout: sh.write_timeout,
        frames_written: sh.metrics.frames_written.clone(),
        hold: Box::new(slot),
        // On the monotonic clock from now: a wall clock stepped later
        // neither cuts a stream short nor keeps it past its token.
        ends_at: grant
            .remaining(SystemTime::now())
            .and_then(|left| Instant::now().checked_add(left)),
    }
}

/// Hands the connection's socket to the writer pool. tiny_http gives it up
/// once the connection's thread is done with the request, so this returns
/// at once; the stream then holds no thread and one descriptor. Anything
/// the client sent after the head is dropped with the connection's read
/// half: the socket is never read for another request.
fn hand_over(sh: &Arc<Shared>, rq: Request, notify: Arc<Notify>, feed: Feed, spec: StreamSpec) {
    if !rq.can_take_over() {
        // Only a TLS or non-TCP connection keeps its socket, and this
        // server listens on plain TCP only.
        log::error!("a stream's connection cannot be handed over");
        let _ = rq.respond(text(500, "this connection cannot carry a stream"));
        return;
    }
    let owner = sh.clone();
    let _ = rq.into_raw_stream_then(move |sock| {
        if let Err(e) = owner.pool.add(&notify, sock, feed, spec) {
            log::error!("cannot hand a stream to the writer pool: {e}");
        }
    });
}

fn over_capacity_reply() -> Reply {
    let mut r = text(503, "too many open streams, try again later");
    if let Some(h) = header("Retry-After", "5") {
        r.add_header(h);
    }
    r
}

/// `503` with a reason and `Retry-After`: the store cannot take events now.
fn unavailable(reason: &str) -> Reply {
    let mut r = text(503, reason);
    if let Some(h) = header("Retry-After", "1") {
        r.add_header(h);
    }
    r
}

fn over_capacity(rq: Request) {
    let _ = rq.respond(over_capacity_reply());
}

/// The topics a `GET /events` (or its `HEAD`) names, or why it gets `400`:
/// checked before anything is looked up or created, as each name may create
/// a topic.
fn events_topics(sreq: &StreamRequest) -> Result<Vec<&str>, String> {
    let topics: Vec<&str> = sreq.query_all("topic").collect();
    if topics.is_empty() {
        return Err(SubscribeError::NoTopic.to_string());
    }
    if topics.len() > crate::hub::MAX_SUBSCRIPTION_TOPICS {
        return Err(SubscribeError::TopicListTooLong.to_string());
    }
    if !topics.iter().all(|t| crate::hub::valid_topic(t)) {
        return Err(SubscribeError::InvalidTopic.to_string());
    }
    Ok(topics)
}

fn start_events(sh: &Arc<Shared>, rq: Request, sreq: &StreamRequest) {
    let topics = match events_topics(sreq) {
        Ok(t) => t,
        Err(reason) => {
            let _ = rq.respond(text(400, &reason));
            return;
        }
    };
    // Before a slot is taken or a topic created: a refusal leaves no trace.
    let grant = match authorize_events(sh, sreq, &topics) {
        Ok(g) => g,
        Err(reply) => {
            let _ = rq.respond(reply);
            return;
        }
    };
    // The header wins over the query parameter; a non-number means live only.
    let last_id = sreq
        .header("Last-Event-ID")
        .or_else(|| sreq.query("lastEventId"))
        .and_then(crate::hub::parse_last_event_id);
    let Some(slot) = StreamSlot::take(sh) else {
        over_capacity(rq);
        return;
    };
    let notify = sh.pool.notify();
    let ready: Arc<dyn Ready> = notify.clone();
    let sub = match sh.hub.subscribe_with(&topics, last_id, Some(ready)) {
        Ok(s) => s,
        Err(e @ SubscribeError::TooManyTopics) => {
            let _ = rq.respond(text(429, &e.to_string()));
            return;
        }
        Err(e) => {
            let _ = rq.respond(text(400, &e.to_string()));
            return;
        }
    };
    let spec = stream_spec(sh, &rq, slot, &grant);
    hand_over(sh, rq, notify, Feed::Hub(sub), spec);
}

fn start_custom(
    sh: &Arc<Shared>,
    rq: Request,
    sreq: StreamRequest,
    handler: Arc<crate::state::StreamHandler>,
    grant: Grant,
) {
    let Some(slot) = StreamSlot::take(sh) else {
        over_capacity(rq);
        return;
    };
    // Bounded: a slow client blocks its producer's `send`, nothing else.
    let (tx, rx) = bounded::<Event>(sh.hub.limits().queue);
    if let Err(e) = spawn_producer(handler, sreq, tx) {
        log::error!("cannot start a producer thread: {e}");
        let _ = rq.respond(text(503, "cannot start the stream"));
        return;
    }
    let spec = stream_spec(sh, &rq, slot, &grant);
    hand_over(sh, rq, sh.pool.notify(), Feed::Events(rx), spec);
}

/// Parses `/firehose` parameters: count 1..=10,000,000, size 1..=65,536.
pub(crate) fn firehose_params(sreq: &StreamRequest) -> Result<(u64, usize), String> {
    let count = sreq
        .query("count")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| (1..=10_000_000).contains(n))
        .ok_or("count must be a number from 1 to 10000000")?;
    let size = sreq
        .query("size")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=65_536).contains(n))
        .ok_or("size must be a number from 1 to 65536")?;
    Ok((count, size))
}

fn start_firehose(sh: &Arc<Shared>, rq: Request, sreq: &StreamRequest, grant: Grant) {
    let (count, size) = match firehose_params(sreq) {
        Ok(p) => p,
        Err(reason) => {
            let _ = rq.respond(text(400, &reason));
            return;
        }
    };
    let Some(slot) = StreamSlot::take(sh) else {
        over_capacity(rq);
        return;
    };
    let (tx, rx) = bounded::<Frame>(sh.hub.limits().queue);
    let producer = std::thread::Builder::new()
        .name("tinysse-firehose".into())
        .stack_size(FIREHOSE_STACK)
        .spawn(move || crate::firehose::firehose(count, size, tx));
    if let Err(e) = producer {
        log::error!("cannot start the firehose producer: {e}");
        let _ = rq.respond(text(503, "cannot start the stream"));
        return;
    }
    let spec = stream_spec(sh, &rq, slot, &grant);
    hand_over(sh, rq, sh.pool.notify(), Feed::Frames(rx), spec);
}

/// Answers a short request on a worker thread.
pub(crate) fn handle_short(sh: &Shared, rq: Request) {
    let path = path_of(&rq).to_string();
    let method = rq.method().clone();
    let reply = match (path.as_str(), &method) {
        ("/publish", Method::Post) => return publish(sh, rq),
        ("/publish", Method::Options) => preflight(sh),
        ("/publish", _) => with_cors(sh, method_not_allowed("POST, OPTIONS")),
        ("/healthz", Method::Get | Method::Head) => match sh.hub.store_health() {
            Ok(()) => text(200, "ok"),
            Err(reason) => unavailable(&format!("store unusable: {reason}")),
        },
        ("/healthz", _) => method_not_allowed("GET, HEAD"),
        ("/metrics", Method::Get | Method::Head) => {
            let mut r = Response::from_data(sh.metrics.render().into_bytes());
            if let Some(h) = header("Content-Type", "text/plain; version=0.0.4; charset=utf-8") {
                r.add_header(h);
            }
            r
        }
        ("/metrics", _) => method_not_allowed("GET, HEAD"),
        (_, Method::Get | Method::Head) => return static_file(sh, rq, &path),
        _ => {
            if sh.config.public.is_some() {
                method_not_allowed("GET, HEAD")
            } else {
                text(404, "not found")
            }
        }
    };
    let _ = rq.respond(reply);
}

fn preflight(sh: &Shared) -> Reply {
    let mut r = Response::from_data(Vec::new()).with_status_code(204);
    if sh.config.cors_origin.is_some() {
        r = with_cors(sh, r);
        for (k, v) in [
            ("Access-Control-Allow-Methods", "POST, OPTIONS"),
            (
                "Access-Control-Allow-Headers",
                "Authorization, Content-Type, Last-Event-ID",
            ),
            ("Access-Control-Max-Age", "600"),
        ] {
            if let Some(h) = header(k, v) {
                r.add_header(h);
            }
        }
    } else if let Some(h) = header("Allow", "POST, OPTIONS") {
        r.add_header(h);
    }
    r
}

fn static_file(sh: &Shared, rq: Request, path: &str) {
    let Some(root) = &sh.config.public else {
        let _ = rq.respond(text(404, "not found"));
        return;
    };
    let file = match files::resolve(root, path) {
        Ok(p) => p,
        Err(files::FileError::BadPath) => {
            let _ = rq.respond(text(400, "malformed path"));
            return;
        }
        Err(files::FileError::NotFound) => {
            let _ = rq.respond(text(404, "not found"));
            return;
        }
    };
    match std::fs::File::open(&file) {
        Ok(f) => {
            let mut r = Response::from_file(f);
            if let Some(h) = header("Content-Type", files::content_type(&file)) {
                r.add_header(h);
            }
            if let Some(h) = header("Cache-Control", "no-cache") {
                r.add_header(h);
            }
            // Browsers take each file as its Content-Type says, never guess
            // a script or a page out of a text file's bytes.
            if let Some(h) = header("X-Content-Type-Options", "nosniff") {
                r.add_header(h);
            }
            let _ = rq.respond(r);
        }
        Err(_) => {
            let _ = rq.respond(text(404, "not found"));
        }
    }
}

/// Compares without an early exit, so the time taken does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= (x ^ b.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

enum BodyKind {
    Json,
    Form,
}

/// A parsed publish request.
#[derive(Debug, PartialEq)]
pub(crate) struct Publish {
    pub(crate) topic: String,
    pub(crate) event: Event,
}

/// Parses a publish body; the error is the one-line reason for a `400`.
pub(crate) fn parse_publish(body: &[u8], json: bool) -> Result<Publish, String> {
    let (topic, data, event) = if json {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
        let serde_json::Value::Object(mut obj) = v else {
            return Err("bad JSON: expected an object".into());
        };
        let topic = match obj.remove("topic") {
            Some(serde_json::Value::String(s)) => s,
            Some(_) => return Err("topic must be a string".into()),
            None => return Err("missing topic".into()),
        };
        let data = match obj.remove("data") {
            Some(serde_json::Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => return Err("missing data".into()),
        };
        let event = match obj.remove("event") {
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Null) | None => String::new(),
            Some(_) => return Err("event must be a string".into()),
        };
        (topic, data, event)
    } else {
        let text = std::str::from_utf8(body).map_err(|_| "bad form: not UTF-8".to_string())?;
        let pairs = parse_pairs(text).map_err(|_| "bad form: malformed percent-encoding")?;
        let one = |name: &str| -> Result<Option<String>, String> {
            let mut vals = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
            let first = vals.next().cloned();
            if vals.next().is_some() {
                return Err(format!("exactly one {name} is allowed"));
            }
            Ok(first)
        };
        let topic = one("topic")?.ok_or("missing topic")?;
        let data = one("data")?.ok_or("missing data")?;
        let event = one("event")?.unwrap_or_default();
        (topic, data, event)
    };
    if !crate::hub::valid_topic(&topic) {
        return Err(PublishError::InvalidTopic.to_string());
    }
    // Subscribers take a `gap` event as the server's word that they missed
    // events and must refetch their state: a publisher may not forge it.
    if event == "gap" {
        return Err("event type gap is reserved for the server".into());
    }
    let event = Event::data(data)
        .with_event(event)
        .map_err(|e| e.to_string())?;
    Ok(Publish { topic, event })
}

/// The token given in `Authorization`, whatever the case of its scheme
/// (RFC 7235: `bearer` is `Bearer`).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then_some(token.trim())
}

/// Why a token-less publish is refused, if it is: the request must be a
/// plain local one, as only the machine's own users could then publish.
/// Each rule closes a way for a remote party to look local.
fn not_plain_local(sh: &Shared, rq: &Request) -> Option<&'static str> {
    let all = |name: &'static str| {
        rq.headers()
            .iter()
            .filter(move |h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().trim())
    };
    // Behind a reverse proxy every peer is loopback: a forwarded request
    // needs a token.
    let proxied = ["Forwarded", "X-Forwarded-For", "X-Real-IP", "Via"]
        .iter()
        .any(|h| all(h).next().is_some());
    if proxied {
        return Some("publishing through a proxy needs a publish token (--publish-token)");
    }
    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
    if !rq
        .remote_addr()
        .is_some_and(|a| a.ip().to_canonical().is_loopback())
    {
        return Some("publishing is allowed from loopback only (no token set)");
    }
    // A page whose name an attacker re-points at 127.0.0.1 (DNS rebinding)
    // sends its own name; a proxy sends the upstream or the public name. No
    // Host at all (HTTP/1.0) passes: browsers and proxies always send one,
    // and whoever can leave it out could as well send `Host: localhost`.
    if !all("Host").all(loopback_host) {
        return Some(
            "publishing without a token needs a loopback Host (localhost, 127.0.0.1, [::1])",
        );
    }
    // A browser says where a request comes from: a form or fetch from
    // another site must not publish with the user's local access (CSRF).
    match foreign_origin(sh, rq)? {
        Foreign::CrossSite => Some("cross-site publishing needs a publish token (--publish-token)"),
        Foreign::OtherOrigin => Some(
            "publishing from another origin needs a publish token (--publish-token) or --cors-origin",
        ),
    }
}

/// How a browser said a request came from a page of another origin.
enum Foreign {
    CrossSite,
    OtherOrigin,
}

/// Whether a browser sent the request from a page of another origin than
/// the server's own: `Sec-Fetch-Site: cross-site`, or an `Origin` that is
/// not the server's. The one origin the operator trusts with
/// `--cors-origin` is not foreign, even from another site (then the
/// browser says cross-site). A request with neither header (not from a
/// browser's page) is not foreign.
fn foreign_origin(sh: &Shared, rq: &Request) -> Option<Foreign> {
    let all = |name: &'static str| {
        rq.headers()
            .iter()
            .filter(move |h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().trim())
    };
    let cors = sh.config.cors_origin.as_deref();
    let mut origins = all("Origin").peekable();
    let trusted =
        origins.peek().is_some() && origins.all(|o| cors.is_some_and(|c| origin_eq(o, c)));
    if trusted {
        return None;
    }
    if all("Sec-Fetch-Site").any(|v| v.eq_ignore_ascii_case("cross-site")) {
        return Some(Foreign::CrossSite);
    }
    let own = all("Host").next().unwrap_or("");
    if !all("Origin").all(|o| same_origin(o, own)) {
        return Some(Foreign::OtherOrigin);
    }
    None
}

/// Whether a `Host` value names this machine: `localhost`, a name under
/// `.localhost` (RFC 6761 keeps them all on loopback, so they are no weaker
/// than `localhost` itself), `127.0.0.0/8` or `[::1]`, with or without a
/// port.
fn loopback_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let bracketed = host.starts_with('[');
    let (name, port) = if bracketed {
        match host[1..].split_once(']') {
            Some(split) => split,
            None => return false,
        }
    } else {
        host.split_at(host.find(':').unwrap_or(host.len()))
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            p.is_empty() || (p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok())
        });
    let name_ok = if bracketed {
        name.parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
    } else {
        name == "localhost"
            || name.strip_suffix(".localhost").is_some_and(|sub| {
                sub.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
            })
            || name
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    port_ok && name_ok
}

/// Two origins (`scheme://host[:port]`) compared as a browser serialises
/// them: case-insensitive, a trailing `/` ignored.
fn origin_eq(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// Whether `origin` is this server's own, as reached through `host`: plain
/// HTTP (tinysse has no TLS) at the same host and port. `null` (a sandboxed
/// or file page) is never.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some(authority) = origin
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| origin[7..].trim_end_matches('/'))
    else {
        return false;
    };
    // Port 80 is left out of both by browsers, but either may spell it.
    let plain = |s: &str| -> String {
        let s = s.to_ascii_lowercase();
        match s.strip_suffix(":80") {
            Some(p) => p.to_string(),
            None => s,
        }
    };
    !host.is_empty() && plain(authority) == plain(host)
}

fn publish(sh: &Shared, mut rq: Request) {
    let reply = |rq: Request, r: Reply| {
        let _ = rq.respond(with_cors(sh, r));
    };
    // With authorization on, the token decides, wherever the request comes
    // from: the publish token and the plain-local rules do not apply.
    let mut checked = None;
    if let Some(auth) = &sh.config.auth {
        // A query that does not decode carries no token; the body is what
        // a publish is about.
        let sreq = StreamRequest::from_http(&rq).unwrap_or_else(|_| StreamRequest {
            method: "POST".into(),
            path: path_of(&rq).into(),
            headers: rq
                .headers()
                .iter()
                .map(|h| (h.field.as_str().to_string(), h.value.as_str().to_string()))
                .collect(),
            remote_addr: rq.remote_addr().copied(),
            ..StreamRequest::default()
        });
        let pass = match auth.publish_head(&sreq) {
            Ok(p) => p,
            Err(e) => {
                let _ = rq.respond(refusal(sh, &e));
                return;
            }
        };
        // A browser sends the cookie with a form posted from any page of
        // the same site (CSRF): a cookie's token publishes only from this
        // server's own origin or --cors-origin. Programs send the header.
        if matches!(pass, PublishPass::Jwt(_, true)) && foreign_origin(sh, &rq).is_some() {
            let e = AuthError::Forbidden(
                "a token in a cookie does not publish from another origin: \
                 send it in the Authorization header"
                    .into(),
            );
            let _ = rq.respond(refusal(sh, &e));
            return;
        }
        checked = Some((auth, sreq, pass));
    } else {
        match &sh.config.publish_token {
            Some(token) => {
                let given = request_header(&rq, "Authorization")
                    .and_then(bearer_token)
                    .unwrap_or("");
                if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                    let mut r = text(401, "missing or wrong bearer token");
                    if let Some(h) = header("WWW-Authenticate", "Bearer") {
                        r.add_header(h);
                    }
                    return reply(rq, r);
                }
            }
            None => {
                if let Some(reason) = not_plain_local(sh, &rq) {
                    return reply(rq, text(403, reason));
                }
            }
        }
    }
    let ctype = request_header(&rq, "Content-Type")
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let kind = match ctype.as_str() {
        "application/json" => BodyKind::Json,
        "application/x-www-form-urlencoded" => BodyKind::Form,
        _ => {
            return reply(
                rq,
                text(
                    415,
                    "use Content-Type application/json or application/x-www-form-urlencoded",
                ),
            );
        }
    };
    let max = sh.config.max_body;
    let too_large = || text(413, &format!("body larger than {max} bytes"));
    if rq.body_length().is_some_and(|n| n as u64 > max) {
        return reply(rq, too_large());
    }
    let mut body = Vec::new();
    if let Err(e) = rq.as_reader().take(max + 1).read_to_end(&mut body) {
        return reply(rq, text(400, &format!("cannot read body: {e}")));
    }
    if body.len() as u64 > max {
        return reply(rq, too_large());
    }
    let parsed = match parse_publish(&body, matches!(kind, BodyKind::Json)) {
        Ok(p) => p,
        Err(reason) => return reply(rq, text(400, &reason)),
    };
    if let Some((auth, sreq, pass)) = &checked
        && let Err(e) = auth.publish_topic(sreq, pass, &parsed.topic)
    {
        let _ = rq.respond(refusal(sh, &e));
        return;
    }
    match sh.hub.publish(&parsed.topic, &parsed.event) {
        Ok(id) => {
            let mut r = Response::from_data(format!("{{\"id\":\"{id}\"}}\n").into_bytes());
            if let Some(h) = header("Content-Type", "application/json") {
                r.add_header(h);
            }
            reply(rq, r)
        }
        Err(e @ PublishError::TooManyTopics) => reply(rq, text(429, &e.to_string())),
        Err(e @ PublishError::Unavailable(_)) => reply(rq, unavailable(&e.to_string())),
        Err(e) => reply(rq, text(400, &e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_bodies() {
        let p = parse_publish(br#"{"topic":"a","data":{"x":1},"event":"e"}"#, true).unwrap();
        assert_eq!(p.topic, "a");
        assert_eq!(p.event.to_bytes(), b"event: e\ndata: {\"x\":1}\n\n");
        let p = parse_publish(b"topic=a&data=one+two%0Athree", false).unwrap();
        assert_eq!(p.event.to_bytes(), b"data: one two\ndata: three\n\n");
        assert!(parse_publish(b"topic=a&topic=b&data=x", false).is_err());
        assert!(parse_publish(br#"{"topic":"a"}"#, true).is_err());
        assert!(parse_publish(br#"{"topic":"a","data":1,"event":"x\ny"}"#, true).is_err());
        assert!(parse_publish(br#"{"topic":"a b","data":1}"#, true).is_err());
        assert!(parse_publish(b"[1]", true).is_err());
        assert!(parse_publish(b"\xff", false).is_err());
    }

    #[test]
    fn gap_is_reserved() {
        for body in [
            &br#"{"topic":"a","data":1,"event":"gap"}"#[..],
            b"topic=a&data=x&event=gap",
        ] {
            let json = body.starts_with(b"{");
            let err = parse_publish(body, json).unwrap_err();
            assert!(err.contains("gap"), "{err}");
        }
        // Only the exact type: a subscriber's listener for `gap` never sees these.
        assert!(parse_publish(br#"{"topic":"a","data":1,"event":"GAP"}"#, true).is_ok());
        assert!(parse_publish(br#"{"topic":"a","data":1,"event":"gaps"}"#, true).is_ok());
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "localhost:",
            "app.localhost",
            "a-b.c.localhost:1",
            "127.0.0.1",
            "127.0.0.1:65535",
            "127.255.0.9:80",
            "[::1]",
            "[::1]:8080",
            "[0:0:0:0:0:0:0:1]:1",
            "[::ffff:127.0.0.1]:9",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "t",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "localhost.",
            ".localhost",
            "a..localhost",
            "evil_x.localhost",
            "127.0.0.1.evil.example",
            "128.0.0.1",
            "0.0.0.0",
            "10.0.0.1:80",
            "127.1",
            "0x7f000001",
            "localhost:+80",
            "localhost:65536",
            "localhost:80:80",
            "localhost:8080@evil.example",
            "[::1",
            "[::1]x",
            "[::1]:x",
            "[::2]",
            "[::]:80",
            "::1",
            "[::ffff:10.0.0.1]",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn own_origin() {
        assert!(same_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_origin("HTTP://LocalHost:8080/", "localhost:8080"));
        assert!(same_origin("http://localhost", "localhost:80"));
        assert!(same_origin("http://localhost:80", "localhost"));
        assert!(!same_origin("http://127.0.0.1:8081", "127.0.0.1:8080"));
        assert!(!same_origin("http://localhost:8080", "127.0.0.1:8080"));
        assert!(!same_origin("https://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!same_origin("null", "127.0.0.1:8080"));
        assert!(!same_origin("http://", ""));
        assert!(!same_origin("http:/é", "x"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer tok"), Some("tok"));
        assert_eq!(bearer_token("bearer tok"), Some("tok"));
        assert_eq!(bearer_token("BEARER\t tok "), Some("tok"));
        assert_eq!(bearer_token("Basic tok"), None);
        assert_eq!(bearer_token("Bearertok"), None);
        assert_eq!(bearer_token("tok"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn firehose_ranges() {
        let ok = StreamRequest::new("GET", "/firehose?count=5&size=64");
        assert_eq!(firehose_params(&ok), Ok((5, 64)));
        for bad in [
            "count=0&size=1",
            "count=1&size=0",
            "count=1&size=65537",
            "size=1",
            "count=10000001&size=1",
        ] {
            assert!(
                firehose_params(&StreamRequest::new("GET", &format!("/firehose?{bad}"))).is_err(),
                "{bad}"
            );
        }
    }
}
