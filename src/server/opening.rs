//! What an admitted connection goes through before its handler: its
//! socket options (TCP_NODELAY, keepalive), and on a TLS listener the
//! first-byte decision (`mode = "optional"`) and the handshake, whose
//! outcome the connection's log context records (version, cipher, the client
//! certificate's subject).

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::conn::signals::{DENIED, SHUTDOWN};
use crate::conn::{self, ServerStream, Signals};
use crate::log_context;
use crate::metrics::ListenerMetrics;
use crate::tls::Mode;
use crate::tls::service::{HandshakeError, SessionInfo, TlsService, starts_tls};

/// Probes between keepalive probes, at most, and how many unanswered probes
/// end the connection: a vanished peer is noticed within `idle` + 30 s.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

/// Turns on TCP keepalive: after `idle` without traffic the kernel probes
/// the peer, and closes the connection when it does not answer, so a peer
/// that vanished (power, network) does not hold its descriptor for the
/// whole idle timeout.
fn keep_alive(socket: impl AsFd, idle: Duration) -> io::Result<()> {
    use rustix::net::sockopt;
    sockopt::set_socket_keepalive(&socket, true)?;
    sockopt::set_tcp_keepidle(&socket, idle)?;
    sockopt::set_tcp_keepintvl(&socket, idle.min(KEEPALIVE_INTERVAL))?;
    sockopt::set_tcp_keepcnt(&socket, KEEPALIVE_PROBES)?;
    Ok(())
}

/// Sets on a listening socket the options its connections are to have:
/// TCP_NODELAY (replies are small: they must not wait for Nagle and
/// delayed ACKs) and keepalive after `tcp_keepalive` (`None`: off). Linux
/// copies a listening socket's options into each socket it accepts, so
/// while a listener's route keeps these settings its connections need no
/// system call of their own for them (five a connection, about 4% of a
/// short connection's CPU: bench/ANALYSIS.md, "connect"). False when one
/// could not be set: its connections then set them themselves.
pub(super) fn set_inherited_options(listener: impl AsFd, tcp_keepalive: Option<Duration>) -> bool {
    let set = rustix::net::sockopt::set_tcp_nodelay(&listener, true)
        .map_err(io::Error::from)
        .and_then(|()| match tcp_keepalive {
            Some(idle) => keep_alive(&listener, idle),
            // Off on the socket too: one from the service manager may have
            // it on (`KeepAlive=`, or the last run's config).
            None => rustix::net::sockopt::set_socket_keepalive(&listener, false)
                .map_err(io::Error::from),
        });
    match set {
        Ok(()) => true,
        Err(e) => {
            debug!(error = %e, "cannot set the connections' options on the listening socket");
            false
        }
    }
}

/// Sets an admitted connection's socket options, unless it `inherited`
/// them from its listening socket (see [`set_inherited_options`]); a
/// listener whose sockets inherit keepalive has it turned off here when
/// a reload turned it off.
pub(super) fn prepare_socket(stream: &TcpStream, tcp_keepalive: Option<Duration>, inherited: bool) {
    if inherited {
        return;
    }
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let set = match tcp_keepalive {
        Some(idle) => keep_alive(stream, idle),
        None => rustix::net::sockopt::set_socket_keepalive(stream, false).map_err(io::Error::from),
    };
    if let Err(e) = set {
        debug!(error = %e, "cannot set TCP keepalive");
    }
}

