//! Per-listener connection limit: at `max_connections` the accept loop stops
//! accepting until a slot frees, so extra clients wait in the kernel's listen
//! backlog instead of being refused.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tracing::{info, warn};

/// Slots for the connections of one listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    max: usize,
}

impl ConnectionLimit {
    /// A limit of `max` connections at once.
    pub fn new(max: usize) -> Self {
        ConnectionLimit {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Waits for a free slot; the slot is held until the permit is dropped.
    /// Says once in the log when the limit is reached, and once when a slot frees.
    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                warn!(
                    max_connections = self.max,
                    "connection limit reached; new clients wait in the listen backlog"
                );
                let permit = self.wait().await;
                info!("a connection slot freed; accepting again");
                permit
            }
            Err(TryAcquireError::Closed) => self.wait().await,
        }
    }

    async fn wait(&self) -> OwnedSemaphorePermit {
        match self.slots.clone().acquire_owned().await {
            Ok(permit) => permit,
            // The semaphore is never closed; wait forever rather than panic.
            Err(_) => std::future::pending().await,
        }
    }

    /// Connections currently holding a slot.
    pub fn active(&self) -> usize {
        self.max - self.slots.available_permits()
    }
}
