//! A connection's log context: the fields that every line written by a
//! connection's task carries (`listener`, `peer`, `id`, and once known
//! `via`, `tls`, `client_cert`), kept as values and formatted only into the
//! lines that are written (by `daemon::logging`).
//!
//! This is what a `tracing` span per connection did, at a fraction of its
//! cost. A span formats its fields when it is made (into a string, in a map
//! of its own, in the registry), and is entered and exited at every poll
//! and closed, whether or not a line of it is ever written: at the default
//! level that was a quarter of a short connection's user-space
//! instructions, and about 400 bytes of every idle connection
//! (bench/ANALYSIS.md, "connect" and "hold"). The context is a task-local
//! value instead: swapped in and out while the task is polled.
//!
//! A line written in a context reads as it did in the span:
//! `conn{listener=echo peer=127.0.0.2:40000 id=7}: target: message ...`,
//! and in JSON as the span's `span` and `spans` entries.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// What a context is of: its name in a line, as a span's was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContextKind {
    /// A TCP connection, from its accept to its close.
    Connection,
    /// A datagram whose reply waits for the history.
    Datagram,
}

impl ContextKind {
    /// The name a line shows (the span's name it replaces).
    pub(crate) fn name(self) -> &'static str {
        match self {
            ContextKind::Connection => "conn",
            ContextKind::Datagram => "datagram",
        }
    }
}

/// The fields of one connection's (or datagram's) lines. Small, as every
/// idle connection's task holds one.
#[derive(Debug)]
pub(crate) struct LogContext {
    listener: Arc<str>,
    /// The client; `None` until a balancer's PROXY header has said who it is.
    peer: Option<SocketAddr>,
    /// A connection's number (a datagram has none).
    id: u64,
    kind: ContextKind,
    /// What only some connections learn, boxed when they do.
    later: Option<Box<Later>>,
}

/// The fields a connection may learn after its accept.
#[derive(Debug, Default)]
struct Later {
    /// The balancer a client came through.
    via: Option<SocketAddr>,
    /// The TLS version and cipher suite.
    tls: Option<Box<str>>,
    /// The client certificate's subject, quoted and bounded by the caller.
    client_cert: Option<Box<str>>,
}

impl LogContext {
    /// A connection's context.
    pub(crate) fn connection(listener: Arc<str>, peer: Option<SocketAddr>, id: u64) -> Self {
        LogContext {
            listener,
            peer,
            id,
            kind: ContextKind::Connection,
            later: None,
        }
    }

    /// A datagram's context.
    pub(crate) fn datagram(listener: Arc<str>, peer: SocketAddr) -> Self {
        LogContext {
            listener,
            peer: Some(peer),
            id: 0,
            kind: ContextKind::Datagram,
            later: None,
        }
    }

    /// The connection's number, if it is a connection's context.
    fn id(&self) -> Option<u64> {
        (self.kind == ContextKind::Connection).then_some(self.id)
    }

    /// The fields learnt later, made on the first one.
    fn later(&mut self) -> &mut Later {
        self.later.get_or_insert_with(Box::default)
    }

    /// What the context is of.
    pub(crate) fn kind(&self) -> ContextKind {
        self.kind
    }

    /// Writes the fields as a text line shows them inside the braces:
    /// `listener=echo peer=127.0.0.2:40000 id=7`, or through a balancer
    /// `listener=echo id=7 via=10.0.0.1:9 peer=192.0.2.7:40000`; with
    /// `ansi`, each name in italics and each `=` dimmed, as
    /// `tracing_subscriber` writes a span's fields on a terminal.
    pub(crate) fn write_text(&self, out: &mut impl fmt::Write, ansi: bool) -> fmt::Result {
        let mut first = true;
        let mut field = |out: &mut dyn fmt::Write, name: &str, value: &dyn fmt::Display| {
            let space = if first { "" } else { " " };
            first = false;
            if ansi {
                write!(out, "{space}\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m{value}")
            } else {
                write!(out, "{space}{name}={value}")
            }
        };
        // In the order the span recorded them: through a balancer, `via`
        // when the PROXY header's read began, then `peer` from the header.
        let via = self.later.as_deref().and_then(|later| later.via);
        field(out, "listener", &self.listener)?;
        if let Some(peer) = self.peer.as_ref().filter(|_| via.is_none()) {
            field(out, "peer", peer)?;
        }
        if let Some(id) = &self.id() {
            field(out, "id", id)?;
        }
        if let Some(via) = &via {
            field(out, "via", via)?;
            if let Some(peer) = &self.peer {
                field(out, "peer", peer)?;
            }
        }
        let Some(later) = &self.later else {
            return Ok(());
        };
        if let Some(tls) = &later.tls {
            field(out, "tls", tls)?;
        }
        if let Some(cert) = &later.client_cert {
            field(out, "client_cert", cert)?;
        }
        Ok(())
    }

