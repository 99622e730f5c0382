//! Connecting to an approved port (loopback only, in the family the
//! listener bound) or to an editor's Unix socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::ForwardError;
use super::tls::{self, TlsStream};
use crate::gate::PortGate;

/// A connection to a local server: a dev server's port (plain or TLS) or
/// an editor's socket.
pub(crate) enum LocalStream {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
    Unix(UnixStream),
}

impl AsyncRead for LocalStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LocalStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            LocalStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            LocalStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LocalStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LocalStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            LocalStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            LocalStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LocalStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            LocalStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            LocalStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LocalStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            LocalStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            LocalStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Connects to an editor's Unix socket.
pub(crate) async fn connect_editor(
    path: &Path,
    timeout: Duration,
) -> Result<UnixStream, ForwardError> {
    let connect = UnixStream::connect(path);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(ForwardError::ConnectEditor {
            path: path.to_owned(),
            source,
        }),
        Err(_) => Err(ForwardError::ConnectTimeout {
            port: 0,
            after: timeout,
        }),
    }
}

/// The loopback addresses to try for a listener that bound `bound`, in
/// order: IPv4 first (dev servers that bind both answer there, and dialling
/// ::1 for a server on 127.0.0.1 is a classic failure), then IPv6.
///
/// A wildcard maps to its family's loopback (`0.0.0.0` -> `127.0.0.1`,
/// `::` -> `::1`); a loopback address is kept as bound (a server may bind
/// 127.0.0.2); any other address is dropped: the runner never dials off the
/// host, whatever the control or the listener says.
pub(crate) fn loopback_targets(mut bound: Vec<IpAddr>) -> Vec<IpAddr> {
    // In place: a request's targets cost no second allocation.
    let mut kept = 0;
    for at in 0..bound.len() {
        if let Some(addr) = loopback_of(bound[at])
            && !bound[..kept].contains(&addr)
        {
            bound[kept] = addr;
            kept += 1;
        }
    }
    bound.truncate(kept);
    // 127.0.0.1 first, then the other IPv4 ones, then IPv6 (a stable sort
    // keeps the order within each).
    bound.sort_by_key(|a| match a {
        IpAddr::V4(a) if *a == Ipv4Addr::LOCALHOST => 0,
        IpAddr::V4(_) => 1,
        IpAddr::V6(_) => 2,
    });
    bound
}

/// The loopback address to dial for a listener bound to `addr`, if any.
fn loopback_of(addr: IpAddr) -> Option<IpAddr> {
    let addr = match addr {
        IpAddr::V6(v6addr) => v6addr.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    };
    match addr {
        IpAddr::V4(a) if a.is_unspecified() => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        IpAddr::V6(a) if a.is_unspecified() => Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        addr if addr.is_loopback() => Some(addr),
        _ => None,
    }
}

/// Asks the gate about `port`: the loopback addresses it may be reached at,
/// in the order to try them (never empty).
pub(crate) fn targets(gate: &dyn PortGate, port: u16) -> Result<Vec<IpAddr>, ForwardError> {
    let bound = gate
        .target(port)
        .map_err(|refusal| refused(port, refusal))?;
    if !bound.iter().any(|addr| loopback_of(*addr).is_some()) {
        let addrs = bound
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ForwardError::NoLoopbackTarget { port, addrs });
    }
    Ok(loopback_targets(bound))
}

/// The error for a refused port (the gate `connect` passes in tells the
/// person too: Kandan asking for a pending or denied port is worth their
/// attention).
fn refused(port: u16, refusal: crate::gate::GateRefusal) -> ForwardError {
    ForwardError::Refused { port, refusal }
}

/// Connects to the first of `targets` (from [`targets`]) that accepts, then
/// has the gate verify who listens there ([`PortGate::verify`]): a
/// connection that may have reached another process is closed before a
/// byte is sent.
pub(crate) async fn connect_to(
    gate: &dyn PortGate,
    targets: &[IpAddr],
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, ForwardError> {
    let stream = connect_any(targets, port, timeout).await?;
    let peer = stream.peer_addr().map_err(|source| ForwardError::Connect {
        addr: SocketAddr::new(targets[0], port),
        source,
    })?;
    gate.verify(peer)
        .map_err(|refusal| refused(port, refusal))?;
    Ok(stream)
}

/// Connects to `port` like [`connect_to`] and, with `tls`, then speaks TLS
/// on the verified connection (the ClientHello is its first byte); returns
/// the stream and the address it reached.
pub(crate) async fn connect_port(
    gate: &dyn PortGate,
    targets: &[IpAddr],
    port: u16,
    timeout: Duration,
    tls: bool,
) -> Result<(LocalStream, SocketAddr), ForwardError> {
    let stream = connect_to(gate, targets, port, timeout).await?;
    let addr = stream.peer_addr().map_err(|source| ForwardError::Connect {
        addr: SocketAddr::new(targets[0], port),
        source,
    })?;
    if !tls {
        return Ok((LocalStream::Tcp(stream), addr));
    }
    let stream = match tokio::time::timeout(timeout, tls::handshake(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(ForwardError::Tls { port, source }),
        Err(_) => {
            return Err(ForwardError::ConnectTimeout {
                port,
                after: timeout,
            });
        }
    };
    Ok((LocalStream::Tls(Box::new(stream)), addr))
}

async fn connect_any(
    targets: &[IpAddr],
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, ForwardError> {
    let attempt = async {
        let mut last = None;
        for &ip in targets {
            let addr = SocketAddr::new(ip, port);
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    tracing::debug!(%addr, "connected");
                    return Ok(stream);
                }
                Err(source) if source.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::debug!(%addr, "connection refused, trying the next family");
                    last = Some(ForwardError::Connect { addr, source });
                }
                Err(source) => return Err(ForwardError::Connect { addr, source }),
            }
        }
        Err(last.unwrap_or(ForwardError::NoLoopbackTarget {
            port,
            addrs: String::new(),
        }))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ForwardError::ConnectTimeout {
            port,
            after: timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn wildcards_map_to_their_family_loopback_v4_first() {
        assert_eq!(
            loopback_targets(ips(&["::", "0.0.0.0"])),
            ips(&["127.0.0.1", "::1"])
        );
        assert_eq!(loopback_targets(ips(&["0.0.0.0"])), ips(&["127.0.0.1"]));
        assert_eq!(loopback_targets(ips(&["::"])), ips(&["::1"]));
        assert_eq!(loopback_targets(ips(&["::1"])), ips(&["::1"]));
    }

    #[test]
    fn duplicates_merge_and_specific_loopbacks_are_kept() {
        assert_eq!(
            loopback_targets(ips(&[
                "127.0.0.2",
                "0.0.0.0",
                "127.0.0.1",
                "::ffff:127.0.0.1"
            ])),
            ips(&["127.0.0.1", "127.0.0.2"])
        );
    }

    #[test]
    fn non_loopback_addresses_are_never_targets() {
        assert!(
            loopback_targets(ips(&["192.168.1.5", "10.0.0.1", "fe80::1", "2001:db8::1"]))
                .is_empty()
        );
        assert_eq!(
            loopback_targets(ips(&["192.168.1.5", "::1"])),
            ips(&["::1"])
        );
    }
}
