//! The WebSocket engine: the upgrade and the transport that carries truflux frames over it.
//!
//! It owns the server side of the upgrade (checking the request, answering `101`, `426` or
//! `400`), the client side (the request, checking the `101`), the framing ([`codec`]), the
//! transport that carries one truflux frame per binary message, and the mapping between truflux
//! close frames and WebSocket close frames. It must not know about servers, peers or protocols:
//! the connection engine drives it through the transport traits like any transport.
//!
//! Close codes travel unchanged: truflux std codes *are* WebSocket close codes. A code that
//! WebSocket forbids on the wire (below 1000, 1004–1006, 1015–2999, 5000 and above) is sent as
//! `POLICY_VIOLATION` (1008).

pub(crate) mod client;
pub mod codec;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::error::Code;
use crate::frame::control::Close;
use crate::frame::{decode_exact, Frame, FrameError, Kind, SECURE_HEADER_LEN};
use crate::transport::direct::{self, DirectSocket, Layout, Written};
use crate::transport::gather::{Gather, COALESCE_LIMIT};
use crate::transport::{scratch, FrameRead, FrameWrite, PeerInfo, Transport};
pub use codec::Role;
use codec::{opcode, Decoder, Incoming};

/// The subprotocol a client may offer in `Sec-WebSocket-Protocol`; the server echoes it.
pub const SUBPROTOCOL: &str = "truflux";

/// Default for [`ConnectionConfig::ws_read_buffer`](crate::ConnectionConfig::ws_read_buffer):
/// 64 KiB, as for TCP peers.
pub const READ_BUFFER: usize = scratch::SCRATCH_LEN;

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
    let accept_key = accept_key(key.as_bytes());
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

/// Completes a server-side upgrade: waits for the HTTP layer to hand over the connection.
pub async fn upgraded(on_upgrade: OnUpgrade) -> io::Result<TokioIo<Upgraded>> {
    let upgraded = on_upgrade.await.map_err(io::Error::other)?;
    Ok(TokioIo::new(upgraded))
}

/// The GUID RFC 6455 §1.3 appends to a client's key before hashing it.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` answer to a `Sec-WebSocket-Key` (RFC 6455 §4.2.2): the base64 of
/// the SHA-1 of the key and the GUID.
pub fn accept_key(key: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::new().chain_update(key).chain_update(ACCEPT_GUID).finalize();
    base64(&digest)
}

/// A fresh `Sec-WebSocket-Key`: 16 random octets, base64 (RFC 6455 §4.1).
fn new_key() -> io::Result<String> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(base64(&nonce))
}

/// Standard base64 with padding (RFC 4648 §4), for the handshake's short values.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let octets = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let bits = u32::from_be_bytes([0, octets[0], octets[1], octets[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(bits >> (18 - 6 * i) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The most octets of a refused upgrade's response body kept for the error.
const REFUSAL_BODY_LIMIT: usize = 4096;

/// The client side of the upgrade (RFC 6455 §4.1): sends a `GET` for `uri` with `headers`
/// (subprotocols, authorization) on `stream`, and checks the `101` answer and its
/// `Sec-WebSocket-Accept`.
///
/// A `401` is [`Error::Unauthorized`](crate::Error::Unauthorized) with the response's text;
/// any other answer, or a wrong accept key, is [`HelloError::Upgrade`](crate::HelloError::Upgrade).
pub async fn client_upgrade<S>(
    stream: S,
    uri: &http::Uri,
    headers: &http::HeaderMap,
) -> Result<TokioIo<Upgraded>, crate::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;

    let failed = |what: String| crate::Error::Hello(crate::error::HelloError::Upgrade(what));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(e.to_string()))?;
    // Drives the HTTP exchange; it ends once the connection is handed over (or fails).
    tokio::spawn(connection.with_upgrades());
    let key = new_key().map_err(|e| failed(e.to_string()))?;
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::get(target)
        .header(header::HOST, authority)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, key.as_str())
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    request
        .headers_mut()
        .extend(headers.iter().map(|(name, value)| (name.clone(), value.clone())));
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        let body = http_body_util::Limited::new(response.into_body(), REFUSAL_BODY_LIMIT)
            .collect()
            .await
            .map(|body| String::from_utf8_lossy(&body.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        return Err(crate::error::AuthError::Rejected(body).into());
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Err(failed(format!("the server answered {status}")));
    }
    let expected = accept_key(key.as_bytes());
    let answered = response.headers().get(header::SEC_WEBSOCKET_ACCEPT);
    if answered.map(HeaderValue::as_bytes) != Some(expected.as_bytes()) {
        return Err(failed("wrong or missing Sec-WebSocket-Accept".into()));
    }
    if !header_has(response.headers(), header::UPGRADE, "websocket") {
        return Err(failed("the answer does not upgrade to websocket".into()));
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| failed(e.to_string()))?;
    Ok(TokioIo::new(upgraded))
}

