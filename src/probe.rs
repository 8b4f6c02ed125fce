//! `switchboard probe`: connects to the listeners of a config (or sends a
//! datagram to a UDP one) and checks
//! that each one serves, and serves with the handler its config names, for
//! container health checks and for operators. What each handler is sent and
//! must answer is in the handler's own file (its `probe`); this runner
//! connects, sends, reads (at most [`MAX_REPLY`] bytes, within the time
//! limit) and asks the handler's check after every read.
//!
//! A listener with `[listener.tls]` (either mode) is probed over TLS,
//! after the PROXY header if it takes one. The probe checks its own
//! config's listeners, so it accepts the certificate served whatever its
//! issuer and names, but reads the leaf's expiry: an expired certificate
//! fails, one that expires within [`EXPIRY_WARNING`] (14 days) passes with
//! a warning. A listener that requires a client certificate is probed up
//! to the handshake (the probe has none): it passes when the server
//! refuses the probe for want of one, after serving its certificate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use crate::client::{ClientTls, peer_expiry};
use crate::config::{Config, ListenerConfig};
use crate::conn::proxy_header::{self, Versions};
use crate::handler::probe::{Probe, ProbeContext, Verdict};
use crate::tls::ClientAuth;
use crate::tls::rotation::EXPIRY_WARNING;

/// Most bytes of an answer a probe reads.
const MAX_REPLY: usize = 64 * 1024;

/// What a probe of one listener found.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// The listener's name.
    pub name: String,
    /// The address probed.
    pub addr: SocketAddr,
    /// True for a UDP listener (probed with a datagram).
    pub udp: bool,
    /// True for a listener probed over TLS.
    pub tls: bool,
    /// How it went: what the listener showed (one word, such as `echoed`
    /// or `answered`), or why it failed.
    pub outcome: Result<&'static str, String>,
    /// What is doubtful about a listener that passed: its certificate
    /// expires within [`EXPIRY_WARNING`].
    pub warning: Option<String>,
    /// How long it took.
    pub elapsed: Duration,
}

