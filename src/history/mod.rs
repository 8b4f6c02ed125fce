//! Where a random-bot's history lives, the `[listener.history]` table: in
//! the process's memory (the default), in an embedded SQLite file (durable
//! across restarts and crashes; one process per file), or in Redis (shared
//! by every process pointed at the same key). Every backend keeps the
//! listener's two limits, messages and bytes, and answers "record this
//! message and give me a random one"; a backend that cannot answer gives a
//! [`HistoryError`] that says whether the message is known not to be
//! stored, or may be, logged once per outage.
//!
//! Histories are opened before the handlers that use them are built, by a
//! server's [`Registry`], at start and at each reload, where an error can
//! still stop the start or refuse the reload. A history that the running
//! config already has open is taken over, not opened again, so a reload
//! keeps it (a memory history too); one that no listener names any more
//! closes when its last connection ends.

mod batch;
mod config;
mod inspect;
mod memory;
mod redis;
mod redis_url;
mod registry;
mod sqlite;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tracing::{info, warn};

use config::Identity;
pub use config::{Backend, HistoryConfig, Mistake};
pub use inspect::{Inspect, Inspected, inspect};
use memory::MemoryHistory;
use redis::RedisHistory;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use redis::split_picks;
pub use redis_url::RedisUrl;
pub use registry::HistoryOpenError;
pub(crate) use registry::{Histories, Registry};
use sqlite::SqliteHistory;
pub use sqlite::SqliteSync;

/// What an entry costs besides its text, in every backend's byte count:
/// about what a message costs in memory besides its text (the handle in
/// the deque, the allocation's header and rounding; about 80 bytes
/// measured for one-byte messages). So `history_bytes` means the same for
/// each backend, and a flood of tiny messages is bounded by it too.
pub(crate) const ENTRY_OVERHEAD: usize = 80;
/// The two bounds of a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Messages kept; the oldest go first.
    pub messages: usize,
    /// Bytes kept (text plus [`ENTRY_OVERHEAD`] each); the oldest go first,
    /// but the newest message always stays.
    pub bytes: usize,
}
/// How one listener records into a history (a shared history may be used
/// by listeners with different settings: each message goes by its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recording {
    pub limits: Limits,
    pub timeout: Duration,
    pub sync: SqliteSync,
}

/// Why a history did not answer a message, as the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HistoryError {
    /// The message is known not to be stored: the queue stayed full, the
    /// backend was down or refused it, or its deadline passed before the
    /// backend took it. `ERR history unavailable`.
    #[error("history unavailable")]
    Unavailable,
    /// The message went to the backend and no answer came (its deadline
    /// passed, or the connection broke mid-call): it may be stored, and
    /// served to others later. `ERR history timeout`.
    #[error("history timeout")]
    Timeout,
}

/// Why a backend did not answer a message, with the reason for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Failure {
    /// Known not to be stored (never handed to the backend, refused by
    /// it, or rolled back).
    #[error("{0}")]
    NotStored(String),
    /// Handed to the backend, and its fate is unknown.
    #[error("{0}")]
    Unknown(String),
}

impl Failure {
    /// What the client is told.
    fn client_error(&self) -> HistoryError {
        match self {
            Failure::NotStored(_) => HistoryError::Unavailable,
            Failure::Unknown(_) => HistoryError::Timeout,
        }
    }
}

/// An open history.
#[derive(Debug)]
pub(crate) struct History {
    store: Store,
    identity: Identity,
    outage: Outage,
}

#[derive(Debug)]
enum Store {
    Memory(MemoryHistory),
    Sqlite(SqliteHistory),
    Redis(RedisHistory),
}

impl History {
    /// A history on `store`, known in the logs as `identity`.
    fn new(store: Store, identity: Identity) -> History {
        History {
            store,
            identity,
            outage: Outage::default(),
        }
    }

    /// Records `message`, trims to the limits, and appends a random message
    /// kept (possibly `message`) to `reply`, with room for one byte more (a
    /// line ending). A memory history copies it under its lock: no handle
    /// on the entry to count.
    pub(crate) async fn record_and_pick(
        &self,
        message: &[u8],
        how: Recording,
        reply: &mut Vec<u8>,
    ) -> Result<(), HistoryError> {
        // SQLite and Redis queue a copy (so the history never pins the
        // caller's read buffer); memory copies into its ring.
        let picked = match &self.store {
            Store::Memory(memory) => {
                memory.record_and_pick(message, how.limits, reply);
                return Ok(());
            }
            Store::Sqlite(sqlite) => {
                sqlite
                    .record_and_pick(Bytes::copy_from_slice(message), how)
                    .await
            }
            Store::Redis(redis) => {
                redis
                    .record_and_pick(Bytes::copy_from_slice(message), how)
                    .await
            }
        };
        match picked {
            Ok(pick) => {
                self.outage.ended(&self.identity);
                append_pick(reply, &pick);
                Ok(())
            }
            Err(failure) => {
                self.outage.failed(&self.identity, &failure);
                Err(failure.client_error())
            }
        }
    }
}

/// Appends `pick` to `reply` with room for one byte more (a line ending):
/// an empty reply gets one allocation of that size (through `reserve`,
/// Vec's growth path costs about 170 instructions more).
fn append_pick(reply: &mut Vec<u8>, pick: &[u8]) {
    append_pick_parts(reply, pick, &[]);
}

/// [`append_pick`] of a pick in two parts (`first`, then `second`), as a
/// ring holds a message that wraps around its end.
fn append_pick_parts(reply: &mut Vec<u8>, first: &[u8], second: &[u8]) {
    let len = first.len() + second.len();
    if reply.capacity() == 0 {
        *reply = Vec::with_capacity(len + 1);
    } else {
        reply.reserve(len + 1);
    }
    reply.extend_from_slice(first);
    reply.extend_from_slice(second);
}

/// Failures in a row, so that an outage is logged when it starts and when
/// it ends, not once per message.
#[derive(Debug, Default)]
struct Outage {
    failing: AtomicBool,
    failures: AtomicU64,
}

impl Outage {
    fn failed(&self, history: &Identity, reason: &Failure) {
        if self.failing.swap(true, Ordering::AcqRel) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.failures.store(1, Ordering::Relaxed);
        warn!(
            history = %history,
            error = %reason,
            "history unavailable: each message gets `ERR history unavailable` (not stored) or \
             `ERR history timeout` (may be stored) until it is back (logged once until then)"
        );
    }

    fn ended(&self, history: &Identity) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::AcqRel) {
            info!(
                history = %history,
                failed_messages = self.failures.swap(0, Ordering::Relaxed),
                "history available again"
            );
        }
    }
}
