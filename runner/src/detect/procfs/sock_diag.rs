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
pub enum SockDiagError {
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
    pub fn is_refusal(&self) -> bool {
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

/// Every IPv4 and IPv6 TCP socket in LISTEN state (on `port` only, when
/// given), added to `into` by inode.
pub fn listening(
    port: Option<u16>,
    into: &mut std::collections::HashMap<u64, Listening>,
) -> Result<(), SockDiagError> {
    let socket = open()?;
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
pub fn request(seq: u32, family: u8) -> [u8; NLMSG_HDR + REQ_LEN] {
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
pub fn request_on(seq: u32, family: u8, port: u16) -> [u8; NLMSG_HDR + REQ_LEN + FILTER_LEN] {
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
pub fn parse_datagram(
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
                SOCK_DIAG_BY_FAMILY => {
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
pub fn parse_msg(msg: &[u8]) -> Result<Option<Listening>, SockDiagError> {
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
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A reply datagram as the kernel sends it (x86_64, little endian):
    /// header, then an `inet_diag_msg` for a listener.
    fn reply(seq: u32, family: u8, state: u8, port: u16, src: [u8; 16], inode: u32) -> Vec<u8> {
        let mut msg = vec![0u8; MSG_LEN];
        msg[0] = family;
        msg[1] = state;
        msg[MSG_SPORT..MSG_SPORT + 2].copy_from_slice(&port.to_be_bytes());
        msg[MSG_SRC..MSG_SRC + 16].copy_from_slice(&src);
        msg[MSG_INODE..MSG_INODE + 4].copy_from_slice(&inode.to_ne_bytes());
        let mut out = header(NLMSG_HDR + msg.len(), SOCK_DIAG_BY_FAMILY, seq);
        out.extend(msg);
        out
    }

    fn header(len: usize, kind: u16, seq: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend((len as u32).to_ne_bytes());
        out.extend(kind.to_ne_bytes());
        out.extend(2u16.to_ne_bytes()); // NLM_F_MULTI
        out.extend(seq.to_ne_bytes());
        out.extend(4242u32.to_ne_bytes());
        out
    }

    fn done(seq: u32) -> Vec<u8> {
        let mut out = header(NLMSG_HDR + 4, NLMSG_DONE, seq);
        out.extend(0i32.to_ne_bytes());
        out
    }

    // Captured on this machine (Linux 6.18, x86_64): the first message of
    // the AF_INET reply, a listener on 127.0.0.1:39245 with inode 67573,
    // followed by the attributes the kernel adds unasked.
    #[cfg(target_endian = "little")]
    const CAPTURED: [u8; 124] = [
        0x7c, 0x00, 0x00, 0x00, 0x14, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0xda, 0x67, 0x00,
        0x00, 0x02, 0x0a, 0x00, 0x00, 0x99, 0x4d, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf5, 0x07, 0x01, 0x00, 0x05, 0x00,
        0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c,
        0x00, 0x15, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x16, 0x00,
        0x52, 0x00, 0x00, 0x00,
    ];

    #[cfg(target_endian = "little")]
    #[test]
    fn captured_reply() {
        let mut table = HashMap::new();
        assert!(!parse_datagram(&CAPTURED, 1, &mut table).unwrap());
        assert_eq!(
            table[&67573],
            Listening {
                inode: 67573,
                addr: "127.0.0.1".parse().unwrap(),
                port: 39245
            }
        );
    }

    #[test]
    fn request_layout() {
        let req = request(7, libc::AF_INET6 as u8);
        assert_eq!(u32::from_ne_bytes(req[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), 20);
        assert_eq!(u16::from_ne_bytes([req[6], req[7]]), 0x301);
        assert_eq!(u32::from_ne_bytes(req[8..12].try_into().unwrap()), 7);
        assert_eq!(req[16], libc::AF_INET6 as u8);
        assert_eq!(req[17], 6);
        assert_eq!(u32::from_ne_bytes(req[20..24].try_into().unwrap()), 1 << 10);
        assert!(req[24..].iter().all(|&b| b == 0));
    }

    #[test]
    fn filtered_request_layout() {
        let req = request_on(3, libc::AF_INET as u8, 5173);
        assert_eq!(req.len(), 92);
        assert_eq!(u32::from_ne_bytes(req[0..4].try_into().unwrap()), 92);
        assert_eq!(req[16..72], request(3, libc::AF_INET as u8)[16..]);
        // nlattr: length 20, type INET_DIAG_REQ_BYTECODE.
        assert_eq!(u16::from_ne_bytes([req[72], req[73]]), 20);
        assert_eq!(u16::from_ne_bytes([req[74], req[75]]), 1);
        let port = 5173u16.to_ne_bytes();
        assert_eq!(req[76..80], [2, 8, 20, 0]);
        assert_eq!(req[80..84], [0, 0, port[0], port[1]]);
        assert_eq!(req[84..88], [3, 8, 12, 0]);
        assert_eq!(req[88..92], [0, 0, port[0], port[1]]);
    }

    /// The kernel runs the filter: every listener on the port, of both
    /// families, and none of another port.
    #[test]
    fn a_filtered_dump_lists_the_port_only() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = std::net::TcpListener::bind(("::1", port)).ok();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut table = HashMap::new();
        listening(Some(port), &mut table).expect("netlink sock_diag works here");
        assert!(table.values().all(|s| s.port == port), "{table:?}");
        let addrs: Vec<IpAddr> = table.values().map(|s| s.addr).collect();
        assert!(addrs.contains(&IpAddr::from([127, 0, 0, 1])), "{table:?}");
        if v6.is_some() {
            assert!(addrs.contains(&"::1".parse().unwrap()), "{table:?}");
        }
        let mut table = HashMap::new();
        let other = other.local_addr().unwrap().port();
        listening(Some(other), &mut table).unwrap();
        assert_eq!(table.len(), 1, "{table:?}");
    }

    #[test]
    fn several_messages_then_done() {
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        let mut mapped = [0u8; 16];
        mapped[10..12].copy_from_slice(&[0xff, 0xff]);
        mapped[12..].copy_from_slice(&[127, 0, 0, 1]);
        let mut data = reply(2, libc::AF_INET6 as u8, TCP_LISTEN, 8080, v6, 30001);
        data.extend(reply(
            2,
            libc::AF_INET6 as u8,
            TCP_LISTEN,
            9000,
            mapped,
            30002,
        ));
        // An established socket and one without inode are skipped.
        data.extend(reply(2, libc::AF_INET6 as u8, 1, 9001, v6, 30003));
        data.extend(reply(2, libc::AF_INET6 as u8, TCP_LISTEN, 9002, v6, 0));
        // A message of an older dump is ignored.
        data.extend(reply(
            1,
            libc::AF_INET as u8,
            TCP_LISTEN,
            9003,
            [0; 16],
            30004,
        ));
        data.extend(done(2));
        let mut table = HashMap::new();
        assert!(parse_datagram(&data, 2, &mut table).unwrap());
        assert_eq!(table.len(), 2, "{table:?}");
        assert_eq!(table[&30001].addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(table[&30001].port, 8080);
        assert_eq!(table[&30002].addr, "127.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn kernel_error_is_reported() {
        let mut data = header(NLMSG_HDR + 4, NLMSG_ERROR, 1);
        data.extend((-libc::EPERM).to_ne_bytes());
        let err = parse_datagram(&data, 1, &mut HashMap::new()).unwrap_err();
        assert!(err.is_refusal(), "{err:?}");
        let mut data = header(NLMSG_HDR + 4, NLMSG_ERROR, 1);
        data.extend(i32::MIN.to_ne_bytes());
        assert!(parse_datagram(&data, 1, &mut HashMap::new()).is_err());
    }

    #[test]
    fn malformed_replies_are_errors() {
        let good = reply(1, libc::AF_INET as u8, TCP_LISTEN, 80, [0; 16], 5);
        for bad in [
            good[..10].to_vec(),             // short header
            good[..NLMSG_HDR + 10].to_vec(), // length beyond data
            header(NLMSG_HDR + 8, SOCK_DIAG_BY_FAMILY, 1) // short message
                .into_iter()
                .chain([0; 8])
                .collect(),
            header(3, NLMSG_DONE, 1),          // length below header
            header(NLMSG_HDR, NLMSG_ERROR, 1), // error without errno
        ] {
            let result = parse_datagram(&bad, 1, &mut HashMap::new());
            assert!(
                matches!(result, Err(SockDiagError::Malformed(_))),
                "{bad:?}: {result:?}"
            );
        }
    }

    #[test]
    fn real_listeners_of_both_families() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let mut table = HashMap::new();
        listening(None, &mut table).expect("netlink sock_diag works here");
        let port = v4.local_addr().unwrap().port();
        assert!(
            table
                .values()
                .any(|s| s.port == port && s.addr == IpAddr::from([127, 0, 0, 1])),
            "{port} not in {table:?}"
        );
        if let Some(v6) = v6 {
            let port = v6.local_addr().unwrap().port();
            assert!(
                table
                    .values()
                    .any(|s| s.port == port && s.addr == "::1".parse::<IpAddr>().unwrap()),
                "{port} not in {table:?}"
            );
        }
    }
}
