//! The history in the process's memory: a deque of messages under one
//! lock, bounded in messages and bytes. Lost when the process ends.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::{ENTRY_OVERHEAD, Limits};

/// A history in memory, shared by the connections of one listener.
#[derive(Debug, Default)]
pub(crate) struct MemoryHistory {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    messages: VecDeque<Bytes>,
    /// The text of the messages kept, plus [`ENTRY_OVERHEAD`] each.
    bytes: usize,
}

impl MemoryHistory {
    /// Records `message`, drops the oldest entries past `limits` (the newest
    /// always stays), and appends a uniformly random entry (possibly
    /// `message` itself) to `reply`, with room for one byte more (a line
    /// ending). Copied under the lock, not cloned: a clone of a `Bytes` made
    /// from a `Vec` allocates its shared form, and the caller copies the
    /// pick into its reply anyway.
    pub(crate) fn record_and_pick(&self, message: Bytes, limits: Limits, reply: &mut Vec<u8>) {
        let mut entries = self.entries();
        entries.bytes += message.len() + ENTRY_OVERHEAD;
        entries.messages.push_back(message);
        while entries.messages.len() > limits.messages
            || (entries.bytes > limits.bytes && entries.messages.len() > 1)
        {
            match entries.messages.pop_front() {
                Some(old) => entries.bytes -= old.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
        let pick = rand::random_range(0..entries.messages.len());
        super::append_pick(reply, &entries.messages[pick]);
    }

    /// Messages kept, and the bytes they are counted as.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let entries = self.entries();
        (entries.messages.len(), entries.bytes)
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        // A panic cannot leave `Entries` half-updated in a way that matters,
        // so a poisoned lock is still usable.
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
        history.record_and_pick(Bytes::from(message), limits, &mut reply);
        reply
    }

    #[test]
    fn the_pick_is_appended_to_the_reply() {
        let history = MemoryHistory::default();
        let mut reply = b"head:".to_vec();
        history.record_and_pick(Bytes::from_static(b"only"), limits(10, 1000), &mut reply);
        assert_eq!(reply, b"head:only");
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
