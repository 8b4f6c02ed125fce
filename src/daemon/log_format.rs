//! How a log line is laid out: `tracing_subscriber`'s text (`Full`) and
//! JSON formats, with a connection's or datagram's context
//! (`crate::log_context`) where a span's fields would be. Outside a context
//! a line is the stock format's, byte for byte; inside one it is what the
//! stock format wrote for the same line in the span the context replaces
//! (the tests below compare the two).

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Json, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::log_context::{self, LogContext};

/// ANSI styles as `nu_ansi_term` writes them (the stock format's).
const BOLD: &str = "\x1b[1m";
const DIMMED: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// The text format: timestamp (unless the journal stamps the lines),
/// level, the context and spans, target, fields.
pub(super) struct ContextText<T> {
    stock: Format<Full, T>,
    timer: T,
    timestamps: bool,
}

impl<T: FormatTime + Clone> ContextText<T> {
    /// With `timer`'s timestamps, or none when `timestamps` is false.
    pub(super) fn new(timer: T, timestamps: bool) -> Self {
        let stock = tracing_subscriber::fmt::format().with_timer(timer.clone());
        ContextText {
            stock: if timestamps {
                stock
            } else {
                stock.without_time().with_timer(timer.clone())
            },
            timer,
            timestamps,
        }
    }
}

impl<S, N, T> FormatEvent<S, N> for ContextText<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let written = log_context::with_current(|context| {
            self.format_in_context(ctx, writer.by_ref(), event, context)
        });
        match written {
            Some(written) => written,
            None => self.stock.format_event(ctx, writer, event),
        }
    }
}

impl<T: FormatTime> ContextText<T> {
    fn format_in_context<S, N>(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
        context: &LogContext,
    ) -> fmt::Result
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let ansi = writer.has_ansi_escapes();
        let (bold, dimmed, reset) = if ansi {
            (BOLD, DIMMED, RESET)
        } else {
            ("", "", "")
        };
        if self.timestamps {
            writer.write_str(dimmed)?;
            if self.timer.format_time(&mut writer).is_err() {
                writer.write_str("<unknown time>")?;
            }
            write!(writer, "{reset} ")?;
        }
        let meta = event.metadata();
        write_level(&mut writer, *meta.level(), ansi)?;
        write!(
            writer,
            "{bold}{}{reset}{bold}{{{reset}",
            context.kind().name()
        )?;
        context.write_text(&mut writer, ansi)?;
        write!(writer, "{bold}}}{reset}{dimmed}:{reset}")?;
        // Spans entered inside the context, as the stock format writes them.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{bold}{}{reset}", span.metadata().name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{bold}{{{reset}{fields}{bold}}}{reset}")?;
                }
                write!(writer, "{dimmed}:{reset}")?;
            }
        }
        write!(writer, " {dimmed}{}{reset}{dimmed}:{reset} ", meta.target())?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The level as the stock format writes it: five wide, coloured on a
/// terminal, and a space.
fn write_level(writer: &mut Writer<'_>, level: Level, ansi: bool) -> fmt::Result {
    let (text, colour) = match level {
        Level::TRACE => ("TRACE", "\x1b[35m"),
        Level::DEBUG => ("DEBUG", "\x1b[34m"),
        Level::INFO => (" INFO", "\x1b[32m"),
        Level::WARN => (" WARN", "\x1b[33m"),
        Level::ERROR => ("ERROR", "\x1b[31m"),
    };
    if ansi {
        write!(writer, "{colour}{text}{RESET} ")
    } else {
        write!(writer, "{text} ")
    }
}

/// The JSON format: the stock line, and in a context its `span` and
/// `spans` entries.
pub(super) struct ContextJson<T> {
    stock: Format<Json, T>,
}

impl<T> ContextJson<T> {
    pub(super) fn new(stock: Format<Json, T>) -> Self {
        ContextJson { stock }
    }
}

