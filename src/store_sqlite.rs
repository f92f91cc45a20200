//! Durable history: events kept in a SQLite database file (`--store FILE`).
//!
//! One writer thread owns the only connection. Appends queue up on a
//! channel; the writer takes every append waiting and commits them in one
//! transaction (group commit), so N concurrent publishers cost one commit,
//! not N. Retention (per topic, by age) runs inside those same
//! transactions. The connection runs in WAL mode with
//! `locking_mode=EXCLUSIVE`: no `-shm` file, and a second process (or a
//! second open in this one) is refused instead of racing for ids.
//!
//! Schema, version marker, sync modes and disk bounds: `docs/store.md`.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, Statement, params};

/// `PRAGMA application_id` of a tinysse store: "TSSE".
const APPLICATION_ID: i32 = 0x5453_5345;
/// `PRAGMA user_version`: the schema this code reads and writes.
const SCHEMA_VERSION: i32 = 1;
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Created in the same transaction that sets the application id and the
/// version, so a file either is a complete tinysse store or is still empty.
const SCHEMA: &str = "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('highest_id', 0);
    INSERT INTO meta (key, value) VALUES ('first_id', 0);
    CREATE TABLE pruned (topic TEXT PRIMARY KEY, upto INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        topic   TEXT    NOT NULL,
        at_ms   INTEGER NOT NULL,
        payload BLOB    NOT NULL
    );
    CREATE INDEX events_by_topic ON events (topic, id);
    CREATE INDEX events_by_age ON events (at_ms);
";

const INSERT: &str = "INSERT INTO events (id, topic, at_ms, payload) VALUES (?1, ?2, ?3, ?4)";
/// A topic's oldest events, found through its index.
const TRIM_TOPIC: &str = "DELETE FROM events WHERE id IN
    (SELECT id FROM events WHERE topic = ?1 ORDER BY id LIMIT ?2) RETURNING id";
/// Events past the age limit, found through the `at_ms` index: with nothing
/// to delete it costs one index probe.
const PRUNE_AGE: &str = "DELETE FROM events WHERE at_ms < ?1 RETURNING topic, id";
/// The largest id that has left each topic, so that after a restart a
/// client asking from before it gets a `gap`, and one asking from after it
/// does not.
const RAISE_PRUNED: &str = "INSERT INTO pruned (topic, upto) VALUES (?1, ?2)
    ON CONFLICT (topic) DO UPDATE SET upto = max(upto, excluded.upto)";
const RAISE_HIGHEST: &str = "UPDATE meta SET value = ?1 WHERE key = 'highest_id' AND value < ?1";
const LOAD: &str = "SELECT id, topic, at_ms, payload FROM events WHERE at_ms >= ?1 ORDER BY id";

/// A transaction's size is bounded so the WAL stays bounded too; the rest of
/// the queue goes into the next transaction, in order.
const MAX_BATCH: usize = 1024;
const MAX_BATCH_BYTES: usize = 8 << 20;
/// After a checkpoint the WAL is truncated to this size.
const JOURNAL_SIZE_LIMIT: i64 = 4 << 20;
/// Pages in the WAL before the writer copies them into the database file.
const WAL_AUTOCHECKPOINT: i64 = 1000;
/// Commits between two looks at the free-page count.
const VACUUM_CHECK_EVERY: u64 = 256;
/// Free pages tolerated before `incremental_vacuum` gives them back to the
/// file system (at least this many, and at least a quarter of the file).
const VACUUM_MIN_FREE_PAGES: i64 = 256;

/// How hard a commit pushes the data to the disk (WAL mode always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncMode {
    /// `synchronous=NORMAL`: a commit survives the process being killed; the
    /// last commits may be lost on power loss.
    Normal,
    /// `synchronous=FULL`: every commit is fsynced, so it survives power loss.
    Full,
}

/// What [`SqliteStore::open`] keeps and how it commits.
#[derive(Debug, Clone)]
pub(crate) struct StoreOptions {
    /// Durability of a commit.
    pub sync: SyncMode,
    /// Events kept per topic; older ones are deleted.
    pub history: usize,
    /// Events published longer ago than this are deleted.
    pub history_age: Option<Duration>,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The event id (at most `i64::MAX`, SQLite's integer).
    pub id: u64,
    /// The topic it was published to.
    pub topic: String,
    /// Publish time, milliseconds since the Unix epoch (for `history_age`).
    pub at_ms: u64,
    /// The encoded event without its `id:` line.
    pub payload: Vec<u8>,
}

/// The clock age retention measures against, in ms since the Unix epoch.
pub(crate) type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The history of every topic in a SQLite file. `Send + Sync`: any thread
/// appends; the writer thread commits.
pub(crate) struct SqliteStore {
    queue: Sender<Msg>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    // Fields drop after `Drop::drop` has joined the writer: the path is
    // released only once the connection is closed.
    claim: Claim,
}

/// State the writer publishes for every caller.
struct Shared {
    highest_id: AtomicU64,
    commits: AtomicU64,
    /// `Some(reason)` from a failed commit until one succeeds.
    unhealthy: Mutex<Option<String>>,
}

type Reply<T> = Sender<Result<T, StoreError>>;

enum Msg {
    Append(Record, Reply<()>),
    Load(Reply<Vec<Record>>),
    Pruned(Reply<HashMap<String, u64>>),
    /// Tests: the writer waits until this channel says go (or closes).
    #[cfg(test)]
    Hold(Receiver<()>),
    FirstId(u64, Reply<u64>),
    PruneByAge(Reply<usize>),
    Stop,
}

impl SqliteStore {
    /// Opens the store at `path`, or creates it. Refuses, leaving the file
    /// as it was and no `-wal`/`-shm` behind: a file that is not SQLite, a
    /// database of another program or of a newer schema, a corrupt
    /// database, a file or directory it cannot write, a store already open.
    pub(crate) fn open(path: &Path, opts: StoreOptions) -> Result<SqliteStore, OpenError> {
        SqliteStore::open_with_clock(path, opts, Arc::new(system_now_ms))
    }

    /// [`SqliteStore::open`] with the clock that `history_age` is measured
    /// against.
    pub(crate) fn open_with_clock(
        path: &Path,
        opts: StoreOptions,
        now_ms: Clock,
    ) -> Result<SqliteStore, OpenError> {
        let claim = Claim::take(path)?;
        let conn = open_connection(path)?;
        let shared = Arc::new(Shared {
            highest_id: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            unhealthy: Mutex::new(None),
        });
        let writer = Writer::start(&conn, &opts, now_ms, Arc::clone(&shared))
            .map_err(|e| OpenError::sqlite(path, OpenErrorKind::Io, "cannot start", e))?;
        let (queue, inbox) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("tinysse-store".into())
            .spawn(move || writer.run(conn, inbox))
            .map_err(|e| {
                OpenError::io(path, OpenErrorKind::Io, "cannot start its writer thread", e)
            })?;
        Ok(SqliteStore {
            queue,
            shared,
            writer: Some(thread),
            claim,
        })
    }

    /// Every retained event of every topic, ids ascending, after retention
    /// is applied.
    pub(crate) fn load(&self) -> Result<Vec<Record>, StoreError> {
        self.ask(Msg::Load)
    }

    /// The highest id ever stored, kept after its event is pruned (0 for a
    /// new file).
    pub(crate) fn highest_id(&self) -> u64 {
        self.shared.highest_id.load(Ordering::Acquire)
    }

    /// Stores one event; returns once the transaction holding it is
    /// committed (durable per [`SyncMode`]). Concurrent calls share one
    /// transaction. On an error (disk full, I/O) nothing of that
    /// transaction is kept and every caller in it gets the error; the next
    /// appends try again.
    pub(crate) fn append(&self, rec: Record) -> Result<(), StoreError> {
        self.ask(|reply| Msg::Append(rec, reply))
    }

    /// `Ok` while commits succeed; the reason of the last failed commit
    /// until a later one succeeds.
    pub(crate) fn health(&self) -> Result<(), String> {
        if self.writer.as_ref().is_none_or(|w| w.is_finished()) {
            return Err(StoreError::closed().to_string());
        }
        match &*lock(&self.shared.unhealthy) {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }

    /// The largest id that has left each topic (by retention), for the
    /// hub's `gap` after a restart.
    pub(crate) fn pruned(&self) -> Result<HashMap<String, u64>, StoreError> {
        self.ask(Msg::Pruned)
    }

    /// The first id the store was used with: `seed` for a store never
    /// published to, which it then keeps. A client holding an id from
    /// before it may have missed events the store never held.
    pub(crate) fn first_id(&self, seed: u64) -> Result<u64, StoreError> {
        self.ask(|reply| Msg::FirstId(seed, reply))
    }

    /// Deletes the events older than `history_age` now; how many.
    pub(crate) fn prune_by_age(&self) -> Result<usize, StoreError> {
        self.ask(Msg::PruneByAge)
    }

    /// Transactions committed since the store was opened.
    #[cfg(test)]
    pub(crate) fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    fn ask<T>(&self, msg: impl FnOnce(Reply<T>) -> Msg) -> Result<T, StoreError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.queue
            .send(msg(reply))
            .map_err(|_| StoreError::closed())?;
        answer.recv().unwrap_or_else(|_| Err(StoreError::closed()))
    }
}

impl crate::store::Store for SqliteStore {
    fn append(&self, topic: &str, id: u64, at_ms: u64, payload: &[u8]) -> Result<(), String> {
        SqliteStore::append(
            self,
            Record {
                id,
                topic: topic.to_string(),
                at_ms,
                payload: payload.to_vec(),
            },
        )
        .map_err(|e| e.to_string())
    }

