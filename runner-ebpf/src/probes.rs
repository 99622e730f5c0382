//! The programs. How a listener is found:
//!
//! - `sys_enter_listen` (tracked tasks only) opens a [`Pending`] entry for the
//!   calling thread with the fd.
//! - `sock/inet_sock_set_state` with `newstate == TCP_LISTEN` fills the
//!   calling thread's pending entry with the socket (address, family, port).
//!   Only threads inside `listen()` of a tracked task have one, so the
//!   tracepoint costs an untracked task a single map lookup.
//! - `sys_exit_listen` emits the open only when `listen()` returned 0: a
//!   `listen()` failing with EADDRINUSE goes LISTEN then CLOSE inside the call
//!   and reports nothing.
//! - `oldstate == TCP_LISTEN` of a socket in `LISTENERS` emits the close,
//!   whoever closes it; so does that of any socket on a port of
//!   `BACKFILL_PORTS` (listeners userspace found in /proc, older than the
//!   tracking), which userspace then checks against the socket table. No
//!   polling is needed to see a backfilled listener go.
//! - `sched_process_exec` of a tracked task emits an exec: the listeners it
//!   holds may now belong to another program.
//! - `sched_process_fork`/`exit` keep `TRACKED`, the host tids descending from
//!   the roots; userspace fills `NS_TRACKED` with the roots and the processes
//!   they already had, by pid as the runner sees them.
//! - A task whose cgroup or one of its ancestors is in `CGROUPS` (the cgroups
//!   the runner started its command, instances and editors in) is tracked
//!   whatever its ancestry: the cgroup is the tree.
//!
//! - Whatever the task, every change of a socket to or from `TCP_LISTEN`
//!   bumps `PORT_GENERATIONS[sport]`. A TCP socket becomes `TCP_LISTEN`
//!   only inside `inet_csk_listen_start`, before it is hashed (reachable):
//!   that state change also counts the thread in `LISTENS_IN_FLIGHT`
//!   (first) and marks it in `LISTEN_STARTS`; `sys_exit_listen`, after the
//!   hash, uncounts a marked thread. The verified dial skips its sock_diag
//!   dump when neither moved (`runner::gate::dial_cache` says why that is
//!   sound).
//!
//! Every field offset comes from a global the loader sets from tracefs.

use aya_ebpf::{
    bindings::bpf_pidns_info,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_ns_current_pid_tgid},
    },
    macros::{map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use runner_common::{
    AF_INET, AF_INET6, DROPS_INDEX, EVENT_CLOSE, EVENT_EXEC, EVENT_OPEN, ListenEvent,
};

const TCP_SYN_RECV: i32 = 3;
const TCP_LISTEN: i32 = 10;
const IPPROTO_TCP: u16 = 6;

// Set by the loader (`EbpfLoader::set_global`); names in
// `runner_common::globals`. Read with `read_volatile` so the compiler cannot
// fold the zero initialisers.
#[unsafe(no_mangle)]
static OFF_SOCK_SKADDR: u32 = 0;
#[unsafe(no_mangle)]
static OFF_SOCK_OLDSTATE: u32 = 0;
#[unsafe(no_mangle)]
static OFF_SOCK_NEWSTATE: u32 = 0;
#[unsafe(no_mangle)]
static OFF_SOCK_SPORT: u32 = 0;
#[unsafe(no_mangle)]
static OFF_SOCK_FAMILY: u32 = 0;
#[unsafe(no_mangle)]
static OFF_SOCK_PROTOCOL: u32 = 0;
#[unsafe(no_mangle)]
static OFF_SOCK_SADDR: u32 = 0;
#[unsafe(no_mangle)]
static OFF_SOCK_SADDR_V6: u32 = 0;
#[unsafe(no_mangle)]
static OFF_LISTEN_ENTER_FD: u32 = 0;
#[unsafe(no_mangle)]
static OFF_LISTEN_EXIT_RET: u32 = 0;
#[unsafe(no_mangle)]
static OFF_FORK_CHILD_PID: u32 = 0;
#[unsafe(no_mangle)]
static OFF_EXIT_PID: u32 = 0;
#[unsafe(no_mangle)]
static OFF_EXIT_GROUP_DEAD: u32 = 0;
#[unsafe(no_mangle)]
static OFF_EXEC_OLD_PID: u32 = 0;
#[unsafe(no_mangle)]
static RUNNER_PIDNS_DEV: u64 = 0;
#[unsafe(no_mangle)]
static RUNNER_PIDNS_INO: u64 = 0;
#[unsafe(no_mangle)]
static RUNNER_IN_INIT_PIDNS: u32 = 0;
#[unsafe(no_mangle)]
static RUNNER_SELF_TGID: u32 = 0;
/// 1 when the runner has cgroups (`CGROUPS` may hold ids).
#[unsafe(no_mangle)]
static WATCH_CGROUPS: u32 = 0;

/// How deep below the root a task's cgroups are looked at. Levels are
/// absolute (a container's cgroup namespace does not change them), so the
/// walk needs no level from userspace.
const MAX_CGROUP_LEVEL: i32 = 32;

#[inline(always)]
fn global<T: Copy>(value: &'static T) -> T {
    // SAFETY: a valid static; volatile so the loader's value is read.
    unsafe { core::ptr::read_volatile(value) }
}

#[inline(always)]
fn off(value: &'static u32) -> usize {
    global(value) as usize
}

/// A `listen()` in progress on a tracked thread.
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    skaddr: u64,
    fd: u32,
    /// 1 once the socket reached `TCP_LISTEN` during this call.
    has_sock: u32,
    family: u16,
    port: u16,
    _pad: u32,
    addr: [u8; 16],
}

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Ring-buffer reservations that failed: userspace resyncs when it grows.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Host tids forked from a tracked task.
#[map]
static TRACKED: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Tgids, as the runner sees them, of the roots and their descendants that
/// existed when the root was added (userspace fills it).
#[map]
static NS_TRACKED: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Ids of the cgroups whose tasks are tracked (userspace fills it).
#[map]
static CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(4096, 0);

