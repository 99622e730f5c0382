//! Loads the eBPF object with the tracepoint offsets and the runner's
//! identity as globals, then attaches the six tracepoints.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use runner_common::{globals as g, maps};

use super::port_counters::PortCounters;
use super::tracefs::{self, TracefsError, TracepointFormat};
use crate::detect::PortChanges;

/// The object built by `runner/build.rs`; empty when it could not be built.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/runner"));

/// Why the object is empty, from `runner/build.rs`.
pub(crate) const NOT_BUILT: &str = env!("KANDAN_EBPF_UNAVAILABLE");

/// Default size of the `EVENTS` ring buffer.
pub(crate) const RING_BYTES: u32 = 256 * 1024;

/// Errors of loading and attaching.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// The object was not built into this binary.
    #[error("not built: {0}")]
    NotBuilt(&'static str),
    /// Tracepoint formats could not be read.
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    /// The runner's pid namespace could not be identified.
    #[error("cannot stat /proc/self/ns/pid")]
    PidNs(#[source] std::io::Error),
    /// The kernel refused the object or a map.
    #[error("loading the eBPF object failed")]
    Load(#[source] aya::EbpfError),
    /// A program could not be loaded or attached.
    #[error("attaching {category}/{name} failed")]
    Attach {
        category: &'static str,
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A program is missing from the object.
    #[error("program {0} missing from the eBPF object")]
    MissingProgram(&'static str),
    /// A map the userspace side needs is missing from the object.
    #[error("map {0} missing from the eBPF object")]
    MissingMap(&'static str),
    /// The loader child could not be started.
    #[error("cannot start the eBPF loader process")]
    Spawn(#[source] std::io::Error),
    /// The loader child's answer could not be read.
    #[error("no answer from the eBPF loader process")]
    Handover(#[source] std::io::Error),
    /// The loader child ended without an answer (killed, or a panic).
    #[error("the eBPF loader process ended without an answer ({0})")]
    ChildEnded(String),
    /// The loader child failed: its own error, as it wrote it.
    #[error("{0}")]
    Child(String),
    /// A map has an unexpected type.
    #[error("map {name} has the wrong type")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// The attached programs and the maps userspace reads and writes.
pub(crate) struct Loaded {
    /// Keeps the programs attached while it lives: the loader's `Ebpf`, or
    /// the descriptors the loader child handed over.
    pub(crate) attached: Arc<dyn Send + Sync>,
    pub(crate) events: RingBuf<MapData>,
    pub(crate) drops: PerCpuArray<MapData, u64>,
    pub(crate) ns_tracked: HashMap<MapData, u32, u8>,
    pub(crate) backfill_ports: HashMap<MapData, u16, u8>,
    /// Ids of the cgroups whose tasks are tracked.
    pub(crate) cgroups: HashMap<MapData, u64, u8>,
    /// The listener-change counters (they stay attached while it lives).
    pub(crate) port_changes: Arc<dyn PortChanges>,
}

/// What to load: the runner's identity and the ring size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// The runner's pid in its namespace (its own events are ignored).
    pub(crate) self_pid: u32,
    /// Size of the ring buffer: a power of two, at least a page.
    pub(crate) ring_bytes: u32,
    /// Whether tasks are tracked by cgroup too.
    pub(crate) watch_cgroups: bool,
}

/// The maps userspace uses, in the order [`assemble`] takes them.
pub(super) const MAPS: [&str; 7] = [
    "EVENTS",
    "DROPS",
    "NS_TRACKED",
    maps::BACKFILL_PORTS,
    maps::CGROUPS,
    maps::PORT_GENERATIONS,
    maps::LISTENS_IN_FLIGHT,
];

/// (program function, tracepoint category, tracepoint name)
const PROGRAMS: [(&str, &str, &str); 6] = [
    ("listen_enter", "syscalls", "sys_enter_listen"),
    ("sock_set_state", "sock", "inet_sock_set_state"),
    ("listen_exit", "syscalls", "sys_exit_listen"),
    ("process_fork", "sched", "sched_process_fork"),
    ("process_exit", "sched", "sched_process_exit"),
    ("process_exec", "sched", "sched_process_exec"),
];

/// Field offsets of every tracepoint the programs read.
struct Offsets(Vec<(&'static str, u32)>);

impl Offsets {
    fn read() -> Result<Offsets, TracefsError> {
        tracefs::ensure_mounted()?;
        let sock = TracepointFormat::read("sock", "inet_sock_set_state")?;
        let enter = TracepointFormat::read("syscalls", "sys_enter_listen")?;
        let exit = TracepointFormat::read("syscalls", "sys_exit_listen")?;
        let fork = TracepointFormat::read("sched", "sched_process_fork")?;
        let pexit = TracepointFormat::read("sched", "sched_process_exit")?;
        let exec = TracepointFormat::read("sched", "sched_process_exec")?;
        Ok(Offsets(vec![
            (g::SOCK_SKADDR, sock.offset("skaddr")?),
            (g::SOCK_OLDSTATE, sock.offset("oldstate")?),
            (g::SOCK_NEWSTATE, sock.offset("newstate")?),
            (g::SOCK_SPORT, sock.offset("sport")?),
            (g::SOCK_FAMILY, sock.offset("family")?),
            (g::SOCK_PROTOCOL, sock.offset("protocol")?),
            (g::SOCK_SADDR, sock.offset("saddr")?),
            (g::SOCK_SADDR_V6, sock.offset("saddr_v6")?),
            (g::LISTEN_ENTER_FD, enter.offset("fd")?),
            (g::LISTEN_EXIT_RET, exit.offset("ret")?),
            (g::FORK_CHILD_PID, fork.offset("child_pid")?),
            (g::EXIT_PID, pexit.offset("pid")?),
            (g::EXIT_GROUP_DEAD, pexit.offset("group_dead")?),
            (g::EXEC_OLD_PID, exec.offset("old_pid")?),
        ]))
    }
}

/// `/proc/self/ns/pid` as `bpf_get_ns_current_pid_tgid` wants it.
struct PidNs {
    dev: u64,
    ino: u64,
    init: u32,
}

/// Inode of the initial pid namespace (`PROC_PID_INIT_INO`).
const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

fn pid_ns() -> Result<PidNs, LoadError> {
    let meta = std::fs::metadata("/proc/self/ns/pid").map_err(LoadError::PidNs)?;
    let dev = meta.dev();
    // The helper compares with the kernel's dev_t (MKDEV: major << 20 | minor),
    // not the userspace encoding stat returns.
    let kernel_dev = (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev));
    Ok(PidNs {
        dev: kernel_dev,
        ino: meta.ino(),
        init: u32::from(meta.ino() == PROC_PID_INIT_INO),
    })
}

/// Loads and attaches everything: in the loader child where this binary
/// serves one (the runner), else in this process.
pub(crate) fn load(request: Request) -> Result<Loaded, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NotBuilt(NOT_BUILT));
    }
    if super::loader_child::enabled() {
        return super::loader_child::load(request);
    }
    let mut ebpf = attach_here(request)?;
    let maps = MAPS
        .iter()
        .map(|&name| ebpf.take_map(name).ok_or(LoadError::MissingMap(name)))
        .collect::<Result<Vec<_>, _>>()?;
    assemble(maps, Arc::new(ebpf))
}

/// Loads the object and attaches the programs in this process.
pub(super) fn attach_here(request: Request) -> Result<Ebpf, LoadError> {
    raise_memlock();
    let offsets = Offsets::read()?;
    let ns = pid_ns()?;
    let watch_cgroups = u32::from(request.watch_cgroups);
    let mut loader = EbpfLoader::new();
    for (name, offset) in &offsets.0 {
        loader.override_global(name, offset, true);
    }
    loader
        .override_global(g::PIDNS_DEV, &ns.dev, true)
        .override_global(g::PIDNS_INO, &ns.ino, true)
        .override_global(g::IN_INIT_PIDNS, &ns.init, true)
        .override_global(g::SELF_TGID, &request.self_pid, true)
        .override_global(g::WATCH_CGROUPS, &watch_cgroups, true)
        .map_max_entries("EVENTS", request.ring_bytes);
    let mut ebpf = loader.load(OBJECT).map_err(LoadError::Load)?;
    for (function, category, name) in PROGRAMS {
        attach(&mut ebpf, function, category, name)?;
    }
    Ok(ebpf)
}

/// [`Loaded`] from the maps named in [`MAPS`], in that order.
pub(super) fn assemble(
    maps: Vec<Map>,
    attached: Arc<dyn Send + Sync>,
) -> Result<Loaded, LoadError> {
    let [
        events,
        drops,
        ns_tracked,
        backfill_ports,
        cgroups,
        generations,
        in_flight,
    ] = <[Map; 7]>::try_from(maps).map_err(|_| LoadError::MissingMap("of the seven"))?;
    let port_changes: Arc<dyn PortChanges> = Arc::new(PortCounters {
        generations: typed(MAPS[5], generations, Array::try_from)?,
        in_flight: typed(MAPS[6], in_flight, Array::try_from)?,
        _attached: attached.clone(),
    });
    Ok(Loaded {
        attached,
        events: typed(MAPS[0], events, RingBuf::try_from)?,
        drops: typed(MAPS[1], drops, PerCpuArray::try_from)?,
        ns_tracked: typed(MAPS[2], ns_tracked, HashMap::try_from)?,
        backfill_ports: typed(MAPS[3], backfill_ports, HashMap::try_from)?,
        cgroups: typed(MAPS[4], cgroups, HashMap::try_from)?,
        port_changes,
    })
}

fn attach(
    ebpf: &mut Ebpf,
    function: &'static str,
    category: &'static str,
    name: &'static str,
) -> Result<(), LoadError> {
    let wrap = |source| LoadError::Attach {
        category,
        name,
        source,
    };
    let program: &mut TracePoint = ebpf
        .program_mut(function)
        .ok_or(LoadError::MissingProgram(function))?
        .try_into()
        .map_err(wrap)?;
    program.load().map_err(wrap)?;
    program.attach(category, name).map_err(wrap)?;
    Ok(())
}

fn typed<T>(
    name: &'static str,
    map: Map,
    convert: impl FnOnce(Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, LoadError> {
    convert(map).map_err(|source| LoadError::Map { name, source })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones to the
/// cgroup, where raising the limit is unneeded (and fails without
/// CAP_SYS_RESOURCE): a warning, never an error.
fn raise_memlock() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(raise_memlock_now);
}

fn raise_memlock_now() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        // Debug, not warn: the first stderr line belongs to the backend.
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot raise RLIMIT_MEMLOCK; fine on kernels that charge BPF memory to the cgroup"
        );
    }
}
