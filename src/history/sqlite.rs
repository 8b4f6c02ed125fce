//! The history in an embedded SQLite file (WAL mode): it survives restarts,
//! crashes and `kill -9`.
//!
//! One writer thread per file owns its only read-write connection. The
//! connections of the listeners hand it their messages through a bounded
//! queue, and it commits whatever has queued up in one transaction (group
//! commit): the message is in the write-ahead log before its reply is
//! sent, so a reply the client has read is never lost with the process.
//! The pick is a random id between the oldest and the newest kept (ids are
//! consecutive), found through the primary key: no table scan.
//!
//! One process per file: the writer holds an exclusive `flock` on the file
//! while it runs, and a second process (or a second server in one process)
//! gets a start-up error that names the file. Readers (`switchboard
//! history`) open it read-only beside the writer, which WAL allows.
//!
//! A file deleted or replaced (renamed over) while the writer has it open
//! is found at the next batch (the path's inode against the open one's,
//! one `stat` a batch): the writer logs one ERROR line, lets go of the old
//! file and opens (or creates) the one at the path, so that no message is
//! committed into a file nobody can reach. While the path cannot be
//! opened, each message is refused (`ERR history unavailable`) and the
//! path is tried again once a second.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{error, info};

use super::batch::{self, Answers, Job};
use super::{ENTRY_OVERHEAD, Failure, Limits, Recording};

/// Messages committed in one transaction, at most.
const MAX_BATCH: usize = 256;
/// Oldest rows looked at per step of a trim.
const TRIM_STEP: usize = 256;
/// How long a statement waits for a lock another connection holds (a
/// reader's checkpoint), before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The write-ahead log is cut back to this size after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;
/// The page size of a file this code creates (`PRAGMA page_size`).
const PAGE_SIZE: i64 = 1024;

/// How often a lost history file (deleted, and its path not usable) is
/// tried again.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// The schema this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// What a commit waits for (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// A commit is in the write-ahead log, in the operating system's
    /// cache: it survives the process (a crash, `kill -9`), not the
    /// machine losing power. No fsync per commit.
    #[default]
    Normal,
    /// A commit is on the disk (fsync of the log per commit, shared by the
    /// batch): it also survives a power loss.
    Full,
}

impl SqliteSync {
    fn pragma(self) -> &'static str {
        match self {
            SqliteSync::Normal => "NORMAL",
            SqliteSync::Full => "FULL",
        }
    }
}

/// Why a history file cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SqliteOpenError {
    /// Another process (or server) has it open for writing.
    #[error(
        "in use by another switchboard process (a SQLite history has one writer; \
         to share a history between processes, use the redis backend)"
    )]
    InUse,
    /// The file or the database in it cannot be used: what went wrong.
    #[error("{0}")]
    Unusable(String),
}

/// A history file with its writer thread. Dropping the last handle ends
/// the thread once the queue is empty, and releases the file.
#[derive(Debug)]
pub(crate) struct SqliteHistory {
    queue: batch::Queue,
}

/// What the writer knows of the table without asking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Totals {
    /// The oldest id kept (meaningless when `count` is 0).
    first: i64,
    /// The newest id given out.
    last: i64,
    count: u64,
    /// Text of the messages kept, plus [`ENTRY_OVERHEAD`] each.
    bytes: u64,
}

/// The file the writer thread has open.
struct OpenFile {
    /// Declared before the lock, so dropped before it: closing a
    /// descriptor of the file drops the process's POSIX locks on it,
    /// which SQLite's own locking relies on.
    conn: Connection,
    lock: File,
    /// The file's device and inode, to tell when the path names another.
    id: (u64, u64),
    /// The sync level the connection has now.
    sync: SqliteSync,
    totals: Totals,
}

impl OpenFile {
    /// Opens (creating it if needed) the history file at `path` and takes
    /// its lock. Blocking.
    fn open(path: &Path, sync: SqliteSync) -> Result<OpenFile, SqliteOpenError> {
        let unusable = SqliteOpenError::Unusable;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| unusable(format!("cannot open: {e}")))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(SqliteOpenError::InUse);
            }
            Err(e) => return Err(unusable(format!("cannot lock: {e}"))),
        }
        let conn = open_writer(path, sync).map_err(unusable)?;
        OpenFile::new(lock, conn, sync).map_err(unusable)
    }

    /// The file of `lock`, its read-write connection `conn`.
    fn new(lock: File, conn: Connection, sync: SqliteSync) -> Result<OpenFile, String> {
        let meta = lock.metadata().map_err(|e| e.to_string())?;
        let totals = read_totals(&conn).map_err(|e| e.to_string())?;
        Ok(OpenFile {
            conn,
            lock,
            id: (meta.dev(), meta.ino()),
            sync,
            totals,
        })
    }

    /// What happened to the file's path, if it no longer names this file.
    fn moved(&self, path: &Path) -> Option<&'static str> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("deleted"),
            Ok(meta) if (meta.dev(), meta.ino()) != self.id => Some("replaced"),
            // Anything else (a directory that cannot be searched now):
            // nothing can be told, and the file stays in use.
            _ => None,
        }
    }

    /// Closes a file deleted or replaced under it. SQLite leaves the log
    /// of a moved file where it was, and the next database opened at the
    /// path would read it as its own: the log is emptied into the old
    /// file first (through the descriptor it has open, so a log someone
    /// else put at the path is left alone).
    fn let_go(self) {
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        self.close();
    }

    /// Closes the connection, then lets go of the lock.
    fn close(self) {
        let OpenFile { conn, lock, .. } = self;
        drop(conn);
        drop(lock);
    }
}

