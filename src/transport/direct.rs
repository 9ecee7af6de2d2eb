//! Writing frames to a socket from any task without waiting: what a sender writes straight
//! through while the connection's writer is idle, and what the writer finishes when the socket
//! took only part of it.
//!
//! This module owns the layout of such a write (each frame's headers and payload side by side,
//! payloads by reference, as plain TCP or a server's WebSocket messages carry them) and the
//! plain TCP socket the writer and the senders share. Whether a sender may write is the
//! connection's decision (`connection::through`); this module only writes.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::BufMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;

use super::gather::MAX_IOVECS;
use crate::frame::{Frame, SECURE_HEADER_LEN};

/// A frame at most this long on the wire is copied into one buffer and sent with a plain
/// `send`: copying a few hundred octets costs less than the kernel's `writev` path (the iovec
/// import and the file-position lookup), which a broadcast pays once per peer.
const COPY_AT_MOST: usize = 512;

/// The longest WebSocket header of an unmasked message (a 64-bit length).
const WS_HEADER_MAX: usize = 10;

/// How frames are laid out on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Back to back, as on a TCP stream.
    Stream,
    /// One unmasked binary WebSocket message each (a server's; a client masks every message
    /// with a fresh key, which the WebSocket transport does itself).
    #[cfg(feature = "ws")]
    WsServer,
}

impl Layout {
    /// The octets that go before `frame`'s payload: its WebSocket header, if any, then its own.
    fn put_headers(self, frame: &Frame, dst: &mut impl BufMut) {
        #[cfg(feature = "ws")]
        if self == Layout::WsServer {
            let binary = crate::ws::codec::opcode::BINARY;
            crate::ws::codec::put_header(dst, true, binary, frame.wire_len(), None);
        }
        frame.put_header(dst);
    }

    fn headers_len(self, frame: &Frame) -> usize {
        let ws = match self {
            Layout::Stream => 0,
            #[cfg(feature = "ws")]
            Layout::WsServer => crate::ws::codec::header_len(frame.wire_len(), false),
        };
        ws + frame.header_len()
    }

    /// The octets `frames` take on the wire.
    fn wire_len(self, frames: &[Frame]) -> usize {
        frames
            .iter()
            .map(|frame| self.headers_len(frame) + frame.payload.len())
            .sum()
    }
}

/// What a write through took of its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Octets on the wire.
    pub octets: usize,
    /// Whether that was all of them.
    pub all: bool,
}

impl Written {
    /// Nothing went out (the socket is full or busy, or failed).
    pub const NOTHING: Written = Written {
        octets: 0,
        all: false,
    };

    fn of(octets: usize, total: usize) -> Written {
        Written {
            octets,
            all: octets >= total,
        }
    }
}

/// A socket any task may try to write frames to without waiting.
pub trait DirectSocket: Send + Sync + 'static {
    /// Writes what the socket takes now of `frames`, as the transport lays them out;
    /// `WouldBlock` if it takes nothing. What it leaves, the connection's writer writes next
    /// ([`FrameWrite::write_tail`](super::FrameWrite::write_tail)).
    fn try_write_frames(&self, frames: &[Frame]) -> io::Result<Written>;
}

