//! The message loop the two bots share: read a message, skip blank ones,
//! answer, until the client closes, says a farewell, or the server shuts
//! down (then the bot says its goodbye); and the same answer to one
//! datagram on a UDP listener. Each bot only decides its answers.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;

use prometheus::IntCounter;
use tracing::trace;

use super::template::Template;
use super::{DatagramSource, Ended, HandlerError};
use crate::conn::text::{QUOTE_MAX_BYTES, TextEncoding, quote};
use crate::conn::{ConnError, Connection, Incoming, Io};

/// A bot's last words by default, on farewell or shutdown (the seed's).
const GOODBYE_REPLY: &str = "bye";

/// The default `goodbye_reply` of both bots.
pub(super) fn default_goodbye() -> Template {
    Template::literal(GOODBYE_REPLY)
}

/// Who a bot is talking to, for its templates.
pub(super) struct Who<'a> {
    /// The client's address (`{peer}`).
    pub peer: SocketAddr,
    /// The listener's name (`{listener}`).
    pub listener: &'a str,
}

/// A bot's answer to one message.
pub(super) enum Answer {
    /// A reply in text, sent in the listener's encoding.
    Text(String),
    /// A reply as bytes, sent as they are (a message from the history).
    Bytes(Vec<u8>),
    /// The goodbye to a farewell; the chat ends after it.
    Farewell(String),
    /// `ERR` and the reason (one of a fixed set of texts, counted in the
    /// metrics); the chat goes on.
    Error(&'static str),
}

/// What a bot decides.
pub(super) trait Bot: Sync {
    /// The answer to `message` (raw bytes), whose decoded `text` is not blank.
    fn answer(
        &self,
        message: &[u8],
        text: &str,
        who: &Who<'_>,
    ) -> impl Future<Output = Answer> + Send;

    /// Its last words to a client still connected at shutdown.
    fn goodbye(&self, who: &Who<'_>) -> String;
}

/// Replies gathered into one write at most: a client that sends several
/// messages before reading gets their replies together (one system call
/// for several), bounded in replies and bytes (past these bytes, one more
/// reply at most, itself bounded by the longest message or template).
const REPLIES_PER_WRITE: usize = 64;
const REPLY_BYTES_PER_WRITE: usize = 16 * 1024;

/// Replies answered and not yet written, and how many.
#[derive(Default)]
struct Replies {
    bytes: Vec<u8>,
    count: u64,
}

impl Replies {
    /// Room for the reply to a message that is already read.
    fn has_room(&self) -> bool {
        self.count < REPLIES_PER_WRITE as u64 && self.bytes.len() < REPLY_BYTES_PER_WRITE
    }

