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
mod memory;
mod redis;
mod sqlite;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tracing::{error, info, warn};

use memory::MemoryHistory;
use redis::RedisHistory;
pub use redis::RedisUrl;
use sqlite::SqliteHistory;
pub use sqlite::SqliteSync;

/// What an entry costs besides its text, in every backend's byte count:
/// about what a message costs in memory besides its text (the handle in
/// the deque, the allocation's header and rounding; about 80 bytes
/// measured for one-byte messages). So `history_bytes` means the same for
/// each backend, and a flood of tiny messages is bounded by it too.
pub(crate) const ENTRY_OVERHEAD: usize = 80;

/// How long a call to the SQLite writer or to Redis may take, by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest `timeout`.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest Redis `key`.
const MAX_KEY_BYTES: usize = 256;

/// The two bounds of a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Messages kept; the oldest go first.
    pub messages: usize,
    /// Bytes kept (text plus [`ENTRY_OVERHEAD`] each); the oldest go first,
    /// but the newest message always stays.
    pub bytes: usize,
}

/// Where a history is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The process's memory: lost when it ends.
    #[default]
    Memory,
    /// An SQLite file.
    Sqlite,
    /// A Redis key.
    Redis,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
            Backend::Redis => "redis",
        }
    }
}

/// The `[listener.history]` table of a random-bot.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// `memory` (the default), `sqlite` or `redis`.
    #[serde(default)]
    pub backend: Backend,
    /// sqlite: the database file (created if missing; its directory must
    /// exist). A relative path is taken from the working directory.
    pub path: Option<PathBuf>,
    /// sqlite: what a commit waits for, `normal` (the default: survives
    /// the process) or `full` (survives a power loss).
    pub sync: Option<SqliteSync>,
    /// redis: `redis://[user:password@]host:port/db`.
    pub url: Option<RedisUrl>,
    /// redis: the key (default `switchboard:LISTENER`).
    pub key: Option<String>,
    /// sqlite and redis: how long one message may wait for the history
    /// (default 1s); past it the client gets `ERR history unavailable`.
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
}

