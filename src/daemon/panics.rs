//! The daemon's panic hook. A panic that slips through (in a connection's
//! task, on the blocking pool, in a listener's loop) becomes one bounded
//! log line, under the log budget (`log_lines_per_second`), and one count in
//! `switchboard_panics_total`. The standard hook's output (several lines,
//! and a whole backtrace with `RUST_BACKTRACE=1`) is never written: a panic
//! that a client can trigger must not flood the log.
//!
//! The process keeps serving: tokio catches a task's panic and drops the
//! task, so a panicking connection gives back its slot and its socket is
//! reset (its `Connection` is dropped unclosed, counted as `dropped`).

use std::any::Any;
use std::panic::PanicHookInfo;

use crate::conn::text::quote;
use crate::metrics;

/// The target of a panic's log line; the log budget counts these lines.
pub(crate) const PANIC_TARGET: &str = "switchboard::panic";

/// The most bytes of a panic's message that its line quotes.
const MESSAGE_MAX_BYTES: usize = 512;

/// The most bytes of the source file's path that its line quotes.
const FILE_MAX_BYTES: usize = 256;

/// Replaces the standard panic hook with [`report`], for the whole process.
pub(super) fn install() {
    std::panic::set_hook(Box::new(report));
}

/// Counts the panic and logs it in one line: its message (escaped, cut to
/// [`MESSAGE_MAX_BYTES`]), where it happened, and the thread.
pub(crate) fn report(info: &PanicHookInfo<'_>) {
    metrics::count_panic();
    let message = quote(message_of(info.payload()), MESSAGE_MAX_BYTES);
    let location = info.location().map_or_else(
        || "unknown".to_owned(),
        |at| format!("{}:{}", quote(at.file(), FILE_MAX_BYTES), at.line()),
    );
    let thread = std::thread::current();
    let thread = quote(thread.name().unwrap_or("unnamed"), FILE_MAX_BYTES);
    tracing::error!(
        target: PANIC_TARGET,
        %location,
        %thread,
        "panic (the process goes on): {message}"
    );
}

/// The text a panic carries: `panic!`'s message, or a placeholder for a
/// payload that is not text.
fn message_of(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(a payload that is not text)"
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io::Write;
    use std::sync::{Arc, Mutex, Once, PoisonError};
    use std::time::Instant;

    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{Layer, fmt, registry};

    use super::*;
    use crate::daemon::logging::{LineBudget, budget_filter};

    thread_local! {
        /// True on a thread whose panics go to [`report`] (the test's);
        /// other tests' panics keep the standard hook.
        static REPORTED: Cell<bool> = const { Cell::new(false) };
    }

    /// One test at a time counts panics (the counter is the process's).
    static COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Installs the hook for the threads that ask for it: the rest of the
    /// test binary keeps the standard hook, which libtest captures.
    fn install_for_this_thread() {
        static INSTALLED: Once = Once::new();
        INSTALLED.call_once(|| {
            let standard = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if REPORTED.with(Cell::get) {
                    report(info);
                } else {
                    standard(info);
                }
            }));
        });
        REPORTED.with(|r| r.set(true));
    }

    /// The lines the daemon's log layers write, captured, with a budget of
    /// `per_second` lines.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            bytes.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Logs this thread's lines as the daemon does (text, budgeted), into
    /// the returned capture, until the guard is dropped.
    fn capture(per_second: u64) -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let budget = Arc::new(LineBudget::new(per_second));
        let layer = fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_filter(budget_filter(budget));
        let guard = tracing::subscriber::set_default(registry().with(layer));
        (captured, guard)
    }

    /// Panics in a task of this (current-thread) runtime with `message`.
    async fn panic_in_a_task(message: String) {
        let task = tokio::spawn(async move {
            if !message.is_empty() {
                panic!("{message}");
            }
        });
        let joined = task.await;
        assert!(
            joined.is_err_and(|e| e.is_panic()),
            "the task did not panic"
        );
    }

    #[tokio::test]
    async fn a_panic_in_a_task_is_one_bounded_line_and_one_count() {
        let _one_at_a_time = COUNTING.lock().await;
        install_for_this_thread();
        let (captured, _guard) = capture(100);
        let before = metrics::panics_counted();
        // A megabyte of message, with newlines and an escape sequence.
        let huge = format!("boom\n\x1b[2J{}", "x".repeat(1 << 20));
        panic_in_a_task(huge).await;
        assert_eq!(metrics::panics_counted(), before + 1);
        let lines = captured.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert!(line.len() < 2 * MESSAGE_MAX_BYTES, "{} bytes", line.len());
        assert!(line.contains("ERROR switchboard::panic"), "{line}");
        assert!(
            line.contains("panic (the process goes on): boom\\n\\u{1b}[2J"),
            "{line}"
        );
        assert!(line.contains(&format!("{}:", file!())), "{line}");
        assert!(!line.contains('\x1b'), "{line}");
        // And the counter is in every server's scrape.
        let scrape = String::from_utf8(metrics::Metrics::new().render()).expect("UTF-8");
        assert!(scrape.contains("# TYPE switchboard_panics_total counter"));
        assert!(scrape.contains(&format!("switchboard_panics_total {}", before + 1)));
    }

    #[tokio::test]
    async fn panic_lines_spend_the_log_budget() {
        let _one_at_a_time = COUNTING.lock().await;
        install_for_this_thread();
        const PER_SECOND: u64 = 5;
        const PANICS: u64 = 200;
        let (captured, _guard) = capture(PER_SECOND);
        let before = metrics::panics_counted();
        let started = Instant::now();
        for i in 0..PANICS {
            panic_in_a_task(format!("panic number {i}")).await;
        }
        // The budget's seconds that the panics spanned, at most.
        let seconds = started.elapsed().as_secs() + 2;
        let lines = captured.lines();
        assert!(!lines.is_empty(), "no panic was logged");
        assert!(
            lines.len() as u64 <= PER_SECOND * seconds,
            "{} lines of {PANICS} panics in {seconds} s",
            lines.len()
        );
        assert!(lines.iter().all(|l| l.contains("switchboard::panic")));
        // Every panic is counted, logged or not.
        assert_eq!(metrics::panics_counted(), before + PANICS);
    }
}
