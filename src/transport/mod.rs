//! Message-oriented transports: whole [`Frame`]s in, whole frames out.
//!
//! This module owns moving frames over a byte stream or a message stream. It must not interpret
//! frames (the connection does) nor hold any protocol or security state. A transport is split
//! into a [`FrameRead`] and a [`FrameWrite`] half, which the connection drives; server and
//! client logic only ever see these traits, so a new transport plugs in without touching them.

pub(crate) mod direct;
pub(crate) mod gather;
pub(crate) mod scratch;
mod tcp;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

pub(crate) use tcp::TcpTransport;

use crate::frame::{Frame, FrameError};

/// Which transport carries a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// Raw TCP: frames back to back on the byte stream.
    Tcp,
    /// WebSocket: one frame per binary WebSocket message.
    WebSocket,
}

/// Addresses and transport of a connection, and for a WebSocket peer on a server, the HTTP
/// request it upgraded with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// This endpoint's address.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The transport.
    pub transport: TransportKind,
    /// The upgrade request's method, URI and headers (cookies, query, origin), for a
    /// WebSocket peer on a server; `None` for TCP peers and on clients.
    #[cfg(feature = "ws")]
    pub upgrade: Option<std::sync::Arc<crate::http::UpgradeRequest>>,
    /// Whether the connection runs over TLS (`tls` or `wss` listeners, `connect_tls`,
    /// `wss://`; behind an application's own TLS, whether it inserted
    /// [`OverTls`](crate::http::OverTls)).
    pub tls: bool,
}

impl PeerInfo {
    /// A connection between `local` and `remote` over `transport`, without an upgrade request.
    pub fn new(local: SocketAddr, remote: SocketAddr, transport: TransportKind) -> PeerInfo {
        PeerInfo {
            local,
            remote,
            transport,
            #[cfg(feature = "ws")]
            upgrade: None,
            tls: false,
        }
    }
}

/// A connected transport, before it is split for reading and writing.
pub trait Transport: Send + 'static {
    /// The read half.
    type Reader: FrameRead;
    /// The write half.
    type Writer: FrameWrite;

    /// Addresses and transport kind.
    fn info(&self) -> PeerInfo;

    /// Splits into independently usable halves.
    fn split(self) -> (Self::Reader, Self::Writer);
}

/// The read half of a transport.
pub trait FrameRead: Send + 'static {
    /// The next frame; `Ok(None)` when the stream ended cleanly at a frame boundary.
    ///
    /// Cancel safe: dropping the future loses no frame.
    fn read_frame(&mut self) -> impl Future<Output = Result<Option<Frame>, FrameError>> + Send;

    /// Reads whatever arrives and drops it, returning how many octets (0: the end of the
    /// stream). A connection that has written its close frame reads on this way until the peer
    /// closes too, so that data of the peer's left unread does not turn the close into a reset
    /// (see the connection module).
    ///
    /// The default reads nothing and reports the end at once (no draining).
    fn discard(&mut self) -> impl Future<Output = io::Result<usize>> + Send {
        std::future::ready(Ok(0))
    }

    /// Whether octets of the peer's already wait in this reader's buffer (the start of the next
    /// frame, or all of it). The connection lets the replies to a frame wait for the writer
    /// while more is in hand, so that a burst's replies go out together, and writes a reply
    /// straight otherwise.
    ///
    /// The default says yes: replies always wait for the writer.
    fn buffered(&self) -> bool {
        true
    }
}

/// The write half of a transport.
pub trait FrameWrite: Send + 'static {
    /// Writes every frame of `batch`, in order, and flushes. Implementations write the batch in
    /// as few system calls as they can.
    ///
    /// Not cancel safe: if the future is dropped part of the batch may have been written, and
    /// the stream is no longer at a frame boundary.
    fn write_batch(&mut self, batch: &[Frame]) -> impl Future<Output = io::Result<()>> + Send;

    /// Ends the write direction (TCP FIN; WebSocket close after a close frame was written).
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// The socket senders may write frames to straight, while the connection's writer is idle
    /// (see `connection::through`), if this transport has one: plain TCP does, and so does a
    /// WebSocket over plain TCP; TLS, whose records must all come from one writer, does not.
    fn direct(&self) -> Option<std::sync::Arc<dyn direct::DirectSocket>> {
        None
    }

    /// Writes what a sender's write through [`FrameWrite::direct`] left of `frames`: everything
    /// after the first `written` octets of their layout. Only a transport with a direct socket
    /// is asked to; the default refuses.
    ///
    /// Not cancel safe, as [`FrameWrite::write_batch`].
    fn write_tail(
        &mut self,
        frames: &[Frame],
        written: usize,
    ) -> impl Future<Output = io::Result<()>> + Send {
        let _ = (frames, written);
        std::future::ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

/// What accepts TLS on a listener (feature `tls`).
#[cfg(feature = "tls-base")]
pub(crate) type TlsAcceptor = tokio_rustls::TlsAcceptor;
/// Without the `tls` feature there is no acceptor: an `Option<TlsAcceptor>` is always `None`.
#[cfg(not(feature = "tls-base"))]
#[derive(Clone)]
pub(crate) enum TlsAcceptor {}
