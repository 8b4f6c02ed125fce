//! Process signals: the first SIGINT or SIGTERM starts a graceful shutdown,
//! a second one exits at once; SIGHUP asks for a reload.

use std::io::{self, Write as _};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::info;

/// Exit status after a second signal cut a graceful shutdown short
/// (128 + SIGINT, as shells report an interrupted program).
pub const FORCED_EXIT_STATUS: i32 = 130;

/// Installed SIGINT, SIGTERM and SIGHUP handlers. Install them before the
/// listeners are bound, so that no signal can arrive while the default
/// action (kill the process) still applies.
#[derive(Debug)]
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignalRequest {
    /// SIGINT or SIGTERM (named): shut down gracefully.
    Stop(&'static str),
    /// SIGHUP: re-read the config.
    Reload,
}

impl Signals {
    /// Installs the handlers; must be called inside a tokio runtime.
    pub(crate) fn install() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal.
    pub(crate) async fn next(&mut self) -> SignalRequest {
        tokio::select! {
            _ = self.term.recv() => SignalRequest::Stop("SIGTERM"),
            _ = self.int.recv() => SignalRequest::Stop("SIGINT"),
            _ = self.hup.recv() => SignalRequest::Reload,
        }
    }

    /// Logs that shutdown started on signal `name`, and arranges for the
    /// next SIGINT or SIGTERM to exit the process at once.
    pub(crate) fn stopping(mut self, name: &'static str) {
        info!(
            signal = name,
            "shutting down: no new connections, waiting for open ones (a second signal exits at once)"
        );
        tokio::spawn(async move {
            loop {
                if let SignalRequest::Stop(name) = self.next().await {
                    // Straight to stderr: the log writer's buffer is not
                    // flushed by exit().
                    let _ = writeln!(std::io::stderr(), "switchboard: second {name}: exiting now");
                    std::process::exit(FORCED_EXIT_STATUS);
                }
            }
        });
    }
}
