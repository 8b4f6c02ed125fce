//! What a handler reports when a conversation is over: how it ended, or why
//! it ended early, and what the client and the metrics are told of that.

use std::fmt;
use std::io;

use crate::conn::ConnError;
use crate::metrics::CloseReason;

/// The reason told to a client whose address a reload denied while it was
/// connected (`ERR access denied`); also its `reason` in
/// `switchboard_error_replies_total`.
pub(crate) const ACCESS_DENIED: &str = "access denied";

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
/// Why a request was refused: the client is told its text (`ERR not
/// found`, or over HTTP the status [`Refusal::is_missing`] and
/// [`Refusal::is_busy`] choose), and the metrics count it under that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The name leads nowhere.
    NotFound,
    /// `..` in a name (the probe asks for it: nothing on disk is touched).
    ParentDir,
    /// A name starting with `/`.
    Absolute,
    /// A NUL byte in a name.
    NulByte,
    /// A component starting with `.`, not allowed.
    Hidden,
    /// The real path is outside the root (a symlink out).
    OutsideRoot,
    /// Neither a regular file nor a directory (a FIFO, a device).
    NotServable,
    /// A regular file with more than one hard link, not allowed.
    HardLinked,
    /// The file system said no.
    PermissionDenied,
    /// A symlink loop.
    SymlinkLoop,
    /// A name over the file system's limit.
    NameTooLong,
    /// Another read error.
    CannotRead,
    /// The opened path could not be checked again by its descriptor.
    CannotVerify,
    /// Every slot is in use, or a listing's build did not come in time.
    Busy,
    /// The client's address holds its share of the slots already.
    TooManyFromSource,
    /// A folder asked for as a tar stream has more members than an
    /// archive may, or a layout over the listener's memory for them.
    ArchiveTooLarge,
    /// A folder asked for as a tar stream is nested deeper than an
    /// archive may be.
    ArchiveTooDeep,
    /// The server is shutting down.
    ShuttingDown,
}

impl Refusal {
    /// The text the client gets after `ERR `.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::NotFound => "not found",
            Refusal::ParentDir => "'..' is not allowed",
            Refusal::Absolute => "absolute paths are not allowed",
            Refusal::NulByte => "invalid name: NUL byte",
            Refusal::Hidden => "hidden files are not served",
            Refusal::OutsideRoot => "outside the download root",
            Refusal::NotServable => "not a regular file or directory",
            Refusal::HardLinked => "hard-linked files are not served",
            Refusal::PermissionDenied => "permission denied",
            Refusal::SymlinkLoop => "too many levels of symbolic links",
            Refusal::NameTooLong => "name too long",
            Refusal::CannotRead => "cannot read",
            Refusal::CannotVerify => "cannot verify the path",
            Refusal::Busy => "busy",
            Refusal::TooManyFromSource => "too many downloads from your address",
            Refusal::ArchiveTooLarge => "folder too large to archive",
            Refusal::ArchiveTooDeep => "folder too deep to archive",
            Refusal::ShuttingDown => "server shutting down",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HandlerError {
    /// The connection's own limits ended it (idle, too long, too slow),
    /// or its socket failed.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The file shrank while it was sent: the client got less than it was
    /// promised, and must see an error, not a clean end.
    #[error("truncated: the file shrank while it was sent ({sent} of {expected} bytes)")]
    Truncated {
        /// Bytes sent.
        sent: u64,
        /// The file's size when the send began.
        expected: u64,
    },
    /// A file of a folder being sent as a tar stream changed (size, time,
    /// identity) or went away since the folder was walked: what follows
    /// would not be the archive promised, so the stream is reset.
    #[error("a file changed while its folder was archived: {member}")]
    ArchiveChanged {
        /// The member's name, quoted and bounded for the log.
        member: String,
    },
    /// The request was refused; the reason (one of a fixed set) is told to
    /// the client.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The handler has already told the client why it stops, in its own
    /// protocol (an HTTP status): no `ERR` line follows.
    #[error("{status}")]
    Answered {
        /// What it said.
        status: crate::http::status::Status,
        /// What the metrics count it as.
        reason: CloseReason,
    },
}

impl From<io::Error> for HandlerError {
    fn from(err: io::Error) -> Self {
        HandlerError::Conn(ConnError::Io(err))
    }
}

impl HandlerError {
    /// The one `ERR ...` line the client gets before the close, if any,
    /// with the reason it is counted under.
    pub(crate) fn client_reply(&self) -> Option<(String, &'static str)> {
        match self {
            HandlerError::Conn(ConnError::MessageTooLong(_)) => {
                Some(("ERR message too long".to_owned(), "message too long"))
            }
            HandlerError::Conn(ConnError::TooSlow(_)) => {
                Some(("ERR too slow".to_owned(), "too slow"))
            }
            HandlerError::Refused(reason) => Some((format!("ERR {reason}"), reason.as_str())),
            HandlerError::Conn(ConnError::Denied) => {
                Some((format!("ERR {ACCESS_DENIED}"), ACCESS_DENIED))
            }
            _ => None,
        }
    }

