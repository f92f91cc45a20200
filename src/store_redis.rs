//! The Redis engine behind `--redis`: one id sequence, one order and one
//! history shared by every instance pointed at the same Redis.
//!
//! A publish is one Lua script ([`PUBLISH_LUA`]): it takes the next id,
//! appends the event to its topic's stream and to the notification stream
//! every instance follows, atomically. A stream entry's id is the event's
//! id (`<id>-0`), so replay after an id is a range read, and the follower
//! resumes after the last id it delivered. Each entry also carries the id
//! that came before it (in its topic, and in the notification stream), so
//! a reader knows for sure whether anything between was trimmed or lost:
//! a `gap` is reported exactly, never guessed from lengths. A publish
//! carries a deadline and a token, so that one reported as failed does not
//! appear later, and one whose answer was lost is not published twice.
//!
//! The hub uses it through the `Cluster` seam (`RedisCluster`, at the
//! end); docs/redis.md has the keys, the
//! script, the id scheme, the replay-to-live handover and the faults.
//!
//! The items are `pub` only so that the hidden `redis_engine` module in
//! lib.rs can hand them to tests/redis_store.rs; they are not API.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use redis::{Client, Connection, ConnectionAddr, Value};

use crate::store::{Cluster, Replay};

/// How to reach Redis and what to keep there.
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host[:port][/db]` (or `unix://` /
    /// `redis+unix://` with a socket path). It may carry a password: it is
    /// never printed.
    pub url: String,
    /// Events kept per topic (`--history`); the stream is trimmed
    /// approximately (`MAXLEN ~`), and a replay returns at most this many.
    pub history: usize,
    /// Events older than this leave the history (`--history-age`).
    pub history_age: Option<Duration>,
    /// Bound on opening a connection (TCP connect and the handshake).
    pub connect_timeout: Duration,
    /// Bound on one call: a publish or a replay returns (with an error if
    /// Redis did not answer) within this, a reconnect included.
    pub command_timeout: Duration,
    /// Prefix of every key. It should be a hash tag (`{tinysse}`), so that
    /// all keys live in one slot and the script runs on a Redis Cluster.
    pub prefix: String,
    /// Entries kept in the notification stream (`MAXLEN ~`): how far a
    /// follower may fall behind (e.g. while Redis or the network is down)
    /// and still catch up without a gap.
    pub notify_len: usize,
}

impl RedisOptions {
    /// The defaults: `--history`'s 1024, no age limit, 2 s timeouts, the
    /// `{tinysse}` prefix, 10,000 notifications.
    pub fn new(url: impl Into<String>) -> RedisOptions {
        RedisOptions {
            url: url.into(),
            history: 1024,
            history_age: None,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            prefix: "{tinysse}".to_string(),
            notify_len: 10_000,
        }
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact(&self.url))
            .field("history", &self.history)
            .field("history_age", &self.history_age)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("prefix", &self.prefix)
            .field("notify_len", &self.notify_len)
            .finish()
    }
}

/// What a publish got: the event's id, the same on every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The id Redis gave the event.
    pub id: u64,
}

/// One event as Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisEvent {
    /// Its id.
    pub id: u64,
    /// Its topic.
    pub topic: String,
    /// The encoded event without its `id:` line, as published.
    pub payload: Vec<u8>,
}

/// What a follower hands over, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// The next event: its id is larger than every one handed over before.
    Event(RedisEvent),
    /// Events after `after` (the last id handed over) may have been missed:
    /// they left the notification stream before this follower read them,
    /// or Redis lost its data. The next `Event` continues from there, so
    /// local subscribers should catch up from [`RedisStore::replay`].
    Gap {
        /// The last id handed over before the gap.
        after: u64,
    },
}

/// A replay of some topics, one consistent snapshot of Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The retained events after the asked id, oldest first.
    pub events: Vec<RedisEvent>,
    /// Some events after the asked id are no longer held (trimmed by
    /// `history` or `history_age`, lost with Redis's data, or the id is
    /// larger than any issued): the client gets a `gap` first.
    pub gap: bool,
    /// The highest id issued when the snapshot was taken. Every event of
    /// these topics up to it is in `events` or covered by `gap`; the live
    /// side hands over every later one (see docs/redis.md).
    pub upto: u64,
}

/// An error from the Redis engine. Its text is one line and never shows a
/// password.
#[derive(Debug)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL is not one this build can use (for exit 2).
    BadUrl {
        /// The URL with any password and query left out.
        url: String,
        /// Why.
        reason: String,
        /// The client library's error, if it found the fault.
        source: Option<redis::RedisError>,
    },
    /// The server is not a Redis this engine can use (too old).
    Unsupported {
        /// `host:port` or socket path.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Redis could not be reached or did not answer in time: try later.
    Unavailable {
        /// `host:port` or socket path.
        addr: String,
        /// What was being done.
        during: &'static str,
        /// The cause, in a few words.
        reason: String,
        /// The client library's error.
        source: Option<redis::RedisError>,
    },
    /// The publish went out, the connection broke before the answer, and
    /// Redis did not come back within the timeout to say whether it ran:
    /// the event may exist (then every follower delivers it).
    MaybePublished {
        /// `host:port` or socket path.
        addr: String,
        /// The client library's error when the connection broke.
        source: Option<redis::RedisError>,
    },
    /// Redis answered with an error, or with something this engine does
    /// not understand.
    Failed {
        /// `host:port` or socket path.
        addr: String,
        /// What was being done.
        during: &'static str,
        /// The answer, in a few words.
        reason: String,
        /// The client library's error.
        source: Option<redis::RedisError>,
    },
}

