//! Process signals: the first SIGINT or SIGTERM starts a graceful shutdown;
//! a second one exits at once.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

/// Exit status after a second signal cut a graceful shutdown short
/// (128 + SIGINT, as shells report an interrupted program).
pub const FORCED_EXIT_STATUS: i32 = 130;

/// Installed SIGINT and SIGTERM handlers. Install them before the listeners
/// are bound, so that no signal can arrive while the default action (kill
/// the process) still applies.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers; must be called inside a tokio runtime.
    pub fn install() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the first signal, then arranges for the next one to exit
    /// the process at once.
    pub async fn wait(mut self) {
        let name = self.next().await;
        info!(
            signal = name,
            "shutting down: no new connections, waiting for open ones (a second signal exits at once)"
        );
        tokio::spawn(async move {
            let name = self.next().await;
            warn!(signal = name, "second signal: exiting now");
            std::process::exit(FORCED_EXIT_STATUS);
        });
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