impl ProbeResult {
    /// True when the listener passed.
    pub fn ok(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The address probed as an operator reads it: `/udp` after a UDP
    /// one, `/tls` after one probed over TLS.
    pub fn shown_addr(&self) -> String {
        if self.udp {
            format!("{}/udp", self.addr)
        } else if self.tls {
            format!("{}/tls", self.addr)
        } else {
            self.addr.to_string()
        }
    }
}

/// A listener named on the command line that the config does not have.
#[derive(Debug, thiserror::Error)]
#[error("no listener {name:?} in {source_name} (it has: {known})")]
pub struct UnknownListener {
    /// The name asked for.
    pub name: String,
    /// The config's source.
    pub source_name: String,
    /// The names it has.
    pub known: String,
}

/// Probes the listeners called `names` (all when empty), at once, each
/// within `limit`; results are in config order.
pub async fn probe(
    config: &Config,
    names: &[String],
    limit: Duration,
) -> Result<Vec<ProbeResult>, UnknownListener> {
    if let Some(missing) = names.iter().find(|n| config.listener(n).is_none()) {
        return Err(UnknownListener {
            name: missing.clone(),
            source_name: config.source.clone(),
            known: config
                .listeners
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let chosen: Vec<&ListenerConfig> = config
        .listeners
        .iter()
        .filter(|l| names.is_empty() || names.contains(&l.name))
        .collect();
    // Each starts as failed, so a probe that never reports counts as one.
    let mut results: Vec<ProbeResult> = chosen
        .iter()
        .map(|l| ProbeResult {
            name: l.name.clone(),
            addr: probe_address(l.bind),
            udp: l.transport.is_udp(),
            tls: l.tls.is_some(),
            outcome: Err("the probe did not finish".to_owned()),
            warning: None,
            elapsed: Duration::ZERO,
        })
        .collect();
    let mut probes = JoinSet::new();
    for (index, listener) in chosen.into_iter().enumerate() {
        let listener = listener.clone();
        probes.spawn(async move { (index, probe_one(&listener, limit).await) });
    }
    while let Some(done) = probes.join_next().await {
        if let Ok((index, result)) = done {
            results[index] = result;
        }
    }
    Ok(results)
}

/// The address a client on this machine reaches the listener at: a
/// wildcard bind is probed on the loopback address of its family.
pub fn probe_address(bind: SocketAddr) -> SocketAddr {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bind.port())
}

async fn probe_one(listener: &ListenerConfig, limit: Duration) -> ProbeResult {
    let addr = probe_address(listener.bind);
    let started = Instant::now();
    let mut warning = None;
    let outcome = if addr.port() == 0 {
        Err("port 0 is chosen when the server starts: nothing to probe".to_owned())
    } else {
        match timeout(limit, exchange(listener, addr, &mut warning)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(limit)
            )),
        }
    };
    ProbeResult {
        name: listener.name.clone(),
        addr,
        udp: listener.transport.is_udp(),
        tls: listener.tls.is_some(),
        warning: warning.filter(|_| outcome.is_ok()),
        outcome,
        elapsed: started.elapsed(),
    }
}

/// What the served certificate's expiry, `not_after`, means at `now`:
/// an error once it has passed, a warning within [`EXPIRY_WARNING`].
pub(crate) fn expiry_verdict(
    not_after: Option<SystemTime>,
    now: SystemTime,
) -> Result<Option<String>, String> {
    let Some(at) = not_after else {
        return Err("the served certificate's expiry cannot be read".to_owned());
    };
    let date = httpdate::fmt_http_date(at);
    match at.duration_since(now) {
        Err(_) | Ok(Duration::ZERO) => Err(format!(
            "the served certificate expired on {date}; clients refuse it"
        )),
        Ok(left) if left < EXPIRY_WARNING => {
            let days = left.as_secs() / 86_400;
            Ok(Some(format!(
                "the served certificate expires on {date}, in {}",
                match days {
                    0 => "less than a day".to_owned(),
                    1 => "1 day".to_owned(),
                    n => format!("{n} days"),
                }
            )))
        }
        Ok(_) => Ok(None),
    }
}

/// The PROXY protocol header the probe must send first, from `local` to
/// `server`, as the balancers of the listener do: one when the probe's own
/// address is a trusted proxy's (v2 where the listener takes it).
fn proxy_header_for(
    listener: &ListenerConfig,
    local: SocketAddr,
    server: SocketAddr,
) -> Result<Vec<u8>, String> {
    let Some(proxy) = &listener.proxy_protocol else {
        return Ok(Vec::new());
    };
    if proxy.trusts(local.ip()) {
        return Ok(match proxy.versions {
            Versions::V1 => proxy_header::v1_header(local, server),
            Versions::V2 | Versions::Any => proxy_header::v2_header(local, server),
        });
    }
    if proxy.required {
        return Err(format!(
            "the probe's address {} is not in trusted_proxies, and the listener requires \
             a PROXY header from everyone (proxy_protocol_required): add it to trusted_proxies",
            local.ip()
        ));
    }
    Ok(Vec::new())
}

/// What the listener's handler sends and expects, for a probe from `peer`
/// (a fresh random token each time).
fn handler_probe(listener: &ListenerConfig, peer: SocketAddr) -> Probe {
    let token = format!("{:016x}", rand::random::<u64>());
    listener.handler.probe(&ProbeContext {
        listener: &listener.name,
        encoding: listener.encoding,
        peer,
        token: &token,
    })
}

async fn exchange(
    listener: &ListenerConfig,
    addr: SocketAddr,
    warning: &mut Option<String>,
) -> Result<&'static str, String> {
    if listener.transport.is_udp() {
        return exchange_datagram(listener, addr).await;
    }
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let peer = stream.local_addr().map_err(|e| format!("connect: {e}"))?;
    let probe = handler_probe(listener, peer);
    let mut send = proxy_header_for(listener, peer, addr)?;
    let Some(tls) = &listener.tls else {
        send.extend_from_slice(&probe.send);
        return converse(&mut stream, &send, &probe)
            .await
            .map_err(Failure::into_words);
    };
    if !send.is_empty() {
        stream
            .write_all(&send)
            .await
            .map_err(|e| format!("send the PROXY header: {e}"))?;
    }
    let client = ClientTls::unverified().map_err(|e| e.to_string())?;
    // The whole probe is bounded by its caller; this bound is never reached.
    let until = crate::client::after(Duration::from_secs(3600));
    let wants_certificate = matches!(tls.client_ca, Some((_, ClientAuth::Required)));
    let mut stream = match client
        .handshake(stream, &addr.to_string(), until, PLAIN_HINT)
        .await
    {
        Ok(stream) => stream,
        // TLS 1.2 refuses a client without a certificate in the handshake.
        Err(e) if wants_certificate && refused_for_no_certificate(&e) => return Ok("handshook"),
        Err(e) => return Err(e.to_string()),
    };
    *warning = expiry_verdict(peer_expiry(&stream), SystemTime::now())?;
    match converse(&mut stream, &probe.send, &probe).await {
        Err(Failure::Read(e)) if wants_certificate && refused_for_no_certificate(&e) => {
            Ok("handshook")
        }
        done => done.map_err(Failure::into_words),
    }
}