impl RedisError {
    /// Whether the fault is in the configuration (exit 2) rather than in
    /// Redis being away.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            RedisError::BadUrl { .. } | RedisError::Unsupported { .. }
        )
    }
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisError::BadUrl { url, reason, .. } => {
                write!(f, "bad Redis URL {url:?}: {reason}")
            }
            RedisError::Unsupported { addr, reason } => write!(f, "Redis at {addr}: {reason}"),
            RedisError::Unavailable {
                addr,
                during,
                reason,
                ..
            } => write!(f, "Redis at {addr} unavailable ({during}): {reason}"),
            RedisError::MaybePublished { addr, .. } => write!(
                f,
                "Redis at {addr} went away during the publish and did not come back in time: \
                 the event may have been published"
            ),
            RedisError::Failed {
                addr,
                during,
                reason,
                ..
            } => write!(f, "Redis at {addr} failed ({during}): {reason}"),
        }
    }
}

impl std::error::Error for RedisError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RedisError::BadUrl { source, .. }
            | RedisError::Unavailable { source, .. }
            | RedisError::MaybePublished { source, .. }
            | RedisError::Failed { source, .. } => source
                .as_ref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            RedisError::Unsupported { .. } => None,
        }
    }
}

/// The publish script. Keys (one hash tag, so one slot): the id counter,
/// the data set's first id, the topic's stream, the topic's last id, the
/// notification stream, and this publish's token (a retry finds its id
/// there). Arguments: topic, payload, history, age in µs and
/// in ms (0 = off), notification length, the highest id this instance has
/// seen (so an emptied Redis whose clock is behind still never reuses an
/// id someone saw), and the deadline in Redis's clock (µs) after which
/// the caller has given up, and the token's lifetime in ms. It answers
/// `{id, now}`, or `{'late', now}` without writing anything.
///
/// Lua numbers are doubles: ids stay exact below 2^53 µs (the year 2255),
/// and are written with `%.0f`, never with `tostring` (which would print
/// `1.7e+15`). `#!lua` (Redis 7) makes Redis refuse the whole script up
/// front when it is out of memory, instead of failing half-way.
pub const PUBLISH_LUA: &str = r#"#!lua
local function int(n) return string.format('%.0f', n) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- A retry of a publish that ran but whose answer was lost (Redis went away
-- right after): the same answer again, not a second event.
local done = redis.call('GET', KEYS[6])
if done then return {done, int(now)} end
-- The caller gave up by now (Redis was hung, or the script waited in a
-- socket): publish nothing, or a failed publish would appear later.
if now > tonumber(ARGV[8]) then return {'late', int(now)} end
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local base = tonumber(redis.call('GET', KEYS[2]) or '0')
local last = redis.call('GET', KEYS[4])
local age_us = tonumber(ARGV[4])
-- Never back: after the counter, after the clock, after any id seen.
local id = math.max(seq + 1, now, tonumber(ARGV[7]) + 1)
if last then id = math.max(id, tonumber(last) + 1) end
if seq == 0 then
  -- No counter: an emptied Redis (or a new one). Stay above anything the
  -- notification stream still holds, and start a new data set.
  local top = redis.call('XREVRANGE', KEYS[5], '+', '-', 'COUNT', 1)
  if top[1] then
    id = math.max(id, tonumber(string.match(top[1][1], '^(%d+)')) + 1)
  end
  base = 0
end
if base == 0 then
  base = id
  redis.call('SET', KEYS[2], int(base))
end
-- The topic's previous id; when unknown, the newest id that may be lost:
-- before this data set, or (with an age limit) expired with the topic.
local prev = last
if not prev then
  local p = base - 1
  if age_us > 0 then p = math.max(p, now - age_us) end
  prev = int(p)
end
local sid = int(id)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], sid .. '-0', 'p', ARGV[2], 'v', prev)
if age_us > 0 then
  redis.call('XTRIM', KEYS[3], 'MINID', '~', int(now - age_us) .. '-0')
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  -- The last id outlives the events by an hour, so that the next event's
  -- `v` stays exact (no needless gap) for a topic quiet that long.
  redis.call('SET', KEYS[4], sid, 'PX', int(tonumber(ARGV[5]) + 3600000))
else
  redis.call('SET', KEYS[4], sid)
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[6], sid .. '-0',
  't', ARGV[1], 'p', ARGV[2], 'v', int(seq))
redis.call('SET', KEYS[1], sid)
redis.call('SET', KEYS[6], sid, 'PX', ARGV[9])
return {sid, int(now)}
"#;

/// Idle connections kept for publishes and replays.
const MAX_IDLE: usize = 16;
/// A pooled connection idle this long is checked with a `PING` before use:
/// after a Redis restart it would otherwise fail one publish.
const CHECK_IDLE_AFTER: Duration = Duration::from_millis(100);
/// How long a follower's `XREAD` blocks: how soon it notices `stop`.
const FOLLOW_BLOCK: Duration = Duration::from_millis(250);
/// Notifications read at once.
const FOLLOW_COUNT: usize = 128;
/// The follower's reconnect backoff.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The Redis engine: publish, replay, and a follower per instance.
/// Cloning shares the connections.
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    addr: String,
    opts: RedisOptions,
    keys: Keys,
    idle: Mutex<Vec<Idle>>,
    /// The SHA1 Redis gave the publish script.
    sha: String,
    /// The highest id this instance has seen, passed to every publish.
    seen: AtomicU64,
    /// Redis's clock as seen from here, for the publish deadline.
    clock: Mutex<Clock>,
    /// Random, so that publish tokens differ between instances and runs.
    nonce: u64,
    tokens: AtomicU64,
}

/// A call that failed: the error, and whether the request may have run in
/// Redis with its answer lost (the connection broke after it went out).
struct CallError {
    error: RedisError,
    lost: bool,
}

