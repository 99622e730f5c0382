//! The sockets the detector reports, grouped into one service per port.
//!
//! IPv4 and IPv6 sockets, and every SO_REUSEPORT sibling, on one port are one
//! service. Its owner is the process of the oldest socket still open (the one
//! that started listening first: a dev server's master, not a late worker),
//! and its addresses are every local address bound on the port.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::Candidate;
use crate::detect::{ListenerSocket, SocketId};

/// Every open socket, indexed by port in the order they were first seen.
#[derive(Debug, Default)]
pub(crate) struct Services {
    /// Socket -> (port, age). Age is a counter: lower is older.
    index: HashMap<SocketId, (u16, u64)>,
    /// Port -> sockets by age.
    ports: HashMap<u16, BTreeMap<u64, ListenerSocket>>,
    next_age: u64,
}

impl Services {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records an open socket; returns the port it touched. A socket already
    /// known on the same port keeps its age (a snapshot re-reporting it, or
    /// its fd moving to another process), so ownership does not jump.
    pub(crate) fn open(&mut self, socket: ListenerSocket) -> u16 {
        let port = socket.port;
        match self.index.get(&socket.id) {
            Some(&(known_port, age)) if known_port == port => {
                if let Some(sockets) = self.ports.get_mut(&port) {
                    sockets.insert(age, socket);
                }
            }
            Some(_) => {
                // Same id on another port: the id was reused after a close
                // we never saw. Treat it as that close plus a new socket.
                self.close(socket.id);
                self.insert_new(socket);
            }
            None => self.insert_new(socket),
        }
        port
    }

    fn insert_new(&mut self, socket: ListenerSocket) {
        let age = self.next_age;
        self.next_age += 1;
        self.index.insert(socket.id, (socket.port, age));
        self.ports
            .entry(socket.port)
            .or_default()
            .insert(age, socket);
    }

    /// Forgets a closed socket; returns its port, or `None` when unknown
    /// (never seen, or filtered out before it got here).
    pub(crate) fn close(&mut self, id: SocketId) -> Option<u16> {
        let (port, age) = self.index.remove(&id)?;
        if let Some(sockets) = self.ports.get_mut(&port) {
            sockets.remove(&age);
            if sockets.is_empty() {
                self.ports.remove(&port);
            }
        }
        Some(port)
    }

    /// Replaces the whole set: sockets missing from `sockets` have closed,
    /// new ones opened. Returns every port that may have changed.
    pub(crate) fn replace(&mut self, sockets: Vec<ListenerSocket>) -> BTreeSet<u16> {
        let present: BTreeSet<SocketId> = sockets.iter().map(|s| s.id).collect();
        let gone: Vec<SocketId> = self
            .index
            .keys()
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        let mut touched = BTreeSet::new();
        for id in gone {
            touched.extend(self.close(id));
        }
        for socket in sockets {
            // Only count ports whose sockets actually differ, so a steady
            // poll does not make the debouncer re-examine everything.
            let unchanged = self.index.get(&socket.id).is_some_and(|&(port, age)| {
                self.ports
                    .get(&port)
                    .and_then(|sockets| sockets.get(&age))
                    .is_some_and(|known| *known == socket)
            });
            if !unchanged {
                if let Some(&(old_port, _)) = self.index.get(&socket.id) {
                    touched.insert(old_port);
                }
                touched.insert(self.open(socket));
            }
        }
        touched
    }

    /// The sockets open on `port` right now, oldest first.
    pub(crate) fn sockets(&self, port: u16) -> impl Iterator<Item = &ListenerSocket> {
        self.ports.get(&port).into_iter().flat_map(|s| s.values())
    }

    /// The service on `port` as it is right now (not yet debounced), or
    /// `None` when nothing listens there.
    pub(crate) fn get(&self, port: u16) -> Option<Candidate> {
        let sockets = self.ports.get(&port)?;
        let (_, oldest) = sockets.first_key_value()?;
        let addresses: BTreeSet<IpAddr> = sockets.values().map(|s| s.addr).collect();
        Some(Candidate {
            port,
            pid: oldest.pid,
            process: oldest.process.clone(),
            addresses: addresses.into_iter().collect(),
            // The pipeline sets them as the candidate leaves it.
            attributes: Default::default(),
        })
    }

