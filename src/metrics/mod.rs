//! The server's own figures, kept in a Prometheus registry per server and
//! served by the `metrics` handler in the text exposition format (0.0.4).
//!
//! What costs what on the hot path: a connection resolves its listener's
//! counters once (when the listener's route is built), adds one to two of
//! them when it opens, and adds its totals (bytes, duration, close reason)
//! once, when it closes. Nothing is counted per read or write. Process
//! figures (descriptors, memory, CPU) are read at scrape time (`process`).

mod process;

use process::ProcessFigures;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The `Content-Type` of [`Metrics::render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the connection-duration buckets, in seconds: from a
/// connect-and-close to the two hours an idle bot chat may last.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0, 300.0, 1800.0, 7200.0,
];

/// Panics the panic hook caught since the process started: one count for
/// the process, shown by every server's registry.
static PANICS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "switchboard_panics_total",
        "Panics caught since the process started (each also logged in one line); the process kept serving.",
    )
    .expect("valid metric")
});

/// Counts one panic in `switchboard_panics_total` (the panic hook's).
pub(crate) fn count_panic() {
    PANICS.inc();
}

/// The panics counted so far.
#[cfg(test)]
pub(crate) fn panics_counted() -> u64 {
    PANICS.get()
}

/// Why a connection closed, as the `reason` label of
/// `switchboard_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed its side (or reset the connection).
    ClientClosed,
    /// The handler finished its work (a file, a listing, a scrape).
    Completed,
    /// The client said a farewell.
    Farewell,
    /// The server asked it to finish (shutdown, or its listener removed),
    /// or an HTTP connection's listener was reloaded with new settings.
    Shutdown,
    /// The client sent nothing, or read nothing, for the idle timeout.
    Idle,
    /// A limit refused it (a message longer than `max_message_bytes`).
    Limit,
    /// A message (or the first) was not complete in time.
    Slow,
    /// The handler refused the request (`ERR <reason>`).
    Refused,
    /// A file shrank while it was sent; the connection was reset.
    Truncated,
    /// A socket or file error on the server's side.
    Error,
    /// A reload's access lists no longer admit its client: it was told
    /// `ERR access denied` and closed.
    Denied,
    /// Still open when the shutdown grace ran out, or its task panicked,
    /// and dropped (reset).
    Dropped,
}

impl CloseReason {
    /// Every reason, in label order.
    pub(crate) const ALL: [CloseReason; 12] = [
        CloseReason::ClientClosed,
        CloseReason::Completed,
        CloseReason::Farewell,
        CloseReason::Shutdown,
        CloseReason::Idle,
        CloseReason::Limit,
        CloseReason::Slow,
        CloseReason::Refused,
        CloseReason::Truncated,
        CloseReason::Error,
        CloseReason::Denied,
        CloseReason::Dropped,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::Completed => "completed",
            CloseReason::Farewell => "farewell",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Idle => "idle",
            CloseReason::Limit => "limit",
            CloseReason::Slow => "slow",
            CloseReason::Refused => "refused",
            CloseReason::Truncated => "truncated",
            CloseReason::Error => "error",
            CloseReason::Denied => "denied",
            CloseReason::Dropped => "dropped",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Why a UDP listener dropped a datagram (or its reply), as the `reason`
/// label of `switchboard_datagrams_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// Longer than `max_datagram_bytes`.
    TooBig,
    /// The access lists do not let its sender in.
    Denied,
    /// Its source sends faster than `datagram_rate_per_source`.
    TooFast,
    /// Its reply was longer than it, and its source's reply budget
    /// (`reply_bytes_per_source`) did not hold the difference.
    ReplyBudget,
    /// Too many replies were still waiting for a history.
    Busy,
    /// The reply could not be sent (the socket's send buffer was full).
    SendFailed,
    /// The kernel dropped it: the socket's receive buffer was full.
    ReceiveBuffer,
}

impl DropReason {
    /// Every reason, in label order.
    pub(crate) const ALL: [DropReason; 7] = [
        DropReason::TooBig,
        DropReason::Denied,
        DropReason::TooFast,
        DropReason::ReplyBudget,
        DropReason::Busy,
        DropReason::SendFailed,
        DropReason::ReceiveBuffer,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            DropReason::TooBig => "too_big",
            DropReason::Denied => "denied",
            DropReason::TooFast => "too_fast",
            DropReason::ReplyBudget => "reply_budget",
            DropReason::Busy => "busy",
            DropReason::SendFailed => "send_failed",
            DropReason::ReceiveBuffer => "receive_buffer",
        }
    }

