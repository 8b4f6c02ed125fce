//! The download port's send slots: at most `max_downloads` files, listings
//! and archives are sent at once on a listener, and at most
//! `max_downloads_per_source` of them to one source, so that the stalled
//! readers of a few hosts cannot hold every slot and take the port away
//! from everyone else. The archives' walk turns are slots of the same
//! kind (4 at once, 1 for one source).
//!
//! A source is the client's address as the listener's per-source
//! connection limits count it (an IPv6 one cut to `source_ipv6_prefix`; a
//! PROXY header's client, not the balancer). Slots are counted in one
//! place, under one lock: in all, and by source (an entry only for a
//! source holding a slot: at most `max_downloads` entries). A slot is
//! taken without waiting. The counts are kept over every reload: a new
//! `max_downloads` or share applies to the sends under way (the listener
//! or a source over it gets no slot until enough of them end), so reloads
//! that change them cannot add up limits.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// Every one of the listener's slots is in use.
    Busy,
    /// The source holds its share already.
    SourceBusy,
}

/// A listener's slots: its limits, over counts shared with the slots of
/// every reload.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    /// A source's share; `None` when it cannot bind before `max` does (0,
    /// or at least `max_downloads`): sends are still counted by source.
    per_source: Option<usize>,
    held: Arc<Held>,
}

/// Slots held: in all, and by source.
#[derive(Debug, Default)]
struct Held(Mutex<Counts>);

#[derive(Debug, Default)]
struct Counts {
    all: usize,
    by_source: HashMap<IpAddr, usize>,
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Every update leaves the counts whole: a panic elsewhere cannot
        // leave them half done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One slot, given back when dropped; or a covered one, which counts
/// nothing.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The counts it is one of (`None`: covered).
    held: Option<Arc<Held>>,
    source: IpAddr,
}

impl Slot {
    /// A slot that counts nothing, for a send that another slot, held for
    /// as long as this one, covers: one connection sends one body at a
    /// time, so the slot its earlier body's unread tail holds covers the
    /// next body too.
    pub(crate) fn covered(source: IpAddr) -> Slot {
        Slot { held: None, source }
    }

    /// Whether it counts nothing ([`Slot::covered`]).
    pub(crate) fn is_covered(&self) -> bool {
        self.held.is_none()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(held) = &self.held else {
            return;
        };
        let mut counts = held.lock();
        counts.all = counts.all.saturating_sub(1);
        if let Entry::Occupied(mut count) = counts.by_source.entry(self.source) {
            if *count.get() <= 1 {
                count.remove();
            } else {
                *count.get_mut() -= 1;
            }
        }
    }
}

impl Slots {
    /// `max` slots, at most `per_source` of them to one source (0: no
    /// share but `max`).
    pub(crate) fn new(max: usize, per_source: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            per_source: share(max, per_source),
            held: Arc::default(),
        })
    }

    /// The slots after a reload to `max` and `per_source`: `previous` if
    /// they are unchanged, else the new limits over the same counts.
    pub(crate) fn reloaded(previous: &Arc<Slots>, max: usize, per_source: usize) -> Arc<Slots> {
        let per_source = share(max, per_source);
        if previous.max == max && previous.per_source == per_source {
            return previous.clone();
        }
        Arc::new(Slots {
            max,
            per_source,
            held: previous.held.clone(),
        })
    }

    /// A slot for `source`, if the listener and the source's share have
    /// one free; never waits.
    pub(crate) fn take(&self, source: IpAddr) -> Result<Slot, NoSlot> {
        let mut counts = self.held.lock();
        if counts.all >= self.max {
            return Err(NoSlot::Busy);
        }
        let count = counts.by_source.entry(source).or_insert(0);
        if self.per_source.is_some_and(|share| *count >= share) {
            return Err(NoSlot::SourceBusy);
        }
        *count += 1;
        counts.all += 1;
        Ok(Slot {
            held: Some(self.held.clone()),
            source,
        })
    }
}

