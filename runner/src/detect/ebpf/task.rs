//! The event task: turns kernel events into [`DetectorEvent`]s, resyncs from
//! /proc after ring-buffer drops, and sends the backfill when a root is added.
//!
//! It sleeps until the kernel or a root change wakes it: no timer runs while
//! nothing happens. The drop counter is read after each batch of events (a
//! drop needs a full ring, whose events wake the task), and backfilled
//! listeners' closes come from the kernel too ([`super::backfill`]).

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use runner_common::{AF_INET, AF_INET6, EVENT_CLOSE, EVENT_EXEC, EVENT_OPEN, ListenEvent};
use tokio::sync::mpsc;

use super::{
    backfill::Backfill,
    procinfo::{self, NetNs},
    ring::Ring,
    roots::Roots,
};
use crate::detect::{
    DetectorEvent, ListenerSocket, SocketId,
    procfs::{held_inodes, listening_inodes},
};

pub(crate) struct EventTask {
    pub(crate) ring: Ring,
    pub(crate) roots: Arc<Roots>,
    pub(crate) resync: mpsc::UnboundedReceiver<()>,
    pub(crate) tx: mpsc::Sender<DetectorEvent>,
    pub(crate) self_pid: u32,
    /// The runner's network namespace; `None` when unreadable (then every
    /// listener counts, and the verified dial is the only check).
    pub(crate) net_ns: Option<NetNs>,
    pub(crate) backfill: Backfill,
    /// Keeps the programs attached for as long as the task runs.
    pub(crate) _attached: std::sync::Arc<dyn Send + Sync>,
}

/// What the task knows between events.
#[derive(Default)]
struct State {
    /// Reported sockets by kernel address, for their closes.
    open: HashMap<u64, SocketId>,
    /// Every socket the pipeline holds (reported open or in the last
    /// snapshot), so an exec can re-describe those of a process.
    sockets: HashMap<SocketId, ListenerSocket>,
    /// Kernel addresses of opens left out (another network namespace):
    /// their closes are left out too.
    ignored: HashSet<u64>,
    drops_seen: u64,
}

/// Why the task stops: the receiver is gone.
struct Closed;

impl EventTask {
    pub(crate) async fn run(mut self) {
        let mut state = State::default();
        let result: Result<(), Closed> = async {
            loop {
                let due = self.backfill.due();
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
                        resync || self.dropped(&mut state)
                    }
                    // Only armed just after a backfilled port saw a close.
                    () = sleep_until(due) => {
                        let gone = self.backfill.recheck(listening_inodes);
                        self.closed(&mut state, gone).await?;
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
                if resync {
                    self.snapshot(&mut state).await?;
                }
            }
        }
        .await;
        let _ = result;
        tracing::debug!("eBPF event task stopped");
    }

    /// Whether the kernel dropped events since the last look.
    fn dropped(&self, state: &mut State) -> bool {
        let drops = self.ring.drops();
        if drops <= state.drops_seen {
            return false;
        }
        tracing::warn!(
            lost = drops - state.drops_seen,
            "eBPF ring buffer overflowed; resyncing from /proc"
        );
        state.drops_seen = drops;
        true
    }

    /// Returns true when the event asks for a resync.
    async fn handle(&mut self, state: &mut State, event: ListenEvent) -> Result<bool, Closed> {
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
                if !self.in_runner_net_ns(&listener) {
                    tracing::debug!(
                        pid = listener.pid,
                        port = listener.port,
                        "listener in another network namespace left out"
                    );
                    state.ignored.insert(event.skaddr);
                    return Ok(false);
                }
                state.open.insert(event.skaddr, listener.id);
                self.backfill.remove(listener.id);
                state.sockets.insert(listener.id, listener.clone());
                self.send(DetectorEvent::Opened(listener)).await?;
            }
            EVENT_CLOSE => {
                if state.ignored.remove(&event.skaddr) {
                    return Ok(false);
                }
                let gone = match state.open.remove(&event.skaddr) {
                    Some(id) => vec![id],
                    // Not seen open: one of the backfilled on its port?
                    None => self.backfill.closed_on(event.port, listening_inodes),
                };
                self.closed(state, gone).await?;
            }
            EVENT_EXEC => return self.exec(state, event.pid).await,
            other => tracing::warn!(kind = other, "unknown eBPF event kind ignored"),
        }
        Ok(false)
    }

    /// `pid` ran another program: the sockets it kept now belong to it.
    /// Each is reported again (same id, new process) when the description
    /// changed. Returns true when a resync must tell (a pid from another
    /// namespace).
    async fn exec(&self, state: &mut State, pid: u32) -> Result<bool, Closed> {
        if pid == 0 {
            return Ok(!state.sockets.is_empty());
        }
        let mut held: Vec<SocketId> = state
            .sockets
            .values()
            .filter(|socket| socket.pid == pid)
            .map(|socket| socket.id)
            .collect();
        if held.is_empty() {
            return Ok(false);
        }
        // The exec closed its close-on-exec fds before the event: a socket
        // it no longer holds is closing, or held by another process (a
        // forked worker), and is not the new program's.
        let wanted: HashSet<u64> = held.iter().map(|id| id.0).collect();
        if let Some(kept) = held_inodes(pid, &wanted) {
            held.retain(|id| kept.contains(&id.0));
        }
        let process = crate::detect::process_info::describe(pid);
        for id in held {
            let Some(socket) = state.sockets.get_mut(&id) else {
                continue;
            };
            if socket.process == process {
                continue;
            }
            tracing::debug!(pid, port = socket.port, command = %process.command, "listener changed program");
            socket.process = process.clone();
            let socket = socket.clone();
            self.send(DetectorEvent::Opened(socket)).await?;
        }
        Ok(false)
    }

    async fn closed(&mut self, state: &mut State, gone: Vec<SocketId>) -> Result<(), Closed> {
        for id in gone {
            state.sockets.remove(&id);
            self.backfill.remove(id);
            self.send(DetectorEvent::Closed(id)).await?;
        }
        Ok(())
    }

    /// Only listeners of the runner's network namespace can be reached, so
    /// only they are candidates. A process in the runner's namespace passes
    /// at once (a socket is made in the namespace of its maker); another
    /// (`unshare -n`) only when its socket is in the runner's table (made
    /// before the unshare, or passed in).
    fn in_runner_net_ns(&self, listener: &ListenerSocket) -> bool {
        let Some(own) = self.net_ns else {
            return true;
        };
        if procinfo::net_ns(&listener.pid.to_string()) == Some(own) {
            return true;
        }
        match listening_inodes() {
            Ok(inodes) => inodes.contains(&listener.id.0),
            Err(error) => {
                tracing::debug!(%error, "socket table unreadable; listener kept");
                true
            }
        }
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
            process: crate::detect::process_info::describe(event.pid),
        })
    }

    async fn snapshot(&mut self, state: &mut State) -> Result<(), Closed> {
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
        state.sockets = listeners.iter().map(|l| (l.id, l.clone())).collect();
        // An open whose close was lost in a drop must not linger.
        state.open.retain(|_, id| state.sockets.contains_key(id));
        let from_events: HashSet<SocketId> = state.open.values().copied().collect();
        self.backfill.replace(
            listeners
                .iter()
                .filter(|l| !from_events.contains(&l.id))
                .map(|l| (l.id, l.port)),
        );
        self.send(DetectorEvent::Snapshot(listeners)).await
    }

    async fn send(&self, event: DetectorEvent) -> Result<(), Closed> {
        self.tx.send(event).await.map_err(|_| Closed)
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