    /// Its place in [`DropReason::ALL`].
    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// The counters of a UDP listener, resolved once.
#[derive(Debug, Clone)]
pub(crate) struct DatagramMetrics {
    /// Datagrams received (dropped or not).
    pub received: IntCounter,
    /// Replies sent.
    pub sent: IntCounter,
    /// Bytes received.
    pub bytes_received: IntCounter,
    /// Bytes of replies sent.
    pub bytes_sent: IntCounter,
    /// Drops, by [`DropReason::index`].
    pub dropped: [IntCounter; DropReason::ALL.len()],
}

/// Every figure of one server. Shared (`Arc`) by its listeners; a reload
/// keeps it, so counters run on across reloads.
pub struct Metrics {
    registry: Registry,
    accepted: IntCounterVec,
    open: IntGaugeVec,
    closed: IntCounterVec,
    bytes_received: IntCounterVec,
    bytes_sent: IntCounterVec,
    duration: HistogramVec,
    messages_answered: IntCounterVec,
    files_sent: IntCounterVec,
    file_bytes_sent: IntCounterVec,
    file_cache_misses: IntCounterVec,
    send_budget_in_use: IntGaugeVec,
    error_replies: IntCounterVec,
    refused: IntCounterVec,
    datagrams_received: IntCounterVec,
    datagrams_sent: IntCounterVec,
    datagrams_dropped: IntCounterVec,
    reloads: IntCounterVec,
    tls_handshakes: IntCounterVec,
    tls_rotations: IntCounterVec,
    tls_expiry: IntGaugeVec,
    process: ProcessFigures,
    /// The (listener, handler) pairs of the config being served: the
    /// series of other pairs are removed once their connections are gone.
    live: Mutex<HashSet<(String, String)>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

const LISTENER_LABELS: &[&str] = &["listener", "handler"];

impl Metrics {
    /// A registry with every family registered and nothing counted yet.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counters = |name: &str, help: &str, extra: &[&str]| {
            let labels: Vec<&str> = LISTENER_LABELS.iter().chain(extra).copied().collect();
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), &labels).expect("valid metric"),
            )
        };
        let accepted = counters(
            "switchboard_connections_accepted_total",
            "Connections accepted.",
            &[],
        );
        let closed = counters(
            "switchboard_connections_closed_total",
            "Connections closed, by reason.",
            &["reason"],
        );
        let bytes_received = counters(
            "switchboard_received_bytes_total",
            "Bytes read from clients.",
            &[],
        );
        let bytes_sent = counters(
            "switchboard_sent_bytes_total",
            "Bytes written to clients.",
            &[],
        );
        let messages_answered = counters(
            "switchboard_messages_answered_total",
            "Messages a bot answered.",
            &[],
        );
        let files_sent = counters(
            "switchboard_files_sent_total",
            "Files a download listener sent in full.",
            &[],
        );
        let file_bytes_sent = counters(
            "switchboard_file_bytes_sent_total",
            "Bytes of files a download listener sent.",
            &[],
        );
        let file_cache_misses = counters(
            "switchboard_file_cache_misses_total",
            "File ranges that were not in the page cache, read on the blocking pool before they were sent.",
            &[],
        );
        let error_replies = counters(
            "switchboard_error_replies_total",
            "ERR replies sent to clients, by reason.",
            &["reason"],
        );
        let refused = counters(
            "switchboard_connections_refused_total",
            "Connections refused before any handler work (access lists, per-source limits), by reason.",
            &["reason"],
        );
        let datagrams_received = counters(
            "switchboard_datagrams_received_total",
            "Datagrams a UDP listener received (its bytes are in switchboard_received_bytes_total).",
            &[],
        );
        let datagrams_sent = counters(
            "switchboard_datagrams_sent_total",
            "Replies a UDP listener sent (their bytes are in switchboard_sent_bytes_total).",
            &[],
        );
        let datagrams_dropped = counters(
            "switchboard_datagrams_dropped_total",
            "Datagrams a UDP listener dropped, or whose reply it did not send, by reason.",
            &["reason"],
        );
        let tls_handshakes = counters(
            "switchboard_tls_handshakes_total",
            "TLS handshakes, by result: ok, or why one failed.",
            &["result"],
        );
        let tls_rotations = counters(
            "switchboard_tls_rotations_total",
            "Re-reads of a listener's certificate that served a new one (ok) or kept the old one (failed).",
            &["result"],
        );
        let tls_expiry = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "switchboard_tls_certificate_expiry_timestamp_seconds",
                    "When the certificate a TLS listener serves expires (seconds since the epoch).",
                ),
                LISTENER_LABELS,
            )
            .expect("valid metric"),
        );
        let send_budget_in_use = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "switchboard_send_budget_bytes_in_use",
                    "Bytes of a download listener's send_budget that its connections' grown send buffers hold now.",
                ),
                LISTENER_LABELS,
            )
            .expect("valid metric"),
        );
        let open = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("switchboard_connections_open", "Connections open now."),
                LISTENER_LABELS,
            )
            .expect("valid metric"),
        );
        let duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "switchboard_connection_duration_seconds",
                    "How long connections lasted, from accept to close.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                LISTENER_LABELS,
            )
            .expect("valid metric"),
        );
        let reloads = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "switchboard_reloads_total",
                    "Config reloads (SIGHUP), by result.",
                ),
                &["result"],
            )
            .expect("valid metric"),
        );
        // Both results from the start, so that a failure is a rate, not a new series.
        for result in ["ok", "failed"] {
            reloads.with_label_values(&[result]);
        }
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "switchboard_build_info",
                    "The running build: always 1, with its version as a label.",
                ),
                &["version"],
            )
            .expect("valid metric"),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        register(&registry, PANICS.clone());
        let process = ProcessFigures::register(&registry);
        Metrics {
            registry,
            accepted,
            open,
            closed,
            bytes_received,
            bytes_sent,
            duration,
            messages_answered,
            files_sent,
            file_bytes_sent,
            file_cache_misses,
            send_budget_in_use,
            error_replies,
            refused,
            datagrams_received,
            datagrams_sent,
            datagrams_dropped,
            reloads,
            tls_handshakes,
            tls_rotations,
            tls_expiry,
            process,
            live: Mutex::new(HashSet::new()),
        }
    }

    /// The counters of listener `name` running `handler`, resolved once.
    pub(crate) fn listener(self: &Arc<Self>, name: &str, handler: &str) -> Arc<ListenerMetrics> {
        let labels = [name, handler];
        let closed = CloseReason::ALL.map(|reason| {
            self.closed
                .with_label_values(&[name, handler, reason.label()])
        });
        Arc::new(ListenerMetrics {
            accepted: self.accepted.with_label_values(&labels),
            open: self.open.with_label_values(&labels),
            closed,
            bytes_received: self.bytes_received.with_label_values(&labels),
            bytes_sent: self.bytes_sent.with_label_values(&labels),
            duration: self.duration.with_label_values(&labels),
            labels: [name.to_owned(), handler.to_owned()],
            error_reasons: Mutex::new(Vec::new()),
            tls_results: Mutex::new(Vec::new()),
            metrics: self.clone(),
        })
    }

    /// The (listener, handler) pairs now served; see [`ListenerMetrics::forget`].
    pub(crate) fn set_live<'a>(&self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let pairs = pairs
            .into_iter()
            .map(|(name, handler)| (name.to_owned(), handler.to_owned()))
            .collect();
        *self.live.lock().unwrap_or_else(PoisonError::into_inner) = pairs;
    }

    /// Counts one applied (`ok`) or failed reload.
    pub(crate) fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.with_label_values(&[result]).inc();
    }

    /// Every figure in the text exposition format. Reads `/proc`: call it
    /// off the async workers.
    pub(crate) fn render(&self) -> Vec<u8> {
        self.process.refresh();
        let mut text = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut text) {
            // Only a write into `text` could fail, and a Vec takes every write.
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

pub(super) fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    if let Err(e) = registry.register(Box::new(collector.clone())) {
        // Names are fixed and distinct; a clash is a bug, not worth a crash.
        tracing::warn!(error = %e, "cannot register a metric");
    }
    collector
}