/// Pause between a publish's retries while Redis comes back.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// A reading of Redis's `TIME`: `redis_us` at local instant `at`, known
/// within `rtt / 2`.
#[derive(Clone, Copy)]
struct Clock {
    at: Instant,
    redis_us: u64,
    rtt: Duration,
}

/// A new reading replaces the current one when it is about as precise, or
/// the current one is this old (clocks drift, and Redis's may be stepped).
const CLOCK_FRESH: Duration = Duration::from_secs(10);

struct Idle {
    con: Connection,
    since: Instant,
}

struct Keys {
    seq: String,
    base: String,
    notify: String,
    prefix: String,
}

impl Keys {
    fn topic(&self, topic: &str) -> String {
        format!("{}:t:{topic}", self.prefix)
    }
    fn last(&self, topic: &str) -> String {
        format!("{}:l:{topic}", self.prefix)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("addr", &self.shared.addr)
            .field("prefix", &self.shared.keys.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Parses and checks the URL (a bad one is [`RedisError::BadUrl`],
    /// naming it without its password), connects within `connect_timeout`,
    /// checks the server is Redis 7 or later and loads the publish script.
    pub fn connect(opts: RedisOptions) -> Result<RedisStore, RedisError> {
        let client = open_client(&opts.url)?;
        let addr = addr_text(client.get_connection_info().addr());
        let p = &opts.prefix;
        let keys = Keys {
            seq: format!("{p}:seq"),
            base: format!("{p}:base"),
            notify: format!("{p}:notify"),
            prefix: p.clone(),
        };
        let mut shared = Shared {
            client,
            addr,
            opts,
            keys,
            idle: Mutex::new(Vec::new()),
            sha: String::new(),
            seen: AtomicU64::new(0),
            clock: Mutex::new(Clock {
                at: Instant::now(),
                redis_us: 0,
                rtt: Duration::MAX,
            }),
            nonce: nonce(),
            tokens: AtomicU64::new(0),
        };
        let deadline = Instant::now() + shared.opts.connect_timeout + shared.opts.command_timeout;
        let mut con = shared.open(deadline, "connect")?;
        arm(&con, deadline).map_err(|e| shared.error("connect", e))?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut con)
            .map_err(|e| shared.error("connect", e))?;
        check_version(&info).map_err(|reason| RedisError::Unsupported {
            addr: shared.addr.clone(),
            reason,
        })?;
        let sent = Instant::now();
        let time: Value = redis::cmd("TIME")
            .query(&mut con)
            .map_err(|e| shared.error("connect", e))?;
        let now = time_us(&time).ok_or_else(|| RedisError::Failed {
            addr: shared.addr.clone(),
            during: "connect",
            reason: "unexpected TIME answer".into(),
            source: None,
        })?;
        shared.sample(sent, now, true);
        shared.sha = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(PUBLISH_LUA)
            .query(&mut con)
            .map_err(|e| shared.error("connect", e))?;
        let seq: Option<u64> = redis::cmd("GET")
            .arg(&shared.keys.seq)
            .query(&mut con)
            .map_err(|e| shared.error("connect", e))?;
        shared.seen.store(seq.unwrap_or(0), Ordering::Relaxed);
        shared.put_back(con);
        Ok(RedisStore {
            shared: Arc::new(shared),
        })
    }

    /// Publishes one event: one script, atomic in Redis. Returns once Redis
    /// answered, or with an error within `command_timeout`.
    ///
    /// An error means nothing was published: the script carries a deadline
    /// in Redis's clock, three quarters into the timeout, and past it writes
    /// nothing, so a publish stuck in a hung Redis does not appear once it
    /// resumes. When the connection breaks after the request went out
    /// (Redis killed, or shut down before answering), the publish retries
    /// with the same token until Redis is back, and a run that happened
    /// answers with its id instead of publishing twice; if Redis is not
    /// back in time, [`RedisError::MaybePublished`] says so. The one case
    /// left: an answer delayed (not lost) by more than a quarter of the
    /// timeout, after the script ran.
    pub fn publish(&self, topic: &str, payload: &[u8]) -> Result<Published, RedisError> {
        let sh = &*self.shared;
        let start = Instant::now();
        let budget = sh.opts.command_timeout;
        let give_up = start + budget;
        let run_by = start + (budget - budget / 4);
        let token = sh.token();
        let mut clock_retried = false;
        // Set once a request went out and its answer was lost: from then
        // on only Redis can tell whether it ran, so retry (with the same
        // token) until it does or time is up.
        let mut lost: Option<RedisError> = None;
        loop {
            let left = run_by.saturating_duration_since(Instant::now());
            let deadline = sh.redis_now() + left.as_micros() as u64;
            let sent = Instant::now();
            let call = sh.with_conn("publish", give_up, |con| {
                sh.run_publish(con, topic, payload, deadline, &token)
            });
            let (reply, now) = match call {
                Ok(r) => r,
                Err(e) if e.lost || lost.is_some() => {
                    if e.lost {
                        lost = Some(e.error);
                    }
                    if Instant::now() + RETRY_PAUSE >= give_up {
                        let source = match lost {
                            Some(RedisError::Unavailable { source, .. }) => source,
                            _ => None,
                        };
                        return Err(RedisError::MaybePublished {
                            addr: sh.addr.clone(),
                            source,
                        });
                    }
                    thread::sleep(RETRY_PAUSE);
                    continue;
                }
                Err(e) => return Err(e.error),
            };
            if let Ok(id) = reply.parse::<u64>() {
                sh.sample(sent, now, false);
                sh.saw(id);
                return Ok(Published { id });
            }
            if reply != "late" {
                return Err(RedisError::Failed {
                    addr: sh.addr.clone(),
                    during: "publish",
                    reason: format!("the script returned {:?}, not an id", one_line(&reply)),
                    source: None,
                });
            }
            // Refused as late (so no earlier try ran: its token would have
            // answered). Quickly: Redis's clock moved (stepped, or drifted
            // from the reading); read it again and retry once.
            sh.sample(sent, now, true);
            if clock_retried || Instant::now() > start + (run_by - start) / 2 {
                return Err(RedisError::Unavailable {
                    addr: sh.addr.clone(),
                    during: "publish",
                    reason: "Redis ran the publish too late; nothing was published".into(),
                    source: None,
                });
            }
            clock_retried = true;
        }
    }

    /// The retained events of `topics` after `after`, merged in id order,
    /// from one atomic snapshot (`MULTI`): whether some are no longer held
    /// (a gap), and the highest id issued at that moment (see
    /// [`Replayed::upto`]).
    pub fn replay(&self, topics: &[&str], after: u64) -> Result<Replayed, RedisError> {
        let sh = &*self.shared;
        let history = sh.opts.history.max(1);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("GET").arg(&sh.keys.seq);
        pipe.cmd("GET").arg(&sh.keys.base);
        pipe.cmd("TIME");
        for t in topics {
            pipe.cmd("GET").arg(sh.keys.last(t));
            // Newest first, at most `history`, all after `after`.
            pipe.cmd("XREVRANGE")
                .arg(sh.keys.topic(t))
                .arg("+")
                .arg(format!("({after}-0"))
                .arg("COUNT")
                .arg(history);
        }
        let until = Instant::now() + sh.opts.command_timeout;
        let reply: Vec<Value> = sh
            .with_conn("replay", until, |con| pipe.query(con))
            .map_err(|e| e.error)?;
        let bad = |what: &str| RedisError::Failed {
            addr: sh.addr.clone(),
            during: "replay",
            reason: format!("unexpected answer: {what}"),
            source: None,
        };
        if reply.len() != 3 + 2 * topics.len() {
            return Err(bad("wrong number of results"));
        }
        let seq = opt_u64(&reply[0]).map_err(|_| bad("counter"))?;
        let base = opt_u64(&reply[1]).map_err(|_| bad("base"))?;
        let now = time_us(&reply[2]).ok_or_else(|| bad("TIME"))?;
        let cutoff = sh
            .opts
            .history_age
            .map_or(0, |a| now.saturating_sub(a.as_micros() as u64));

        let upto = seq.unwrap_or(0);
        // Nothing issued since the data set began, an id from before it, or
        // one larger than any issued: whatever it refers to is not held.
        let mut gap = match (seq, base) {
            (Some(s), Some(b)) => after > s || after.saturating_add(1) < b,
            _ => true,
        };
        let mut events = Vec::new();
        for (i, topic) in topics.iter().enumerate() {
            let last = opt_u64(&reply[3 + 2 * i]).map_err(|_| bad("topic's last id"))?;
            let mut held = Vec::new();
            for e in as_array(&reply[4 + 2 * i]).ok_or_else(|| bad("XREVRANGE"))? {
                let (id, fields) = entry(e).ok_or_else(|| bad("stream entry"))?;
                // Past the age limit, though the approximate trim kept it.
                if id < cutoff {
                    break;
                }
                let prev = field(&fields, b"v").and_then(parse_u64);
                let payload = field(&fields, b"p").ok_or_else(|| bad("entry without payload"))?;
                held.push((id, prev, payload.to_vec()));
            }
            held.reverse();
            gap |= match (held.first(), last) {
                // The event before the oldest held is gone: was it after `after`?
                (Some((_, prev, _)), _) => prev.is_none_or(|p| p > after),
                // Nothing held after `after`, yet the topic has later events.
                (None, Some(l)) => l > after,
                // A topic expired whole by the age limit, or never used.
                (None, None) => cutoff > 0 && after.saturating_add(1) < cutoff,
            };
            events.extend(held.into_iter().map(|(id, _, payload)| RedisEvent {
                id,
                topic: topic.to_string(),
                payload,
            }));
        }
        events.sort_by_key(|e| e.id);
        // A topic named twice.
        events.dedup_by_key(|e| e.id);
        sh.saw(upto);
        Ok(Replayed { events, gap, upto })
    }

    /// The highest id issued so far (0 when Redis has none).
    pub fn highest_id(&self) -> Result<u64, RedisError> {
        let sh = &*self.shared;
        let until = Instant::now() + sh.opts.command_timeout;
        let seq: Option<u64> = sh
            .with_conn("read the id counter", until, |con| {
                redis::cmd("GET").arg(&sh.keys.seq).query(con)
            })
            .map_err(|e| e.error)?;
        let seq = seq.unwrap_or(0);
        sh.saw(seq);
        Ok(seq)
    }

    /// Starts the follower: a thread with a connection of its own that
    /// reads the notification stream after `from` (the last id this
    /// instance delivered; `None`: after the highest id issued now) and
    /// calls `deliver` for each event, in id order, exactly once, with a
    /// [`Followed::Gap`] first when it cannot prove nothing was missed. On
    /// any error it reconnects with backoff (100 ms doubling to 5 s) and
    /// resumes after the last id it delivered. `on_health` hears
    /// `Err(reason)` when Redis stops being usable and `Ok(())` when it is
    /// again (and once at the first successful read).
    pub fn follow(
        &self,
        from: Option<u64>,
        deliver: Box<dyn FnMut(Followed) + Send>,
        on_health: Box<dyn Fn(Result<(), String>) + Send>,
    ) -> Result<Follower, RedisError> {
        let from = match from {
            Some(id) => id,
            None => self.highest_id()?,
        };
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let mut follow = Follow {
            shared: Arc::clone(&self.shared),
            stop: stop_rx,
            last: from,
            expect_prev: from,
            deliver,
            on_health,
            reported: None,
        };
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        let thread = thread::Builder::new()
            .name("tinysse-redis-follow".into())
            .spawn(move || {
                let _done = done_tx;
                follow.run()
            })
            .map_err(|e| RedisError::Failed {
                addr: self.shared.addr.clone(),
                during: "follow",
                reason: format!("cannot start the follower thread: {e}"),
                source: None,
            })?;
        Ok(Follower {
            stop: stop_tx,
            done: done_rx,
            thread: Some(thread),
        })
    }
}

/// A running follower. Dropping it asks the thread to stop without
/// waiting; [`Follower::join`] waits.
pub struct Follower {
    stop: Sender<()>,
    /// Disconnected once the thread ends.
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Follower {
    /// Asks the thread to stop; returns at once.
    pub fn stop(&self) {
        let _ = self.stop.try_send(());
    }

    /// Stops the thread and waits for it: within the `XREAD` block
    /// (250 ms) while Redis answers; when Redis hangs, within the
    /// connect or command timeout.
    pub fn join(mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops the thread and waits for it until `deadline`; `false` if it
    /// had not ended by then (a hung Redis holds it up to its timeouts: it
    /// ends on its own, unwaited for).
    pub fn join_until(mut self, deadline: Instant) -> bool {
        self.stop();
        match self.done.recv_deadline(deadline) {
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                true
            }
            _ => false,
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for Follower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Follower")
            .field(
                "running",
                &self.thread.as_ref().is_some_and(|t| !t.is_finished()),
            )
            .finish()
    }
}

struct Follow {
    shared: Arc<Shared>,
    stop: Receiver<()>,
    /// The last id delivered (or the start position).
    last: u64,
    /// The `v` (previous id) the next notification carries when nothing
    /// was missed since `last`.
    expect_prev: u64,
    deliver: Box<dyn FnMut(Followed) + Send>,
    on_health: Box<dyn Fn(Result<(), String>) + Send>,
    reported: Option<Result<(), String>>,
}

impl Follow {
    fn run(&mut self) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            match self.session() {
                // Stopped.
                Ok(()) => return,
                Err((e, read)) => {
                    self.health(Err(e.to_string()));
                    if read {
                        backoff = BACKOFF_FIRST;
                    }
                }
            }
            match self.stop.recv_timeout(backoff) {
                Err(RecvTimeoutError::Timeout) => backoff = (backoff * 2).min(BACKOFF_MAX),
                _ => return,
            }
        }
    }

    fn stopped(&self) -> bool {
        !matches!(self.stop.try_recv(), Err(TryRecvError::Empty))
    }

    /// One connection's life: `Ok` when stopped, else the error that ended
    /// it and whether a read had succeeded on it (so the backoff restarts:
    /// Redis was usable, a failure right after connecting is not).
    fn session(&mut self) -> Result<(), (RedisError, bool)> {
        let sh = Arc::clone(&self.shared);
        let o = &sh.opts;
        let deadline = Instant::now() + o.connect_timeout + o.command_timeout;
        let mut con = sh.open(deadline, "follow").map_err(|e| (e, false))?;
        let read_timeout = FOLLOW_BLOCK + o.command_timeout;
        let set = con
            .set_read_timeout(Some(read_timeout))
            .and_then(|()| con.set_write_timeout(Some(o.command_timeout)));
        set.map_err(|e| (sh.error("follow", e), false))?;

        // Where Redis stands now: lower than what was delivered means it
        // lost its data; higher, the next read must show what came between.
        let seq: Option<u64> = redis::cmd("GET")
            .arg(&sh.keys.seq)
            .query(&mut con)
            .map_err(|e| (sh.error("follow", e), false))?;
        let seq = seq.unwrap_or(0);
        let mut behind = None;
        let mut read = false;
        if seq < self.last {
            (self.deliver)(Followed::Gap { after: self.last });
            self.expect_prev = seq;
        } else if seq > self.last {
            behind = Some(seq);
        }
        loop {
            if self.stopped() {
                return Ok(());
            }
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(FOLLOW_COUNT)
                .arg("BLOCK")
                .arg(FOLLOW_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&sh.keys.notify)
                .arg(format!("{}-0", self.last));
            let reply: Value = cmd
                .query(&mut con)
                .map_err(|e| (sh.error("follow", e), read))?;
            read = true;
            self.health(Ok(()));
            let entries = xread_entries(reply).ok_or_else(|| {
                let e = RedisError::Failed {
                    addr: sh.addr.clone(),
                    during: "follow",
                    reason: "unexpected XREAD answer".into(),
                    source: None,
                };
                (e, true)
            })?;
            if entries.is_empty() {
                if let Some(seq) = behind.take().filter(|&s| s > self.last) {
                    // Issued, yet none left to read: trimmed away.
                    (self.deliver)(Followed::Gap { after: self.last });
                    self.expect_prev = seq;
                }
                continue;
            }
            behind = None;
            for e in entries {
                let Some((id, fields)) = entry(&e) else {
                    continue;
                };
                // XREAD returns only ids after `last`; this guards against a
                // stream that is not ours.
                if id <= self.last {
                    continue;
                }
                let prev = field(&fields, b"v").and_then(parse_u64);
                let topic = field(&fields, b"t").and_then(|t| std::str::from_utf8(t).ok());
                let (Some(topic), Some(payload)) = (topic, field(&fields, b"p")) else {
                    continue;
                };
                if prev != Some(self.expect_prev) {
                    (self.deliver)(Followed::Gap { after: self.last });
                }
                (self.deliver)(Followed::Event(RedisEvent {
                    id,
                    topic: topic.to_string(),
                    payload: payload.to_vec(),
                }));
                self.last = id;
                self.expect_prev = id;
                sh.saw(id);
            }
        }
    }

    fn health(&mut self, state: Result<(), String>) {
        if self.reported.as_ref() != Some(&state) {
            (self.on_health)(state.clone());
            self.reported = Some(state);
        }
    }
}

impl Shared {
    /// One `EVALSHA` of the publish script (`EVAL` if Redis forgot it):
    /// its answer and Redis's clock then.
    fn run_publish(
        &self,
        con: &mut Connection,
        topic: &str,
        payload: &[u8],
        deadline: u64,
        token: &str,
    ) -> redis::RedisResult<(String, u64)> {
        let o = &self.opts;
        let age_us = o.history_age.map_or(0, |a| a.as_micros().max(1)) as u64;
        let age_ms = o.history_age.map_or(0, |a| a.as_millis().max(1)) as u64;
        let keys = [
            self.keys.seq.clone(),
            self.keys.base.clone(),
            self.keys.topic(topic),
            self.keys.last(topic),
            self.keys.notify.clone(),
            token.to_string(),
        ];
        // Long enough for every retry of this publish (they end within
        // `command_timeout`), short enough to cost little memory.
        let token_ms = (2 * o.command_timeout.as_millis()).max(1000) as u64;
        let floor = self.seen.load(Ordering::Relaxed);
        let args = |c: &mut redis::Cmd| {
            c.arg(keys.len()).arg(&keys[..]).arg(topic).arg(payload);
            c.arg(o.history.max(1)).arg(age_us).arg(age_ms);
            c.arg(o.notify_len.max(1))
                .arg(floor)
                .arg(deadline)
                .arg(token_ms);
        };
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(&self.sha);
        args(&mut evalsha);
        let (reply, now): (String, String) = match evalsha.query(con) {
            // Redis restarted and forgot the script: EVAL loads it again.
            Err(e) if e.code() == Some("NOSCRIPT") => {
                let mut eval = redis::cmd("EVAL");
                eval.arg(PUBLISH_LUA);
                args(&mut eval);
                eval.query(con)?
            }
            r => r?,
        };
        Ok((reply, now.parse().unwrap_or(0)))
    }

    /// Redis's clock now, as estimated from the last reading.
    fn redis_now(&self) -> u64 {
        let c = *self.clock.lock().unwrap_or_else(|p| p.into_inner());
        c.redis_us.saturating_add(c.at.elapsed().as_micros() as u64)
    }

    /// Takes a reading of Redis's clock (`redis_us`, from an answer to a
    /// request sent at `sent`) when it is precise enough, or when `force`d.
    fn sample(&self, sent: Instant, redis_us: u64, force: bool) {
        if redis_us == 0 {
            return;
        }
        let rtt = sent.elapsed();
        let mut c = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        let precise = rtt <= c.rtt.saturating_mul(2).max(Duration::from_millis(1));
        if force || precise || c.at.elapsed() > CLOCK_FRESH {
            *c = Clock {
                at: sent + rtt / 2,
                redis_us,
                rtt,
            };
        }
    }

    fn saw(&self, id: u64) {
        self.seen.fetch_max(id, Ordering::Relaxed);
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put_back(&self, con: Connection) {
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                con,
                since: Instant::now(),
            });
        }
    }