/// The stream an admitted connection is served over: the socket itself on
/// a plaintext listener; after a TLS handshake on a TLS one (with
/// `mode = "optional"`, when its first byte is a TLS record). `None`: the
/// handshake failed (counted, and logged in one line) or the server is
/// shutting down.
/// `first_message_timeout` bounds the wait for that first byte; the
/// handshake's outcome is counted in `metrics`.
pub(super) async fn secure(
    stream: TcpStream,
    tls: Option<&TlsService>,
    first_message_timeout: Duration,
    metrics: &ListenerMetrics,
    signals: &Signals,
) -> Option<ServerStream> {
    let Some(tls) = tls else {
        return Some(ServerStream::Plain(stream));
    };
    if tls.mode() == Mode::Optional {
        // The first byte decides; a peek leaves it for whoever reads next.
        // A plaintext client may take its time to type a first line.
        let mut first = [0u8; 1];
        let peeked = tokio::select! {
            biased;
            // A reload that denies the client ends the wait too, as it
            // does a plaintext connection's.
            _ = signals.any_of(SHUTDOWN | DENIED) => return None,
            // Boxed: only these connections carry the peek and its timer.
            peeked = Box::pin(tokio::time::timeout(first_message_timeout, stream.peek(&mut first))) => peeked,
        };
        match peeked {
            Ok(Ok(1)) if starts_tls(first[0]) => {}
            // Plaintext, a close, or silence: the connection's own reads
            // and deadlines deal with it.
            Ok(Ok(_)) | Err(_) => return Some(ServerStream::Plain(stream)),
            Ok(Err(e)) => {
                debug!(error = %e, "closed before its first byte");
                return None;
            }
        }
    }
    let handshake = tokio::select! {
        biased;
        fired = signals.any_of(SHUTDOWN | DENIED) => {
            if fired & SHUTDOWN == 0 {
                // A denied client costs no further handshake.
                debug!("a reload denied this client during its TLS handshake");
                return None;
            }
            Err(HandshakeError::Shutdown)
        }
        // Boxed: a plaintext connection's task does not carry the
        // handshake's state (every idle connection pays for its task's size).
        handshake = Box::pin(tls.handshake(stream)) => handshake,
    };
    match handshake {
        Ok(stream) => {
            metrics.tls_handshake("ok");
            let info = SessionInfo::of(&stream);
            log_context::record_tls(format_args!("{} {}", info.version, info.cipher));
            if let Some(subject) = &info.client_subject {
                // The client's own words (its CA signed them, but a CN may
                // hold newlines, escapes, kilobytes): escaped and bounded,
                // as every line of the connection carries them.
                let quoted = conn::text::quote(subject, conn::text::QUOTE_MAX_BYTES);
                log_context::record_client_cert(format_args!("\"{quoted}\""));
            }
            Some(ServerStream::Tls(Box::new(stream)))
        }
        Err(e) => {
            metrics.tls_handshake(e.label());
            info!(reason = e.label(), "TLS handshake failed: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use rustix::net::sockopt;

    use super::*;

    /// An accepted socket of a listener set with `set_inherited_options`.
    async fn accepted(tcp_keepalive: Option<Duration>) -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        assert!(set_inherited_options(&listener, tcp_keepalive));
        let addr = listener.local_addr().expect("its address");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    /// What an accepted socket has: TCP_NODELAY, and keepalive with its
    /// idle time, interval and probe count, if it is on.
    fn options(socket: &TcpStream) -> (bool, Option<(Duration, Duration, u32)>) {
        let nodelay = sockopt::tcp_nodelay(socket).expect("TCP_NODELAY");
        let keepalive = sockopt::socket_keepalive(socket)
            .expect("SO_KEEPALIVE")
            .then(|| {
                (
                    sockopt::tcp_keepidle(socket).expect("TCP_KEEPIDLE"),
                    sockopt::tcp_keepintvl(socket).expect("TCP_KEEPINTVL"),
                    sockopt::tcp_keepcnt(socket).expect("TCP_KEEPCNT"),
                )
            });
        (nodelay, keepalive)
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_the_listening_socket_s_options() {
        let idle = Duration::from_secs(7);
        let (_client, socket) = accepted(Some(idle)).await;
        let want = Some((idle, Duration::from_secs(7), KEEPALIVE_PROBES));
        assert_eq!(options(&socket), (true, want));
        prepare_socket(&socket, Some(idle), true);
        assert_eq!(options(&socket), (true, want));
        let (_client, socket) = accepted(None).await;
        assert_eq!(options(&socket), (true, None));
    }

    /// An IPv6 listener's sockets inherit the same options.
    #[tokio::test]
    async fn an_ipv6_listener_s_sockets_inherit_its_options() {
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            return; // no IPv6 here
        };
        let idle = Duration::from_secs(9);
        assert!(set_inherited_options(&listener, Some(idle)));
        let addr = listener.local_addr().expect("its address");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_client, socket) = (client.expect("connect"), accepted.expect("accept").0);
        let want = Some((idle, KEEPALIVE_INTERVAL.min(idle), KEEPALIVE_PROBES));
        assert_eq!(options(&socket), (true, want));
    }

    /// A socket passed by the service manager keeps what the last run (or
    /// the socket unit) set on it: a run with keepalive off turns it off.
    #[tokio::test]
    async fn a_listening_socket_with_keepalive_on_has_it_off_when_the_config_says_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        assert!(set_inherited_options(
            &listener,
            Some(Duration::from_secs(7))
        ));
        assert!(set_inherited_options(&listener, None));
        let addr = listener.local_addr().expect("its address");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_client, socket) = (client.expect("connect"), accepted.expect("accept").0);
        assert_eq!(options(&socket), (true, None));
    }

    #[tokio::test]
    async fn a_connection_whose_route_changed_sets_its_own_options() {
        let (_client, socket) = accepted(Some(Duration::from_secs(7))).await;
        let idle = Duration::from_secs(300);
        prepare_socket(&socket, Some(idle), false);
        let want = Some((idle, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES));
        assert_eq!(options(&socket), (true, want));
        // Turned off by a reload: off on the socket too.
        prepare_socket(&socket, None, false);
        assert_eq!(options(&socket), (true, None));
    }
}
