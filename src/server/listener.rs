//! A bound listener (a listening TCP socket, or a UDP socket) and the TCP
//! accept loop: one task per accepted client, each in its own log context
//! (`log_context`), routed to the listener's current handler, and the life of one
//! connection from accept to close. A UDP listener's loop is `datagram`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::admission::{Refusal, SourceSlot, Sources};
use super::budget::ListenerBudget;
use super::drain::Drain;
use super::limit::ConnectionLimit;
use super::open::{OpenConnections, Registration};
use super::opening::{prepare_socket, secure, set_inherited_options};
use crate::config::{Access, Datagrams, ListenerConfig, ProxyProtocol, Transport};
use crate::conn::proxy_header::{self, Proxied};
use crate::conn::signals::{RETIRED, SHUTDOWN, Source};
use crate::conn::{self, ConnError, Connection, ServerStream, Signals};
use crate::handler::{AnyHandler, BuildContext, Ended, HandlerError};
use crate::history::Histories;
use crate::log_context::{self, LogContext};
use crate::metrics::{ListenerMetrics, Metrics};
use crate::tls::service::TlsService;

/// First and longest pause after an accept error (out of descriptors, ...).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("listener {name:?}: cannot listen on {addr}")]
pub struct BindError {
    /// The listener's name.
    pub name: String,
    /// The address it wanted.
    pub addr: SocketAddr,
    /// Why the kernel said no.
    #[source]
    pub source: io::Error,
}

/// What a listener's new connections get: its handler, their settings and
/// the listener's counters. A reload swaps it; connections already open
/// keep the one they started with, but are told that it was replaced
/// (see [`OpenConnections::replace_route`]): an HTTP connection takes no further request,
/// and a client the new access lists deny is closed with `ERR access denied`.
#[derive(Debug)]
pub(crate) struct Route {
    pub(super) handler: AnyHandler,
    /// Shared by its connections (each would otherwise carry a copy).
    pub(super) settings: Arc<conn::Settings>,
    pub(super) metrics: Arc<ListenerMetrics>,
    tcp_keepalive: Option<Duration>,
    pub(super) access: Access,
    proxy_protocol: Option<ProxyProtocol>,
    /// TCP, or UDP with its settings.
    pub(super) transport: Transport,
    /// Descriptors one connection may hold (the socket, and a file).
    descriptors_per_connection: u32,
    /// The listener's TLS, if it has any.
    tls: Option<TlsService>,
}

impl Route {
    /// Its listener's counters.
    pub(crate) fn metrics(&self) -> &Arc<ListenerMetrics> {
        &self.metrics
    }

    /// Re-reads its TLS certificate's files, if it has TLS (SIGHUP).
    /// Blocking: reads files.
    pub(crate) fn reload_tls(&self) {
        if let Some(tls) = &self.tls {
            tls.reload();
        }
    }

    /// The route of a listener's config, built with the histories opened
    /// for that config; `previous` is the route it replaces.
    pub(crate) fn new(
        config: &ListenerConfig,
        metrics: &Arc<Metrics>,
        previous: Option<&Route>,
        histories: &Histories,
    ) -> Route {
        let settings = config.connection_settings();
        let metrics = metrics.listener(&config.name, config.handler.name());
        let ctx = BuildContext {
            settings: &settings,
            metrics: &metrics,
            histories,
        };
        let tls = config.tls.as_ref().map(|settings| {
            TlsService::new(settings, &metrics, previous.and_then(|r| r.tls.as_ref()))
        });
        Route {
            tls,
            handler: AnyHandler::build(&config.handler, &ctx, previous.map(|r| &r.handler)),
            settings: Arc::new(settings),
            metrics,
            tcp_keepalive: config.tcp_keepalive,
            access: config.access.clone(),
            proxy_protocol: config.proxy_protocol.clone(),
            transport: config.transport.clone(),
            descriptors_per_connection: u32::try_from(config.handler.descriptors_per_connection())
                .unwrap_or(u32::MAX),
        }
    }
}