/// The writer thread's state: the file at `path`, or why there is none.
struct Writer {
    path: PathBuf,
    /// The sync level a file opened again starts with.
    sync: SqliteSync,
    file: Option<OpenFile>,
    /// Why the file at the path could not be opened, and when to try again.
    lost: Option<(String, Instant)>,
}

impl Writer {
    /// The file to commit the next batch to: the one open, or the one at
    /// the path now if the open one was deleted or replaced (one ERROR
    /// line). `Err` while the path cannot be opened.
    fn file(&mut self) -> Result<&mut OpenFile, Failure> {
        let moved = self.file.as_ref().and_then(|file| file.moved(&self.path));
        if let Some(what) = moved {
            if let Some(old) = self.file.take() {
                old.let_go();
            }
            match OpenFile::open(&self.path, self.sync) {
                Ok(file) => {
                    error!(
                        path = %self.path.display(),
                        messages = file.totals.count,
                        "the history file was {what} while in use: the messages it held are \
                         lost; the history goes on in the file now at its path"
                    );
                    self.file = Some(file);
                }
                Err(e) => {
                    error!(
                        path = %self.path.display(),
                        error = %e,
                        "the history file was {what} while in use, and cannot be opened at its \
                         path: each message gets `ERR history unavailable` until it can (tried \
                         once a second)"
                    );
                    self.lost = Some((e.to_string(), Instant::now() + REOPEN_INTERVAL));
                }
            }
        } else if let Some((_, retry)) = &self.lost
            && Instant::now() >= *retry
        {
            match OpenFile::open(&self.path, self.sync) {
                Ok(file) => {
                    info!(
                        path = %self.path.display(),
                        messages = file.totals.count,
                        "the history file is open again"
                    );
                    self.file = Some(file);
                    self.lost = None;
                }
                Err(e) => self.lost = Some((e.to_string(), Instant::now() + REOPEN_INTERVAL)),
            }
        }
        match (&mut self.file, &self.lost) {
            (Some(file), _) => Ok(file),
            (None, Some((reason, _))) => Err(Failure::NotStored(format!(
                "the history file was lost and cannot be opened again: {reason}"
            ))),
            (None, None) => Err(Failure::NotStored("the history file is closed".to_owned())),
        }
    }
}

impl SqliteHistory {
    /// Opens (creating it if needed) the history file at `path`, takes its
    /// lock, and starts its writer thread. Blocking: call it where waiting
    /// for the disk is allowed, inside a tokio runtime.
    pub(crate) fn open(path: &Path, sync: SqliteSync) -> Result<SqliteHistory, SqliteOpenError> {
        let file = OpenFile::open(path, sync)?;
        SqliteHistory::start(path, file, sync).map_err(SqliteOpenError::Unusable)
    }

    /// Starts the tasks and the writer thread of a history over `file`,
    /// open at `path`.
    fn start(path: &Path, file: OpenFile, sync: SqliteSync) -> Result<SqliteHistory, String> {
        let writer = Writer {
            path: path.to_owned(),
            sync,
            file: Some(file),
            lost: None,
        };
        let (queue, queued) = batch::queue();
        let (batches, to_write) = mpsc::channel(1);
        let (answers, answered) = mpsc::channel(ANSWER_BATCHES);
        std::thread::Builder::new()
            .name("history-sqlite".into())
            .spawn(move || write_loop(writer, to_write, answers))
            .map_err(|e| format!("cannot start its writer thread: {e}"))?;
        tokio::spawn(gather(queued, batches));
        tokio::spawn(deliver(answered));
        Ok(SqliteHistory { queue })
    }

    /// Records `message` (committed before this returns), trims to the
    /// limits, and returns a random message kept. `Err` says why not; the
    /// timeout bounds the wait for room in the queue and for the commit.
    pub(crate) async fn record_and_pick(
        &self,
        message: Bytes,
        how: Recording,
    ) -> Result<Bytes, Failure> {
        batch::submit(&self.queue, message, how, "the SQLite writer").await
    }
}

