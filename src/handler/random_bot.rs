//! `random-bot`: every message from every client of the listener goes into
//! one shared history, and the reply is a random entry of it (the new
//! message included), as in the seed tutorial. A farewell ("bye") gets the
//! goodbye reply and ends the chat. The history is bounded in messages and
//! in bytes; the oldest entries go first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tracing::trace;

use super::{Ended, Handler, HandlerError, Io};
use crate::config::RandomBotConfig;
use crate::connection::{Connection, Incoming};
use crate::template::{Template, TemplateContext, TimeFormat};

/// The history shared by every connection of one random-bot listener. It
/// outlives a reload of the listener; only its limits change.
#[derive(Debug)]
pub struct History {
    entries: Mutex<Entries>,
}

#[derive(Debug)]
struct Entries {
    messages: VecDeque<Bytes>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl Entries {
    /// Drops the oldest entries past the limits (the newest always stays).
    fn trim(&mut self) {
        while self.messages.len() > self.max_entries
            || (self.bytes > self.max_bytes && self.messages.len() > 1)
        {
            match self.messages.pop_front() {
                Some(old) => self.bytes -= old.len(),
                None => break,
            }
        }
    }
}

impl History {
    /// An empty history holding at most `max_entries` messages and `max_bytes` bytes.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        History {
            entries: Mutex::new(Entries {
                messages: VecDeque::new(),
                bytes: 0,
                max_entries,
                max_bytes,
            }),
        }
    }

    /// Changes the limits, dropping the oldest entries past the new ones.
    pub fn set_limits(&self, max_entries: usize, max_bytes: usize) {
        let mut entries = self.entries();
        entries.max_entries = max_entries;
        entries.max_bytes = max_bytes;
        entries.trim();
    }

    /// Records `message`, drops the oldest entries past the limits, and
    /// returns a uniformly random entry (possibly `message` itself).
    pub fn record_and_pick(&self, message: Bytes) -> Bytes {
        let mut entries = self.entries();
        entries.bytes += message.len();
        entries.messages.push_back(message);
        entries.trim();
        let pick = rand::random_range(0..entries.messages.len());
        entries.messages[pick].clone()
    }

    /// Messages currently kept, and their total bytes.
    pub fn size(&self) -> (usize, usize) {
        let entries = self.entries();
        (entries.messages.len(), entries.bytes)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic cannot leave `Entries` half-updated in a way that matters,
        // so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The random-reply bot.
#[derive(Debug, Clone)]
pub struct RandomBot {
    history: Arc<History>,
    /// Farewells, trimmed and lowercased.
    farewell: Vec<String>,
    goodbye_reply: Template,
    time_format: TimeFormat,
}

impl RandomBot {
    /// A bot with a new, empty history.
    pub fn new(config: &RandomBotConfig, max_message_bytes: usize) -> Self {
        let history = History::new(
            config.history_limit,
            Self::history_bytes(config, max_message_bytes),
        );
        Self::with_history(config, Arc::new(history))
    }

    /// A bot with new settings that keeps `previous`'s history (a reload).
    pub fn keeping_history(
        config: &RandomBotConfig,
        max_message_bytes: usize,
        previous: &RandomBot,
    ) -> Self {
        previous.history.set_limits(
            config.history_limit,
            Self::history_bytes(config, max_message_bytes),
        );
        Self::with_history(config, previous.history.clone())
    }

    /// The shared history.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The byte limit: never below one message, so the newest always fits.
    fn history_bytes(config: &RandomBotConfig, max_message_bytes: usize) -> usize {
        config.history_bytes.max(max_message_bytes)
    }

    fn with_history(config: &RandomBotConfig, history: Arc<History>) -> Self {
        RandomBot {
            history,
            farewell: config
                .farewell
                .iter()
                .map(|f| f.trim().to_lowercase())
                .collect(),
            goodbye_reply: config.goodbye_reply.clone(),
            time_format: config.time_format.clone(),
        }
    }

    fn is_farewell(&self, text: &str) -> bool {
        let text = text.trim().to_lowercase();
        self.farewell.contains(&text)
    }

    async fn say_goodbye<S: Io>(&self, conn: &mut Connection<S>) -> Result<(), HandlerError> {
        let goodbye = self.goodbye_reply.render(&TemplateContext {
            time_format: &self.time_format,
            peer: conn.peer,
            listener: &conn.settings.listener,
            keywords: "",
        });
        conn.send_line(&goodbye).await
    }
}

impl Handler for RandomBot {
    async fn serve<S: Io>(&self, conn: &mut Connection<S>) -> Result<Ended, HandlerError> {
        let mut reader = conn.message_reader();
        loop {
            match conn.next_message(&mut reader).await? {
                Incoming::Message(bytes) => {
                    let text = conn.settings.encoding.decode(&bytes);
                    if text.trim().is_empty() {
                        continue;
                    }
                    trace!(message = %text, "received");
                    if self.is_farewell(&text) {
                        self.say_goodbye(conn).await?;
                        return Ok(Ended::Farewell);
                    }
                    // Copied, so the history never pins the read buffer.
                    let mut reply = self
                        .history
                        .record_and_pick(Bytes::copy_from_slice(&bytes))
                        .to_vec();
                    reply.push(b'\n');
                    conn.send(&reply).await?;
                }
                Incoming::Closed => return Ok(Ended::ClientClosed),
                Incoming::Shutdown => {
                    self.say_goodbye(conn).await?;
                    return Ok(Ended::Shutdown);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_in_entries_and_bytes() {
        let history = History::new(3, 1000);
        for i in 0..10u8 {
            history.record_and_pick(Bytes::from(vec![i; 10]));
        }
        assert_eq!(history.size(), (3, 30));
        let history = History::new(100, 25);
        for i in 0..10u8 {
            let pick = history.record_and_pick(Bytes::from(vec![i; 10]));
            assert!(
                pick[0] + 2 >= i,
                "picked a dropped entry {} at {i}",
                pick[0]
            );
        }
        assert_eq!(history.size(), (2, 20));
    }

    #[test]
    fn picks_are_drawn_from_the_whole_history() {
        // 0..=4 recorded in a cycle into a history of five: once full it
        // always holds each value once, so every draw is uniform over five.
        // Each value must come back as the pick of a draw that recorded
        // another one (never true if only the newest were picked); missing
        // one in 1000 draws has a chance of about 5 * 0.84^1000 (1e-75).
        let history = History::new(5, 100_000);
        let mut seen_older = [false; 5];
        for i in 0..1000u32 {
            let recorded = u8::try_from(i % 5).expect("below 5");
            let picked = history.record_and_pick(Bytes::from(vec![recorded]))[0];
            if picked != recorded {
                seen_older[usize::from(picked)] = true;
            }
            if seen_older.iter().all(|s| *s) {
                break;
            }
        }
        assert_eq!(
            seen_older, [true; 5],
            "1000 draws from 5 entries missed one"
        );
    }
}
