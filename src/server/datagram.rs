//! A UDP listener's receive loop: one datagram is one message, answered
//! with one datagram sent back to its sender.
//!
//! The loop never waits on a reply or on a client:
//! - it takes at most [`DATAGRAMS_PER_TURN`] datagrams per wake-up, then
//!   yields, so a flood on one listener cannot starve the runtime;
//! - a reply that is ready at once (echo, keyword-bot, a random-bot's
//!   memory history) is sent at once, with a non-blocking `send_to`: when
//!   the socket's send buffer is full the reply is dropped and counted;
//!   a handler that says it never waits (`Handler::datagram_waits`) is
//!   answered from the receive buffer itself, with no copy and no box;
//! - a reply that waits for a history (SQLite, Redis) goes to a task of
//!   its own, within [`PENDING_KIB`] of memory per listener (each counts
//!   [`PENDING_BASE_KIB`] and three times its datagram: the datagram, its
//!   copy in the history's queue and the reply; 1024 small ones, 79 of
//!   the longest):
//!   past that, the datagram is dropped and counted.
//!
//! Reflection: a reply no longer than its request is always sent; a longer
//! one spends the difference from its source's `reply_bytes_per_source`
//! budget, and is dropped when the budget is short. So a source gets back
//! at most what it sent plus its budget, whoever it claims to be.
//!
//! Nothing is logged per datagram above debug; drops are counted in the
//! metrics and summed up in one log line a second at most.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustix::net::{RecvFlags, SendFlags};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::admission::{Refusal, Sources};
use super::drain::Drain;
use super::listener::{Listener, Route, Socket};
use crate::config::Transport;
use crate::handler::DatagramSource;
use crate::log_context::LogContext;
use crate::metrics::{DatagramMetrics, DropReason};

/// Datagrams taken per wake-up before the loop yields to other tasks.
const DATAGRAMS_PER_TURN: usize = 64;

/// Memory that the replies waiting for a history may hold, per listener,
/// in KiB: 1024 small replies, or 79 to the longest datagrams.
const PENDING_KIB: usize = 16 * 1024;

/// What one waiting reply counts besides three times its datagram (its
/// task, its place in the history's queue), in KiB.
const PENDING_BASE_KIB: usize = 15;

/// The KiB of [`PENDING_KIB`] that a reply to a datagram of `n` bytes holds.
fn pending_cost_kib(n: usize) -> u32 {
    u32::try_from(PENDING_BASE_KIB + (3 * n).div_ceil(1024)).unwrap_or(u32::MAX)
}

/// How often the kernel's drop count is read, and drops are logged, at most.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// What a receive loop works with.
pub(crate) struct DatagramLoop {
    /// The listener's current route (a reload swaps it).
    pub route: watch::Receiver<Arc<Route>>,
    /// Its per-source state (rate buckets, reply budgets).
    pub sources: Arc<Sources>,
    /// Stops the loop.
    pub stop: CancellationToken,
    /// Where replies that wait for a history run.
    pub drain: Drain,
}