    /// Writes the fields as a JSON line's `span` object: the names sorted,
    /// then `name` (as `tracing_subscriber`'s JSON format writes a span).
    pub(crate) fn write_json(&self, out: &mut String) {
        let mut first = true;
        let mut field = |out: &mut String, name: &str, value: &str, quoted: bool| {
            if !first {
                out.push(',');
            }
            first = false;
            json_string(out, name);
            out.push(':');
            if quoted {
                json_string(out, value);
            } else {
                out.push_str(value);
            }
        };
        let later = self.later.as_deref();
        out.push('{');
        if let Some(cert) = later.and_then(|later| later.client_cert.as_deref()) {
            field(out, "client_cert", cert, true);
        }
        if let Some(id) = self.id() {
            field(out, "id", &id.to_string(), false);
        }
        field(out, "listener", &self.listener, true);
        if let Some(peer) = self.peer {
            field(out, "peer", &peer.to_string(), true);
        }
        if let Some(tls) = later.and_then(|later| later.tls.as_deref()) {
            field(out, "tls", tls, true);
        }
        if let Some(via) = later.and_then(|later| later.via) {
            field(out, "via", &via.to_string(), true);
        }
        field(out, "name", self.kind.name(), true);
        out.push('}');
    }
}

/// `text` as a JSON string, escaped by serde_json, as the stock JSON
/// format's fields are.
fn json_string(out: &mut String, text: &str) {
    // A string always serializes; an error would leave the value out.
    if let Ok(json) = serde_json::to_string(text) {
        out.push_str(&json);
    }
}

tokio::task_local! {
    static CONTEXT: RefCell<LogContext>;
}

/// Runs `task` with `context` as the context of every line it writes.
pub(crate) fn scope<F: Future>(context: LogContext, task: F) -> impl Future<Output = F::Output> {
    CONTEXT.scope(RefCell::new(context), task)
}

/// Calls `f` with the current task's context; `None` outside any context
/// (or while it is being changed, which no line can interrupt).
pub(crate) fn with_current<R>(f: impl FnOnce(&LogContext) -> R) -> Option<R> {
    CONTEXT
        .try_with(|context| context.try_borrow().ok().map(|context| f(&context)))
        .ok()
        .flatten()
}

/// Runs `f` as outside any context: the lines it writes are the daemon's
/// (no connection's fields, and not counted by the log budget), such as a
/// summary that a connection's task happens to write.
pub(crate) fn outside(f: impl FnOnce()) {
    let mut f = Some(f);
    let _ = CONTEXT.try_with(|context| {
        // While the context is borrowed mutably, `with_current` sees none.
        let _hidden = context.try_borrow_mut();
        if let Some(f) = f.take() {
            f();
        }
    });
    // Not in a task with a context.
    if let Some(f) = f {
        f();
    }
}

/// Changes the current task's context; nothing outside a context.
fn change(f: impl FnOnce(&mut LogContext)) {
    let _ = CONTEXT.try_with(|context| {
        if let Ok(mut context) = context.try_borrow_mut() {
            f(&mut context);
        }
    });
}

/// Records the client a balancer's PROXY header named (`peer`).
pub(crate) fn record_peer(peer: SocketAddr) {
    change(|context| context.peer = Some(peer));
}

/// Records the balancer a connection came through (`via`).
pub(crate) fn record_via(via: SocketAddr) {
    change(|context| context.later().via = Some(via));
}