/// `listen()` calls in progress, by host tid. LRU so an entry whose exit
/// never came (a killed thread) cannot fill the map.
#[map]
static PENDING: LruHashMap<u32, Pending> = LruHashMap::with_max_entries(4096, 0);

/// Sockets reported open, until their close is reported.
#[map]
static LISTENERS: HashMap<u64, u8> = HashMap::with_max_entries(65536, 0);

/// Ports of backfilled listeners (userspace fills it): their close is
/// reported by port, as the kernel never saw their open.
#[map]
static BACKFILL_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(4096, 0);

/// Changes to or from `TCP_LISTEN` by local port, of every socket of every
/// process in every network namespace. Index 0 counts the listens whose
/// port was not chosen yet (`listen()` without `bind()`).
#[map]
static PORT_GENERATIONS: Array<u64> = Array::with_max_entries(65536, 0);

/// Threads between a TCP socket's change to `TCP_LISTEN` and the return of
/// their `listen()`: the socket may not be reachable yet.
#[map]
static LISTENS_IN_FLIGHT: Array<u64> = Array::with_max_entries(1, 0);

/// Host tids counted in `LISTENS_IN_FLIGHT`, so a return uncounts only
/// what its own call counted (one that failed before the state change
/// counted nothing). Not LRU: an entry lost would leave the count stuck
/// above 0, which only disables the dial cache; a full map does the same,
/// and so does a listen from the kernel (`kernel_listen`) or io_uring,
/// which never returns through `sys_exit_listen`.
#[map]
static LISTEN_STARTS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// Adds `delta` (wrapping) to a counter, atomically: the result is unused,
/// so it compiles to the plain atomic add every BPF CPU version has.
#[inline(always)]
fn bump(counter: Option<*mut u64>, delta: u64) {
    if let Some(counter) = counter {
        // `AtomicU64` has no `fetch_add` on this target (no 64-bit CAS); the
        // intrinsic becomes the BPF atomic add.
        // SAFETY: an aligned u64 inside a map value, which outlives the call.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                counter, delta,
            )
        };
    }
}

/// Current tgid as the runner sees it; `None` when the task is not in the
/// runner's pid namespace (the helper does not translate from nested ones).
#[inline(always)]
fn runner_tgid() -> Option<u32> {
    if global(&RUNNER_IN_INIT_PIDNS) != 0 {
        return Some((bpf_get_current_pid_tgid() >> 32) as u32);
    }
    let mut info = bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: `info` is a valid out-pointer of the size passed.
    let ret = unsafe {
        bpf_get_ns_current_pid_tgid(
            global(&RUNNER_PIDNS_DEV),
            global(&RUNNER_PIDNS_INO),
            &mut info,
            core::mem::size_of::<bpf_pidns_info>() as u32,
        )
    };
    (ret == 0).then_some(info.tgid)
}

#[inline(always)]
fn in_watched_cgroup() -> bool {
    if global(&WATCH_CGROUPS) == 0 {
        return false;
    }
    // The root (level 0) is never the runner's.
    for level in 1..=MAX_CGROUP_LEVEL {
        // SAFETY: a helper with a plain integer argument; 0 when the task's
        // cgroup is not that deep.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 {
            return false;
        }
        if CGROUPS.get_ptr(id).is_some() {
            return true;
        }
    }
    false
}

