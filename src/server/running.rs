//! The listeners being served, and reloads, part two: applying a plan
//! (see `reload`) to them. Every new socket is bound before anything
//! changes, so a failed bind leaves the server as it was.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::admission::Sources;
use super::budget::{self, DescriptorBudget, ListenerBudget};
use super::datagram::{self, DatagramLoop};
use super::drain::Drain;
use super::limit::ConnectionLimit;
use super::listener::{AcceptLoop, Listener, Route};
use super::reload::{self, Parked, ReloadError, ReloadSummary, Running, SocketSource};
use super::{bound_listener, stopped};
use crate::config::{Config, ListenerConfig, ServerConfig, Transport};
use crate::history::{Histories, HistoryConfig, Registry};
use crate::metrics::Metrics;

/// The serving side of `Server::run`.
pub(super) struct RunState {
    drain: Drain,
    metrics: Arc<Metrics>,
    next_id: Arc<AtomicU64>,
    running: Vec<RunningListener>,
    /// The `[server]` table the process started with.
    started_with: ServerConfig,
    /// The `[server]` table of the config last applied.
    server_config: ServerConfig,
    /// Sockets from the service manager whose listener a reload removed or
    /// moved. systemd keeps its own copy open, so the port stays bound
    /// either way; they are kept for a later reload to claim again.
    parked: Vec<Arc<Listener>>,
    /// The descriptor budget's pool that every listener shares.
    descriptors: Arc<DescriptorBudget>,
    /// Where histories are opened, and reused across reloads.
    registry: Arc<Registry>,
    /// The histories of the config last applied.
    histories: Histories,
}

/// How long after the shutdown grace the counters of a listener that went
/// away are removed: its connections have been dropped by then.
const FORGET_AFTER_GRACE: Duration = Duration::from_secs(1);

/// The history each listener of `config` keeps, by listener name.
pub(super) fn wanted_histories(config: &Config) -> Vec<(String, HistoryConfig)> {
    (config.listeners.iter())
        .filter_map(|l| l.handler.history().map(|h| (l.name.clone(), h.clone())))
        .collect()
}

/// A count of descriptors as a pool size.
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// What a listener of a reloaded config is served with.
enum Next {
    /// The running listener at this index, kept with its socket.
    Keep(usize),
    /// A socket it does not serve yet.
    Serve(Arc<Listener>),
}

/// A listener being served.
struct RunningListener {
    /// Its current config (the socket's may be older: a kept socket).
    config: ListenerConfig,
    socket: Arc<Listener>,
    route: watch::Sender<Arc<Route>>,
    limit: Arc<ConnectionLimit>,
    /// Its per-source state (open connections, rate buckets).
    sources: Arc<Sources>,
    /// Its guaranteed share of the descriptor budget.
    own_descriptors: Arc<ConnectionLimit>,
    /// Its connections, a part of the server's.
    drain: Drain,
    /// Stops its accept loop (also stopped when `drain` finishes).
    stop_accepting: CancellationToken,
    /// The accept loop's task; taken when the loop is stopped.
    accepting: Option<JoinHandle<()>>,
    /// The accept loop, until the descriptor budget has been split: a loop
    /// started earlier could take its first descriptor from the wrong pool.
    pending_accept: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl RunState {
    /// Nothing served yet.
    pub(super) fn new(
        drain: Drain,
        metrics: Arc<Metrics>,
        server_config: ServerConfig,
        registry: Arc<Registry>,
        histories: Histories,
    ) -> Self {
        RunState {
            registry,
            histories,
            drain,
            metrics,
            next_id: Arc::new(AtomicU64::new(1)),
            running: Vec::new(),
            started_with: server_config.clone(),
            server_config,
            parked: Vec::new(),
            descriptors: Arc::new(DescriptorBudget::new()),
        }
    }

    /// Splits the descriptor budget among the listeners being served (at
    /// start and after every reload).
    pub(super) fn rebalance(&mut self) {
        let limit = budget::open_file_limit();
        let total = budget::connection_descriptors(limit, self.running.len());
        let wants: Vec<u64> = (self.running.iter())
            .map(|r| {
                if r.config.transport.is_udp() {
                    // One socket, no connections.
                    0
                } else {
                    r.config.max_connections as u64 * r.config.handler.descriptors_per_connection()
                }
            })
            .collect();
        let (shares, shared) = self.descriptors.split(total, &wants);
        for (running, share) in self.running.iter().zip(&shares) {
            running.own_descriptors.resize(to_usize(*share));
        }
        info!(
            open_file_limit = ?limit,
            for_connections = total,
            shared,
            guaranteed = ?shares,
            "descriptor budget"
        );
        for (running, want) in self.running.iter().zip(&wants) {
            if *want > total {
                warn!(
                    listener = running.config.name,
                    max_connections = running.config.max_connections,
                    open_file_limit = ?limit,
                    descriptors = total,
                    "the open-file limit is below what max_connections allows: this \
                     listener stops accepting (clients wait in the backlog) when the \
                     descriptor budget is used up (raise LimitNOFILE / ulimit -n)"
                );
            }
        }
        // Only now, with every pool sized, do new listeners start accepting.
        for running in &mut self.running {
            if let Some(accept) = running.pending_accept.take() {
                running.accepting = Some(tokio::spawn(accept));
            }
        }
    }

    /// Starts serving a listener bound at start.
    pub(super) fn serve_first(&mut self, listener: Listener) {
        let config = listener.config().clone();
        let running = self.serve_new(Arc::new(listener), &config, None);
        self.running.push(running);
        self.metrics.set_live(self.live_pairs());
    }

    /// The (listener, handler) pairs being served.
    fn live_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        (self.running.iter()).map(|r| (r.config.name.as_str(), r.config.handler.name()))
    }

