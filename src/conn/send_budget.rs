//! A listener's budget of send-buffer growth: a file send whose client
//! keeps up may grow its socket's send buffer (`SO_SNDBUF`) past the
//! listener's `send_buffer`, paying the growth from this budget.
//!
//! Why a budget and not a per-socket cap: on loopback a small send buffer
//! makes the server send in many small rounds, each waking the client, and
//! the receive path then runs on the server's core (bench/ANALYSIS.md,
//! "download"); a large one makes a stalled reader hold megabytes of kernel
//! memory. Shrinking a buffer after a stall does not release what is
//! already queued, so what bounds the total is the grants: a grant is held
//! as long as its socket may hold the bytes it paid for, that is until the
//! connection ends (its reset frees the queue at once, and a clean close
//! that the client does not answer in time is turned into a reset).
//! A budget that is spent is never waited for: the send goes on with the
//! buffer it has.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::IntGauge;

/// The largest send buffer a grant grows a socket's to (`SO_SNDBUF`; the
/// kernel doubles it): 4 MiB of queue, the most the kernel's autotuning
/// gives a socket by default (`tcp_wmem`), and enough that a 1 MiB
/// response goes out in one sendfile call. The kernel caps it at
/// `net.core.wmem_max` (212 992 on a stock kernel, where nothing grows).
pub(crate) const MAX_GROWN_SEND_BUFFER: usize = 2 << 20;

/// The smallest growth worth a system call.
const MIN_GROWTH: usize = 64 * 1024;

/// How a file send's socket buffer is sized.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendBuffer<'a> {
    /// `SO_SNDBUF` to start with (0: the kernel's autotuning, never grown).
    pub base: usize,
    /// What growth past `base` is paid from (`None`: no growth).
    pub budget: Option<&'a Arc<SendBudget>>,
}

/// A listener's bytes of send-buffer growth, shared by its connections.
#[derive(Debug)]
pub(crate) struct SendBudget {
    total: usize,
    in_use: AtomicUsize,
    gauge: IntGauge,
}

impl SendBudget {
    /// A budget of `total` bytes, whose use `gauge` shows.
    pub(crate) fn new(total: usize, gauge: IntGauge) -> Arc<SendBudget> {
        Arc::new(SendBudget {
            total,
            in_use: AtomicUsize::new(0),
            gauge,
        })
    }

    /// The bytes the budget holds in all.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Takes up to `want` bytes (all that is left if less, nothing if that
    /// is under [`MIN_GROWTH`]); returns what was taken.
    fn take(&self, want: usize) -> usize {
        let mut taken = 0;
        let _ = self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                taken = want.min(self.total.saturating_sub(used));
                (taken >= MIN_GROWTH.min(want)).then(|| used + taken)
            })
            .map_err(|_| taken = 0);
        if taken > 0 {
            self.gauge.add(taken as i64);
        }
        taken
    }

    /// Gives back `bytes` taken before.
    fn give_back(&self, bytes: usize) {
        self.in_use.fetch_sub(bytes, Ordering::AcqRel);
        self.gauge.sub(bytes as i64);
    }
}

/// Growth of one socket's send buffer past its base, paid from a budget
/// and given back when dropped (with the connection).
#[derive(Debug)]
pub(crate) struct SendGrant {
    budget: Arc<SendBudget>,
    bytes: usize,
}

impl SendGrant {
    /// The send buffer for `base` plus this grant.
    pub(crate) fn buffer(&self, base: usize) -> usize {
        base + self.bytes
    }

    /// Grows the grant so that the buffer doubles from what `base` plus the
    /// grant give, up to [`MAX_GROWN_SEND_BUFFER`], as far as the budget
    /// allows; true if it grew.
    fn double(&mut self, base: usize) -> bool {
        let now = self.buffer(base);
        let want = now
            .saturating_mul(2)
            .min(MAX_GROWN_SEND_BUFFER)
            .saturating_sub(now);
        if want == 0 {
            return false;
        }
        let taken = self.budget.take(want);
        self.bytes += taken;
        taken > 0
    }
}

impl Drop for SendGrant {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// Doubles the send buffer of a socket whose base is `base` (the first
/// time from `budget`, into `grant`): the new `SO_SNDBUF` to set, or
/// `None` if the budget (or the largest buffer) leaves no room.
pub(crate) fn grow(
    budget: &Arc<SendBudget>,
    base: usize,
    grant: &mut Option<SendGrant>,
) -> Option<usize> {
    let mut held = grant.take().unwrap_or_else(|| SendGrant {
        budget: Arc::clone(budget),
        bytes: 0,
    });
    let grew = held.double(base);
    let buffer = held.buffer(base);
    // An empty grant is not kept: a connection holds one only while its
    // socket may queue more than `base`.
    if held.bytes > 0 {
        *grant = Some(held);
    }
    grew.then_some(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(total: usize) -> Arc<SendBudget> {
        SendBudget::new(total, IntGauge::new("t", "t").expect("gauge"))
    }

    #[test]
    fn growth_doubles_up_to_the_largest_buffer_and_comes_back_when_dropped() {
        let budget = budget(64 << 20);
        let mut grant = None;
        assert_eq!(grow(&budget, 256 << 10, &mut grant), Some(512 << 10));
        assert_eq!(grow(&budget, 256 << 10, &mut grant), Some(1 << 20));
        assert_eq!(grow(&budget, 256 << 10, &mut grant), Some(2 << 20));
        assert_eq!(grow(&budget, 256 << 10, &mut grant), None, "at the largest");
        assert_eq!(
            budget.in_use.load(Ordering::Acquire),
            (2 << 20) - (256 << 10)
        );
        assert_eq!(budget.gauge.get(), (2 << 20) - (256 << 10));
        drop(grant);
        assert_eq!(budget.in_use.load(Ordering::Acquire), 0);
        assert_eq!(budget.gauge.get(), 0);
    }

    #[test]
    fn a_spent_budget_grows_nothing_until_a_grant_comes_back() {
        let budget = budget(1 << 20);
        let (mut a, mut b) = (None, None);
        while grow(&budget, 64 << 10, &mut a).is_some() {}
        // 64 KiB doubled to 2 MiB would take 1984 KiB: the budget's 1 MiB
        // is all the first grant gets.
        assert_eq!(a.as_ref().map(|g| g.bytes), Some(1 << 20));
        assert_eq!(grow(&budget, 64 << 10, &mut b), None, "spent");
        assert!(b.is_none(), "nothing held when nothing was granted");
        drop(a);
        assert_eq!(grow(&budget, 64 << 10, &mut b), Some(128 << 10));
    }

    #[test]
    fn a_remainder_under_the_smallest_growth_is_not_taken() {
        let budget = budget(MIN_GROWTH + 1000);
        let mut a = None;
        assert_eq!(grow(&budget, MIN_GROWTH, &mut a), Some(2 * MIN_GROWTH));
        let mut b = None;
        assert_eq!(grow(&budget, MIN_GROWTH, &mut b), None, "1000 bytes left");
        assert_eq!(budget.gauge.get(), MIN_GROWTH as i64);
    }
}