    /// Number of open sockets (all ports).
    #[cfg(test)]
    fn socket_count(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::detect::process_info::ProcessInfo;

    pub(crate) fn sock(id: u64, port: u16, addr: &str, pid: u32, command: &str) -> ListenerSocket {
        let argv: Vec<String> = command.split(' ').map(str::to_string).collect();
        ListenerSocket {
            id: SocketId(id),
            port,
            addr: addr.parse().unwrap(),
            pid,
            process: ProcessInfo::from_argv(&argv, Some("/x".into())),
        }
    }

    fn addrs(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn v4_and_v6_on_one_port_are_one_service() {
        let mut services = Services::new();
        services.open(sock(1, 5173, "::1", 10, "node vite"));
        services.open(sock(2, 5173, "127.0.0.1", 10, "node vite"));
        let service = services.get(5173).unwrap();
        assert_eq!(service.pid, 10);
        assert_eq!(service.addresses, addrs(&["127.0.0.1", "::1"]));
        assert_eq!(services.get(5174), None);
    }

    #[test]
    fn reuseport_siblings_are_one_service_owned_by_the_oldest() {
        let mut services = Services::new();
        services.open(sock(1, 8000, "0.0.0.0", 20, "gunicorn master"));
        services.open(sock(2, 8000, "0.0.0.0", 21, "gunicorn worker"));
        services.open(sock(3, 8000, "0.0.0.0", 22, "gunicorn worker"));
        let service = services.get(8000).unwrap();
        assert_eq!(service.pid, 20);
        assert_eq!(service.process.command, "gunicorn master");
        assert_eq!(service.addresses, addrs(&["0.0.0.0"]));

        // The master's socket closes: the next oldest owns the port.
        assert_eq!(services.close(SocketId(1)), Some(8000));
        assert_eq!(services.get(8000).unwrap().pid, 21);
        services.close(SocketId(2));
        services.close(SocketId(3));
        assert_eq!(services.get(8000), None);
        assert_eq!(services.socket_count(), 0);
    }

    #[test]
    fn closing_an_unknown_socket_touches_nothing() {
        let mut services = Services::new();
        assert_eq!(services.close(SocketId(9)), None);
    }

    #[test]
    fn reopening_a_known_socket_keeps_its_age() {
        let mut services = Services::new();
        services.open(sock(1, 3000, "::", 1, "a"));
        services.open(sock(2, 3000, "::", 2, "b"));
        // Socket 1 re-reported with a new owner (its fd moved to pid 3).
        services.open(sock(1, 3000, "::", 3, "c"));
        assert_eq!(services.get(3000).unwrap().pid, 3);
    }

    #[test]
    fn a_reused_id_on_another_port_moves() {
        let mut services = Services::new();
        services.open(sock(1, 3000, "::", 1, "a"));
        services.open(sock(1, 4000, "::", 1, "a"));
        assert_eq!(services.get(3000), None);
        assert_eq!(services.get(4000).unwrap().pid, 1);
    }

    #[test]
    fn snapshot_diff_closes_missing_and_opens_new() {
        let mut services = Services::new();
        services.open(sock(1, 3000, "127.0.0.1", 1, "a"));
        services.open(sock(2, 4000, "127.0.0.1", 2, "b"));

        let touched = services.replace(vec![
            sock(2, 4000, "127.0.0.1", 2, "b"),
            sock(3, 5000, "::1", 3, "c"),
        ]);
        assert_eq!(touched, BTreeSet::from([3000, 5000]));
        assert_eq!(services.get(3000), None);
        assert_eq!(services.get(4000).unwrap().pid, 2);
        assert_eq!(services.get(5000).unwrap().addresses, addrs(&["::1"]));

        // The same snapshot again changes nothing.
        let touched = services.replace(vec![
            sock(2, 4000, "127.0.0.1", 2, "b"),
            sock(3, 5000, "::1", 3, "c"),
        ]);
        assert!(touched.is_empty());
    }

    #[test]
    fn snapshot_keeps_age_of_known_sockets() {
        let mut services = Services::new();
        services.open(sock(1, 3000, "::", 1, "old"));
        // The snapshot lists the newer socket first; the old one still owns.
        services.replace(vec![
            sock(2, 3000, "::", 2, "new"),
            sock(1, 3000, "::", 1, "old"),
        ]);
        assert_eq!(services.get(3000).unwrap().pid, 1);
    }
}