    /// Writes the replies gathered, and counts them as answered; the
    /// buffer goes with them (a connection waiting for its next message
    /// holds none).
    async fn write<S: Io>(
        &mut self,
        conn: &mut Connection<S>,
        answered: &IntCounter,
    ) -> Result<(), ConnError> {
        if self.count == 0 {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.bytes);
        conn.send(&bytes).await?;
        answered.inc_by(std::mem::take(&mut self.count));
        Ok(())
    }
}

/// Runs the chat of `bot` on `conn`, counting every message answered.
/// Messages already read when one is answered (a client that sends before
/// its replies come) are answered before the write, their replies written
/// together; the write never waits for more input.
pub(super) async fn chat<S: Io>(
    bot: &impl Bot,
    conn: &mut Connection<S>,
    answered: &IntCounter,
) -> Result<Ended, HandlerError> {
    let mut replies = Replies::default();
    loop {
        let message = match conn.next_message().await {
            Ok(Incoming::Data(message)) => message,
            // Whatever ends the chat, the replies already given go first.
            Ok(Incoming::Closed) => {
                replies.write(conn, answered).await?;
                return Ok(Ended::ClientClosed);
            }
            Ok(Incoming::Shutdown) => {
                replies.write(conn, answered).await?;
                let goodbye = bot.goodbye(&who(conn));
                conn.send_line(&goodbye).await?;
                return Ok(Ended::Shutdown);
            }
            Err(e) => {
                replies.write(conn, answered).await?;
                return Err(e.into());
            }
        };
        let encoding = conn.settings().encoding;
        let text = encoding.decode(&message);
        if !text.trim().is_empty() {
            trace!(message = quote(&text, QUOTE_MAX_BYTES).as_str(), "received");
            let answer = bot.answer(&message, &text, &who(conn)).await;
            let farewell = matches!(answer, Answer::Farewell(_));
            if let Answer::Error(reason) = answer {
                conn.count_error_reply(reason);
            }
            answer.append_line(encoding, &mut replies.bytes);
            replies.count += 1;
            if farewell {
                replies.write(conn, answered).await?;
                return Ok(Ended::Farewell);
            }
        }
        if replies.has_room() && conn.message_buffered() {
            // The next message is here: its reply joins this write. Each
            // message still spends the task's budget, as its own write
            // did, so a client that sends without reading cannot hold
            // the worker longer than one that reads.
            tokio::task::consume_budget().await;
            continue;
        }
        // `Replies::write`, inline: this is every message's path.
        if replies.count > 0 {
            let bytes = std::mem::take(&mut replies.bytes);
            conn.send(&bytes).await?;
            answered.inc_by(std::mem::take(&mut replies.count));
        }
    }
}

/// The reply of `bot` to one datagram, written into `reply` (empty); true
/// when there is one: its message is the datagram less one trailing
/// newline; a blank one gets no reply, as over TCP. A farewell gets the
/// goodbye (there is nothing to close).
pub(super) async fn datagram(
    bot: &impl Bot,
    datagram: &[u8],
    from: &DatagramSource<'_>,
    answered: &IntCounter,
    reply: &mut Vec<u8>,
) -> bool {
    let message = datagram.strip_suffix(b"\n").unwrap_or(datagram);
    let message = message.strip_suffix(b"\r").unwrap_or(message);
    let encoding = from.settings.encoding;
    let text = encoding.decode(message);
    if text.trim().is_empty() {
        return false;
    }
    trace!(message = quote(&text, QUOTE_MAX_BYTES).as_str(), "received");
    let who = Who {
        peer: from.peer,
        listener: &from.settings.listener,
    };
    let answer = bot.answer(message, &text, &who).await;
    if let Answer::Error(reason) = answer {
        from.metrics.error_reply(reason);
    }
    answered.inc();
    answer.append_line(encoding, reply);
    true
}

impl Answer {
    /// The answer as the line the client gets, in `encoding`. A reply
    /// already in the wire's encoding (UTF-8 text, bytes) becomes the line
    /// in place: no copy.
    fn into_line(self, encoding: TextEncoding) -> Vec<u8> {
        let text_line = |reply: String| match encoding.encode(&reply) {
            Cow::Borrowed(_) => reply.into_bytes(),
            Cow::Owned(encoded) => encoded,
        };
        let mut line = match self {
            Answer::Text(reply) | Answer::Farewell(reply) => text_line(reply),
            Answer::Bytes(reply) => reply,
            Answer::Error(reason) => text_line(format!("ERR {reason}")),
        };
        line.push(b'\n');
        line
    }

    /// [`Answer::into_line`] appended to `out`; when `out` is empty, the
    /// line takes its place (no copy of the reply).
    fn append_line(self, encoding: TextEncoding, out: &mut Vec<u8>) {
        if out.is_empty() {
            *out = self.into_line(encoding);
        } else {
            out.extend_from_slice(&self.into_line(encoding));
        }
    }
}

/// `text` lowercased as `str::to_lowercase` does it, borrowed when that
/// changes nothing (the usual message): no allocation per message.
pub(super) fn lowercase(text: &str) -> Cow<'_, str> {
    let unchanged = if text.is_ascii() {
        !text.bytes().any(|b| b.is_ascii_uppercase())
    } else {
        // A character that lowercases to itself alone; a final sigma
        // (the one rule that looks at the context) is `Σ`, which does not.
        text.chars().all(|c| {
            let mut lower = c.to_lowercase();
            lower.next() == Some(c) && lower.next().is_none()
        })
    };
    if unchanged {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.to_lowercase())
    }
}

fn who<S: Io>(conn: &Connection<S>) -> Who<'_> {
    Who {
        peer: conn.peer(),
        listener: &conn.settings().listener,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercase_is_str_to_lowercase_and_borrows_when_nothing_changes() {
        for text in [
            "hello",
            "Hello",
            "HELLO there",
            "你好",
            "你好 NAME",
            "ΟΔΟΣ",
            "όσος",
            "straße",
            "İstanbul",
            "ǅ",
            "",
            "42",
        ] {
            let lower = lowercase(text);
            assert_eq!(lower, text.to_lowercase(), "{text:?}");
            assert_eq!(
                matches!(lower, Cow::Borrowed(_)),
                text.to_lowercase() == text,
                "{text:?}"
            );
        }
    }
}
