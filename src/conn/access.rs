//! The access log's line of a response: one a response, with its status,
//! the body's bytes that went out, its range, and how it ended. The
//! handler writes it when the response ends; a connection dropped in the
//! middle of one (the shutdown grace ran out) writes it from its `Drop`,
//! so that no response goes unlogged.

use std::fmt;

use tracing::info;

/// A response under way, as the access log will tell it.
#[derive(Debug)]
pub(crate) struct ResponseRecord {
    /// The method as sent, quoted for the log.
    pub method: String,
    /// The target as sent, quoted for the log.
    pub path: String,
    pub status: u16,
    /// The body's first byte and length, for a partial response.
    pub range: Option<(u64, u64)>,
    /// The head's bytes, which are not the body's.
    pub head_bytes: u64,
    /// The connection's count of bytes sent when the head began.
    pub sent_before: u64,
}

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// All of it went out.
    Complete,
    /// The send failed (the client went, or was too slow).
    Aborted,
    /// The connection was dropped mid-response: the shutdown grace ran out.
    Dropped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Aborted => "aborted",
            Outcome::Dropped => "dropped",
        }
    }
}

/// A range as `first-last`, or `-` for none.
struct RangeField(Option<(u64, u64)>);

impl fmt::Display for RangeField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((start, len)) => write!(f, "{start}-{}", start + len.saturating_sub(1)),
            None => f.write_str("-"),
        }
    }
}

/// True when the access log is written (its level is on): otherwise no
/// record is made, and a request costs no quoting or allocation for it.
pub(crate) fn wanted() -> bool {
    tracing::enabled!(tracing::Level::INFO)
}

impl ResponseRecord {
    /// The body's bytes sent, from the connection's count now.
    pub(crate) fn body_bytes(&self, sent_now: u64) -> u64 {
        sent_now
            .saturating_sub(self.sent_before)
            .saturating_sub(self.head_bytes)
    }

    /// Writes the line, given the connection's count of bytes sent now.
    pub(crate) fn log(&self, sent_now: u64, outcome: Outcome) {
        info!(
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes = self.body_bytes(sent_now),
            range = %RangeField(self.range),
            outcome = %outcome.as_str(),
            "http request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(range: Option<(u64, u64)>) -> ResponseRecord {
        ResponseRecord {
            method: "GET".into(),
            path: "/f".into(),
            status: 206,
            range,
            head_bytes: 100,
            sent_before: 1000,
        }
    }

    #[test]
    fn the_body_bytes_exclude_the_head_and_what_went_before() {
        let cases = [(1000, 0), (1050, 0), (1100, 0), (1101, 1), (5100, 4000)];
        for (sent_now, body) in cases {
            assert_eq!(record(None).body_bytes(sent_now), body, "{sent_now}");
        }
    }

    #[test]
    fn ranges_read_as_first_and_last_byte_or_a_dash() {
        let cases = [
            (None, "-"),
            (Some((0, 1)), "0-0"),
            (Some((1000, 24)), "1000-1023"),
            (Some((5, 0)), "5-5"),
        ];
        for (range, text) in cases {
            assert_eq!(RangeField(range).to_string(), text, "{range:?}");
        }
    }
}
