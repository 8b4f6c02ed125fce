//! The server: binds (or takes from the service manager) every listener of a
//! config before serving any, runs their accept loops on one runtime,
//! applies reloaded configs without dropping live connections, and on
//! shutdown stops accepting, tells every connection to finish and waits for
//! them up to the grace period.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{Config, HandlerKind, ListenerConfig, ServerConfig};
use crate::limits::ConnectionLimit;
use crate::listener::{BindError, Listener, Route};
use crate::shutdown::{Drain, ShutdownReport};
use crate::systemd::{ActivatedSockets, ActivationError};

/// Every listener of a config, bound and ready to serve.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<Listener>,
    server_config: ServerConfig,
    drain: Drain,
    listener_count: Arc<AtomicUsize>,
    requests: mpsc::Receiver<ReloadRequest>,
    /// Kept so the request channel never closes while the server runs.
    handle: ServerHandle,
}

/// A bound listener, as shown to the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundListener {
    /// The listener's name.
    pub name: String,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its handler.
    pub handler: HandlerKind,
    /// True when the socket came from the service manager.
    pub activated: bool,
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind its address.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The sockets passed by the service manager do not fit the config.
    #[error(transparent)]
    Activation(#[from] ActivationError),
}

/// Asks a running server to reload, and reads its status.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    requests: mpsc::Sender<ReloadRequest>,
    listeners: Arc<AtomicUsize>,
    drain: Drain,
}

/// The live numbers of a running server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerStatus {
    /// Listeners accepting clients.
    pub listeners: usize,
    /// Connections open.
    pub connections: usize,
}

impl fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} listener(s), {} connection(s) open",
            self.listeners, self.connections
        )
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Listeners new in the config, now serving.
    pub added: Vec<String>,
    /// Listeners gone from the config: no longer accepting, their
    /// connections asked to finish.
    pub removed: Vec<String>,
    /// Listeners whose settings changed; new connections get the new ones.
    pub changed: Vec<String>,
    /// Listeners moved to a new address (their open connections stay).
    pub rebound: Vec<String>,
    /// `[server]` keys that changed but apply only at the next start.
    pub needs_restart: Vec<&'static str>,
    /// Every listener now serving, in config order.
    pub listeners: Vec<BoundListener>,
}

impl ReloadSummary {
    /// True when the reload changed nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.rebound.is_empty()
    }
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            f.write_str("no listener changed")?;
        } else {
            let parts = [
                ("added", &self.added),
                ("removed", &self.removed),
                ("changed", &self.changed),
                ("rebound", &self.rebound),
            ];
            let mut first = true;
            for (what, names) in parts.iter().filter(|(_, names)| !names.is_empty()) {
                if !first {
                    f.write_str("; ")?;
                }
                first = false;
                write!(f, "{what}: {}", names.join(", "))?;
            }
        }
        if !self.needs_restart.is_empty() {
            write!(
                f,
                "; needs a restart to apply: {}",
                self.needs_restart.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A new or moved listener could not bind its address.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Stopped,
}

struct ReloadRequest {
    config: Config,
    reply: oneshot::Sender<Result<ReloadSummary, ReloadError>>,
}

impl fmt::Debug for ReloadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadRequest").finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// Applies `config` to the running server: new listeners are bound and
    /// served, removed ones stop accepting and their connections are asked
    /// to finish (and dropped after the grace period), changed settings
    /// apply to new connections, and open connections of kept listeners are
    /// not touched. If any new address cannot be bound, nothing changes.
    pub async fn reload(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(ReloadRequest { config, reply })
            .await
            .map_err(|_| ReloadError::Stopped)?;
        answer.await.map_err(|_| ReloadError::Stopped)?
    }

    /// Listeners and open connections now.
    pub fn status(&self) -> ServerStatus {
        ServerStatus {
            listeners: self.listeners.load(Ordering::Relaxed),
            connections: self.drain.open(),
        }
    }
}