    fn load(&self, seed: u64) -> Result<crate::store::Loaded, String> {
        let events = SqliteStore::load(self).map_err(|e| e.to_string())?;
        Ok(crate::store::Loaded {
            events: events
                .into_iter()
                .map(|r| (r.id, r.topic, r.at_ms, r.payload))
                .collect(),
            highest_id: self.highest_id(),
            first_id: self.first_id(seed).map_err(|e| e.to_string())?,
            pruned: self.pruned().map_err(|e| e.to_string())?,
        })
    }

    fn health(&self) -> Result<(), String> {
        SqliteStore::health(self)
    }

    fn prune_by_age(&self) -> Result<(), String> {
        SqliteStore::prune_by_age(self)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let _ = self.queue.send(Msg::Stop);
        if let Some(thread) = self.writer.take() {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.claim.0)
            .field("highest_id", &self.highest_id())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Paths open as stores in this process. A second open of the same file is
/// refused before any file descriptor is opened on it: closing one would
/// drop the POSIX locks SQLite holds on it for the first.
static OPEN_PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

struct Claim(PathBuf);

impl Claim {
    fn take(path: &Path) -> Result<Claim, OpenError> {
        let key = canonical(path)
            .map_err(|e| OpenError::io(path, OpenErrorKind::Io, "cannot resolve the path", e))?;
        let mut open = lock(&OPEN_PATHS);
        if open.contains(&key) {
            return Err(OpenError::new(
                path,
                OpenErrorKind::InUse,
                "already open as a store in this process".into(),
                None,
            ));
        }
        open.push(key.clone());
        Ok(Claim(key))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&OPEN_PATHS).retain(|p| p != &self.0);
    }
}

/// The file's canonical path, or its directory's joined with its name when
/// it does not exist yet.
fn canonical(path: &Path) -> std::io::Result<PathBuf> {
    match fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let name = path.file_name().ok_or(e)?;
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            Ok(fs::canonicalize(dir)?.join(name))
        }
        Err(e) => Err(e),
    }
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Files SQLite may create beside the database, and whether each was there
/// before this open, so that a refusal removes only what it created.
struct Sidecars {
    db_created: bool,
    before: Vec<(PathBuf, bool)>,
}

impl Sidecars {
    fn note(path: &Path, db_created: bool) -> Sidecars {
        let before = ["-wal", "-shm", "-journal"]
            .iter()
            .map(|s| {
                let p = sidecar(path, s);
                let was = exists(&p);
                (p, was)
            })
            .collect();
        Sidecars { db_created, before }
    }

    /// Called with the connection closed.
    fn remove_new(&self, path: &Path) {
        for (p, was) in &self.before {
            if !was {
                let _ = fs::remove_file(p);
            }
        }
        if self.db_created {
            let _ = fs::remove_file(path);
        }
    }
}

/// Checks the file, then opens the writer's connection: exclusive lock, WAL,
/// schema created for a new or empty file. Nothing is written to an
/// existing file before it has passed every check.
fn open_connection(path: &Path) -> Result<Connection, OpenError> {
    let len = match fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            return Err(OpenError::new(
                path,
                OpenErrorKind::NotSqlite,
                "not a regular file".into(),
                None,
            ));
        }
        Ok(m) => Some(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(OpenError::io(path, OpenErrorKind::Io, "cannot read", e)),
    };
    if len.is_some() {
        check_file(path)?;
    }
    let wal = sidecar(path, "-wal");
    if !exists(&wal) {
        // SQLite creates the WAL beside the file; finding out now that it
        // cannot (read-only or immutable directory) keeps the file untouched.
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&wal)
            .map_err(|e| {
                OpenError::io(
                    path,
                    OpenErrorKind::NotWritable,
                    &format!(
                        "cannot create its WAL {} (the directory must be writable)",
                        wal.display()
                    ),
                    e,
                )
            })?;
        let _ = fs::remove_file(&wal);
    }
    let fresh = len.unwrap_or(0) == 0;
    let sidecars = Sidecars::note(path, len.is_none());
    connect(path, fresh, &sidecars)
}

/// The checks that need no SQLite: writable, and a header that says
/// "tinysse store" (for an empty file: nothing to check, it becomes one).
fn check_file(path: &Path) -> Result<(), OpenError> {
    // Opening for writing writes nothing, and fails on a read-only file,
    // an immutable one and a read-only mount.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| {
            OpenError::io(
                path,
                OpenErrorKind::NotWritable,
                "cannot open for writing",
                e,
            )
        })?;
    let mut head = Vec::with_capacity(100);
    (&mut f)
        .take(100)
        .read_to_end(&mut head)
        .map_err(|e| OpenError::io(path, OpenErrorKind::Io, "cannot read", e))?;
    if head.is_empty() {
        return Ok(());
    }
    if head.len() < 100 || &head[..16] != SQLITE_MAGIC {
        return Err(OpenError::new(
            path,
            OpenErrorKind::NotSqlite,
            "not a SQLite database".into(),
            None,
        ));
    }
    let be = |at: usize| i32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    check_marker(path, be(68), be(60))
}

fn check_marker(path: &Path, app_id: i32, version: i32) -> Result<(), OpenError> {
    if app_id != APPLICATION_ID {
        let reason = if app_id == 0 {
            "a SQLite database of another program (no tinysse application_id)".to_string()
        } else {
            format!("a SQLite database of another program (application_id {app_id:#010x})")
        };
        return Err(OpenError::new(
            path,
            OpenErrorKind::OtherProgram,
            reason,
            None,
        ));
    }
    if version != SCHEMA_VERSION {
        return Err(OpenError::new(
            path,
            OpenErrorKind::UnsupportedVersion,
            format!(
                "a tinysse store of schema version {version}; this tinysse reads version {SCHEMA_VERSION}"
            ),
            None,
        ));
    }
    Ok(())
}

/// Opens the connection; on a refusal, closes it before removing what it
/// created beside the file.
fn connect(path: &Path, fresh: bool, sidecars: &Sidecars) -> Result<Connection, OpenError> {
    let flags = if fresh {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = match Connection::open_with_flags(path, flags) {
        Ok(conn) => conn,
        Err(e) => {
            sidecars.remove_new(path);
            return Err(OpenError::from_sqlite(path, "cannot open", e));
        }
    };
    match configure(path, fresh, &conn) {
        Ok(()) => Ok(conn),
        Err(e) => {
            drop(conn);
            sidecars.remove_new(path);
            Err(e)
        }
    }
}

fn configure(path: &Path, fresh: bool, conn: &Connection) -> Result<(), OpenError> {
    let sql = |what: &'static str| move |e| OpenError::from_sqlite(path, what, e);
    // Until the file has passed the checks, closing must not checkpoint a
    // WAL into it.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(sql("cannot configure"))?;
    // Exclusive before the first read: the WAL index then lives in the
    // process's memory (no -shm file) and the lock shuts out other processes.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(sql("cannot lock"))?;
    if conn.is_readonly("main").unwrap_or(true) {
        return Err(OpenError::new(
            path,
            OpenErrorKind::NotWritable,
            "opened read-only".into(),
            None,
        ));
    }
    if fresh {
        create_schema(conn).map_err(sql("cannot create the store"))?;
    } else {
        verify(path, conn)?;
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(sql("cannot use WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::new(
            path,
            OpenErrorKind::Io,
            format!("cannot use WAL mode (journal_mode stays {mode})"),
            None,
        ));
    }
    // Takes the write lock now, so a store in use elsewhere is refused here
    // rather than at the first publish.
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
        .map_err(sql("cannot lock for writing"))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)
        .map_err(sql("cannot configure"))?;
    Ok(())
}

fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    // auto_vacuum must be chosen before the first table exists.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.execute_batch(&format!(
        "BEGIN;
         {SCHEMA}
         PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = {SCHEMA_VERSION};
         COMMIT;"
    ))
}