/// Receives and answers datagrams until `stop` is cancelled.
pub(crate) async fn receive_loop(listener: Arc<Listener>, with: DatagramLoop) {
    let Socket::Datagram(socket) = listener.socket() else {
        return;
    };
    let DatagramLoop {
        mut route,
        sources,
        stop,
        drain,
    } = with;
    let pending = Arc::new(Semaphore::new(PENDING_KIB));
    let mut current = Current::new(route.borrow_and_update().clone());
    let mut drops = DropLog::default();
    let mut kernel_drops = KernelDrops::new(socket);
    // Housekeeping (the kernel's drop count, the drop log line) is due a
    // second after datagrams came, and only then: an idle listener never
    // wakes (a wake-up costs more than it seems on a small virtual host).
    let housekeeping = tokio::time::sleep(HOUSEKEEPING_INTERVAL);
    tokio::pin!(housekeeping);
    let mut housekeeping_due = false;
    // One wait for the stop, made once: a new one each turn would join
    // the token's waiters and leave them again, under its lock.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => break,
            () = &mut housekeeping, if housekeeping_due => {
                // The kernel drops only while datagrams come faster than
                // they are read, and then the buffer it dropped them from
                // is full: reading it, the loop gets here. So an idle
                // socket (most of them, most of the time) is not looked up.
                housekeeping_due = false;
                kernel_drops.update(&current.metrics).await;
                drops.flush();
            }
            ready = socket.readable() => {
                if let Err(e) = ready {
                    warn!(error = %e, "cannot wait for datagrams");
                    tokio::select! {
                        () = &mut stopped => break,
                        () = tokio::time::sleep(HOUSEKEEPING_INTERVAL) => continue,
                    }
                }
                if route.has_changed().unwrap_or(false) {
                    current = Current::new(route.borrow_and_update().clone());
                }
                let mut taken = 0;
                while taken < DATAGRAMS_PER_TURN {
                    let (n, peer) = match try_receive(socket, &mut current.buffer) {
                        Ok(received) => received,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // An ICMP error of an earlier reply, or the like:
                        // nothing to do for it, and the next may be fine.
                        Err(e) => {
                            debug!(error = %e, "receive failed");
                            taken += 1;
                            continue;
                        }
                    };
                    taken += 1;
                    let exchange = Exchange {
                        socket,
                        route: &current.route,
                        sources: &sources,
                        metrics: &current.metrics,
                    };
                    let datagram = &current.buffer[..n];
                    if let Err(reason) = exchange.datagram(datagram, peer, &mut current.reply, &pending, &drain) {
                        drops.count(reason, peer.ip(), &current.metrics);
                    }
                }
                if taken > 0 && !housekeeping_due {
                    housekeeping_due = true;
                    housekeeping.as_mut().reset(Instant::now() + HOUSEKEEPING_INTERVAL);
                }
                if taken == DATAGRAMS_PER_TURN {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
    drops.flush();
    debug!("stopped receiving");
}

/// The route in use, with what is resolved once per route.
struct Current {
    route: Arc<Route>,
    metrics: DatagramMetrics,
    /// One byte longer than `max_datagram_bytes`: a datagram that fills it
    /// is too big (the kernel cuts what does not fit, silently).
    buffer: Vec<u8>,
    /// The reply to a datagram answered at once, reused (cleared each
    /// time): as long as the longest reply given, which a handler bounds.
    reply: Vec<u8>,
}

impl Current {
    fn new(route: Arc<Route>) -> Self {
        let max = match &route.transport {
            Transport::Udp(udp) => udp.max_datagram_bytes,
            Transport::Tcp => route.settings.max_message_bytes,
        };
        Current {
            metrics: route.metrics.datagrams(),
            route,
            buffer: vec![0; max + 1],
            reply: Vec::new(),
        }
    }
}

/// One datagram's way through the listener.
struct Exchange<'a> {
    socket: &'a Arc<UdpSocket>,
    route: &'a Arc<Route>,
    sources: &'a Arc<Sources>,
    metrics: &'a DatagramMetrics,
}

impl Exchange<'_> {
    /// Takes `datagram` from `peer`: checks it, asks the handler, and
    /// sends the reply now (written into `reply`, a buffer reused from
    /// datagram to datagram) or from a task of its own. `Err`: dropped, why.
    fn datagram(
        &self,
        datagram: &[u8],
        peer: SocketAddr,
        reply: &mut Vec<u8>,
        pending: &Arc<Semaphore>,
        drain: &Drain,
    ) -> Result<(), DropReason> {
        let n = datagram.len();
        self.metrics.received.inc();
        self.metrics.bytes_received.inc_by(n as u64);
        let Transport::Udp(udp) = &self.route.transport else {
            return Ok(());
        };
        if n > udp.max_datagram_bytes {
            debug!(%peer, bytes = n, "dropped: longer than max_datagram_bytes");
            return Err(DropReason::TooBig);
        }
        if let Err(refusal) = (self.sources).admit_datagram(
            &self.route.access,
            udp.datagram_rate_per_source,
            peer.ip(),
        ) {
            debug!(%peer, reason = refusal.label(), "dropped");
            return Err(match refusal {
                Refusal::TooFast => DropReason::TooFast,
                _ => DropReason::Denied,
            });
        }
        if !self.route.handler.datagram_waits() {
            // Answered at once, from the receive buffer into the reused
            // reply buffer: no copy of the datagram, no box, no allocation.
            let from = DatagramSource {
                peer,
                settings: &self.route.settings,
                metrics: &self.route.metrics,
            };
            reply.clear();
            let answered = {
                let answer = std::pin::pin!(self.route.handler.datagram(datagram, &from, reply));
                answer.poll(&mut Context::from_waker(Waker::noop()))
            };
            return match answered {
                Poll::Ready(false) => Ok(()),
                Poll::Ready(true) => self.send(reply, n, peer),
                // A handler that says it answers at once and did not: its
                // reply is lost, and counted.
                Poll::Pending => {
                    debug_assert!(false, "a reply that was to be ready at once waited");
                    Err(DropReason::Busy)
                }
            };
        }
        let request = datagram.to_vec();
        let route = self.route.clone();
        let mut reply = Box::pin(async move {
            let from = DatagramSource {
                peer,
                settings: &route.settings,
                metrics: &route.metrics,
            };
            let mut reply = Vec::new();
            let answered = route.handler.datagram(&request, &from, &mut reply).await;
            answered.then_some(reply)
        });
        // Most replies are ready at once: try before paying for a task.
        let mut cx = Context::from_waker(Waker::noop());
        match reply.as_mut().poll(&mut cx) {
            Poll::Ready(None) => Ok(()),
            Poll::Ready(Some(reply)) => self.send(&reply, n, peer),
            Poll::Pending => {
                let Ok(permit) = pending.clone().try_acquire_many_owned(pending_cost_kib(n)) else {
                    debug!(%peer, "dropped: too many replies waiting for the history");
                    return Err(DropReason::Busy);
                };
                let (socket, route, sources, metrics) = (
                    self.socket.clone(),
                    self.route.clone(),
                    self.sources.clone(),
                    self.metrics.clone(),
                );
                let context = LogContext::datagram(route.settings.listener.clone(), peer);
                drain.spawn(
                    async move {
                        if let Some(reply) = reply.await {
                            let late = Exchange {
                                socket: &socket,
                                route: &route,
                                sources: &sources,
                                metrics: &metrics,
                            };
                            if let Err(reason) = late.send(&reply, n, peer) {
                                metrics.dropped[reason.index()].inc();
                            }
                        }
                        drop(permit);
                    },
                    context,
                );
                Ok(())
            }
        }
    }

    /// Sends `reply` to `peer`, whose request was `request_len` bytes, if
    /// its reply budget allows; never waits.
    fn send(&self, reply: &[u8], request_len: usize, peer: SocketAddr) -> Result<(), DropReason> {
        let Transport::Udp(udp) = &self.route.transport else {
            return Ok(());
        };
        let extra = reply.len().saturating_sub(request_len);
        if extra > 0
            && !self.sources.spend_reply_budget(
                &self.route.access,
                udp.reply_bytes_per_source,
                peer.ip(),
                extra,
            )
        {
            debug!(%peer, bytes = reply.len(), "reply dropped: over the source's reply budget");
            return Err(DropReason::ReplyBudget);
        }
        match try_send(self.socket, reply, peer) {
            Ok(sent) => {
                self.metrics.sent.inc();
                self.metrics.bytes_sent.inc_by(sent as u64);
                Ok(())
            }
            Err(e) => {
                debug!(%peer, error = %e, "reply not sent");
                Err(DropReason::SendFailed)
            }
        }
    }
}

