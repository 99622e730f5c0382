//! The `EVENTS` ring buffer as an async source of [`ListenEvent`]s, and the
//! `DROPS` counter beside it.

use aya::maps::{MapData, PerCpuArray, RingBuf};
use runner_common::{DROPS_INDEX, ListenEvent};
use tokio::io::{Interest, unix::AsyncFd};

/// Ring buffer readable through epoll.
pub(crate) struct Ring {
    fd: AsyncFd<RingBuf<MapData>>,
    drops: PerCpuArray<MapData, u64>,
}

impl Ring {
    pub(crate) fn new(
        events: RingBuf<MapData>,
        drops: PerCpuArray<MapData, u64>,
    ) -> std::io::Result<Ring> {
        // SAFETY: the ring buffer owns its map fd and keeps it open, same
        // fd, until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }?;
        Ok(Ring { fd, drops })
    }

    /// Waits until the kernel submitted events, then takes all there are.
    pub(crate) async fn next_batch(&mut self) -> std::io::Result<Vec<ListenEvent>> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let ring = guard.get_inner_mut();
            let mut batch = Vec::new();
            while let Some(item) = ring.next() {
                match decode(&item) {
                    Some(event) => batch.push(event),
                    None => tracing::warn!(len = item.len(), "short eBPF event ignored"),
                }
            }
            guard.clear_ready();
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }

    /// Reservations the kernel could not make since load, over all CPUs.
    pub(crate) fn drops(&self) -> u64 {
        match self.drops.get(&DROPS_INDEX, 0) {
            Ok(values) => values.iter().sum(),
            Err(error) => {
                tracing::warn!(%error, "cannot read the eBPF drop counter");
                0
            }
        }
    }
}

/// One ring-buffer record; `None` when it is too short.
pub(crate) fn decode(bytes: &[u8]) -> Option<ListenEvent> {
    if bytes.len() < size_of::<ListenEvent>() {
        return None;
    }
    // SAFETY: length checked; ListenEvent is Pod (any bits valid) and
    // read_unaligned needs no alignment.
    Some(unsafe { bytes.as_ptr().cast::<ListenEvent>().read_unaligned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_common::{AF_INET6, EVENT_OPEN};

    #[test]
    fn decodes_an_open_event_as_the_kernel_lays_it_out() {
        let mut raw = Vec::new();
        raw.extend_from_slice(&0xffff_8880_1234_5678u64.to_ne_bytes());
        raw.extend_from_slice(&EVENT_OPEN.to_ne_bytes());
        raw.extend_from_slice(&4242u32.to_ne_bytes());
        raw.extend_from_slice(&7u32.to_ne_bytes());
        raw.extend_from_slice(&AF_INET6.to_ne_bytes());
        raw.extend_from_slice(&8080u16.to_ne_bytes());
        let mut addr = [0u8; 16];
        addr[15] = 1;
        raw.extend_from_slice(&addr);
        let event = decode(&raw).unwrap();
        assert_eq!(
            event,
            ListenEvent {
                skaddr: 0xffff_8880_1234_5678,
                kind: EVENT_OPEN,
                pid: 4242,
                fd: 7,
                family: AF_INET6,
                port: 8080,
                addr,
            }
        );
    }

    #[test]
    fn rejects_short_records() {
        assert_eq!(decode(&[0u8; 39]), None);
        assert_eq!(decode(&[]), None);
    }
}