#[inline(always)]
fn tracked(tid: u32, tgid: Option<u32>) -> bool {
    if TRACKED.get_ptr(tid).is_some() || in_watched_cgroup() {
        return true;
    }
    match tgid {
        Some(tgid) => NS_TRACKED.get_ptr(tgid).is_some(),
        None => false,
    }
}

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

fn emit(event: ListenEvent) {
    match EVENTS.reserve::<ListenEvent>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(0);
        }
        None => {
            if let Some(drops) = DROPS.get_ptr_mut(DROPS_INDEX) {
                // SAFETY: per-CPU slot, no concurrent writer on this CPU.
                unsafe { *drops += 1 };
            }
        }
    }
}

#[tracepoint(category = "syscalls", name = "sys_enter_listen")]
pub fn listen_enter(ctx: TracePointContext) -> u32 {
    let tid = current_tid();
    let tgid = runner_tgid();
    if tgid.is_some_and(|tgid| tgid == global(&RUNNER_SELF_TGID)) || !tracked(tid, tgid) {
        return 0;
    }
    // SAFETY: offset from the tracepoint's format file.
    let fd: u64 = unsafe { ctx.read_at(off(&OFF_LISTEN_ENTER_FD)) }.unwrap_or(u64::MAX);
    let pending = Pending {
        skaddr: 0,
        fd: fd as u32,
        has_sock: 0,
        family: 0,
        port: 0,
        _pad: 0,
        addr: [0; 16],
    };
    let _ = PENDING.insert(tid, pending, 0);
    0
}

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_sock_set_state(&ctx);
    0
}

fn try_sock_set_state(ctx: &TracePointContext) -> Result<(), i32> {
    // SAFETY (all reads): offsets from the tracepoint's format file.
    let oldstate = unsafe { ctx.read_at::<i32>(off(&OFF_SOCK_OLDSTATE)) };
    let newstate = unsafe { ctx.read_at::<i32>(off(&OFF_SOCK_NEWSTATE)) };
    // Before any filter (protocol, task): the dial cache must hear of every
    // listener. A state or port that cannot be read counts as a change of
    // the unknown port, which every cached dial compares too.
    let protocol = unsafe { ctx.read_at::<u16>(off(&OFF_SOCK_PROTOCOL)) };
    // A TCP socket starting to listen (or what cannot be told apart from
    // one) is counted in flight before the generation moves: a reader that
    // sees the new generation sees this count too.
    let not_listening = newstate.is_ok_and(|state| state != TCP_LISTEN);
    let not_tcp = protocol.is_ok_and(|protocol| protocol != IPPROTO_TCP);
    if !not_listening && !not_tcp {
        let tid = current_tid();
        if LISTEN_STARTS.get_ptr(tid).is_none() {
            let _ = LISTEN_STARTS.insert(tid, 1, 0);
            bump(LISTENS_IN_FLIGHT.get_ptr_mut(0), 1);
        }
    }
    // A connection accepted on a listener is cloned from it and goes from
    // its `TCP_LISTEN` to `TCP_SYN_RECV`: not a listener change.
    let cloned = oldstate == Ok(TCP_LISTEN) && newstate == Ok(TCP_SYN_RECV);
    if oldstate != Ok(TCP_LISTEN) && newstate != Ok(TCP_LISTEN) {
        if oldstate.is_err() || newstate.is_err() {
            bump(PORT_GENERATIONS.get_ptr_mut(0), 1);
        }
    } else if !cloned {
        let port: u16 = unsafe { ctx.read_at(off(&OFF_SOCK_SPORT)) }.unwrap_or(0);
        bump(PORT_GENERATIONS.get_ptr_mut(u32::from(port)), 1);
    }
    let (oldstate, newstate) = (oldstate?, newstate?);
    if protocol? != IPPROTO_TCP {
        return Ok(());
    }
    let skaddr: u64 = unsafe { ctx.read_at(off(&OFF_SOCK_SKADDR)) }?;
    if newstate == TCP_LISTEN {
        let tid = current_tid();
        let Some(pending) = PENDING.get_ptr_mut(tid) else {
            return Ok(());
        };
        let family: u16 = unsafe { ctx.read_at(off(&OFF_SOCK_FAMILY)) }?;
        let port: u16 = unsafe { ctx.read_at(off(&OFF_SOCK_SPORT)) }?;
        let mut addr = [0u8; 16];
        if family == AF_INET {
            let v4: [u8; 4] = unsafe { ctx.read_at(off(&OFF_SOCK_SADDR)) }?;
            addr[..4].copy_from_slice(&v4);
        } else if family == AF_INET6 {
            addr = unsafe { ctx.read_at(off(&OFF_SOCK_SADDR_V6)) }?;
        } else {
            return Ok(());
        }
        // SAFETY: pointer into the map value, this thread's own entry.
        unsafe {
            (*pending).skaddr = skaddr;
            (*pending).family = family;
            (*pending).port = port;
            (*pending).addr = addr;
            (*pending).has_sock = 1;
        }
    } else if oldstate == TCP_LISTEN {
        let port: u16 = unsafe { ctx.read_at(off(&OFF_SOCK_SPORT)) }?;
        if LISTENERS.get_ptr(skaddr).is_some() {
            let _ = LISTENERS.remove(skaddr);
        } else if BACKFILL_PORTS.get_ptr(port).is_none() {
            return Ok(());
        }
        emit(ListenEvent {
            skaddr,
            kind: EVENT_CLOSE,
            // The closing task (for a process that exits, still itself).
            pid: runner_tgid().unwrap_or(0),
            fd: 0,
            family: 0,
            port,
            addr: [0; 16],
        });
    }
    Ok(())
}

