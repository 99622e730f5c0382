//! LISTEN sockets of the runner's network namespace: from netlink
//! sock_diag ([`super::sock_diag`]) when allowed, else from `/proc/net/tcp`
//! and `/proc/net/tcp6` (`/proc/net` is `/proc/self/net`), which cost the
//! kernel a walk of every connection.
//!
//! The kernel prints addresses as the hex of each 32-bit word of the
//! network-order address read as a native integer, so on little-endian
//! machines `127.0.0.1` is `0100007F`; ports are printed in host order.
//! IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) come out as IPv4: such a
//! socket only ever accepts IPv4 connections.

use std::collections::HashMap;
use std::io::{self, BufRead};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU8, Ordering};

use super::sock_diag;

/// `TCP_LISTEN` as `/proc/net/tcp` prints it.
const LISTEN: &str = "0A";

/// One listening socket of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Listening {
    pub(crate) inode: u64,
    pub(crate) addr: IpAddr,
    pub(crate) port: u16,
}

/// Which source [`listening`] uses: netlink until it is refused once.
static SOURCE: AtomicU8 = AtomicU8::new(UNTRIED);
const UNTRIED: u8 = 0;
const NETLINK: u8 = 1;
const PROC_NET: u8 = 2;

/// Every LISTEN socket of the namespace by inode.
pub(crate) fn listening() -> io::Result<HashMap<u64, Listening>> {
    listening_on(None)
}

/// Every LISTEN socket of the namespace on `port` (or on any port) by
/// inode. Netlink asks the kernel for that port alone; `/proc/net` lists
/// them all, filtered here.
pub(crate) fn listening_on(port: Option<u16>) -> io::Result<HashMap<u64, Listening>> {
    if SOURCE.load(Ordering::Relaxed) != PROC_NET {
        let mut sockets = HashMap::new();
        match sock_diag::listening(port, &mut sockets) {
            Ok(()) => {
                if SOURCE.swap(NETLINK, Ordering::Relaxed) == UNTRIED {
                    tracing::debug!("listening sockets from netlink sock_diag");
                }
                return Ok(sockets);
            }
            Err(err) if err.is_refusal() => {
                SOURCE.store(PROC_NET, Ordering::Relaxed);
                tracing::debug!(
                    err = %crate::error_chain(&err),
                    "netlink sock_diag refused: listening sockets from /proc/net/tcp"
                );
            }
            // A passing failure: this scan reads /proc/net, the next one
            // tries netlink again.
            Err(err) => tracing::debug!(
                err = %crate::error_chain(&err),
                "netlink sock_diag failed once: reading /proc/net/tcp"
            ),
        }
    }
    let mut sockets = from_proc_net()?;
    if let Some(port) = port {
        sockets.retain(|_, socket| socket.port == port);
    }
    Ok(sockets)
}

/// Every LISTEN socket of `/proc/net/tcp{,6}` by inode. A missing `tcp6`
/// (IPv6 disabled) is no error.
pub(crate) fn from_proc_net() -> io::Result<HashMap<u64, Listening>> {
    let mut sockets = HashMap::new();
    read_table("/proc/net/tcp", &mut sockets)?;
    match read_table("/proc/net/tcp6", &mut sockets) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        other => other?,
    }
    Ok(sockets)
}

fn read_table(path: &str, into: &mut HashMap<u64, Listening>) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    parse_table(io::BufReader::new(file), into)
}

/// Adds the LISTEN rows of one table (header included) to `into`.
pub(crate) fn parse_table(
    reader: impl BufRead,
    into: &mut HashMap<u64, Listening>,
) -> io::Result<()> {
    for line in reader.lines() {
        if let Some(socket) = parse_line(&line?) {
            into.insert(socket.inode, socket);
        }
    }
    Ok(())
}

/// A LISTEN row; `None` for the header, other states, sockets without an
/// inode, and malformed rows (the kernel's format is trusted but never
/// allowed to panic us).
pub(crate) fn parse_line(line: &str) -> Option<Listening> {
    let mut fields = line.split_ascii_whitespace();
    let _slot = fields.next()?;
    let local = fields.next()?;
    let _remote = fields.next()?;
    if fields.next()? != LISTEN {
        return None;
    }
    // tx:rx queue, tr:when, retrnsmt, uid, timeout, then the inode.
    let inode: u64 = fields.nth(5)?.parse().ok()?;
    if inode == 0 {
        return None;
    }
    let (addr, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(Listening {
        inode,
        addr: parse_addr(addr)?,
        port,
    })
}

/// `0100007F` or 32 hex digits, each 8 a native-endian word.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    if !hex.is_ascii() {
        return None;
    }
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(hex)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&hex[i * 8..i * 8 + 8])?);
            }
            let v6 = Ipv6Addr::from(bytes);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

