//! The server: binds (or takes from the service manager) every listener of a
//! config before serving any, runs their accept loops on one runtime,
//! applies reloaded configs without dropping live connections, and on
//! shutdown stops accepting, tells every connection to finish and waits for
//! them up to the grace period.

mod admission;
mod budget;
mod datagram;
mod drain;
mod limit;
mod listener;
mod open;
mod opening;
mod reload;
mod running;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::warn;

pub use drain::ShutdownReport;
pub use listener::{BindError, PassedKind};
pub use reload::{ReloadError, ReloadSummary};

use crate::config::{Config, ListenerConfig, ServerConfig};
use crate::history::{Histories, HistoryOpenError, Registry};
use crate::metrics::Metrics;
use drain::Drain;
use listener::Listener;
use running::RunState;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind its address.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A listener's history could not be opened.
    #[error(transparent)]
    History(#[from] HistoryOpenError),
}

/// Every listener of a config, bound and ready to serve, with the
/// histories of its handlers open.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<Listener>,
    registry: Arc<Registry>,
    histories: Histories,
    server_config: ServerConfig,
    drain: Drain,
    metrics: Arc<Metrics>,
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
    /// Its handler's name.
    pub handler: &'static str,
    /// True when the socket came from the service manager.
    pub activated: bool,
    /// True for a UDP listener.
    pub udp: bool,
    /// Its TLS mode, if it speaks TLS.
    pub tls: Option<crate::tls::Mode>,
}

impl BoundListener {
    /// Its address as an operator reads it: `/udp` after a UDP one's,
    /// `/tls` after a TLS one's (`/tls+plain` with `mode = "optional"`),
    /// as `switchboard check` shows it.
    pub fn shown_addr(&self) -> String {
        match (self.udp, self.tls) {
            (true, _) => format!("{}/udp", self.addr),
            (false, None) => self.addr.to_string(),
            (false, Some(crate::tls::Mode::Required)) => format!("{}/tls", self.addr),
            (false, Some(crate::tls::Mode::Optional)) => format!("{}/tls+plain", self.addr),
        }
    }
}

/// A socket the service manager passed, claimed for a listener.
#[derive(Debug)]
pub struct PassedSocket {
    /// The listening TCP socket, or the bound UDP socket.
    pub socket: PassedKind,
    /// Its `FileDescriptorName=`.
    pub fd_name: String,
}

/// Asks a running server to reload, and reads its status.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    requests: mpsc::Sender<ReloadRequest>,
    listeners: Arc<AtomicUsize>,
    drain: Drain,
    metrics: Arc<Metrics>,
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
    /// apply to new connections, and the open connections of a changed
    /// listener keep their settings, except that an HTTP connection takes
    /// no further request and a client the new access lists deny is told
    /// `ERR access denied` and closed. If any new address cannot be bound,
    /// nothing changes.
    pub async fn reload(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(ReloadRequest { config, reply })
            .await
            .map_err(|_| ReloadError::Stopped)?;
        answer.await.map_err(|_| ReloadError::Stopped)?
    }

    /// Counts a reload that failed before it reached the server (the file
    /// could not be read or is not a valid config).
    pub(crate) fn reload_failed(&self) {
        self.metrics.reloaded(false);
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
    /// Binds every listener and opens the histories of its handlers; the
    /// first that fails fails the start, by name. Blocking (a SQLite
    /// history file is opened and read). Must be called inside a tokio
    /// runtime.
    pub fn bind(config: &Config) -> Result<Server, StartError> {
        let listeners = config
            .listeners
            .iter()
            .map(Listener::bind)
            .collect::<Result<_, _>>()?;
        Self::serving(listeners, config)
    }

    /// Like [`Server::bind`], but a listener first takes the socket that
    /// `passed` gives it (a socket from the service manager), if any.
    /// Must be called inside a tokio runtime.
    pub fn start(
        config: &Config,
        mut passed: impl FnMut(&ListenerConfig) -> Option<PassedSocket>,
    ) -> Result<Server, StartError> {
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let bound = match passed(listener) {
                Some(PassedSocket { socket, fd_name }) => {
                    let addr = socket.local_addr().unwrap_or(listener.bind);
                    Listener::adopt(socket, listener, fd_name).map_err(|source| BindError {
                        name: listener.name.clone(),
                        addr,
                        source,
                    })?
                }
                None => Listener::bind(listener)?,
            };
            listeners.push(bound);
        }
        Self::serving(listeners, config)
    }

    fn serving(listeners: Vec<Listener>, config: &Config) -> Result<Server, StartError> {
        let registry = Arc::new(Registry::default());
        let wanted = running::wanted_histories(config);
        let histories = registry.open(wanted.iter().map(|(name, h)| (name.as_str(), h)))?;
        let drain = Drain::new();
        let metrics = Arc::new(Metrics::new());
        let listener_count = Arc::new(AtomicUsize::new(listeners.len()));
        let (sender, requests) = mpsc::channel(1);
        let handle = ServerHandle {
            requests: sender,
            listeners: listener_count.clone(),
            drain: drain.clone(),
            metrics: metrics.clone(),
        };
        Ok(Server {
            listeners,
            registry,
            histories,
            server_config: config.server.clone(),
            drain,
            metrics,
            listener_count,
            requests,
            handle,
        })
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
    /// [`Server::handle`], then drains: listeners stop accepting and close
    /// their sockets (new clients are refused), connections are told to finish (bots say goodbye, downloads finish
    /// their file), and the server waits up to the grace period, then drops
    /// the connections still open.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> ShutdownReport {
        let mut state = RunState::new(
            self.drain.clone(),
            self.metrics.clone(),
            self.server_config.clone(),
            self.registry.clone(),
            std::mem::take(&mut self.histories),
        );
        for listener in std::mem::take(&mut self.listeners) {
            state.serve_first(listener);
        }
        state.rebalance();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(request) = self.requests.recv() => {
                    let result = state.reload(request.config).await;
                    self.metrics.reloaded(result.is_ok());
                    self.listener_count.store(state.listener_count(), Ordering::Relaxed);
                    let _ = request.reply.send(result);
                }
            }
        }
        // Stops the accept loops too: theirs are child tokens of the drain's.
        self.drain.begin();
        let grace = state.stop_accepting().await;
        // Close the listening sockets now, not at exit: new clients are
        // refused at once (a load balancer's check fails and it moves on)
        // instead of waiting in a backlog nobody accepts from. A socket
        // systemd passed stays open in systemd, which queues the clients
        // for the next start.
        drop(state);
        drop(self.handle);
        self.drain.wait(grace).await
    }
}

/// How `socket`, serving `config`, is shown to the operator.
pub(crate) fn bound_listener(config: &ListenerConfig, socket: &Listener) -> BoundListener {
    BoundListener {
        name: config.name.clone(),
        addr: socket.local_addr(),
        handler: config.handler.name(),
        activated: socket.activated(),
        udp: config.transport.is_udp(),
        tls: config.tls.as_ref().map(|tls| tls.mode),
    }
}

/// How long stopped accept loops get to return (they return at their next
/// poll; the bound only guards against a bug).
const ACCEPT_LOOP_STOP: Duration = Duration::from_secs(5);

/// Waits for stopped accept loops to return, so that their sockets are closed.
pub(crate) async fn stopped(accept_loops: Vec<JoinHandle<()>>) {
    for task in accept_loops {
        if tokio::time::timeout(ACCEPT_LOOP_STOP, task).await.is_err() {
            warn!("an accept loop did not stop in time");
        }
    }
}
