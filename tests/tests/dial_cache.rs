//! The verified dial's cache on a real kernel (eBPF counters, privileged):
//! once dials to an approved listener are served without a listener dump,
//! a process outside the tree that joins the port (`SO_REUSEPORT`, same
//! user, same address) is refused on the very next dial.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use integration_tests::outsider::Outsider;
use integration_tests::support::{free_port, privileged};
use runner::detect::process_info::ProcessInfo;
use runner::detect::{self, BackendChoice, DetectorConfig, ListenerSocket, PortChanges, SocketId};
use runner::gate::{Gate, GateRefusal, Identity, PortGate};

/// The eBPF detector and its per-port listener counters, or `None` (after
/// saying why) when `test` cannot run here: not root, or not x86-64, the
/// only architecture the dial cache runs on.
fn counting_detector(test: &str) -> Result<Option<(detect::Detector, Arc<dyn PortChanges>)>> {
    if !privileged(test) {
        return Ok(None);
    }
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipping: the dial cache runs on x86-64 only");
        return Ok(None);
    }
    let (detector, _) = detect::start(BackendChoice::Ebpf, &DetectorConfig::default())
        .map_err(|err| anyhow::anyhow!("ebpf: {}", runner::error_chain(&err)))?;
    let changes = (detector.port_changes.clone())
        .context("the eBPF backend gave no listener-change counters")?;
    Ok(Some((detector, changes)))
}

/// A listener on 127.0.0.1:`port` with `SO_REUSEPORT`, as a dev server
/// that lets others of its user join.
fn reuseport_listener(port: u16) -> Result<TcpListener> {
    // SAFETY: a descriptor owned here from the start.
    let listener = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        TcpListener::from_raw_fd(fd)
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    bind_loopback(fd, port, libc::SO_REUSEPORT)?;
    // SAFETY: a socket owned by `listener`.
    let listened = unsafe { libc::listen(fd, 1024) };
    ensure!(listened == 0, "listen: {}", std::io::Error::last_os_error());
    Ok(listener)
}

