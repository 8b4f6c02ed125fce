//! The seam between the accept loop and what a listener does with a
//! connection: the [`Handler`] trait, the built-in handlers registered by
//! name in [`AnyHandler`], and what a handler reports when it is done.
//!
//! Adding a handler: a file here with a type implementing [`Handler`], a
//! variant in [`AnyHandler`] and in the config's `HandlerConfig`.

pub mod download;
pub mod echo;
pub mod keyword_bot;
pub mod random_bot;

use std::fmt;
use std::future::Future;
use std::io;
use std::time::Duration;

use crate::config::{HandlerConfig, ListenerConfig};
use crate::connection::Connection;
pub use crate::connection::Io;
use crate::framing::FrameError;

pub use download::Download;
pub use echo::Echo;
pub use keyword_bot::KeywordBot;
pub use random_bot::RandomBot;

/// Serves one connection of a listener.
pub trait Handler: Send + Sync + 'static {
    /// Talks to the client until the conversation ends. Errors that the client
    /// caused are answered by the caller (see [`HandlerError::client_reply`]).
    fn serve<S: Io>(
        &self,
        conn: &mut Connection<S>,
    ) -> impl Future<Output = Result<Ended, HandlerError>> + Send;
}

/// How a conversation ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client closed its side.
    ClientClosed,
    /// The client said a farewell.
    Farewell,
    /// The server is shutting down.
    Shutdown,
    /// The handler finished its work (a file or listing was sent).
    Completed,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ended::ClientClosed => "client closed",
            Ended::Farewell => "farewell",
            Ended::Shutdown => "server shutdown",
            Ended::Completed => "completed",
        })
    }
}

/// Why a conversation ended early.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The client sent nothing for the idle timeout.
    #[error("idle timeout ({})", humantime::format_duration(*.0))]
    Idle(Duration),
    /// A message was longer than `max_message_bytes`.
    #[error("message longer than {0} bytes")]
    MessageTooLong(usize),
    /// The client read nothing for the idle timeout while the server wrote.
    #[error("client stopped reading for {}", humantime::format_duration(*.0))]
    WriteStalled(Duration),
    /// The request was refused; the reason is told to the client.
    #[error("refused: {0}")]
    Refused(String),
    /// The socket or a file failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl From<FrameError> for HandlerError {
    fn from(err: FrameError) -> Self {
        match err {
            FrameError::TooLong(limit) => HandlerError::MessageTooLong(limit),
            FrameError::Idle(after) => HandlerError::Idle(after),
            FrameError::Io(e) => HandlerError::Io(e),
        }
    }
}

impl HandlerError {
    /// The one `ERR ...` line the client gets before the close, if any.
    pub fn client_reply(&self) -> Option<String> {
        match self {
            HandlerError::MessageTooLong(_) => Some("ERR message too long".to_owned()),
            HandlerError::Refused(reason) => Some(format!("ERR {reason}")),
            _ => None,
        }
    }

    /// True when the fault is likely the server's (a file or socket failed in
    /// an unexpected way), worth a warning rather than an info line.
    pub fn is_server_fault(&self) -> bool {
        matches!(self, HandlerError::Io(_)) && !self.is_disconnect()
    }

    /// True when the client went away (reset, broken pipe): normal on the
    /// internet, not a server problem worth a warning.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, HandlerError::Io(e) if matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::UnexpectedEof
        ))
    }
}

/// The built-in handlers, chosen by `handler = "..."` in the config.
#[derive(Debug)]
pub enum AnyHandler {
    /// `echo`
    Echo(Echo),
    /// `download`
    Download(Download),
    /// `keyword-bot`
    KeywordBot(KeywordBot),
    /// `random-bot`
    RandomBot(RandomBot),
}

impl AnyHandler {
    /// Builds the handler a listener's config names.
    pub fn from_config(listener: &ListenerConfig) -> Self {
        Self::reloaded(listener, None)
    }

    /// Builds the handler for a reloaded listener: state that must outlive a
    /// reload (the random-bot's history) is taken over from `previous`.
    pub fn reloaded(listener: &ListenerConfig, previous: Option<&AnyHandler>) -> Self {
        match (&listener.handler, previous) {
            (HandlerConfig::Echo, _) => AnyHandler::Echo(Echo),
            (HandlerConfig::Download(config), _) => AnyHandler::Download(Download::new(config)),
            (HandlerConfig::KeywordBot(config), _) => {
                AnyHandler::KeywordBot(KeywordBot::new(config))
            }
            (HandlerConfig::RandomBot(config), Some(AnyHandler::RandomBot(previous))) => {
                AnyHandler::RandomBot(RandomBot::keeping_history(
                    config,
                    listener.max_message_bytes,
                    previous,
                ))
            }
            (HandlerConfig::RandomBot(config), _) => {
                AnyHandler::RandomBot(RandomBot::new(config, listener.max_message_bytes))
            }
        }
    }
}

impl Handler for AnyHandler {
    async fn serve<S: Io>(&self, conn: &mut Connection<S>) -> Result<Ended, HandlerError> {
        match self {
            AnyHandler::Echo(h) => h.serve(conn).await,
            AnyHandler::Download(h) => h.serve(conn).await,
            AnyHandler::KeywordBot(h) => h.serve(conn).await,
            AnyHandler::RandomBot(h) => h.serve(conn).await,
        }
    }
}