/// A WebSocket connection carrying truflux frames, one per binary message.
///
/// The framing is [`codec`]'s: a binary message is read straight into one buffer that becomes
/// the truflux frame (a server unmasks it in place), and a frame goes out as the WebSocket
/// header, the truflux header and the payload by reference in one vectored write (a client
/// masks, which copies the payload once). The read half answers pings itself. Over plain TCP,
/// senders may also write through (`transport::direct`), and a ping that arrives while such a
/// write is part done is answered right after it.
pub struct WsTransport {
    stream: TokioIo<Upgraded>,
    info: PeerInfo,
    role: Role,
    max_payload: u32,
    read_buffer: usize,
}

impl WsTransport {
    /// Wraps an upgraded connection: `role` is this end's, `max_payload` bounds incoming
    /// frames (a WebSocket message may carry one such frame, header and tag included), and
    /// `read_buffer` is the most octets read at once while nothing is pending (see
    /// [`ConnectionConfig::ws_read_buffer`](crate::ConnectionConfig::ws_read_buffer)).
    pub fn new(
        stream: TokioIo<Upgraded>,
        info: PeerInfo,
        role: Role,
        max_payload: u32,
        read_buffer: usize,
    ) -> Self {
        WsTransport {
            stream,
            info,
            role,
            max_payload,
            read_buffer,
        }
    }
}

/// The largest WebSocket message a connection accepts: one maximal truflux frame, header and
/// authentication tag included.
pub fn max_message(max_payload: u32) -> usize {
    max_payload as usize + SECURE_HEADER_LEN + crate::frame::SEAL_OVERHEAD as usize
}

impl Transport for WsTransport {
    type Reader = WsReader;
    type Writer = WsWriter;

    fn info(&self) -> PeerInfo {
        self.info.clone()
    }

    fn split(self) -> (WsReader, WsWriter) {
        let (read, write, pending) = match self.stream.into_inner().downcast::<TokioIo<TcpStream>>() {
            // The HTTP layer ran on a plain TCP stream: its own halves, no lock between them.
            Ok(parts) => {
                let (read, write) = parts.io.into_inner().into_split();
                (ReadSide::Tcp(read), WriteSide::Tcp(write), parts.read_buf)
            }
            Err(upgraded) => {
                let (read, write) = tokio::io::split(TokioIo::new(upgraded));
                (ReadSide::Other(read), WriteSide::Other(write), Bytes::new())
            }
        };
        // Over plain TCP senders may write through (see `Writing::try_direct`).
        let direct = matches!(write, WriteSide::Tcp(_));
        let write = Arc::new(tokio::sync::Mutex::new(Writing {
            stream: write,
            gather: Gather::default(),
            masks: (self.role == Role::Client).then(Masks::default),
            torn: false,
            tail_open: false,
            tail_octets: None,
            deferred_pong: None,
        }));
        (
            WsReader {
                stream: read,
                // What the HTTP layer read past the upgrade is the start of the WebSocket stream.
                pending: scratch::Pending::holding(BytesMut::from(&pending[..])),
                decoder: Decoder::new(self.role, max_message(self.max_payload)),
                max_payload: self.max_payload,
                read_buffer: self.read_buffer.clamp(1024, scratch::SCRATCH_LEN),
                write: write.clone(),
            },
            WsWriter { write, direct },
        )
    }
}

/// The read side of the connection under a WebSocket.
enum ReadSide {
    Tcp(OwnedReadHalf),
    Other(ReadHalf<TokioIo<Upgraded>>),
}