    /// A new connection, opened before `deadline` (and within
    /// `connect_timeout`).
    fn open(&self, deadline: Instant, during: &'static str) -> Result<Connection, RedisError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let t = self.opts.connect_timeout.min(left);
        if t.is_zero() {
            return Err(self.timed_out(during));
        }
        self.client
            .get_connection_with_timeout(t)
            .map_err(|e| self.error(during, e))
    }

    /// Runs `f` on a pooled or new connection, all before `deadline`. A
    /// connection that failed in any way is dropped, never reused: its
    /// state is unknown.
    fn with_conn<T>(
        &self,
        during: &'static str,
        deadline: Instant,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, CallError> {
        let before = |error| CallError { error, lost: false };
        let mut con = loop {
            let Some(idle) = self.idle().pop() else {
                break self.open(deadline, during).map_err(before)?;
            };
            let mut con = idle.con;
            if idle.since.elapsed() < CHECK_IDLE_AFTER {
                break con;
            }
            arm(&con, deadline).map_err(|e| before(self.error(during, e)))?;
            match redis::cmd("PING").query::<()>(&mut con) {
                Ok(()) => break con,
                // Hung: another connection would hang too.
                Err(e) if e.is_timeout() => return Err(before(self.error(during, e))),
                // Closed while idle (a Redis restart): try the next one.
                Err(_) => continue,
            }
        };
        arm(&con, deadline).map_err(|e| before(self.error(during, e)))?;
        match f(&mut con) {
            Ok(v) => {
                self.put_back(con);
                Ok(v)
            }
            Err(e) => {
                // Broken, not slow: a timeout means the time is up anyway.
                let lost = !e.is_timeout() && (e.is_connection_dropped() || e.is_io_error());
                Err(CallError {
                    error: self.error(during, e),
                    lost,
                })
            }
        }
    }

    /// A key no other publish, here or on another instance, ever uses.
    fn token(&self) -> String {
        let n = self.tokens.fetch_add(1, Ordering::Relaxed);
        format!("{}:k:{:016x}-{n}", self.keys.prefix, self.nonce)
    }

    fn timed_out(&self, during: &'static str) -> RedisError {
        RedisError::Unavailable {
            addr: self.addr.clone(),
            during,
            reason: "no answer within the timeout".into(),
            source: None,
        }
    }

    fn error(&self, during: &'static str, e: redis::RedisError) -> RedisError {
        classify(&self.addr, during, e)
    }
}

/// 64 random bits from the standard library's hasher keys (seeded by the
/// OS), mixed with the process id and the time.
fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// Sets both socket timeouts to what is left before `deadline`.
fn arm(con: &Connection, deadline: Instant) -> redis::RedisResult<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    // Zero would mean no timeout at all.
    let left = left.max(Duration::from_millis(1));
    con.set_read_timeout(Some(left))?;
    con.set_write_timeout(Some(left))
}