    /// Listeners being served.
    pub(super) fn listener_count(&self) -> usize {
        self.running.len()
    }

    /// Waits for every accept loop to return (they were stopped by the
    /// server's drain); returns the shutdown grace of the config last applied.
    pub(super) async fn stop_accepting(&mut self) -> Duration {
        let accept_loops = (self.running.iter_mut())
            .filter_map(|r| r.accepting.take())
            .collect();
        stopped(accept_loops).await;
        self.server_config.shutdown_grace
    }

    /// Starts serving `socket` for `config`; `previous` is the listener it
    /// replaces (its accept loop already stopped), whose route, limit and
    /// connections it takes over.
    fn serve_new(
        &mut self,
        socket: Arc<Listener>,
        config: &ListenerConfig,
        previous: Option<RunningListener>,
    ) -> RunningListener {
        let (route, limit, sources, own_descriptors, drain) = match previous {
            Some(old) => {
                let route = Route::new(
                    config,
                    &self.metrics,
                    Some(&old.route.borrow()),
                    &self.histories,
                );
                old.drain
                    .open_connections()
                    .replace_route(&old.route, route);
                old.limit.resize(config.max_connections);
                (
                    old.route,
                    old.limit,
                    old.sources,
                    old.own_descriptors,
                    old.drain,
                )
            }
            None => (
                watch::Sender::new(Arc::new(Route::new(
                    config,
                    &self.metrics,
                    None,
                    &self.histories,
                ))),
                Arc::new(ConnectionLimit::new(config.max_connections)),
                Arc::new(Sources::default()),
                // Sized by the next rebalance.
                Arc::new(ConnectionLimit::new(0)),
                self.drain.child(),
            ),
        };
        let config = config.clone();
        let stop_accepting = drain.finishing().child_token();
        info!(listener = config.name, addr = %socket.local_addr(), handler = config.handler.name(), activated = socket.activated(), "listening");
        let span = info_span!("listener", listener = config.name);
        let accept: Pin<Box<dyn Future<Output = ()> + Send>> = if config.transport.is_udp() {
            let with = DatagramLoop {
                route: route.subscribe(),
                sources: sources.clone(),
                stop: stop_accepting.clone(),
                drain: drain.clone(),
            };
            Box::pin(datagram::receive_loop(socket.clone(), with))
        } else {
            let socket = socket.clone();
            let with = AcceptLoop {
                route: route.subscribe(),
                open: drain.open_connections().clone(),
                limit: limit.clone(),
                sources: sources.clone(),
                descriptors: ListenerBudget {
                    own: own_descriptors.clone(),
                    shared: self.descriptors.shared.clone(),
                },
                stop: stop_accepting.clone(),
                drain: drain.clone(),
                next_id: self.next_id.clone(),
            };
            Box::pin(async move {
                socket.accept_loop(with).await;
            })
        };
        let pending_accept: Option<Pin<Box<dyn Future<Output = ()> + Send>>> =
            Some(Box::pin(accept.instrument(span)));
        RunningListener {
            config,
            socket,
            route,
            limit,
            sources,
            own_descriptors,
            drain,
            stop_accepting,
            accepting: None,
            pending_accept,
        }
    }