/// A listener's socket.
#[derive(Debug)]
pub(crate) enum Socket {
    /// A listening TCP socket.
    Stream(TcpListener),
    /// A bound UDP socket (shared with the tasks that send late replies).
    Datagram(Arc<UdpSocket>),
}

/// A socket the service manager passed, as the standard library has it.
#[derive(Debug)]
pub enum PassedKind {
    /// A listening TCP socket (`ListenStream=`).
    Stream(std::net::TcpListener),
    /// A bound UDP socket (`ListenDatagram=`).
    Datagram(std::net::UdpSocket),
}

impl PassedKind {
    /// The address it is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            PassedKind::Stream(socket) => socket.local_addr(),
            PassedKind::Datagram(socket) => socket.local_addr(),
        }
    }

    /// True for a UDP socket.
    pub fn is_datagram(&self) -> bool {
        matches!(self, PassedKind::Datagram(_))
    }
}

/// A bound UDP socket made ready to serve: its receive buffer as `udp`
/// says, non-blocking, on the runtime.
fn datagram_socket(socket: std::net::UdpSocket, udp: &Datagrams) -> io::Result<Socket> {
    if let Some(size) = udp.receive_buffer_bytes {
        rustix::net::sockopt::set_socket_recv_buffer_size(&socket, size)?;
    }
    socket.set_nonblocking(true)?;
    Ok(Socket::Datagram(Arc::new(UdpSocket::from_std(socket)?)))
}

/// A bound socket and the config it was bound for.
#[derive(Debug)]
pub(crate) struct Listener {
    socket: Socket,
    local_addr: SocketAddr,
    config: ListenerConfig,
    /// The `FileDescriptorName=` of a socket from the service manager
    /// (socket activation); `None` when bound here.
    fd_name: Option<String>,
    /// The keepalive its accepted sockets inherit, with TCP_NODELAY, from
    /// the listening socket; `None` when they inherit nothing (UDP, or
    /// options the socket refused). A route with another keepalive (after
    /// a reload) has its connections set theirs: connections queued before
    /// the reload could not be told apart, had the listening socket's
    /// options been changed.
    inherited_keepalive: Option<Option<Duration>>,
}

impl Listener {
    /// Binds the listener's address (with SO_REUSEADDR, so a restart binds at
    /// once even while old connections sit in TIME_WAIT).
    /// Must be called inside a tokio runtime.
    pub(crate) fn bind(config: &ListenerConfig) -> Result<Listener, BindError> {
        let fail = |source| BindError {
            name: config.name.clone(),
            addr: config.bind,
            source,
        };
        if let Transport::Udp(udp) = &config.transport {
            let socket = std::net::UdpSocket::bind(config.bind).map_err(fail)?;
            let socket = datagram_socket(socket, udp).map_err(fail)?;
            return Self::serving(socket, config, None).map_err(fail);
        }
        let socket = if config.bind.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(fail)?;
        socket.set_reuseaddr(true).map_err(fail)?;
        socket.bind(config.bind).map_err(fail)?;
        let socket = socket.listen(config.backlog).map_err(fail)?;
        Self::serving(Socket::Stream(socket), config, None).map_err(fail)
    }