impl<S, N, T> FormatEvent<S, N> for ContextJson<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut context = String::new();
        if log_context::with_current(|c| c.write_json(&mut context)).is_none() {
            return self.stock.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.stock
            .format_event(ctx, Writer::new(&mut line), event)?;
        // Spans entered inside the context: it is the first of `spans`
        // (the last entry; a field's value cannot hold the key unescaped).
        const SPANS: &str = ",\"spans\":[";
        if let Some(at) = line.rfind(SPANS) {
            line.insert_str(at + SPANS.len(), &format!("{context},"));
            return writer.write_str(&line);
        }
        // Otherwise the stock line is one object and a newline.
        let Some(object) = line.strip_suffix("}\n") else {
            return writer.write_str(&line);
        };
        write!(
            writer,
            "{object},\"span\":{context},\"spans\":[{context}]}}"
        )?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::fmt::time::SystemTime;
    use tracing_subscriber::prelude::*;

    use super::*;
    use crate::daemon::log_fields::TextFields;
    use crate::log_capture::Lines;

    /// The lines of a connection whose peer came in a PROXY header, and
    /// that did a TLS handshake, and of a datagram.
    fn log_lines() {
        tracing::info!(bytes_in = 6u64, reason = %"client closed", "closed");
        tracing::warn!(error = %"boom", "failed");
        let inner = tracing::info_span!("inner", step = 2u8);
        inner.in_scope(|| tracing::debug!(n = 1u8, "in a span inside"));
    }

    /// The lines of `log_lines` and more, in real spans, through `layer`.
    fn with_spans<L>(layer: L)
    where
        L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
    {
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                parent: None,
                "conn",
                listener = %"echo",
                peer = tracing::field::Empty,
                via = tracing::field::Empty,
                id = 7u64,
                tls = tracing::field::Empty,
                client_cert = tracing::field::Empty,
            );
            let _entered = span.enter();
            span.record("via", tracing::field::display("10.0.0.1:9"));
            span.record("peer", tracing::field::display("127.0.0.2:5000"));
            span.record(
                "tls",
                tracing::field::display("TLSv1.3 TLS13_AES_128_GCM_SHA256"),
            );
            span.record("client_cert", tracing::field::display("\"CN=a\\\"b\""));
            log_lines();
            drop(_entered);
            let datagram = tracing::info_span!(
                parent: None,
                "datagram",
                listener = %"bot",
                peer = %"127.0.0.3:53",
            );
            datagram.in_scope(|| tracing::info!("late"));
            tracing::info!("outside");
        });
    }

    /// The same lines in contexts, through `layer`.
    fn with_context<L>(layer: L)
    where
        L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
    {
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                log_context::scope(LogContext::connection("echo".into(), None, 7), async {
                    log_context::record_via("10.0.0.1:9".parse().expect("an address"));
                    log_context::record_peer("127.0.0.2:5000".parse().expect("an address"));
                    log_context::record_tls("TLSv1.3 TLS13_AES_128_GCM_SHA256");
                    log_context::record_client_cert("\"CN=a\\\"b\"");
                    log_lines();
                })
                .await;
                let peer = "127.0.0.3:53".parse().expect("an address");
                log_context::scope(LogContext::datagram("bot".into(), peer), async {
                    tracing::info!("late");
                })
                .await;
                tracing::info!("outside");
            });
        });
    }

    /// Lines in a context are the stock format's lines in the span it
    /// replaced, with and without colours (the span's fields in the order
    /// the connection recorded them), and with a timestamp.
    #[test]
    fn text_lines_in_a_context_are_the_stock_lines_in_a_span() {
        for ansi in [false, true] {
            let (stock, ours) = (Lines::default(), Lines::default());
            with_spans(
                tracing_subscriber::fmt::layer()
                    .without_time()
                    .with_ansi(ansi)
                    .with_writer(stock.clone())
                    .fmt_fields(TextFields)
                    .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
            );
            with_context(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(ours.clone())
                    .fmt_fields(TextFields)
                    .event_format(ContextText::new((), false))
                    .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
            );
            let stock = stock.text();
            assert_eq!(ours.text(), stock, "ansi {ansi}");
            assert_eq!(stock.lines().count(), 5, "{stock}");
        }
        let plain = Lines::default();
        with_context(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(plain.clone())
                .fmt_fields(TextFields)
                .event_format(ContextText::new(SystemTime, true)),
        );
        let first = plain
            .text()
            .lines()
            .next()
            .map(str::to_owned)
            .unwrap_or_default();
        // "2026-12-07T19:33:00.123456Z  INFO conn{...": a timestamp first.
        assert!(
            first
                .get(..4)
                .is_some_and(|year| year.bytes().all(|b| b.is_ascii_digit()))
                && first.contains(
                    "Z  INFO conn{listener=echo id=7 via=10.0.0.1:9 peer=127.0.0.2:5000 "
                ),
            "{first}"
        );
    }

    /// A connection through a balancer: its span was made without `peer`,
    /// then recorded `via` when the PROXY header's read began and `peer`
    /// once the header said who the client is (text fields in the order
    /// recorded); a line before and after the header.
    #[test]
    fn text_lines_of_a_proxied_connection_are_the_stock_lines_in_a_span() {
        let balancer: std::net::SocketAddr = "10.0.0.1:9".parse().expect("an address");
        let client: std::net::SocketAddr = "192.0.2.7:5000".parse().expect("an address");
        for ansi in [false, true] {
            let (stock, ours) = (Lines::default(), Lines::default());
            let layer = |lines: &Lines| {
                tracing_subscriber::fmt::layer()
                    .without_time()
                    .with_ansi(ansi)
                    .with_writer(lines.clone())
                    .fmt_fields(TextFields)
            };
            let subscriber = tracing_subscriber::registry().with(layer(&stock));
            tracing::subscriber::with_default(subscriber, || {
                let span = tracing::info_span!(
                    parent: None,
                    "conn",
                    listener = %"px",
                    peer = tracing::field::Empty,
                    via = tracing::field::Empty,
                    id = 3u64,
                    tls = tracing::field::Empty,
                    client_cert = tracing::field::Empty,
                );
                let _entered = span.enter();
                span.record("via", tracing::field::display(balancer));
                tracing::debug!("reading the header");
                span.record("peer", tracing::field::display(client));
                span.record("tls", tracing::field::display("TLSv1.3 X"));
                tracing::info!("closed");
            });
            let subscriber = tracing_subscriber::registry()
                .with(layer(&ours).event_format(ContextText::new((), false)));
            tracing::subscriber::with_default(subscriber, || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("a runtime");
                runtime.block_on(log_context::scope(
                    LogContext::connection("px".into(), None, 3),
                    async {
                        log_context::record_via(balancer);
                        tracing::debug!("reading the header");
                        log_context::record_peer(client);
                        log_context::record_tls("TLSv1.3 X");
                        tracing::info!("closed");
                    },
                ));
            });
            let stock = stock.text();
            assert_eq!(stock.lines().count(), 2, "{stock}");
            assert_eq!(ours.text(), stock, "ansi {ansi}");
        }
    }

    #[test]
    fn json_lines_in_a_context_are_the_stock_lines_in_a_span() {
        let (stock, ours) = (Lines::default(), Lines::default());
        with_spans(
            tracing_subscriber::fmt::layer()
                .json()
                .without_time()
                .with_writer(stock.clone())
                .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
        );
        with_context(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(ours.clone())
                .event_format(ContextJson::new(
                    tracing_subscriber::fmt::format().json().without_time(),
                ))
                .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
        );
        let (stock, ours) = (stock.text(), ours.text());
        assert_eq!(ours.lines().count(), 5, "{ours}");
        for (stock, ours) in stock.lines().zip(ours.lines()) {
            // The same entries; the span's are in the same order too.
            let parsed = |line: &str| -> serde_json::Value {
                serde_json::from_str(line).expect("a JSON line")
            };
            assert_eq!(parsed(stock), parsed(ours), "{stock}\n{ours}");
            assert_eq!(stock, ours);
        }
    }
}
