//! Logging: `tracing` lines on stderr through a buffered, non-blocking writer
//! (a slow terminal or journal never stalls a connection), at most
//! `log_lines_per_second` lines of connections (and panics) a second (a
//! flood of connections cannot make the log grow faster; what is dropped is
//! counted, once a second; the daemon's own lines always pass), filtered by
//! `RUST_LOG` or the config's `log_level`, as text or JSON, without ANSI
//! colours when stderr is not a terminal, and without a timestamp of its own
//! when stderr is the systemd journal (which stamps every line itself).

use std::io::{BufWriter, IsTerminal};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{Metadata, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{DynFilterFn, dynamic_filter_fn};
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{fmt, registry};

use super::log_fields::TextFields;
use super::log_format::{ContextJson, ContextText};
use super::panics::PANIC_TARGET;
use crate::config::{LogFormat, ServerConfig, log_filter};
use crate::log_context;

/// Bytes of log lines gathered into one write to stderr.
const LOG_WRITE_BUFFER: usize = 64 * 1024;

/// Installs the global subscriber, and the panic hook that logs through it
/// (`panics`). Keep the guard alive until exit: dropping it flushes the
/// lines still buffered.
pub fn init(server: &ServerConfig) -> anyhow::Result<WorkerGuard> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => log_filter(&directives)
            .map_err(|e| anyhow::anyhow!("invalid RUST_LOG {directives:?}: {e}"))?,
        _ => {
            log_filter(&server.log_level).map_err(|e| anyhow::anyhow!("invalid log_level: {e}"))?
        }
    };
    // The writer thread drains every line queued, then flushes: buffered,
    // a burst of lines costs one write(2), not one each (and stderr is
    // unbuffered). A lone line is still written at once.
    let stderr = BufWriter::with_capacity(LOG_WRITE_BUFFER, std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking(stderr);
    let budget = Arc::new(LineBudget::new(server.log_lines_per_second));
    // Both filters are global, not the one layer's own (`with_filter`):
    // with a layer's own filter, every enter and exit of a span (a
    // connection's span is entered at each poll) looks the span up in the
    // registry to see whether that layer's filter enabled it; about a tenth
    // of a line message's user-space instructions (bench/ANALYSIS.md,
    // "lines"). A global filter is asked first from the outside in, so the
    // level filter runs before the budget, which counts only lines that
    // would be written.
    let filtered = registry().with(budget_filter(budget.clone())).with(filter);
    let layer = fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    // The journal stamps every line itself.
    let installed = match (server.log_format, stderr_is_journal()) {
        (LogFormat::Text, journal) => filtered
            .with(
                layer
                    .fmt_fields(TextFields)
                    .event_format(ContextText::new(fmt::time::SystemTime, !journal)),
            )
            .try_init(),
        (LogFormat::Json, _) => filtered
            .with(
                layer
                    .json()
                    .event_format(ContextJson::new(fmt::format().json())),
            )
            .try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    // Once the log can take its lines: a panic is one of them.
    super::panics::install();
    std::thread::Builder::new()
        .name("log-budget".into())
        .spawn(move || budget.report_suppressed())
        .map_err(|e| anyhow::anyhow!("cannot start the log budget's thread: {e}"))?;
    Ok(guard)
}

/// The budget's filter: lets a line through when it is not one that a
/// flood makes, or when `budget` has room for it this second.
///
/// The lines of connections and datagrams past the budget are dropped, and
/// counted: they are what a flood makes. Those are the lines written in a
/// connection's or a late datagram reply's context (`log_context`), the debug and trace
/// lines of a listener's loop (a UDP listener's lines about each datagram),
/// and panic lines (a panic that a client can trigger would otherwise
/// flood the log). The daemon's own lines (start, reloads, refusal and drop
/// summaries, warnings outside a connection) always pass, as do spans,
/// which are not lines. Add it after the level filter, so that lines that
/// would not be written do not spend the budget.
pub(super) fn budget_filter<S>(
    budget: Arc<LineBudget>,
) -> DynFilterFn<S, impl Fn(&Metadata<'_>, &Context<'_, S>) -> bool>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    dynamic_filter_fn(move |meta, cx| {
        if !meta.is_event() {
            return true;
        }
        let of_the_traffic = meta.target() == PANIC_TARGET
            || log_context::with_current(|_| ()).is_some()
            || (*meta.level() >= tracing::Level::DEBUG
                && cx
                    .lookup_current()
                    .is_some_and(|span| span.name() == LISTENER_SPAN));
        !of_the_traffic || budget.allow()
    })
}

