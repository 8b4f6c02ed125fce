//! Reloads, part one: the plan. Given the listeners running now, the
//! sockets parked from systemd and the listeners of the new config, a pure
//! function decides where each new listener gets its socket. Applying the
//! plan (binding, stopping, starting) is `RunState::reload`'s job.

use std::fmt;
use std::net::SocketAddr;

use super::BoundListener;
use super::listener::BindError;
use crate::config::ListenerConfig;
use crate::history::HistoryOpenError;

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Listeners new in the config, now serving.
    pub added: Vec<String>,
    /// Listeners gone from the config: no longer accepting, their
    /// connections asked to finish.
    pub removed: Vec<String>,
    /// Listeners whose settings changed; new connections get the new ones
    /// (open ones: see `ServerHandle::reload`).
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
    /// A history the new config names could not be opened.
    #[error(transparent)]
    History(#[from] HistoryOpenError),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Stopped,
    /// Opening the histories panicked (a bug; the panic's line is in the
    /// log): nothing changed, and the server serves on.
    #[error("opening the histories panicked (see the panic's log line); nothing changed")]
    Panicked,
}

/// What the plan needs to know of a running listener.
#[derive(Debug, Clone, Copy)]
pub(super) struct Running<'a> {
    /// Its name.
    pub name: &'a str,
    /// The `bind` of its current config.
    pub bind: SocketAddr,
    /// The address its socket really has (systemd's, or the port 0 chose).
    pub addr: SocketAddr,
    /// True when its socket came from systemd.
    pub activated: bool,
    /// True for a UDP socket.
    pub udp: bool,
}

impl Running<'_> {
    /// True when `new` (its config after the reload) can keep this socket:
    /// the same transport, and the same `bind` or the address systemd's
    /// socket actually has.
    fn keeps_address(&self, new: &ListenerConfig) -> bool {
        self.udp == new.transport.is_udp()
            && (self.bind == new.bind || (self.activated && self.addr == new.bind))
    }

    /// True when this listener's socket is the one `new` would bind.
    fn listens_on(&self, new: &ListenerConfig) -> bool {
        self.udp == new.transport.is_udp() && (self.bind == new.bind || self.addr == new.bind)
    }
}

/// What the plan needs to know of a socket from systemd whose listener
/// went away in an earlier reload (systemd keeps it open either way).
#[derive(Debug, Clone, Copy)]
pub(super) struct Parked<'a> {
    /// Its `FileDescriptorName=`.
    pub fd_name: Option<&'a str>,
    /// Its address.
    pub addr: SocketAddr,
    /// True for a UDP socket.
    pub udp: bool,
}

/// Where a listener of the new config gets its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SocketSource {
    /// Keeps the socket of the running listener at this index (same name,
    /// same address).
    Keep(usize),
    /// Takes over the socket of the running listener at this index, which
    /// leaves its address (two sockets cannot listen on one address).
    TakeOver(usize),
    /// Takes the parked systemd socket at this index.
    Unpark(usize),
    /// Binds a new socket.
    Bind,
}

/// Where every listener of the new config gets its socket, in config order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReloadPlan {
    /// One per listener of the new config.
    pub sockets: Vec<SocketSource>,
}

impl ReloadPlan {
    /// True when the running listener at `index` keeps its socket.
    pub(super) fn keeps(&self, index: usize) -> bool {
        self.sockets.contains(&SocketSource::Keep(index))
    }

    /// True when a new listener takes over the running one's socket.
    pub(super) fn takes_over(&self, index: usize) -> bool {
        self.sockets.contains(&SocketSource::TakeOver(index))
    }

    /// True when a new listener takes the parked socket at `index`.
    pub(super) fn unparks(&self, index: usize) -> bool {
        self.sockets.contains(&SocketSource::Unpark(index))
    }
}