/// Records the TLS session (`tls`: version and cipher suite).
pub(crate) fn record_tls(tls: impl fmt::Display) {
    change(|context| context.later().tls = Some(tls.to_string().into()));
}

/// Records the client certificate's subject, as the caller quoted it.
pub(crate) fn record_client_cert(subject: impl fmt::Display) {
    change(|context| context.later().client_cert = Some(subject.to_string().into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> LogContext {
        let mut context = LogContext::connection(
            "echo".into(),
            Some("127.0.0.2:5000".parse().expect("an address")),
            7,
        );
        let later = context.later();
        later.via = Some("10.0.0.1:9".parse().expect("an address"));
        later.tls = Some("TLSv1.3 TLS13_AES_128_GCM_SHA256".into());
        later.client_cert = Some("\"CN=a\\\"b\n\u{1}\"".into());
        context
    }

    #[test]
    fn text_lists_the_fields_known() {
        let mut text = String::new();
        full().write_text(&mut text, false).expect("written");
        assert_eq!(
            text,
            "listener=echo id=7 via=10.0.0.1:9 peer=127.0.0.2:5000 \
             tls=TLSv1.3 TLS13_AES_128_GCM_SHA256 client_cert=\"CN=a\\\"b\n\u{1}\""
        );
        let mut text = String::new();
        LogContext::connection("echo".into(), None, 3)
            .write_text(&mut text, false)
            .expect("written");
        assert_eq!(text, "listener=echo id=3");
    }

    #[test]
    fn json_is_what_serde_json_reads_back() {
        let mut json = String::new();
        full().write_json(&mut json);
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(value["client_cert"], "\"CN=a\\\"b\n\u{1}\"");
        assert_eq!(value["id"], 7);
        assert_eq!(value["peer"], "127.0.0.2:5000");
        assert_eq!(value["name"], "conn");
        assert!(json.starts_with("{\"client_cert\":"), "{json}");
        assert!(json.ends_with(",\"name\":\"conn\"}"), "{json}");
        let mut json = String::new();
        LogContext::datagram("bot".into(), "[::1]:53".parse().expect("an address"))
            .write_json(&mut json);
        assert_eq!(
            json,
            r#"{"listener":"bot","peer":"[::1]:53","name":"datagram"}"#
        );
    }

    proptest::proptest! {
        /// Whatever a client certificate's subject holds (the caller
        /// quotes it, but the JSON must not depend on that), the `span`
        /// object is valid JSON that reads back as the text given.
        #[test]
        fn any_text_is_valid_json(subject in "(?s).*", listener in "\\PC*") {
            let mut context = LogContext::connection(listener.as_str().into(), None, 1);
            context.later().client_cert = Some(subject.as_str().into());
            let mut json = String::new();
            context.write_json(&mut json);
            let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
            proptest::prop_assert_eq!(value["client_cert"].as_str(), Some(subject.as_str()));
            proptest::prop_assert_eq!(value["listener"].as_str(), Some(listener.as_str()));
            // As serde_json writes it, so that a line reads the same whichever wrote it.
            let by_serde = serde_json::to_string(&subject).expect("a string");
            let start = format!("{{\"client_cert\":{by_serde},");
            proptest::prop_assert!(json.starts_with(&start), "{} does not start with {}", json, start);
        }
    }

    #[tokio::test]
    async fn a_task_sees_its_own_context_and_its_changes() {
        assert!(with_current(|_| ()).is_none());
        record_peer("1.2.3.4:5".parse().expect("an address")); // no context: nothing
        let task = scope(LogContext::connection("echo".into(), None, 1), async {
            record_peer("127.0.0.3:9".parse().expect("an address"));
            tokio::task::yield_now().await;
            with_current(|context| {
                let mut text = String::new();
                context.write_text(&mut text, false).map(|()| text)
            })
        });
        let other = scope(LogContext::connection("echo".into(), None, 2), async {
            with_current(|context| context.id())
        });
        let (text, id) = tokio::join!(task, other);
        assert_eq!(
            text.and_then(Result::ok).as_deref(),
            Some("listener=echo peer=127.0.0.3:9 id=1")
        );
        assert_eq!(id, Some(Some(2)));
        assert!(with_current(|_| ()).is_none());
    }
}
