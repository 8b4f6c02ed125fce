//! A listener's open connections, as the listener reaches them from
//! outside their tasks: a reload retires them (and denies those the new
//! access lists no longer admit), a shutdown tells them to finish. One
//! entry per open connection, added at its accept and removed when its
//! task ends, so it is bounded by the connections the listener lets in;
//! the lock is taken at those two moments and by the listener's firing,
//! never per message.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use super::listener::Route;
use crate::config::Access;
use crate::conn::Signals;
use crate::conn::signals::{ABORTED, DENIED, RETIRED, SHUTDOWN, Source};

/// A listener's open connections.
#[derive(Debug, Default)]
pub(crate) struct OpenConnections {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The open connections' signals; `None` is a free slot.
    slots: Vec<Option<Signals>>,
    /// The free slots.
    free: Vec<usize>,
    /// Fired at every connection added from now on: [`SHUTDOWN`] once
    /// [`OpenConnections::shut_down`] was called, [`ABORTED`] once
    /// [`OpenConnections::abort`] was.
    fired_at_open: u8,
}

/// A connection's place in its listener's [`OpenConnections`], given up
/// when dropped (its task ended).
#[derive(Debug)]
pub(crate) struct Registration {
    open: Arc<OpenConnections>,
    slot: usize,
}

impl OpenConnections {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under this lock panics midway; a poisoned lock's state
        // is whole.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a connection; told at once if the listener is shutting down.
    pub(crate) fn register(self: &Arc<Self>, signals: &Signals) -> Registration {
        let mut inner = self.lock();
        if inner.fired_at_open != 0 {
            signals.fire(inner.fired_at_open);
        }
        let slot = match inner.free.pop() {
            Some(slot) => {
                inner.slots[slot] = Some(signals.clone());
                slot
            }
            None => {
                inner.slots.push(Some(signals.clone()));
                inner.slots.len() - 1
            }
        };
        Registration {
            open: Arc::clone(self),
            slot,
        }
    }

    /// Connections open now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let inner = self.lock();
        inner.slots.len() - inner.free.len()
    }

    /// Tells every open connection (and every one added from now on) to
    /// finish.
    pub(crate) fn shut_down(&self) {
        self.fire_all(SHUTDOWN);
    }

    /// Drops every open connection's task (and every one added from now
    /// on): the shutdown's grace period is over.
    pub(crate) fn abort(&self) {
        self.fire_all(SHUTDOWN | ABORTED);
    }

    fn fire_all(&self, signal: u8) {
        let mut inner = self.lock();
        inner.fired_at_open |= signal;
        for signals in inner.slots.iter().flatten() {
            signals.fire(signal);
        }
    }

    /// Puts `route` in place of the listener's route, and under the same
    /// lock retires every open connection (they were accepted under the
    /// route replaced), denying those whose client `route`'s access lists
    /// no longer admit. Under the lock: a connection rerouted meanwhile
    /// ([`OpenConnections::reroute`]) sees either the old route and this
    /// retirement, or the new route without it.
    pub(crate) fn replace_route(&self, routes: &watch::Sender<Arc<Route>>, route: Route) {
        let inner = self.lock();
        let access = route.access.clone();
        routes.send_replace(Arc::new(route));
        for signals in inner.slots.iter().flatten() {
            match signals.source() {
                Some(source) if !admitted_by(source, &access) => {
                    tracing::debug!(peer = %source.client, "a reload denied this client's address");
                    signals.fire(DENIED);
                }
                _ => signals.fire(RETIRED),
            }
        }
    }

    /// The listener's route now, for a connection retired before its
    /// first byte: it is served under that route from now on, so its
    /// retirement is taken back (under the lock a reload fires under).
    pub(crate) fn reroute(
        &self,
        routes: &watch::Receiver<Arc<Route>>,
        signals: &Signals,
    ) -> Arc<Route> {
        let _inner = self.lock();
        signals.renew();
        routes.borrow().clone()
    }

    /// Records who a connection's client is, once admitted; denies it at
    /// once if a reload since its accept no longer admits it.
    pub(crate) fn admitted(
        &self,
        routes: &watch::Receiver<Arc<Route>>,
        signals: &Signals,
        source: Source,
    ) {
        let _inner = self.lock();
        signals.set_source(source);
        if signals.fired() & RETIRED != 0 && !admitted_by(&source, &routes.borrow().access) {
            signals.fire(DENIED);
        }
    }
}