/// The write side of the connection under a WebSocket.
enum WriteSide {
    Tcp(OwnedWriteHalf),
    Other(WriteHalf<TokioIo<Upgraded>>),
}

impl AsyncRead for ReadSide {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadSide::Tcp(read) => Pin::new(read).poll_read(cx, buf),
            ReadSide::Other(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteSide {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteSide::Tcp(write) => Pin::new(write).poll_write(cx, buf),
            WriteSide::Other(write) => Pin::new(write).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteSide::Tcp(write) => Pin::new(write).poll_write_vectored(cx, bufs),
            WriteSide::Other(write) => Pin::new(write).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteSide::Tcp(write) => write.is_write_vectored(),
            WriteSide::Other(write) => write.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteSide::Tcp(write) => Pin::new(write).poll_flush(cx),
            WriteSide::Other(write) => Pin::new(write).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteSide::Tcp(write) => Pin::new(write).poll_shutdown(cx),
            WriteSide::Other(write) => Pin::new(write).poll_shutdown(cx),
        }
    }
}

/// The read half of a [`WsTransport`].
pub struct WsReader {
    stream: ReadSide,
    pending: scratch::Pending,
    decoder: Decoder,
    max_payload: u32,
    read_buffer: usize,
    /// Shared with the write half, to answer pings.
    write: Arc<tokio::sync::Mutex<Writing>>,
}

