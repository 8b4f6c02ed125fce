//! What `switchboard probe` asks of a handler: each handler's file says what
//! to send and how to tell its own answer from another handler's, so that a
//! probe fails against a port that runs the wrong handler. The runner
//! (`crate::probe`) connects, sends, reads (bounded) and asks the check.

use std::net::SocketAddr;

use crate::conn::text::TextEncoding;

/// What a handler's probe may use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProbeContext<'a> {
    /// The listener's name.
    pub listener: &'a str,
    /// The listener's text encoding.
    pub encoding: TextEncoding,
    /// The probe's own address, as the server sees it (`{peer}`).
    pub peer: SocketAddr,
    /// A random token, unique to this probe.
    pub token: &'a str,
}

/// A probe's judge: called with everything received so far, and whether
/// the server has closed the connection; asked again after each read until
/// it decides.
pub(crate) type Check = Box<dyn Fn(&[u8], bool) -> Verdict + Send + Sync>;

/// What a probe sends, and how it judges what came back.
pub(crate) struct Probe {
    /// Bytes written once connected.
    pub send: Vec<u8>,
    /// How it judges what came back.
    pub check: Check,
}

/// A probe check's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The listener runs the expected handler; says what it showed.
    Pass(&'static str),
    /// It does not; says what came back.
    Fail(String),
    /// Not decided yet: read more.
    More,
}

/// The first line of `reply` (without "\n" or "\r\n"), once it is complete;
/// a failure if the server closed before ending one.
pub(crate) fn first_line(reply: &[u8], closed: bool) -> Result<Option<&[u8]>, Verdict> {
    match memchr::memchr(b'\n', reply) {
        Some(end) => {
            let line = &reply[..end];
            Ok(Some(line.strip_suffix(b"\r").unwrap_or(line)))
        }
        None if closed => Err(Verdict::Fail(if reply.is_empty() {
            "closed without answering".to_owned()
        } else {
            format!("closed after {} without a newline", shown(reply))
        })),
        None => Ok(None),
    }
}

/// Bytes as shown in a failure: quoted, escaped, at most 80 characters.
pub(crate) fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text
        .chars()
        .take(MAX)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if text.chars().count() > MAX {
        out.push_str("...");
    }
    format!("\"{out}\"")
}

/// The check of a handler that answers with one line and then closes:
/// `expected` judges the line (decoded in `encoding`), and any byte after
/// it fails the probe.
pub(crate) fn line_then_close(
    encoding: TextEncoding,
    passed: &'static str,
    expected: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static,
) -> Check {
    Box::new(move |reply, closed| {
        let line = match first_line(reply, closed) {
            Ok(Some(line)) => line,
            Ok(None) => return Verdict::More,
            Err(fail) => return fail,
        };
        let text = encoding.decode(line);
        if let Err(why) = expected(&text) {
            return Verdict::Fail(why);
        }
        let after = &reply[memchr::memchr(b'\n', reply).map_or(reply.len(), |i| i + 1)..];
        if !after.is_empty() {
            return Verdict::Fail(format!(
                "answered {} and then went on with {}",
                shown(line),
                shown(after)
            ));
        }
        if closed {
            Verdict::Pass(passed)
        } else {
            Verdict::More
        }
    })
}
