//! Connection limits: per listener, at `max_connections` the accept loop
//! stops accepting until a slot frees, so extra clients wait in the kernel's
//! listen backlog instead of being refused; per process, the open-file limit
//! is raised so that those connections can exist.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::warn;

use crate::config::{Config, HandlerConfig};

/// How often, at most, a listener says that it is at its limit.
const LIMIT_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Slots for the connections of one listener.
#[derive(Debug)]
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    max: usize,
    last_warning: Option<Instant>,
}

impl ConnectionLimit {
    /// A limit of `max` connections at once.
    pub fn new(max: usize) -> Self {
        ConnectionLimit {
            slots: Arc::new(Semaphore::new(max)),
            max,
            last_warning: None,
        }
    }

    /// Waits for a free slot; the slot is held until the permit is dropped.
    /// Says in the log when the limit is reached, at most once a minute, so a
    /// listener that stays saturated does not log a line per connection.
    pub async fn acquire(&mut self) -> OwnedSemaphorePermit {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return permit;
        }
        if self
            .last_warning
            .is_none_or(|at| at.elapsed() >= LIMIT_WARNING_INTERVAL)
        {
            self.last_warning = Some(Instant::now());
            warn!(
                max_connections = self.max,
                "connection limit reached; new clients wait in the listen backlog"
            );
        }
        match self.slots.clone().acquire_owned().await {
            Ok(permit) => permit,
            // The semaphore is never closed; wait forever rather than panic.
            Err(_) => std::future::pending().await,
        }
    }
}

/// The process's open-file limit after [`raise_open_file_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The soft limit now in force (`None`: unlimited).
    pub soft: Option<u64>,
    /// The hard limit (`None`: unlimited).
    pub hard: Option<u64>,
}

/// The highest soft limit tried when the hard limit is "unlimited" (Linux's
/// default `fs.nr_open`).
const UNLIMITED_NOFILE: u64 = 1 << 20;

/// Raises the soft limit on open files to the hard limit: every connection
/// is a descriptor (two while a download streams a file), and the usual soft
/// default of 1024 is far below the default `max_connections`.
pub fn raise_open_file_limit() -> OpenFileLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let target = before.maximum.unwrap_or(UNLIMITED_NOFILE);
    if before.current.is_some_and(|soft| soft < target) {
        let raised = Rlimit {
            current: Some(target),
            maximum: before.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            warn!(error = %e, soft = ?before.current, "cannot raise the open-file limit");
        }
    }
    let now = getrlimit(Resource::Nofile);
    OpenFileLimit {
        soft: now.current,
        hard: now.maximum,
    }
}

/// Descriptors the configured listeners may need at once: one per connection,
/// one more per download (the file), one per listening socket, plus a margin
/// for the runtime and logs.
pub fn descriptors_needed(config: &Config) -> u64 {
    let per_listener = config.listeners.iter().map(|l| {
        let per_connection = if matches!(l.handler, HandlerConfig::Download(_)) {
            2
        } else {
            1
        };
        l.max_connections as u64 * per_connection + 1
    });
    per_listener.sum::<u64>() + 64
}