/// Read-only checks of an existing store, through SQLite (so a WAL left by
/// a crash is read too): the marker again, the tables, `quick_check`.
fn verify(path: &Path, conn: &Connection) -> Result<(), OpenError> {
    let sql = |what: &str, e| OpenError::from_sqlite(path, what, e);
    conn.pragma_update(None, "query_only", true)
        .map_err(|e| sql("cannot configure", e))?;
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| sql("cannot read", e))?;
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| sql("cannot read", e))?;
    check_marker(path, app_id, version)?;
    let mut problems = Vec::new();
    {
        let mut stmt = conn
            .prepare("PRAGMA quick_check(5)")
            .map_err(|e| sql("cannot check", e))?;
        let mut rows = stmt.query([]).map_err(|e| sql("cannot check", e))?;
        while let Some(row) = rows.next().map_err(|e| sql("cannot check", e))? {
            let line: String = row.get(0).map_err(|e| sql("cannot check", e))?;
            if line != "ok" {
                problems.push(line.replace(['\n', '\r'], " "));
            }
        }
    }
    if !problems.is_empty() {
        return Err(OpenError::new(
            path,
            OpenErrorKind::Corrupt,
            format!("corrupt database (quick_check: {})", problems.join("; ")),
            None,
        ));
    }
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('meta', 'events')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| sql("cannot read", e))?;
    if tables != 2 {
        return Err(OpenError::new(
            path,
            OpenErrorKind::Corrupt,
            "a tinysse store without its tables".into(),
            None,
        ));
    }
    conn.pragma_update(None, "query_only", false)
        .map_err(|e| sql("cannot configure", e))
}

/// Statements prepared once for the life of the connection: preparing
/// costs about as much as running them.
struct Statements<'c> {
    insert: Statement<'c>,
    trim: Statement<'c>,
    prune: Statement<'c>,
    highest: Statement<'c>,
    load: Statement<'c>,
    pruned: Statement<'c>,
}

impl<'c> Statements<'c> {
    fn prepare(conn: &'c Connection) -> rusqlite::Result<Statements<'c>> {
        Ok(Statements {
            insert: conn.prepare(INSERT)?,
            trim: conn.prepare(TRIM_TOPIC)?,
            prune: conn.prepare(PRUNE_AGE)?,
            highest: conn.prepare(RAISE_HIGHEST)?,
            load: conn.prepare(LOAD)?,
            pruned: conn.prepare(RAISE_PRUNED)?,
        })
    }
}

/// Runs `f` in one transaction; on any error nothing of it is kept.
fn in_transaction<T>(
    conn: &Connection,
    f: impl FnOnce() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    if !conn.is_autocommit() {
        // A rollback that failed last time (I/O error) left one open.
        conn.execute_batch("ROLLBACK")?;
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = f().and_then(|v| conn.execute_batch("COMMIT").map(|()| v));
    // After SQLITE_FULL or an I/O error SQLite may have rolled back already.
    if result.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

/// The writer thread's state besides its connection. `counts` mirrors how
/// many events each topic holds, so per-topic retention deletes exactly
/// the excess without counting rows.
struct Writer {
    history: u64,
    age_ms: Option<u64>,
    now_ms: Clock,
    counts: HashMap<String, u64>,
    shared: Arc<Shared>,
    commits_since_vacuum_check: u64,
}

type Batch = Vec<(Record, Reply<()>)>;
/// Events added (or removed, negative) per topic by one transaction,
/// applied to `counts` once it is committed.
type Delta = HashMap<String, i64>;

impl Writer {
    /// Configures the connection, reads the counts and the highest id, and
    /// applies retention (`--history` may be lower than in the last run).
    fn start(
        conn: &Connection,
        opts: &StoreOptions,
        now_ms: Clock,
        shared: Arc<Shared>,
    ) -> rusqlite::Result<Writer> {
        let sync = match opts.sync {
            SyncMode::Normal => "NORMAL",
            SyncMode::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)?;
        let highest: i64 =
            conn.query_row("SELECT value FROM meta WHERE key = 'highest_id'", [], |r| {
                r.get(0)
            })?;
        shared
            .highest_id
            .store(u64::try_from(highest).unwrap_or(0), Ordering::Release);
        let mut counts = HashMap::new();
        {
            let mut stmt = conn.prepare("SELECT topic, count(*) FROM events GROUP BY topic")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (topic, n) = row?;
                counts.insert(topic, u64::try_from(n).unwrap_or(0));
            }
        }
        let mut w = Writer {
            history: u64::try_from(opts.history).unwrap_or(u64::MAX),
            age_ms: opts
                .history_age
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            now_ms,
            counts,
            shared,
            commits_since_vacuum_check: 0,
        };
        let over: Vec<(String, u64)> = w
            .counts
            .iter()
            .filter(|(_, n)| **n > w.history)
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        if !over.is_empty() || w.age_ms.is_some() {
            let mut st = Statements::prepare(conn)?;
            let delta = in_transaction(conn, || {
                let mut delta = Delta::new();
                for (topic, n) in &over {
                    trim_topic(&mut st, topic, *n, w.history, &mut delta)?;
                }
                prune_age(&mut st, w.age_ms, &w.now_ms, &mut delta)?;
                Ok(delta)
            })?;
            apply(&mut w.counts, delta);
        }
        w.vacuum_if_sparse(conn);
        Ok(w)
    }

    /// The writer thread: serves the queue until `Stop` or until every
    /// sender is gone, then checkpoints and closes.
    fn run(mut self, conn: Connection, inbox: Receiver<Msg>) {
        match Statements::prepare(&conn) {
            Ok(mut st) => self.serve(&conn, &mut st, &inbox),
            Err(e) => self.failed(&StoreError::from_sqlite(e)),
        }
        // A clean stop leaves no WAL behind: checkpoint, then close (which
        // deletes it).
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        if let Err((_, e)) = conn.close() {
            log::warn!("store: closing: {e}");
        }
    }

    fn serve(&mut self, conn: &Connection, st: &mut Statements<'_>, inbox: &Receiver<Msg>) {
        let mut next = None;
        loop {
            let msg = match next.take() {
                Some(m) => m,
                None => match inbox.recv() {
                    Ok(m) => m,
                    Err(_) => return,
                },
            };
            match msg {
                Msg::Append(rec, reply) => {
                    // Everything already waiting joins this transaction.
                    let mut bytes = rec.payload.len();
                    let mut batch = vec![(rec, reply)];
                    while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                        match inbox.try_recv() {
                            Ok(Msg::Append(rec, reply)) => {
                                bytes += rec.payload.len();
                                batch.push((rec, reply));
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit(conn, st, batch);
                }
                Msg::Load(reply) => {
                    let _ = reply.send(self.load(conn, st));
                }
                Msg::PruneByAge(reply) => {
                    let _ = reply.send(self.prune_by_age(conn, st));
                }
                #[cfg(test)]
                Msg::Hold(go) => {
                    let _ = go.recv();
                }
                Msg::Pruned(reply) => {
                    let _ = reply.send(pruned(conn));
                }
                Msg::FirstId(seed, reply) => {
                    let _ = reply.send(first_id(conn, seed));
                }
                Msg::Stop => return,
            }
        }
    }

    fn commit(&mut self, conn: &Connection, st: &mut Statements<'_>, batch: Batch) {
        let mut outcomes: Vec<Result<(), StoreError>> = Vec::with_capacity(batch.len());
        match in_transaction(conn, || self.write(st, &batch, &mut outcomes)) {
            Ok((delta, highest)) => {
                apply(&mut self.counts, delta);
                self.shared.highest_id.fetch_max(highest, Ordering::AcqRel);
                self.committed(conn);
                for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                let e = StoreError::from_sqlite(e);
                self.failed(&e);
                for (_, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// The batch's statements, inside its transaction: inserts in queue
    /// order, then retention for the topics it touched, and by age.
    fn write(
        &self,
        st: &mut Statements<'_>,
        batch: &Batch,
        outcomes: &mut Vec<Result<(), StoreError>>,
    ) -> rusqlite::Result<(Delta, u64)> {
        let mut delta = Delta::new();
        let mut highest = 0u64;
        for (rec, _) in batch {
            let (Ok(id), Ok(at_ms)) = (i64::try_from(rec.id), i64::try_from(rec.at_ms)) else {
                outcomes.push(Err(StoreError::rejected(format!(
                    "id {} or time {} out of range",
                    rec.id, rec.at_ms
                ))));
                continue;
            };
            match st
                .insert
                .execute(params![id, rec.topic, at_ms, rec.payload])
            {
                Ok(_) => {
                    *delta.entry(rec.topic.clone()).or_default() += 1;
                    highest = highest.max(rec.id);
                    outcomes.push(Ok(()));
                }
                // A constraint failure undoes only its own statement: the
                // rest of the batch goes on.
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                    outcomes.push(Err(StoreError::rejected(format!(
                        "id {} is already stored",
                        rec.id
                    ))));
                }
                Err(e) => return Err(e),
            }
        }
        let touched: Vec<(String, u64)> = delta
            .iter()
            .map(|(t, d)| (t.clone(), add(self.counts.get(t).copied().unwrap_or(0), *d)))
            .collect();
        for (topic, count) in touched {
            trim_topic(st, &topic, count, self.history, &mut delta)?;
        }
        prune_age(st, self.age_ms, &self.now_ms, &mut delta)?;
        if highest > 0 {
            st.highest
                .execute([i64::try_from(highest).unwrap_or(i64::MAX)])?;
        }
        Ok((delta, highest))
    }

    fn load(
        &mut self,
        conn: &Connection,
        st: &mut Statements<'_>,
    ) -> Result<Vec<Record>, StoreError> {
        // Age retention is applied by the query too, so a prune that failed
        // (disk full) still hides what it should have deleted.
        if self.age_ms.is_some() {
            let _ = self.prune_by_age(conn, st);
        }
        let cutoff = self
            .age_ms
            .map_or(0, |age| (self.now_ms)().saturating_sub(age));
        let rows = st
            .load
            .query_map([i64::try_from(cutoff).unwrap_or(i64::MAX)], |r| {
                Ok(Record {
                    id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    topic: r.get(1)?,
                    at_ms: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    payload: r.get(3)?,
                })
            })
            .map_err(StoreError::from_sqlite)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(StoreError::from_sqlite)
    }

    fn prune_by_age(
        &mut self,
        conn: &Connection,
        st: &mut Statements<'_>,
    ) -> Result<usize, StoreError> {
        if self.age_ms.is_none() {
            return Ok(0);
        }
        let pruned = in_transaction(conn, || {
            let mut delta = Delta::new();
            prune_age(st, self.age_ms, &self.now_ms, &mut delta)?;
            Ok(delta)
        });
        match pruned {
            Ok(delta) => {
                let dropped = delta.values().map(|d| d.unsigned_abs()).sum::<u64>();
                apply(&mut self.counts, delta);
                self.committed(conn);
                if dropped > 0 {
                    self.vacuum_if_sparse(conn);
                }
                Ok(usize::try_from(dropped).unwrap_or(usize::MAX))
            }
            Err(e) => {
                let e = StoreError::from_sqlite(e);
                self.failed(&e);
                Err(e)
            }
        }
    }

    fn committed(&mut self, conn: &Connection) {
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        if lock(&self.shared.unhealthy).take().is_some() {
            log::info!("store: commits succeed again");
        }
        self.commits_since_vacuum_check += 1;
        if self.commits_since_vacuum_check >= VACUUM_CHECK_EVERY {
            self.vacuum_if_sparse(conn);
        }
    }

    fn failed(&self, e: &StoreError) {
        let mut unhealthy = lock(&self.shared.unhealthy);
        if unhealthy.is_none() {
            log::warn!("store: commit failed: {e}");
        }
        *unhealthy = Some(e.to_string());
    }

    /// Steady retention reuses freed pages; this gives the file system back
    /// the pages a large deletion (an age prune, a lower `--history`) freed.
    fn vacuum_if_sparse(&mut self, conn: &Connection) {
        self.commits_since_vacuum_check = 0;
        let pages = |name: &str| -> rusqlite::Result<i64> {
            conn.pragma_query_value(None, name, |r| r.get(0))
        };
        let (Ok(free), Ok(total)) = (pages("freelist_count"), pages("page_count")) else {
            return;
        };
        if free >= VACUUM_MIN_FREE_PAGES && free * 4 >= total {
            // It frees one page per step: run it to the end.
            let vacuum = || -> rusqlite::Result<()> {
                let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
                let mut rows = stmt.query([])?;
                while rows.next()?.is_some() {}
                Ok(())
            };
            if let Err(e) = vacuum() {
                log::warn!("store: incremental_vacuum: {e}");
            }
        }
    }
}

fn pruned(conn: &Connection) -> Result<HashMap<String, u64>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT topic, upto FROM pruned")
        .map_err(StoreError::from_sqlite)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })
        .map_err(StoreError::from_sqlite)?;
    rows.collect::<rusqlite::Result<HashMap<_, _>>>()
        .map_err(StoreError::from_sqlite)
}

fn first_id(conn: &Connection, seed: u64) -> Result<u64, StoreError> {
    let seed = i64::try_from(seed).unwrap_or(i64::MAX);
    let read = || -> rusqlite::Result<i64> {
        conn.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'first_id' AND value = 0",
            [seed],
        )?;
        conn.query_row("SELECT value FROM meta WHERE key = 'first_id'", [], |r| {
            r.get(0)
        })
    };
    read()
        .map(|v| u64::try_from(v).unwrap_or(0))
        .map_err(StoreError::from_sqlite)
}

fn add(count: u64, delta: i64) -> u64 {
    count.saturating_add_signed(delta)
}

fn apply(counts: &mut HashMap<String, u64>, delta: Delta) {
    for (topic, d) in delta {
        let n = add(counts.get(&topic).copied().unwrap_or(0), d);
        if n == 0 {
            counts.remove(&topic);
        } else {
            counts.insert(topic, n);
        }
    }
}

/// Deletes a topic's oldest events beyond `history`.
fn trim_topic(
    st: &mut Statements<'_>,
    topic: &str,
    count: u64,
    history: u64,
    delta: &mut Delta,
) -> rusqlite::Result<()> {
    if count <= history {
        return Ok(());
    }
    let excess = i64::try_from(count - history).unwrap_or(i64::MAX);
    let mut deleted = 0i64;
    let mut upto = 0i64;
    {
        let mut rows = st.trim.query(params![topic, excess])?;
        while let Some(row) = rows.next()? {
            deleted += 1;
            upto = upto.max(row.get(0)?);
        }
    }
    if deleted > 0 {
        st.pruned.execute(params![topic, upto])?;
    }
    *delta.entry(topic.to_string()).or_default() -= deleted;
    Ok(())
}

/// Deletes the events older than the age limit.
fn prune_age(
    st: &mut Statements<'_>,
    age_ms: Option<u64>,
    now_ms: &Clock,
    delta: &mut Delta,
) -> rusqlite::Result<()> {
    let Some(age) = age_ms else { return Ok(()) };
    let cutoff = i64::try_from(now_ms().saturating_sub(age)).unwrap_or(i64::MAX);
    let mut upto: HashMap<String, i64> = HashMap::new();
    {
        let mut rows = st.prune.query([cutoff])?;
        while let Some(row) = rows.next()? {
            let topic: String = row.get(0)?;
            let id: i64 = row.get(1)?;
            *delta.entry(topic.clone()).or_default() -= 1;
            let u = upto.entry(topic).or_default();
            *u = (*u).max(id);
        }
    }
    for (topic, id) in upto {
        st.pruned.execute(params![topic, id])?;
    }
    Ok(())
}

/// Why [`SqliteStore::open`] refused a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum OpenErrorKind {
    /// Not a SQLite database at all.
    NotSqlite,
    /// A SQLite database without the tinysse application id.
    OtherProgram,
    /// A tinysse store of a schema version this code does not read.
    UnsupportedVersion,
    /// `quick_check` or SQLite found the database damaged.
    Corrupt,
    /// The file, or its directory, cannot be written.
    NotWritable,
    /// Open as a store already, by this process or another.
    InUse,
    /// Any other failure (I/O, resources).
    Io,
}

/// A refused [`SqliteStore::open`]. Its `Display` is one line naming the
/// file and the reason.
#[derive(Debug)]
#[non_exhaustive]
// The kind is what tests (and, later, callers) match on.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct OpenError {
    path: PathBuf,
    kind: OpenErrorKind,
    reason: String,
    source: Option<ErrorSource>,
}

#[derive(Debug)]
enum ErrorSource {
    Io(std::io::Error),
    Sqlite(rusqlite::Error),
}

#[cfg_attr(not(test), allow(dead_code))]
impl OpenError {
    fn new(path: &Path, kind: OpenErrorKind, reason: String, source: Option<ErrorSource>) -> Self {
        OpenError {
            path: path.to_path_buf(),
            kind,
            reason: one_line(&reason),
            source,
        }
    }

