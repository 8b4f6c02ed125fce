//! switchboard: one process, configured from TOML, runs several TCP
//! listeners on one tokio runtime and routes every client to a handler:
//! echo, download, keyword-bot or random-bot.
//!
//! The library is the whole daemon; the binary only parses the command line.
//! Start at [`server::Server`]: `Server::bind(&config)?.run(shutdown).await`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod connection;
pub mod framing;
pub mod handler;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod server;
pub mod shutdown;
pub mod template;
pub mod text;

pub use config::{Config, ConfigError};
pub use server::{BoundListener, Server};
pub use shutdown::ShutdownReport;
