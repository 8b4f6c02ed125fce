//! What a handler reports when a conversation is over: how it ended, or why
//! it ended early, and what the client and the metrics are told of that.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::conn::ConnError;
use crate::metrics::CloseReason;

/// How a conversation ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The client closed its side.
    ClientClosed,
    /// The client said a farewell.
    Farewell,
    /// The server is shutting down.
    Shutdown,
    /// The handler finished its work (a file or listing was sent).
    Completed,
}

impl Ended {
    /// What the metrics count it as.
    pub(crate) fn close_reason(self) -> CloseReason {
        match self {
            Ended::ClientClosed => CloseReason::ClientClosed,
            Ended::Farewell => CloseReason::Farewell,
            Ended::Shutdown => CloseReason::Shutdown,
            Ended::Completed => CloseReason::Completed,
        }
    }
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
pub(crate) enum HandlerError {
    /// The client sent nothing for the idle timeout.
    #[error("idle timeout ({})", humantime::format_duration(*.0))]
    Idle(Duration),
    /// A message was longer than `max_message_bytes`.
    #[error("message longer than {0} bytes")]
    MessageTooLong(usize),
    /// The client read nothing for the idle timeout while the server wrote.
    #[error("client stopped reading for {}", humantime::format_duration(*.0))]
    WriteStalled(Duration),
    /// A message (or the first one) was not complete in time.
    #[error("no complete message within {}", humantime::format_duration(*.0))]
    TooSlow(Duration),
    /// The client read a file more slowly than the minimum rate (carried):
    /// it is reset, so that it sees an error, not a short file.
    #[error("client read slower than {0} bytes a second")]
    ReaderTooSlow(u64),
    /// The file shrank while it was sent: the client got less than it was
    /// promised, and must see an error, not a clean end.
    #[error("truncated: the file shrank while it was sent ({sent} of {expected} bytes)")]
    Truncated {
        /// Bytes sent.
        sent: u64,
        /// The file's size when the send began.
        expected: u64,
    },
    /// The request was refused; the reason (one of a fixed set) is told to
    /// the client.
    #[error("refused: {0}")]
    Refused(&'static str),
    /// The handler has already told the client why it stops, in its own
    /// protocol (an HTTP status): no `ERR` line follows.
    #[error("{what}")]
    Answered {
        /// What it said.
        what: &'static str,
        /// What the metrics count it as.
        reason: CloseReason,
    },
    /// The socket or a file failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl From<ConnError> for HandlerError {
    fn from(err: ConnError) -> Self {
        match err {
            ConnError::Idle(after) => HandlerError::Idle(after),
            ConnError::MessageTooLong(limit) => HandlerError::MessageTooLong(limit),
            ConnError::WriteStalled(after) => HandlerError::WriteStalled(after),
            ConnError::TooSlow(limit) => HandlerError::TooSlow(limit),
            ConnError::ReaderTooSlow(rate) => HandlerError::ReaderTooSlow(rate),
            ConnError::Io(e) => HandlerError::Io(e),
        }
    }
}

impl HandlerError {
    /// The one `ERR ...` line the client gets before the close, if any,
    /// with the reason it is counted under.
    pub(crate) fn client_reply(&self) -> Option<(String, &'static str)> {
        match self {
            HandlerError::MessageTooLong(_) => {
                Some(("ERR message too long".to_owned(), "message too long"))
            }
            HandlerError::TooSlow(_) => Some(("ERR too slow".to_owned(), "too slow")),
            HandlerError::Refused(reason) => Some((format!("ERR {reason}"), reason)),
            _ => None,
        }
    }

    /// What the metrics count it as.
    pub(crate) fn close_reason(&self) -> CloseReason {
        match self {
            HandlerError::Idle(_) | HandlerError::WriteStalled(_) => CloseReason::Idle,
            HandlerError::MessageTooLong(_) => CloseReason::Limit,
            HandlerError::TooSlow(_) | HandlerError::ReaderTooSlow(_) => CloseReason::Slow,
            HandlerError::Refused(_) => CloseReason::Refused,
            HandlerError::Truncated { .. } => CloseReason::Truncated,
            HandlerError::Answered { reason, .. } => *reason,
            HandlerError::Io(_) if self.is_disconnect() => CloseReason::ClientClosed,
            HandlerError::Io(_) => CloseReason::Error,
        }
    }

    /// True when the connection must end with a reset (RST), not a close
    /// (FIN), so that the client sees an error.
    pub(crate) fn resets_connection(&self) -> bool {
        matches!(
            self,
            HandlerError::Truncated { .. } | HandlerError::ReaderTooSlow(_)
        )
    }

    /// True when the fault is likely the server's (a file or socket failed in
    /// an unexpected way), worth a warning rather than an info line.
    pub(crate) fn is_server_fault(&self) -> bool {
        matches!(self, HandlerError::Io(_)) && !self.is_disconnect()
    }

    /// True when the client went away (reset, broken pipe): normal on the
    /// internet, not a server problem worth a warning.
    pub(crate) fn is_disconnect(&self) -> bool {
        matches!(self, HandlerError::Io(e) if matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::UnexpectedEof
        ))
    }
}
