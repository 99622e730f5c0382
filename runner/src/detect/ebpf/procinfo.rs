//! What /proc says about a listener the kernel reported: its socket inode
//! (the [`crate::detect::SocketId`] every backend uses, so eBPF events and
//! procfs snapshots agree), the port when `listen()` ran without `bind()`,
//! and the network namespace of its process.

use std::fs;
use std::os::unix::fs::MetadataExt;

/// Inode of the socket behind `/proc/<pid>/fd/<fd>`.
pub(crate) fn socket_inode(pid: u32, fd: u32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    parse_socket_link(link.to_str()?)
}

/// `socket:[12345]` -> 12345.
pub(crate) fn parse_socket_link(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Local port of the listening socket `inode`, from the tcp tables of
/// `pid`'s network namespace.
pub(crate) fn listening_port(pid: u32, inode: u64) -> Option<u16> {
    ["tcp", "tcp6"].into_iter().find_map(|table| {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
        port_of(&text, inode)
    })
}

/// A network namespace: device and inode of its nsfs file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NetNs {
    dev: u64,
    ino: u64,
}

/// The network namespace `pid` is in now (`self` for the runner); `None`
/// when it exited or may not be inspected.
pub(crate) fn net_ns(pid: &str) -> Option<NetNs> {
    let meta = fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    Some(NetNs {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Finds `inode` among the LISTEN (`0A`) rows of a `/proc/net/tcp{,6}` text.
pub(crate) fn port_of(table: &str, inode: u64) -> Option<u16> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 10 || cols[3] != "0A" || cols[9].parse::<u64>().ok()? != inode {
            return None;
        }
        let (_, port) = cols[1].rsplit_once(':')?;
        u16::from_str_radix(port, 16).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:A2C4 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn finds_port_of_listening_inode() {
        assert_eq!(port_of(TCP6, 4242), Some(8080));
    }

    #[test]
    fn ignores_connected_sockets_and_unknown_inodes() {
        assert_eq!(port_of(TCP6, 4343), None);
        assert_eq!(port_of(TCP6, 1), None);
        assert_eq!(port_of("garbage\nmore garbage", 1), None);
    }

    #[test]
    fn own_namespace_is_found_and_equal_to_itself() {
        let own = net_ns("self").expect("own netns");
        assert_eq!(net_ns(&std::process::id().to_string()), Some(own));
        assert_eq!(net_ns("4294967295"), None);
    }

    #[test]
    fn parses_socket_links() {
        assert_eq!(parse_socket_link("socket:[987]"), Some(987));
        assert_eq!(parse_socket_link("pipe:[987]"), None);
        assert_eq!(parse_socket_link("socket:[x]"), None);
    }
}
