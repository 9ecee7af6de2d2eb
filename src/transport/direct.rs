//! Writing to a plain TCP socket from any task without waiting: what a sender writes straight
//! through while the connection's writer is idle, and what the writer finishes when the socket
//! took only part of it.
//!
//! This module owns the socket half the writer and the senders share, and the layout of such a
//! write (headers and payloads side by side, payloads by reference). Whether a sender may write
//! is the connection's decision (`connection::through`); this module only writes.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;

use super::gather::MAX_IOVECS;
use crate::frame::{Frame, SECURE_HEADER_LEN};

/// A frame at most this long on the wire is copied into one buffer and sent with a plain
/// `send`: copying a few hundred octets costs less than the kernel's `writev` path (the iovec
/// import and the file-position lookup), which a broadcast pays once per peer.
const COPY_AT_MOST: usize = 512;

/// A socket any task may try to write to without waiting.
pub trait DirectSocket: Send + Sync + 'static {
    /// Writes what the socket takes now of one buffer; `WouldBlock` if it takes nothing.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Writes what the socket takes now; `WouldBlock` if it takes nothing.
    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Ready once the socket may take more (only the connection's writer waits on it).
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl DirectSocket for OwnedWriteHalf {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        OwnedWriteHalf::try_write(self, buf)
    }

    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        OwnedWriteHalf::try_write_vectored(self, slices)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_ref().poll_write_ready(cx)
    }
}

/// The write half of a plain TCP stream, shared by the connection's writer (through
/// [`AsyncWrite`]) and the senders that write through (through [`DirectSocket`]).
#[derive(Debug)]
pub struct SharedWrite(Arc<OwnedWriteHalf>);

impl SharedWrite {
    pub(crate) fn new(half: OwnedWriteHalf) -> SharedWrite {
        SharedWrite(Arc::new(half))
    }

    /// The socket for senders.
    pub(crate) fn socket(&self) -> Arc<dyn DirectSocket> {
        self.0.clone()
    }
}

impl AsyncWrite for SharedWrite {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_write_vectored(&*self.0, cx, slices)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection withdraws the senders' share before it shuts the write direction.
        match Arc::get_mut(&mut self.0) {
            Some(half) => Pin::new(half).poll_shutdown(cx),
            None => Poll::Ready(Err(io::Error::other("the socket is still shared with senders"))),
        }
    }
}

/// Writes `frames` in one vectored write, as far as the socket takes them now; returns how many
/// octets went out (`WouldBlock` if none).
pub(crate) fn try_write(socket: &dyn DirectSocket, frames: &[Frame]) -> io::Result<usize> {
    if let [frame] = frames {
        // The common case, without an allocation: one header and one payload, copied into
        // one buffer when short.
        let mut small = [0u8; COPY_AT_MOST];
        let (header_len, len) = (frame.header_len(), frame.wire_len());
        frame.put_header(&mut &mut small[..]);
        if len <= COPY_AT_MOST {
            small[header_len..len].copy_from_slice(&frame.payload);
            return socket.try_write(&small[..len]);
        }
        let slices = [IoSlice::new(&small[..header_len]), IoSlice::new(&frame.payload)];
        return socket.try_write_vectored(&slices);
    }
    let headers = headers(frames);
    let slices = slices(&headers, frames);
    socket.try_write_vectored(&slices[..slices.len().min(MAX_IOVECS)])
}

/// Writes what [`try_write`] left of `frames` (everything after the first `written` octets),
/// waiting for the socket as long as it takes.
pub(crate) async fn write_rest(
    socket: &dyn DirectSocket,
    frames: &[Frame],
    written: usize,
) -> io::Result<()> {
    let headers = headers(frames);
    let mut slices = slices(&headers, frames);
    let mut remaining: &mut [IoSlice<'_>] = &mut slices;
    IoSlice::advance_slices(&mut remaining, written);
    while !remaining.is_empty() {
        let window = remaining.len().min(MAX_IOVECS);
        let n = poll_fn(|cx| poll_write_vectored(socket, cx, &remaining[..window])).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut remaining, n);
    }
    Ok(())
}

/// A vectored write that waits for the socket: ready, then as much as it takes.
fn poll_write_vectored(
    socket: &dyn DirectSocket,
    cx: &mut Context<'_>,
    slices: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(socket.poll_write_ready(cx))?;
        match socket.try_write_vectored(slices) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            written => return Poll::Ready(written),
        }
    }
}

fn headers(frames: &[Frame]) -> Vec<u8> {
    let mut headers = Vec::with_capacity(frames.len() * SECURE_HEADER_LEN);
    for frame in frames {
        frame.put_header(&mut headers);
    }
    headers
}

/// Each frame's header (from `headers`, in order) and payload (none for an empty one: a
/// window of empty slices would write nothing).
fn slices<'a>(headers: &'a [u8], frames: &'a [Frame]) -> Vec<IoSlice<'a>> {
    let mut slices = Vec::with_capacity(frames.len() * 2);
    let mut at = 0;
    for frame in frames {
        let end = at + frame.header_len();
        slices.push(IoSlice::new(&headers[at..end]));
        if !frame.payload.is_empty() {
            slices.push(IoSlice::new(&frame.payload));
        }
        at = end;
    }
    slices
}
