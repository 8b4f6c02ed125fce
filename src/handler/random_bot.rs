//! `random-bot`: every message from every client of the listener goes into
//! one shared history, and the reply is a random entry of it (the new
//! message included), as in the seed tutorial. A farewell ("bye") gets the
//! goodbye reply and ends the chat. The history is bounded in messages and
//! in bytes; the oldest entries go first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use prometheus::IntCounter;
use serde::Deserialize;

use super::chat::{self, Answer, Bot, Who};
use super::probe::{Probe, ProbeContext, Verdict, line_then_close, shown};
use super::template::{Template, TemplateContext, TimeFormat};
use super::{BuildContext, Ended, Handler, HandlerError, Invalid};
use crate::conn::{Connection, Io};

/// History length, in messages, by default.
const HISTORY_LIMIT: usize = 10_000;
/// The largest `history_limit`.
const MAX_HISTORY_LIMIT: usize = 1_000_000;
/// The largest `history_bytes`.
const MAX_HISTORY_BYTES: usize = 1 << 30;
/// What an entry costs besides its text: the `Bytes` handle in the deque
/// and the allocation's own header and rounding (about 80 bytes measured
/// for one-byte messages). Counted in `history_bytes`, so that a flood of
/// tiny messages is bounded by it too.
const ENTRY_OVERHEAD: usize = 80;
/// History size, in bytes of message text, by default.
const HISTORY_BYTES: usize = 8 * 1024 * 1024;
/// Messages that end a chat by default (the seed's).
const FAREWELL: &[&str] = &["bye"];

/// Settings of the random-reply bot.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomBotConfig {
    /// Messages kept in the shared history; the oldest are dropped.
    #[serde(default = "default_history_limit")]
    pub history_limit: usize,
    /// Bytes kept in the history (each message's text plus about 80 bytes
    /// of overhead); the oldest are dropped.
    #[serde(default = "default_history_bytes")]
    pub history_bytes: usize,
    /// Messages that end the chat (case-insensitive, surrounding whitespace ignored).
    #[serde(default = "default_farewell")]
    pub farewell: Vec<String>,
    /// Reply to a farewell (and to everyone still connected at shutdown).
    #[serde(default = "chat::default_goodbye")]
    pub goodbye_reply: Template,
    /// Format of `{time}` in the goodbye reply.
    #[serde(default = "TimeFormat::seed_default")]
    pub time_format: TimeFormat,
}

fn default_history_limit() -> usize {
    HISTORY_LIMIT
}
fn default_history_bytes() -> usize {
    HISTORY_BYTES
}
fn default_farewell() -> Vec<String> {
    FAREWELL.iter().map(|s| (*s).to_owned()).collect()
}

/// The history shared by every connection of one random-bot listener. It
/// outlives a reload of the listener; only its limits change.
#[derive(Debug)]
pub(crate) struct History {
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
                Some(old) => self.bytes -= old.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }
}

impl History {
    /// An empty history holding at most `max_entries` messages and `max_bytes` bytes.
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
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
    pub(crate) fn set_limits(&self, max_entries: usize, max_bytes: usize) {
        let mut entries = self.entries();
        entries.max_entries = max_entries;
        entries.max_bytes = max_bytes;
        entries.trim();
    }

    /// Records `message`, drops the oldest entries past the limits, and
    /// returns a uniformly random entry (possibly `message` itself).
    pub(crate) fn record_and_pick(&self, message: Bytes) -> Bytes {
        let mut entries = self.entries();
        entries.bytes += message.len() + ENTRY_OVERHEAD;
        entries.messages.push_back(message);
        entries.trim();
        let pick = rand::random_range(0..entries.messages.len());
        entries.messages[pick].clone()
    }

    /// Messages currently kept, and the bytes they are counted as (their
    /// text plus [`ENTRY_OVERHEAD`] each).
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
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
#[derive(Debug)]
pub(crate) struct RandomBot {
    history: Arc<History>,
    /// Farewells, trimmed and lowercased.
    farewell: Vec<String>,
    goodbye_reply: Template,
    time_format: TimeFormat,
    answered: IntCounter,
}

impl RandomBot {
    fn is_farewell(&self, text: &str) -> bool {
        let text = text.trim().to_lowercase();
        self.farewell.contains(&text)
    }
}

impl Bot for RandomBot {
    fn answer(&self, message: &[u8], text: &str, who: &Who<'_>) -> Answer {
        if self.is_farewell(text) {
            return Answer::Farewell(self.goodbye(who));
        }
        // Copied, so the history never pins the read buffer.
        let pick = self
            .history
            .record_and_pick(Bytes::copy_from_slice(message));
        Answer::Bytes(pick.to_vec())
    }

    fn goodbye(&self, who: &Who<'_>) -> String {
        self.goodbye_reply.render(&TemplateContext {
            time_format: &self.time_format,
            peer: who.peer,
            listener: who.listener,
            keywords: "",
        })
    }
}

impl Handler for RandomBot {
    const NAME: &'static str = "random-bot";
    type Config = RandomBotConfig;

