//! Where a server opens its histories, before it builds the handlers that
//! use them (at start, and for each reload, off the async workers), and
//! where a history already open is taken over instead of opened again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tracing::error;

use super::config::Identity;
use super::memory::MemoryHistory;
use super::redis::RedisHistory;
use super::sqlite::SqliteHistory;
use super::{History, HistoryConfig, Store};

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
        Arc::new(History::new(
            Store::Memory(MemoryHistory::default()),
            Identity::Memory(listener.to_owned()),
        ))
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
                    let history = Arc::new(History::new(store, identity.clone()));
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

#[cfg(test)]
mod tests {
    use super::super::config::parse;
    use super::*;

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
