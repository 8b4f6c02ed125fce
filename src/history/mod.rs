//! Where a random-bot's history lives, the `[listener.history]` table: in
//! the process's memory (the default), in an embedded SQLite file (durable
//! across restarts and crashes; one process per file), or in Redis (shared
//! by every process pointed at the same key). Every backend keeps the
//! listener's two limits, messages and bytes, and answers "record this
//! message and give me a random one"; a backend that cannot answer is
//! [`Unavailable`], logged once per outage.
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
pub use redis::RedisUrl;
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

/// The history could not answer; the client gets `ERR history unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("history unavailable")]
pub(crate) struct Unavailable;

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

    /// Records `message`, trims to the limits, and returns a random message
    /// kept (possibly `message`).
    pub(crate) async fn record_and_pick(
        &self,
        message: Bytes,
        how: Recording,
    ) -> Result<Bytes, Unavailable> {
        let picked = match &self.store {
            Store::Memory(memory) => return Ok(memory.record_and_pick(message, how.limits)),
            Store::Sqlite(sqlite) => sqlite.record_and_pick(message, how).await,
            Store::Redis(redis) => redis.record_and_pick(message, how).await,
        };
        match picked {
            Ok(pick) => {
                self.outage.ended(&self.identity);
                Ok(pick)
            }
            Err(reason) => {
                self.outage.failed(&self.identity, &reason);
                Err(Unavailable)
            }
        }
    }
}

/// Failures in a row, so that an outage is logged when it starts and when
/// it ends, not once per message.
#[derive(Debug, Default)]
struct Outage {
    failing: AtomicBool,
    failures: AtomicU64,
}

impl Outage {
    fn failed(&self, history: &Identity, reason: &str) {
        if self.failing.swap(true, Ordering::AcqRel) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.failures.store(1, Ordering::Relaxed);
        warn!(
            history = %history,
            error = reason,
            "history unavailable: each message gets `ERR history unavailable` until it is \
             back (logged once until then)"
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