fn classify(addr: &str, during: &'static str, e: redis::RedisError) -> RedisError {
    let addr = addr.to_string();
    let unavailable = |reason: &str, e| RedisError::Unavailable {
        addr: addr.clone(),
        during,
        reason: reason.to_string(),
        source: Some(e),
    };
    if e.is_timeout() {
        return unavailable("no answer within the timeout", e);
    }
    if e.is_connection_refusal() {
        return unavailable("connection refused", e);
    }
    if e.is_connection_dropped() {
        return unavailable("connection lost", e);
    }
    if e.is_io_error() {
        return unavailable("I/O error", e);
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return RedisError::Failed {
            addr,
            during,
            reason: "authentication failed: check the URL's user and password".into(),
            source: Some(e),
        };
    }
    if let Some(code) = e.code() {
        let code = code.to_string();
        // Redis is starting, or a replica lost its primary: it will pass.
        if matches!(
            code.as_str(),
            "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN"
        ) {
            return unavailable(&format!("{code} (Redis is busy)"), e);
        }
        let detail = e.detail().map(one_line).unwrap_or_default();
        return RedisError::Failed {
            addr,
            during,
            reason: format!("{code} {detail}").trim_end().to_string(),
            source: Some(e),
        };
    }
    RedisError::Failed {
        addr,
        during,
        reason: format!("{:?} error", e.kind()),
        source: Some(e),
    }
}