    fn io(path: &Path, kind: OpenErrorKind, what: &str, e: std::io::Error) -> Self {
        OpenError::new(path, kind, format!("{what}: {e}"), Some(ErrorSource::Io(e)))
    }

    fn sqlite(path: &Path, kind: OpenErrorKind, what: &str, e: rusqlite::Error) -> Self {
        OpenError::new(
            path,
            kind,
            format!("{what}: {e}"),
            Some(ErrorSource::Sqlite(e)),
        )
    }

    /// Classifies an error SQLite gave while opening or checking.
    fn from_sqlite(path: &Path, what: &str, e: rusqlite::Error) -> Self {
        let (kind, reason) = match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => (OpenErrorKind::NotSqlite, "not a SQLite database"),
            Some(ErrorCode::DatabaseCorrupt) => (OpenErrorKind::Corrupt, "corrupt database"),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                (OpenErrorKind::InUse, "in use by another process")
            }
            Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
                (OpenErrorKind::NotWritable, "cannot write")
            }
            _ => (OpenErrorKind::Io, what),
        };
        OpenError::new(
            path,
            kind,
            format!("{reason}: {e}"),
            Some(ErrorSource::Sqlite(e)),
        )
    }

    /// Why the file was refused.
    pub(crate) fn kind(&self) -> OpenErrorKind {
        self.kind
    }

    /// The file it was about.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store {}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.source {
            Some(ErrorSource::Io(e)) => Some(e),
            Some(ErrorSource::Sqlite(e)) => Some(e),
            None => None,
        }
    }
}

/// What went wrong with a store operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum StoreErrorKind {
    /// The disk (or the file system's quota) is full.
    DiskFull,
    /// Any other SQLite or I/O failure; the transaction was rolled back.
    Io,
    /// This one record cannot be stored (its id is taken or out of range);
    /// the others in its transaction were.
    Rejected,
    /// The writer thread is gone.
    Closed,
}

