//! Process signals: the first SIGINT or SIGTERM starts a graceful shutdown;
//! a second one exits at once.

use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// Exit status after a second signal cut a graceful shutdown short
/// (128 + SIGINT, as shells report an interrupted program).
pub const FORCED_EXIT_STATUS: i32 = 130;

/// Waits for SIGINT or SIGTERM, then arranges for the next one to exit the
/// process at once. If the handlers cannot be installed, the error is logged
/// and this waits forever (the process can still be killed).
pub async fn wait_for_signal() {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "cannot install signal handlers; SIGINT/SIGTERM will not shut down gracefully");
            return std::future::pending().await;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(
        signal = name,
        "shutting down: no new connections, waiting for open ones (a second signal exits at once)"
    );
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        warn!(signal = name, "second signal: exiting now");
        std::process::exit(FORCED_EXIT_STATUS);
    });
}
