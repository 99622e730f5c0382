use std::sync::Mutex;

use std::sync::mpsc::TryRecvError;

use super::*;

fn socket(id: u64, port: u16, addr: &str, command: &str) -> ListenerSocket {
    ListenerSocket {
        id: SocketId(id),
        port,
        addr: addr.parse().unwrap(),
        pid: 100,
        process: ProcessInfo::from_argv(&[command.to_string()], Some("/x".into())),
    }
}

fn identity(port: u16, command: &str) -> Identity {
    Identity::new(
        port,
        &ProcessInfo::from_argv(&[command.to_string()], Some("/x".into())),
    )
}

/// A gate whose OS listener table the test sets.
fn gate_with_table() -> (Gate, Arc<Mutex<Vec<ListeningSocket>>>) {
    let table = Arc::new(Mutex::new(Vec::new()));
    let shared = table.clone();
    let gate = Gate::with_listener_table(Box::new(move |_port| Ok(shared.lock().unwrap().clone())));
    (gate, table)
}

fn listed(id: u64, addr: &str, port: u16) -> ListeningSocket {
    ListeningSocket {
        id,
        addr: addr.parse().unwrap(),
        port,
    }
}

#[test]
fn a_port_is_forwardable_only_while_approved_sockets_listen() {
    let gate = Gate::new();
    let vite = socket(1, 5173, "127.0.0.1", "vite");
    assert_eq!(gate.target(5173), Err(GateRefusal::NotListening));
    gate.set_live(5173, [&vite]);
    assert_eq!(gate.target(5173), Err(GateRefusal::NotOffered));
    gate.set_approved(&identity(5173, "vite"), true);
    assert_eq!(gate.target(5173), Ok(vec!["127.0.0.1".parse().unwrap()]));
    gate.set_live(5173, []);
    assert_eq!(gate.target(5173), Err(GateRefusal::NotListening));
    // The same identity back: forwardable again with no new decision.
    gate.set_live(5173, [&socket(2, 5173, "::", "vite")]);
    assert_eq!(gate.target(5173), Ok(vec!["::".parse().unwrap()]));
}

#[test]
fn closing_a_socket_another_identity_and_a_denial_each_revoke() {
    let gate = Gate::new();
    let revoked = gate.revocations();
    let vite = socket(1, 5173, "127.0.0.1", "vite");
    gate.set_live(5173, [&vite]);
    gate.set_approved(&identity(5173, "vite"), true);
    assert_eq!(revoked.try_recv(), Err(TryRecvError::Empty));

    // Another program joins the port: refused at once, even alongside.
    let other = socket(2, 5173, "::", "python3");
    gate.set_live(5173, [&vite, &other]);
    assert_eq!(gate.target(5173), Err(GateRefusal::NotOffered));
    assert_eq!(
        revoked.try_recv().unwrap().reason,
        RevokeReason::OwnerChanged
    );
    gate.set_live(5173, [&vite]);
    assert!(gate.target(5173).is_ok(), "back to the approved one alone");

    gate.set_live(5173, []);
    assert_eq!(revoked.try_recv().unwrap().reason, RevokeReason::Closed);
    gate.set_live(5173, [&vite]);

    gate.set_approved(&identity(5173, "vite"), false);
    assert_eq!(revoked.try_recv().unwrap().reason, RevokeReason::Denied);
    assert_eq!(gate.target(5173), Err(GateRefusal::Denied));
    // Nothing forwardable, nothing more to revoke.
    gate.set_live(5173, []);
    assert_eq!(revoked.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn a_new_socket_of_the_approved_identity_changes_nothing() {
    let gate = Gate::new();
    let revoked = gate.revocations();
    let v4 = socket(1, 5173, "127.0.0.1", "vite");
    gate.set_live(5173, [&v4]);
    gate.set_approved(&identity(5173, "vite"), true);
    gate.set_live(5173, [&v4, &socket(2, 5173, "::1", "vite")]);
    assert_eq!(revoked.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(
        gate.target(5173),
        Ok(vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()])
    );
}

#[test]
fn verify_accepts_only_the_live_approved_sockets() {
    let (gate, table) = gate_with_table();
    let peer: SocketAddr = "127.0.0.1:5173".parse().unwrap();
    gate.set_live(5173, [&socket(7, 5173, "0.0.0.0", "vite")]);
    *table.lock().unwrap() = vec![listed(7, "0.0.0.0", 5173)];
    assert_eq!(gate.verify(peer), Err(GateRefusal::NotOffered));

    gate.set_approved(&identity(5173, "vite"), true);
    assert_eq!(gate.verify(peer), Ok(()));

    // A reuseport joiner the detector never saw (outside the tree).
    table.lock().unwrap().push(listed(8, "127.0.0.1", 5173));
    assert_eq!(gate.verify(peer), Err(GateRefusal::Foreign));

    // The approved server gone, an outsider alone on the port.
    gate.set_live(5173, []);
    *table.lock().unwrap() = vec![listed(8, "127.0.0.1", 5173)];
    assert_eq!(gate.verify(peer), Err(GateRefusal::NotListening));
}

#[test]
fn an_unreadable_listener_table_refuses() {
    let gate =
        Gate::with_listener_table(Box::new(|_port| Err(std::io::Error::other("no netlink"))));
    gate.set_live(80, [&socket(1, 80, "127.0.0.1", "srv")]);
    gate.set_approved(&identity(80, "srv"), true);
    assert_eq!(
        gate.verify("127.0.0.1:80".parse().unwrap()),
        Err(GateRefusal::Unverified)
    );
}

#[cfg(target_os = "linux")]
#[test]
fn the_os_table_lists_a_real_listener_by_inode() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A connection waiting in its accept queue changes nothing.
    let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Only that port's: the kernel filters.
    let found: Vec<ListeningSocket> = verify::os_listeners(port).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].port, port);
    assert!(found[0].id > 0);
    assert_eq!(found[0].addr, "127.0.0.1".parse::<IpAddr>().unwrap());
}