/// Opens the read-write connection: WAL, the sync level, the schema.
fn open_writer(path: &Path, sync: SqliteSync) -> Result<Connection, String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    let setup = || -> rusqlite::Result<(String, i64)> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // The plans do not depend on the ids bound: without this, SQLite
        // (built with STAT4) compiles every statement again whenever the
        // ids it is given change, that is, for every batch.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        // Takes effect only on a new file (before its first table), and
        // must come before WAL mode. A commit writes every page it changed
        // to the log, whole; with rows of a few bytes, 1 KiB pages write a
        // quarter of what 4 KiB pages do.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        conn.pragma_update(None, "synchronous", sync.pragma())?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        let version = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        Ok((mode, version))
    };
    let (mode, version) = setup().map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "the file system does not allow WAL mode (journal_mode is {mode})"
        ));
    }
    if version > SCHEMA_VERSION {
        return Err(format!(
            "written by a newer switchboard (schema {version}; this one knows {SCHEMA_VERSION})"
        ));
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
    )
    .and_then(|()| conn.pragma_update(None, "user_version", SCHEMA_VERSION))
    .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Opens a history file read-only, for `switchboard history` beside a
/// running writer. `None` when there is no such file yet.
pub(crate) fn open_reader(path: &Path) -> Result<Option<Connection>, String> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| e.to_string())?;
    Ok(Some(conn))
}

/// Messages kept in a history file (opened by [`open_reader`]).
pub(crate) fn count(conn: &Connection) -> Result<u64, String> {
    read_totals(conn)
        .map(|totals| totals.count)
        .map_err(|e| e.to_string())
}

/// The newest `n` messages of a history file, oldest first, each its first
/// `max_bytes` at most (a longer one is never read whole into memory here),
/// whether stored as a BLOB or, by another writer, as TEXT.
pub(crate) fn tail(conn: &Connection, n: usize, max_bytes: usize) -> Result<Vec<Vec<u8>>, String> {
    let run = || -> rusqlite::Result<Vec<Vec<u8>>> {
        let mut newest = conn.prepare(
            "SELECT substr(CAST(body AS BLOB), 1, ?2) FROM messages ORDER BY id DESC LIMIT ?1",
        )?;
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let bound = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        let mut rows: Vec<Vec<u8>> = newest
            .query_map([limit, bound], |row| {
                // A NULL (another writer's) shows as an empty message.
                Ok(row.get::<_, Option<Vec<u8>>>(0)?.unwrap_or_default())
            })?
            .collect::<rusqlite::Result<_>>()?;
        rows.reverse();
        Ok(rows)
    };
    match run() {
        // A file that no writer has set up yet holds nothing.
        Err(e) if e.to_string().contains("no such table") => Ok(Vec::new()),
        other => other.map_err(|e| e.to_string()),
    }
}

fn read_totals(conn: &Connection) -> rusqlite::Result<Totals> {
    let totals = conn.query_row(
        "SELECT min(id), max(id), count(*), coalesce(sum(length(body)), 0) FROM messages",
        [],
        |row| {
            let count: i64 = row.get(2)?;
            let text: i64 = row.get(3)?;
            let count = u64::try_from(count).unwrap_or(0);
            Ok(Totals {
                first: row.get::<_, Option<i64>>(0)?.unwrap_or(1),
                last: row.get::<_, Option<i64>>(1)?.unwrap_or(0),
                count,
                bytes: u64::try_from(text).unwrap_or(0) + count * ENTRY_OVERHEAD as u64,
            })
        },
    );
    match totals {
        Err(e) if e.to_string().contains("no such table") => Ok(Totals {
            first: 1,
            last: 0,
            count: 0,
            bytes: 0,
        }),
        other => other,
    }
}

/// Batches of answers on their way to [`deliver`], at most.
const ANSWER_BATCHES: usize = 64;

/// Hands each answer of a batch to the connection waiting for it. It runs
/// as a task on the runtime, so that the writer thread wakes the runtime
/// once per batch, not once per message: on a busy core each of those
/// wakes would switch threads twice.
async fn deliver(mut batches: mpsc::Receiver<Answers>) {
    while let Some(answers) = batches.recv().await {
        batch::deliver(answers);
    }
}

/// Makes batches on the runtime and hands each to the writer thread, one
/// wake-up of it per batch. While the writer is busy with the last batch,
/// the next one grows.
async fn gather(mut queue: mpsc::Receiver<Job>, batches: mpsc::Sender<Vec<Job>>) {
    while let Some(batch) = batch::next(&mut queue, MAX_BATCH).await {
        if batches.send(batch).await.is_err() {
            return;
        }
    }
}

