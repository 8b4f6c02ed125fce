//! A finished HTTP body that its client may not have read yet: its slot is
//! kept until the client has taken it.
//!
//! A response's last write returns once the kernel has queued it, and on a
//! keep-alive connection nothing ends the queue after that: a client that
//! stops reading would hold it (up to the send buffer, more if it grew)
//! for the whole idle timeout, with no slot counting it, and one source
//! with many connections would hold far more kernel memory than the slots
//! bound. So a body's slot becomes its tail's. It is given back once the
//! socket queues nothing unsent ([`crate::conn::Connection::sent_is_taken`]),
//! looked at while the connection waits for its next request, at growing
//! intervals. A request that comes first is sent under the same slot (a
//! covered one: one connection sends one body at a time), and its body's
//! tail is then the slot's. A tail still unread when its body's own
//! minimum-rate deadline passes resets the connection, as a send that
//! slow would have been.
//!
//! A body of at most [`UNHELD_TAIL_BYTES`] keeps no tail: that much is
//! what any connection's socket may queue (the kernel's first send
//! buffer), and clients that fetch small files pay no system call for it.

use std::time::Duration;

use tokio::time::Instant;

use super::slots::Slot;

/// The largest body whose slot is given back as soon as it is written:
/// 16 KiB, the send buffer the kernel starts a socket with (`tcp_wmem`).
pub(super) const UNHELD_TAIL_BYTES: u64 = 16 * 1024;

/// The first look after the body's last write: a client that keeps up
/// has read it by then, unless its path is long; and one that asks again
/// (the most do) has done so, and its next body went out under the same
/// slot, with no look (a look is three system calls, and their wake-ups).
const FIRST_LOOK: Duration = Duration::from_millis(100);

/// The longest wait between looks.
const LONGEST_WAIT: Duration = Duration::from_secs(1);

/// A body's unread tail, holding the body's slot.
#[derive(Debug)]
pub(super) struct Tail {
    /// Given back when the tail is dropped.
    _slot: Slot,
    /// When a tail still queued makes the connection's reset.
    deadline: Instant,
    /// The next look.
    look_at: Instant,
    /// The wait before that look; doubled each time, up to [`LONGEST_WAIT`].
    wait: Duration,
}

/// What a look at a tail found.
#[derive(Debug)]
pub(super) enum Looked {
    /// Taken: its slot is given back.
    Taken,
    /// Still queued: look again at [`Tail::look_at`].
    Held(Box<Tail>),
    /// Still queued at its deadline.
    Overdue,
}

impl Tail {
    /// The tail of a body of `len` bytes, whose last write returned `now`
    /// and which must be read by `deadline`; `None` (its slot given back)
    /// for a body of at most [`UNHELD_TAIL_BYTES`]. Boxed: a connection
    /// carries the pointer between requests.
    pub(super) fn of(len: u64, slot: Slot, deadline: Instant, now: Instant) -> Option<Box<Tail>> {
        (len > UNHELD_TAIL_BYTES).then(|| {
            Box::new(Tail {
                _slot: slot,
                deadline,
                look_at: (now + FIRST_LOOK).min(deadline),
                wait: FIRST_LOOK,
            })
        })
    }

    /// The tail of a later body of `len` bytes too, sent under this tail's
    /// slot (a covered one) and due by `deadline`, whose last write
    /// returned `now`; a body of at most [`UNHELD_TAIL_BYTES`] leaves the
    /// tail as it was.
    pub(super) fn renew(&mut self, len: u64, deadline: Instant, now: Instant) {
        if len > UNHELD_TAIL_BYTES {
            self.deadline = deadline;
            self.look_at = (now + FIRST_LOOK).min(deadline);
            self.wait = FIRST_LOOK;
        }
    }

    /// When a tail still queued ends the connection.
    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// When to look at it next, if nothing comes first.
    pub(super) fn look_at(&self) -> Instant {
        self.look_at
    }