/// One datagram off `socket` into `buffer`, never waiting: its length and
/// its sender. Tokio's `try_recv_from` by a direct system call: no libc
/// cancellation point, no conversions through std and mio (about 60
/// instructions a datagram).
fn try_receive(socket: &UdpSocket, buffer: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    socket.try_io(Interest::READABLE, || {
        let (n, _, from) = rustix::net::recvfrom(socket, &mut *buffer, RecvFlags::empty())?;
        let from = from
            .and_then(|from| SocketAddr::try_from(from).ok())
            .ok_or_else(|| io::Error::other("a datagram with no IP source address"))?;
        Ok((n, from))
    })
}

/// `reply` to `to` through `socket`, never waiting (tokio's `try_send_to`
/// by a direct system call, as [`try_receive`]).
fn try_send(socket: &UdpSocket, reply: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket.try_io(Interest::WRITABLE, || {
        Ok(rustix::net::sendto(socket, reply, SendFlags::empty(), &to)?)
    })
}

/// Drops since the last log line, by reason, and the last source.
#[derive(Default)]
struct DropLog {
    counts: [u64; DropReason::ALL.len()],
    last_source: Option<IpAddr>,
    last_line: Option<Instant>,
}

impl DropLog {
    /// Counts a drop in the metrics and for the next log line.
    fn count(&mut self, reason: DropReason, source: IpAddr, metrics: &DatagramMetrics) {
        metrics.dropped[reason.index()].inc();
        self.counts[reason.index()] += 1;
        self.last_source = Some(source);
        if self
            .last_line
            .is_none_or(|at| at.elapsed() >= HOUSEKEEPING_INTERVAL)
        {
            self.flush();
        }
    }