    fn validate(config: &mut RandomBotConfig) -> Result<(), Invalid> {
        if !(1..=MAX_HISTORY_LIMIT).contains(&config.history_limit) {
            return Err(Invalid::at(
                "history_limit",
                format!("history_limit must be at least 1 and at most {MAX_HISTORY_LIMIT}"),
            ));
        }
        if !(1..=MAX_HISTORY_BYTES).contains(&config.history_bytes) {
            return Err(Invalid::at(
                "history_bytes",
                format!("history_bytes must be at least 1 and at most {MAX_HISTORY_BYTES}"),
            ));
        }
        if config.goodbye_reply.mentions_keywords() {
            return Err(Invalid::at(
                "goodbye_reply",
                "{keywords} is a keyword-bot placeholder; a random-bot has no keywords",
            ));
        }
        if config.farewell.iter().any(|f| f.trim().is_empty()) {
            return Err(Invalid::at(
                "farewell",
                "farewell messages must not be empty",
            ));
        }
        Ok(())
    }

    /// A new, empty history; or, on a reload, the previous bot's history
    /// with the new limits. The byte limit is never below one message, so
    /// the newest always fits.
    fn build(config: &RandomBotConfig, ctx: &BuildContext<'_>, previous: Option<&Self>) -> Self {
        let max_bytes = config
            .history_bytes
            .max(ctx.settings.max_message_bytes + ENTRY_OVERHEAD);
        let history = match previous {
            Some(previous) => {
                previous.history.set_limits(config.history_limit, max_bytes);
                previous.history.clone()
            }
            None => Arc::new(History::new(config.history_limit, max_bytes)),
        };
        RandomBot {
            history,
            farewell: config
                .farewell
                .iter()
                .map(|f| f.trim().to_lowercase())
                .collect(),
            goodbye_reply: config.goodbye_reply.clone(),
            time_format: config.time_format.clone(),
            answered: ctx.metrics.messages_answered(),
        }
    }

    async fn serve<S: Io>(&self, conn: &mut Connection<S>) -> Result<Ended, HandlerError> {
        chat::chat(self, conn, &self.answered).await
    }

    /// The first farewell, with a second line behind it: the goodbye reply
    /// must come back, then the close, and nothing for the second line
    /// (echo, which would send "bye" back too, sends the second line). A
    /// farewell is never recorded, so the probe leaves the history alone.
    fn probe(config: &RandomBotConfig, ctx: &ProbeContext<'_>) -> Probe {
        let Some(farewell) = config.farewell.first() else {
            // Anything else sent would go into the history.
            return Probe {
                send: Vec::new(),
                check: Box::new(|_, _| Verdict::Pass("accepted")),
            };
        };
        let mut send = ctx.encoding.encode(farewell).into_owned();
        send.push(b'\n');
        send.extend_from_slice(format!("switchboard probe {}\n", ctx.token).as_bytes());
        let goodbye = config.goodbye_reply.clone();
        let time_format = config.time_format.clone();
        let (peer, listener) = (ctx.peer, ctx.listener.to_owned());
        Probe {
            send,
            check: line_then_close(ctx.encoding, "answered", move |line| {
                let ctx = TemplateContext {
                    time_format: &time_format,
                    peer,
                    listener: &listener,
                    keywords: "",
                };
                if goodbye.matches(&ctx, line) {
                    Ok(())
                } else {
                    Err(format!(
                        "answered the farewell with {} instead of {}",
                        shown(line.as_bytes()),
                        shown(goodbye.render(&ctx).as_bytes())
                    ))
                }
            }),
        }
    }

    fn summary(config: &RandomBotConfig) -> String {
        format!(
            "history_limit={} farewell={:?}",
            config.history_limit, config.farewell
        )
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
        assert_eq!(history.size(), (3, 3 * (10 + ENTRY_OVERHEAD)));
        // Room for two entries of 10 bytes and their overhead, not three.
        let history = History::new(100, 2 * (10 + ENTRY_OVERHEAD) + 5);
        for i in 0..10u8 {
            let pick = history.record_and_pick(Bytes::from(vec![i; 10]));
            assert!(
                pick[0] + 2 >= i,
                "picked a dropped entry {} at {i}",
                pick[0]
            );
        }
        assert_eq!(history.size(), (2, 2 * (10 + ENTRY_OVERHEAD)));
    }

    #[test]
    fn a_flood_of_one_byte_messages_is_bounded_by_history_bytes() {
        let history = History::new(MAX_HISTORY_LIMIT, 1 << 20);
        for i in 0..100_000u32 {
            history.record_and_pick(Bytes::from(vec![(i % 251) as u8]));
        }
        let (entries, bytes) = history.size();
        assert!(bytes <= 1 << 20, "{bytes} bytes counted");
        assert_eq!(entries, (1 << 20) / (1 + ENTRY_OVERHEAD));
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