/// Plans a reload: a listener keeps its socket when its name and address
/// stay; otherwise it takes a parked systemd socket named after it or on
/// its address, else the socket on its address of a running listener that
/// leaves that address, else a new socket. No socket goes to two listeners.
pub(super) fn plan(
    running: &[Running<'_>],
    parked: &[Parked<'_>],
    new: &[ListenerConfig],
) -> ReloadPlan {
    let mut sockets: Vec<SocketSource> = Vec::with_capacity(new.len());
    for listener in new {
        let same_name = running.iter().position(|r| r.name == listener.name);
        if let Some(i) = same_name.filter(|&i| running[i].keeps_address(listener)) {
            sockets.push(SocketSource::Keep(i));
            continue;
        }
        let free = |source: SocketSource| !sockets.contains(&source);
        let udp = listener.transport.is_udp();
        let unpark = (0..parked.len())
            .filter(|&j| free(SocketSource::Unpark(j)) && parked[j].udp == udp)
            .find(|&j| parked[j].fd_name == Some(listener.name.as_str()))
            .or_else(|| {
                (0..parked.len())
                    .filter(|&j| free(SocketSource::Unpark(j)) && parked[j].udp == udp)
                    .find(|&j| parked[j].addr == listener.bind)
            });
        if let Some(j) = unpark {
            sockets.push(SocketSource::Unpark(j));
            continue;
        }
        let take_over = running.iter().enumerate().position(|(i, r)| {
            listener.bind.port() != 0
                && r.listens_on(listener)
                && free(SocketSource::TakeOver(i))
                && !new.iter().any(|n| n.name == r.name && r.keeps_address(n))
        });
        sockets.push(take_over.map_or(SocketSource::Bind, SocketSource::TakeOver));
    }
    ReloadPlan { sockets }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    /// The listeners of a config of echo listeners, `(name, bind)` each.
    fn config(listeners: &[(&str, &str)]) -> Vec<ListenerConfig> {
        let toml: String = listeners
            .iter()
            .map(|(name, bind)| {
                format!("[[listener]]\nname = \"{name}\"\nbind = \"{bind}\"\nhandler = \"echo\"\n")
            })
            .collect();
        Config::from_toml(&toml, "reload.toml")
            .expect("config")
            .listeners
    }

    fn running<'a>(name: &'a str, bind: &str) -> Running<'a> {
        Running {
            name,
            bind: addr(bind),
            addr: addr(bind),
            activated: false,
            udp: false,
        }
    }

    #[test]
    fn an_unchanged_listener_keeps_its_socket() {
        let now = [
            running("a", "127.0.0.1:7001"),
            running("b", "127.0.0.1:7002"),
        ];
        let new = config(&[("b", "127.0.0.1:7002"), ("a", "127.0.0.1:7001")]);
        let plan = plan(&now, &[], &new);
        assert_eq!(plan.sockets, [SocketSource::Keep(1), SocketSource::Keep(0)]);
        assert!(plan.keeps(0) && plan.keeps(1));
    }

    #[test]
    fn a_listener_whose_bind_changed_moves_to_a_new_socket() {
        let now = [running("a", "127.0.0.1:7001")];
        let new = config(&[("a", "127.0.0.1:7009")]);
        let plan = plan(&now, &[], &new);
        assert_eq!(plan.sockets, [SocketSource::Bind]);
        assert!(!plan.keeps(0) && !plan.takes_over(0));
    }

    #[test]
    fn a_removed_listener_is_neither_kept_nor_taken_over() {
        let now = [
            running("a", "127.0.0.1:7001"),
            running("gone", "127.0.0.1:7002"),
        ];
        let new = config(&[("a", "127.0.0.1:7001")]);
        let plan = plan(&now, &[], &new);
        assert_eq!(plan.sockets, [SocketSource::Keep(0)]);
        assert!(!plan.keeps(1) && !plan.takes_over(1));
    }

    #[test]
    fn a_listener_added_on_a_removed_ones_address_takes_its_socket_over() {
        let now = [running("old", "127.0.0.1:7001")];
        let new = config(&[("new", "127.0.0.1:7001")]);
        assert_eq!(plan(&now, &[], &new).sockets, [SocketSource::TakeOver(0)]);
        // Two listeners swapping addresses take over each other's socket.
        let now = [
            running("a", "127.0.0.1:7001"),
            running("b", "127.0.0.1:7002"),
        ];
        let new = config(&[("a", "127.0.0.1:7002"), ("b", "127.0.0.1:7001")]);
        assert_eq!(
            plan(&now, &[], &new).sockets,
            [SocketSource::TakeOver(1), SocketSource::TakeOver(0)]
        );
    }

    #[test]
    fn a_socket_whose_listener_stays_is_not_taken_over() {
        // "a" keeps 7001, so "b" cannot have it: it binds (and fails there).
        // (A config cannot say this; the plan must not rely on that.)
        let now = [running("a", "127.0.0.1:7001")];
        let a = config(&[("a", "127.0.0.1:7001")]).remove(0);
        let mut b = a.clone();
        b.name = "b".to_owned();
        assert_eq!(
            plan(&now, &[], &[a, b]).sockets,
            [SocketSource::Keep(0), SocketSource::Bind]
        );
    }

    #[test]
    fn port_zero_never_takes_a_socket_over() {
        let now = [running("old", "127.0.0.1:0")];
        let new = config(&[("new", "127.0.0.1:0")]);
        assert_eq!(plan(&now, &[], &new).sockets, [SocketSource::Bind]);
    }

    #[test]
    fn a_parked_systemd_socket_is_reclaimed_by_name_first_then_by_address() {
        let parked = [
            Parked {
                fd_name: Some("other"),
                addr: addr("127.0.0.1:7005"),
                udp: false,
            },
            Parked {
                fd_name: Some("web"),
                addr: addr("127.0.0.1:7006"),
                udp: false,
            },
        ];
        // "web" is bound elsewhere in the config: its name wins.
        let new = config(&[("web", "127.0.0.1:7100"), ("x", "127.0.0.1:7005")]);
        let plan = plan(&[], &parked, &new);
        assert_eq!(
            plan.sockets,
            [SocketSource::Unpark(1), SocketSource::Unpark(0)]
        );
        assert!(plan.unparks(0) && plan.unparks(1));
    }

    #[test]
    fn an_activated_listener_keeps_its_socket_when_its_bind_names_the_real_address() {
        let now = [Running {
            name: "a",
            bind: addr("127.0.0.1:7001"),
            addr: addr("127.0.0.1:7777"),
            activated: true,
            udp: false,
        }];
        let new = config(&[("a", "127.0.0.1:7777")]);
        assert_eq!(plan(&now, &[], &new).sockets, [SocketSource::Keep(0)]);
    }
}
