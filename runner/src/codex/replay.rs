//! Each instance's events kept until Kandan acknowledges them (PROTOCOL.md
//! section 7): `seq` from 1 without gaps, unacknowledged events resent in
//! order after a reconnect, at most `max_bytes` kept; past the bound the
//! oldest go and the first event sent after the loss carries `gap: true`.

use std::collections::VecDeque;

/// 16 MiB per instance.
pub(crate) const DEFAULT_MAX_BYTES: usize = 16 << 20;

/// One kept event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry<E> {
    pub(crate) seq: u64,
    /// Events before this one were dropped unacknowledged: send it with
    /// `gap: true` (Kandan then calls `read_thread`).
    pub(crate) gap: bool,
    pub(crate) event: E,
    bytes: usize,
    acked: bool,
}

/// The per-instance log. `E` is whatever the caller sends (typically the
/// serialized event); the caller gives each event's size in bytes.
#[derive(Debug)]
pub(crate) struct Replay<E> {
    entries: VecDeque<Entry<E>>,
    last_seq: u64,
    bytes: usize,
    max_bytes: usize,
    /// Something was dropped with nothing kept after it: the next pushed
    /// event carries the gap.
    gap_next: bool,
}

impl<E> Replay<E> {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Replay {
            entries: VecDeque::new(),
            last_seq: 0,
            bytes: 0,
            max_bytes,
            gap_next: false,
        }
    }

    /// Numbers `event` (of `bytes` bytes) and keeps it; returns the entry
    /// to send now, with its `seq` and `gap`.
    pub(crate) fn push(&mut self, event: E, bytes: usize) -> &Entry<E> {
        self.last_seq += 1;
        let gap = std::mem::take(&mut self.gap_next);
        self.entries.push_back(Entry {
            seq: self.last_seq,
            gap,
            event,
            bytes,
            acked: false,
        });
        self.bytes += bytes;
        self.evict();
        // `evict` keeps the newest entry whatever its size.
        self.entries.back().expect("the entry just pushed")
    }

    /// Kandan's `phx_reply` for `seq` arrived: it need not be kept. Unknown
    /// or repeated seqs are ignored.
    pub(crate) fn ack(&mut self, seq: u64) {
        let Some(front) = self.entries.front().map(|entry| entry.seq) else {
            return;
        };
        let Some(index) = seq.checked_sub(front).and_then(|i| usize::try_from(i).ok()) else {
            return;
        };
        if let Some(entry) = self.entries.get_mut(index)
            && !entry.acked
        {
            entry.acked = true;
            self.bytes -= entry.bytes;
        }
        while self.entries.front().is_some_and(|entry| entry.acked) {
            self.entries.pop_front();
        }
    }

    /// The unacknowledged events in order, to send again after a reconnect.
    pub(crate) fn unacked(&self) -> impl Iterator<Item = &Entry<E>> {
        self.entries.iter().filter(|entry| !entry.acked)
    }

    /// The seq of the newest event (0 before any), for `runner_ready`.
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn evict(&mut self) {
        let mut dropped = false;
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            if let Some(entry) = self.entries.pop_front()
                && !entry.acked
            {
                self.bytes -= entry.bytes;
                dropped = true;
            }
        }
        while self.entries.front().is_some_and(|entry| entry.acked) {
            self.entries.pop_front();
        }
        if dropped {
            match self.entries.iter_mut().find(|entry| !entry.acked) {
                Some(first) => first.gap = true,
                None => self.gap_next = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(replay: &Replay<String>) -> Vec<(u64, bool)> {
        replay
            .unacked()
            .map(|entry| (entry.seq, entry.gap))
            .collect()
    }

    #[test]
    fn numbers_from_one_and_forgets_what_is_acked() {
        let mut replay = Replay::new(1000);
        assert_eq!(replay.last_seq(), 0);
        for i in 1..=4 {
            let entry = replay.push(format!("e{i}"), 10);
            assert_eq!(entry.seq, i);
            assert!(!entry.gap);
            assert_eq!(entry.event, format!("e{i}"));
        }
        replay.ack(2);
        assert_eq!(seqs(&replay), vec![(1, false), (3, false), (4, false)]);
        replay.ack(1);
        replay.ack(1);
        replay.ack(99);
        assert_eq!(seqs(&replay), vec![(3, false), (4, false)]);
        assert_eq!(replay.bytes, 20);
        replay.ack(3);
        replay.ack(4);
        assert_eq!(seqs(&replay), vec![]);
        assert_eq!(replay.bytes, 0);
        assert_eq!(replay.push(String::new(), 1).seq, 5);
        assert_eq!(replay.last_seq(), 5);
    }

    #[test]
    fn past_the_bound_the_oldest_go_and_the_next_sent_has_a_gap() {
        let mut replay = Replay::new(30);
        for _ in 0..3 {
            replay.push(String::new(), 10);
        }
        assert_eq!(seqs(&replay), vec![(1, false), (2, false), (3, false)]);
        // The fourth pushes the first out: the oldest kept (2) gets the gap.
        let entry = replay.push(String::new(), 10);
        assert!(!entry.gap);
        assert_eq!(seqs(&replay), vec![(2, true), (3, false), (4, false)]);
        assert_eq!(replay.bytes, 30);
        // Acked events do not count against the bound.
        replay.ack(2);
        replay.ack(3);
        replay.ack(4);
        for _ in 0..3 {
            replay.push(String::new(), 10);
        }
        assert_eq!(seqs(&replay), vec![(5, false), (6, false), (7, false)]);
    }

    #[test]
    fn an_event_larger_than_the_bound_is_kept_alone() {
        let mut replay = Replay::new(30);
        replay.push(String::new(), 10);
        let entry = replay.push(String::new(), 100);
        assert!(entry.gap, "seq 1 was dropped before seq 2 was sent");
        assert_eq!(seqs(&replay), vec![(2, true)]);
        // Dropped with nothing after it: the next push carries the gap.
        let entry = replay.push("big".into(), 100);
        assert!(entry.gap);
        assert_eq!(entry.event, "big");
        assert_eq!(seqs(&replay), vec![(3, true)]);
    }
}