fn open_client(url: &str) -> Result<Client, RedisError> {
    let bad = |reason: &str, source| RedisError::BadUrl {
        url: redact(url),
        reason: reason.to_string(),
        source,
    };
    if url.contains(['\r', '\n']) {
        return Err(bad("it contains a line break", None));
    }
    // The library names each scheme it knows; TLS is not built in.
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("redis" | "valkey" | "unix" | "redis+unix" | "valkey+unix") => {}
        Some("rediss" | "valkeys") => {
            return Err(bad(
                "TLS (rediss://) is not built in; use a local TLS tunnel",
                None,
            ));
        }
        _ => return Err(bad("expected redis://host[:port][/db]", None)),
    }
    Client::open(url).map_err(|e| {
        // The library's text is `description - Kind[: detail]`; none of
        // its URL errors quote the password.
        let text = e.to_string().replacen(" - InvalidClientConfig", "", 1);
        let reason = match one_line(&text) {
            t if t.starts_with("Redis URL did not parse") => "it does not parse".to_string(),
            t => t.chars().take(100).collect(),
        };
        bad(&reason, Some(e))
    })
}

fn addr_text(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) if host.contains(':') => format!("[{host}]:{port}"),
        ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        ConnectionAddr::Unix(path) => path.display().to_string(),
        other => format!("{other:?}"),
    }
}

