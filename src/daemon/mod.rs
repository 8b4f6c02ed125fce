//! The daemon around the server: process signals (SIGTERM/SIGINT stop,
//! SIGHUP reloads the config file), the service manager (the sockets it
//! passed, claimed here and handed to the server; readiness, status,
//! watchdog), logging and the panic hook, the descriptor budget, and the
//! listener table shown at start (returned, for `main` to print).

mod descriptors;
mod log_fields;
mod log_format;
pub(crate) mod logging;
mod panics;
mod signals;
pub(crate) mod systemd;

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::server::{PassedSocket, Server, ServerHandle, ShutdownReport, StartError};
pub use signals::FORCED_EXIT_STATUS;
use signals::{SignalRequest, Signals};
use systemd::{ActivatedSockets, ActivationError, Notifier};

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
    /// A listener could not bind its address, or open its history.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The sockets passed by the service manager do not fit the config.
    #[error(transparent)]
    Activation(#[from] ActivationError),
}

impl DaemonError {
    /// True when the config (or the socket units, which must match it) is
    /// wrong, rather than the machine: worth exit status 78, not a restart.
    pub fn is_config_mistake(&self) -> bool {
        matches!(self, DaemonError::Activation(_))
    }
}

/// A started daemon: every listener bound, not serving yet.
#[derive(Debug)]
pub struct Daemon {
    server: Server,
    signals: Signals,
    notifier: Notifier,
    config_path: Option<PathBuf>,
    source: String,
}

impl Daemon {
    /// Installs the signal handlers, raises the open-file limit, and binds
    /// every listener of `config` (taking the sockets systemd passed, which
    /// must all fit a listener). `activated` comes from
    /// [`ActivatedSockets::from_env`], taken first thing in `main`, before
    /// anything else opens a descriptor. `config_path` is re-read on SIGHUP
    /// (the embedded default, with no path, has nothing to re-read). Must be
    /// called inside a tokio runtime.
    pub fn start(
        config: &Config,
        config_path: Option<PathBuf>,
        mut activated: ActivatedSockets,
    ) -> Result<Daemon, DaemonError> {
        log_warnings(config);
        // Before anything is bound: no signal may find the default action (exit).
        let signals = Signals::install().map_err(DaemonError::Signals)?;
        // Before the server reads it for its descriptor budget.
        descriptors::raise_open_file_limit();
        let server = Server::start(config, |listener| {
            activated.claim(listener).map(|claimed| PassedSocket {
                socket: claimed.socket,
                fd_name: claimed.fd_name,
            })
        })?;
        activated.all_claimed()?;
        Ok(Daemon {
            server,
            signals,
            notifier: Notifier::from_env(),
            config_path,
            source: config.source.clone(),
        })
    }

    /// The table of listeners, for the operator: a header, then one line per
    /// listener (name, handler, address, and whether systemd passed its socket).
    pub fn banner(&self) -> String {
        let mut text = format!(
            "switchboard {} serving ({}):\n",
            env!("CARGO_PKG_VERSION"),
            self.source
        );
        for l in self.server.listeners() {
            let from = if l.activated {
                "  (socket from systemd)"
            } else {
                ""
            };
            let _ = writeln!(
                text,
                "  {:<16} {:<12} {}{from}",
                l.name,
                l.handler,
                l.shown_addr()
            );
        }
        text
    }

    /// Serves until SIGTERM or SIGINT, reloading the config file on SIGHUP,
    /// then drains.
    pub async fn run(self) -> ShutdownReport {
        let Daemon {
            server,
            mut signals,
            notifier,
            config_path,
            ..
        } = self;
        let handle = server.handle();
        notifier.ready(&handle.status().to_string());
        if let Some(interval) = notifier.watchdog_interval() {
            tokio::spawn(watchdog(notifier, interval));
        }
        let status_updates = notifier
            .enabled()
            .then(|| tokio::spawn(report_status(notifier, handle.clone())));

        // Reloads run in their own task, so that SIGTERM is never stuck
        // behind one; SIGHUPs that arrive during a reload are coalesced into
        // one more.
        let reload_requested = Arc::new(Notify::new());
        let reloads = tokio::spawn(reload_worker(
            reload_requested.clone(),
            handle,
            config_path,
            notifier,
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
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
    }
}

/// Applies a reload for each SIGHUP, one at a time, telling the service
/// manager `RELOADING=1` before and `READY=1` after, with the outcome in
/// the status line.
async fn reload_worker(
    requested: Arc<Notify>,
    handle: ServerHandle,
    path: Option<PathBuf>,
    notifier: Notifier,
) {
    loop {
        requested.notified().await;
        notifier.reloading();
        let outcome = reload(&handle, path.as_ref()).await;
        let status = match outcome {
            Ok(()) => handle.status().to_string(),
            Err(e) => format!("{}; last reload failed: {e}", handle.status()),
        };
        notifier.ready(&status);
    }
}

/// Re-reads the config file and applies it; any error leaves the running
/// config in place and is logged in one line (and returned).
async fn reload(handle: &ServerHandle, path: Option<&PathBuf>) -> Result<(), String> {
    let Some(path) = path.cloned() else {
        info!("SIGHUP: running the embedded default config, which has no file to re-read");
        return Ok(());
    };
    info!(config = %path.display(), "SIGHUP: reloading the config");
    let result = load_and_apply(handle, path).await;
    if let Err(e) = &result {
        error!("reload failed, still serving the previous config: {e}");
    }
    result
}

async fn load_and_apply(handle: &ServerHandle, path: PathBuf) -> Result<(), String> {
    let read = tokio::task::spawn_blocking(move || Config::from_file(&path));
    let loaded = match tokio::time::timeout(CONFIG_READ_LIMIT, read).await {
        Ok(Ok(Ok(config))) => Ok(config),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(format!("reading the config failed: {e}")),
        Err(_) => Err(format!(
            "reading the config took longer than {}",
            humantime::format_duration(CONFIG_READ_LIMIT)
        )),
    };
    let config = loaded.inspect_err(|_| handle.reload_failed())?;
    log_warnings(&config);
    match handle.reload(config).await {
        Ok(summary) => {
            info!("reloaded: {summary}");
            Ok(())
        }
        // The whole chain: "listener "x": cannot listen on ...: Address in use".
        Err(e) => Err(format!("{:#}", anyhow::Error::from(e))),
    }
}

/// Logs each warning of a config (see [`crate::ConfigWarning`]) at warn.
fn log_warnings(config: &Config) {
    for warning in &config.warnings {
        warn!("config: {warning}");
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