/// A mistake in a `[listener.history]` table: the key and what is wrong.
pub type Mistake = (&'static str, String);

impl HistoryConfig {
    /// Checks that each key belongs to the backend and is in range, and
    /// makes `path` absolute.
    pub fn validate(&mut self) -> Result<(), Mistake> {
        let backend = self.backend;
        let not_for = |key: &'static str, owners: &str| -> Mistake {
            (
                key,
                format!(
                    "`{key}` is a setting of the {owners} backend, and this history's backend is {}",
                    backend.name()
                ),
            )
        };
        if backend != Backend::Sqlite {
            if self.path.is_some() {
                return Err(not_for("path", "sqlite"));
            }
            if self.sync.is_some() {
                return Err(not_for("sync", "sqlite"));
            }
        }
        if backend != Backend::Redis {
            if self.url.is_some() {
                return Err(not_for("url", "redis"));
            }
            if self.key.is_some() {
                return Err(not_for("key", "redis"));
            }
        }
        if backend == Backend::Memory && self.timeout.is_some() {
            return Err(not_for("timeout", "sqlite and redis"));
        }
        if let Some(timeout) = self.timeout {
            if timeout < Duration::from_millis(1) || timeout > MAX_TIMEOUT {
                return Err((
                    "timeout",
                    format!("timeout must be between 1ms and {MAX_TIMEOUT:?}"),
                ));
            }
        }
        match backend {
            Backend::Memory => {}
            Backend::Sqlite => {
                let Some(path) = &self.path else {
                    return Err((
                        "backend",
                        "the sqlite backend needs `path`, the database file".to_owned(),
                    ));
                };
                self.path = Some(absolute_file(path).map_err(|message| ("path", message))?);
            }
            Backend::Redis => {
                if self.url.is_none() {
                    return Err((
                        "backend",
                        "the redis backend needs `url`, such as \"redis://127.0.0.1:6379/0\""
                            .to_owned(),
                    ));
                }
                if let Some(key) = &self.key {
                    if key.is_empty()
                        || key.len() > MAX_KEY_BYTES
                        || key.chars().any(char::is_control)
                    {
                        return Err((
                            "key",
                            format!(
                                "key must be 1 to {MAX_KEY_BYTES} bytes, with no control characters"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// How long one message may wait for the history.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    /// What a commit waits for (sqlite).
    pub(crate) fn sync(&self) -> SqliteSync {
        self.sync.unwrap_or_default()
    }

    /// The Redis key of `listener`'s history.
    fn redis_key(&self, listener: &str) -> String {
        self.key
            .clone()
            .unwrap_or_else(|| format!("switchboard:{listener}"))
    }

    /// Which history this is: two listeners naming the same one share it.
    fn identity(&self, listener: &str) -> Identity {
        match (self.backend, &self.path, &self.url) {
            (Backend::Sqlite, Some(path), _) => Identity::Sqlite(path.clone()),
            (Backend::Redis, _, Some(url)) => Identity::Redis {
                url: url.clone(),
                key: self.redis_key(listener),
            },
            _ => Identity::Memory(listener.to_owned()),
        }
    }

    /// Where `listener`'s history is, for the logs (no password).
    pub fn describe(&self, listener: &str) -> String {
        self.identity(listener).to_string()
    }

    /// The backend and where it keeps the history, for `check` (no password).
    pub fn summary(&self) -> String {
        match (self.backend, &self.path, &self.url) {
            (Backend::Sqlite, Some(path), _) => format!(
                "sqlite:{} sync={}",
                path.display(),
                match self.sync() {
                    SqliteSync::Normal => "normal",
                    SqliteSync::Full => "full",
                }
            ),
            (Backend::Redis, _, Some(url)) => match &self.key {
                Some(key) => format!("redis:{url} key={key:?}"),
                None => format!("redis:{url}"),
            },
            _ => "memory".to_owned(),
        }
    }
}

/// `path` made absolute through its directory, which must exist (the file
/// need not).
fn absolute_file(path: &Path) -> Result<PathBuf, String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{path:?} does not name a file"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| format!("the directory of {path:?}: {e} (it must exist)"))?;
    let absolute = dir.join(name);
    if absolute.is_dir() {
        return Err(format!(
            "{absolute:?} is a directory; name the database file"
        ));
    }
    Ok(absolute)
}

/// Which history a config names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Identity {
    /// A listener's own, in memory.
    Memory(String),
    Sqlite(PathBuf),
    Redis {
        url: RedisUrl,
        key: String,
    },
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Memory(_) => f.write_str("memory"),
            Identity::Sqlite(path) => write!(f, "sqlite {}", path.display()),
            Identity::Redis { url, key } => write!(f, "redis {url} key {key}"),
        }
    }
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

/// A history that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("listener \"{listener}\": history ({history}): {message}")]
pub struct HistoryOpenError {
    listener: String,
    history: String,
    message: String,
}

/// A server's open histories, by identity; holds them weakly, so a history
/// closes when the last handler using it is gone.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    open: Mutex<HashMap<Identity, Weak<History>>>,
}

/// The histories a config's handlers are built with.
#[derive(Debug, Default)]
pub(crate) struct Histories {
    by_identity: HashMap<Identity, Arc<History>>,
}

impl Histories {
    /// `listener`'s history, as `config` names it, opened by
    /// [`Registry::open`] from the same config. (One that was not, which
    /// would be a bug, is logged and replaced by a new memory history.)
    pub(crate) fn get(&self, listener: &str, config: &HistoryConfig) -> Arc<History> {
        let identity = config.identity(listener);
        if let Some(history) = self.by_identity.get(&identity) {
            return history.clone();
        }
        error!(
            listener,
            history = %identity,
            "no history was opened for this listener: it keeps a new one in memory"
        );
        Arc::new(History {
            store: Store::Memory(MemoryHistory::default()),
            identity: Identity::Memory(listener.to_owned()),
            outage: Outage::default(),
        })
    }
}

impl Registry {
    /// Opens every history that `wanted` (listener, its history) names and
    /// that is not open yet; returns them all. Blocking (a SQLite file is
    /// opened and read); Redis is connected later, by the first message.
    /// Must be called inside a tokio runtime.
    pub(crate) fn open<'a>(
        &self,
        wanted: impl IntoIterator<Item = (&'a str, &'a HistoryConfig)>,
    ) -> Result<Histories, HistoryOpenError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, history| history.strong_count() > 0);
        let mut histories = Histories::default();
        for (listener, config) in wanted {
            let identity = config.identity(listener);
            if histories.by_identity.contains_key(&identity) {
                continue;
            }
            let history = match open.get(&identity).and_then(Weak::upgrade) {
                Some(history) => history,
                None => {
                    let fail = |message: String| HistoryOpenError {
                        listener: listener.to_owned(),
                        history: identity.to_string(),
                        message,
                    };
                    let store = match &identity {
                        Identity::Memory(_) => Store::Memory(MemoryHistory::default()),
                        Identity::Sqlite(path) => Store::Sqlite(
                            SqliteHistory::open(path, config.sync())
                                .map_err(|e| fail(e.to_string()))?,
                        ),
                        Identity::Redis { url, key } => Store::Redis(
                            RedisHistory::open(url, key, config.timeout()).map_err(fail)?,
                        ),
                    };
                    let history = Arc::new(History {
                        store,
                        identity: identity.clone(),
                        outage: Outage::default(),
                    });
                    open.insert(identity.clone(), Arc::downgrade(&history));
                    history
                }
            };
            histories.by_identity.insert(identity, history);
        }
        Ok(histories)
    }
}

impl Registry {
    /// Forgets the memory histories that `current` (the set of the config
    /// just applied) does not have: one that a reload dropped is never
    /// taken over again by a later reload, even while a connection that
    /// began before still holds it. (A file or a key is the same history
    /// whenever it is reopened.)
    pub(crate) fn forget_memory_not_in(&self, current: &Histories) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|identity, history| {
            history.strong_count() > 0
                && (!matches!(identity, Identity::Memory(_))
                    || current.by_identity.contains_key(identity))
        });
    }
}

