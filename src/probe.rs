//! `switchboard probe`: connects to the listeners of a config and checks
//! that each one serves, for container health checks and for operators.
//! echo must echo a line, the bots must answer one (the random-bot is sent
//! its farewell, which is never recorded in the history), download must
//! accept.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use crate::config::{Config, HandlerConfig, ListenerConfig};

/// Longest reply line a probe reads.
const MAX_REPLY: usize = 64 * 1024;

/// What a probe of one listener found.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// The listener's name.
    pub name: String,
    /// The address probed.
    pub addr: SocketAddr,
    /// How it went.
    pub outcome: Result<Probed, String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// What a listener that passed showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probed {
    /// echo sent the probe line back.
    Echoed,
    /// A bot answered with a line.
    Answered,
    /// The connection was accepted (download, or a random-bot without a
    /// farewell: asking it anything would go into its history).
    Accepted,
}

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Probed::Echoed => "echoed",
            Probed::Answered => "answered",
            Probed::Accepted => "accepted",
        })
    }
}

impl ProbeResult {
    /// True when the listener passed.
    pub fn ok(&self) -> bool {
        self.outcome.is_ok()
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
            outcome: Err("the probe did not finish".to_owned()),
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
    let outcome = if addr.port() == 0 {
        Err("port 0 is chosen when the server starts: nothing to probe".to_owned())
    } else {
        match timeout(limit, exchange(listener, addr)).await {
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
        outcome,
        elapsed: started.elapsed(),
    }
}

async fn exchange(listener: &ListenerConfig, addr: SocketAddr) -> Result<Probed, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (message, expect) = match &listener.handler {
        HandlerConfig::Download(_) => return Ok(Probed::Accepted),
        HandlerConfig::RandomBot(bot) => match bot.farewell.first() {
            Some(farewell) => (farewell.clone(), Probed::Answered),
            None => return Ok(Probed::Accepted),
        },
        HandlerConfig::KeywordBot(_) => ("switchboard probe".to_owned(), Probed::Answered),
        HandlerConfig::Echo => (
            format!("switchboard probe {}", std::process::id()),
            Probed::Echoed,
        ),
    };
    let mut line = listener.encoding.encode(&message).into_owned();
    line.push(b'\n');
    stream
        .write_all(&line)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let reply = read_line(&mut stream).await?;
    if expect == Probed::Echoed && reply != line {
        return Err(format!(
            "echoed {:?} instead of the probe line",
            String::from_utf8_lossy(&reply)
        ));
    }
    Ok(expect)
}

/// Reads up to and including the first newline, at most [`MAX_REPLY`] bytes.
async fn read_line(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed without answering".to_owned());
        }
        reply.extend_from_slice(&buf[..n]);
        if let Some(end) = memchr::memchr(b'\n', &reply) {
            reply.truncate(end + 1);
            return Ok(reply);
        }
        if reply.len() > MAX_REPLY {
            return Err(format!("no line within {MAX_REPLY} bytes"));
        }
    }
}
