//! The service manager's side of the daemon: readiness, status, reload and
//! stop notifications and the watchdog (`sd_notify`), and the listening
//! sockets it passes by socket activation (`LISTEN_FDS`). Outside systemd
//! (no `NOTIFY_SOCKET`, no `LISTEN_FDS`) all of it is silent and free.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::net::SocketType;
use sd_notify::NotifyState;
use tracing::{debug, info, warn};

use crate::config::ListenerConfig;
use crate::server::PassedKind;

/// Sends state changes to the service manager when it asked for them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// A notifier that talks to `NOTIFY_SOCKET` if the variable is set.
    pub(crate) fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    /// True when a service manager listens.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Every listener is bound: `READY=1`, with the status line.
    pub(crate) fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A new status line (`STATUS=`).
    pub(crate) fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// A reload starts: `RELOADING=1` with the time it started, as systemd
    /// requires for `Type=notify-reload` and accepts for `Type=notify`.
    pub(crate) fn reloading(&self) {
        if !self.enabled {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// Shutdown starts: `STOPPING=1`.
    pub(crate) fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when the
    /// unit sets `WatchdogSec=` (and the variable is meant for this process).
    pub(crate) fn watchdog_interval(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        sd_notify::watchdog_enabled()
            .filter(|timeout| !timeout.is_zero())
            .map(|timeout| timeout / 2)
    }

    /// Tells the watchdog the process is alive. It is sent from a task of the
    /// runtime that serves the clients, so a wedged runtime stops sending it.
    pub(crate) fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            debug!(error = %e, "cannot notify the service manager");
        }
    }
}

/// Why the sockets passed by the service manager cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS`, `LISTEN_PID` or `LISTEN_FDNAMES` is malformed.
    #[error("socket activation: bad LISTEN_FDS/LISTEN_FDNAMES environment: {0}")]
    Environment(io::Error),
    /// A passed descriptor is not a listening TCP socket or a UDP socket.
    #[error(
        "socket activation: descriptor {fd} ({name:?}) is not a listening TCP socket or a UDP socket: {reason}"
    )]
    NotTcpListener {
        /// The descriptor number.
        fd: RawFd,
        /// Its `FileDescriptorName=`.
        name: String,
        /// What it is instead.
        reason: String,
    },
    /// A passed socket matches no listener of the config, by name or address.
    #[error(
        "socket activation: socket {name:?} on {addr} matches no listener of the config \
         (name a listener {name:?}, bind one to {addr}, or remove the socket from the unit)"
    )]
    Unclaimed {
        /// Its `FileDescriptorName=`.
        name: String,
        /// Its address.
        addr: SocketAddr,
    },
}

/// The listening sockets passed by the service manager, until listeners
/// claim them.
#[derive(Debug, Default)]
pub struct ActivatedSockets {
    sockets: Vec<ActivatedSocket>,
}

#[derive(Debug)]
struct ActivatedSocket {
    name: String,
    addr: SocketAddr,
    socket: PassedKind,
}

/// A socket passed by the service manager, claimed by a listener.
#[derive(Debug)]
pub(crate) struct ClaimedSocket {
    /// The listening TCP socket, or the UDP socket.
    pub(crate) socket: PassedKind,
    /// Its `FileDescriptorName=`.
    pub(crate) fd_name: String,
}

/// How an activated socket was matched to its listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Its `FileDescriptorName=` is the listener's name.
    ByName,
    /// Its address is the listener's `bind`.
    ByAddress,
}

/// Set once the passed descriptors have been taken: they must have one owner.
static TAKEN: AtomicBool = AtomicBool::new(false);

impl ActivatedSockets {
    /// Takes the sockets passed in `LISTEN_FDS` (for this process, per
    /// `LISTEN_PID`), named by `LISTEN_FDNAMES`. None when not activated; also
    /// none on a second call, as the descriptors then belong to the first.
    pub fn from_env() -> Result<ActivatedSockets, ActivationError> {
        let fds = sd_notify::listen_fds_with_names().map_err(ActivationError::Environment)?;
        if fds.len() == 0 || TAKEN.swap(true, Ordering::SeqCst) {
            return Ok(ActivatedSockets::default());
        }
        let mut sockets = Vec::with_capacity(fds.len());
        for (fd, name) in fds {
            let owned = own_passed_descriptor(fd);
            let not_tcp = |reason: String| ActivationError::NotTcpListener {
                fd,
                name: name.clone(),
                reason,
            };
            let socket = match rustix::net::sockopt::socket_type(&owned) {
                Ok(SocketType::STREAM) => {
                    if !rustix::net::sockopt::socket_acceptconn(&owned)
                        .map_err(|e| not_tcp(e.to_string()))?
                    {
                        return Err(not_tcp("not listening".to_owned()));
                    }
                    PassedKind::Stream(std::net::TcpListener::from(owned))
                }
                Ok(SocketType::DGRAM) => PassedKind::Datagram(std::net::UdpSocket::from(owned)),
                Ok(other) => return Err(not_tcp(format!("socket type {other:?}"))),
                Err(e) => return Err(not_tcp(e.to_string())),
            };
            let addr = socket.local_addr().map_err(|e| not_tcp(e.to_string()))?;
            if !matches!(addr, SocketAddr::V4(_) | SocketAddr::V6(_)) {
                return Err(not_tcp(format!("address {addr}")));
            }
            sockets.push(ActivatedSocket { name, addr, socket });
        }
        Ok(ActivatedSockets { sockets })
    }