impl Server {
    /// Binds every listener; the first that fails fails the start, by name.
    /// Must be called inside a tokio runtime.
    pub fn bind(config: &Config) -> Result<Server, BindError> {
        let listeners = config
            .listeners
            .iter()
            .map(Listener::bind)
            .collect::<Result<_, _>>()?;
        Ok(Self::serving(listeners, config))
    }

    /// Like [`Server::bind`], but a listener first takes the socket that the
    /// service manager passed for it (named after it, else on its address).
    /// A passed socket that no listener takes is an error.
    pub fn start(config: &Config, activated: &mut ActivatedSockets) -> Result<Server, StartError> {
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let bound = match activated.claim(listener) {
                Some(claimed) => Listener::adopt(claimed.socket, listener, claimed.fd_name)
                    .map_err(|source| BindError {
                        name: listener.name.clone(),
                        addr: claimed.addr,
                        source,
                    })?,
                None => Listener::bind(listener)?,
            };
            listeners.push(bound);
        }
        activated.all_claimed()?;
        Ok(Self::serving(listeners, config))
    }

    fn serving(listeners: Vec<Listener>, config: &Config) -> Server {
        let drain = Drain::new();
        let listener_count = Arc::new(AtomicUsize::new(listeners.len()));
        let (sender, requests) = mpsc::channel(1);
        let handle = ServerHandle {
            requests: sender,
            listeners: listener_count.clone(),
            drain: drain.clone(),
        };
        Server {
            listeners,
            server_config: config.server.clone(),
            drain,
            listener_count,
            requests,
            handle,
        }
    }

    /// The bound listeners, in config order.
    pub fn listeners(&self) -> Vec<BoundListener> {
        (self.listeners.iter())
            .map(|l| bound_listener(l.config(), l))
            .collect()
    }

    /// The address of the listener called `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.name() == name)
            .map(Listener::local_addr)
    }

    /// A handle to reload the running server and read its status.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serves until `shutdown` completes, applying reloads sent through
    /// [`Server::handle`], then drains: listeners stop accepting,
    /// connections are told to finish (bots say goodbye, downloads finish
    /// their file), and the server waits up to the grace period, then drops
    /// the connections still open.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> ShutdownReport {
        let mut state = RunState {
            drain: self.drain.clone(),
            next_id: Arc::new(AtomicU64::new(1)),
            running: Vec::new(),
            started_with: self.server_config.clone(),
            server_config: self.server_config.clone(),
            parked: Vec::new(),
        };
        for listener in std::mem::take(&mut self.listeners) {
            let config = listener.config().clone();
            let running = state.serve_new(Arc::new(listener), &config, None);
            state.running.push(running);
        }
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(request) = self.requests.recv() => {
                    let result = state.reload(request.config).await.map_err(ReloadError::from);
                    self.listener_count.store(state.running.len(), Ordering::Relaxed);
                    let _ = request.reply.send(result);
                }
            }
        }
        state.drain.begin();
        let accept_loops = (state.running.iter_mut())
            .filter_map(|r| r.accepting.take())
            .collect();
        stopped(accept_loops).await;
        drop(self.handle);
        state.drain.wait(state.server_config.shutdown_grace).await
    }
}

/// How `socket`, serving `config`, is shown to the operator.
fn bound_listener(config: &ListenerConfig, socket: &Listener) -> BoundListener {
    BoundListener {
        name: config.name.clone(),
        addr: socket.local_addr(),
        handler: config.handler.kind(),
        activated: socket.activated(),
    }
}

/// The serving side of [`Server::run`].
struct RunState {
    drain: Drain,
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
}

/// A listener being served.
struct RunningListener {
    /// Its current config (the socket's may be older: a kept socket).
    config: ListenerConfig,
    socket: Arc<Listener>,
    route: watch::Sender<Arc<Route>>,
    limit: Arc<ConnectionLimit>,
    /// Its connections, a part of the server's.
    drain: Drain,
    /// Stops its accept loop (also stopped when `drain` finishes).
    stop_accepting: CancellationToken,
    /// The accept loop's task; taken when the loop is stopped.
    accepting: Option<JoinHandle<()>>,
}