    /// Takes over a socket that is already listening (or bound, for UDP),
    /// passed by the service manager under `fd_name`. Must be called inside
    /// a tokio runtime.
    pub(crate) fn adopt(
        socket: PassedKind,
        config: &ListenerConfig,
        fd_name: String,
    ) -> io::Result<Listener> {
        let socket = match (socket, &config.transport) {
            (PassedKind::Stream(socket), Transport::Tcp) => {
                socket.set_nonblocking(true)?;
                Socket::Stream(TcpListener::from_std(socket)?)
            }
            (PassedKind::Datagram(socket), Transport::Udp(udp)) => datagram_socket(socket, udp)?,
            (_, transport) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the socket systemd passed is not a {} socket",
                        transport.name()
                    ),
                ));
            }
        };
        Self::serving(socket, config, Some(fd_name))
    }

    fn serving(
        socket: Socket,
        config: &ListenerConfig,
        fd_name: Option<String>,
    ) -> io::Result<Self> {
        let (local_addr, inherited_keepalive) = match &socket {
            Socket::Stream(socket) => (
                socket.local_addr()?,
                set_inherited_options(socket, config.tcp_keepalive).then_some(config.tcp_keepalive),
            ),
            Socket::Datagram(socket) => (socket.local_addr()?, None),
        };
        Ok(Listener {
            local_addr,
            socket,
            config: config.clone(),
            fd_name,
            inherited_keepalive,
        })
    }

    /// The listener's name.
    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// The address actually bound (the real port when the config said 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The config it was bound for.
    pub(crate) fn config(&self) -> &ListenerConfig {
        &self.config
    }

    /// True when the socket came from the service manager.
    pub(crate) fn activated(&self) -> bool {
        self.fd_name.is_some()
    }

    /// The name the service manager gave the socket, if it came from it.
    pub(crate) fn fd_name(&self) -> Option<&str> {
        self.fd_name.as_deref()
    }

    /// Applies a new listen backlog (Linux resizes the queue of a
    /// listening socket when `listen(2)` is called again).
    pub(crate) fn set_backlog(&self, backlog: u32) -> io::Result<()> {
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        if let Socket::Stream(socket) = &self.socket {
            rustix::net::listen(socket, backlog)?;
        }
        Ok(())
    }

    /// Applies a new `receive_buffer_bytes` to a UDP socket.
    pub(crate) fn set_receive_buffer(&self, size: usize) -> io::Result<()> {
        if let Socket::Datagram(socket) = &self.socket {
            rustix::net::sockopt::set_socket_recv_buffer_size(&**socket, size)?;
        }
        Ok(())
    }

    /// The socket: a TCP listener's, or a UDP listener's.
    pub(crate) fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Accepts clients until `stop` is cancelled, spawning each one's task on
    /// `drain` with the route current at its accept. The listening socket
    /// closes when the last `Arc` of this listener is dropped.
    pub(crate) async fn accept_loop(&self, with: AcceptLoop) {
        let AcceptLoop {
            route: routes,
            open,
            limit,
            sources,
            descriptors,
            stop,
            drain,
            next_id,
        } = with;
        let Socket::Stream(socket) = &self.socket else {
            return;
        };
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut failing_since: Option<Instant> = None;
        // One wait for the stop, made once, and looked at first once a
        // connection: a new wait at each step would join the token's
        // waiters and leave them again, under its lock, three times a
        // connection (with each look, about 800 instructions: a sixth of
        // a refusal's cost). The later steps look at it only while they
        // wait; a flood that keeps them ready meets it at the next
        // connection's first step.
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        loop {
            let permit = tokio::select! {
                biased;
                () = &mut stopped => break,
                permit = limit.acquire() => permit,
            };
            // Before the accept, which is a descriptor itself.
            let cost = routes.borrow().descriptors_per_connection;
            let descriptors = tokio::select! {
                biased;
                descriptors = descriptors.acquire(cost) => descriptors,
                () = &mut stopped => break,
            };
            let accepted = tokio::select! {
                biased;
                accepted = socket.accept() => accepted,
                () = &mut stopped => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a transient network error: the
                    // listener must survive it without spinning.
                    if failing_since.is_none() {
                        warn!(error = %e, "accept failed; backing off until it works again");
                        failing_since = Some(Instant::now());
                    }
                    drop((permit, descriptors));
                    tokio::select! {
                        () = &mut stopped => break,
                        () = sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            if let Some(since) = failing_since.take() {
                info!(after = ?since.elapsed(), "accepting again");
                backoff = ACCEPT_BACKOFF_MIN;
            }
            // The route it is served with.
            let route = routes.borrow().clone();
            let proxy = route.proxy_protocol.as_ref();
            let via_proxy = proxy.is_some_and(|p| p.trusts(peer.ip()));
            let slot = if via_proxy {
                // A denied balancer is denied; its clients are admitted once
                // the header has said who they are.
                if route.access.denies(peer.ip()) {
                    refuse(&stream, &route, &sources, Refusal::Denied, peer);
                    continue;
                }
                None
            } else if proxy.is_some_and(|p| p.required) {
                refuse(&stream, &route, &sources, Refusal::Untrusted, peer);
                continue;
            } else {
                match sources.admit(&route.access, peer.ip()) {
                    Ok(slot) => Some(slot),
                    Err(refusal) => {
                        refuse(&stream, &route, &sources, refusal, peer);
                        continue;
                    }
                }
            };
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            // The fields of the connection's lines: `peer` is the client
            // (through a balancer, its PROXY header says who it is); the
            // balancer is `via`.
            let context = LogContext::connection(
                route.settings.listener.clone(),
                (!via_proxy).then_some(peer),
                id,
            );
            // Reached by reloads and the shutdown from now on.
            let signals = Signals::default();
            let registration = open.register(&signals);
            // A reload between the route's read above and this
            // registration did not reach this connection: it was admitted
            // under the replaced route, so it is retired as the reload's
            // connections were (and checked against the new access lists
            // once admitted).
            if !Arc::ptr_eq(&route, &routes.borrow()) {
                signals.fire(RETIRED);
            }
            let task_signals = signals.clone();
            // Boxed, and the task's only capture: what only the opening
            // needs (the socket before it is a `Connection`, the accept's
            // peer, the signals' second handle) is freed once it is done,
            // where a capture would take room in the task for its whole
            // life (every idle connection pays for its task's size).
            let opening = Box::new(Opening {
                options_inherited: self.inherited_keepalive == Some(route.tcp_keepalive),
                stream,
                peer,
                via_proxy,
                route,
                signals,
                sources: sources.clone(),
                accepted: Instant::now(),
                with: Accepted {
                    slot,
                    routes: routes.clone(),
                    registration,
                    _permit: permit,
                    _descriptors: descriptors,
                },
            });
            drain.spawn_connection(connection(opening), context, task_signals);
        }
        debug!("stopped accepting");
    }
}

/// What a connection's opening works with: taken apart by
/// [`open_connection`], which turns it into the connection served.
struct Opening {
    stream: TcpStream,
    /// The socket's peer (a balancer's, when `via_proxy`).
    peer: SocketAddr,
    /// It came from a trusted balancer: a PROXY header says who the client is.
    via_proxy: bool,
    /// The route of its accept.
    route: Arc<Route>,
    /// Its socket inherited the route's options from the listening socket.
    options_inherited: bool,
    signals: Signals,
    /// The listener's per-source state (a PROXY header's client is
    /// admitted there).
    sources: Arc<Sources>,
    /// When it was accepted.
    accepted: Instant,
    with: Accepted,
}

/// A connection's task, from its opening to its close. Its size is paid by
/// every idle connection (see the test below).
async fn connection(opening: Box<Opening>) {
    let Some((mut conn, route, with)) = open_connection(opening).await else {
        return;
    };
    serve(&mut conn, route, &with).await;
    // The connection is counted closed before its places under the limits
    // are given back.
    drop((conn, with));
}

/// Opens an accepted connection: admission of a balancer's client, the
/// socket's options, TLS. `None`: refused, failed or shut down (already
/// counted).
async fn open_connection(
    opening: Box<Opening>,
) -> Option<(Connection<ServerStream>, Arc<Route>, Accepted)> {
    let Opening {
        stream,
        peer,
        via_proxy,
        route,
        options_inherited,
        signals,
        sources,
        accepted,
        mut with,
    } = *opening;
    let admitted = admit_proxied(&stream, peer, via_proxy, &mut with.slot, &route, &sources);
    // Shutdown does not wait for a header still on its way.
    let admitted = tokio::select! {
        biased;
        _ = signals.any_of(SHUTDOWN) => None,
        admitted = admitted => admitted,
    };
    let client = admitted?;
    with.registration.open().admitted(
        &with.routes,
        &signals,
        Source {
            client: client.ip(),
            counted_as: with
                .slot
                .as_ref()
                .map_or_else(|| client.ip().to_canonical(), SourceSlot::source),
            balancer: via_proxy.then(|| peer.ip()),
            checked: with.slot.is_some(),
        },
    );
    prepare_socket(&stream, route.tcp_keepalive, options_inherited);
    // After admission: a refused source never costs a handshake.
    let opened = secure(
        stream,
        route.tls.as_ref(),
        route.settings.first_message_timeout,
        &route.metrics,
        &signals,
    );
    let stream = opened.await?;
    // One line per connection at info, when it closes (as an access log
    // does): at tens of thousands of connections a second a second line
    // would cost a fifth of the server's time.
    debug!("opened");
    // Made here, not in `serve`: what a task moves is stored again where
    // it goes, and the stream is most of it.
    let conn = Connection::new(
        stream,
        client,
        route.settings.clone(),
        route.metrics.clone(),
        signals,
    )
    .accepted_at(accepted);
    Some((conn, route, with))
}

/// What an accept loop works with.
pub(crate) struct AcceptLoop {
    /// The listener's current route (a reload swaps it).
    pub route: watch::Receiver<Arc<Route>>,
    /// Its open connections, which its reloads and shutdown reach.
    pub open: Arc<OpenConnections>,
    /// Its `max_connections`.
    pub limit: Arc<ConnectionLimit>,
    /// Its per-source state.
    pub sources: Arc<Sources>,
    /// Its share of the descriptor budget, and the shared pool.
    pub descriptors: ListenerBudget,
    /// Stops the loop.
    pub stop: CancellationToken,
    /// Where its connections run.
    pub drain: Drain,
    /// Connection numbers, shared by every listener.
    pub next_id: Arc<AtomicU64>,
}

/// Refuses a connection before any handler work: counts it (metrics, and
/// the listener's refusal log line), and writes
/// the refusal's line, if it has one, in one non-blocking write into the
/// fresh socket's empty buffer (no task waits on a refused client).
fn refuse(
    stream: &TcpStream,
    route: &Route,
    sources: &Sources,
    refusal: Refusal,
    peer: SocketAddr,
) {
    route.metrics.refused(refusal.label());
    sources.refused(refusal, peer.ip());
    if let Some(reply) = refusal.reply() {
        let _ = stream.try_write(reply);
    }
}

/// Settles who the client is, in its log context: the socket's peer (admitted at
/// accept, holding `slot`), or for a connection from a trusted proxy the
/// address its PROXY protocol header gives, which is admitted here (access
/// lists, per-source limits) as the socket's peer would have been at
/// accept, its place among its source's connections then put in `slot`.
/// `None`: refused, and already counted.
async fn admit_proxied(
    stream: &TcpStream,
    peer: SocketAddr,
    via_proxy: bool,
    slot: &mut Option<SourceSlot>,
    route: &Route,
    sources: &Arc<Sources>,
) -> Option<SocketAddr> {
    let Some(proxy) = route.proxy_protocol.as_ref().filter(|_| via_proxy) else {
        // Its context was given `peer` when it was made.
        return Some(peer);
    };
    log_context::record_via(peer);
    // Boxed: only connections through a balancer carry the header's read
    // (and its buffer) in their task.
    let header = Box::pin(proxy_header::read(
        stream,
        proxy.versions,
        proxy.header_timeout,
    ));
    let client = match header.await {
        Ok(Proxied::Client(client)) => client,
        // The balancer speaking for itself (its health checks): not a
        // client, so not subject to `allow` or the per-source limits
        // (`deny` was checked at accept).
        Ok(Proxied::Local) => {
            log_context::record_peer(peer);
            *slot = None;
            return Some(peer);
        }
        Err(e) => {
            log_context::record_peer(peer);
            debug!(error = %e, "refused");
            refuse(stream, route, sources, Refusal::ProxyHeader, peer);
            return None;
        }
    };
    log_context::record_peer(client);
    match sources.admit(&route.access, client.ip()) {
        Ok(admitted) => {
            *slot = Some(admitted);
            Some(client)
        }
        Err(refusal) => {
            refuse(stream, route, sources, refusal, client);
            None
        }
    }
}

/// What a connection's task keeps from its accept until it ends, in one
/// place (each value the task moves is stored again where it goes).
struct Accepted {
    /// Its place among its source's connections (`None` for a balancer's
    /// own connection, until its PROXY header names the client).
    slot: Option<SourceSlot>,
    /// The listener's route, as reloads replace it.
    routes: watch::Receiver<Arc<Route>>,
    /// Its place among the listener's open connections.
    registration: Registration,
    /// Its place under `max_connections`, held until it ends.
    _permit: OwnedSemaphorePermit,
    /// Its descriptors in the budget, held until it ends.
    _descriptors: OwnedSemaphorePermit,
}

/// Reloads a silent connection follows before its first byte, at most;
/// past them it is closed (each reload could otherwise restart its wait).
const MAX_REROUTES: u32 = 8;

/// Runs one connection from open to close, with its log line and counts,
/// under the route of its accept, or the one a reload rerouted it to.
async fn serve(conn: &mut Connection<ServerStream>, mut route: Arc<Route>, with: &Accepted) {
    let mut reroutes = 0;
    let result = loop {
        // A reload fires the connection's signals before it returns: a
        // request that arrives after it finds them fired.
        let result = route.handler.serve(conn).await;
        // A reload came before the client's first byte: its first request
        // is served under the new settings, as a new connection's would be
        // (a connection opened early cannot keep what a reload took away).
        match result {
            Err(HandlerError::Conn(ConnError::Rerouted)) if reroutes < MAX_REROUTES => {
                reroutes += 1;
                route = with
                    .registration
                    .open()
                    .reroute(&with.routes, conn.signals());
                conn.reroute(route.settings.clone());
                debug!("rerouted to the reloaded config before the first byte");
            }
            result => break result,
        }
    };
    // Boxed: the end's writes (an error reply, the close) are not room
    // that every task carries while its connection is served.
    Box::pin(finish(conn, &route, result)).await;
}

/// Ends a served connection: its error reply if it has one, the close,
/// and its log line.
async fn finish(
    conn: &mut Connection<ServerStream>,
    route: &Route,
    result: Result<Ended, HandlerError>,
) {
    if let Err(err) = &result
        && let Some((reply, reason)) = err.client_reply().filter(|_| !conn.reply_cut())
    {
        route.metrics.error_reply(reason);
        // Boxed: few connections end with an error reply, and every
        // connection's task would carry room for the write.
        let _ = Box::pin(conn.send_line(&reply)).await;
    }
    let reason = match &result {
        Ok(ended) => ended.close_reason(),
        Err(err) => err.close_reason(),
    };
    match &result {
        Err(err) if err.resets_connection() => conn.reset(reason),
        _ => conn.close(reason).await,
    }
    let (bytes_in, bytes_out) = conn.bytes();
    let duration = conn.opened().elapsed();
    match result {
        Ok(ended) => info!(?duration, bytes_in, bytes_out, reason = %ended, "closed"),
        Err(err) if err.is_server_fault() => {
            warn!(?duration, bytes_in, bytes_out, reason = %err, "closed")
        }
        Err(err) => info!(?duration, bytes_in, bytes_out, reason = %err, "closed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function returns, without calling it.
    fn future_size<A, F: Future>(_: fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle connection pays for its task's future, in tokio's task
    /// cell (aligned to 128 bytes: 768 B with this future, 896 B from
    /// about 600 B on). What only the opening needs is boxed and freed
    /// (it was captured and kept: 776 B), and so is the end's close.
    #[test]
    fn a_connection_s_task_stays_small() {
        let task = future_size(connection);
        eprintln!("connection task {task} bytes");
        assert!(task <= 560, "a connection's task future is {task} bytes");
    }
}
