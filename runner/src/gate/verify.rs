//! The verified dial's check: once a connection to a local server is up,
//! every listening socket that could have accepted it must be one of the
//! approved identity's sockets.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};

use super::GateRefusal;
use crate::detect::ListeningSocket;

/// Whether a socket bound to `bound` may accept a connection to `dialed`
/// (same port assumed). A wildcard covers its family; `::` also covers
/// IPv4, since a dual-stack socket accepts both (whether this one is
/// `IPV6_V6ONLY` is not checked: counting it errs on the side of refusing).
pub(crate) fn covers(bound: IpAddr, dialed: IpAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    let (bound, dialed) = (canonical(bound), canonical(dialed));
    bound == dialed
        || match bound {
            IpAddr::V4(b) => b.is_unspecified() && dialed.is_ipv4(),
            IpAddr::V6(b) => b.is_unspecified(),
        }
}

/// `Ok` when every listener on `peer`'s port that covers its address is in
/// `allowed`.
pub(super) fn check(
    peer: SocketAddr,
    allowed: &HashSet<u64>,
    listeners: &[ListeningSocket],
) -> Result<(), GateRefusal> {
    let mut relevant = listeners
        .iter()
        .filter(|l| l.port == peer.port() && covers(l.addr, peer.ip()))
        .peekable();
    if relevant.peek().is_none() {
        // Connected, yet nothing listens there now: it closed meanwhile.
        return Err(GateRefusal::NotListening);
    }
    for listener in relevant {
        if !allowed.contains(&listener.id) {
            tracing::warn!(
                %peer,
                socket = listener.id,
                bound = %listener.addr,
                "a listening socket outside the approved listener shares the port; connection not used"
            );
            return Err(GateRefusal::Foreign);
        }
    }
    Ok(())
}

/// The listening sockets on `port` of the runner's network namespace.
#[cfg(target_os = "linux")]
pub(super) fn os_listeners(port: u16) -> io::Result<Vec<ListeningSocket>> {
    crate::detect::procfs::listening_sockets_on(Some(port))
}

/// The listening sockets on `port` of every process libproc lets the
/// runner see.
#[cfg(target_os = "macos")]
pub(super) fn os_listeners(port: u16) -> io::Result<Vec<ListeningSocket>> {
    let mut sockets = crate::detect::libproc::listening_sockets()?;
    sockets.retain(|socket| socket.port == port);
    Ok(sockets)
}

/// Elsewhere nothing can be verified, so nothing is forwarded.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub(super) fn os_listeners(_port: u16) -> io::Result<Vec<ListeningSocket>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no listener table on this platform",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sock(id: u64, addr: &str, port: u16) -> ListeningSocket {
        ListeningSocket {
            id,
            addr: ip(addr),
            port,
        }
    }

    #[test]
    fn wildcards_and_mapped_addresses_cover_what_they_accept() {
        assert!(covers(ip("127.0.0.1"), ip("127.0.0.1")));
        assert!(covers(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(covers(ip("::"), ip("127.0.0.1")), "dual stack");
        assert!(covers(ip("::"), ip("::1")));
        assert!(covers(ip("::ffff:127.0.0.1"), ip("127.0.0.1")));
        assert!(!covers(ip("0.0.0.0"), ip("::1")));
        assert!(!covers(ip("127.0.0.2"), ip("127.0.0.1")));
        assert!(!covers(ip("::1"), ip("127.0.0.1")));
    }

    #[test]
    fn a_foreign_socket_on_the_dialed_address_refuses() {
        let peer: SocketAddr = "127.0.0.1:5173".parse().unwrap();
        let allowed = HashSet::from([10, 11]);
        let ours = [sock(10, "127.0.0.1", 5173), sock(11, "::1", 5173)];
        assert_eq!(check(peer, &allowed, &ours), Ok(()));

        // A SO_REUSEPORT joiner on the same address.
        let joined = [ours[0], ours[1], sock(99, "127.0.0.1", 5173)];
        assert_eq!(check(peer, &allowed, &joined), Err(GateRefusal::Foreign));
        // A wildcard of another process covers the address too.
        let wildcard = [ours[0], sock(99, "::", 5173)];
        assert_eq!(check(peer, &allowed, &wildcard), Err(GateRefusal::Foreign));
    }

    #[test]
    fn other_ports_and_addresses_do_not_matter() {
        let peer: SocketAddr = "127.0.0.1:5173".parse().unwrap();
        let allowed = HashSet::from([10]);
        let table = [
            sock(10, "127.0.0.1", 5173),
            sock(98, "127.0.0.1", 5174),
            sock(99, "127.0.0.2", 5173),
            sock(97, "::1", 5173),
        ];
        assert_eq!(check(peer, &allowed, &table), Ok(()));
    }

    #[test]
    fn nothing_listening_any_more_is_not_listening() {
        let peer: SocketAddr = "[::1]:8000".parse().unwrap();
        let table = [sock(10, "127.0.0.1", 8000)];
        assert_eq!(
            check(peer, &HashSet::from([10]), &table),
            Err(GateRefusal::NotListening)
        );
    }
}
