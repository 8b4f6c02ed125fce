//! The history in the process's memory: the messages end to end in one
//! ring of bytes, with where each starts, under one lock; bounded in
//! messages and bytes. Lost when the process ends.
//!
//! One ring, not an allocation per message: a message costs no allocation
//! or free (a `Bytes` each cost a malloc when recorded and a free when
//! dropped, about 200 instructions), and the entries a message touches
//! (the newest, the oldest dropped, the pick) are in two compact arrays,
//! not scattered over 10 000 allocations that the connections' own state
//! then competes with in the cache.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{ENTRY_OVERHEAD, Limits};

/// A history in memory, shared by the connections of one listener.
#[derive(Debug, Default)]
pub(crate) struct MemoryHistory {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// The messages' text, oldest first, end to end.
    text: VecDeque<u8>,
    /// Where each message starts, oldest first, counted in bytes recorded
    /// since the history was made (so dropping the oldest moves nothing).
    starts: VecDeque<usize>,
    /// Bytes recorded and dropped since: where `text` begins in that count.
    dropped: usize,
    /// The text of the messages kept, plus [`ENTRY_OVERHEAD`] each.
    bytes: usize,
}

impl Entries {
    /// Drops the oldest message, if any.
    fn drop_oldest(&mut self) {
        if self.starts.pop_front().is_none() {
            return;
        }
        let next = self
            .starts
            .front()
            .copied()
            .unwrap_or(self.dropped + self.text.len());
        let len = next - self.dropped;
        self.text.drain(..len);
        self.dropped = next;
        self.bytes -= len + ENTRY_OVERHEAD;
    }

    /// Appends `message`, growing the ring at most to `limit` bytes (or
    /// what this message needs): doubling, so that appends stay cheap,
    /// but never to twice what the limits keep.
    fn push(&mut self, message: &[u8], limit: usize) {
        let needed = self.text.len() + message.len();
        if needed > self.text.capacity() {
            let target = (self.text.capacity() * 2).min(limit).max(needed);
            self.text.reserve_exact(target - self.text.len());
        }
        self.starts.push_back(self.dropped + self.text.len());
        self.text.extend(message);
        self.bytes += message.len() + ENTRY_OVERHEAD;
    }

    /// Message `i` (oldest first) appended to `reply`.
    fn append(&self, i: usize, reply: &mut Vec<u8>) {
        let start = self.starts[i] - self.dropped;
        let end = self
            .starts
            .get(i + 1)
            .map_or(self.text.len(), |next| next - self.dropped);
        let (front, back) = self.text.as_slices();
        let (first, second) = if end <= front.len() {
            (&front[start..end], &[][..])
        } else if start >= front.len() {
            (&back[start - front.len()..end - front.len()], &[][..])
        } else {
            (&front[start..], &back[..end - front.len()])
        };
        super::append_pick_parts(reply, first, second);
    }
}

impl MemoryHistory {
    /// Records `message`, drops the oldest entries past `limits` (the newest
    /// always stays), and appends a uniformly random entry (possibly
    /// `message` itself) to `reply`, with room for one byte more (a line
    /// ending). Copied under the lock: no handle on the entry to count.
    pub(crate) fn record_and_pick(&self, message: &[u8], limits: Limits, reply: &mut Vec<u8>) {
        let mut entries = self.entries();
        // The oldest go first, until the new one fits (the same entries
        // as appending it and trimming after, without the ring growing
        // past the limit for a moment).
        let cost = message.len() + ENTRY_OVERHEAD;
        while !entries.starts.is_empty()
            && (entries.starts.len() >= limits.messages || entries.bytes + cost > limits.bytes)
        {
            entries.drop_oldest();
        }
        entries.push(message, limits.bytes.saturating_sub(ENTRY_OVERHEAD));
        let pick = rand::random_range(0..entries.starts.len());
        entries.append(pick, reply);
    }

    /// Messages kept, and the bytes they are counted as.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let entries = self.entries();
        (entries.starts.len(), entries.bytes)
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        // Nothing under the lock panics half-way (only an allocation can
        // fail, and that aborts), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(messages: usize, bytes: usize) -> Limits {
        Limits { messages, bytes }
    }

    /// Records `message` and returns the pick alone.
    fn pick(history: &MemoryHistory, message: Vec<u8>, limits: Limits) -> Vec<u8> {
        let mut reply = Vec::new();
        history.record_and_pick(&message, limits, &mut reply);
        reply
    }

    #[test]
    fn the_pick_is_appended_to_the_reply() {
        let history = MemoryHistory::default();
        let mut reply = b"head:".to_vec();
        history.record_and_pick(b"only", limits(10, 1000), &mut reply);
        assert_eq!(reply, b"head:only");
    }

    #[test]
    fn every_pick_is_a_whole_message_kept_as_the_ring_wraps() {
        // Lengths 1..=13 in turn, each message its own byte: the ring's
        // text wraps around its end at many offsets, and every pick must
        // still be one of the last seven messages, whole.
        let history = MemoryHistory::default();
        let message = |i: usize| vec![u8::try_from(i % 251).expect("below 251"); 1 + i % 13];
        for i in 0..5000 {
            let picked = pick(&history, message(i), limits(7, 1 << 20));
            assert!(
                (i.saturating_sub(6)..=i).any(|j| picked == message(j)),
                "pick {picked:?} at {i} is not one of the last seven messages"
            );
        }
        assert_eq!(history.size().0, 7);
    }

    #[test]
    fn history_is_bounded_in_entries_and_bytes() {
        let history = MemoryHistory::default();
        for i in 0..10u8 {
            pick(&history, vec![i; 10], limits(3, 1000));
        }
        assert_eq!(history.size(), (3, 3 * (10 + ENTRY_OVERHEAD)));
        // Room for two entries of 10 bytes and their overhead, not three.
        let history = MemoryHistory::default();
        let tight = limits(100, 2 * (10 + ENTRY_OVERHEAD) + 5);
        for i in 0..10u8 {
            let picked = pick(&history, vec![i; 10], tight);
            assert!(
                picked[0] + 2 >= i,
                "picked a dropped entry {} at {i}",
                picked[0]
            );
        }
        assert_eq!(history.size(), (2, 2 * (10 + ENTRY_OVERHEAD)));
    }

    #[test]
    fn a_flood_of_one_byte_messages_is_bounded_by_history_bytes() {
        let history = MemoryHistory::default();
        for i in 0..100_000u32 {
            pick(&history, vec![(i % 251) as u8], limits(1 << 20, 1 << 20));
        }
        let (entries, bytes) = history.size();
        assert!(bytes <= 1 << 20, "{bytes} bytes counted");
        assert_eq!(entries, (1 << 20) / (1 + ENTRY_OVERHEAD));
    }

    #[test]
    fn picks_are_drawn_from_the_whole_history() {
        // 0..=4 recorded in a cycle into a history of five: once full it
        // always holds each value once, so every draw is uniform over five.
        // Each value must come back as the pick of a draw that recorded
        // another one (never true if only the newest were picked); missing
        // one in 1000 draws has a chance of about 5 * 0.84^1000 (1e-75).
        let history = MemoryHistory::default();
        let mut seen_older = [false; 5];
        for i in 0..1000u32 {
            let recorded = u8::try_from(i % 5).expect("below 5");
            let picked = pick(&history, vec![recorded], limits(5, 100_000))[0];
            if picked != recorded {
                seen_older[usize::from(picked)] = true;
            }
            if seen_older.iter().all(|s| *s) {
                break;
            }
        }
        assert_eq!(
            seen_older, [true; 5],
            "1000 draws from 5 entries missed one"
        );
    }
}