/// The URL without its password (or user) and without its query (a unix
/// socket URL carries `pass=` there), on one line, at most 200 characters.
pub(crate) fn redact(url: &str) -> String {
    let head = url.split(['?', '#']).next().unwrap_or("");
    let cut = head.len() < url.len();
    let (scheme, rest) = match head.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, head),
    };
    // Anything before the last `@` is user information, even when a
    // password holds a `/` the parser would have taken for the path.
    let rest = match rest.rfind('@') {
        Some(at) => format!("***{}", &rest[at..]),
        None => rest.to_string(),
    };
    let mut out = match scheme {
        Some(s) => format!("{s}://{rest}"),
        None => rest,
    };
    if cut {
        out.push_str("?…");
    }
    let out = one_line(&out);
    match out.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &out[..i]),
        None => out,
    }
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Redis 7 or later: `#!lua` scripts, `XADD ... MINID`, exclusive ranges.
fn check_version(info: &str) -> Result<(), String> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .ok_or("no redis_version in INFO: is this Redis?")?;
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("unreadable version {:?}", one_line(version)))?;
    if major < 7 {
        return Err(format!(
            "Redis {} is too old: 7.0 or later is needed",
            one_line(version)
        ));
    }
    Ok(())
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// A `GET` answer as a number; `Err` when it is something else.
fn opt_u64(v: &Value) -> Result<Option<u64>, ()> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => parse_u64(b).map(Some).ok_or(()),
        Value::SimpleString(s) => parse_u64(s.as_bytes()).map(Some).ok_or(()),
        Value::Int(n) => u64::try_from(*n).map(Some).map_err(|_| ()),
        _ => Err(()),
    }
}

/// `TIME` in µs.
fn time_us(v: &Value) -> Option<u64> {
    let [s, us] = as_array(v)? else {
        return None;
    };
    let s = opt_u64(s).ok()??;
    let us = opt_u64(us).ok()??;
    s.checked_mul(1_000_000)?.checked_add(us)
}

fn as_array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        Value::Nil => Some(&[]),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A stream entry's fields and values.
type Fields<'a> = Vec<(&'a [u8], &'a [u8])>;

/// A stream entry `[id, [field, value, ...]]`: our id (the part before
/// `-`) and the fields.
fn entry(v: &Value) -> Option<(u64, Fields<'_>)> {
    let [id, fields] = as_array(v)? else {
        return None;
    };
    let id = bytes(id)?;
    let ms = id.split(|&b| b == b'-').next()?;
    let id = parse_u64(ms)?;
    let fields = match fields {
        Value::Map(m) => m
            .iter()
            .map(|(k, v)| Some((bytes(k)?, bytes(v)?)))
            .collect::<Option<Vec<_>>>()?,
        v => as_array(v)?
            .chunks_exact(2)
            .map(|kv| Some((bytes(&kv[0])?, bytes(&kv[1])?)))
            .collect::<Option<Vec<_>>>()?,
    };
    Some((id, fields))
}