/// Sets the socket option `option` on `fd`, then binds it to
/// 127.0.0.1:`port`.
fn bind_loopback(fd: std::os::fd::RawFd, port: u16, option: libc::c_int) -> Result<()> {
    let one: libc::c_int = 1;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: plain socket calls on a descriptor the caller owns; `one` and
    // `addr` outlive them.
    unsafe {
        let set = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        ensure!(set == 0, "setsockopt: {}", std::io::Error::last_os_error());
        let bound = libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        ensure!(bound == 0, "bind: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A fresh connection, verified as the runner verifies one.
fn dial(gate: &Gate, peer: SocketAddr) -> Result<Result<(), GateRefusal>> {
    let stream = TcpStream::connect(peer)?;
    Ok(gate.verify(stream.peer_addr()?))
}

/// Dials until one is served from the cache (another test's `listen()`
/// anywhere on the machine may make a check uncacheable for a moment).
fn dial_until_cached(gate: &Gate, changes: &dyn PortChanges, peer: SocketAddr) -> Result<()> {
    let hits = gate.dials_from_cache();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gate.dials_from_cache() == hits {
        ensure!(
            dial(gate, peer)? == Ok(()),
            "the approved listener alone was refused"
        );
        ensure!(
            Instant::now() < deadline,
            "no dial was served from the cache: generation {:?}, in flight {:?}",
            changes.generation(peer.port()),
            changes.in_flight()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Accepts and drops every connection, so the backlog never fills.
fn accept_all(listener: &TcpListener) -> Result<()> {
    let listener = listener.try_clone()?;
    std::thread::spawn(move || while listener.accept().is_ok() {});
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_joiner_after_cached_dials_is_refused_at_the_next_dial() -> Result<()> {
    let Some((detector, changes)) =
        counting_detector("a_joiner_after_cached_dials_is_refused_at_the_next_dial")?
    else {
        return Ok(());
    };
    let port = free_port()?;
    let ours = reuseport_listener(port)?;
    accept_all(&ours)?;
    let inode = runner::detect::procfs::listening_sockets()?
        .into_iter()
        .find(|l| l.port == port)
        .context("own listener missing from sock_diag")?
        .id;
    let gate = Gate::new();
    gate.use_port_changes(changes.clone());
    let socket = ListenerSocket {
        id: SocketId(inode),
        port,
        addr: "127.0.0.1".parse()?,
        pid: std::process::id(),
        process: ProcessInfo::from_argv(&["dev".to_string()], None),
    };
    gate.set_live(port, [&socket]);
    gate.set_approved(&Identity::new(port, &socket.process), true);
    let peer = SocketAddr::from(([127, 0, 0, 1], port));
    dial_until_cached(&gate, changes.as_ref(), peer)?;

    // Same user, outside anything watched: the gate's state does not move,
    // only the kernel's count of listeners on the port does.
    let mut joiner = Outsider::spawn("127.0.0.1", port, true)?;
    joiner.bound().await?;
    let hits = gate.dials_from_cache();
    for _ in 0..20 {
        assert_eq!(dial(&gate, peer)?, Err(GateRefusal::Foreign));
    }
    assert_eq!(
        gate.dials_from_cache(),
        hits,
        "a dial was served from the cache"
    );

    // The joiner gone, the approved listener alone is cached again.
    drop(joiner);
    let deadline = Instant::now() + Duration::from_secs(10);
    while dial(&gate, peer)? != Ok(()) {
        ensure!(
            Instant::now() < deadline,
            "still refused after the joiner left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dial_until_cached(&gate, changes.as_ref(), peer)?;
    drop(detector);
    Ok(())
}

/// Waits until no `listen()` is in flight on the machine (others' tests may
/// be listening this very moment).
fn settled(changes: &dyn PortChanges) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while changes.in_flight()? != 0 {
        ensure!(Instant::now() < deadline, "a listen stays in flight");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A fresh IPv4 socket, bound to 127.0.0.1:`port` when `port` is given
/// (with `SO_REUSEADDR`, so two can bind before either listens).
fn raw_socket(port: Option<u16>) -> Result<std::os::fd::OwnedFd> {
    // SAFETY: a descriptor owned here from the start.
    let owned = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        <std::os::fd::OwnedFd as FromRawFd>::from_raw_fd(fd)
    };
    if let Some(port) = port {
        bind_loopback(
            std::os::fd::AsRawFd::as_raw_fd(&owned),
            port,
            libc::SO_REUSEADDR,
        )?;
    }
    Ok(owned)
}

/// `listen()`'s result on `fd`.
fn raw_listen(fd: &std::os::fd::OwnedFd) -> i32 {
    // SAFETY: a socket owned by the caller.
    unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(fd), 16) }
}

/// What the kernel counts: a listen and a close on the port, not the
/// connections it accepts; a listen without `bind()` on the unknown port;
/// every listen leaves flight when `listen()` returns, a failing one too.
#[tokio::test(flavor = "multi_thread")]
async fn the_kernel_counts_listeners_not_connections() -> Result<()> {
    let Some((detector, changes)) =
        counting_detector("the_kernel_counts_listeners_not_connections")?
    else {
        return Ok(());
    };
    let port = free_port()?;
    let g0 = changes.generation(port)?;

    let first = raw_socket(Some(port))?;
    let second = raw_socket(Some(port))?;
    ensure!(
        raw_listen(&first) == 0,
        "listen: {}",
        std::io::Error::last_os_error()
    );
    let g1 = changes.generation(port)?;
    assert_eq!(g1.port, g0.port + 1, "one listen");
    settled(changes.as_ref())?;

    // Accepted connections are cloned from the listener: not counted.
    let listener = TcpListener::from(first);
    for _ in 0..5 {
        let _client = TcpStream::connect(("127.0.0.1", port))?;
        drop(listener.accept()?);
    }
    assert_eq!(changes.generation(port)?.port, g1.port, "connections");

    // A second listener on the same address fails inside listen():
    // LISTEN, then CLOSE, and out of flight when listen() returns.
    ensure!(
        raw_listen(&second) != 0,
        "a second listen on the same address succeeded"
    );
    assert_eq!(changes.generation(port)?.port, g1.port + 2);
    settled(changes.as_ref())?;

    // Closing the listener counts too.
    drop(listener);
    assert_eq!(changes.generation(port)?.port, g1.port + 3);

    // listen() without bind(): its port is chosen after it is counted.
    let unknown = changes.generation(port)?.unknown;
    let autobound = raw_socket(None)?;
    ensure!(
        raw_listen(&autobound) == 0,
        "listen: {}",
        std::io::Error::last_os_error()
    );
    ensure!(
        changes.generation(port)?.unknown > unknown,
        "unknown port not counted"
    );
    settled(changes.as_ref())?;
    drop(detector);
    Ok(())
}