/// A source's share of `max` slots: `None` when it cannot bind before
/// `max` does (0, or at least `max`).
fn share(max: usize, per_source: usize) -> Option<usize> {
    (per_source > 0 && per_source < max).then_some(per_source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn a_source_gets_its_share_and_the_others_the_rest() {
        let slots = Slots::new(4, 2);
        let (a, b) = (ip("127.0.0.2"), ip("127.0.0.3"));
        let held_a = [slots.take(a).expect("1st"), slots.take(a).expect("2nd")];
        assert_eq!(slots.take(a).err(), Some(NoSlot::SourceBusy));
        let held_b = [slots.take(b).expect("1st"), slots.take(b).expect("2nd")];
        // The listener's are all in use now: a new source is told busy.
        assert_eq!(slots.take(ip("127.0.0.4")).err(), Some(NoSlot::Busy));
        drop(held_a);
        assert!(
            !slots.held.lock().by_source.contains_key(&a),
            "a source with none held has no entry"
        );
        assert_eq!(slots.take(b).err(), Some(NoSlot::SourceBusy));
        let again = slots.take(a).expect("given back");
        drop((held_b, again));
        assert!(slots.held.lock().by_source.is_empty());
        assert_eq!(slots.held.lock().all, 0);
    }

    #[test]
    fn a_refusal_for_the_whole_listener_counts_nothing_for_the_source() {
        let slots = Slots::new(2, 1);
        let held = [
            slots.take(ip("10.0.0.1")).expect("a"),
            slots.take(ip("10.0.0.2")).expect("b"),
        ];
        for _ in 0..3 {
            assert_eq!(slots.take(ip("10.0.0.3")).err(), Some(NoSlot::Busy));
        }
        drop(held);
        assert!(slots.held.lock().by_source.is_empty());
        assert!(
            slots.take(ip("10.0.0.3")).is_ok(),
            "its share was not spent by the refusals"
        );
    }

    #[test]
    fn a_share_that_cannot_bind_before_the_listener_leaves_only_its_limit() {
        for (max, per_source) in [(3, 0), (3, 3), (3, 10)] {
            let slots = Slots::new(max, per_source);
            let held: Vec<Slot> = (0..max)
                .map(|_| slots.take(ip("::1")).expect("slot"))
                .collect();
            assert_eq!(
                slots.take(ip("::1")).err(),
                Some(NoSlot::Busy),
                "{max}, {per_source}"
            );
            // Still counted by source, for a share a reload may set.
            assert_eq!(slots.held.lock().by_source[&ip("::1")], max);
            drop(held);
            assert_eq!(slots.held.lock().all, 0);
            assert!(slots.held.lock().by_source.is_empty());
        }
    }

    #[test]
    fn a_reload_keeps_the_listeners_count() {
        let slots = Slots::new(4, 2);
        let held = [
            slots.take(ip("10.0.0.1")).expect("a"),
            slots.take(ip("10.0.0.1")).expect("b"),
        ];
        // The same settings (shares that do not bind are the same: none).
        assert!(Arc::ptr_eq(&Slots::reloaded(&slots, 4, 2), &slots));
        let open = Slots::new(4, 0);
        assert!(Arc::ptr_eq(&Slots::reloaded(&open, 4, 9), &open));
        // A new share: the two sends under way still count against max.
        let shared = Slots::reloaded(&slots, 4, 3);
        assert!(!Arc::ptr_eq(&shared, &slots));
        assert_eq!(shared.held.lock().all, 2);
        let more = [
            shared.take(ip("10.0.0.2")).expect("c"),
            shared.take(ip("10.0.0.2")).expect("d"),
        ];
        assert_eq!(shared.take(ip("10.0.0.3")).err(), Some(NoSlot::Busy));
        // A new max, larger then smaller: the four sends under way count
        // against each.
        let bigger = Slots::reloaded(&shared, 5, 3);
        assert_eq!(bigger.held.lock().all, 4);
        let fifth = bigger.take(ip("10.0.0.3")).expect("e");
        assert_eq!(bigger.take(ip("10.0.0.4")).err(), Some(NoSlot::Busy));
        let smaller = Slots::reloaded(&bigger, 2, 1);
        drop((held, fifth));
        // Two still held of two.
        assert_eq!(smaller.take(ip("10.0.0.4")).err(), Some(NoSlot::Busy));
        drop(more);
        assert_eq!(smaller.held.lock().all, 0);
        let again = [
            smaller.take(ip("10.0.0.4")).expect("f"),
            smaller.take(ip("10.0.0.5")).expect("g"),
        ];
        assert_eq!(smaller.take(ip("10.0.0.6")).err(), Some(NoSlot::Busy));
        drop(again);
    }

    #[test]
    fn a_share_set_by_a_reload_counts_the_sends_begun_without_one() {
        let a = ip("10.0.0.1");
        let open = Slots::new(8, 0);
        let held = [open.take(a).expect("1st"), open.take(a).expect("2nd")];
        let shared = Slots::reloaded(&open, 8, 2);
        assert_eq!(shared.take(a).err(), Some(NoSlot::SourceBusy));
        drop(held);
        assert!(shared.take(a).is_ok());
    }

    #[test]
    fn reloads_that_change_the_share_keep_the_counts_by_source() {
        let a = ip("10.0.0.1");
        let slots = Slots::new(8, 2);
        let mut held = vec![slots.take(a).expect("1st"), slots.take(a).expect("2nd")];
        // Toggled back and forth (and with a new max): the source's sends
        // under way count against each new share.
        let mut now = slots;
        for (max, share) in [(8, 3), (8, 2), (8, 3), (9, 3), (8, 1)] {
            now = Slots::reloaded(&now, max, share);
            while let Ok(slot) = now.take(a) {
                held.push(slot);
            }
            assert!(held.len() <= 3, "{max}, {share}: {} held", held.len());
        }
        assert_eq!(held.len(), 3);
        // Over the share of 1 until two of its three sends end.
        held.truncate(1);
        assert_eq!(now.take(a).err(), Some(NoSlot::SourceBusy));
        held.clear();
        assert!(now.take(a).is_ok());
        assert!(now.held.lock().by_source.is_empty());
    }

    #[test]
    fn a_covered_slot_counts_nothing() {
        let slots = Slots::new(1, 0);
        let held = slots.take(ip("127.0.0.2")).expect("slot");
        let covered = Slot::covered(ip("127.0.0.2"));
        assert!(covered.is_covered() && !held.is_covered());
        drop(covered);
        assert_eq!(slots.take(ip("127.0.0.3")).err(), Some(NoSlot::Busy));
        drop(held);
        assert!(slots.take(ip("127.0.0.3")).is_ok());
    }
}
