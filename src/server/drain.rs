//! The drain of open connections, in two stages: first they are asked to
//! finish (handlers watch [`Drain::finishing`]), then, when the grace period
//! is over, the rest are dropped.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::timeout;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::open::OpenConnections;
use crate::conn::Signals;
use crate::conn::signals::ABORTED;
use crate::log_context::{self, LogContext};

/// The connections of a running server (or of one listener) and the two
/// stages of stopping them: first they are asked to finish (handlers watch
/// [`Drain::finishing`]), then, when the grace period is over, the rest are
/// dropped. A listener's drain is a [`Drain::child`] of the server's, so a
/// listener removed by a reload can be drained alone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Drain {
    tracker: TaskTracker,
    finish: CancellationToken,
    abort: CancellationToken,
    /// The server's tracker, which counts this listener's connections too.
    parent: Option<TaskTracker>,
    /// Its connections' signals, which its stages fire.
    open: Arc<OpenConnections>,
    /// The child drains' connections, which this drain's stages reach too.
    children: Arc<Mutex<Vec<Weak<OpenConnections>>>>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still open when the grace period ran out; they were dropped.
    pub abandoned: usize,
}

impl Drain {
    /// A drain with no connections yet.
    pub(crate) fn new() -> Self {
        Drain::default()
    }

    /// A drain for a part of the connections: it finishes and aborts with
    /// this one, and can also be finished and waited for on its own.
    pub(crate) fn child(&self) -> Drain {
        let child = Drain {
            tracker: TaskTracker::new(),
            finish: self.finish.child_token(),
            abort: self.abort.child_token(),
            parent: Some(self.tracker.clone()),
            open: Arc::default(),
            children: Arc::default(),
        };
        let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded by the listeners alive: those gone are pruned here.
        children.retain(|open| open.strong_count() > 0);
        children.push(Arc::downgrade(&child.open));
        if self.finish.is_cancelled() {
            child.open.shut_down();
        }
        if self.abort.is_cancelled() {
            child.open.abort();
        }
        child
    }

    /// Its connections, which a reload (and its stages) reach.
    pub(crate) fn open_connections(&self) -> &Arc<OpenConnections> {
        &self.open
    }

    /// Calls `fire` with its connections and its child drains'.
    fn reach(&self, fire: impl Fn(&OpenConnections)) {
        fire(&self.open);
        let children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        for open in children.iter().filter_map(Weak::upgrade) {
            fire(&open);
        }
    }

    /// Cancelled when connections are asked to finish.
    pub(crate) fn finishing(&self) -> CancellationToken {
        self.finish.clone()
    }

    /// Connections running now.
    pub(crate) fn open(&self) -> usize {
        self.tracker.len()
    }

    /// Runs a client connection's task in its log context; `signals` are
    /// its (registered in [`Drain::open_connections`]): it is dropped
    /// (closing its socket) if it is still running when the grace period
    /// ends. No waiter of its own for that: the drain fires its signals.
    pub(crate) fn spawn_connection(
        &self,
        connection: impl Future<Output = ()> + Send + 'static,
        context: LogContext,
        signals: Signals,
    ) {
        let task = log_context::scope(
            context,
            Droppable {
                connection,
                signals,
            },
        );
        match &self.parent {
            Some(parent) => self.tracker.spawn(parent.track_future(task)),
            None => self.tracker.spawn(task),
        };
    }

    /// Runs a task of the connections' (a late datagram reply) in its log
    /// context; it is dropped if it is still running when the grace period
    /// ends (and says so in its context, as a line of the traffic).
    pub(crate) fn spawn(
        &self,
        connection: impl Future<Output = ()> + Send + 'static,
        context: LogContext,
    ) {
        let task = log_context::scope(
            context,
            Abortable {
                connection,
                abort: self.abort.clone().cancelled_owned(),
            },
        );
        match &self.parent {
            Some(parent) => self.tracker.spawn(parent.track_future(task)),
            None => self.tracker.spawn(task),
        };
    }

    /// Asks every connection to finish and the accept loops to stop.
    pub(crate) fn begin(&self) {
        self.finish.cancel();
        self.reach(OpenConnections::shut_down);
    }

    /// Waits up to `grace` for the connections to finish, then drops the
    /// rest. Call after [`Drain::begin`] and after the accept loops returned.
    pub(crate) async fn wait(&self, grace: Duration) -> ShutdownReport {
        self.tracker.close();
        let open = self.tracker.len();
        if open > 0 {
            info!(connections = open, grace = %humantime::format_duration(grace), "waiting for connections to finish");
        }
        if timeout(grace, self.tracker.wait()).await.is_ok() {
            info!("all connections finished");
            return ShutdownReport { abandoned: 0 };
        }
        let abandoned = self.tracker.len();
        warn!(
            abandoned,
            "shutdown grace expired; dropping the remaining connections"
        );
        self.abort.cancel();
        self.reach(OpenConnections::abort);
        // Each task ends at its next poll; this wait is short but still bounded.
        let _ = timeout(ABORT_WAIT, self.tracker.wait()).await;
        ShutdownReport { abandoned }
    }
}

pin_project_lite::pin_project! {
    /// A connection's future, dropped when the grace period is over. A
    /// struct, not an `async` block: a block would store the connection's
    /// future twice (what it captured, and the running copy), and an idle
    /// connection's memory is mostly its task.
    struct Abortable<F> {
        #[pin]
        connection: F,
        #[pin]
        abort: WaitForCancellationFutureOwned,
    }
}