impl DirectSocket for OwnedWriteHalf {
    fn try_write_frames(&self, frames: &[Frame]) -> io::Result<Written> {
        try_write_laid_out(self, Layout::Stream, frames)
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
        loop {
            ready!(self.0.as_ref().as_ref().poll_write_ready(cx))?;
            match self.0.try_write_vectored(slices) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
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

/// Writes `frames` laid out as `layout` in one write, as far as `half` takes them now.
pub(crate) fn try_write_laid_out(
    half: &OwnedWriteHalf,
    layout: Layout,
    frames: &[Frame],
) -> io::Result<Written> {
    let octets = try_write(half, layout, frames)?;
    Ok(Written::of(octets, layout.wire_len(frames)))
}

/// Writes `frames` laid out as `layout` in one write, as far as `half` takes them now; returns
/// how many octets went out (`WouldBlock` if none).
fn try_write(half: &OwnedWriteHalf, layout: Layout, frames: &[Frame]) -> io::Result<usize> {
    if let [frame] = frames {
        // The common case, without an allocation: the headers and one payload, copied into
        // one buffer when short.
        let mut small = [0u8; COPY_AT_MOST + WS_HEADER_MAX];
        let header_len = layout.headers_len(frame);
        let len = header_len + frame.payload.len();
        layout.put_headers(frame, &mut &mut small[..]);
        if len <= COPY_AT_MOST {
            small[header_len..len].copy_from_slice(&frame.payload);
            return half.try_write(&small[..len]);
        }
        let slices = [IoSlice::new(&small[..header_len]), IoSlice::new(&frame.payload)];
        return half.try_write_vectored(&slices);
    }
    let headers = headers(layout, frames);
    let slices = slices(layout, &headers, frames);
    half.try_write_vectored(&slices[..slices.len().min(MAX_IOVECS)])
}

/// Writes what a sender's write left of `frames` laid out as `layout` (everything after the
/// first `written` octets), waiting for the stream as long as it takes.
pub(crate) async fn write_rest<W: AsyncWrite + Unpin>(
    stream: &mut W,
    layout: Layout,
    frames: &[Frame],
    written: usize,
) -> io::Result<()> {
    let headers = headers(layout, frames);
    let mut slices = slices(layout, &headers, frames);
    let mut remaining: &mut [IoSlice<'_>] = &mut slices;
    IoSlice::advance_slices(&mut remaining, written);
    while !remaining.is_empty() {
        let window = remaining.len().min(MAX_IOVECS);
        let n = stream.write_vectored(&remaining[..window]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut remaining, n);
    }
    Ok(())
}

fn headers(layout: Layout, frames: &[Frame]) -> Vec<u8> {
    let mut headers = Vec::with_capacity(frames.len() * (WS_HEADER_MAX + SECURE_HEADER_LEN));
    for frame in frames {
        layout.put_headers(frame, &mut headers);
    }
    headers
}

/// Each frame's headers (from `headers`, in order) and payload (none for an empty one: a
/// window of empty slices would write nothing).
fn slices<'a>(layout: Layout, headers: &'a [u8], frames: &'a [Frame]) -> Vec<IoSlice<'a>> {
    let mut slices = Vec::with_capacity(frames.len() * 2);
    let mut at = 0;
    for frame in frames {
        let end = at + layout.headers_len(frame);
        slices.push(IoSlice::new(&headers[at..end]));
        if !frame.payload.is_empty() {
            slices.push(IoSlice::new(&frame.payload));
        }
        at = end;
    }
    slices
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "ws")]
    use super::*;
    #[cfg(feature = "ws")]
    use bytes::{Bytes, BytesMut};

    /// The WebSocket layout is what the WebSocket writer puts on the wire for a server: the
    /// message header the codec writes, then the frame.
    #[cfg(feature = "ws")]
    #[test]
    fn the_websocket_layout_matches_the_codec_at_every_length_form() {
        for len in [0usize, 100, 116, 117, 65_000, 65_526, 65_527, 70_000] {
            let frame = Frame::message(9, Bytes::from(vec![3u8; len]));
            let mut ours = Vec::new();
            Layout::WsServer.put_headers(&frame, &mut ours);
            assert_eq!(ours.len(), Layout::WsServer.headers_len(&frame), "{len}");
            ours.extend_from_slice(&frame.payload);
            let mut codec = BytesMut::new();
            crate::ws::codec::put_header(&mut codec, true, 0x2, frame.wire_len(), None);
            frame.put_header(&mut codec);
            codec.extend_from_slice(&frame.payload);
            assert_eq!(ours, codec.to_vec(), "{len}");
            assert_eq!(
                Layout::WsServer.wire_len(std::slice::from_ref(&frame)),
                ours.len()
            );
        }
    }
}