    /// Applies a reloaded config: plans, binds every new address first (so
    /// that a failure changes nothing), then stops the listeners that leave
    /// their sockets and starts the new ones. Returns once the accept loops
    /// of removed and moved listeners have stopped (their sockets closed,
    /// unless another listener took them over or systemd holds them).
    pub(super) async fn reload(&mut self, config: Config) -> Result<ReloadSummary, ReloadError> {
        // The steps that can fail, before anything changes: open the new
        // histories (off the async workers: a SQLite file is read), then
        // bind the new sockets.
        let registry = self.registry.clone();
        let wanted = wanted_histories(&config);
        let opened = tokio::task::spawn_blocking(move || {
            registry.open(
                wanted
                    .iter()
                    .map(|(name, history)| (name.as_str(), history)),
            )
        })
        .await;
        let histories = match opened {
            Ok(histories) => histories?,
            // Logged and counted by the panic hook; the server serves on.
            Err(e) if e.is_panic() => return Err(ReloadError::Panicked),
            Err(_) => return Err(ReloadError::Stopped),
        };
        let running: Vec<Running<'_>> = (self.running.iter())
            .map(|r| Running {
                name: &r.config.name,
                bind: r.config.bind,
                addr: r.socket.local_addr(),
                activated: r.socket.activated(),
                udp: r.config.transport.is_udp(),
            })
            .collect();
        let parked: Vec<Parked<'_>> = (self.parked.iter())
            .map(|p| Parked {
                fd_name: p.fd_name(),
                addr: p.local_addr(),
                udp: p.config().transport.is_udp(),
            })
            .collect();
        let plan = reload::plan(&running, &parked, &config.listeners);

        let mut next = Vec::with_capacity(plan.sockets.len());
        for (source, new) in plan.sockets.iter().zip(&config.listeners) {
            next.push(match *source {
                SocketSource::Keep(i) => Next::Keep(i),
                SocketSource::TakeOver(i) => Next::Serve(self.running[i].socket.clone()),
                SocketSource::Unpark(j) => Next::Serve(self.parked[j].clone()),
                SocketSource::Bind => Next::Serve(Arc::new(Listener::bind(new)?)),
            });
        }

        // Every listener that leaves its socket stops accepting first, so
        // that a socket another listener takes over is never served by both.
        let mut parked_now = Vec::new();
        for (j, socket) in self.parked.drain(..).enumerate() {
            if !plan.unparks(j) {
                parked_now.push(socket);
            }
        }
        let mut stopping = Vec::new();
        for (i, leaving) in self.running.iter_mut().enumerate() {
            if plan.keeps(i) {
                continue;
            }
            leaving.stop_accepting.cancel();
            stopping.extend(leaving.accepting.take());
            if leaving.socket.activated() && !plan.takes_over(i) {
                warn!(
                    listener = leaving.config.name,
                    addr = %leaving.socket.local_addr(),
                    "this socket came from systemd, which keeps it open: the port stays \
                     bound, unserved, until a reload gives it to a listener again or it \
                     is removed from the socket unit"
                );
                parked_now.push(leaving.socket.clone());
            }
        }
        self.parked = parked_now;
        stopped(stopping).await;
        // Histories the new config no longer names close with the last
        // connection that uses them.
        self.histories = histories;
        self.registry.forget_memory_not_in(&self.histories);

        let before: Vec<_> = (self.running.iter())
            .map(|r| r.route.borrow().metrics().clone())
            .collect();
        let mut summary = ReloadSummary::default();
        let mut old: Vec<Option<RunningListener>> = std::mem::take(&mut self.running)
            .into_iter()
            .map(Some)
            .collect();
        let mut running = Vec::with_capacity(config.listeners.len());
        for (new, next) in config.listeners.iter().zip(next) {
            match next {
                Next::Keep(i) => {
                    let Some(mut kept) = old[i].take() else {
                        unreachable!("names are unique, so a listener is kept at most once")
                    };
                    if kept.config != *new {
                        kept.apply(new, &self.metrics, &self.histories);
                        summary.changed.push(new.name.clone());
                    } else {
                        // Unchanged, but its certificate may be renewed:
                        // read off the async workers, and not waited for
                        // beyond a bound (a hung file system must not hang
                        // the reload; the read goes on, and serves what it
                        // finds).
                        let route = kept.route.borrow().clone();
                        let read = tokio::task::spawn_blocking(move || route.reload_tls());
                        if tokio::time::timeout(TLS_REREAD_WAIT, read).await.is_err() {
                            warn!(
                                listener = new.name,
                                "the certificate's files are still being read; the reload goes on without waiting"
                            );
                        }
                    }
                    running.push(kept);
                }
                Next::Serve(socket) => {
                    let previous = old
                        .iter()
                        .position(|r| r.as_ref().is_some_and(|r| r.config.name == new.name))
                        .and_then(|i| old[i].take());
                    if previous.is_some() {
                        summary.rebound.push(new.name.clone());
                    } else {
                        summary.added.push(new.name.clone());
                    }
                    running.push(self.serve_new(socket, new, previous));
                }
            }
        }
        for removed in old.into_iter().flatten() {
            summary.removed.push(removed.config.name.clone());
            removed.retire(config.server.shutdown_grace, &self.descriptors);
        }
        self.running = running;
        self.rebalance();
        self.metrics.set_live(self.live_pairs());
        // The counters of a listener that is gone, or now runs another
        // handler, leave the scrape once its connections are gone (at the
        // latest when the grace has passed), unless it is back by then.
        let live: Vec<(&str, &str)> = self.live_pairs().collect();
        let gone_metrics: Vec<_> = (before.into_iter())
            .filter(|m| !live.contains(&m.labels()))
            .collect();
        let grace = config.server.shutdown_grace;
        for metrics in gone_metrics {
            tokio::spawn(async move {
                tokio::time::sleep(grace + FORGET_AFTER_GRACE).await;
                metrics.forget();
            });
        }
        summary.needs_restart = self.started_with.restart_keys(&config.server);
        self.server_config = config.server;
        summary.listeners = (self.running.iter())
            .map(|r| bound_listener(&r.config, &r.socket))
            .collect();
        Ok(summary)
    }
}