    /// What the metrics count it as.
    pub(crate) fn close_reason(&self) -> CloseReason {
        match self {
            HandlerError::Conn(ConnError::Idle(_) | ConnError::WriteStalled(_)) => {
                CloseReason::Idle
            }
            HandlerError::Conn(ConnError::MessageTooLong(_)) => CloseReason::Limit,
            HandlerError::Conn(
                ConnError::TooSlow(_) | ConnError::ReaderTooSlow(_) | ConnError::ResponseUnread(_),
            ) => CloseReason::Slow,
            HandlerError::Refused(_) => CloseReason::Refused,
            HandlerError::Conn(ConnError::Denied) => CloseReason::Denied,
            // The listener serves the connection again under the new
            // settings; only if it could not would this end it.
            HandlerError::Conn(ConnError::Rerouted) => CloseReason::Shutdown,
            HandlerError::Truncated { .. } | HandlerError::ArchiveChanged { .. } => {
                CloseReason::Truncated
            }
            HandlerError::Answered { reason, .. } => *reason,
            HandlerError::Conn(ConnError::Io(_)) if self.is_disconnect() => {
                CloseReason::ClientClosed
            }
            HandlerError::Conn(ConnError::Io(_) | ConnError::DiskStalled) => CloseReason::Error,
        }
    }

    /// True when the connection must end with a reset (RST), not a close
    /// (FIN), so that the client sees an error: the reply was cut (a file
    /// shrank, a deadline), or the server failed (a file's error, a panic
    /// on the blocking pool), when the reply may not have begun: a raw
    /// download's empty reply must not look like an empty file. (A write
    /// cut short resets on its own: see `Connection::close`.)
    pub(crate) fn resets_connection(&self) -> bool {
        matches!(
            self,
            HandlerError::Truncated { .. }
                | HandlerError::ArchiveChanged { .. }
                | HandlerError::Conn(ConnError::ReaderTooSlow(_) | ConnError::DiskStalled)
        ) || self.is_server_fault()
    }

    /// True when the fault is likely the server's (a file or socket failed in
    /// an unexpected way), worth a warning rather than an info line.
    pub(crate) fn is_server_fault(&self) -> bool {
        matches!(
            self,
            HandlerError::Conn(ConnError::Io(_) | ConnError::DiskStalled)
        ) && !self.is_disconnect()
    }

    /// True when the client went away (reset, broken pipe): normal on the
    /// internet, not a server problem worth a warning.
    pub(crate) fn is_disconnect(&self) -> bool {
        matches!(self, HandlerError::Conn(ConnError::Io(e)) if matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::UnexpectedEof
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_own_text() {
        use Refusal::*;
        let all = [
            NotFound,
            ParentDir,
            Absolute,
            NulByte,
            Hidden,
            OutsideRoot,
            NotServable,
            HardLinked,
            PermissionDenied,
            SymlinkLoop,
            NameTooLong,
            CannotRead,
            CannotVerify,
            Busy,
            TooManyFromSource,
            ArchiveTooLarge,
            ArchiveTooDeep,
            ShuttingDown,
        ];
        let texts: std::collections::HashSet<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            texts.len(),
            all.len(),
            "two refusals share a text (a metrics label)"
        );
        assert_eq!(Refusal::ParentDir.to_string(), "'..' is not allowed");
    }

    #[test]
    fn a_server_fault_or_a_cut_reply_resets_and_a_client_mistake_closes() {
        let resets = |e: HandlerError| e.resets_connection();
        // A panic on the blocking pool reaches a handler as such an error.
        assert!(resets(io::Error::other("task panicked").into()));
        assert!(resets(HandlerError::Conn(ConnError::DiskStalled)));
        assert!(resets(HandlerError::Truncated {
            sent: 1,
            expected: 2
        }));
        assert!(resets(HandlerError::Conn(ConnError::ReaderTooSlow(1))));
        assert!(resets(HandlerError::ArchiveChanged {
            member: "a/b".into()
        }));
        assert!(!resets(
            io::Error::from(io::ErrorKind::ConnectionReset).into()
        ));
        assert!(!resets(HandlerError::Refused(Refusal::Busy)));
        assert!(!resets(HandlerError::Conn(ConnError::Denied)));
        assert!(!resets(HandlerError::Conn(ConnError::Idle(
            std::time::Duration::from_secs(1)
        ))));
    }
}
