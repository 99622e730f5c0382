//! Remembering the first byte a local server sent, to tell a TLS server
//! answering plain HTTP (a TLS record) from an HTTP server that failed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Nothing read yet.
const NONE: u16 = u16::MAX;

/// The first byte read from a [`Sniffed`] stream, once there is one.
#[derive(Clone)]
pub(super) struct FirstByte(Arc<AtomicU16>);

impl FirstByte {
    pub(crate) fn get(&self) -> Option<u8> {
        u8::try_from(self.0.load(Ordering::Relaxed)).ok()
    }
}

/// A stream that records the first byte read from it.
pub(super) struct Sniffed<S> {
    inner: S,
    first: FirstByte,
}

impl<S> Sniffed<S> {
    pub(crate) fn new(inner: S) -> (Self, FirstByte) {
        let first = FirstByte(Arc::new(AtomicU16::new(NONE)));
        let sniffed = Self {
            inner,
            first: first.clone(),
        };
        (sniffed, first)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(&byte) = buf.filled().get(before)
            && this.first.0.load(Ordering::Relaxed) == NONE
        {
            this.first.0.store(u16::from(byte), Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
