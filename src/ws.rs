//! The WebSocket engine: everything that touches tungstenite lives in this file.
//!
//! It owns the server side of the upgrade (checking the request, answering `101`, `426` or
//! `400`), the WebSocket configuration (buffer sizes, message limits), the transport that
//! carries one truflux frame per binary message, and the mapping between truflux close frames
//! and WebSocket close frames. It must not know about servers, peers or protocols: the
//! connection engine drives it through [`FrameRead`] and [`FrameWrite`] like any transport.
//!
//! Close codes travel unchanged: truflux std codes *are* WebSocket close codes. A code that
//! WebSocket forbids on the wire (below 1000, 1004–1006, 1015–2999, 5000 and above) is sent as
//! `POLICY_VIOLATION` (1008).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::frame::control::Close;
use crate::frame::{decode_exact, Frame, FrameError, Kind, SECURE_HEADER_LEN};
use crate::transport::{scratch, FrameRead, FrameWrite, PeerInfo, Transport};
use crate::Code;

pub use tokio_tungstenite;

/// The subprotocol a client may offer in `Sec-WebSocket-Protocol`; the server echoes it.
pub const SUBPROTOCOL: &str = "truflux";

/// Default read buffer per WebSocket peer: 4 KiB (tungstenite's default is 128 KiB, allocated and
/// filled for every connection). Large messages still arrive whole, and [`ReadAhead`] still
/// reads up to [`READ_AHEAD`] per system call. See
/// [`ConnectionConfig::ws_read_buffer`](crate::ConnectionConfig::ws_read_buffer).
pub const READ_BUFFER: usize = 4 * 1024;
/// Most octets [`ReadAhead`] reads from the socket in one system call.
pub const READ_AHEAD: usize = crate::transport::scratch::SCRATCH_LEN;
/// Bytes gathered before the WebSocket layer writes to the socket; a flush ends every batch.
pub const WRITE_BUFFER: usize = 8 * 1024;
/// Payloads larger than this are sent as two WebSocket fragments (the truflux header, then the
/// payload) instead of one message, which saves copying the payload next to its header.
pub const FRAGMENT_ABOVE: usize = 16 * 1024;

/// The WebSocket configuration for a connection: the read buffer of `config`, a small write
/// buffer, and message and frame limits that admit exactly one maximal truflux frame (header
/// and tag included).
pub fn config(config: &crate::ConnectionConfig) -> WebSocketConfig {
    let max_message = config.max_payload as usize + SECURE_HEADER_LEN + crate::frame::SEAL_OVERHEAD as usize;
    WebSocketConfig::default()
        .read_buffer_size(config.ws_read_buffer.max(1024))
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Why an HTTP request was not upgraded: the response to send instead.
pub type Refusal = Box<Response<Full<Bytes>>>;

fn header_has(headers: &http::HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
}

/// Whether `request` asks for a WebSocket upgrade (`Connection: upgrade`, `Upgrade: websocket`).
pub fn is_upgrade<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    header_has(headers, header::CONNECTION, "upgrade") && header_has(headers, header::UPGRADE, "websocket")
}

