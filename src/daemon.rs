//! The daemon around the server: process signals (SIGTERM/SIGINT stop,
//! SIGHUP reloads the config file), the service manager (sockets it passed,
//! readiness, status, watchdog) and the listener table printed at start.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::limits;
use crate::server::{Server, ServerHandle, StartError};
use crate::shutdown::{ShutdownReport, SignalRequest, Signals};
use crate::systemd::{ActivatedSockets, Notifier};

/// How often the status line sent to the service manager is refreshed (it
/// is sent only when it changed).
const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// How long a reload may take to read and check the config file (a file on
/// a hung network mount must not hang reloads forever).
const CONFIG_READ_LIMIT: Duration = Duration::from_secs(10);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    /// A listener could not be started.
    #[error(transparent)]
    Start(#[from] StartError),
}

impl DaemonError {
    /// True when the config (or the socket units, which must match it) is
    /// wrong, rather than the machine: worth exit status 78, not a restart.
    pub fn is_config_mistake(&self) -> bool {
        matches!(self, DaemonError::Start(StartError::Activation(_)))
    }
}

/// Runs the server of `config` until SIGTERM or SIGINT, reloading
/// `config_path` on SIGHUP (the embedded default, with no path, has nothing
/// to reload). `activated` are the sockets systemd passed: take them with
/// [`ActivatedSockets::from_env`] first thing in `main`, before anything
/// else opens a descriptor. Must be called inside a tokio runtime.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    mut activated: ActivatedSockets,
) -> Result<ShutdownReport, DaemonError> {
    // Before anything is bound: no signal may find the default action (exit).
    let mut signals = Signals::install().map_err(DaemonError::Signals)?;
    let descriptors = DescriptorBudget::raise_for(&config);
    let notifier = Notifier::from_env();
    let server = Server::start(&config, &mut activated)?;
    println!(
        "switchboard {} serving ({}):",
        env!("CARGO_PKG_VERSION"),
        config.source
    );
    for l in server.listeners() {
        let from = if l.activated {
            "  (socket from systemd)"
        } else {
            ""
        };
        println!("  {:<16} {:<12} {}{from}", l.name, l.handler.name(), l.addr);
    }
    let handle = server.handle();
    notifier.ready(&handle.status().to_string());
    if let Some(interval) = notifier.watchdog_interval() {
        tokio::spawn(watchdog(notifier, interval));
    }
    let status_updates = notifier
        .enabled()
        .then(|| tokio::spawn(report_status(notifier, handle.clone())));

    // Reloads run in their own task, so that SIGTERM is never stuck behind
    // one; SIGHUPs that arrive during a reload are coalesced into one more.
    let reload_requested = Arc::new(Notify::new());
    let reloads = tokio::spawn(reload_worker(
        reload_requested.clone(),
        handle,
        config_path,
        notifier,
        descriptors,
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            match signals.next().await {
                SignalRequest::Stop(name) => {
                    if let Some(task) = &status_updates {
                        task.abort();
                    }
                    reloads.abort();
                    notifier.stopping();
                    signals.stopping(name);
                    let _ = stop.send(());
                    return;
                }
                SignalRequest::Reload => reload_requested.notify_one(),
            }
        }
    });
    Ok(server
        .run(async {
            let _ = stopped.await;
        })
        .await)
}

/// Applies a reload for each SIGHUP, one at a time, telling the service
/// manager `RELOADING=1` before and `READY=1` after, with the outcome in
/// the status line.
async fn reload_worker(
    requested: Arc<Notify>,
    handle: ServerHandle,
    path: Option<PathBuf>,
    notifier: Notifier,
    mut descriptors: DescriptorBudget,
) {
    loop {
        requested.notified().await;
        notifier.reloading();
        let outcome = reload(&handle, path.as_ref(), &mut descriptors).await;
        let status = match outcome {
            Ok(()) => handle.status().to_string(),
            Err(e) => format!("{}; last reload failed: {e}", handle.status()),
        };
        notifier.ready(&status);
    }
}

/// Re-reads the config file and applies it; any error leaves the running
/// config in place and is logged in one line (and returned).
async fn reload(
    handle: &ServerHandle,
    path: Option<&PathBuf>,
    descriptors: &mut DescriptorBudget,
) -> Result<(), String> {
    let Some(path) = path.cloned() else {
        info!("SIGHUP: running the embedded default config, which has no file to re-read");
        return Ok(());
    };
    info!(config = %path.display(), "SIGHUP: reloading the config");
    let result = load_and_apply(handle, path, descriptors).await;
    if let Err(e) = &result {
        error!("reload failed, still serving the previous config: {e}");
    }
    result
}

async fn load_and_apply(
    handle: &ServerHandle,
    path: PathBuf,
    descriptors: &mut DescriptorBudget,
) -> Result<(), String> {
    let read = tokio::task::spawn_blocking(move || Config::from_file(&path));
    let config = match tokio::time::timeout(CONFIG_READ_LIMIT, read).await {
        Ok(Ok(Ok(config))) => config,
        Ok(Ok(Err(e))) => return Err(e.to_string()),
        Ok(Err(e)) => return Err(format!("reading the config failed: {e}")),
        Err(_) => {
            return Err(format!(
                "reading the config took longer than {}",
                humantime::format_duration(CONFIG_READ_LIMIT)
            ));
        }
    };
    descriptors.check(&config);
    match handle.reload(config).await {
        Ok(summary) => {
            info!("reloaded: {summary}");
            Ok(())
        }
        // The whole chain: "listener "x": cannot listen on ...: Address in use".
        Err(e) => Err(format!("{:#}", anyhow::Error::from(e))),
    }
}

/// Sends `WATCHDOG=1` every `interval`, from the runtime that serves clients.
async fn watchdog(notifier: Notifier, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        notifier.watchdog();
    }
}

/// Keeps the service manager's status line current.
async fn report_status(notifier: Notifier, handle: ServerHandle) {
    let mut last = handle.status();
    let mut ticks = tokio::time::interval(STATUS_INTERVAL);
    loop {
        ticks.tick().await;
        let now = handle.status();
        if now != last {
            notifier.status(&now.to_string());
            last = now;
        }
    }
}

/// The open-file limit, raised once at start, against what configs need.
#[derive(Debug)]
struct DescriptorBudget {
    /// The soft limit after raising it (`None`: unlimited).
    limit: Option<u64>,
    /// The most any config checked so far may need.
    needed: u64,
}

impl DescriptorBudget {
    /// Raises the soft limit to the hard one, then checks `config`.
    fn raise_for(config: &Config) -> Self {
        let mut budget = DescriptorBudget {
            limit: limits::raise_open_file_limit().soft,
            needed: 0,
        };
        budget.check(config);
        budget
    }

    /// Warns when `config`'s `max_connections` could need more descriptors
    /// than the limit allows, unless an earlier config already needed as
    /// many (and was warned about).
    fn check(&mut self, config: &Config) {
        let needed = limits::descriptors_needed(config);
        if needed <= self.needed {
            return;
        }
        self.needed = needed;
        if self.limit.is_some_and(|limit| limit < needed) {
            warn!(
                limit = ?self.limit,
                needed,
                "the open-file limit is below what max_connections allows; \
                 beyond it new clients wait until descriptors free (raise LimitNOFILE / ulimit -n)"
            );
        }
    }
}