/// What to check when a listener the config says speaks TLS does not.
const PLAIN_HINT: &str = "(is the daemon running this config? SIGHUP reloads it)";

/// True when the server ended the TLS session for want of a client
/// certificate (TLS 1.3 says it after the client's side of the handshake).
fn refused_for_no_certificate(e: &std::io::Error) -> bool {
    matches!(
        crate::client::rustls_error(e),
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired
                | rustls::AlertDescription::HandshakeFailure
        ))
    )
}

/// Why a conversation failed: the check's words, or a read's error.
enum Failure {
    Said(String),
    Read(std::io::Error),
}

impl Failure {
    fn into_words(self) -> String {
        match self {
            Failure::Said(words) => words,
            Failure::Read(e) => format!("read: {e}"),
        }
    }
}

/// Sends `send` and reads the answer until the probe's check decides.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    send: &[u8],
    probe: &Probe,
) -> Result<&'static str, Failure> {
    if !send.is_empty() {
        stream
            .write_all(send)
            .await
            .map_err(|e| Failure::Said(format!("send: {e}")))?;
    }
    let mut reply = Vec::new();
    let mut closed = false;
    let mut buf = [0u8; 4096];
    loop {
        match (probe.check)(&reply, closed) {
            Verdict::Pass(how) => return Ok(how),
            Verdict::Fail(why) => return Err(Failure::Said(why)),
            Verdict::More if closed => {
                return Err(Failure::Said("closed before answering in full".to_owned()));
            }
            Verdict::More if reply.len() >= MAX_REPLY => {
                return Err(Failure::Said(format!(
                    "no answer within the first {MAX_REPLY} bytes"
                )));
            }
            Verdict::More => {}
        }
        let n = stream.read(&mut buf).await.map_err(Failure::Read)?;
        closed = n == 0;
        reply.extend_from_slice(&buf[..n]);
    }
}

/// How often a UDP probe sends its datagram again while no answer came
/// (a datagram may be lost; every probe message is safe to repeat).
const DATAGRAM_RESEND: Duration = Duration::from_secs(1);

/// The probe of a UDP listener: the first line of what the handler's probe
/// sends, as one datagram, and its check of the reply datagram (as of a
/// connection closed after it: there is nothing more to wait for).
async fn exchange_datagram(
    listener: &ListenerConfig,
    addr: SocketAddr,
) -> Result<&'static str, String> {
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("bind: {e}"))?;
    // Connected: only the listener's datagrams are received.
    socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let peer = socket.local_addr().map_err(|e| format!("connect: {e}"))?;
    let probe = handler_probe(listener, peer);
    let end = probe
        .send
        .iter()
        .position(|&b| b == b'\n')
        .map_or(probe.send.len(), |i| i + 1);
    let datagram = &probe.send[..end];
    let mut buf = vec![0u8; MAX_REPLY];
    loop {
        socket
            .send(datagram)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let n = match timeout(DATAGRAM_RESEND, socket.recv(&mut buf)).await {
            Err(_) => continue,
            // Nothing listens there (an ICMP port unreachable came back).
            Ok(Err(e)) => return Err(format!("receive: {e}")),
            Ok(Ok(n)) => n,
        };
        return match (probe.check)(&buf[..n], true) {
            Verdict::Pass(how) => Ok(how),
            Verdict::Fail(why) => Err(why),
            Verdict::More => Err("answered only in part".to_owned()),
        };
    }
}
