//! Forwarding against real servers on loopback, over a fake gate
//! (`servers`: the servers, the gate and the test forwarder they share).
//!
//! Why here and not in `tests/`: they drive the [`Forwarder`] itself, with
//! a fake [`PortGate`](crate::gate::PortGate) and a test
//! [`Responder`](crate::control::Responder), and read its internals
//! (`socket_count`, the pool's idle connections, the sniffed scheme). From
//! `tests/` all of that, and `forward` itself, would have to become `pub`
//! API of the crate for one user; here it stays `pub(crate)`. The runner's
//! whole path, process and simulator included, is tested in `tests/`
//! (`connect_forwarding`, `connect_limits`, `connect_attackers`, ...).
//!
//! [`Forwarder`]: super::Forwarder

mod editor;
mod http;
#[cfg(target_os = "linux")]
mod https;
mod pool;
mod servers;
mod websocket;
