//! The message loop the two bots share: read a message, skip blank ones,
//! answer, until the client closes, says a farewell, or the server shuts
//! down (then the bot says its goodbye). Each bot only decides its answers.

use std::future::Future;
use std::net::SocketAddr;

use prometheus::IntCounter;
use tracing::trace;

use super::template::Template;
use super::{Ended, HandlerError};
use crate::conn::text::{QUOTE_MAX_BYTES, quote};
use crate::conn::{Connection, Incoming, Io};

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

/// Runs the chat of `bot` on `conn`, counting every message answered.
pub(super) async fn chat<S: Io>(
    bot: &impl Bot,
    conn: &mut Connection<S>,
    answered: &IntCounter,
) -> Result<Ended, HandlerError> {
    loop {
        let message = match conn.next_message().await? {
            Incoming::Data(message) => message,
            Incoming::Closed => return Ok(Ended::ClientClosed),
            Incoming::Shutdown => {
                let goodbye = bot.goodbye(&who(conn));
                conn.send_line(&goodbye).await?;
                return Ok(Ended::Shutdown);
            }
        };
        let encoding = conn.settings().encoding;
        let text = encoding.decode(&message);
        if text.trim().is_empty() {
            continue;
        }
        trace!(message = %quote(&text, QUOTE_MAX_BYTES), "received");
        let answer = bot.answer(&message, &text, &who(conn)).await;
        let farewell = matches!(answer, Answer::Farewell(_));
        match answer {
            Answer::Text(reply) | Answer::Farewell(reply) => conn.send_line(&reply).await?,
            Answer::Bytes(mut reply) => {
                reply.push(b'\n');
                conn.send(&reply).await?;
            }
            Answer::Error(reason) => {
                conn.count_error_reply(reason);
                conn.send_line(&format!("ERR {reason}")).await?;
            }
        }
        answered.inc();
        if farewell {
            return Ok(Ended::Farewell);
        }
    }
}

fn who<S: Io>(conn: &Connection<S>) -> Who<'_> {
    Who {
        peer: conn.peer(),
        listener: &conn.settings().listener,
    }
}