/// A failed store operation. Cloned to every caller of a failed batch; its
/// `source()` is the SQLite error.
#[derive(Debug, Clone)]
#[non_exhaustive]
// The kind is what tests (and, later, callers) match on.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct StoreError {
    kind: StoreErrorKind,
    reason: String,
    source: Option<Arc<rusqlite::Error>>,
}

#[cfg_attr(not(test), allow(dead_code))]
impl StoreError {
    fn from_sqlite(e: rusqlite::Error) -> Self {
        let kind = match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreErrorKind::DiskFull,
            _ => StoreErrorKind::Io,
        };
        let reason = match kind {
            StoreErrorKind::DiskFull => format!("disk full: {e}"),
            _ => e.to_string(),
        };
        StoreError {
            kind,
            reason: one_line(&reason),
            source: Some(Arc::new(e)),
        }
    }

    fn rejected(reason: String) -> Self {
        StoreError {
            kind: StoreErrorKind::Rejected,
            reason,
            source: None,
        }
    }

    fn closed() -> Self {
        StoreError {
            kind: StoreErrorKind::Closed,
            reason: "the store's writer has stopped".into(),
            source: None,
        }
    }

    /// What went wrong.
    pub(crate) fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store: {}", self.reason)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Reasons go on one log line: no line breaks, and not a whole