/// How long a reload waits for an unchanged TLS listener's certificate
/// files to be read again.
const TLS_REREAD_WAIT: Duration = Duration::from_secs(5);

impl RunningListener {
    /// New settings for the connections accepted from now on.
    fn apply(&mut self, new: &ListenerConfig, metrics: &Arc<Metrics>, histories: &Histories) {
        let route = Route::new(new, metrics, Some(&self.route.borrow()), histories);
        self.drain
            .open_connections()
            .replace_route(&self.route, route);
        self.limit.resize(new.max_connections);
        if let Transport::Udp(udp) = &new.transport {
            let size = udp.receive_buffer_bytes;
            let before = match &self.config.transport {
                Transport::Udp(old) => old.receive_buffer_bytes,
                Transport::Tcp => None,
            };
            if let (Some(size), true) = (size, size != before)
                && let Err(e) = self.socket.set_receive_buffer(size)
            {
                warn!(listener = new.name, error = %e, "cannot change the receive buffer");
            }
        }
        if new.backlog != self.config.backlog {
            if self.socket.activated() {
                info!(
                    listener = new.name,
                    "backlog not changed: the socket came from systemd (its unit's Backlog= applies)"
                );
            } else if let Err(e) = self.socket.set_backlog(new.backlog) {
                warn!(listener = new.name, error = %e, "cannot change the listen backlog");
            }
        }
        self.config = new.clone();
    }

    /// Drains this listener's connections (its accept loop is stopped):
    /// they are asked to finish now and dropped after `grace`. The
    /// descriptors they hold of its share stay out of `budget` until then.
    fn retire(self, grace: Duration, budget: &Arc<DescriptorBudget>) {
        self.drain.begin();
        let span = info_span!("listener", listener = self.config.name);
        let drain = self.drain;
        let held = self.own_descriptors.in_use() as u64;
        budget.retiring(held);
        let budget = Arc::clone(budget);
        tokio::spawn(
            async move {
                drain.wait(grace).await;
                budget.retired(held);
            }
            .instrument(span),
        );
    }
}