    /// What it is, given whether the socket's queue is `taken` at `now`.
    pub(super) fn looked(mut self: Box<Self>, taken: bool, now: Instant) -> Looked {
        if taken {
            return Looked::Taken;
        }
        if now >= self.deadline {
            return Looked::Overdue;
        }
        self.wait = (self.wait * 2).min(LONGEST_WAIT);
        self.look_at = (now + self.wait).min(self.deadline);
        Looked::Held(self)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use super::super::slots::{NoSlot, Slots};
    use super::*;

    const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn one_slot() -> Arc<Slots> {
        Slots::new(1, 0)
    }

    #[test]
    fn a_small_body_keeps_no_tail_and_gives_its_slot_back() {
        let slots = one_slot();
        let now = Instant::now();
        let slot = slots.take(SOURCE).expect("slot");
        assert!(Tail::of(UNHELD_TAIL_BYTES, slot, now + LONGEST_WAIT, now).is_none());
        assert!(slots.take(SOURCE).is_ok(), "the slot came back");
    }

    #[test]
    fn a_tail_holds_its_slot_until_it_is_taken() {
        let slots = one_slot();
        let now = Instant::now();
        let slot = slots.take(SOURCE).expect("slot");
        let tail =
            Tail::of(UNHELD_TAIL_BYTES + 1, slot, now + 10 * LONGEST_WAIT, now).expect("a tail");
        assert_eq!(tail.look_at(), now + FIRST_LOOK);
        assert_eq!(slots.take(SOURCE).err(), Some(NoSlot::Busy));
        let Looked::Held(tail) = tail.looked(false, now + FIRST_LOOK) else {
            panic!("still queued");
        };
        assert_eq!(slots.take(SOURCE).err(), Some(NoSlot::Busy));
        assert!(matches!(tail.looked(true, now + FIRST_LOOK), Looked::Taken));
        assert!(slots.take(SOURCE).is_ok(), "the slot came back");
    }

    #[test]
    fn the_looks_grow_apart_up_to_a_second_and_end_at_the_deadline() {
        let slots = one_slot();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        let mut tail =
            Tail::of(1 << 20, slots.take(SOURCE).expect("slot"), deadline, start).expect("a tail");
        let mut looks = vec![tail.look_at() - start];
        for _ in 0..100 {
            let now = tail.look_at();
            match tail.looked(false, now) {
                Looked::Held(next) => tail = next,
                Looked::Overdue => break,
                Looked::Taken => panic!("never taken"),
            }
            looks.push(tail.look_at() - start);
        }
        let ms = |ms| Duration::from_millis(ms);
        assert_eq!(looks, [100, 300, 700, 1500, 2500, 3500, 4500, 5000].map(ms));
        assert_eq!(
            slots.take(SOURCE).err(),
            None,
            "overdue: the slot came back"
        );
    }

    #[test]
    fn a_tail_overdue_at_its_first_look_is_overdue() {
        let slots = one_slot();
        let now = Instant::now();
        let tail = Tail::of(1 << 20, slots.take(SOURCE).expect("slot"), now, now).expect("a tail");
        assert_eq!(tail.look_at(), now, "no look after the deadline");
        assert!(matches!(tail.looked(false, now), Looked::Overdue));
        assert!(matches!(
            Tail::of(1 << 20, slots.take(SOURCE).expect("slot"), now, now)
                .expect("a tail")
                .looked(true, now),
            Looked::Taken
        ));
    }

    #[test]
    fn a_later_body_under_the_tails_slot_renews_it_and_a_small_one_does_not() {
        let slots = one_slot();
        let start = Instant::now();
        let mut tail =
            Tail::of(1 << 20, slots.take(SOURCE).expect("slot"), start, start).expect("a tail");
        let later = start + Duration::from_secs(1);
        // A small body behind it changes nothing: the tail is still due.
        tail.renew(UNHELD_TAIL_BYTES, later + LONGEST_WAIT, later);
        assert_eq!(tail.look_at(), start);
        tail.renew(UNHELD_TAIL_BYTES + 1, later + LONGEST_WAIT, later);
        assert_eq!(tail.look_at(), later + FIRST_LOOK);
        let Looked::Held(tail) = tail.looked(false, later + FIRST_LOOK) else {
            panic!("due later now");
        };
        assert_eq!(slots.take(SOURCE).err(), Some(NoSlot::Busy));
        assert!(matches!(
            tail.looked(false, later + LONGEST_WAIT),
            Looked::Overdue
        ));
    }
}