#[test]
fn a_refusal_says_whether_the_port_is_new_pending_or_denied() {
    let gate = Gate::new();
    let vite = identity(5173, "vite");
    gate.set_live(5173, [&socket(1, 5173, "127.0.0.1", "vite")]);
    assert_eq!(gate.target(5173), Err(GateRefusal::NotOffered));
    gate.set_offered(&vite);
    assert_eq!(gate.target(5173), Err(GateRefusal::Pending));
    gate.set_approved(&vite, false);
    assert_eq!(gate.target(5173), Err(GateRefusal::Denied));
    // Each says one thing, once.
    for refusal in [
        GateRefusal::NotOffered,
        GateRefusal::Pending,
        GateRefusal::Denied,
    ] {
        let text = refusal.to_string();
        assert_eq!(text.matches("not approved").count(), 1, "{text}");
        assert_eq!(refusal.code().to_string(), "port_not_approved");
    }
}

/// Counters the test moves by hand.
#[derive(Default)]
struct FakeChanges(Mutex<(u64, u64)>);

impl PortChanges for FakeChanges {
    fn generation(&self, _port: u16) -> std::io::Result<crate::detect::port_changes::Generation> {
        let port = self.0.lock().unwrap().0;
        Ok(crate::detect::port_changes::Generation { port, unknown: 0 })
    }

    fn in_flight(&self) -> std::io::Result<u64> {
        Ok(self.0.lock().unwrap().1)
    }
}

/// A gate with a table and counters the test sets, and how many dumps it made.
fn gate_with_counters() -> (Gate, Arc<FakeChanges>, Arc<Mutex<usize>>) {
    let dumps = Arc::new(Mutex::new(0));
    let counted = dumps.clone();
    let gate = Gate::with_listener_table(Box::new(move |_port| {
        *counted.lock().unwrap() += 1;
        Ok(vec![listed(7, "127.0.0.1", 5173), listed(9, "::1", 5173)])
    }));
    let changes = Arc::new(FakeChanges::default());
    gate.use_port_changes(changes.clone());
    gate.set_live(5173, [&socket(7, 5173, "127.0.0.1", "vite")]);
    gate.set_approved(&identity(5173, "vite"), true);
    (gate, changes, dumps)
}

#[test]
fn a_dial_skips_the_dump_only_while_nothing_changed() {
    let (gate, changes, dumps) = gate_with_counters();
    let peer: SocketAddr = "127.0.0.1:5173".parse().unwrap();
    assert_eq!(gate.verify(peer), Ok(()));
    assert_eq!(gate.verify(peer), Ok(()));
    assert_eq!((*dumps.lock().unwrap(), gate.dials_from_cache()), (1, 1));

    // A listener changed on the port: dumped again, and recorded again.
    changes.0.lock().unwrap().0 += 1;
    assert_eq!(gate.verify(peer), Ok(()));
    assert_eq!(gate.verify(peer), Ok(()));
    assert_eq!((*dumps.lock().unwrap(), gate.dials_from_cache()), (2, 2));

    // A listen in flight: dumped, and not recorded while it lasts.
    changes.0.lock().unwrap().1 = 1;
    assert_eq!(gate.verify(peer), Ok(()));
    assert_eq!(gate.verify(peer), Ok(()));
    assert_eq!((*dumps.lock().unwrap(), gate.dials_from_cache()), (4, 2));
}

#[test]
fn a_changed_allowed_set_forces_the_dump() {
    let (gate, _changes, dumps) = gate_with_counters();
    let peer: SocketAddr = "[::1]:5173".parse().unwrap();
    gate.set_live(
        5173,
        [
            &socket(7, 5173, "127.0.0.1", "vite"),
            &socket(9, 5173, "::1", "vite"),
        ],
    );
    assert_eq!(gate.verify(peer), Ok(()));
    assert_eq!(gate.verify(peer), Ok(()));
    assert_eq!(*dumps.lock().unwrap(), 1);

    // The detector lost the ::1 socket (the counters did not move): the
    // table, which still lists it, is read again and refuses.
    gate.set_live(5173, [&socket(7, 5173, "127.0.0.1", "vite")]);
    assert_eq!(gate.verify(peer), Err(GateRefusal::Foreign));
    assert_eq!(*dumps.lock().unwrap(), 2);
    // And the refusal is not cached away.
    gate.set_live(
        5173,
        [
            &socket(7, 5173, "127.0.0.1", "vite"),
            &socket(9, 5173, "::1", "vite"),
        ],
    );
    assert_eq!(gate.verify(peer), Ok(()));
    assert_eq!((*dumps.lock().unwrap(), gate.dials_from_cache()), (3, 1));
}
