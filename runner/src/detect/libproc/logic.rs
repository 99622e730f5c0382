//! The platform-neutral half of the libproc backend.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::super::process_tree::ProcessTree;
use super::super::{ListenerSocket, SocketId};
use crate::detect::process_info::ProcessInfo;

/// `INI_IPV4` / `INI_IPV6` of `insi_vflag`.
const INI_IPV4: u8 = 0x1;
const INI_IPV6: u8 = 0x2;

/// One listening TCP socket as an fd of a process shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawListen {
    /// The kernel socket address (`soi_so`): the same for every process
    /// holding the socket.
    pub(crate) so: u64,
    pub(crate) addr: IpAddr,
    pub(crate) port: u16,
}

/// What the backend needs from the OS: the seam faked in unit tests.
pub(crate) trait ProcSource {
    /// (pid, ppid) of every process.
    fn parents(&self) -> io::Result<Vec<(u32, u32)>>;
    /// TCP sockets in `TSI_S_LISTEN` among `pid`'s fds; empty when the
    /// process exited or may not be inspected.
    fn listening(&self, pid: u32) -> Vec<RawListen>;
    /// Command line, label and cwd of `pid`.
    fn describe(&self, pid: u32) -> ProcessInfo;
}

/// Listeners of the roots' trees: each socket once, attributed to the
/// holder nearest its root ([`ProcessTree::owner`]), sorted by id.
pub(crate) fn scan_with(
    source: &impl ProcSource,
    roots: &[u32],
    self_pid: u32,
) -> io::Result<Vec<ListenerSocket>> {
    if roots.is_empty() {
        return Ok(Vec::new());
    }
    let mut tree = ProcessTree::walk(source.parents()?, roots);
    tree.remove(self_pid);
    let mut held: HashMap<u64, (RawListen, Vec<u32>)> = HashMap::new();
    for pid in tree.pids() {
        for socket in source.listening(pid) {
            held.entry(socket.so)
                .or_insert((socket, Vec::new()))
                .1
                .push(pid);
        }
    }
    let mut described: HashMap<u32, ProcessInfo> = HashMap::new();
    let mut sockets: Vec<ListenerSocket> = held
        .into_values()
        .filter_map(|(socket, pids)| {
            let pid = tree.owner(pids)?;
            let process = described
                .entry(pid)
                .or_insert_with(|| source.describe(pid))
                .clone();
            Some(ListenerSocket {
                id: SocketId(socket.so),
                port: socket.port,
                addr: socket.addr,
                pid,
                process,
            })
        })
        .collect();
    sockets.sort_by_key(|s| s.id);
    Ok(sockets)
}

/// Local address and port of an `in_sockinfo`: `lport` holds the
/// network-order port in its low 16 bits; `addr4` and `addr6` are the raw
/// bytes of `insi_laddr` read as IPv4 and IPv6. A dual-stack socket on `::`
/// carries both flags and is reported as `::`, as on Linux; an IPv4-mapped
/// bind carries only `INI_IPV4` and is IPv4.
pub(crate) fn decode_inet(
    vflag: u8,
    lport: i32,
    addr4: [u8; 4],
    addr6: [u8; 16],
) -> Option<(IpAddr, u16)> {
    let port = u16::from_be(u16::try_from(lport & 0xffff).ok()?);
    let addr = if vflag & INI_IPV6 != 0 {
        let v6 = Ipv6Addr::from(addr6);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    } else if vflag & INI_IPV4 != 0 {
        IpAddr::V4(Ipv4Addr::from(addr4))
    } else {
        return None;
    };
    Some((addr, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process table with sockets per pid; `describe` names the pid.
    struct Fake {
        parents: Vec<(u32, u32)>,
        sockets: HashMap<u32, Vec<RawListen>>,
    }

    impl ProcSource for Fake {
        fn parents(&self) -> io::Result<Vec<(u32, u32)>> {
            Ok(self.parents.clone())
        }
        fn listening(&self, pid: u32) -> Vec<RawListen> {
            self.sockets.get(&pid).cloned().unwrap_or_default()
        }
        fn describe(&self, pid: u32) -> ProcessInfo {
            ProcessInfo::from_argv(&[format!("/bin/p{pid}"), "x".into()], None)
        }
    }

    fn raw(so: u64, addr: &str, port: u16) -> RawListen {
        RawListen {
            so,
            addr: addr.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn tree_members_only_and_never_self() {
        // 1 -> 100 (runner) -> 101 -> 102 ; 1 -> 200 (outside)
        let fake = Fake {
            parents: vec![(100, 1), (101, 100), (102, 101), (200, 1)],
            sockets: HashMap::from([
                (100, vec![raw(1, "127.0.0.1", 9000)]),
                (102, vec![raw(2, "::", 5173)]),
                (200, vec![raw(3, "0.0.0.0", 8080)]),
            ]),
        };
        let found = scan_with(&fake, &[100], 100).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].pid, found[0].port), (102, 5173));
        assert_eq!(found[0].process.command, "/bin/p102 x");
        assert_eq!(found[0].process.label, "p102");
    }

    #[test]
    fn shared_socket_goes_to_the_master() {
        // gunicorn: master 10 and workers 11, 12 hold socket 7.
        let fake = Fake {
            parents: vec![(10, 1), (11, 10), (12, 10)],
            sockets: HashMap::from([
                (11, vec![raw(7, "0.0.0.0", 8000)]),
                (10, vec![raw(7, "0.0.0.0", 8000)]),
                (12, vec![raw(7, "0.0.0.0", 8000), raw(8, "::1", 8001)]),
            ]),
        };
        let found = scan_with(&fake, &[10], 0).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].id, found[0].pid), (SocketId(7), 10));
        assert_eq!((found[1].id, found[1].pid), (SocketId(8), 12));
    }

    #[test]
    fn no_roots_no_work() {
        struct Broken;
        impl ProcSource for Broken {
            fn parents(&self) -> io::Result<Vec<(u32, u32)>> {
                Err(io::Error::other("no table"))
            }
            fn listening(&self, _: u32) -> Vec<RawListen> {
                unreachable!()
            }
            fn describe(&self, _: u32) -> ProcessInfo {
                unreachable!()
            }
        }
        assert!(scan_with(&Broken, &[], 0).unwrap().is_empty());
        assert!(scan_with(&Broken, &[5], 0).is_err());
    }

    #[test]
    fn decodes_ports_in_network_order() {
        let lport = i32::from(8080u16.to_be());
        let (addr, port) = decode_inet(INI_IPV4, lport, [127, 0, 0, 1], [0; 16]).unwrap();
        assert_eq!(port, 8080);
        assert_eq!(addr, IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn decodes_ipv6_dual_stack_and_mapped() {
        let lport = i32::from(5173u16.to_be());
        let loopback6 = Ipv6Addr::LOCALHOST.octets();
        let (addr, _) = decode_inet(INI_IPV6, lport, [0; 4], loopback6).unwrap();
        assert_eq!(addr, "::1".parse::<IpAddr>().unwrap());
        let (addr, _) = decode_inet(INI_IPV4 | INI_IPV6, lport, [0; 4], [0; 16]).unwrap();
        assert_eq!(addr, "::".parse::<IpAddr>().unwrap());
        let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets();
        let (addr, _) = decode_inet(INI_IPV6, lport, [0; 4], mapped).unwrap();
        assert_eq!(addr, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(decode_inet(0, lport, [0; 4], [0; 16]), None);
    }
}