pin_project_lite::pin_project! {
    /// A client connection's future, dropped when its signals say the
    /// grace period is over ([`ABORTED`]).
    struct Droppable<F> {
        #[pin]
        connection: F,
        signals: Signals,
    }
}

impl<F: Future<Output = ()>> Future for Droppable<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.signals.poll_fired(cx) & ABORTED != 0 {
            warn!("dropped: the shutdown grace period is over");
            return Poll::Ready(());
        }
        this.connection.poll(cx)
    }
}

impl<F: Future<Output = ()>> Future for Abortable<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.connection.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if this.abort.poll(cx).is_ready() {
            warn!("dropped: the shutdown grace period is over");
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// How long dropped connections get to unwind after the grace period.
const ABORT_WAIT: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::log_capture::Logged;
    use crate::log_context::ContextKind;

    /// A late datagram reply's context.
    fn datagram() -> LogContext {
        LogContext::datagram("bot".into(), "127.0.0.3:53".parse().expect("an address"))
    }

    /// A late datagram reply still running at the end of the grace period
    /// says it is dropped in its own context: a line of the traffic, with
    /// its listener and peer, counted by the log budget.
    #[tokio::test(start_paused = true)]
    async fn a_late_reply_dropped_at_the_grace_end_says_so_in_its_context() {
        let logged = Logged::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(logged.clone()));
        let drain = Drain::new();
        drain.spawn(std::future::pending::<()>(), datagram());
        drain.begin();
        assert_eq!(drain.wait(Duration::from_secs(10)).await.abandoned, 1);
        let lines = logged.lines();
        let dropped: Vec<_> = lines
            .iter()
            .filter(|(message, _)| message.starts_with("dropped:"))
            .collect();
        assert_eq!(dropped.len(), 1, "{lines:?}");
        assert_eq!(dropped[0].1, Some(ContextKind::Datagram), "{lines:?}");
        // The drain's own lines are the daemon's.
        assert!(
            lines
                .iter()
                .filter(|(message, _)| !message.starts_with("dropped:"))
                .all(|(_, kind)| kind.is_none()),
            "{lines:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn finished_connections_end_the_wait_early() {
        let drain = Drain::new();
        let finishing = drain.finishing();
        drain.spawn(async move { finishing.cancelled().await }, datagram());
        drain.begin();
        let started = tokio::time::Instant::now();
        assert_eq!(drain.wait(Duration::from_secs(10)).await.abandoned, 0);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn connections_still_open_after_the_grace_are_dropped() {
        let drain = Drain::new();
        let (alive, mut dropped) = tokio::sync::oneshot::channel::<()>();
        // A connection that ignores the request to finish.
        let connection = async move {
            let _alive = alive;
            std::future::pending::<()>().await;
        };
        drain.spawn(connection, datagram());
        drain.begin();
        let report = drain.wait(Duration::from_secs(10)).await;
        assert_eq!(report.abandoned, 1);
        // Its task (and so its socket) is gone, not left running.
        assert!(matches!(
            dropped.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_drain_tells_its_listeners_connections_to_finish_then_drops_them() {
        use crate::conn::signals::SHUTDOWN;
        let server = Drain::new();
        let listener = server.child();
        let (alive, mut dropped) = tokio::sync::oneshot::channel::<()>();
        let (told, mut finish_seen) = tokio::sync::oneshot::channel::<()>();
        let signals = Signals::default();
        let registration = listener.open_connections().register(&signals);
        let own = signals.clone();
        // A connection that hears the request to finish, and ignores it.
        let connection = async move {
            let _alive = (alive, registration);
            own.any_of(SHUTDOWN).await;
            let _ = told.send(());
            std::future::pending::<()>().await;
        };
        listener.spawn_connection(
            connection,
            LogContext::connection("test".into(), None, 1),
            signals,
        );
        server.begin();
        let report = server.wait(Duration::from_secs(10)).await;
        assert!(finish_seen.try_recv().is_ok(), "not told to finish");
        assert_eq!(report.abandoned, 1);
        // Its task (and so its registration and socket) is gone.
        assert!(matches!(
            dropped.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ));
        assert_eq!(listener.open_connections().len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_child_drain_finishes_alone_and_its_connections_count_for_the_parent() {
        let server = Drain::new();
        let listener = server.child();
        let other = server.child();
        let (finished, mut listener_done) = tokio::sync::oneshot::channel::<()>();
        let finishing = listener.finishing();
        listener.spawn(
            async move {
                finishing.cancelled().await;
                let _ = finished.send(());
            },
            datagram(),
        );
        let other_finishing = other.finishing();
        other.spawn(async move { other_finishing.cancelled().await }, datagram());
        assert_eq!((server.open(), listener.open()), (2, 1));
        // Draining one listener leaves the rest of the server alone.
        listener.begin();
        assert_eq!(listener.wait(Duration::from_secs(10)).await.abandoned, 0);
        assert!(listener_done.try_recv().is_ok());
        assert!(!other.finishing().is_cancelled());
        assert_eq!(server.open(), 1);
        // The server's shutdown reaches the other listener's connections.
        server.begin();
        assert_eq!(server.wait(Duration::from_secs(10)).await.abandoned, 0);
        assert_eq!(other.open(), 0);
    }
}
