//! `switchboard history`: what a listener's history holds, read from
//! outside the daemon. Each message shown is bounded ([`MAX_SHOWN`]), so
//! hostile stored data cannot make `--tail` read it whole.

use super::config::Identity;
use super::redis::RedisHistory;
use super::{HistoryConfig, sqlite};

/// Most bytes of one message `--tail` shows; a longer one is cut there and
/// marked with [`CUT_MARK`].
pub const MAX_SHOWN: usize = 64 * 1024;
/// What ends a message cut at [`MAX_SHOWN`] (ASCII, so that it reads the
/// same in every listener's encoding).
pub const CUT_MARK: &[u8] = b"...(cut)";

/// `message` (read up to one byte past [`MAX_SHOWN`]), cut at
/// [`MAX_SHOWN`] and marked when it is longer.
fn mark_cut(mut message: Vec<u8>) -> Vec<u8> {
    if message.len() > MAX_SHOWN {
        message.truncate(MAX_SHOWN);
        message.extend_from_slice(CUT_MARK);
    }
    message
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
                Inspect::Tail(n) => Inspected::Messages(
                    sqlite::tail(&conn, n, MAX_SHOWN + 1)?
                        .into_iter()
                        .map(mark_cut)
                        .collect(),
                ),
            })
        })
        .await
        .map_err(|e| e.to_string())?,
        Identity::Redis { url, key } => {
            let timeout = config.timeout();
            let redis = RedisHistory::open(&url, &key, timeout)?;
            Ok(match what {
                Inspect::Count => Inspected::Count(redis.count(timeout).await?),
                Inspect::Tail(n) => Inspected::Messages(
                    redis
                        .tail(n, MAX_SHOWN + 1, timeout)
                        .await?
                        .into_iter()
                        .map(mark_cut)
                        .collect(),
                ),
            })
        }
    }
}