/// Checks a WebSocket upgrade request (RFC 6455 §4.2.1) and prepares the answer.
///
/// Returns the `101 Switching Protocols` response to send and the pending upgrade, or the
/// refusal: `426 Upgrade Required` for a request that is not a WebSocket upgrade (the path
/// speaks only WebSocket), `400 Bad Request` for a malformed one.
pub fn accept<B>(request: &mut Request<B>) -> Result<(Response<Full<Bytes>>, OnUpgrade), Refusal> {
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| header_has(headers, name, token);
    if !is_upgrade(request) {
        return Err(refusal(
            StatusCode::UPGRADE_REQUIRED,
            "this path speaks WebSocket only\n",
        ));
    }
    if request.method() != http::Method::GET {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade must be a GET\n",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = refusal(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only\n");
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(response);
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(refusal(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n"));
    };
    let accept_key = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let offers_ours = has_token(header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL);
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return Err(refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the HTTP server does not support upgrades\n",
        ));
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let out = response.headers_mut();
    out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept_key) {
        out.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    if offers_ours {
        out.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    Ok((response, on_upgrade))
}

fn refusal(status: StatusCode, text: &'static str) -> Refusal {
    let mut response = Box::new(Response::new(Full::new(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    if status == StatusCode::UPGRADE_REQUIRED {
        response
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    response
}

/// Completes a server-side upgrade: waits for the HTTP layer to hand over the connection and
/// wraps it as a WebSocket with `config`, reading through [`ReadAhead`].
pub async fn upgraded(
    on_upgrade: OnUpgrade,
    config: WebSocketConfig,
) -> io::Result<WebSocketStream<ReadAhead<TokioIo<Upgraded>>>> {
    let upgraded = on_upgrade.await.map_err(io::Error::other)?;
    let io = ReadAhead::new(TokioIo::new(upgraded));
    Ok(WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await)
}

/// The socket under a WebSocket: reads up to [`READ_AHEAD`] octets per system call whatever
/// the WebSocket layer asks for, and keeps what it did not ask for yet.
///
/// tungstenite reads at most its read buffer size per call (4 KiB here, to keep idle peers
/// small), so a 1 MiB message would take 256 system calls. Through `ReadAhead` it takes 16, at
/// the cost of copying what is read ahead once more. What was read ahead is held only until the
/// WebSocket layer takes it: an idle peer holds nothing. Writes pass straight through.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    ahead: BytesMut,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> ReadAhead<S> {
        ReadAhead {
            inner,
            ahead: BytesMut::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.ahead.is_empty() {
            let n = this.ahead.len().min(buf.remaining());
            buf.put_slice(&this.ahead[..n]);
            this.ahead.advance(n);
            if this.ahead.is_empty() {
                this.ahead = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_AHEAD {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let ahead = &mut this.ahead;
        scratch::poll_read(&mut this.inner, cx, READ_AHEAD, |filled| {
            let n = filled.len().min(buf.remaining());
            buf.put_slice(&filled[..n]);
            ahead.extend_from_slice(&filled[n..]);
        })
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A WebSocket connection carrying truflux frames, one per binary message.
pub struct WsTransport<S> {
    stream: WebSocketStream<S>,
    info: PeerInfo,
    max_payload: u32,
}

impl<S> WsTransport<S> {
    /// Wraps an open WebSocket.
    pub fn new(stream: WebSocketStream<S>, info: PeerInfo, max_payload: u32) -> Self {
        WsTransport {
            stream,
            info,
            max_payload,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for WsTransport<S> {
    type Reader = WsReader<S>;
    type Writer = WsWriter<S>;

    fn info(&self) -> PeerInfo {
        self.info.clone()
    }

    fn split(self) -> (WsReader<S>, WsWriter<S>) {
        let (sink, stream) = self.stream.split();
        (
            WsReader {
                stream,
                max_payload: self.max_payload,
            },
            WsWriter { sink },
        )
    }
}

/// The read half of a [`WsTransport`].
pub struct WsReader<S> {
    stream: SplitStream<WebSocketStream<S>>,
    max_payload: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> FrameRead for WsReader<S> {
    async fn read_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            let message = match self.stream.next().await {
                None => return Ok(None),
                Some(Ok(message)) => message,
                Some(Err(error)) => return read_error(error),
            };
            return match message {
                Message::Binary(bytes) => decode_exact(bytes, self.max_payload).map(Some),
                Message::Text(_) => Err(FrameError::UnsupportedData(
                    "WebSocket text message (truflux is binary)",
                )),
                // tungstenite answers pings itself; pongs carry nothing for us.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Close(frame) => {
                    let close = match frame {
                        Some(frame) => Close::new(Code(u16::from(frame.code)), frame.reason.as_str()),
                        // 1005: the peer's close frame carried no code.
                        None => Close::new(Code(1005), ""),
                    };
                    Ok(Some(close.to_frame(Kind::Close, 0)))
                }
            };
        }
    }
}

fn read_error(error: tungstenite::Error) -> Result<Option<Frame>, FrameError> {
    use tungstenite::error::{CapacityError, ProtocolError};
    match error {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => Ok(None),
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ok(None),
        tungstenite::Error::Io(error) => Err(FrameError::Io(error)),
        tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            Err(FrameError::PayloadTooLarge {
                len: size as u64,
                max: u32::try_from(max_size).unwrap_or(u32::MAX),
            })
        }
        other => Err(FrameError::WebSocket(other.to_string())),
    }
}

/// The write half of a [`WsTransport`].
pub struct WsWriter<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
}

/// A close code that WebSocket allows on the wire, or `POLICY_VIOLATION`.
fn wire_close_code(code: Code) -> u16 {
    match code.0 {
        1000..=1003 | 1007..=1014 | 3000..=4999 => code.0,
        _ => Code::POLICY_VIOLATION.0,
    }
}

fn to_message(frame: &Frame) -> Message {
    if frame.kind == Kind::Close && frame.tag.is_none() {
        let close =
            Close::parse(Kind::Close, &frame.payload).unwrap_or_else(|_| Close::new(Code::NORMAL, ""));
        let code = CloseCode::from(wire_close_code(close.code));
        return Message::Close(Some(CloseFrame {
            code,
            reason: close.reason.into(),
        }));
    }
    let mut buf = BytesMut::with_capacity(frame.wire_len());
    frame.put_header(&mut buf);
    buf.put_slice(&frame.payload);
    Message::Binary(buf.freeze())
}

fn write_error(error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(error) => error,
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> FrameWrite for WsWriter<S> {
    async fn write_batch(&mut self, batch: &[Frame]) -> io::Result<()> {
        for frame in batch {
            if frame.kind != Kind::Close && frame.payload.len() > FRAGMENT_ABOVE {
                // One WebSocket message in two fragments; the receiver reassembles the frame.
                let mut head = BytesMut::with_capacity(frame.header_len());
                frame.put_header(&mut head);
                let first = WsFrame::message(head.freeze(), OpCode::Data(Data::Binary), false);
                let rest = WsFrame::message(frame.payload.clone(), OpCode::Data(Data::Continue), true);
                self.sink.feed(Message::Frame(first)).await.map_err(write_error)?;
                self.sink.feed(Message::Frame(rest)).await.map_err(write_error)?;
                continue;
            }
            self.sink.feed(to_message(frame)).await.map_err(write_error)?;
        }
        self.sink.flush().await.map_err(write_error)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self.sink.close().await {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => Ok(()),
            Err(error) => Err(write_error(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::ready;
    use tokio::io::AsyncReadExt;

    /// A stream that hands out as much of `data` as each read asks for, and counts the reads.
    struct Counted {
        data: Bytes,
        reads: usize,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            let n = self.data.len().min(buf.remaining());
            buf.put_slice(&self.data.split_to(n));
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn small_reads_take_large_reads_from_the_socket_and_lose_nothing() {
        let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let mut stream = ReadAhead::new(Counted {
            data: Bytes::from(data.clone()),
            reads: 0,
        });
        let mut out = Vec::new();
        let mut chunk = [0u8; READ_BUFFER];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(out, data);
        // 1 MiB in 64 KiB reads, plus the one that found the end.
        assert_eq!(stream.inner.reads, 1024 / 64 + 1);
        assert_eq!(stream.ahead.capacity(), 0, "nothing is held once it is taken");
    }

    #[tokio::test]
    async fn a_read_ahead_inside_another_still_reads_everything() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let inner = ReadAhead::new(Counted {
            data: Bytes::from(data.clone()),
            reads: 0,
        });
        let mut stream = ReadAhead::new(Shrinking(inner));
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
    }

    /// Passes reads on with a smaller buffer, so the `ReadAhead` inside wants the scratch too.
    struct Shrinking(ReadAhead<Counted>);

    impl AsyncRead for Shrinking {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let mut small = [0u8; 1000];
            let mut inner = ReadBuf::new(&mut small);
            ready!(Pin::new(&mut self.0).poll_read(cx, &mut inner))?;
            let n = inner.filled().len().min(buf.remaining());
            buf.put_slice(&inner.filled()[..n]);
            assert_eq!(n, inner.filled().len(), "the test reads with room to spare");
            Poll::Ready(Ok(()))
        }
    }
}