/// The counters of one listener (with its handler), for its connections.
pub(crate) struct ListenerMetrics {
    accepted: IntCounter,
    open: IntGauge,
    closed: [IntCounter; CloseReason::ALL.len()],
    bytes_received: IntCounter,
    bytes_sent: IntCounter,
    duration: Histogram,
    labels: [String; 2],
    /// The `reason`s of `switchboard_error_replies_total` it has used (a
    /// few of a fixed set), so that [`ListenerMetrics::forget`] finds them.
    error_reasons: Mutex<Vec<&'static str>>,
    /// The `result`s of `switchboard_tls_handshakes_total` it has used.
    tls_results: Mutex<Vec<&'static str>>,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for ListenerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerMetrics")
            .field("listener", &self.labels[0])
            .field("handler", &self.labels[1])
            .finish_non_exhaustive()
    }
}

impl ListenerMetrics {
    /// Counters that belong to no server, for unit tests of handlers.
    #[cfg(test)]
    pub(crate) fn detached() -> Arc<ListenerMetrics> {
        Arc::new(Metrics::new()).listener("test", "test")
    }

    /// A connection was accepted.
    pub(crate) fn opened(&self) {
        self.accepted.inc();
        self.open.inc();
    }

    /// A connection closed, with its totals.
    pub(crate) fn closed(
        &self,
        reason: CloseReason,
        bytes_received: u64,
        bytes_sent: u64,
        duration: Duration,
    ) {
        self.open.dec();
        self.closed[reason.index()].inc();
        self.bytes_received.inc_by(bytes_received);
        self.bytes_sent.inc_by(bytes_sent);
        self.duration.observe(duration.as_secs_f64());
    }

