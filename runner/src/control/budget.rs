//! Byte budgets for what waits to be written to Kandan (PROTOCOL.md
//! section 5: memory is bounded in bytes, not only in messages).
//!
//! Whoever produces a large event (a response body, a stream chunk, a
//! WebSocket message) takes a [`Charge`] of its size on the wire before it
//! is queued, and the charge travels with the event until the control
//! connection has written its frame to the socket (or dropped it). A full
//! budget makes the producer wait, which stops it reading from the local
//! server: backpressure instead of growth.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default budget for all events waiting for Kandan.
pub(crate) const DEFAULT_EVENT_BUDGET: usize = 64 * 1024 * 1024;

/// Frame overhead counted on top of a body (ids, headers, JSON punctuation).
const FRAME_OVERHEAD: usize = 512;

/// A pool of bytes; cheap to clone (clones share the pool).
#[derive(Clone, Debug)]
pub struct Budget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl Budget {
    /// A budget of `total` bytes (at least 1).
    pub(crate) fn new(total: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// The size of the whole budget.
    #[cfg(test)]
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Bytes not charged right now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Waits until `cost` bytes are free and takes them. A cost larger than
    /// the whole budget takes all of it (it must still be able to go, alone).
    /// Requests are served in order, so a large one is not starved.
    pub(crate) async fn charge(&self, cost: usize) -> Charge {
        let cost = cost.min(self.total).min(u32::MAX as usize);
        if cost == 0 {
            return Charge::default();
        }
        // The semaphore is never closed; a closed one would mean no limit.
        match self.bytes.clone().acquire_many_owned(cost as u32).await {
            Ok(permit) => Charge {
                permits: vec![permit],
            },
            Err(_) => Charge::default(),
        }
    }
}

/// The bytes a body of `len` bytes takes on the wire: base64 plus the frame.
pub(crate) fn wire_cost(len: usize) -> usize {
    len.div_ceil(3) * 4 + FRAME_OVERHEAD
}

/// Bytes taken from one or more budgets; they go back when this is dropped.
#[derive(Debug, Default)]
pub struct Charge {
    permits: Vec<OwnedSemaphorePermit>,
}

impl Charge {
    /// Adds `other`'s bytes to this charge.
    pub(crate) fn merge(&mut self, other: Charge) {
        self.permits.extend(other.permits);
    }

    /// Gives back everything over `keep` bytes of the budget charged first
    /// (a body turned out smaller than what was reserved for it).
    pub(crate) fn shrink_to(&mut self, keep: usize) {
        if let Some(permit) = self.permits.first_mut() {
            let excess = permit.num_permits().saturating_sub(keep.max(1));
            drop(permit.split(excess));
        }
    }

    /// The bytes held, over all budgets.
    pub(crate) fn bytes(&self) -> usize {
        self.permits
            .iter()
            .map(OwnedSemaphorePermit::num_permits)
            .sum()
    }
}

/// Charges compare equal: they are bookkeeping, not content.
impl PartialEq for Charge {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Charge {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_full_budget_waits_until_bytes_come_back() {
        let budget = Budget::new(1000);
        let first = budget.charge(600).await;
        assert_eq!(budget.available(), 400);
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.charge(600)).await;
        assert!(waiting.is_err(), "charged past the budget");
        drop(first);
        let second = budget.charge(600).await;
        assert_eq!(second.bytes(), 600);
        assert_eq!(budget.available(), 400);
    }

    #[tokio::test]
    async fn an_oversized_cost_takes_the_whole_budget_instead_of_waiting_forever() {
        let budget = Budget::new(1000);
        let all = budget.charge(5000).await;
        assert_eq!(all.bytes(), 1000);
        assert_eq!(budget.available(), 0);
        drop(all);
        assert_eq!(budget.available(), 1000);
    }

    #[tokio::test]
    async fn merged_and_shrunk_charges_give_back_what_they_do_not_hold() {
        let global = Budget::new(1000);
        let socket = Budget::new(100);
        let mut charge = global.charge(800).await;
        charge.merge(socket.charge(50).await);
        assert_eq!(charge.bytes(), 850);
        charge.shrink_to(300);
        assert_eq!(global.available(), 700);
        assert_eq!(socket.available(), 50);
        drop(charge);
        assert_eq!((global.available(), socket.available()), (1000, 100));
    }

    #[test]
    fn wire_cost_is_base64_plus_the_frame() {
        assert_eq!(wire_cost(0), FRAME_OVERHEAD);
        assert_eq!(wire_cost(3), 4 + FRAME_OVERHEAD);
        assert_eq!(wire_cost(8 << 20), (8 << 20) / 3 * 4 + 4 + FRAME_OVERHEAD);
    }
}
