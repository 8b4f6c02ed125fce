//! switchboard: one process, configured from TOML, runs several TCP
//! listeners on one tokio runtime and routes every client to a handler:
//! echo, download, keyword-bot or random-bot.
//!
//! The library is the whole daemon; the binary only parses the command line.
//! Start at [`server::Server`]: `Server::bind(&config)?.run(shutdown).await`.

// One function may use `unsafe`: taking ownership of the sockets systemd
// passes by number (`systemd::own_passed_descriptor`); nothing else can.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod connection;
pub mod daemon;
pub mod framing;
pub mod handler;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod probe;
pub mod server;
pub mod shutdown;
pub mod systemd;
pub mod template;
pub mod text;

pub use config::{Config, ConfigError};
pub use server::{BoundListener, ReloadSummary, Server, ServerHandle, StartError};
pub use shutdown::ShutdownReport;
