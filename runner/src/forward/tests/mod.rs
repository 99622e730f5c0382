//! Forwarding against real servers on loopback, over a fake gate
//! (`servers`: the servers, the gate and the test forwarder they share).

mod editor;
mod http;
#[cfg(target_os = "linux")]
mod https;
mod pool;
mod servers;
mod websocket;
