//! switchboard: one process, configured from TOML, runs several TCP
//! listeners on one tokio runtime and routes every client to a handler:
//! echo, download, keyword-bot, random-bot or metrics.
//!
//! The library is the whole daemon; the binary only parses the command line
//! and prints. The layers, from the bottom: `conn` (one client's connection:
//! bounded reads and writes, framing, text encodings), `handler` (what a
//! listener does with a connection, one file per handler; `history`, where
//! a random-bot keeps its messages, sits beside it), `config` (the
//! TOML file), `server` (listeners, accept loops, limits, drain, reload),
//! `daemon` (signals, systemd, logging), `probe`, and `client` (the
//! `get`, `send` and `chat` commands). A module only uses the ones below it.
//!
//! Start at [`Server`]: `Server::bind(&config)?.run(shutdown).await`, or at
//! [`Daemon`] for the whole process.

// One function may use `unsafe`: taking ownership of the sockets systemd
// passes by number (`daemon::systemd::own_passed_descriptor`); nothing else can.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod config;
mod conn;
mod daemon;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod handler;
pub mod history;
/// HTTP/1.1's rules as pure functions (request heads, ranges, validators,
/// preconditions, dates), below the download handler.
mod http;
#[cfg(test)]
mod log_capture;
mod log_context;
mod metrics;
mod probe;
mod server;
mod struct_keys;
mod suggest;
mod tar;
pub mod tls;

pub use config::{Config, ConfigError, ConfigWarning};
pub use conn::text::TextEncoding;
pub use daemon::logging::init as init_logging;
pub use daemon::systemd::{ActivatedSockets, ActivationError};
pub use daemon::{Daemon, DaemonError, FORCED_EXIT_STATUS};
pub use probe::{ProbeResult, UnknownListener, probe, probe_address};

/// The PROXY protocol headers a balancer sends, written for a connection
/// (for clients and load generators that stand in for a balancer).
pub mod proxy_protocol {
    pub use crate::conn::proxy_header::{v1_header, v2_header};
}
pub use server::{
    BindError, BoundListener, PassedSocket, ReloadError, ReloadSummary, Server, ServerHandle,
    ServerStatus, ShutdownReport, StartError,
};
