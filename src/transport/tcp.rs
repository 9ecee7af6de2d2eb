//! The byte-stream transport: frames back to back on a `TcpStream`, or on TLS over one.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use super::direct::{self, DirectSocket, Layout, SharedWrite};
use super::gather::{Gather, COALESCE_LIMIT};
use super::{scratch, FrameRead, FrameWrite, PeerInfo, Transport, TransportKind};
use crate::frame::{Frame, FrameCodec, FrameError};

/// Most octets one read takes while nothing is pending. They land in the per-thread scratch;
/// the connection keeps only what arrived (and room for the rest of a frame that has begun).
/// An idle peer holds no buffer: it is released whenever it drains empty.
const READ_BUFFER: usize = scratch::SCRATCH_LEN;

/// A byte stream frames can travel on, and how it splits into halves.
pub trait ByteStream: Send + 'static {
    /// The read half.
    type Read: AsyncRead + Send + Unpin + 'static;
    /// The write half.
    type Write: StreamWrite;
    /// Splits into halves (a plain TCP stream without a lock between them).
    fn halves(self) -> (Self::Read, Self::Write);
}

/// The write half of a [`ByteStream`].
pub trait StreamWrite: AsyncWrite + Send + Unpin + 'static {
    /// The socket senders may write to without waiting, if this stream has one (plain TCP: a
    /// TLS session's records must all come from one writer).
    fn direct(&self) -> Option<Arc<dyn DirectSocket>> {
        None
    }
}

impl ByteStream for TcpStream {
    type Read = OwnedReadHalf;
    type Write = SharedWrite;

    fn halves(self) -> (OwnedReadHalf, SharedWrite) {
        let (read, write) = self.into_split();
        (read, SharedWrite::new(write))
    }
}

impl StreamWrite for SharedWrite {
    fn direct(&self) -> Option<Arc<dyn DirectSocket>> {
        Some(self.socket())
    }
}

#[cfg(feature = "tls-base")]
impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for tokio_rustls::TlsStream<S> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;

    fn halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

#[cfg(feature = "tls-base")]
impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> StreamWrite
    for tokio::io::WriteHalf<tokio_rustls::TlsStream<S>>
{
}

/// A TCP connection (or TLS over TCP) carrying truflux frames.
#[derive(Debug)]
pub struct TcpTransport<S = TcpStream> {
    stream: S,
    info: PeerInfo,
    max_payload: u32,
}

impl<S: ByteStream> TcpTransport<S> {
    /// Wraps a stream whose addresses are in `info`.
    pub fn over(stream: S, info: PeerInfo, max_payload: u32) -> TcpTransport<S> {
        TcpTransport {
            stream,
            info,
            max_payload,
        }
    }
}

impl TcpTransport {
    /// Wraps a connected stream; `nodelay` sets `TCP_NODELAY`, `max_payload` bounds incoming
    /// frames.
    pub fn new(stream: TcpStream, nodelay: bool, max_payload: u32) -> io::Result<TcpTransport> {
        stream.set_nodelay(nodelay)?;
        let info = PeerInfo::new(stream.local_addr()?, stream.peer_addr()?, TransportKind::Tcp);
        Ok(TcpTransport {
            stream,
            info,
            max_payload,
        })
    }
}

impl<S: ByteStream> Transport for TcpTransport<S> {
    type Reader = TcpReader<S::Read>;
    type Writer = TcpWriter<S::Write>;

    fn info(&self) -> PeerInfo {
        self.info.clone()
    }

    fn split(self) -> (Self::Reader, Self::Writer) {
        let (read, write) = self.stream.halves();
        let reader = TcpReader {
            stream: read,
            codec: FrameCodec::new(self.max_payload),
            pending: scratch::Pending::default(),
        };
        (
            reader,
            TcpWriter {
                stream: write,
                gather: Gather::default(),
            },
        )
    }
}

/// The read half of a [`TcpTransport`].
#[derive(Debug)]
pub struct TcpReader<R = OwnedReadHalf> {
    stream: R,
    codec: FrameCodec,
    pending: scratch::Pending,
}

impl<R: AsyncRead + Send + Unpin + 'static> FrameRead for TcpReader<R> {
    async fn read_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        // Cancel safe: everything read is kept in `self.pending` before the future can be
        // dropped.
        loop {
            let buf = &mut self.pending.buf;
            if let Some(frame) = self.codec.decode(buf)? {
                if buf.is_empty() {
                    // Drained: let the frames keep their memory, hold none ourselves.
                    *buf = BytesMut::new();
                }
                return Ok(Some(frame));
            }
            // An idle peer holds no buffer: memory is taken once data has arrived.
            let codec = &self.codec;
            let read = self
                .pending
                .read_more(&mut self.stream, READ_BUFFER, |filled| codec.frame_len(filled))
                .await?;
            if read == 0 {
                return self.codec.decode_eof(&mut self.pending.buf);
            }
        }
    }

    async fn discard(&mut self) -> io::Result<usize> {
        self.pending.clear();
        scratch::discard(&mut self.stream).await
    }

    fn buffered(&self) -> bool {
        self.pending.holds_any()
    }
}

/// The write half of a [`TcpTransport`]: batches frames into vectored writes.
#[derive(Debug)]
pub struct TcpWriter<W = SharedWrite> {
    stream: W,
    gather: Gather,
}

impl<W: StreamWrite> FrameWrite for TcpWriter<W> {
    async fn write_batch(&mut self, batch: &[Frame]) -> io::Result<()> {
        self.gather.clear();
        for (index, frame) in batch.iter().enumerate() {
            frame.put_header(&mut self.gather.buf);
            if frame.payload.len() <= COALESCE_LIMIT {
                self.gather.buf.extend_from_slice(&frame.payload);
            } else {
                self.gather.by_reference(index);
            }
        }
        self.gather.write_to(&mut self.stream, batch).await?;
        // A no-op on TCP; under TLS, records the socket did not take yet wait in the session
        // until a flush (or the next write) pushes them.
        self.stream.flush().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }

    fn direct(&self) -> Option<Arc<dyn DirectSocket>> {
        self.stream.direct()
    }

    async fn write_tail(&mut self, frames: &[Frame], written: usize) -> io::Result<()> {
        direct::write_rest(&mut self.stream, Layout::Stream, frames, written).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::FutureExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpReader, TcpWriter) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (reader, _) = TcpTransport::new(server, true, 1 << 20).unwrap().split();
        let (_, writer) = TcpTransport::new(client, true, 1 << 20).unwrap().split();
        (reader, writer)
    }

    #[tokio::test]
    async fn an_idle_reader_holds_no_buffer() {
        let (mut reader, mut writer) = pair().await;
        let big = Bytes::from(vec![7u8; 3 * 4096]);
        let frames = [
            Frame::message(1, Bytes::from_static(b"hi")),
            Frame::message(2, big.clone()),
        ];
        writer.write_batch(&frames).await.unwrap();
        assert_eq!(reader.read_frame().await.unwrap().unwrap().id, 1);
        let second = reader.read_frame().await.unwrap().unwrap();
        assert_eq!((second.id, second.payload), (2, big));

        // Nothing more has been sent: waiting for it takes no memory.
        assert!(reader.read_frame().now_or_never().is_none());
        assert_eq!(reader.pending.buf.capacity(), 0);

        writer.write_batch(&frames[..1]).await.unwrap();
        assert_eq!(reader.read_frame().await.unwrap().unwrap().id, 1);
        assert_eq!(reader.pending.buf.capacity(), 0);
    }
}
