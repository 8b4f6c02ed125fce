//! The server: binds every listener of a config before serving any, runs
//! their accept loops on one runtime, and on shutdown stops accepting, tells
//! every connection to finish and waits for them up to the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span};

use crate::config::{Config, HandlerKind};
use crate::listener::{BindError, Listener};
use crate::shutdown::{Drain, ShutdownReport};

/// Every listener of a config, bound and ready to serve.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<Listener>,
    shutdown_grace: Duration,
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
        Ok(Server {
            listeners,
            shutdown_grace: config.server.shutdown_grace,
        })
    }

    /// The bound listeners, in config order.
    pub fn listeners(&self) -> Vec<BoundListener> {
        self.listeners
            .iter()
            .map(|l| BoundListener {
                name: l.name().to_owned(),
                addr: l.local_addr(),
                handler: l.handler_kind(),
            })
            .collect()
    }

    /// The address of the listener called `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.name() == name)
            .map(Listener::local_addr)
    }

    /// Serves until `shutdown` completes, then drains: listeners stop
    /// accepting, connections are told to finish (bots say goodbye, downloads
    /// finish their file), and the server waits up to the grace period, then
    /// drops the connections still open.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> ShutdownReport {
        let drain = Drain::new();
        let next_id = Arc::new(AtomicU64::new(1));
        let mut accept_loops = JoinSet::new();
        for listener in self.listeners {
            info!(listener = listener.name(), addr = %listener.local_addr(), handler = listener.handler_kind().name(), "listening");
            let span = info_span!("listener", listener = listener.name());
            accept_loops.spawn(
                listener
                    .run(drain.clone(), next_id.clone())
                    .instrument(span),
            );
        }
        shutdown.await;
        drain.begin();
        // The accept loops return at once and close their sockets.
        while accept_loops.join_next().await.is_some() {}
        drain.wait(self.shutdown_grace).await
    }
}