    /// A connection was refused before any handler work; `reason` is one
    /// of a fixed set of labels.
    pub(crate) fn refused(&self, reason: &'static str) {
        let [listener, handler] = &self.labels;
        self.metrics
            .refused
            .with_label_values(&[listener.as_str(), handler, reason])
            .inc();
    }

    /// An `ERR` reply was sent; `reason` is one of a fixed set of texts.
    pub(crate) fn error_reply(&self, reason: &'static str) {
        let [listener, handler] = &self.labels;
        self.metrics
            .error_replies
            .with_label_values(&[listener.as_str(), handler, reason])
            .inc();
        let mut used = self
            .error_reasons
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !used.contains(&reason) {
            used.push(reason);
        }
    }

    /// Its (listener, handler) labels.
    pub(crate) fn labels(&self) -> (&str, &str) {
        (&self.labels[0], &self.labels[1])
    }

    /// Removes this listener's series from the scrape, unless its
    /// (listener, handler) pair is served again: call it once a listener
    /// that a reload removed (or gave another handler) has no connections
    /// left, so that renamed and removed listeners do not pile up series.
    pub(crate) fn forget(&self) {
        let [listener, handler] = &self.labels;
        let live = self
            .metrics
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if live.contains(&(listener.clone(), handler.clone())) {
            return;
        }
        let m = &self.metrics;
        let labels = [listener.as_str(), handler.as_str()];
        // Absent series (never created) are not an error worth a word.
        for family in [
            &m.accepted,
            &m.bytes_received,
            &m.bytes_sent,
            &m.messages_answered,
            &m.files_sent,
            &m.file_bytes_sent,
            &m.file_cache_misses,
            &m.datagrams_received,
            &m.datagrams_sent,
        ] {
            let _ = family.remove_label_values(&labels);
        }
        let _ = m.open.remove_label_values(&labels);
        let _ = m.send_budget_in_use.remove_label_values(&labels);
        let _ = m.duration.remove_label_values(&labels);
        for reason in DropReason::ALL {
            let _ = m.datagrams_dropped.remove_label_values(&[
                listener.as_str(),
                handler,
                reason.label(),
            ]);
        }
        for result in self
            .tls_results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = m
                .tls_handshakes
                .remove_label_values(&[listener.as_str(), handler, result]);
        }
        for result in ["ok", "failed"] {
            let _ = m
                .tls_rotations
                .remove_label_values(&[listener.as_str(), handler, result]);
        }
        let _ = m.tls_expiry.remove_label_values(&labels);
        for reason in CloseReason::ALL {
            let _ = m
                .closed
                .remove_label_values(&[listener.as_str(), handler, reason.label()]);
        }
        for reason in self
            .error_reasons
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = m
                .error_replies
                .remove_label_values(&[listener.as_str(), handler, reason]);
        }
    }

    /// The counters of a UDP listener.
    pub(crate) fn datagrams(&self) -> DatagramMetrics {
        let m = &self.metrics;
        let [listener, handler] = &self.labels;
        DatagramMetrics {
            received: m.datagrams_received.with_label_values(&self.labels),
            sent: m.datagrams_sent.with_label_values(&self.labels),
            bytes_received: self.bytes_received.clone(),
            bytes_sent: self.bytes_sent.clone(),
            dropped: DropReason::ALL.map(|reason| {
                m.datagrams_dropped
                    .with_label_values(&[listener.as_str(), handler, reason.label()])
            }),
        }
    }

    /// The counter of messages a bot answered on this listener.
    pub(crate) fn messages_answered(&self) -> IntCounter {
        self.metrics
            .messages_answered
            .with_label_values(&self.labels)
    }

    /// The counters of files sent in full, and of their bytes.
    pub(crate) fn files_sent(&self) -> (IntCounter, IntCounter) {
        (
            self.metrics.files_sent.with_label_values(&self.labels),
            self.metrics.file_bytes_sent.with_label_values(&self.labels),
        )
    }

    /// The gauge of the bytes of the listener's send budget in use.
    pub(crate) fn send_budget_in_use(&self) -> IntGauge {
        self.metrics
            .send_budget_in_use
            .with_label_values(&self.labels)
    }

    /// `n` file ranges were read on the blocking pool before they were
    /// sent (not in the page cache). Nothing is created for none.
    pub(crate) fn file_cache_misses(&self, n: u64) {
        if n > 0 {
            self.metrics
                .file_cache_misses
                .with_label_values(&self.labels)
                .inc_by(n);
        }
    }

    /// A TLS handshake ended: `result` is `ok` or one of a fixed set of
    /// failure reasons.
    pub(crate) fn tls_handshake(&self, result: &'static str) {
        let [listener, handler] = &self.labels;
        self.metrics
            .tls_handshakes
            .with_label_values(&[listener.as_str(), handler, result])
            .inc();
        let mut used = self
            .tls_results
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !used.contains(&result) {
            used.push(result);
        }
    }

    /// A re-read of the certificate served a new one, or kept the old one.
    pub(crate) fn tls_rotation(&self, ok: bool) {
        let [listener, handler] = &self.labels;
        let result = if ok { "ok" } else { "failed" };
        // Both results exist once either does: a failure is a rate.
        for r in ["ok", "failed"] {
            let counter =
                self.metrics
                    .tls_rotations
                    .with_label_values(&[listener.as_str(), handler, r]);
            if r == result {
                counter.inc();
            }
        }
    }

    /// The expiry of the certificate now served (`None`: unknown).
    pub(crate) fn tls_certificate_expiry(&self, at: Option<i64>) {
        match at {
            Some(at) => self
                .metrics
                .tls_expiry
                .with_label_values(&self.labels)
                .set(at),
            None => {
                let _ = self
                    .metrics
                    .tls_expiry
                    .remove_label_values(&[self.labels[0].as_str(), self.labels[1].as_str()]);
            }
        }
    }

    /// The server's registry, for the `metrics` handler.
    pub(crate) fn server(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