#[tracepoint(category = "syscalls", name = "sys_exit_listen")]
pub fn listen_exit(ctx: TracePointContext) -> u32 {
    let tid = current_tid();
    // `listen()` returns after `inet_csk_listen_start` hashed the socket
    // (or failed): no longer in flight.
    if LISTEN_STARTS.get_ptr(tid).is_some() {
        let _ = LISTEN_STARTS.remove(tid);
        bump(LISTENS_IN_FLIGHT.get_ptr_mut(0), u64::MAX);
    }
    let Some(pending) = PENDING.get_ptr(tid) else {
        return 0;
    };
    // SAFETY: pointer into the map value, copied before the entry is removed.
    let pending = unsafe { *pending };
    let _ = PENDING.remove(tid);
    // SAFETY: offset from the tracepoint's format file.
    let ret: i64 = unsafe { ctx.read_at(off(&OFF_LISTEN_EXIT_RET)) }.unwrap_or(-1);
    if ret != 0 || pending.has_sock == 0 {
        return 0;
    }
    let _ = LISTENERS.insert(pending.skaddr, 1, 0);
    emit(ListenEvent {
        skaddr: pending.skaddr,
        kind: EVENT_OPEN,
        // 0: not in the runner's pid namespace; userspace resyncs from /proc.
        pid: runner_tgid().unwrap_or(0),
        fd: pending.fd,
        family: pending.family,
        port: pending.port,
        addr: pending.addr,
    });
    0
}

#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn process_fork(ctx: TracePointContext) -> u32 {
    // The parent is the current task.
    if !tracked(current_tid(), runner_tgid()) {
        return 0;
    }
    // SAFETY: offset from the tracepoint's format file.
    if let Ok(child) = unsafe { ctx.read_at::<i32>(off(&OFF_FORK_CHILD_PID)) } {
        let _ = TRACKED.insert(child as u32, 1, 0);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn process_exit(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file.
    let tid = unsafe { ctx.read_at::<i32>(off(&OFF_EXIT_PID)) }.map_or(current_tid(), |p| p as u32);
    let _ = TRACKED.remove(tid);
    let _ = PENDING.remove(tid);
    // The whole group is gone: forget its tgid so a reused pid is not watched.
    let group_dead: u8 = unsafe { ctx.read_at(off(&OFF_EXIT_GROUP_DEAD)) }.unwrap_or(0);
    if group_dead != 0
        && let Some(tgid) = runner_tgid()
    {
        let _ = NS_TRACKED.remove(tgid);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn process_exec(ctx: TracePointContext) -> u32 {
    let tid = current_tid();
    // A thread other than the leader that calls execve takes the leader's
    // tid (the leader already exited and left `TRACKED`): carry its entry.
    // SAFETY: offset from the tracepoint's format file.
    if let Ok(old) = unsafe { ctx.read_at::<i32>(off(&OFF_EXEC_OLD_PID)) } {
        let old = old as u32;
        if old != tid && TRACKED.get_ptr(old).is_some() {
            let _ = TRACKED.insert(tid, 1, 0);
            let _ = TRACKED.remove(old);
        }
    }
    let tgid = runner_tgid();
    if tgid.is_some_and(|tgid| tgid == global(&RUNNER_SELF_TGID)) || !tracked(tid, tgid) {
        return 0;
    }
    emit(ListenEvent {
        skaddr: 0,
        kind: EVENT_EXEC,
        // 0: not in the runner's pid namespace; userspace resyncs from /proc.
        pid: tgid.unwrap_or(0),
        fd: 0,
        family: 0,
        port: 0,
        addr: [0; 16],
    });
    0
}
