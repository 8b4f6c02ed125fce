//! The descriptor budget: how many descriptors connections may hold, so
//! that a flood of connections cannot run the process out of them (every
//! listener's accepts would fail, and a reload could not read its file).
//!
//! The budget is the open-file limit (read when the server starts, after
//! the daemon raised it) less a reserve for the listening sockets, a
//! reload's file and new sockets, the runtime and the log. Each listener is
//! guaranteed a share of it (half the budget split evenly, or what its
//! `max_connections` can use, if less); the rest is shared, first come
//! first served. A connection costs its handler's descriptors per
//! connection (a download: two). A listener whose share and the shared
//! pool are both used up stops accepting until descriptors free: its
//! clients wait in the listen backlog, and the other listeners, whose
//! shares are theirs, go on serving.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedSemaphorePermit;

use super::limit::ConnectionLimit;

/// Descriptors kept out of the budget at any open-file limit: the runtime
/// (epoll, eventfd, signal pipe), the log, std streams, a reload's config
/// file, and room for the blocking pool's work.
const RESERVE_BASE: u64 = 96;

/// Descriptors kept out per listener: its socket, and a new one a reload
/// may bind for it.
const RESERVE_PER_LISTENER: u64 = 2;

/// The descriptors connections may hold, out of `open_file_limit`, for
/// `listeners` listeners: at most a quarter of a small limit is reserved.
pub(crate) fn connection_descriptors(open_file_limit: Option<u64>, listeners: usize) -> u64 {
    let limit = open_file_limit.unwrap_or(u64::from(u32::MAX));
    let reserve = (RESERVE_BASE + RESERVE_PER_LISTENER * listeners as u64).min(limit / 4);
    limit.saturating_sub(reserve)
}

/// The soft open-file limit now (`None`: unlimited).
pub(crate) fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// What one listener takes its connections' descriptors from.
#[derive(Debug, Clone)]
pub(crate) struct ListenerBudget {
    /// Its guaranteed share.
    pub own: Arc<ConnectionLimit>,
    /// The pool every listener shares.
    pub shared: Arc<ConnectionLimit>,
}

impl ListenerBudget {
    /// Takes `cost` descriptors: from the listener's share if it has them,
    /// else from the shared pool, else waits for whichever frees first.
    pub(crate) async fn acquire(&self, cost: u32) -> OwnedSemaphorePermit {
        if let Some(permit) = self.own.try_acquire(cost) {
            return permit;
        }
        if let Some(permit) = self.shared.try_acquire(cost) {
            return permit;
        }
        tokio::select! {
            permit = self.own.acquire_many(cost) => permit,
            permit = self.shared.acquire_many(cost) => permit,
        }
    }
}

/// The server's side of the budget: the shared pool, and the descriptors
/// that the connections of listeners a reload removed still hold from
/// those listeners' shares while they drain. Those stay out of the budget
/// until the drain ends, so that the new listeners' shares do not count
/// them twice.
#[derive(Debug)]
pub(crate) struct DescriptorBudget {
    /// The pool every listener shares.
    pub shared: Arc<ConnectionLimit>,
    /// Descriptors held by draining, removed listeners.
    retiring: Mutex<u64>,
}

impl DescriptorBudget {
    /// Nothing to share yet.
    pub(crate) fn new() -> Self {
        DescriptorBudget {
            shared: Arc::new(ConnectionLimit::new(0)),
            retiring: Mutex::new(0),
        }
    }

    /// Splits `budget` less what draining listeners hold (see [`split`]):
    /// sets the shared pool, and returns the shares and the shared size.
    pub(crate) fn split(&self, budget: u64, wants: &[u64]) -> (Vec<u64>, u64) {
        let retiring = self.held_by_retiring();
        let (shares, shared) = split(budget.saturating_sub(*retiring), wants);
        self.shared
            .resize(usize::try_from(shared).unwrap_or(usize::MAX));
        (shares, shared)
    }

    /// A removed listener drains: its connections hold `held` descriptors
    /// of its own share until [`DescriptorBudget::retired`].
    pub(crate) fn retiring(&self, held: u64) {
        *self.held_by_retiring() += held;
    }

    /// Its drain ended: the `held` descriptors go to the shared pool.
    pub(crate) fn retired(&self, held: u64) {
        let mut retiring = self.held_by_retiring();
        let back = held.min(*retiring);
        *retiring -= back;
        self.shared
            .grow(usize::try_from(back).unwrap_or(usize::MAX));
    }

    fn held_by_retiring(&self) -> std::sync::MutexGuard<'_, u64> {
        self.retiring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How the budget is split: each listener's guaranteed share, in
/// descriptors, and the shared rest. `wants` is, per listener, the most
/// descriptors its connections could hold (`max_connections` × cost).
pub(crate) fn split(budget: u64, wants: &[u64]) -> (Vec<u64>, u64) {
    if wants.is_empty() {
        return (Vec::new(), budget);
    }
    let even_half = budget / 2 / wants.len() as u64;
    let shares: Vec<u64> = wants.iter().map(|want| (*want).min(even_half)).collect();
    let shared = budget - shares.iter().sum::<u64>();
    (shares, shared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    #[test]
    fn the_reserve_is_small_for_small_limits_and_the_rest_is_for_connections() {
        assert_eq!(connection_descriptors(Some(20_000), 4), 20_000 - 104);
        assert_eq!(connection_descriptors(Some(64), 1), 48);
        assert_eq!(connection_descriptors(Some(0), 1), 0);
    }

    #[test]
    fn half_the_budget_is_guaranteed_evenly_the_rest_shared() {
        let (shares, shared) = split(1000, &[10_000, 10_000, 100, 20_000]);
        assert_eq!(shares, [125, 125, 100, 125]);
        assert_eq!(shared, 1000 - 475);
        assert_eq!(split(1000, &[]), (Vec::new(), 1000));
    }

    #[test]
    fn descriptors_of_a_draining_listener_stay_out_until_its_drain_ends() {
        let budget = DescriptorBudget::new();
        assert_eq!(budget.split(1000, &[10_000, 10_000]), (vec![250, 250], 500));
        // A reload removed a listener whose connections hold 300 of its share.
        budget.retiring(300);
        assert_eq!(budget.split(1000, &[10_000]), (vec![350], 350));
        assert_eq!(budget.shared.max(), 350);
        budget.retired(300);
        assert_eq!(budget.shared.max(), 650);
        // The next reload splits the whole budget again.
        assert_eq!(budget.split(1000, &[10_000]), (vec![500], 500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_listener_that_used_up_the_shared_pool_leaves_the_others_their_share() {
        let shared = Arc::new(ConnectionLimit::new(2));
        let greedy = ListenerBudget {
            own: Arc::new(ConnectionLimit::new(1)),
            shared: shared.clone(),
        };
        let other = ListenerBudget {
            own: Arc::new(ConnectionLimit::new(1)),
            shared,
        };
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(greedy.acquire(1).await);
        }
        // The greedy one waits now...
        assert!(
            timeout(Duration::from_secs(1), greedy.acquire(1))
                .await
                .is_err()
        );
        // ...and the other still has its share.
        let _mine = other.acquire(1).await;
        // A download's two descriptors are taken together.
        drop(held.pop());
        assert!(
            timeout(Duration::from_secs(1), other.acquire(2))
                .await
                .is_err()
        );
        drop(held.pop());
        let _two = timeout(Duration::from_secs(1), other.acquire(2))
            .await
            .expect("two free");
    }
}
