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
    0x7c, 0x00, 0x00, 0x00, 0x14, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0xda, 0x67, 0x00, 0x00,
    0x02, 0x0a, 0x00, 0x00, 0x99, 0x4d, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xf5, 0x07, 0x01, 0x00, 0x05, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x08, 0x00, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x15, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x16, 0x00, 0x52, 0x00, 0x00, 0x00,
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

#[test]
fn one_walk_request_layout() {
    let req = request_port(4, 5173);
    assert_eq!(req.len(), 96);
    assert_eq!(u32::from_ne_bytes(req[0..4].try_into().unwrap()), 96);
    assert_eq!(u16::from_ne_bytes([req[4], req[5]]), 18);
    assert_eq!(u16::from_ne_bytes([req[6], req[7]]), 0x301);
    assert_eq!(req[16], libc::AF_INET as u8);
    assert_eq!(req[20..22], 5173u16.to_be_bytes());
    assert_eq!(u32::from_ne_bytes(req[68..72].try_into().unwrap()), 1 << 10);
    assert_eq!(req[76..], request_on(4, 0, 5173)[72..]);
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
    // The fallback, a filtered dump per family, finds the same.
    let socket = open().unwrap();
    let mut per_family = HashMap::new();
    for (seq, family) in [(1, libc::AF_INET), (2, libc::AF_INET6)] {
        let req = request_on(seq, family as u8, port);
        dump(&socket, seq, &req, &mut per_family).unwrap();
    }
    assert_eq!(per_family, table);
    let mut table = HashMap::new();
    let other = other.local_addr().unwrap().port();
    listening(Some(other), &mut table).unwrap();
    assert_eq!(table.len(), 1, "{table:?}");
    assert!(
        !ONE_WALK_REFUSED.load(Ordering::Relaxed),
        "this kernel answers TCPDIAG_GETSOCK"
    );
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