/// The writer thread: commits each batch as one transaction, and answers
/// each message with its pick (or the error).
fn write_loop(
    mut writer: Writer,
    mut batches: mpsc::Receiver<Vec<Job>>,
    answers: mpsc::Sender<Answers>,
) {
    while let Some(mut batch) = batches.blocking_recv() {
        batch::claim(&mut batch);
        if batch.is_empty() {
            continue;
        }
        let picked = writer.file().and_then(|file| {
            // Listeners sharing the file may ask for different levels: a
            // batch gets the strictest asked for in it.
            let wanted = if batch.iter().any(|job| job.how.sync == SqliteSync::Full) {
                SqliteSync::Full
            } else {
                SqliteSync::Normal
            };
            if wanted != file.sync
                && file
                    .conn
                    .pragma_update(None, "synchronous", wanted.pragma())
                    .is_ok()
            {
                file.sync = wanted;
            }
            commit(&mut file.conn, &mut file.totals, &batch)
        });
        // Only when the runtime is gone (shutting down) is there no one to
        // hand them to; the waiting connections are gone with it.
        if answers
            .blocking_send(batch::answers(batch, picked))
            .is_err()
        {
            break;
        }
    }
    if let Some(file) = writer.file.take() {
        file.close();
    }
}

/// Inserts the batch, trims to the tightest limits in it, picks a random
/// message for each, and commits; `totals` changes only if the commit did.
/// A failure before the commit is rolled back (not stored); one of the
/// commit itself is an I/O error that may have left it in the log, to be
/// read at the next open (unknown). (`BEGIN` and `COMMIT` are cached
/// statements: parsing them again for every batch was a tenth of the
/// writer's time.)
fn commit(
    conn: &mut Connection,
    totals: &mut Totals,
    batch: &[Job],
) -> Result<Vec<Bytes>, Failure> {
    // Another writer's row may hold an id near i64::MAX: the batch is
    // refused (not stored), never an overflow, and the totals are read
    // again, so that service resumes once that row is gone.
    let rows = i64::try_from(batch.len()).unwrap_or(i64::MAX);
    if totals.last.checked_add(rows.saturating_add(1)).is_none() {
        let last = totals.last;
        if let Ok(read) = read_totals(conn) {
            *totals = read;
        }
        return Err(Failure::NotStored(format!(
            "no ids left after {last} (another writer's row)"
        )));
    }
    let mut next = *totals;
    let written = conn
        .prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut begin| begin.execute([]))
        .and_then(|_| write_batch(conn, &mut next, batch));
    let picks = match written {
        Ok(picks) => picks,
        Err(e) => {
            // Nothing of the batch stays; a failed rollback (no transaction
            // left) changes nothing either.
            let _ = conn.execute_batch("ROLLBACK");
            // Another writer took an id this one meant to give: the next
            // batch starts from the table as it is, not at the same id.
            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
                && let Ok(read) = read_totals(conn)
            {
                *totals = read;
            }
            return Err(Failure::NotStored(e.to_string()));
        }
    };
    match conn
        .prepare_cached("COMMIT")
        .and_then(|mut commit| commit.execute([]))
    {
        Ok(_) => {
            *totals = next;
            Ok(picks)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure) {
                Err(Failure::Unknown(e.to_string()))
            } else {
                Err(Failure::NotStored(e.to_string()))
            }
        }
    }
}

/// The statements of one batch's transaction.
fn write_batch(
    conn: &Connection,
    next: &mut Totals,
    batch: &[Job],
) -> rusqlite::Result<Vec<Bytes>> {
    let limits = batch::tightest(batch);
    insert(conn, next.last + 1, batch)?;
    for job in batch {
        if next.count == 0 {
            next.first = next.last + 1;
        }
        next.last += 1;
        next.count += 1;
        next.bytes += (job.message.len() + ENTRY_OVERHEAD) as u64;
    }
    trim(conn, next, limits)?;
    let mut picks = Vec::with_capacity(batch.len());
    // As a BLOB: another writer's TEXT row is a pick, not an error that
    // fails the batch.
    let mut at = conn.prepare_cached("SELECT CAST(body AS BLOB) FROM messages WHERE id = ?1")?;
    let mut at_or_after = conn.prepare_cached(
        "SELECT CAST(body AS BLOB) FROM messages WHERE id >= ?1 ORDER BY id LIMIT 1",
    )?;
    for _ in batch {
        let id = rand::random_range(next.first..=next.last);
        // The ids this writer gives are consecutive; a file another writer
        // left with gaps still gets a pick, the next message kept.
        let mut body: Option<Vec<u8>> = at.query_row([id], |row| row.get(0)).optional()?;
        if body.is_none() {
            body = at_or_after.query_row([id], |row| row.get(0)).optional()?;
        }
        // Never empty: the newest message is always kept.
        picks.push(Bytes::from(body.unwrap_or_default()));
    }
    Ok(picks)
}