/// Where a listener of a reloaded config gets its socket.
enum Socket {
    /// Keeps the socket of the running listener at this index.
    Kept(usize),
    /// A socket it does not have yet: newly bound, taken over from a
    /// listener that leaves its address, or parked.
    New(Arc<Listener>),
}

impl RunState {
    /// Starts serving `socket` for `config`; `previous` is the listener it
    /// replaces (its accept loop already stopped), whose route, limit and
    /// connections it takes over.
    fn serve_new(
        &mut self,
        socket: Arc<Listener>,
        config: &ListenerConfig,
        previous: Option<RunningListener>,
    ) -> RunningListener {
        let (route, limit, drain) = match previous {
            Some(old) => {
                let route = Route::new(config, Some(&old.route.borrow()));
                old.route.send_replace(Arc::new(route));
                old.limit.resize(config.max_connections);
                (old.route, old.limit, old.drain)
            }
            None => (
                watch::Sender::new(Arc::new(Route::new(config, None))),
                Arc::new(ConnectionLimit::new(config.max_connections)),
                self.drain.child(),
            ),
        };
        let config = config.clone();
        let stop_accepting = drain.finishing().child_token();
        info!(listener = config.name, addr = %socket.local_addr(), handler = config.handler.kind().name(), activated = socket.activated(), "listening");
        let span = info_span!("listener", listener = config.name);
        let accept = {
            let socket = socket.clone();
            let route = route.subscribe();
            let limit = limit.clone();
            let stop = stop_accepting.clone();
            let drain = drain.clone();
            let next_id = self.next_id.clone();
            async move {
                socket.accept_loop(route, limit, stop, drain, next_id).await;
            }
        };
        let accepting = Some(tokio::spawn(accept.instrument(span)));
        RunningListener {
            config,
            socket,
            route,
            limit,
            drain,
            stop_accepting,
            accepting,
        }
    }