    /// Sockets passed and not yet claimed.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// True when no socket is left to claim.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Which socket `listener` would get, and how it matched: the one named
    /// after it, else the one on its `bind` address.
    fn find(&self, listener: &ListenerConfig) -> Option<(usize, Claim)> {
        // A UDP listener takes a UDP socket (`ListenDatagram=`), a TCP one a
        // TCP socket: one port number may have both.
        let udp = listener.transport.is_udp();
        let fits = |s: &ActivatedSocket| s.socket.is_datagram() == udp;
        let by_name = (self.sockets.iter()).position(|s| fits(s) && s.name == listener.name);
        if let Some(i) = by_name {
            return Some((i, Claim::ByName));
        }
        let i = (self.sockets.iter()).position(|s| fits(s) && s.addr == listener.bind)?;
        Some((i, Claim::ByAddress))
    }

    /// Takes the socket for `listener` (see [`ActivatedSockets::find`]).
    pub(crate) fn claim(&mut self, listener: &ListenerConfig) -> Option<ClaimedSocket> {
        let (index, how) = self.find(listener)?;
        let socket = self.sockets.swap_remove(index);
        info!(
            listener = listener.name,
            addr = %socket.addr,
            fd_name = socket.name,
            by = match how {
                Claim::ByName => "name",
                Claim::ByAddress => "address",
            },
            "using the socket passed by the service manager"
        );
        if socket.addr != listener.bind {
            warn!(
                listener = listener.name,
                bind = %listener.bind,
                addr = %socket.addr,
                "the socket systemd passed listens on another address than the config's bind; \
                 serving the socket's address"
            );
        }
        Some(ClaimedSocket {
            socket: socket.socket,
            fd_name: socket.name,
        })
    }

    /// Fails if a socket is left that no listener claimed.
    pub(crate) fn all_claimed(&self) -> Result<(), ActivationError> {
        match self.sockets.first() {
            None => Ok(()),
            Some(s) => Err(ActivationError::Unclaimed {
                name: s.name.clone(),
                addr: s.addr,
            }),
        }
    }
}

/// Takes ownership of a descriptor passed by the service manager.
///
/// The one `unsafe` of the crate: Rust cannot know that a number names an
/// open descriptor nobody else owns. Here systemd's protocol says so:
/// `sd_notify::listen_fds_with_names` returned `fd` only because
/// `LISTEN_PID` is this process, so descriptors 3..3+`LISTEN_FDS` were
/// opened for it by the service manager; and [`TAKEN`] makes sure that
/// they are wrapped once only, so each gets one owner.
#[allow(unsafe_code)]
fn own_passed_descriptor(fd: RawFd) -> OwnedFd {
    // SAFETY: see above: `fd` is open, and this is its only owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn passed(name: &str) -> ActivatedSocket {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        ActivatedSocket {
            name: name.to_owned(),
            addr: socket.local_addr().expect("addr"),
            socket: PassedKind::Stream(socket),
        }
    }

    fn listeners(binds: &[(&str, SocketAddr)]) -> Config {
        let toml: String = binds
            .iter()
            .map(|(name, bind)| {
                format!("[[listener]]\nname = \"{name}\"\nbind = \"{bind}\"\nhandler = \"echo\"\n")
            })
            .collect();
        Config::from_toml(&toml, "test.toml").expect("config")
    }

    #[test]
    fn a_socket_goes_to_the_listener_named_after_it_before_one_on_its_address() {
        let by_name = passed("echo");
        let other = passed("switchboard.socket");
        let (name_addr, other_addr) = (by_name.addr, other.addr);
        let mut sockets = ActivatedSockets {
            sockets: vec![other, by_name],
        };
        // "echo" is bound in the config to some other address: the name
        // wins; "second" gets the unnamed socket on its address.
        let elsewhere = "127.0.0.1:9".parse().expect("addr");
        let config = listeners(&[("echo", elsewhere), ("second", other_addr)]);
        let how = sockets.find(&config.listeners[0]).map(|(_, how)| how);
        let claimed = sockets.claim(&config.listeners[0]).expect("claimed");
        assert_eq!(
            (claimed.socket.local_addr().expect("addr"), how),
            (name_addr, Some(Claim::ByName))
        );
        assert_eq!(claimed.fd_name, "echo");
        let how = sockets.find(&config.listeners[1]).map(|(_, how)| how);
        let claimed = sockets.claim(&config.listeners[1]).expect("claimed");
        assert_eq!(
            (claimed.socket.local_addr().expect("addr"), how),
            (other_addr, Some(Claim::ByAddress))
        );
        assert!(sockets.is_empty());
        assert!(sockets.all_claimed().is_ok());
    }

    #[test]
    fn a_socket_no_listener_claims_is_an_error_naming_it() {
        let stray = passed("stray");
        let addr = stray.addr;
        let mut sockets = ActivatedSockets {
            sockets: vec![stray],
        };
        let config = listeners(&[("echo", "127.0.0.1:0".parse().expect("addr"))]);
        assert!(sockets.claim(&config.listeners[0]).is_none());
        let err = sockets.all_claimed().expect_err("unclaimed").to_string();
        assert!(
            err.contains("\"stray\"") && err.contains(&addr.to_string()),
            "{err}"
        );
    }

    #[test]
    fn without_a_notify_socket_nothing_is_sent_and_there_is_no_watchdog() {
        let notifier = Notifier { enabled: false };
        assert!(notifier.watchdog_interval().is_none());
        // Silent no-ops: nothing to connect to, nothing fails.
        notifier.ready("x");
        notifier.reloading();
        notifier.stopping();
    }
}