/// Rows one `INSERT` statement writes, at most: a statement per row cost
/// its setup and a seek from the root for each (the cursor of one
/// statement stays at the end of the table).
const INSERT_ROWS: usize = 16;

/// Inserts the messages of `batch` under consecutive ids from `first`.
fn insert(conn: &Connection, first: i64, batch: &[Job]) -> rusqlite::Result<()> {
    let mut id = first;
    let mut chunks = batch.chunks_exact(INSERT_ROWS);
    if chunks.len() > 0 {
        let mut many = conn.prepare_cached(&INSERT_MANY)?;
        for chunk in &mut chunks {
            for (i, job) in chunk.iter().enumerate() {
                many.raw_bind_parameter(2 * i + 1, id)?;
                many.raw_bind_parameter(2 * i + 2, &job.message[..])?;
                id += 1;
            }
            many.raw_execute()?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut one = conn.prepare_cached(INSERT_ONE)?;
        for job in rest {
            one.execute((id, &job.message[..]))?;
            id += 1;
        }
    }
    Ok(())
}

/// The `INSERT` of one row.
const INSERT_ONE: &str = "INSERT INTO messages (id, body) VALUES (?, ?)";

/// The `INSERT` of [`INSERT_ROWS`] rows, written once.
static INSERT_MANY: LazyLock<String> = LazyLock::new(|| {
    let mut sql = String::from(INSERT_ONE);
    for _ in 1..INSERT_ROWS {
        sql.push_str(", (?, ?)");
    }
    sql
});

/// Deletes the rows from id ?1 to id ?2.
const DELETE_RANGE: &str = "DELETE FROM messages WHERE id >= ?1 AND id <= ?2";

/// Deletes the oldest messages while the history is over `limits` (the
/// newest always stays), updating `totals`.
fn trim(conn: &Connection, totals: &mut Totals, limits: Limits) -> rusqlite::Result<()> {
    // The oldest past the count limit go whatever their size: their sizes
    // summed by one statement, not read row by row.
    let past_count = totals.count.saturating_sub(limits.messages as u64);
    if past_count > 0 {
        let cut = totals.first + i64::try_from(past_count).unwrap_or(i64::MAX) - 1;
        let (rows, text): (i64, i64) = conn
            .prepare_cached(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM messages \
                 WHERE id >= ?1 AND id <= ?2",
            )?
            .query_row((totals.first, cut), |row| Ok((row.get(0)?, row.get(1)?)))?;
        if u64::try_from(rows).ok() != Some(past_count) {
            // The table holds other rows than the totals say: start over
            // from it.
            *totals = Totals {
                last: totals.last,
                ..read_totals(conn)?
            };
            return trim_rows(conn, totals, limits);
        }
        conn.prepare_cached(DELETE_RANGE)?
            .execute((totals.first, cut))?;
        totals.count -= past_count;
        totals.bytes = totals
            .bytes
            .saturating_sub(u64::try_from(text).unwrap_or(0) + past_count * ENTRY_OVERHEAD as u64);
        totals.first = cut + 1;
    }
    trim_rows(conn, totals, limits)
}

/// [`trim`] row by row, the oldest first, while the history is over
/// `limits`: where the bytes limit decides how many go.
fn trim_rows(conn: &Connection, totals: &mut Totals, limits: Limits) -> rusqlite::Result<()> {
    let over = |t: &Totals| {
        t.count > limits.messages as u64 || (t.bytes > limits.bytes as u64 && t.count > 1)
    };
    let mut oldest = conn.prepare_cached(
        "SELECT id, length(body) FROM messages WHERE id >= ?1 ORDER BY id LIMIT ?2",
    )?;
    let mut delete = conn.prepare_cached(DELETE_RANGE)?;
    while over(totals) {
        let mut cut = None;
        let mut rows = oldest.query((totals.first, TRIM_STEP as i64))?;
        while let Some(row) = rows.next()? {
            if !over(totals) {
                break;
            }
            let (id, len): (i64, i64) = (row.get(0)?, row.get(1)?);
            totals.count -= 1;
            totals.bytes = totals
                .bytes
                .saturating_sub(u64::try_from(len).unwrap_or(0) + ENTRY_OVERHEAD as u64);
            cut = Some(id);
        }
        drop(rows);
        let Some(cut) = cut else {
            // The table holds less than the totals say: start over from it.
            *totals = Totals {
                last: totals.last,
                ..read_totals(conn)?
            };
            break;
        };
        delete.execute((totals.first, cut))?;
        totals.first = cut + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn how(messages: usize, bytes: usize) -> Recording {
        Recording {
            limits: Limits { messages, bytes },
            timeout: Duration::from_secs(5),
            sync: SqliteSync::Normal,
        }
    }

    #[tokio::test]
    async fn messages_are_kept_across_a_reopen_and_trimmed_to_the_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let history = SqliteHistory::open(&path, SqliteSync::Normal).unwrap();
        for i in 0..10u8 {
            let pick = history
                .record_and_pick(Bytes::from(vec![b'a' + i; 3]), how(4, 1 << 20))
                .await
                .unwrap();
            assert!(pick[0] + 3 >= b'a' + i, "picked a trimmed message");
        }
        drop(history);
        // The writer thread lets go of the file once its queue is gone
        // (the runtime's tasks end first: the waits yield to them).
        let mut reopened = None;
        for _ in 0..500 {
            match SqliteHistory::open(&path, SqliteSync::Normal) {
                Ok(history) => {
                    reopened = Some(history);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        let reopened = reopened.expect("reopened within 5 s");
        let reader = open_reader(&path).unwrap().unwrap();
        assert_eq!(count(&reader).unwrap(), 4);
        assert_eq!(
            tail(&reader, 2, 1024).unwrap(),
            [b"iii".to_vec(), b"jjj".to_vec()]
        );
        // Bytes: room for two 3-byte messages with their overhead, not three.
        reopened
            .record_and_pick(
                Bytes::from_static(b"kkk"),
                how(100, 2 * (3 + ENTRY_OVERHEAD) + 1),
            )
            .await
            .unwrap();
        assert_eq!(count(&reader).unwrap(), 2);
        assert_eq!(
            tail(&reader, 10, 1024).unwrap(),
            [b"jjj".to_vec(), b"kkk".to_vec()]
        );
    }

    /// Messages handed to `history` at once (one batch: on this
    /// single-threaded runtime every task queues its message before the
    /// gathering task runs); their picks, in the order given.
    async fn at_once(
        history: &std::sync::Arc<SqliteHistory>,
        messages: &[String],
        how: Recording,
    ) -> Vec<String> {
        let tasks: Vec<_> = (messages.iter().cloned())
            .map(|message| {
                let history = history.clone();
                tokio::spawn(
                    async move { history.record_and_pick(Bytes::from(message), how).await },
                )
            })
            .collect();
        let mut picks = Vec::new();
        for task in tasks {
            let pick = task.await.unwrap().unwrap();
            picks.push(String::from_utf8(pick.to_vec()).unwrap());
        }
        picks
    }

    fn texts(prefix: &str, range: std::ops::Range<usize>, width: usize) -> Vec<String> {
        range.map(|i| format!("{prefix}{i:0width$}")).collect()
    }

    #[tokio::test]
    async fn a_full_batch_is_inserted_in_chunks_and_trimmed_by_count_then_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let history = std::sync::Arc::new(SqliteHistory::open(&path, SqliteSync::Normal).unwrap());
        let reader = open_reader(&path).unwrap().unwrap();
        // 40 in one batch: two statements of 16 rows, then 8 of one; the
        // count limit keeps the newest 25.
        let first = texts("m", 0..40, 2);
        let picks = at_once(&history, &first, how(25, 1 << 20)).await;
        for pick in &picks {
            assert!(
                first[15..].contains(pick),
                "{pick} was trimmed or never sent"
            );
        }
        assert_eq!(count(&reader).unwrap(), 25);
        let kept: Vec<Vec<u8>> = first[15..].iter().map(|m| m.clone().into_bytes()).collect();
        assert_eq!(tail(&reader, 100, 64).unwrap(), kept);
        // 10 of 100 bytes, and room for 5 of them: the bytes limit trims
        // all 25 older ones and 5 of the batch.
        let long = texts("L", 0..10, 99);
        let picks = at_once(&history, &long, how(100, 5 * (100 + ENTRY_OVERHEAD))).await;
        for pick in &picks {
            assert!(long[5..].contains(pick), "{pick} was trimmed");
        }
        assert_eq!(count(&reader).unwrap(), 5);
        let kept: Vec<Vec<u8>> = long[5..].iter().map(|m| m.clone().into_bytes()).collect();
        assert_eq!(tail(&reader, 100, 200).unwrap(), kept);
    }

    #[tokio::test]
    async fn rows_another_writer_removed_are_found_by_the_trim_and_skipped_by_the_picks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let history = std::sync::Arc::new(SqliteHistory::open(&path, SqliteSync::Normal).unwrap());
        let first = texts("a", 0..20, 2);
        at_once(&history, &first, how(20, 1 << 20)).await;
        // A gap of 10 in the middle (a05-a14: a new file's ids start at 1),
        // and a writer that does not know it.
        let other = Connection::open(&path).unwrap();
        other.busy_timeout(BUSY_TIMEOUT).unwrap();
        let gone = other
            .execute("DELETE FROM messages WHERE id >= 6 AND id <= 15", [])
            .unwrap();
        assert_eq!(gone, 10);
        drop(other);
        // Every pick is a message kept, whatever id was drawn.
        for round in 0..5 {
            let more = texts(&format!("b{round}-"), 0..4, 1);
            let picks = at_once(&history, &more, how(1000, 1 << 20)).await;
            let reader = open_reader(&path).unwrap().unwrap();
            let kept = tail(&reader, 1000, 64).unwrap();
            for pick in picks {
                assert!(kept.contains(&pick.into_bytes()), "a pick of a removed row");
            }
        }
        // 30 rows (ids 1-5, 16-40) where the totals count 40. A message
        // with a limit of 16: 25 to drop by the count, the ids 1-25 of
        // which only 15 are there: the trim reads the table again and
        // drops its 15 oldest rows, which leaves the ids 26-41.
        let last = texts("c", 0..1, 1);
        at_once(&history, &last, how(16, 1 << 20)).await;
        let reader = open_reader(&path).unwrap().unwrap();
        assert_eq!(count(&reader).unwrap(), 16);
        let mut expected: Vec<Vec<u8>> = (5..20)
            .map(|n| format!("b{}-{}", n / 4, n % 4).into_bytes())
            .collect();
        expected.push(b"c0".to_vec());
        assert_eq!(tail(&reader, 100, 64).unwrap(), expected);
    }

    #[test]
    fn a_new_file_gets_small_pages_and_an_old_file_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let page_size = |conn: &Connection| -> i64 {
            conn.pragma_query_value(None, "page_size", |r| r.get(0))
                .unwrap()
        };
        let new = dir.path().join("new.db");
        assert_eq!(
            page_size(&open_writer(&new, SqliteSync::Normal).unwrap()),
            PAGE_SIZE
        );
        // A file made with SQLite's default pages (as by an earlier
        // switchboard) is opened as it is, not rewritten.
        let old = dir.path().join("old.db");
        Connection::open(&old)
            .unwrap()
            .execute_batch("PRAGMA page_size = 4096; CREATE TABLE t (x);")
            .unwrap();
        assert_eq!(
            page_size(&open_writer(&old, SqliteSync::Normal).unwrap()),
            4096
        );
    }

    #[tokio::test]
    async fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let _first = SqliteHistory::open(&path, SqliteSync::Full).unwrap();
        let second = SqliteHistory::open(&path, SqliteSync::Full).unwrap_err();
        assert!(matches!(second, SqliteOpenError::InUse), "{second}");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let err = SqliteHistory::open(&path, SqliteSync::Normal).unwrap_err();
        assert!(matches!(err, SqliteOpenError::Unusable(_)), "{err}");
    }

    #[tokio::test]
    async fn a_read_only_database_is_an_error_for_each_message_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let lock = std::fs::File::create(&path).unwrap();
        let conn = open_writer(&path, SqliteSync::Normal).unwrap();
        // Stand-in for a file system remounted read-only: every write fails.
        conn.pragma_update(None, "query_only", true).unwrap();
        let file = OpenFile::new(lock, conn, SqliteSync::Normal).unwrap();
        let history = SqliteHistory::start(&path, file, SqliteSync::Normal).unwrap();
        for _ in 0..3 {
            let reason = history
                .record_and_pick(Bytes::from_static(b"m"), how(10, 1 << 20))
                .await
                .unwrap_err();
            assert!(matches!(reason, Failure::NotStored(_)), "{reason:?}");
            assert!(reason.to_string().contains("readonly"), "{reason}");
        }
    }

    #[tokio::test]
    async fn a_full_disk_is_an_error_for_the_batch_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        // Stand-in for a full disk: the database may grow by 160 pages
        // (160 KiB) and no more (SQLITE_FULL, as from a full file system).
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        let conn = open_writer(&path, SqliteSync::Normal).unwrap();
        let pages: i64 = conn
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages + 160)
            .unwrap();
        let file = OpenFile::new(lock, conn, SqliteSync::Normal).unwrap();
        let history = SqliteHistory::start(&path, file, SqliteSync::Normal).unwrap();
        let big = Bytes::from(vec![b'x'; 64 * 1024]);
        let (mut stored, mut failed) = (0, 0);
        for _ in 0..8 {
            match history
                .record_and_pick(big.clone(), how(1000, 1 << 30))
                .await
            {
                Ok(_) => stored += 1,
                Err(reason) => {
                    assert!(matches!(reason, Failure::NotStored(_)), "{reason:?}");
                    assert!(reason.to_string().contains("full"), "{reason}");
                    failed += 1;
                }
            }
        }
        assert!(stored > 0 && failed > 0, "{stored} stored, {failed} failed");
        // What failed was rolled back; what was stored is all there.
        let reader = open_reader(&path).unwrap().unwrap();
        assert_eq!(count(&reader).unwrap(), stored);
        // The writer goes on: a message that fits is stored, and trims.
        let pick = history
            .record_and_pick(Bytes::from_static(b"again"), how(1, 1 << 30))
            .await
            .unwrap();
        assert_eq!(pick, Bytes::from_static(b"again"));
        assert_eq!(count(&reader).unwrap(), 1);
    }

    fn how_long(timeout: Duration) -> Recording {
        Recording {
            timeout,
            ..how(100, 1 << 20)
        }
    }

    #[tokio::test]
    async fn a_message_past_its_deadline_is_unknown_once_taken_and_not_stored_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let history = SqliteHistory::open(&path, SqliteSync::Normal).unwrap();
        history
            .record_and_pick(Bytes::from_static(b"first"), how(100, 1 << 20))
            .await
            .unwrap();
        // Another connection holds the write lock: the writer's next
        // commit waits for it (its busy timeout), past the messages'
        // deadlines.
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let taken = history.record_and_pick(
            Bytes::from_static(b"taken"),
            how_long(Duration::from_millis(800)),
        );
        let behind = async {
            // Queued once the writer has taken the first into its commit
            // (a wait: nothing outside the writer shows when it has).
            tokio::time::sleep(Duration::from_millis(300)).await;
            history
                .record_and_pick(
                    Bytes::from_static(b"behind"),
                    how_long(Duration::from_millis(100)),
                )
                .await
        };
        let (taken, behind) = tokio::join!(taken, behind);
        assert!(matches!(taken, Err(Failure::Unknown(_))), "{taken:?}");
        assert!(matches!(behind, Err(Failure::NotStored(_))), "{behind:?}");
        blocker.execute_batch("COMMIT").unwrap();
        // The lock gone, the commit the writer had begun completes: the
        // message told "timeout" is stored, the one told "unavailable" not.
        let pick = history
            .record_and_pick(Bytes::from_static(b"after"), how(100, 1 << 20))
            .await
            .unwrap();
        assert!(!pick.is_empty());
        let reader = open_reader(&path).unwrap().unwrap();
        assert_eq!(
            tail(&reader, 10, 1024).unwrap(),
            [b"first".to_vec(), b"taken".to_vec(), b"after".to_vec()]
        );
    }

    #[tokio::test]
    async fn a_deleted_or_replaced_file_is_found_at_the_next_batch_and_the_path_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let history = SqliteHistory::open(&path, SqliteSync::Normal).unwrap();
        let record = |text: &'static str| {
            history.record_and_pick(Bytes::from_static(text.as_bytes()), how(100, 1 << 20))
        };
        for text in ["a", "b", "c"] {
            record(text).await.unwrap();
        }
        std::fs::remove_file(&path).unwrap();
        record("d").await.unwrap();
        record("e").await.unwrap();
        let reader = open_reader(&path).unwrap().unwrap();
        assert_eq!(
            tail(&reader, 10, 1024).unwrap(),
            [b"d".to_vec(), b"e".to_vec()]
        );
        drop(reader);

        // Replaced: another history file renamed over the path is taken
        // as it is, and goes on from its messages.
        let other = dir.path().join("other.db");
        {
            let conn = open_writer(&other, SqliteSync::Normal).unwrap();
            conn.execute("INSERT INTO messages (id, body) VALUES (7, x'78')", [])
                .unwrap();
        }
        std::fs::rename(&other, &path).unwrap();
        record("f").await.unwrap();
        let reader = open_reader(&path).unwrap().unwrap();
        assert_eq!(
            tail(&reader, 10, 1024).unwrap(),
            [b"x".to_vec(), b"f".to_vec()]
        );
        drop(reader);

        // A path that cannot be a file: each message is refused (not
        // stored) until it can, tried again once a second.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let refused = record("g").await.unwrap_err();
        assert!(matches!(refused, Failure::NotStored(_)), "{refused:?}");
        std::fs::remove_dir(&path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match record("h").await {
                Ok(_) => break,
                Err(Failure::NotStored(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("not open again in time: {e:?}"),
            }
        }
        let reader = open_reader(&path).unwrap().unwrap();
        assert_eq!(tail(&reader, 10, 1024).unwrap(), [b"h".to_vec()]);
    }
}