/// What `switchboard history` shows of a listener's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inspect {
    /// The number of messages kept.
    Count,
    /// The newest N messages, oldest first.
    Tail(usize),
}

/// What `switchboard history` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspected {
    /// The number of messages kept.
    Count(u64),
    /// Messages, oldest first.
    Messages(Vec<Vec<u8>>),
}

/// Reads `listener`'s history as `config` names it, from outside the
/// daemon (a read-only SQLite connection beside the writer, or Redis).
/// A memory history is inside the daemon's process: an error says so.
pub async fn inspect(
    listener: &str,
    config: &HistoryConfig,
    what: Inspect,
) -> Result<Inspected, String> {
    match config.identity(listener) {
        Identity::Memory(_) => Err(format!(
            "listener \"{listener}\" keeps its history in the daemon's memory, which only the \
             daemon can read; `switchboard history` reads sqlite and redis histories"
        )),
        Identity::Sqlite(path) => tokio::task::spawn_blocking(move || {
            let Some(conn) = sqlite::open_reader(&path)? else {
                return Ok(match what {
                    Inspect::Count => Inspected::Count(0),
                    Inspect::Tail(_) => Inspected::Messages(Vec::new()),
                });
            };
            Ok(match what {
                Inspect::Count => Inspected::Count(sqlite::count(&conn)?),
                Inspect::Tail(n) => Inspected::Messages(sqlite::tail(&conn, n)?),
            })
        })
        .await
        .map_err(|e| e.to_string())?,
        Identity::Redis { url, key } => {
            let timeout = config.timeout();
            let redis = RedisHistory::open(&url, &key, timeout)?;
            Ok(match what {
                Inspect::Count => Inspected::Count(redis.count(timeout).await?),
                Inspect::Tail(n) => Inspected::Messages(redis.tail(n, timeout).await?),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<HistoryConfig, String> {
        let mut config: HistoryConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        config
            .validate()
            .map_err(|(key, message)| format!("{key}: {message}"))?;
        Ok(config)
    }

    #[test]
    fn each_key_belongs_to_its_backend() {
        assert_eq!(parse("").unwrap(), HistoryConfig::default());
        let err = parse("backend = \"sqlite\"").unwrap_err();
        assert!(
            err.starts_with("backend: the sqlite backend needs `path`"),
            "{err}"
        );
        let err = parse("backend = \"redis\"").unwrap_err();
        assert!(err.contains("needs `url`"), "{err}");
        let err = parse("path = \"h.db\"").unwrap_err();
        assert!(
            err.starts_with("path: `path` is a setting of the sqlite backend"),
            "{err}"
        );
        let err = parse("backend = \"sqlite\"\npath = \"h.db\"\nurl = \"redis://127.0.0.1/0\"")
            .unwrap_err();
        assert!(err.starts_with("url:"), "{err}");
        let err = parse("timeout = \"1s\"").unwrap_err();
        assert!(err.starts_with("timeout:"), "{err}");
        let err = parse("backend = \"redis\"\nurl = \"redis://127.0.0.1/0\"\ntimeout = \"2m\"")
            .unwrap_err();
        assert!(err.contains("between 1ms and"), "{err}");
        let err = parse("backend = \"sqlite\"\npath = \"/no/such/dir/h.db\"").unwrap_err();
        assert!(err.starts_with("path: the directory of"), "{err}");
        let err = parse("backend = \"postgres\"").unwrap_err();
        assert!(err.contains("unknown variant `postgres`"), "{err}");
        let err = parse("backend = \"redis\"\nurl = \"http://x\"").unwrap_err();
        assert!(err.contains("not a Redis URL"), "{err}");
    }

    #[test]
    fn a_relative_path_is_made_absolute_and_identities_name_the_history() {
        let config = parse("backend = \"sqlite\"\npath = \"h.db\"").unwrap();
        let path = config.path.clone().unwrap();
        assert!(path.is_absolute() && path.ends_with("h.db"), "{path:?}");
        assert_eq!(config.describe("bot"), format!("sqlite {}", path.display()));
        let redis = parse("backend = \"redis\"\nurl = \"redis://u:pw@127.0.0.1:6379/0\"").unwrap();
        assert_eq!(
            redis.describe("bot"),
            "redis redis://u:***@127.0.0.1:6379/0 key switchboard:bot"
        );
        // Two listeners share a file or a key, never a memory history.
        assert_eq!(config.identity("a"), config.identity("b"));
        assert_ne!(redis.identity("a"), redis.identity("b"));
        let memory = HistoryConfig::default();
        assert_ne!(memory.identity("a"), memory.identity("b"));
    }

    #[tokio::test]
    async fn a_history_open_in_the_registry_is_taken_over_not_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = parse(&format!(
            "backend = \"sqlite\"\npath = \"{}\"",
            dir.path().join("h.db").display()
        ))
        .unwrap();
        let memory = HistoryConfig::default();
        let registry = Registry::default();
        let first = registry
            .open([("a", &sqlite), ("b", &sqlite), ("m", &memory)])
            .unwrap();
        let a = first.get("a", &sqlite);
        assert!(Arc::ptr_eq(&a, &first.get("b", &sqlite)));
        // Reopened while the first set lives: the same histories (an open
        // of the file again would fail on its lock).
        let second = registry.open([("a", &sqlite), ("m", &memory)]).unwrap();
        assert!(Arc::ptr_eq(&a, &second.get("a", &sqlite)));
        assert!(Arc::ptr_eq(
            &first.get("m", &memory),
            &second.get("m", &memory)
        ));
        // A second registry (another server) cannot open the same file.
        let err = Registry::default().open([("a", &sqlite)]).unwrap_err();
        assert!(
            err.to_string()
                .contains("in use by another switchboard process"),
            "{err}"
        );
    }
}