impl Registration {
    /// The listener's open connections it is one of.
    pub(crate) fn open(&self) -> &OpenConnections {
        &self.open
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.open.lock();
        if let Some(entry) = inner.slots.get_mut(self.slot) {
            *entry = None;
            inner.free.push(self.slot);
        }
    }
}

/// True when `access` lets `source` in, as the accept did.
fn admitted_by(source: &Source, access: &Access) -> bool {
    let balancer_denied = source.balancer.is_some_and(|b| access.denies(b));
    let client_admitted = if source.checked {
        access.admits(source.client)
    } else {
        !access.denies(source.client)
    };
    !balancer_denied && client_admitted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::history::Histories;
    use crate::metrics::Metrics;

    /// An echo listener's route, denying `deny` (TOML strings).
    fn route(deny: &str) -> Route {
        let toml = format!(
            "[[listener]]\nname = \"e\"\nbind = \"127.0.0.1:0\"\nhandler = \"echo\"\ndeny = [{deny}]\n"
        );
        let config = Config::from_toml(&toml, "t.toml").expect("config");
        let metrics = Arc::new(Metrics::new());
        Route::new(&config.listeners[0], &metrics, None, &Histories::default())
    }

    fn client(ip: &str) -> Source {
        Source {
            client: ip.parse().expect("address"),
            counted_as: ip.parse().expect("address"),
            balancer: None,
            checked: true,
        }
    }

    #[test]
    fn a_reload_retires_every_connection_and_denies_who_it_no_longer_admits_even_mid_header() {
        let open = Arc::new(OpenConnections::default());
        let (routes, receiver) = watch::channel(Arc::new(route("")));
        let denied = Signals::default();
        let _denied = open.register(&denied);
        open.admitted(&receiver, &denied, client("10.0.0.1"));
        let kept = Signals::default();
        let _kept = open.register(&kept);
        open.admitted(&receiver, &kept, client("10.0.0.2"));
        // Still reading its PROXY header: who it is is not known yet.
        let pending = Signals::default();
        let _pending = open.register(&pending);
        open.replace_route(&routes, route("\"10.0.0.1\", \"10.0.0.3\""));
        assert_eq!(denied.fired(), RETIRED | DENIED);
        assert_eq!(kept.fired(), RETIRED);
        assert_eq!(pending.fired(), RETIRED);
        // Its header names a client the reload denies.
        open.admitted(&receiver, &pending, client("10.0.0.3"));
        assert_eq!(pending.fired(), RETIRED | DENIED);
        // Rerouted: the new route, and the retirement taken back.
        let now = open.reroute(&receiver, &kept);
        assert!(Arc::ptr_eq(&now, &routes.borrow()));
        assert_eq!(kept.fired(), 0);
    }

    #[test]
    fn a_closed_connection_leaves_and_its_slot_is_reused() {
        let open = Arc::new(OpenConnections::default());
        let a = open.register(&Signals::default());
        let b = open.register(&Signals::default());
        assert_eq!(open.len(), 2);
        drop(a);
        assert_eq!(open.len(), 1);
        let c = open.register(&Signals::default());
        assert_eq!(open.len(), 2);
        // Bounded by the connections open, not by those ever opened.
        assert_eq!(open.lock().slots.len(), 2);
        drop((b, c));
        assert_eq!(open.len(), 0);
    }

    #[test]
    fn a_shutdown_reaches_open_connections_and_later_ones_only_of_its_listener() {
        let open = Arc::new(OpenConnections::default());
        let other = Arc::new(OpenConnections::default());
        let before = Signals::default();
        let _before = open.register(&before);
        let elsewhere = Signals::default();
        let _elsewhere = other.register(&elsewhere);
        open.shut_down();
        assert_eq!(before.fired(), SHUTDOWN);
        let after = Signals::default();
        let _after = open.register(&after);
        assert_eq!(after.fired(), SHUTDOWN);
        assert_eq!(elsewhere.fired(), 0);
    }
}