    /// Logs the drops counted since the last line, if any.
    fn flush(&mut self) {
        let Some(source) = self.last_source.take() else {
            return;
        };
        self.last_line = Some(Instant::now());
        let counts = std::mem::take(&mut self.counts);
        let by_reason = |reason: DropReason| counts[reason.index()];
        warn!(
            too_big = by_reason(DropReason::TooBig),
            denied = by_reason(DropReason::Denied),
            too_fast = by_reason(DropReason::TooFast),
            reply_budget = by_reason(DropReason::ReplyBudget),
            busy = by_reason(DropReason::Busy),
            send_failed = by_reason(DropReason::SendFailed),
            last_source = %source,
            "dropped datagrams or replies (counted since the last such line)"
        );
    }
}

/// The kernel's count of datagrams dropped for want of room in the
/// socket's receive buffer (`receive_buffer_bytes`), as `/proc/net/udp`
/// shows it for the socket's inode; added to the metrics as it grows.
struct KernelDrops {
    inode: Option<u64>,
    ipv6: bool,
    seen: u64,
}

/// Most bytes of `/proc/net/udp` read (it has a line per UDP socket).
const PROC_NET_UDP_MAX: u64 = 16 * 1024 * 1024;

impl KernelDrops {
    fn new(socket: &UdpSocket) -> Self {
        KernelDrops {
            inode: rustix::fs::fstat(socket).ok().map(|st| st.st_ino),
            ipv6: socket.local_addr().is_ok_and(|a| a.is_ipv6()),
            seen: 0,
        }
    }

    /// Reads the count (off the async workers) and counts what is new.
    async fn update(&mut self, metrics: &DatagramMetrics) {
        let Some(inode) = self.inode else {
            return;
        };
        let table = if self.ipv6 {
            "/proc/net/udp6"
        } else {
            "/proc/net/udp"
        };
        let read = tokio::task::spawn_blocking(move || drops_of(table, inode)).await;
        let Ok(Some(drops)) = read else {
            return;
        };
        if drops > self.seen {
            metrics.dropped[DropReason::ReceiveBuffer.index()].inc_by(drops - self.seen);
            warn!(
                dropped = drops - self.seen,
                "the kernel dropped datagrams: the receive buffer was full (raise receive_buffer_bytes)"
            );
        }
        self.seen = drops;
    }
}

/// The `drops` column of the socket with `inode` in a `/proc/net/udp` table.
fn drops_of(table: &str, inode: u64) -> Option<u64> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(table)
        .ok()?
        .take(PROC_NET_UDP_MAX)
        .read_to_string(&mut text)
        .ok()?;
    parse_drops(&text, inode)
}

/// See [`drops_of`]: the columns are `sl local rem st tx:rx tr:when
/// retrnsmt uid timeout inode ref pointer drops`.
fn parse_drops(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let this: u64 = fields.get(9)?.parse().ok()?;
        (this == inode).then(|| fields.get(12)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_replies_are_bounded_by_count_and_by_memory() {
        let kib = |n| pending_cost_kib(n) as usize;
        assert_eq!(PENDING_KIB / kib(1), 1024);
        assert_eq!(PENDING_KIB / kib(341), 1024);
        assert_eq!(PENDING_KIB / kib(342), 963);
        // The longest datagrams: 79 at once, 16 MiB in all.
        assert_eq!(PENDING_KIB / kib(65_506), 79);
    }

    #[test]
    fn the_drops_of_a_socket_are_read_by_its_inode() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            \x20 99: 0100007F:3039 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
            \x20100: 0100007F:303A 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2 0000000000000000 0\n";
        assert_eq!(parse_drops(table, 4242), Some(17));
        assert_eq!(parse_drops(table, 4343), Some(0));
        assert_eq!(parse_drops(table, 1), None);
        assert_eq!(parse_drops("", 4242), None);
    }

    #[tokio::test]
    async fn this_kernel_shows_a_bound_socket_with_no_drops() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let inode = rustix::fs::fstat(&socket).unwrap().st_ino;
        assert_eq!(drops_of("/proc/net/udp", inode), Some(0));
    }
}
