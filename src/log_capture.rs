//! Test support: what the log's tests capture (the bytes a fmt layer
//! writes, the message of each line), shared by the tests of the log's
//! format, its budget and the connections' contexts.

use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// The bytes written by a fmt layer, shared with the test.
#[derive(Clone, Default)]
pub(crate) struct Lines(Arc<Mutex<Vec<u8>>>);

impl Lines {
    /// What was written so far, as text.
    pub(crate) fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8(bytes).expect("utf-8 lines")
    }
}

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

/// The `message` field of a line, as `{:?}` writes it.
pub(crate) fn message_of(event: &tracing::Event<'_>) -> String {
    struct Message(String);
    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }
    let mut message = Message(String::new());
    event.record(&mut message);
    message.0
}

/// A line seen by [`Logged`]: its message, and the context it was written in.
pub(crate) type Line = (String, Option<crate::log_context::ContextKind>);

/// A layer that keeps each line's message and context.
#[derive(Clone, Default)]
pub(crate) struct Logged(Arc<Mutex<Vec<Line>>>);

impl Logged {
    /// The lines seen so far.
    pub(crate) fn lines(&self) -> Vec<Line> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Logged {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let kind = crate::log_context::with_current(crate::log_context::LogContext::kind);
        let line = (message_of(event), kind);
        if let Ok(mut lines) = self.0.lock() {
            lines.push(line);
        }
    }
}
