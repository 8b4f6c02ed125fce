//! Resizable pools of slots: the connection limit of a listener (at
//! `max_connections` the accept loop stops accepting until a slot frees, so
//! extra clients wait in the kernel's listen backlog instead of being
//! refused), and the descriptor budget's pools (`budget`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::warn;

/// How often, at most, a listener says that it is at its limit.
const LIMIT_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Slots for the connections of one listener. Shared between the accept
/// loop, which takes a slot per connection, and the server, which resizes
/// the limit on a reload.
#[derive(Debug)]
pub(crate) struct ConnectionLimit {
    slots: Arc<Semaphore>,
    state: Mutex<LimitState>,
}

#[derive(Debug)]
struct LimitState {
    max: usize,
    /// Slots still to withdraw after the limit shrank while they were in
    /// use: each is taken (and never given back) before a new client is.
    owed: usize,
    last_warning: Option<Instant>,
}

impl ConnectionLimit {
    /// A limit of `max` connections at once.
    pub(crate) fn new(max: usize) -> Self {
        ConnectionLimit {
            slots: Arc::new(Semaphore::new(max)),
            state: Mutex::new(LimitState {
                max,
                owed: 0,
                last_warning: None,
            }),
        }
    }

    /// The current limit.
    #[cfg(test)]
    pub(crate) fn max(&self) -> usize {
        self.state().max
    }

    /// Slots held now (by open connections).
    pub(crate) fn in_use(&self) -> usize {
        let state = self.state();
        // The semaphore holds max + owed slots in all, free or held.
        (state.max + state.owed).saturating_sub(self.slots.available_permits())
    }

    /// Changes the limit. Connections already open are kept: when the limit
    /// shrinks below them, new clients wait until enough of them closed.
    pub(crate) fn resize(&self, max: usize) {
        let mut state = self.state();
        self.resize_locked(&mut state, max);
    }

    /// Raises the limit by `more`, in one step (no resize in between).
    pub(crate) fn grow(&self, more: usize) {
        let mut state = self.state();
        let max = state.max.saturating_add(more);
        self.resize_locked(&mut state, max);
    }

    fn resize_locked(&self, state: &mut LimitState, max: usize) {
        if max > state.max {
            let mut grow = max - state.max;
            let repaid = grow.min(state.owed);
            state.owed -= repaid;
            grow -= repaid;
            self.slots.add_permits(grow);
        } else {
            let shrink = state.max - max;
            let withdrawn = self.slots.forget_permits(shrink);
            state.owed += shrink - withdrawn;
        }
        state.max = max;
    }

    /// Waits for a free slot; the slot is held until the permit is dropped.
    /// Says in the log when the limit is reached, at most once a minute, so a
    /// listener that stays saturated does not log a line per connection.
    pub(crate) async fn acquire(&self) -> OwnedSemaphorePermit {
        match self.try_acquire(1) {
            Some(permit) => permit,
            None => {
                self.warn_at_limit();
                self.acquire_many(1).await
            }
        }
    }

    /// `n` slots at once, if they are free now.
    pub(crate) fn try_acquire(&self, n: u32) -> Option<OwnedSemaphorePermit> {
        loop {
            let permit = self.slots.clone().try_acquire_many_owned(n).ok()?;
            if let Some(permit) = self.repay(permit) {
                return Some(permit);
            }
        }
    }

    /// Waits for `n` slots at once (taken together, never one by one).
    pub(crate) async fn acquire_many(&self, n: u32) -> OwnedSemaphorePermit {
        loop {
            let permit = match self.slots.clone().acquire_many_owned(n).await {
                Ok(permit) => permit,
                // The semaphore is never closed; wait forever rather than panic.
                Err(_) => std::future::pending().await,
            };
            if let Some(permit) = self.repay(permit) {
                return permit;
            }
        }
    }

    /// Keeps slots owed after a shrink out of `permit`: `None` when it had
    /// to give any of them up (then the caller tries again).
    fn repay(&self, mut permit: OwnedSemaphorePermit) -> Option<OwnedSemaphorePermit> {
        let mut state = self.state();
        if state.owed == 0 {
            return Some(permit);
        }
        let repaid = state.owed.min(permit.num_permits());
        state.owed -= repaid;
        if let Some(owed) = permit.split(repaid) {
            owed.forget();
        }
        if permit.num_permits() > 0 {
            // Part of it was owed: the rest goes back, and the caller
            // waits again for a whole set.
            drop(permit);
        }
        None
    }

    fn warn_at_limit(&self) {
        let mut state = self.state();
        if state
            .last_warning
            .is_none_or(|at| at.elapsed() >= LIMIT_WARNING_INTERVAL)
        {
            state.last_warning = Some(Instant::now());
            warn!(
                max_connections = state.max,
                "connection limit reached; new clients wait in the listen backlog"
            );
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LimitState> {
        // Every update leaves the state consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::timeout;

    /// True when `acquire` would wait (time is paused: no real delay).
    async fn must_wait(limit: &ConnectionLimit) -> bool {
        timeout(Duration::from_secs(1), limit.acquire())
            .await
            .is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn growing_admits_more_clients_at_once() {
        let limit = ConnectionLimit::new(1);
        let _first = limit.acquire().await;
        assert!(must_wait(&limit).await);
        limit.resize(2);
        let _second = limit.acquire().await;
        assert!(must_wait(&limit).await);
        assert_eq!(limit.max(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn shrinking_keeps_open_connections_and_admits_after_they_close() {
        let limit = ConnectionLimit::new(3);
        let a = limit.acquire().await;
        let b = limit.acquire().await;
        let c = limit.acquire().await;
        limit.resize(1);
        // Three are open against a limit of one: two must close before the
        // next client is admitted.
        drop(a);
        assert!(must_wait(&limit).await);
        drop(b);
        assert!(must_wait(&limit).await);
        drop(c);
        let d = limit.acquire().await;
        assert!(must_wait(&limit).await);
        drop(d);
        // Growing again while nothing is owed restores the slots.
        limit.resize(2);
        let _e = limit.acquire().await;
        let _f = limit.acquire().await;
        assert!(must_wait(&limit).await);
    }

    #[tokio::test(start_paused = true)]
    async fn in_use_counts_held_slots_also_when_some_are_owed() {
        let limit = ConnectionLimit::new(3);
        let a = limit.acquire().await;
        let b = limit.acquire().await;
        assert_eq!(limit.in_use(), 2);
        limit.resize(1); // owes one
        assert_eq!(limit.in_use(), 2);
        drop(a); // repays the debt
        assert_eq!(limit.in_use(), 1);
        limit.grow(2);
        assert_eq!((limit.max(), limit.in_use()), (3, 1));
        drop(b);
        assert_eq!(limit.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn growing_while_slots_are_owed_cancels_the_debt_first() {
        let limit = ConnectionLimit::new(2);
        let a = limit.acquire().await;
        let b = limit.acquire().await;
        limit.resize(1); // owes one slot
        limit.resize(2); // and is square again
        drop(a);
        let _c = limit.acquire().await;
        assert!(must_wait(&limit).await);
        drop(b);
        let _d = limit.acquire().await;
    }
}
