//! What an admitted connection goes through before its handler: its
//! socket options (TCP_NODELAY, keepalive), and on a TLS listener the
//! first-byte decision (`mode = "optional"`) and the handshake, whose
//! outcome the connection's span records (version, cipher, the client
//! certificate's subject).

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{debug, field, info};

use crate::conn::signals::{DENIED, SHUTDOWN};
use crate::conn::{self, ServerStream, Signals};
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
fn keep_alive(stream: &TcpStream, idle: Duration) -> io::Result<()> {
    use rustix::net::sockopt;
    sockopt::set_socket_keepalive(stream, true)?;
    sockopt::set_tcp_keepidle(stream, idle)?;
    sockopt::set_tcp_keepintvl(stream, idle.min(KEEPALIVE_INTERVAL))?;
    sockopt::set_tcp_keepcnt(stream, KEEPALIVE_PROBES)?;
    Ok(())
}

/// Sets an admitted connection's socket options.
pub(super) fn prepare_socket(stream: &TcpStream, tcp_keepalive: Option<Duration>) {
    // Replies are small: they must not wait for Nagle and delayed ACKs.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "cannot set TCP_NODELAY");
    }
    if let Some(idle) = tcp_keepalive
        && let Err(e) = keep_alive(stream, idle)
    {
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
            let span = tracing::Span::current();
            span.record(
                "tls",
                field::display(format_args!("{} {}", info.version, info.cipher)),
            );
            if let Some(subject) = &info.client_subject {
                // The client's own words (its CA signed them, but a CN may
                // hold newlines, escapes, kilobytes): escaped and bounded,
                // as every line of the connection carries them.
                let quoted = conn::text::quote(subject, conn::text::QUOTE_MAX_BYTES);
                span.record("client_cert", field::display(format_args!("\"{quoted}\"")));
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