    /// Applies a reloaded config; binds every new address first, so that a
    /// failure changes nothing. Returns once the accept loops of removed and
    /// moved listeners have stopped (their sockets closed, unless another
    /// listener took them over or systemd holds them).
    async fn reload(&mut self, config: Config) -> Result<ReloadSummary, BindError> {
        let mut summary = ReloadSummary::default();
        // Which socket each listener of the new config gets.
        let mut plan = Vec::with_capacity(config.listeners.len());
        let mut taken: Vec<Arc<Listener>> = Vec::new();
        for new in &config.listeners {
            let same_name = self.running.iter().position(|r| r.config.name == new.name);
            plan.push(match same_name {
                Some(i) if self.running[i].keeps_address(new) => Socket::Kept(i),
                _ => {
                    let socket = self.socket_for(new, &config, &taken)?;
                    taken.push(socket.clone());
                    Socket::New(socket)
                }
            });
        }

        // Nothing can fail from here on. First every listener that leaves
        // its socket stops accepting, so that a socket another listener
        // takes over is never served by both.
        let mut old: Vec<Option<RunningListener>> = std::mem::take(&mut self.running)
            .into_iter()
            .map(Some)
            .collect();
        let kept: Vec<usize> = plan
            .iter()
            .filter_map(|s| match s {
                Socket::Kept(i) => Some(*i),
                Socket::New(_) => None,
            })
            .collect();
        self.parked
            .retain(|parked| !taken.iter().any(|t| Arc::ptr_eq(t, parked)));
        let mut stopping = Vec::new();
        for (i, leaving) in old.iter_mut().enumerate() {
            let Some(leaving) = leaving.as_mut().filter(|_| !kept.contains(&i)) else {
                continue;
            };
            leaving.stop_accepting.cancel();
            stopping.extend(leaving.accepting.take());
            let taken_over = taken.iter().any(|t| Arc::ptr_eq(t, &leaving.socket));
            if leaving.socket.activated() && !taken_over {
                warn!(
                    listener = leaving.config.name,
                    addr = %leaving.socket.local_addr(),
                    "this socket came from systemd, which keeps it open: the port stays \
                     bound, unserved, until a reload gives it to a listener again or it \
                     is removed from the socket unit"
                );
                self.parked.push(leaving.socket.clone());
            }
        }
        stopped(stopping).await;

        let mut running = Vec::with_capacity(config.listeners.len());
        for (new, socket) in config.listeners.iter().zip(plan) {
            match socket {
                Socket::Kept(i) => {
                    let Some(mut kept) = old[i].take() else {
                        unreachable!("names are unique, so a listener is kept at most once")
                    };
                    if kept.config != *new {
                        kept.apply(new);
                        summary.changed.push(new.name.clone());
                    }
                    running.push(kept);
                }
                Socket::New(socket) => {
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
            removed.retire(config.server.shutdown_grace);
        }
        self.running = running;
        summary.needs_restart = restart_keys(&self.started_with, &config.server);
        self.server_config = config.server;
        summary.listeners = self
            .running
            .iter()
            .map(|r| bound_listener(&r.config, &r.socket))
            .collect();
        Ok(summary)
    }

    /// A socket for a listener that cannot keep its own, none of `taken`: a
    /// parked socket from systemd named after it or on its address; else the
    /// socket on its address of a running listener that leaves it (two
    /// sockets cannot listen on one address); else a new one.
    fn socket_for(
        &self,
        new: &ListenerConfig,
        config: &Config,
        taken: &[Arc<Listener>],
    ) -> Result<Arc<Listener>, BindError> {
        let free = |socket: &&Arc<Listener>| !taken.iter().any(|t| Arc::ptr_eq(t, socket));
        let parked = (self.parked.iter().filter(free))
            .find(|p| p.fd_name() == Some(new.name.as_str()))
            .or_else(|| (self.parked.iter().filter(free)).find(|p| p.local_addr() == new.bind));
        if let Some(parked) = parked {
            return Ok(parked.clone());
        }
        let left = self.running.iter().find(|r| {
            new.bind.port() != 0
                && r.listens_on(new.bind)
                && free(&&r.socket)
                && !config
                    .listeners
                    .iter()
                    .any(|n| n.name == r.config.name && r.keeps_address(n))
        });
        match left {
            Some(r) => Ok(r.socket.clone()),
            None => Ok(Arc::new(Listener::bind(new)?)),
        }
    }
}

impl RunningListener {
    /// True when `new` (its config after a reload) can keep this socket:
    /// the same `bind`, or the address systemd's socket actually has.
    fn keeps_address(&self, new: &ListenerConfig) -> bool {
        self.config.bind == new.bind
            || (self.socket.activated() && self.socket.local_addr() == new.bind)
    }

    /// True when this listener's socket is the one for `addr`.
    fn listens_on(&self, addr: SocketAddr) -> bool {
        self.config.bind == addr || self.socket.local_addr() == addr
    }

    /// New settings for the connections accepted from now on.
    fn apply(&mut self, new: &ListenerConfig) {
        let route = Route::new(new, Some(&self.route.borrow()));
        self.route.send_replace(Arc::new(route));
        self.limit.resize(new.max_connections);
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
    /// they are asked to finish now and dropped after `grace`.
    fn retire(self, grace: Duration) {
        self.drain.begin();
        let span = info_span!("listener", listener = self.config.name);
        let drain = self.drain;
        tokio::spawn(
            async move {
                drain.wait(grace).await;
            }
            .instrument(span),
        );
    }
}

/// How long stopped accept loops get to return (they return at their next
/// poll; the bound only guards against a bug).
const ACCEPT_LOOP_STOP: Duration = Duration::from_secs(5);

/// Waits for stopped accept loops to return, so that their sockets are closed.
async fn stopped(accept_loops: Vec<JoinHandle<()>>) {
    for task in accept_loops {
        if tokio::time::timeout(ACCEPT_LOOP_STOP, task).await.is_err() {
            warn!("an accept loop did not stop in time");
        }
    }
}

/// The `[server]` keys that a reload cannot apply.
fn restart_keys(old: &ServerConfig, new: &ServerConfig) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.log_format != new.log_format {
        keys.push("server.log_format");
    }
    if old.log_level != new.log_level {
        keys.push("server.log_level");
    }
    if old.worker_threads != new.worker_threads {
        keys.push("server.worker_threads");
    }
    keys
}