/// The network-order bytes of one printed word.
fn word(hex: &str) -> Option<[u8; 4]> {
    u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured on this machine (x86_64): a wildcard sshd-like listener, a
    // loopback listener and an established connection.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1162 1 00000000f98b20e8 100 0 0 10 0
   1: 0100007F:CE43 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 24140 1 0000000029f44b0f 100 0 0 10 0
   2: 020200C0:8F90 507100CB:01BB 01 00000000:00000000 00:00000000 00000000     0        0 20420 1 000000006ec0f9a4 20 4 1 46 -1
";

    // An IPv4-mapped bind, ::1, ::, and a TIME_WAIT row without inode.
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:DA11 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 24138 1 00000000bbdb127a 100 0 0 10 0
   1: 00000000000000000000000001000000:B2C5 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 24139 1 00000000cd9dc1db 100 0 0 10 0
   2: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 30001 1 00000000cd9dc1db 100 0 0 10 0
   3: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D431 06 00000000:00000000 03:00000F3B 00000000     0        0 0 3 0000000000000000
";

    fn parse(text: &str) -> HashMap<u64, Listening> {
        let mut table = HashMap::new();
        parse_table(text.as_bytes(), &mut table).unwrap();
        table
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv4_rows() {
        let table = parse(TCP);
        assert_eq!(table.len(), 2, "the established row is no listener");
        assert_eq!(
            table[&1162],
            Listening {
                inode: 1162,
                addr: "0.0.0.0".parse().unwrap(),
                port: 2024
            }
        );
        assert_eq!(table[&24140].addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(table[&24140].port, 0xCE43);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv6_rows_with_mapped_loopback_and_wildcard() {
        let table = parse(TCP6);
        assert_eq!(table.len(), 3, "the time-wait row is no listener");
        assert_eq!(table[&24138].addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(table[&24138].port, 0xDA11);
        assert_eq!(table[&24139].addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(table[&30001].addr, "::".parse::<IpAddr>().unwrap());
        assert_eq!(table[&30001].port, 8080);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv6_words_are_native_endian() {
        // fe80::1234:5678 -> words 000080FE 00000000 00000000 78563412.
        let addr = parse_addr("000080FE000000000000000078563412").unwrap();
        assert_eq!(addr, "fe80::1234:5678".parse::<IpAddr>().unwrap());
        let addr = parse_addr("0101A8C0").unwrap();
        assert_eq!(addr, "192.168.1.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn malformed_rows_are_skipped() {
        for line in [
            "",
            "   0:",
            "   0: 0100007F:CE43 00000000:0000 0A",
            "   0: 0100007F 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "   0: 0100007G:CE43 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "   0: 0100007F:CE4300 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "   0: 0100007F:CE43 00000000:0000 0A 0:0 0:0 0 0 0 x",
            "   0: 0100é07F:CE43 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "   0: 00000000000000000000000001000000000:CE43 0:0 0A 0:0 0:0 0 0 0 1",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
        assert!(parse_line("   0: 0100007F:CE43 00000000:0000 0A 0:0 0:0 0 0 0 1").is_some());
    }

    #[test]
    fn netlink_and_proc_net_agree_here() {
        let _v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _v6 = std::net::TcpListener::bind("[::1]:0");
        // Other tests open and close listeners meanwhile: retry until two
        // reads in a row agree.
        let mut last = None;
        for _ in 0..20 {
            let mut netlink = HashMap::new();
            sock_diag::listening(None, &mut netlink).expect("netlink works here");
            let proc_net = from_proc_net().unwrap();
            if netlink == proc_net {
                return;
            }
            last = Some((netlink, proc_net));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("netlink and /proc/net differ: {last:?}");
    }

    #[test]
    fn reads_the_real_tables() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let table = listening().unwrap();
        assert!(
            table
                .values()
                .any(|s| s.port == port && s.addr == IpAddr::from([127, 0, 0, 1])),
            "port {port} not in {table:?}"
        );
    }
}
