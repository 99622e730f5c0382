//! LISTEN sockets through netlink `NETLINK_SOCK_DIAG`.
//!
//! Reading `/proc/net/tcp` makes the kernel walk the whole established
//! hash table (milliseconds even when nearly empty); a sock_diag dump that
//! asks for `TCP_LISTEN` only walks the listening hash. Like
//! `/proc/net/tcp`, it answers for the caller's network namespace, and needs
//! no privilege. Some sandboxes refuse netlink; the caller then falls back
//! to the `/proc/net` tables.
//!
//! The verified dial asks for one port only: a bytecode filter
//! (`INET_DIAG_REQ_BYTECODE`) makes the kernel skip every other listener,
//! so its answer, and its cost, do not grow with the machine's listeners.
//!
//! Messages are built and parsed as bytes at the offsets of the uapi
//! structs (`linux/netlink.h`, `linux/inet_diag.h`), so no struct layout is
//! trusted to the compiler and malformed replies are errors, never panics.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::socket_table::Listening;

/// `linux/netlink.h`: the sock_diag protocol.
const NETLINK_SOCK_DIAG: libc::c_int = 4;
/// `linux/sock_diag.h`: request and reply type of socket dumps.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ROOT | NLM_F_MATCH`: every matching socket.
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
/// `struct nlmsghdr`: len u32, type u16, flags u16, seq u32, pid u32.
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`: family u8, protocol u8, ext u8, pad u8,
/// states u32, then a 48-byte `struct inet_diag_sockid` (all zero here).
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`: family, state, timer, retrans (u8 each), the
/// 48-byte sockid (sport, dport, src[16], dst[16], if, cookie[2]), then
/// expires, rqueue, wqueue, uid and inode (u32 each).
const MSG_LEN: usize = 72;
const MSG_SPORT: usize = 4;
const MSG_SRC: usize = 8;
const MSG_INODE: usize = 68;
/// `linux/inet_diag.h`: the first inet_diag request (TCP only), and the
/// type of its answers. Its dump takes both address families in one walk
/// of the listening hash, where `SOCK_DIAG_BY_FAMILY` takes one walk each.
const TCPDIAG_GETSOCK: u16 = 18;
/// `struct inet_diag_req`: family, src_len, dst_len, ext (u8 each), the
/// 48-byte sockid (sport first, network order), states u32, dbs u32.
const REQ_V1_LEN: usize = 60;
/// `linux/inet_diag.h`: the request attribute that carries a filter.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// `linux/inet_diag.h`: filter operations on the source (local) port.
/// `>=` and `<=` rather than `INET_DIAG_BC_S_EQ`, which kernels before 4.16
/// refuse.
const INET_DIAG_BC_S_GE: u8 = 2;
const INET_DIAG_BC_S_LE: u8 = 3;
/// `struct nlattr` header, then `struct inet_diag_bc_op` pairs (code u8,
/// yes u8, no u16), each comparison followed by one holding the port.
const FILTER_LEN: usize = 4 + 16;
/// `TCP_LISTEN` in `include/net/tcp_states.h`.
const TCP_LISTEN: u8 = 10;
/// A dump that never answers must not hang the poller. Not `libc::time_t`:
/// that alias is deprecated on musl (it changes width there).
const RECV_TIMEOUT_SECS: u8 = 2;

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SockDiagError {
    #[error("netlink sock_diag socket refused")]
    Socket(#[source] io::Error),
    #[error("sending the sock_diag request failed")]
    Send(#[source] io::Error),
    #[error("receiving the sock_diag reply failed")]
    Recv(#[source] io::Error),
    #[error("kernel refused the sock_diag dump")]
    Kernel(#[source] io::Error),
    #[error("malformed sock_diag reply: {0}")]
    Malformed(&'static str),
}

impl SockDiagError {
    /// Whether netlink is refused here for good (seccomp, no inet_diag,
    /// gVisor), not just failing this once.
    pub(crate) fn is_refusal(&self) -> bool {
        let err = match self {
            SockDiagError::Socket(_) => return true,
            SockDiagError::Kernel(err) | SockDiagError::Send(err) => err,
            SockDiagError::Recv(_) | SockDiagError::Malformed(_) => return false,
        };
        matches!(
            err.raw_os_error(),
            Some(
                libc::EPERM
                    | libc::EACCES
                    | libc::ENOENT
                    | libc::EOPNOTSUPP
                    | libc::EPROTONOSUPPORT
                    | libc::EAFNOSUPPORT
                    | libc::ENOSYS
            )
        )
    }
}

/// Whether the kernel refused a `TCPDIAG_GETSOCK` dump once: one walk per
/// family from then on.
static ONE_WALK_REFUSED: AtomicBool = AtomicBool::new(false);

/// Every IPv4 and IPv6 TCP socket in LISTEN state (on `port` only, when
/// given), added to `into` by inode.
pub(crate) fn listening(
    port: Option<u16>,
    into: &mut std::collections::HashMap<u64, Listening>,
) -> Result<(), SockDiagError> {
    let socket = open()?;
    if let Some(port) = port
        && !ONE_WALK_REFUSED.load(Ordering::Relaxed)
    {
        match dump(&socket, 3, &request_port(3, port), into) {
            Err(SockDiagError::Kernel(err)) => {
                tracing::debug!(%err, "TCPDIAG_GETSOCK refused: one sock_diag dump per family");
                ONE_WALK_REFUSED.store(true, Ordering::Relaxed);
            }
            done => return done,
        }
    }
    for (seq, family) in [(1, libc::AF_INET), (2, libc::AF_INET6)] {
        let family = family as u8;
        match port {
            None => dump(&socket, seq, &request(seq, family), into)?,
            Some(port) => dump(&socket, seq, &request_on(seq, family, port), into)?,
        }
    }
    Ok(())
}

fn open() -> Result<OwnedFd, SockDiagError> {
    // SAFETY: plain syscall; the fd is owned right below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(SockDiagError::Socket(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: RECV_TIMEOUT_SECS.into(),
        tv_usec: 0,
    };
    // SAFETY: the option value is a timeval of the size given.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(SockDiagError::Socket(io::Error::last_os_error()));
    }
    Ok(socket)
}

/// The dump request for one address family's TCP listeners.
pub(crate) fn request(seq: u32, family: u8) -> [u8; NLMSG_HDR + REQ_LEN] {
    let mut req = [0u8; NLMSG_HDR + REQ_LEN];
    req[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    // Port id 0: addressed to the kernel.
    let body = &mut req[NLMSG_HDR..];
    body[0] = family;
    body[1] = libc::IPPROTO_TCP as u8;
    body[4..8].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    req
}

/// The dump request for one address family's TCP listeners on `port`: the
/// request of [`request`] with a filter that the kernel runs on each
/// listener, "source port >= `port` and <= `port`". A comparison that
/// fails jumps 4 bytes past the end, which rejects the socket.
pub(crate) fn request_on(
    seq: u32,
    family: u8,
    port: u16,
) -> [u8; NLMSG_HDR + REQ_LEN + FILTER_LEN] {
    const LEN: usize = NLMSG_HDR + REQ_LEN + FILTER_LEN;
    let mut req = [0u8; LEN];
    req[..NLMSG_HDR + REQ_LEN].copy_from_slice(&request(seq, family));
    req[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    let attr = &mut req[NLMSG_HDR + REQ_LEN..];
    attr[0..2].copy_from_slice(&(FILTER_LEN as u16).to_ne_bytes());
    attr[2..4].copy_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    // (code, yes, no): "yes" steps to the next comparison, "no" past the end.
    let ops: [(u8, u8, u16); 4] = [
        (INET_DIAG_BC_S_GE, 8, 20),
        (0, 0, port),
        (INET_DIAG_BC_S_LE, 8, 12),
        (0, 0, port),
    ];
    for (op, (code, yes, no)) in attr[4..].chunks_exact_mut(4).zip(ops) {
        op[0] = code;
        op[1] = yes;
        op[2..4].copy_from_slice(&no.to_ne_bytes());
    }
    req
}

/// The dump request for the TCP listeners of both families on `port`, in
/// one walk (`TCPDIAG_GETSOCK`, whose dump takes every family): the port in
/// the socket id (the kernel skips other listeners before anything else)
/// and the filter of [`request_on`] (the documented way to ask).
pub(crate) fn request_port(seq: u32, port: u16) -> [u8; NLMSG_HDR + REQ_V1_LEN + FILTER_LEN] {
    const LEN: usize = NLMSG_HDR + REQ_V1_LEN + FILTER_LEN;
    let mut req = [0u8; LEN];
    req[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    let body = &mut req[NLMSG_HDR..];
    body[0] = libc::AF_INET as u8;
    body[4..6].copy_from_slice(&port.to_be_bytes());
    body[52..56].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    let filter = request_on(seq, 0, port);
    req[NLMSG_HDR + REQ_V1_LEN..].copy_from_slice(&filter[NLMSG_HDR + REQ_LEN..]);
    req
}

fn dump(
    socket: &OwnedFd,
    seq: u32,
    req: &[u8],
    into: &mut std::collections::HashMap<u64, Listening>,
) -> Result<(), SockDiagError> {
    // SAFETY: sockaddr_nl is plain data; zero is its unspecified value.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: buffer and address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&raw const kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(SockDiagError::Send(io::Error::last_os_error()));
    }
    // The kernel fills up to ~32 KiB per datagram when the reader can take
    // it; a bigger buffer never truncates.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let got = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        let got = match usize::try_from(got) {
            Ok(got) => got,
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(SockDiagError::Recv(err));
            }
        };
        if got > buf.len() {
            return Err(SockDiagError::Malformed("datagram truncated"));
        }
        if parse_datagram(&buf[..got], seq, into)? {
            return Ok(());
        }
    }
}

/// Adds the listeners of one reply datagram to `into`; `true` once the
/// dump is done. Messages of other sequence numbers (a stale dump) are
/// skipped.
pub(crate) fn parse_datagram(
    mut data: &[u8],
    seq: u32,
    into: &mut std::collections::HashMap<u64, Listening>,
) -> Result<bool, SockDiagError> {
    while !data.is_empty() {
        if data.len() < NLMSG_HDR {
            return Err(SockDiagError::Malformed("short netlink header"));
        }
        let len = u32::from_ne_bytes(data[0..4].try_into().unwrap_or_default()) as usize;
        if len < NLMSG_HDR || len > data.len() {
            return Err(SockDiagError::Malformed("bad netlink message length"));
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let msg_seq = u32::from_ne_bytes(data[8..12].try_into().unwrap_or_default());
        let payload = &data[NLMSG_HDR..len];
        if msg_seq == seq {
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno = payload
                        .get(0..4)
                        .map(|b| i32::from_ne_bytes(b.try_into().unwrap_or_default()))
                        .ok_or(SockDiagError::Malformed("short error message"))?;
                    // errno 0 is an acknowledgement, which a dump never sends.
                    return Err(SockDiagError::Kernel(io::Error::from_raw_os_error(
                        errno.checked_neg().unwrap_or(libc::EINVAL),
                    )));
                }
                SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => {
                    if let Some(socket) = parse_msg(payload)? {
                        into.insert(socket.inode, socket);
                    }
                }
                _ => {}
            }
        }
        // Messages are padded to 4 bytes; the last may not be.
        let next = len.next_multiple_of(4).min(data.len());
        data = &data[next..];
    }
    Ok(false)
}

/// One `inet_diag_msg`; `None` for sockets in another state, of an
/// unknown family, or without inode.
pub(crate) fn parse_msg(msg: &[u8]) -> Result<Option<Listening>, SockDiagError> {
    if msg.len() < MSG_LEN {
        return Err(SockDiagError::Malformed("short inet_diag_msg"));
    }
    if msg[1] != TCP_LISTEN {
        return Ok(None);
    }
    let port = u16::from_be_bytes([msg[MSG_SPORT], msg[MSG_SPORT + 1]]);
    let src: [u8; 16] = msg[MSG_SRC..MSG_SRC + 16].try_into().unwrap_or_default();
    let addr = match i32::from(msg[0]) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
        libc::AF_INET6 => {
            // As in `/proc/net/tcp6`: a v4-mapped bind only takes IPv4.
            let v6 = Ipv6Addr::from(src);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return Ok(None),
    };
    let inode = u32::from_ne_bytes(msg[MSG_INODE..MSG_INODE + 4].try_into().unwrap_or_default());
    if inode == 0 {
        return Ok(None);
    }
    Ok(Some(Listening {
        inode: u64::from(inode),
        addr,
        port,
    }))
}

#[cfg(test)]
mod tests;
