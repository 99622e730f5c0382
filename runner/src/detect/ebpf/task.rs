//! The event task: turns kernel events into [`DetectorEvent`]s, resyncs from
//! /proc after ring-buffer drops, and sends the backfill when a root is added.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use runner_common::{AF_INET, AF_INET6, EVENT_CLOSE, EVENT_OPEN, ListenEvent};
use tokio::sync::mpsc;

use super::{procinfo, ring::Ring, roots::Roots};
use crate::detect::{DetectorEvent, ListenerSocket, SocketId};

/// How often the drop counter and the backfilled listeners are checked
/// when no event wakes the task.
const TICK: Duration = Duration::from_secs(1);

pub struct EventTask {
    pub ring: Ring,
    pub roots: Arc<Roots>,
    pub resync: mpsc::UnboundedReceiver<()>,
    pub tx: mpsc::Sender<DetectorEvent>,
    pub self_pid: u32,
    /// Keeps the programs attached for as long as the task runs.
    pub _attached: Box<dyn Send + Sync>,
}

/// What the task knows between events.
#[derive(Default)]
struct State {
    /// Reported sockets by kernel address, for their closes.
    open: HashMap<u64, SocketId>,
    /// Listeners known only from a snapshot (they predate the kernel's
    /// tracking, so no close event will come): checked on each tick.
    backfilled: HashMap<SocketId, u32>,
    drops_seen: u64,
}

/// Why the task stops: the receiver is gone.
struct Closed;

impl EventTask {
    pub async fn run(mut self) {
        let mut state = State::default();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result: Result<(), Closed> = async {
            loop {
                let resync = tokio::select! {
                    batch = self.ring.next_batch() => {
                        let batch = match batch {
                            Ok(batch) => batch,
                            Err(error) => {
                                tracing::error!(%error, "eBPF ring buffer unreadable; detector stops");
                                return Ok(());
                            }
                        };
                        let mut resync = false;
                        for event in batch {
                            resync |= self.handle(&mut state, event).await?;
                        }
                        resync
                    }
                    _ = tick.tick() => {
                        self.check_backfilled(&mut state).await?;
                        false
                    }
                    asked = self.resync.recv() => {
                        if asked.is_none() {
                            return Ok(());
                        }
                        true
                    }
                    _ = self.tx.closed() => return Err(Closed),
                };
                let drops = self.ring.drops();
                let dropped = drops > state.drops_seen;
                if dropped {
                    tracing::warn!(lost = drops - state.drops_seen, "eBPF ring buffer overflowed; resyncing from /proc");
                    state.drops_seen = drops;
                }
                if resync || dropped {
                    self.snapshot(&mut state).await?;
                }
            }
        }
        .await;
        let _ = result;
        tracing::debug!("eBPF event task stopped");
    }

    /// Returns true when the event asks for a resync.
    async fn handle(&self, state: &mut State, event: ListenEvent) -> Result<bool, Closed> {
        match event.kind {
            EVENT_OPEN => {
                if event.pid == self.self_pid {
                    return Ok(false);
                }
                let Some(listener) = self.listener(event) else {
                    // Not in our pid namespace, or gone before we looked:
                    // /proc has the truth.
                    return Ok(true);
                };
                state.open.insert(event.skaddr, listener.id);
                state.backfilled.remove(&listener.id);
                self.send(DetectorEvent::Opened(listener)).await?;
            }
            EVENT_CLOSE => {
                let id = state
                    .open
                    .remove(&event.skaddr)
                    .unwrap_or(SocketId(event.skaddr));
                self.send(DetectorEvent::Closed(id)).await?;
            }
            other => tracing::warn!(kind = other, "unknown eBPF event kind ignored"),
        }
        Ok(false)
    }

    /// Completes a kernel open from /proc: socket inode (the id procfs
    /// snapshots use too), the real port after a `listen()` without
    /// `bind()`, and the process.
    fn listener(&self, event: ListenEvent) -> Option<ListenerSocket> {
        if event.pid == 0 {
            return None;
        }
        let addr = match event.family {
            AF_INET => {
                let [a, b, c, d, ..] = event.addr;
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            }
            AF_INET6 => IpAddr::V6(Ipv6Addr::from(event.addr)),
            _ => return None,
        };
        let inode = procinfo::socket_inode(event.pid, event.fd);
        let port = match (event.port, inode) {
            (0, Some(inode)) => procinfo::listening_port(event.pid, inode)?,
            (0, None) => return None,
            (port, _) => port,
        };
        Some(ListenerSocket {
            // Without the inode (fd closed already), the kernel address still
            // pairs the open with its close.
            id: SocketId(inode.unwrap_or(event.skaddr)),
            port,
            addr,
            pid: event.pid,
            process: crate::process::describe(event.pid),
        })
    }

    async fn snapshot(&self, state: &mut State) -> Result<(), Closed> {
        let roots = self.roots.list();
        let self_pid = self.self_pid;
        let scan =
            tokio::task::spawn_blocking(move || crate::detect::procfs::scan(&roots, self_pid))
                .await;
        let listeners = match scan {
            Ok(Ok(listeners)) => listeners,
            Ok(Err(error)) => {
                tracing::warn!(%error, "procfs scan for the eBPF backfill failed");
                return Ok(());
            }
            Err(error) => {
                tracing::warn!(%error, "procfs scan task failed");
                return Ok(());
            }
        };
        let from_events: std::collections::HashSet<SocketId> =
            state.open.values().copied().collect();
        state.backfilled = listeners
            .iter()
            .filter(|l| !from_events.contains(&l.id))
            .map(|l| (l.id, l.pid))
            .collect();
        self.send(DetectorEvent::Snapshot(listeners)).await
    }

    async fn check_backfilled(&self, state: &mut State) -> Result<(), Closed> {
        let gone: Vec<SocketId> = state
            .backfilled
            .iter()
            .filter(|(id, pid)| !procinfo::still_listening(**pid, **id))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            state.backfilled.remove(&id);
            self.send(DetectorEvent::Closed(id)).await?;
        }
        Ok(())
    }

    async fn send(&self, event: DetectorEvent) -> Result<(), Closed> {
        self.tx.send(event).await.map_err(|_| Closed)
    }
}