impl FrameRead for WsReader {
    async fn read_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        // Cancel safe for reading: everything read is kept in `self.pending`. A pong cut off by
        // a cancellation leaves the write side torn, and every later write fails rather than
        // continue inside a frame.
        loop {
            let Some(message) = self.decoder.decode(&mut self.pending.buf)? else {
                let decoder = &self.decoder;
                let read = self
                    .pending
                    .read_more(&mut self.stream, self.read_buffer, |filled| {
                        decoder.frame_len(filled)
                    })
                    .await?;
                if read == 0 {
                    return if self.pending.buf.is_empty() {
                        // The TCP connection ended without a close frame.
                        Ok(None)
                    } else {
                        Err(FrameError::Truncated {
                            buffered: self.pending.buf.len(),
                        })
                    };
                }
                continue;
            };
            if self.pending.buf.is_empty() {
                // Drained: let the frames keep their memory, hold none ourselves.
                self.pending.buf = BytesMut::new();
            }
            match message {
                Incoming::Binary(bytes) => return decode_exact(bytes, self.max_payload).map(Some),
                Incoming::Text(_) => {
                    return Err(FrameError::UnsupportedData(
                        "WebSocket text message (truflux is binary)",
                    ))
                }
                Incoming::Ping(payload) => {
                    let mut writing = self.write.lock().await;
                    if writing.tail_open {
                        // A sender's message is part written: the pong follows it.
                        writing.deferred_pong = Some(payload);
                    } else {
                        writing.control(opcode::PONG, &payload).await?;
                    }
                }
                Incoming::Pong(_) => {}
                Incoming::Close(close) => {
                    let close = match close {
                        Some((code, reason)) => Close::new(Code(code), &reason),
                        // 1005: the peer's close frame carried no code.
                        None => Close::new(Code(1005), ""),
                    };
                    return Ok(Some(close.to_frame(Kind::Close, 0)));
                }
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

/// Masking keys for a client's frames, drawn from the operating system's generator in blocks.
#[derive(Default)]
struct Masks {
    pool: Vec<u8>,
}

impl Masks {
    fn next(&mut self) -> io::Result<[u8; 4]> {
        if self.pool.len() < 4 {
            self.pool.resize(256, 0);
            getrandom::fill(&mut self.pool).map_err(|e| io::Error::other(e.to_string()))?;
        }
        let at = self.pool.len() - 4;
        let key = [
            self.pool[at],
            self.pool[at + 1],
            self.pool[at + 2],
            self.pool[at + 3],
        ];
        self.pool.truncate(at);
        Ok(key)
    }
}

/// The write side, shared by the write half and the read half (pongs).
struct Writing {
    stream: WriteSide,
    /// WebSocket and truflux headers, small or masked payloads, large payloads by reference.
    gather: Gather,
    /// A client's masking keys; `None` on a server.
    masks: Option<Masks>,
    /// A write was abandoned part way (its future dropped): the stream may end inside a frame,
    /// so nothing more may be written to it.
    torn: bool,
    /// A sender's write through left the stream inside a message; only the rest of it
    /// ([`Writing::rest`]) may follow.
    tail_open: bool,
    /// A client's rest, as masked: its keys were drawn once, so the rest is kept as written.
    tail_octets: Option<BytesMut>,
    /// A ping that arrived while `tail_open`: answered right after the tail (a pong answers the
    /// latest ping only, RFC 6455 §5.5.3).
    deferred_pong: Option<Bytes>,
}

impl Writing {
    /// Writes what was gathered and flushes, unless an earlier write was abandoned part way.
    async fn send(&mut self, batch: &[Frame]) -> io::Result<()> {
        if self.torn || self.tail_open {
            return Err(io::Error::other("an earlier write stopped inside a frame"));
        }
        // Cleared only if this write completes: dropped before that, the stream is torn.
        self.torn = true;
        self.gather.write_to(&mut self.stream, batch).await?;
        self.stream.flush().await?;
        self.torn = false;
        Ok(())
    }

    /// Appends one WebSocket frame of `len` payload octets that `fill` appends, masked if we
    /// are a client.
    fn put(&mut self, opcode: u8, len: usize, fill: impl FnOnce(&mut BytesMut)) -> io::Result<()> {
        let mask = self.masks.as_mut().map(Masks::next).transpose()?;
        codec::put_header(&mut self.gather.buf, true, opcode, len, mask);
        let at = self.gather.buf.len();
        fill(&mut self.gather.buf);
        debug_assert_eq!(self.gather.buf.len() - at, len);
        if let Some(mask) = mask {
            codec::apply_mask(&mut self.gather.buf[at..], mask);
        }
        Ok(())
    }

    /// A sender's write through, while nobody else writes: what the socket takes now of
    /// `frames`. A server passes payloads by reference and its rest is laid out again; a client
    /// masks a copy with fresh keys and keeps the rest of that copy.
    fn try_direct(&mut self, frames: &[Frame]) -> io::Result<Written> {
        let busy = || io::Error::from(io::ErrorKind::WouldBlock);
        if self.torn || self.tail_open {
            return Err(busy());
        }
        if self.masks.is_none() {
            let WriteSide::Tcp(half) = &self.stream else {
                return Err(busy());
            };
            let written = direct::try_write_laid_out(half, Layout::WsServer, frames)?;
            self.tail_open = !written.all;
            return Ok(written);
        }
        self.gather.clear();
        for frame in frames {
            self.put(opcode::BINARY, frame.wire_len(), |buf| {
                frame.put_header(buf);
                buf.put_slice(&frame.payload);
            })?;
        }
        let WriteSide::Tcp(half) = &self.stream else {
            return Err(busy());
        };
        let octets = match half.try_write(&self.gather.buf) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
            written => written?,
        };
        let written = Written {
            octets,
            all: octets == self.gather.buf.len(),
        };
        if !written.all {
            // Masked already: nothing of it may be masked again.
            self.tail_octets = Some(self.gather.buf.split_off(octets));
            self.tail_open = true;
        }
        self.gather.release();
        Ok(written)
    }

    /// Writes what a sender's write through left of `frames` (all but the first `written`
    /// octets), then the pong that waited for it.
    async fn rest(&mut self, frames: &[Frame], written: usize) -> io::Result<()> {
        if self.torn {
            return Err(io::Error::other("an earlier write stopped inside a frame"));
        }
        self.tail_open = false;
        let kept = self.tail_octets.take();
        if kept.is_none() && written == 0 {
            // Nothing of them went out (the write side was busy): as the writer would.
            self.batch(frames).await?;
        } else {
            // Cleared only if this write completes, as in `send`.
            self.torn = true;
            match kept {
                Some(octets) => self.stream.write_all(&octets).await?,
                None => direct::write_rest(&mut self.stream, Layout::WsServer, frames, written).await?,
            }
            self.stream.flush().await?;
            self.torn = false;
        }
        match self.deferred_pong.take() {
            Some(payload) => self.control(opcode::PONG, &payload).await,
            None => Ok(()),
        }
    }

    /// Writes one control frame (close, ping, pong) and flushes.
    async fn control(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.gather.clear();
        self.put(opcode, payload.len(), |buf| buf.put_slice(payload))?;
        self.send(&[]).await
    }

    async fn batch(&mut self, batch: &[Frame]) -> io::Result<()> {
        self.gather.clear();
        // A client masks every payload, which copies it; a server may pass large ones by
        // reference.
        let by_reference = self.masks.is_none() && self.stream.is_write_vectored();
        for (index, frame) in batch.iter().enumerate() {
            if frame.kind == Kind::Close && frame.tag.is_none() {
                let close = Close::parse(Kind::Close, &frame.payload)
                    .unwrap_or_else(|_| Close::new(Code::NORMAL, ""));
                let payload = codec::close_payload(wire_close_code(close.code), &close.reason);
                self.put(opcode::CLOSE, payload.len(), |buf| buf.put_slice(&payload))?;
            } else if by_reference && frame.payload.len() > COALESCE_LIMIT {
                codec::put_header(&mut self.gather.buf, true, opcode::BINARY, frame.wire_len(), None);
                frame.put_header(&mut self.gather.buf);
                self.gather.by_reference(index);
            } else {
                self.put(opcode::BINARY, frame.wire_len(), |buf| {
                    frame.put_header(buf);
                    buf.put_slice(&frame.payload);
                })?;
            }
        }
        self.send(batch).await
    }
}

/// The write half of a [`WsTransport`].
pub struct WsWriter {
    write: Arc<tokio::sync::Mutex<Writing>>,
    /// Senders may write through (see [`FrameWrite::direct`]).
    direct: bool,
}

/// A WebSocket over plain TCP, for senders: they write while nobody holds the write side (the
/// writer's batch or a pong would be cut), and never inside a message.
impl DirectSocket for tokio::sync::Mutex<Writing> {
    fn try_write_frames(&self, frames: &[Frame]) -> io::Result<Written> {
        let mut writing = self
            .try_lock()
            .map_err(|_| io::Error::from(io::ErrorKind::WouldBlock))?;
        writing.try_direct(frames)
    }
}

/// A close code that WebSocket allows on the wire, or `POLICY_VIOLATION`.
fn wire_close_code(code: Code) -> u16 {
    if codec::is_wire_close_code(code.0) {
        code.0
    } else {
        Code::POLICY_VIOLATION.0
    }
}

impl FrameWrite for WsWriter {
    async fn write_batch(&mut self, batch: &[Frame]) -> io::Result<()> {
        self.write.lock().await.batch(batch).await
    }

    fn direct(&self) -> Option<Arc<dyn DirectSocket>> {
        self.direct.then(|| self.write.clone() as Arc<dyn DirectSocket>)
    }

    async fn write_tail(&mut self, frames: &[Frame], written: usize) -> io::Result<()> {
        self.write.lock().await.rest(frames, written).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.write.lock().await.stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, encoded) in vectors {
            assert_eq!(base64(input.as_bytes()), encoded, "{input:?}");
        }
    }

    #[test]
    fn accept_key_matches_rfc_6455() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn a_write_abandoned_inside_a_frame_refuses_every_later_write() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        // The peer never reads: a large enough frame cannot be written whole.
        let (_peer, _) = listener.accept().await.unwrap();
        let (_, write) = stream.into_split();
        let mut writing = Writing {
            stream: WriteSide::Tcp(write),
            gather: Gather::default(),
            masks: None,
            torn: false,
            tail_open: false,
            tail_octets: None,
            deferred_pong: None,
        };
        let big = [Frame::message(1, Bytes::from(vec![0u8; 64 << 20]))];
        // Polled once: it writes what the socket takes, then waits; dropped there.
        let cut = futures_util::FutureExt::now_or_never(writing.batch(&big));
        assert!(
            cut.is_none(),
            "64 MiB cannot be written to a peer that never reads"
        );
        // Refused at once, not queued behind the torn frame.
        let pong = futures_util::FutureExt::now_or_never(writing.control(opcode::PONG, b"late"));
        assert!(
            matches!(pong, Some(Err(_))),
            "a pong after a torn write must not be sent"
        );
    }

    #[test]
    fn client_keys_are_16_random_octets() {
        let (first, second) = (new_key().unwrap(), new_key().unwrap());
        assert_eq!(first.len(), 24);
        assert_ne!(first, second);
    }
}