/// `quick_check` report.
fn one_line(s: &str) -> String {
    const MAX: usize = 300;
    let mut line = s
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if line.len() > MAX {
        let mut end = MAX;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str("...");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::process::Command;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// tests/common's skip policy, which unit tests cannot reach: skip with
    /// a one-line reason outside CI, fail when CI is set.
    fn skip_or_fail(test: &str, reason: &str, install: &str) -> bool {
        let line = format!("SKIPPED {test}: {reason} (install: {install})");
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false") {
            panic!("{line}; CI is set, so a missing prerequisite is a failure");
        }
        println!("{line}");
        eprintln!("{line}");
        false
    }

    fn is_root() -> bool {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    }

    fn have(program: &str) -> bool {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
    }

    fn run(program: &str, args: &[&str]) {
        let out = Command::new(program).args(args).output().expect(program);
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Root tests: mount and chattr need it (root ignores file modes, so
    /// those are how a file is made unwritable for root).
    fn need_root(test: &str) -> bool {
        if !is_root() {
            return skip_or_fail(test, "needs root (mount, chattr)", "run the tests as root");
        }
        if !have("chattr") {
            return skip_or_fail(test, "`chattr` not found", "apt-get install -y e2fsprogs");
        }
        true
    }

    static DIRS: AtomicUsize = AtomicUsize::new(0);

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "tinysse-store-{name}-{}-{}",
                std::process::id(),
                DIRS.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        fn file(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// `chattr +i` until dropped: not even root may write the file, or
    /// create files in the directory.
    struct Immutable(PathBuf);

    impl Immutable {
        fn set(path: &Path) -> Immutable {
            run("chattr", &["+i", path.to_str().unwrap()]);
            Immutable(path.to_path_buf())
        }
    }

    impl Drop for Immutable {
        fn drop(&mut self) {
            let _ = Command::new("chattr")
                .args(["-i", self.0.to_str().unwrap()])
                .status();
        }
    }

    /// A small tmpfs, unmounted when dropped.
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        fn mount(dir: &Path, size: &str) -> Tmpfs {
            fs::create_dir_all(dir).unwrap();
            run(
                "mount",
                &[
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size}"),
                    "tmpfs",
                    dir.to_str().unwrap(),
                ],
            );
            Tmpfs(dir.to_path_buf())
        }

        fn read_only(&self) {
            run("mount", &["-o", "remount,ro", self.0.to_str().unwrap()]);
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let p = self.0.to_str().unwrap();
            let ok = Command::new("umount")
                .arg(p)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").args(["-l", p]).status();
            }
        }
    }

    /// Every file in `dir` with its bytes: equal snapshots mean nothing was
    /// changed, added or removed.
    fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    fn opts(history: usize) -> StoreOptions {
        StoreOptions {
            sync: SyncMode::Normal,
            history,
            history_age: None,
        }
    }

    fn rec(id: u64, topic: &str, at_ms: u64, payload: &[u8]) -> Record {
        Record {
            id,
            topic: topic.into(),
            at_ms,
            payload: payload.to_vec(),
        }
    }

    /// Deterministic bytes (xorshift), for payloads and garbage.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn open(path: &Path, o: StoreOptions) -> SqliteStore {
        SqliteStore::open(path, o).unwrap_or_else(|e| panic!("open: {e}"))
    }

    /// A controllable clock for age retention.
    fn clock(start: u64) -> (Arc<AtomicU64>, Clock) {
        let now = Arc::new(AtomicU64::new(start));
        let c = Arc::clone(&now);
        (now, Arc::new(move || c.load(Ordering::SeqCst)))
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SqliteStore>();
        check::<StoreError>();
        check::<OpenError>();
    }

    #[test]
    fn round_trip_across_reopen_is_exact() {
        let dir = TempDir::new("roundtrip");
        let path = dir.file("store.db");
        let mut want = vec![
            rec(
                1_700_000_000_000_001,
                "a",
                1_700_000_000_000,
                b"event: x\ndata: 1\n\n",
            ),
            rec(1_700_000_000_000_002, "b", 1_700_000_000_001, b""),
            rec(
                1_700_000_000_000_005,
                "a/b:c.d-e_f",
                1_700_000_000_002,
                &noise(7, 65_536),
            ),
            rec(
                1_700_000_000_000_009,
                "b",
                1_700_000_000_003,
                &[0, 255, 10, 13, 0],
            ),
        ];
        {
            let store = open(&path, opts(100));
            assert_eq!(store.highest_id(), 0, "a new file");
            assert_eq!(store.load().unwrap(), vec![]);
            // Appended out of id order: load still answers ids ascending.
            for r in [&want[2], &want[0], &want[3], &want[1]] {
                store.append(r.clone()).unwrap();
            }
            assert_eq!(store.highest_id(), want[3].id);
            assert_eq!(store.load().unwrap(), want);
            assert_eq!(store.health(), Ok(()));
        }
        assert!(
            !exists(&sidecar(&path, "-wal")),
            "a clean close leaves no WAL"
        );
        assert!(
            !exists(&sidecar(&path, "-shm")),
            "exclusive mode needs no -shm"
        );
        let store = open(&path, opts(100));
        assert_eq!(store.load().unwrap(), want);
        assert_eq!(store.highest_id(), want[3].id);
        want.push(rec(
            1_700_000_000_000_010,
            "c",
            1_700_000_000_004,
            b"data: more\n\n",
        ));
        store.append(want[4].clone()).unwrap();
        drop(store);
        assert_eq!(open(&path, opts(100)).load().unwrap(), want);
    }

    #[test]
    fn highest_id_survives_pruning() {
        let dir = TempDir::new("highest");
        let path = dir.file("store.db");
        let (now, clock) = clock(1_000_000);
        let o = StoreOptions {
            history_age: Some(Duration::from_secs(60)),
            ..opts(2)
        };
        {
            let store = SqliteStore::open_with_clock(&path, o.clone(), Arc::clone(&clock)).unwrap();
            for id in 1..=5 {
                store.append(rec(id, "t", 1_000_000, b"x")).unwrap();
            }
            assert_eq!(
                store
                    .load()
                    .unwrap()
                    .iter()
                    .map(|r| r.id)
                    .collect::<Vec<_>>(),
                [4, 5]
            );
            now.store(1_000_000 + 61_000, Ordering::SeqCst);
            assert_eq!(store.prune_by_age().unwrap(), 2);
            assert_eq!(store.load().unwrap(), vec![]);
            assert_eq!(store.highest_id(), 5);
        }
        let store = SqliteStore::open_with_clock(&path, o, clock).unwrap();
        assert_eq!(store.load().unwrap(), vec![]);
        assert_eq!(store.highest_id(), 5, "kept though every event is gone");
    }

    #[test]
    fn group_commit_sixteen_threads_share_transactions() {
        let dir = TempDir::new("group");
        let path = dir.file("store.db");
        // FULL: each commit waits for an fsync, the case group commit is for.
        let store = open(
            &path,
            StoreOptions {
                sync: SyncMode::Full,
                ..opts(10_000)
            },
        );
        let next_id = AtomicU64::new(1);
        let per_thread = 100;
        let acked: Vec<Record> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|t| {
                    let (store, next_id) = (&store, &next_id);
                    s.spawn(move || {
                        let mut mine = Vec::new();
                        for i in 0..per_thread {
                            let id = next_id.fetch_add(1, Ordering::SeqCst);
                            let r = rec(id, &format!("t{t}"), 1, &noise(id, 64 + i));
                            store.append(r.clone()).unwrap();
                            mine.push(r);
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let appends = acked.len() as u64;
        let commits = store.commits();
        // How far they overlapped depends on the machine's load; the
        // deterministic check of batching is below.
        println!("{appends} appends in {commits} commits");
        assert!(commits <= appends);

        // With the writer held while 16 publishers queue, all 16 are one
        // transaction.
        let (go, hold) = crossbeam_channel::bounded::<()>(0);
        store.queue.send(Msg::Hold(hold)).unwrap();
        let before = store.commits();
        let late: Vec<Record> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|t| {
                    let (store, next_id) = (&store, &next_id);
                    s.spawn(move || {
                        let id = next_id.fetch_add(1, Ordering::SeqCst);
                        let r = rec(id, &format!("t{t}"), 1, b"held");
                        store.append(r.clone()).unwrap();
                        r
                    })
                })
                .collect();
            let queued = (0..2000).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(5));
                store.queue.len() >= 16
            });
            assert!(queued, "16 appends never queued");
            drop(go);
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(store.commits() - before, 1, "16 queued appends, one commit");
        drop(store);
        let mut acked = acked;
        acked.extend(late);
        let mut want = acked;
        want.sort_by_key(|r| r.id);
        assert_eq!(open(&path, opts(10_000)).load().unwrap(), want);
    }

    #[test]
    fn pruned_ids_and_the_first_id_survive_a_reopen() {
        let dir = TempDir::new("pruned");
        let path = dir.file("store.db");
        {
            let store = open(&path, opts(2));
            assert_eq!(
                store.first_id(500).unwrap(),
                500,
                "a new store takes the seed"
            );
            assert_eq!(store.first_id(900).unwrap(), 500, "and keeps it");
            for id in 501..=505 {
                store.append(rec(id, "a", 1, b"x")).unwrap();
            }
            store.append(rec(506, "b", 1, b"y")).unwrap();
            let pruned = store.pruned().unwrap();
            assert_eq!(pruned.get("a"), Some(&503), "501..=503 left topic a");
            assert_eq!(pruned.get("b"), None, "nothing left topic b");
        }
        let store = open(&path, opts(2));
        assert_eq!(store.first_id(1000).unwrap(), 500);
        assert_eq!(store.pruned().unwrap().get("a"), Some(&503));
    }

    #[test]
    fn a_rejected_record_does_not_fail_its_batch() {
        let dir = TempDir::new("reject");
        let store = open(&dir.file("store.db"), opts(100));
        store.append(rec(7, "t", 1, b"first")).unwrap();
        let dup = store.append(rec(7, "t", 1, b"again")).unwrap_err();
        assert_eq!(dup.kind(), StoreErrorKind::Rejected, "{dup}");
        let big = store.append(rec(u64::MAX, "t", 1, b"x")).unwrap_err();
        assert_eq!(big.kind(), StoreErrorKind::Rejected, "{big}");
        store.append(rec(8, "t", 1, b"next")).unwrap();
        assert_eq!(store.health(), Ok(()));
        let ids: Vec<_> = store
            .load()
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.payload))
            .collect();
        assert_eq!(ids, [(7, b"first".to_vec()), (8, b"next".to_vec())]);
    }

    #[test]
    fn retention_per_topic_also_after_reopen_with_less() {
        let dir = TempDir::new("history");
        let path = dir.file("store.db");
        {
            let store = open(&path, opts(3));
            for id in 1..=20 {
                let topic = if id % 2 == 0 { "even" } else { "odd" };
                store.append(rec(id, topic, 1, b"x")).unwrap();
            }
            let ids: Vec<_> = store.load().unwrap().iter().map(|r| r.id).collect();
            assert_eq!(ids, [15, 16, 17, 18, 19, 20]);
        }
        let store = open(&path, opts(2));
        let ids: Vec<_> = store.load().unwrap().iter().map(|r| r.id).collect();
        assert_eq!(
            ids,
            [17, 18, 19, 20],
            "trimmed to the new --history at open"
        );
        store.append(rec(21, "odd", 1, b"x")).unwrap();
        store.append(rec(22, "new", 1, b"x")).unwrap();
        let ids: Vec<_> = store.load().unwrap().iter().map(|r| r.id).collect();
        assert_eq!(ids, [18, 19, 20, 21, 22]);
    }

    #[test]
    fn retention_by_age_on_append_prune_and_load() {
        let dir = TempDir::new("age");
        let path = dir.file("store.db");
        let t0 = 1_700_000_000_000;
        let (now, clock) = clock(t0);
        let o = StoreOptions {
            history_age: Some(Duration::from_secs(10)),
            ..opts(100)
        };
        let store = SqliteStore::open_with_clock(&path, o.clone(), Arc::clone(&clock)).unwrap();
        store.append(rec(1, "a", t0, b"1")).unwrap();
        store.append(rec(2, "b", t0 + 5_000, b"2")).unwrap();
        store.append(rec(3, "a", t0 + 9_000, b"3")).unwrap();
        // The clock went back: a larger id, an older time. Age is by time.
        store.append(rec(4, "b", t0 + 1_000, b"4")).unwrap();
        let ids = |s: &SqliteStore| s.load().unwrap().iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(&store), [1, 2, 3, 4]);

        now.store(t0 + 10_500, Ordering::SeqCst);
        assert_eq!(ids(&store), [2, 3, 4], "load applies age first");
        now.store(t0 + 12_000, Ordering::SeqCst);
        assert_eq!(
            store.prune_by_age().unwrap(),
            1,
            "only 4 is older than t0+2s"
        );
        assert_eq!(store.prune_by_age().unwrap(), 0);
        now.store(t0 + 18_000, Ordering::SeqCst);
        // An append prunes in its own transaction.
        store.append(rec(5, "c", t0 + 18_000, b"5")).unwrap();
        assert_eq!(
            store.prune_by_age().unwrap(),
            0,
            "the append pruned 2 already"
        );
        assert_eq!(ids(&store), [3, 5]);
        drop(store);

        now.store(t0 + 30_000, Ordering::SeqCst);
        let store = SqliteStore::open_with_clock(&path, o, clock).unwrap();
        assert_eq!(ids(&store), [] as [u64; 0], "pruned at open");
        assert_eq!(store.highest_id(), 5);
    }

    /// A tinysse store with a few events, closed cleanly.
    fn make_store(path: &Path, events: u64) {
        let store = open(path, opts(10_000));
        for id in 1..=events {
            store
                .append(rec(id, &format!("t{}", id % 7), id, &noise(id, 150)))
                .unwrap();
        }
    }

    /// Opens `path` expecting a refusal of `kind`, and checks that nothing
    /// in its directory changed.
    fn refused(path: &Path, kind: OpenErrorKind) -> OpenError {
        let dir = path.parent().unwrap();
        let before = snapshot(dir);
        let e = SqliteStore::open(path, opts(100)).expect_err("refused");
        let line = e.to_string();
        println!("{line}");
        assert_eq!(e.kind(), kind, "{line}");
        assert_eq!(e.path(), path);
        assert!(
            line.contains(&path.display().to_string()),
            "names the file: {line}"
        );
        assert!(!line.contains('\n'), "one line: {line:?}");
        assert_eq!(
            snapshot(dir),
            before,
            "the directory changed (file bytes, or a -wal/-shm left)"
        );
        e
    }

    #[test]
    fn refuses_files_that_are_not_sqlite() {
        let dir = TempDir::new("notsqlite");
        let random = dir.file("random.db");
        fs::write(&random, noise(42, 8192)).unwrap();
        refused(&random, OpenErrorKind::NotSqlite);
        let text = dir.file("notes.txt");
        fs::write(
            &text,
            "listening on http://127.0.0.1:8080\nnot a database\n",
        )
        .unwrap();
        refused(&text, OpenErrorKind::NotSqlite);
        let short = dir.file("short.db");
        fs::write(&short, b"SQLite format 3\0").unwrap();
        refused(&short, OpenErrorKind::NotSqlite);
        let magic_then_noise = dir.file("garbage.db");
        let mut bytes = SQLITE_MAGIC.to_vec();
        bytes.extend(noise(3, 4096 - 16));
        fs::write(&magic_then_noise, bytes).unwrap();
        assert!(matches!(
            refused(&magic_then_noise, OpenErrorKind::OtherProgram).kind(),
            OpenErrorKind::OtherProgram
        ));
    }

    #[test]
    fn refuses_databases_of_other_programs() {
        let dir = TempDir::new("other");
        let plain = dir.file("plain.db");
        {
            let c = Connection::open(&plain).unwrap();
            c.execute_batch("CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('ann');")
                .unwrap();
        }
        let e = refused(&plain, OpenErrorKind::OtherProgram);
        assert!(e.to_string().contains("another program"), "{e}");

        let wal = dir.file("wal.db");
        {
            let c = Connection::open(&wal).unwrap();
            c.execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA application_id=1234;
                 CREATE TABLE events (id INTEGER PRIMARY KEY);",
            )
            .unwrap();
        }
        refused(&wal, OpenErrorKind::OtherProgram);

        // Ours in name, but a schema this code does not know.
        let newer = dir.file("newer.db");
        make_store(&newer, 3);
        {
            let c = Connection::open(&newer).unwrap();
            c.execute_batch("PRAGMA user_version = 2;").unwrap();
        }
        refused(&newer, OpenErrorKind::UnsupportedVersion);
    }

    fn root_page(path: &Path, name: &str) -> u64 {
        let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        c.query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .map(|p| p as u64)
        .unwrap()
    }

    fn overwrite(path: &Path, at: u64, bytes: &[u8]) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn refuses_corrupt_databases() {
        let dir = TempDir::new("corrupt");
        for (name, target) in [("events", "events"), ("index", "events_by_topic")] {
            let path = dir.file(&format!("{name}.db"));
            make_store(&path, 300);
            let page = root_page(&path, target);
            // A b-tree page's header: its type byte and cell count.
            overwrite(
                &path,
                (page - 1) * 4096,
                &[0x77, 0xff, 0xff, 0xff, 0xff, 0x42, 0x42],
            );
            refused(&path, OpenErrorKind::Corrupt);
        }
        // A leaf in the middle of the file, overwritten with noise.
        let path = dir.file("noise.db");
        make_store(&path, 300);
        let pages = fs::metadata(&path).unwrap().len() / 4096;
        overwrite(&path, (pages / 2) * 4096, &noise(9, 4096));
        refused(&path, OpenErrorKind::Corrupt);
        // Cut in half.
        let path = dir.file("truncated.db");
        make_store(&path, 300);
        let len = fs::metadata(&path).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        refused(&path, OpenErrorKind::Corrupt);
    }

    #[test]
    fn refuses_a_store_already_open() {
        let dir = TempDir::new("inuse");
        let path = dir.file("store.db");
        let store = open(&path, opts(100));
        store.append(rec(1, "t", 1, b"x")).unwrap();
        let e = SqliteStore::open(&path, opts(100)).expect_err("in use");
        assert_eq!(e.kind(), OpenErrorKind::InUse, "{e}");
        // The first one is unharmed.
        store.append(rec(2, "t", 1, b"y")).unwrap();
        assert_eq!(store.load().unwrap().len(), 2);
    }

    /// Not a test by itself: the other process of the tests below, which
    /// run this binary again with the store's path in
    /// `TINYSSE_TEST_STORE` and what to do in `TINYSSE_TEST_STORE_DO`.
    #[test]
    #[ignore]
    fn other_process() {
        let Some(path) = std::env::var_os("TINYSSE_TEST_STORE") else {
            return;
        };
        let path = Path::new(&path);
        match std::env::var("TINYSSE_TEST_STORE_DO").as_deref() {
            Ok("hold") => {
                let store = open(path, opts(100));
                store.append(rec(1, "t", 1, b"held")).unwrap();
                println!("HOLDING");
                // Until the other test closes our stdin.
                let _ = std::io::stdin().read_line(&mut String::new());
            }
            Ok(mode @ ("append-normal" | "append-full")) => {
                let sync = if mode == "append-full" {
                    SyncMode::Full
                } else {
                    SyncMode::Normal
                };
                let store = open(
                    path,
                    StoreOptions {
                        sync,
                        ..opts(1_000_000)
                    },
                );
                let next = AtomicU64::new(1);
                let out = Mutex::new(std::io::stdout());
                // Bounded, in case nobody kills it.
                std::thread::scope(|s| {
                    for t in 0..4 {
                        let (store, next, out) = (&store, &next, &out);
                        s.spawn(move || {
                            use std::io::Write;
                            for _ in 0..20_000 {
                                let id = next.fetch_add(1, Ordering::SeqCst);
                                let r = rec(id, &format!("t{t}"), id, &noise(id, 100));
                                store.append(r).unwrap();
                                let mut out = lock(out);
                                let _ = writeln!(out, "ACK {id}");
                                let _ = out.flush();
                            }
                        });
                    }
                });
            }
            other => panic!("TINYSSE_TEST_STORE_DO: {other:?}"),
        }
    }

    /// This test binary again, running `other_process`, its stdout's lines
    /// sent to the returned channel.
    fn spawn_other(path: &Path, what: &str) -> (Reap, Receiver<String>) {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = Reap(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "store_sqlite::tests::other_process",
                    "--ignored",
                    "--nocapture",
                ])
                .env("TINYSSE_TEST_STORE", path)
                .env("TINYSSE_TEST_STORE_DO", what)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let out = std::io::BufReader::new(child.0.stdout.take().unwrap());
        let (said, heard) = crossbeam_channel::unbounded();
        // Reads to the end: a closed pipe would fail the child's last words.
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = said.send(line);
            }
        });
        (child, heard)
    }

    #[test]
    fn every_acknowledged_append_survives_sigkill() {
        for mode in ["append-normal", "append-full"] {
            let dir = TempDir::new("sigkill");
            let path = dir.file("store.db");
            let (mut child, lines) = spawn_other(&path, mode);
            let mut acked = Vec::new();
            let end = Instant::now() + Duration::from_secs(60);
            while acked.len() < 2_000 && Instant::now() < end {
                match lines.recv_timeout(Duration::from_secs(1)) {
                    Ok(l) => {
                        acked.extend(l.strip_prefix("ACK ").map(|id| id.parse::<u64>().unwrap()))
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(_) => break,
                }
            }
            assert!(acked.len() >= 2_000, "{mode}: only {} acks", acked.len());
            child.0.kill().unwrap(); // SIGKILL, with appends in flight
            child.0.wait().unwrap();
            // Acks it printed before it died count too.
            acked.extend(
                lines
                    .iter()
                    .filter_map(|l| l.strip_prefix("ACK ").map(|id| id.parse::<u64>().unwrap())),
            );
            let store = open(&path, opts(1_000_000));
            let loaded = store.load().unwrap();
            let ids: Vec<u64> = loaded.iter().map(|r| r.id).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{mode}: ids ascending");
            let by_id: HashMap<u64, &Record> = loaded.iter().map(|r| (r.id, r)).collect();
            for id in &acked {
                let r = by_id
                    .get(id)
                    .unwrap_or_else(|| panic!("{mode}: acknowledged {id} lost"));
                assert_eq!(r.payload, noise(*id, 100), "{mode}: {id}");
            }
            assert!(store.highest_id() >= *acked.iter().max().unwrap());
            println!(
                "{mode}: {} acknowledged before SIGKILL, {} stored, all acknowledged found",
                acked.len(),
                loaded.len()
            );
        }
    }

    /// Kills the process on drop if the test did not end it.
    struct Reap(std::process::Child);

    impl Drop for Reap {
        fn drop(&mut self) {
            if self.0.try_wait().ok().flatten().is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }

    #[test]
    fn refuses_a_store_open_in_another_process() {
        let dir = TempDir::new("otherproc");
        let path = dir.file("store.db");
        let (mut holder, lines) = spawn_other(&path, "hold");
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if lines
                .recv_timeout(Duration::from_secs(1))
                .is_ok_and(|l| l == "HOLDING")
            {
                break;
            }
        }
        let e = refused(&path, OpenErrorKind::InUse);
        assert!(e.to_string().contains("another process"), "{e}");
        drop(holder.0.stdin.take());
        let end = Instant::now() + Duration::from_secs(10);
        while holder.0.try_wait().unwrap().is_none() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(holder.0.try_wait().unwrap().is_some_and(|s| s.success()));
        // Once it is gone, the store opens with what it wrote.
        assert_eq!(open(&path, opts(100)).load().unwrap().len(), 1);
    }

    #[test]
    fn reopens_what_a_crash_leaves() {
        // Copying the database and its WAL while the store is open and idle
        // gives the files a SIGKILL would leave.
        let dir = TempDir::new("crash");
        let path = dir.file("store.db");
        let copy = TempDir::new("crash-copy");
        let store = open(&path, opts(1000));
        let want: Vec<Record> = (1..=200)
            .map(|id| rec(id, "t", id, &noise(id, 300)))
            .collect();
        for r in &want {
            store.append(r.clone()).unwrap();
        }
        assert!(exists(&sidecar(&path, "-wal")));
        for f in ["store.db", "store.db-wal"] {
            fs::copy(dir.file(f), copy.file(f)).unwrap();
        }
        drop(store);
        let crashed = copy.file("store.db");
        let store = open(&crashed, opts(1000));
        assert_eq!(store.load().unwrap(), want);
        assert_eq!(store.highest_id(), 200);
    }

    #[test]
    fn refuses_a_corrupt_crash_image_leaving_its_wal() {
        let dir = TempDir::new("crash-corrupt");
        let path = dir.file("store.db");
        make_store(&path, 300);
        let copy = TempDir::new("crash-corrupt-copy");
        let store = open(&path, opts(10_000));
        store
            .append(rec(301, "t1", 301, b"in the WAL only"))
            .unwrap();
        for f in ["store.db", "store.db-wal"] {
            fs::copy(dir.file(f), copy.file(f)).unwrap();
        }
        drop(store);
        let crashed = copy.file("store.db");
        // An old leaf, which the WAL's few pages do not replace.
        let pages = fs::metadata(&crashed).unwrap().len() / 4096;
        overwrite(&crashed, (pages / 2) * 4096, &noise(11, 4096));
        refused(&crashed, OpenErrorKind::Corrupt);
        assert!(exists(&copy.file("store.db-wal")));
    }

    /// Retention must not scan the table: each statement searches an index.
    #[test]
    fn retention_searches_indexes() {
        let dir = TempDir::new("plan");
        let path = dir.file("store.db");
        make_store(&path, 10);
        let c = Connection::open(&path).unwrap();
        for (sql, index, args) in [
            (TRIM_TOPIC, "events_by_topic", &["t1", "1"][..]),
            (PRUNE_AGE, "events_by_age", &["1"][..]),
        ] {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            let plan = plan.join(" / ");
            println!("{plan}");
            assert!(plan.contains(index), "{sql}: {plan}");
            assert!(!plan.contains("SCAN events"), "{sql}: {plan}");
        }
    }

    #[test]
    fn refuses_files_it_cannot_write() {
        if !need_root("refuses_files_it_cannot_write") {
            return;
        }
        let dir = TempDir::new("unwritable");
        // An immutable file.
        let path = dir.file("store.db");
        make_store(&path, 20);
        {
            let _lock = Immutable::set(&path);
            refused(&path, OpenErrorKind::NotWritable);
        }
        // A writable file in an immutable directory: no room for its WAL.
        {
            let _lock = Immutable::set(&dir.0);
            let e = refused(&path, OpenErrorKind::NotWritable);
            assert!(e.to_string().contains("directory must be writable"), "{e}");
            let new = dir.file("new.db");
            let e = SqliteStore::open(&new, opts(100)).expect_err("refused");
            assert_eq!(e.kind(), OpenErrorKind::NotWritable, "{e}");
            assert!(!exists(&new), "nothing created");
        }
        // A read-only mount.
        let mnt = Tmpfs::mount(&dir.file("ro"), "4m");
        let on_ro = mnt.0.join("store.db");
        make_store(&on_ro, 20);
        mnt.read_only();
        refused(&on_ro, OpenErrorKind::NotWritable);
        drop(mnt);
        // The store itself was never harmed.
        assert_eq!(open(&path, opts(100)).load().unwrap().len(), 20);
    }

    #[test]
    fn a_full_disk_fails_the_batch_and_recovers_without_restart() {
        if !need_root("a_full_disk_fails_the_batch_and_recovers_without_restart") {
            return;
        }
        let dir = TempDir::new("full");
        let mnt = Tmpfs::mount(&dir.file("mnt"), "1m");
        let path = mnt.0.join("store.db");
        let filler = mnt.0.join("filler");
        let store = open(&path, opts(1000));
        let mut acked = Vec::new();
        for id in 1..=5 {
            let r = rec(id, "t", id, &noise(id, 200));
            store.append(r.clone()).unwrap();
            acked.push(r);
        }
        {
            use std::io::Write;
            let mut f = fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 16 * 1024];
            let mut full = false;
            for _ in 0..1024 {
                if f.write_all(&chunk).and_then(|_| f.sync_all()).is_err() {
                    full = true;
                    break;
                }
            }
            assert!(full, "the 1 MiB tmpfs never filled");
        }
        let t = Instant::now();
        let big = store
            .append(rec(6, "t", 6, &noise(6, 64 * 1024)))
            .unwrap_err();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "slow: {:?}",
            t.elapsed()
        );
        println!("{big}");
        assert_eq!(big.kind(), StoreErrorKind::DiskFull, "{big}");
        assert!(std::error::Error::source(&big).is_some());
        let reason = store.health().unwrap_err();
        assert!(reason.contains("full"), "{reason}");
        // Concurrent appends in one failing batch all get the error.
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..4u64)
                .map(|i| {
                    let store = &store;
                    s.spawn(move || store.append(rec(100 + i, "t", 7, &noise(i, 32 * 1024))))
                })
                .collect();
            for h in hs {
                let e = h.join().unwrap().unwrap_err();
                assert_eq!(e.kind(), StoreErrorKind::DiskFull, "{e}");
            }
        });
        assert!(store.health().is_err());

        fs::remove_file(&filler).unwrap();
        for id in [7, 8] {
            let r = rec(id, "t", id, &noise(id, 64 * 1024));
            store.append(r.clone()).expect("room again");
            acked.push(r);
        }
        assert_eq!(store.health(), Ok(()));
        assert_eq!(store.highest_id(), 8);
        drop(store);
        let store = open(&path, opts(1000));
        assert_eq!(
            store.load().unwrap(),
            acked,
            "nothing of a failed batch was kept"
        );
        drop(store);
        drop(mnt);
    }

    fn size(path: &Path) -> u64 {
        fs::metadata(path).map_or(0, |m| m.len())
    }

    #[test]
    fn size_stays_bounded_over_a_long_run() {
        let dir = TempDir::new("bounded");
        let path = dir.file("store.db");
        let wal = sidecar(&path, "-wal");
        let store = open(&path, opts(100));
        let (rounds, threads, per_round) = (20u64, 8u64, 1_250u64);
        let payload = 100;
        let next = AtomicU64::new(1);
        let (mut max_db, mut max_wal) = (0, 0);
        for _ in 0..rounds {
            std::thread::scope(|s| {
                for _ in 0..threads {
                    let (store, next) = (&store, &next);
                    s.spawn(move || {
                        for _ in 0..per_round {
                            let id = next.fetch_add(1, Ordering::Relaxed);
                            let topic = format!("topic-{}", id % 10);
                            store
                                .append(rec(id, &topic, id, &noise(id, payload)))
                                .unwrap();
                        }
                    });
                }
            });
            max_db = max_db.max(size(&path));
            max_wal = max_wal.max(size(&wal));
        }
        let appends = rounds * threads * per_round;
        assert_eq!(store.load().unwrap().len(), 1000);
        drop(store);
        let end = size(&path);
        println!(
            "{appends} appends of {payload} B: database at most {max_db} B, WAL at most {max_wal} B, \
             {end} B after close"
        );
        assert_eq!(appends, 200_000);
        // 1000 retained events of ~120 B with two indexes: a few hundred KiB,
        // against 20 MB appended.
        assert!(max_db <= 1 << 20, "database grew to {max_db} B");
        assert!(
            max_wal <= (JOURNAL_SIZE_LIMIT as u64) + (4 << 20),
            "WAL grew to {max_wal} B"
        );
        assert!(end <= 1 << 20);
    }

    #[test]
    fn the_file_shrinks_after_a_large_prune() {
        let dir = TempDir::new("shrink");
        let path = dir.file("store.db");
        let t0 = 1_000_000;
        let (now, clock) = clock(t0);
        let o = StoreOptions {
            history_age: Some(Duration::from_secs(60)),
            ..opts(100_000)
        };
        let store = SqliteStore::open_with_clock(&path, o, clock).unwrap();
        for id in 1..=4000 {
            store
                .append(rec(id, &format!("t{}", id % 4), t0, &noise(id, 1000)))
                .unwrap();
        }
        drop(store);
        let full = size(&path);
        assert!(full > 4_000_000, "{full}");
        now.store(t0 + 61_000, Ordering::SeqCst);
        let o = StoreOptions {
            history_age: Some(Duration::from_secs(60)),
            ..opts(100_000)
        };
        let store =
            SqliteStore::open_with_clock(&path, o, Arc::new(move || now.load(Ordering::SeqCst)))
                .unwrap();
        assert_eq!(store.load().unwrap(), vec![]);
        drop(store);
        let after = size(&path);
        println!("{full} B with 4000 events, {after} B once they aged out");
        assert!(after < 200_000, "{after} B after every event was pruned");
    }

    /// Append throughput and latency:
    /// `cargo test --release --lib store_sqlite::tests::bench_append -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_append() {
        let dir = TempDir::new("bench");
        println!("| sync | threads | events | events/s | p50 | p99 | events/commit |");
        println!("|---|---|---|---|---|---|---|");
        for (sync, threads, per_thread) in [
            (SyncMode::Normal, 1, 20_000),
            (SyncMode::Normal, 16, 5_000),
            (SyncMode::Full, 1, 1_000),
            (SyncMode::Full, 16, 500),
        ] {
            let path = dir.file(&format!("{sync:?}-{threads}.db"));
            let store = open(&path, StoreOptions { sync, ..opts(1024) });
            let next = AtomicU64::new(1);
            let start = Instant::now();
            let mut lat: Vec<Duration> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|t| {
                        let (store, next) = (&store, &next);
                        s.spawn(move || {
                            let payload = noise(t + 1, 100);
                            (0..per_thread)
                                .map(|_| {
                                    let id = next.fetch_add(1, Ordering::Relaxed);
                                    let t0 = Instant::now();
                                    store
                                        .append(rec(id, &format!("topic-{t}"), id, &payload))
                                        .unwrap();
                                    t0.elapsed()
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
            });
            let wall = start.elapsed();
            lat.sort();
            let n = lat.len();
            let pct = |p: usize| lat[(n * p / 100).min(n - 1)];
            println!(
                "| {sync:?} | {threads} | {n} | {:.0} | {:?} | {:?} | {:.1} |",
                n as f64 / wall.as_secs_f64(),
                pct(50),
                pct(99),
                n as f64 / store.commits() as f64
            );
        }
    }
}
