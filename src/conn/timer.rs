//! A connection's one timer, and the deadline of each of its waits on it.
//!
//! Every wait of a connection (a read, a message's read, a write, the
//! linger) is bounded, and all of them share one `Sleep`, made at the
//! connection's first wait and reset for each later one: a timer per wait
//! would go into tokio's timer wheel and out again at every message
//! (bench/ANALYSIS.md, "lines"), and a later deadline is an atomic update
//! of the one timer. A message's read ([`Deadline`]) does not touch the
//! timer when the message is already there.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// A connection's timer: none until a wait first has to wait.
pub(crate) type ConnTimer = Option<Pin<Box<Sleep>>>;

/// One wait's deadline on the connection's timer.
pub(crate) struct Deadline<'a> {
    timer: &'a mut ConnTimer,
    until: Instant,
    armed: bool,
}

impl<'a> Deadline<'a> {
    /// `until` on `timer`; the timer is set only when polled.
    pub(crate) fn new(timer: &'a mut ConnTimer, until: Instant) -> Self {
        Deadline {
            timer,
            until,
            armed: false,
        }
    }

    /// Ready once `until` has passed. Call it after the wait's event was
    /// found not ready: its first call sets the timer to `until` (and
    /// registers the task's waker with it).
    pub(crate) fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = match self.timer {
            Some(sleep) if self.armed => sleep,
            _ => armed(self.timer, self.until),
        };
        self.armed = true;
        sleep.as_mut().poll(cx)
    }
}

/// The connection's timer, set to `until` now. For a wait that keeps no
/// room for a [`Deadline`] (an idle connection's wait is room in its task).
pub(crate) fn armed(timer: &mut ConnTimer, until: Instant) -> &mut Pin<Box<Sleep>> {
    match timer {
        Some(sleep) => {
            sleep.as_mut().reset(until);
            sleep
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(until))),
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_timer_serves_each_wait_with_its_own_deadline() {
        let mut timer: ConnTimer = None;
        let start = Instant::now();
        // Made by the first wait that waits, fired at its deadline.
        let mut first = Deadline::new(&mut timer, start + Duration::from_secs(5));
        poll_fn(|cx| first.poll_elapsed(cx)).await;
        assert_eq!(Instant::now(), start + Duration::from_secs(5));
        assert!(timer.is_some());
        // A later wait resets it, earlier or later than the last deadline.
        let mut second = Deadline::new(&mut timer, start + Duration::from_secs(7));
        poll_fn(|cx| second.poll_elapsed(cx)).await;
        assert_eq!(Instant::now(), start + Duration::from_secs(7));
        let now = Instant::now();
        let mut third = Deadline::new(&mut timer, now + Duration::from_secs(1));
        poll_fn(|cx| third.poll_elapsed(cx)).await;
        assert_eq!(Instant::now(), now + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_never_polled_leaves_the_timer_alone() {
        let mut timer: ConnTimer = None;
        let until = Instant::now() + Duration::from_secs(3);
        let _unpolled = Deadline::new(&mut timer, until);
        assert!(timer.is_none(), "a wait ready at once makes no timer");
        let mut armed = Deadline::new(&mut timer, until);
        let pending = poll_fn(|cx| Poll::Ready(armed.poll_elapsed(cx))).await;
        assert!(pending.is_pending());
        let deadline = timer.as_ref().map(|sleep| sleep.deadline());
        let _unpolled = Deadline::new(&mut timer, until + Duration::from_secs(60));
        assert_eq!(timer.as_ref().map(|sleep| sleep.deadline()), deadline);
    }
}
