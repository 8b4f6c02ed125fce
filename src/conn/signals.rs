//! What the server tells an open connection from outside its task: a
//! reload's verdicts and the shutdown. Flags and one waker in one
//! allocation; the listener fires them (its registry of open connections,
//! `server::open`), and the connection's waits read them at each poll.
//! One waker is enough: a connection is one task, and every wait of it
//! registers the same waker. So no wait holds a waiter of its own (a
//! `Notified`, a cancellation future), and no firing takes a lock per
//! connection beyond the listener's own.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// The listener's settings were replaced by a reload: a request-response
/// protocol takes no further request; an untouched connection is
/// rerouted.
pub(crate) const RETIRED: u8 = 1;
/// The reloaded access lists no longer admit the client.
pub(crate) const DENIED: u8 = 2;
/// The server (or this listener) is shutting down: finish.
pub(crate) const SHUTDOWN: u8 = 4;
/// The shutdown's grace period is over: the connection's task is dropped.
pub(crate) const ABORTED: u8 = 8;

/// A connection's signals; clones share them (the listener's registry
/// keeps one, the connection another).
#[derive(Debug, Clone, Default)]
pub(crate) struct Signals {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// [`RETIRED`], [`DENIED`], [`SHUTDOWN`] and [`ABORTED`], once fired.
    fired: AtomicU8,
    /// The connection's task, woken when a signal is fired.
    waker: AtomicWaker,
    /// Who the client is, as the listener's access lists see it: set once
    /// admitted (a PROXY header may say who it is after the accept).
    source: OnceLock<Source>,
}

/// Who a connection's client is, as the access lists see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source {
    /// The client: the socket's peer, or the address a PROXY header gave.
    pub client: std::net::IpAddr,
    /// The address the listener's per-source limits count the client
    /// under: `client`, an IPv6 one cut to `source_ipv6_prefix`.
    pub counted_as: std::net::IpAddr,
    /// The balancer it came through, if any (subject to `deny` only).
    pub balancer: Option<std::net::IpAddr>,
    /// False for a balancer's own connection (its health checks): `allow`
    /// was not checked for it at accept, and is not after a reload.
    pub checked: bool,
}

impl Signals {
    /// Fires `signals` (any of [`RETIRED`], [`DENIED`], [`SHUTDOWN`],
    /// [`ABORTED`]) and
    /// wakes the connection's task. A denial retires too.
    pub(crate) fn fire(&self, signals: u8) {
        let signals = if signals & DENIED != 0 {
            signals | RETIRED
        } else {
            signals
        };
        self.state.fired.fetch_or(signals, Ordering::Release);
        self.state.waker.wake();
    }

    /// Takes the retirement back: the connection now serves the route the
    /// reload put in place (see `Connection::reroute`). The listener calls
    /// it under the lock its reloads fire under, so none is lost.
    pub(crate) fn renew(&self) {
        self.state.fired.fetch_and(!RETIRED, Ordering::AcqRel);
    }

    /// The signals fired so far.
    pub(crate) fn fired(&self) -> u8 {
        self.state.fired.load(Ordering::Acquire)
    }

    /// The signals fired so far, with the task of `cx` to be woken at the
    /// next one (registered before the flags are read: a signal fired
    /// between the two still wakes it).
    pub(crate) fn poll_fired(&self, cx: &mut Context<'_>) -> u8 {
        self.state.waker.register(cx.waker());
        self.fired()
    }

    /// Returns once one of `any_of` is fired: the signals fired then.
    pub(crate) async fn any_of(&self, any_of: u8) -> u8 {
        std::future::poll_fn(|cx| match self.poll_fired(cx) {
            fired if fired & any_of != 0 => Poll::Ready(fired),
            _ => Poll::Pending,
        })
        .await
    }

    /// Records who the client is (once; a second call changes nothing).
    pub(crate) fn set_source(&self, source: Source) {
        let _ = self.state.source.set(source);
    }

    /// Who the client is, once admitted.
    pub(crate) fn source(&self) -> Option<&Source> {
        self.state.source.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fired_signal_wakes_a_waiting_task_and_a_renewal_takes_back_only_the_retirement() {
        let signals = Signals::default();
        let waiting = tokio::spawn({
            let signals = signals.clone();
            async move { signals.any_of(SHUTDOWN).await }
        });
        tokio::task::yield_now().await;
        signals.fire(DENIED);
        assert_eq!(signals.fired(), RETIRED | DENIED);
        assert!(!waiting.is_finished());
        signals.fire(SHUTDOWN);
        let fired = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(fired, RETIRED | DENIED | SHUTDOWN);
        signals.renew();
        assert_eq!(signals.fired(), DENIED | SHUTDOWN);
    }
}
