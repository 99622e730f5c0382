//! `#[repr(C)]` types shared by the eBPF program (`runner-ebpf`) and the
//! userspace loader (`runner::detect::ebpf`). No `bool`, no implicit padding:
//! every byte of an event is written by the kernel side, so userspace never
//! reads uninitialised memory.
#![no_std]

/// [`ListenEvent::kind`] of a socket that started listening.
pub const EVENT_OPEN: u32 = 1;
/// [`ListenEvent::kind`] of a listener that left `TCP_LISTEN`: one the kernel
/// reported open, or one on a port of [`BACKFILL_PORTS`](maps::BACKFILL_PORTS)
/// (a listener older than the tracking, which userspace found in /proc).
pub const EVENT_CLOSE: u32 = 2;
/// [`ListenEvent::kind`] of a tracked process that called `execve`: its
/// listeners may now belong to another program.
pub const EVENT_EXEC: u32 = 3;

/// `AF_INET`, as in [`ListenEvent::family`].
pub const AF_INET: u16 = 2;
/// `AF_INET6`, as in [`ListenEvent::family`].
pub const AF_INET6: u16 = 10;

/// One record of the `EVENTS` ring buffer.
///
/// Close events carry `kind`, `skaddr`, `pid` (of the closing task, 0 when it
/// is not in the runner's pid namespace) and `port`; exec events `kind` and
/// `pid`. The other fields are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenEvent {
    /// Kernel address of the `struct sock`: pairs an open with its close.
    pub skaddr: u64,
    /// [`EVENT_OPEN`], [`EVENT_CLOSE`] or [`EVENT_EXEC`].
    pub kind: u32,
    /// Thread-group id of the listening process, in the runner's pid namespace.
    pub pid: u32,
    /// File descriptor passed to `listen()`, so userspace can find the socket
    /// inode (and its port when `listen()` ran without `bind()`).
    pub fd: u32,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// Local port in host byte order; 0 when `listen()` picked it (the
    /// tracepoint fires before the kernel assigns it).
    pub port: u16,
    /// Local address in network byte order: the first 4 bytes for IPv4.
    pub addr: [u8; 16],
}

/// Index of the single counter of the `DROPS` per-CPU array.
pub const DROPS_INDEX: u32 = 0;

/// Names of the maps userspace opens, shared so neither side can typo them.
pub mod maps {
    /// Ports (`u16` -> `u8`) of listeners userspace backfilled from /proc:
    /// the kernel never saw them open, so it reports their close by port.
    pub const BACKFILL_PORTS: &str = "BACKFILL_PORTS";
    /// Ids (`u64` -> `u8`) of the cgroups whose tasks are tracked.
    pub const CGROUPS: &str = "CGROUPS";
    /// Changes to or from `TCP_LISTEN` by local port (`u32` index ->
    /// `u64`), machine-wide; index 0: listens whose port was not chosen yet.
    pub const PORT_GENERATIONS: &str = "PORT_GENERATIONS";
    /// One `u64`: `inet_csk_listen_start` calls under way.
    pub const LISTENS_IN_FLIGHT: &str = "LISTENS_IN_FLIGHT";
}

/// Globals the loader sets before loading (`EbpfLoader::set_global`): the
/// byte offsets of the tracepoint fields, read from tracefs `format` files,
/// and who the runner is. The names are shared so neither side can typo them.
pub mod globals {
    pub const SOCK_SKADDR: &str = "OFF_SOCK_SKADDR";
    pub const SOCK_OLDSTATE: &str = "OFF_SOCK_OLDSTATE";
    pub const SOCK_NEWSTATE: &str = "OFF_SOCK_NEWSTATE";
    pub const SOCK_SPORT: &str = "OFF_SOCK_SPORT";
    pub const SOCK_FAMILY: &str = "OFF_SOCK_FAMILY";
    pub const SOCK_PROTOCOL: &str = "OFF_SOCK_PROTOCOL";
    pub const SOCK_SADDR: &str = "OFF_SOCK_SADDR";
    pub const SOCK_SADDR_V6: &str = "OFF_SOCK_SADDR_V6";
    pub const LISTEN_ENTER_FD: &str = "OFF_LISTEN_ENTER_FD";
    pub const LISTEN_EXIT_RET: &str = "OFF_LISTEN_EXIT_RET";
    pub const FORK_CHILD_PID: &str = "OFF_FORK_CHILD_PID";
    pub const EXIT_PID: &str = "OFF_EXIT_PID";
    pub const EXIT_GROUP_DEAD: &str = "OFF_EXIT_GROUP_DEAD";
    pub const EXEC_OLD_PID: &str = "OFF_EXEC_OLD_PID";
    /// `st_dev` of the runner's `/proc/self/ns/pid`, in the kernel's encoding.
    pub const PIDNS_DEV: &str = "RUNNER_PIDNS_DEV";
    /// `st_ino` of the runner's `/proc/self/ns/pid`.
    pub const PIDNS_INO: &str = "RUNNER_PIDNS_INO";
    /// 1 when the runner is in the initial pid namespace: host pids are
    /// its pids, even for tasks in nested namespaces.
    pub const IN_INIT_PIDNS: &str = "RUNNER_IN_INIT_PIDNS";
    /// The runner's own pid in its namespace: its listeners are never reported.
    pub const SELF_TGID: &str = "RUNNER_SELF_TGID";
    /// 1 when the runner has cgroups whose tasks are tracked.
    pub const WATCH_CGROUPS: &str = "WATCH_CGROUPS";
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: `ListenEvent` is `repr(C)`, `Copy`, has no padding (8 + 4*3 +
    // 2*2 + 16 = 40 bytes, 8-aligned) and every bit pattern is valid.
    unsafe impl aya::Pod for super::ListenEvent {}
}

#[cfg(test)]
mod tests {
    use super::ListenEvent;

    #[test]
    fn listen_event_has_no_padding() {
        let fields = 8 + 4 + 4 + 4 + 2 + 2 + 16;
        assert_eq!(core::mem::size_of::<ListenEvent>(), fields);
        assert_eq!(core::mem::align_of::<ListenEvent>(), 8);
    }
}
