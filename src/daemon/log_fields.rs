//! How a text log line writes its fields (and a span's, once, when the span
//! is made): `name=value`, a space between, as `tracing_subscriber`'s
//! default does, at a fraction of its cost.
//!
//! Every connection's span formats its fields when it is made, even when
//! the log budget then drops each of its lines; the default writes each
//! field name through a (colourless, off a terminal) ANSI style, several
//! formatting arguments a field, which was a fifth of a short connection's
//! user-space instructions (bench/ANALYSIS.md, "connect"). A plain field is
//! written here with the same bytes; everything the default treats
//! specially (the message and its escaping, errors and their sources,
//! `log.` and `r#` names, colours on a terminal) is handed to it.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// The text format's fields (`fmt::layer().fmt_fields(TextFields)`).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TextFields;

impl<'a> MakeVisitor<Writer<'a>> for TextFields {
    type Visitor = TextVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> Self::Visitor {
        TextVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one line's (or span's) fields.
pub(super) struct TextVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// True for what only the default visitor writes right.
    fn is_special(&self, name: &str) -> bool {
        name == "message"
            || name.starts_with("log.")
            || name.starts_with("r#")
            || self.writer.has_ansi_escapes()
    }

    /// Lets the default visitor write this field, after what was written.
    fn by_default(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut default = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut default);
        self.result = default.finish();
        // The default writes nothing for the metadata of `log` records.
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if self.is_special(field.name()) {
            self.by_default(field, |default| default.record_str(field, value));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() {
            return;
        }
        self.by_default(field, |default| default.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if self.is_special(name) {
            self.by_default(field, |default| default.record_debug(field, value));
            return;
        }
        let writer = &mut self.writer;
        let padded = if self.is_empty {
            Ok(())
        } else {
            writer.write_char(' ')
        };
        self.is_empty = false;
        self.result = padded
            .and_then(|()| writer.write_str(name))
            .and_then(|()| writer.write_char('='))
            .and_then(|()| write!(writer, "{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for TextVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for TextVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::fmt::format::DefaultFields;
    use tracing_subscriber::fmt::{self as tfmt};
    use tracing_subscriber::prelude::*;

    use super::*;
    use crate::log_capture::Lines;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    /// Logs the same lines (in spans, with fields recorded later too)
    /// through `fields`, without time.
    fn lines_with<N>(fields: N, ansi: bool) -> String
    where
        N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
    {
        let out = Lines::default();
        let layer = tfmt::layer()
            .without_time()
            .with_ansi(ansi)
            .with_writer(out.clone())
            .fmt_fields(fields);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let peer: std::net::SocketAddr = "127.0.0.2:5000".parse().expect("an address");
            let span = tracing::info_span!(
                "conn",
                listener = %"echo",
                peer = %peer,
                via = tracing::field::Empty,
                id = 7u64,
            );
            let _entered = span.enter();
            span.record("via", tracing::field::display("10.0.0.1:9"));
            tracing::info!(
                bytes_in = 6u64,
                ok = true,
                delta = -3i64,
                name = "quoted \"name\"",
                reason = %"client closed",
                r#type = "raw",
                "closed"
            );
            tracing::warn!(error = %Outer(std::io::Error::other("inner")), "display error");
            let e = Outer(std::io::Error::other("inner"));
            tracing::warn!(error = &e as &(dyn std::error::Error + 'static), "sources");
            tracing::info!("message with \x1b[31m escape");
            tracing::info!(message = "a str message", n = 1u8);
        });
        out.text()
    }

    #[test]
    fn lines_are_the_default_formats_bytes() {
        for ansi in [false, true] {
            let ours = lines_with(TextFields, ansi);
            let theirs = lines_with(DefaultFields::new(), ansi);
            assert_eq!(ours, theirs, "ansi {ansi}");
            assert_eq!(ours.lines().count(), 5, "{ours}");
        }
        let plain = lines_with(TextFields, false);
        assert!(
            plain.contains(
                "conn{listener=echo peer=127.0.0.2:5000 id=7 via=10.0.0.1:9}: \
                 switchboard::daemon::log_fields::tests: closed bytes_in=6 ok=true \
                 delta=-3 name=\"quoted \\\"name\\\"\" reason=client closed type=\"raw\""
            ),
            "{plain}"
        );
    }
}