fn field<'a>(fields: &[(&[u8], &'a [u8])], name: &[u8]) -> Option<&'a [u8]> {
    fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// The entries of an `XREAD` answer on one stream (RESP2 or RESP3).
fn xread_entries(reply: Value) -> Option<Vec<Value>> {
    let entries = match reply {
        Value::Nil => return Some(Vec::new()),
        Value::Array(streams) => match streams.into_iter().next() {
            None => return Some(Vec::new()),
            Some(Value::Array(mut kv)) if kv.len() == 2 => kv.pop()?,
            Some(_) => return None,
        },
        Value::Map(streams) => streams.into_iter().next()?.1,
        _ => return None,
    };
    match entries {
        Value::Array(e) => Some(e),
        _ => None,
    }
}

/// The engine as the hub's [`Cluster`] seam, with its follower's view of
/// whether Redis is usable (for `/healthz`).
pub(crate) struct RedisCluster {
    store: RedisStore,
    health: Arc<Mutex<Result<(), String>>>,
}

impl RedisCluster {
    /// The engine, taken as healthy (it just connected), and the state its
    /// follower's `on_health` keeps up to date.
    pub(crate) fn new(store: RedisStore) -> (RedisCluster, Arc<Mutex<Result<(), String>>>) {
        let health = Arc::new(Mutex::new(Ok(())));
        let cluster = RedisCluster {
            store,
            health: health.clone(),
        };
        (cluster, health)
    }
}

impl Cluster for RedisCluster {
    fn publish(&self, topic: &str, payload: &[u8]) -> Result<u64, String> {
        self.store
            .publish(topic, payload)
            .map(|p| p.id)
            .map_err(|e| e.to_string())
    }

    fn replay(&self, topics: &[&str], after: u64) -> Result<Replay, String> {
        let r = self
            .store
            .replay(topics, after)
            .map_err(|e| e.to_string())?;
        Ok(Replay {
            events: r
                .events
                .into_iter()
                .map(|e| (e.id, e.topic, e.payload))
                .collect(),
            gap: r.gap,
            upto: r.upto,
        })
    }

    fn health(&self) -> Result<(), String> {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_and_queries() {
        let cases = [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:s3cret@h:1", "redis://***@h:1"),
            ("redis://user:s3cret@h", "redis://***@h"),
            ("redis://:pa/ss@h/0", "redis://***@h/0"),
            (
                "unix:///run/redis.sock?pass=s3cret",
                "unix:///run/redis.sock?…",
            ),
            ("user:s3cret@h", "***@h"),
            ("redis://h/0#frag", "redis://h/0?…"),
            ("redis://h\n:x", "redis://h :x"),
        ];
        for (url, want) in cases {
            assert_eq!(redact(url), want, "{url}");
        }
        assert!(redact(&"x".repeat(500)).chars().count() <= 201);
    }

    #[test]
    fn bad_urls_are_config_errors_naming_the_url_without_its_password() {
        for url in [
            "http://:s3cret@localhost:6379",
            "rediss://:s3cret@localhost:6379",
            "redis://:s3cret@",
            "redis://:s3cret@localhost:6379/notadb",
            "redis://:s3cret@localhost:99999",
            "localhost:6379",
            "",
            "redis://:s3cret@h\r\nPING",
        ] {
            let e = RedisStore::connect(RedisOptions::new(url)).expect_err(url);
            assert!(e.is_config(), "{url}: {e:?}");
            let text = e.to_string();
            assert!(!text.contains("s3cret"), "{url}: {text}");
            assert!(!text.contains('\n'), "{url}: {text}");
            assert!(text.starts_with("bad Redis URL"), "{url}: {text}");
            assert!(!format!("{e:?}").contains("s3cret"), "{url}: {e:?}");
        }
    }

    #[test]
    fn options_debug_hides_the_password() {
        let o = RedisOptions::new("redis://:s3cret@h:1");
        assert!(!format!("{o:?}").contains("s3cret"));
    }

    #[test]
    fn versions_before_7_are_refused() {
        assert!(check_version("# Server\r\nredis_version:7.0.15\r\n").is_ok());
        assert!(check_version("redis_version:8.2.1").is_ok());
        let e = check_version("redis_version:6.2.14\r\n").unwrap_err();
        assert!(e.contains("6.2.14"), "{e}");
        assert!(check_version("hello").is_err());
    }

    #[test]
    fn entries_parse_in_both_protocols() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = Value::Array(vec![
            b("17-0"),
            Value::Array(vec![
                b("t"),
                b("news"),
                b("p"),
                b("data: x\n\n"),
                b("v"),
                b("9"),
            ]),
        ]);
        let (id, f) = entry(&resp2).unwrap();
        assert_eq!(id, 17);
        assert_eq!(field(&f, b"t"), Some(&b"news"[..]));
        assert_eq!(field(&f, b"v").and_then(parse_u64), Some(9));
        let xread = Value::Map(vec![(b("k"), Value::Array(vec![resp2.clone()]))]);
        assert_eq!(xread_entries(xread).unwrap().len(), 1);
        let xread = Value::Array(vec![Value::Array(vec![b("k"), Value::Array(vec![resp2])])]);
        assert_eq!(xread_entries(xread).unwrap().len(), 1);
        assert_eq!(xread_entries(Value::Nil).unwrap().len(), 0);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"99999999999999999999999"), None);
    }

    #[test]
    fn the_store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<RedisStore>();
        check::<Follower>();
    }
}