/// The span of a listener's accept or receive loop (`server::running`): its
/// debug and trace lines, one a datagram, are counted.
const LISTENER_SPAN: &str = "listener";

/// The target of the line that says how many lines were dropped.
const SUPPRESSED_TARGET: &str = "switchboard::log_budget";

/// At most `per_second` lines a second; what is over is counted.
pub(super) struct LineBudget {
    per_second: u64,
    started: Instant,
    /// The second (since `started`) that `used` counts.
    second: AtomicU64,
    used: AtomicU64,
    suppressed: AtomicU64,
}

impl LineBudget {
    pub(super) fn new(per_second: u64) -> Self {
        LineBudget {
            per_second,
            started: Instant::now(),
            second: AtomicU64::new(0),
            used: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// True when a line may be written now.
    fn allow(&self) -> bool {
        let now = self.started.elapsed().as_secs();
        let second = self.second.load(Ordering::Relaxed);
        if second != now
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < self.per_second {
            return true;
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Once a second, says how many lines were dropped, if any.
    fn report_suppressed(&self) -> ! {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            if suppressed > 0 {
                tracing::warn!(
                    target: SUPPRESSED_TARGET,
                    suppressed,
                    per_second = self.per_second,
                    "log lines dropped in the last second: more than log_lines_per_second"
                );
            }
        }
    }
}

/// True when systemd connected stderr to the journal: `JOURNAL_STREAM`
/// names the device and inode of the stream it passed (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", stderr.dev(), stderr.ino())
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::Layer;

    use super::*;
    use crate::log_capture::Logged;
    use crate::log_context::LogContext;

    /// The lines of a connection's and a late datagram reply's context,
    /// and a listener loop's debug lines, spend the budget; the daemon's
    /// own lines (outside a context, and a listener loop's info lines)
    /// always pass.
    #[tokio::test]
    async fn lines_in_a_log_context_spend_the_budget_and_the_daemon_s_lines_pass() {
        const PER_SECOND: u64 = 3;
        const LINES: usize = 20;
        let passed = Logged::default();
        let budget = Arc::new(LineBudget::new(PER_SECOND));
        let subscriber = registry().with(passed.clone().with_filter(budget_filter(budget)));
        let _guard = tracing::subscriber::set_default(subscriber);
        let started = Instant::now();
        log_context::scope(LogContext::connection("echo".into(), None, 1), async {
            for _ in 0..LINES {
                tracing::info!("conn line");
            }
        })
        .await;
        let peer = "127.0.0.3:53".parse().expect("an address");
        log_context::scope(LogContext::datagram("bot".into(), peer), async {
            for _ in 0..LINES {
                tracing::info!("datagram line");
            }
        })
        .await;
        let listener = tracing::info_span!("listener", listener = "echo");
        listener.in_scope(|| {
            for _ in 0..LINES {
                tracing::debug!("listener debug line");
                tracing::info!("listener info line");
            }
        });
        for _ in 0..LINES {
            tracing::warn!("daemon line");
        }
        // The budget's seconds the lines spanned, at most.
        let seconds = started.elapsed().as_secs() as usize + 2;
        let lines = passed.lines();
        let count = |message: &str| lines.iter().filter(|l| l.0 == message).count();
        let traffic = count("conn line") + count("datagram line") + count("listener debug line");
        assert!(count("conn line") >= 1, "{lines:?}");
        assert!(
            traffic <= PER_SECOND as usize * seconds && traffic < 3 * LINES,
            "{traffic} lines of the traffic in {seconds} s: {lines:?}"
        );
        assert_eq!(count("listener info line"), LINES, "{lines:?}");
        assert_eq!(count("daemon line"), LINES, "{lines:?}");
    }
}
