//! `random-bot`: every message from every client of the listener goes into
//! one shared history, and the reply is a random entry of it (the new
//! message included), as in the seed tutorial. A farewell ("bye") gets the
//! goodbye reply and ends the chat. The history is bounded in messages and
//! in bytes; the oldest entries go first. Where it is kept (memory, SQLite,
//! Redis) is its `[listener.history]` table (see `crate::history`); when
//! that backend cannot answer, the client gets `ERR history unavailable`
//! (the message is not stored) or `ERR history timeout` (it may be) for
//! that message, and the chat goes on.

use std::sync::Arc;

use prometheus::IntCounter;
use serde::Deserialize;

use super::chat::{self, Answer, Bot, Who};
use super::probe::{Probe, ProbeContext, Verdict, line_then_close, shown};
use super::template::{Template, TemplateContext, TimeFormat};
use super::{BuildContext, DatagramSource, Ended, Handler, HandlerError, Invalid};
use crate::conn::{Connection, Io};
use crate::history::{
    Backend, ENTRY_OVERHEAD, History, HistoryConfig, HistoryError, Limits, Recording,
};

/// History length, in messages, by default.
const HISTORY_LIMIT: usize = 10_000;
/// The largest `history_limit`.
const MAX_HISTORY_LIMIT: usize = 1_000_000;
/// The largest `history_bytes`.
const MAX_HISTORY_BYTES: usize = 1 << 30;
/// History size, in bytes of message text, by default.
const HISTORY_BYTES: usize = 8 * 1024 * 1024;
/// The `ERR` reply to a message the history did not store.
const HISTORY_UNAVAILABLE: &str = "history unavailable";
/// The `ERR` reply to a message the history took and did not confirm in
/// time: it may be stored, and served to others.
const HISTORY_TIMEOUT: &str = "history timeout";
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
    /// Where the history is kept (`[listener.history]`; memory when absent).
    #[serde(default)]
    pub history: HistoryConfig,
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

/// The random-reply bot.
#[derive(Debug)]
pub(crate) struct RandomBot {
    history: Arc<History>,
    /// The listener's limits and waits, for each message it records.
    recording: Recording,
    /// Farewells, trimmed and lowercased.
    farewell: Vec<String>,
    goodbye_reply: Template,
    time_format: TimeFormat,
    answered: IntCounter,
    /// Its history answers after a wait (SQLite, Redis), not at once (memory).
    history_waits: bool,
}

impl RandomBot {
    fn is_farewell(&self, text: &str) -> bool {
        let text = chat::lowercase(text.trim());
        self.farewell.iter().any(|farewell| *farewell == *text)
    }
}

impl Bot for RandomBot {
    async fn answer(&self, message: &[u8], text: &str, who: &Who<'_>) -> Answer {
        if self.is_farewell(text) {
            return Answer::Farewell(self.goodbye(who));
        }
        // The pick, with room for the line ending: one allocation.
        let mut reply = Vec::new();
        match self
            .history
            .record_and_pick(message, self.recording, &mut reply)
            .await
        {
            Ok(()) => Answer::Bytes(reply),
            Err(HistoryError::Unavailable) => Answer::Error(HISTORY_UNAVAILABLE),
            Err(HistoryError::Timeout) => Answer::Error(HISTORY_TIMEOUT),
        }
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
        config
            .history
            .validate()
            .map_err(|(key, message)| Invalid::at(format!("history.{key}"), message))
    }

    /// The bot on the history its config names, opened beforehand (see
    /// `crate::history::Registry`): on a reload, the same history, with the
    /// new limits. The byte limit is never below one message, so the newest
    /// always fits.
    fn build(config: &RandomBotConfig, ctx: &BuildContext<'_>, _previous: Option<&Self>) -> Self {
        let max_bytes = config
            .history_bytes
            .max(ctx.settings.max_message_bytes + ENTRY_OVERHEAD);
        RandomBot {
            history: ctx.histories.get(&ctx.settings.listener, &config.history),
            recording: Recording {
                limits: Limits {
                    messages: config.history_limit,
                    bytes: max_bytes,
                },
                timeout: config.history.timeout(),
                sync: config.history.sync(),
            },
            farewell: config
                .farewell
                .iter()
                .map(|f| f.trim().to_lowercase())
                .collect(),
            goodbye_reply: config.goodbye_reply.clone(),
            time_format: config.time_format.clone(),
            answered: ctx.metrics.messages_answered(),
            history_waits: config.history.backend != Backend::Memory,
        }
    }

    fn history(config: &RandomBotConfig) -> Option<&HistoryConfig> {
        Some(&config.history)
    }

    async fn serve<S: Io>(&self, conn: &mut Connection<S>) -> Result<Ended, HandlerError> {
        chat::chat(self, conn, &self.answered).await
    }

    const DATAGRAMS: bool = true;

    async fn datagram(
        &self,
        datagram: &[u8],
        from: &DatagramSource<'_>,
        reply: &mut Vec<u8>,
    ) -> bool {
        chat::datagram(self, datagram, from, &self.answered, reply).await
    }

    fn datagram_waits(&self) -> bool {
        self.history_waits
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
        // The farewell as the bot reads it (case and surrounding spaces
        // ignored) but not as an echo would send it back: over UDP, where
        // there is no close after the goodbye, this tells the two apart.
        let upper = farewell.to_uppercase();
        let disguised = if upper.to_lowercase() == farewell.to_lowercase() {
            format!("  {upper}  ")
        } else {
            format!("  {farewell}  ")
        };
        let mut send = ctx.encoding.encode(&disguised).into_owned();
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
            "history_limit={} farewell={:?} history={}",
            config.history_limit,
            config.farewell,
            config.history.summary()
        )
    }
}
