//! One live peer: the [`Peer`] handle and the task that owns its transport.
//!
//! This module owns a connection from the end of the hello exchange to its close: the bounded
//! outbound queue, the batching writer, the reading loop that hands messages to the protocol,
//! the close handshake and forced closes. It must not know about listeners, the server's peer
//! table or any registry's rules; those reach it through [`Hooks`] and [`Protocol`].
//!
//! Each connection is one task running two loops side by side:
//!
//! * the read loop: frame → control handling or [`Dispatch`](crate::Dispatch) → handler;
//! * the write loop: queue → batch of up to `write_batch` frames → one vectored write.
//!
//! A graceful close travels through the queue as the close frame itself, so everything queued
//! before it is written first.
//! A forced close (a call to `close_now`, a fatal error, a slow consumer) cancels both loops at
//! once; a close frame is still sent if the stream is at a frame boundary.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use crate::config::ConnectionConfig;
use crate::frame::control::Close;
use crate::frame::{Frame, Kind};
use crate::protocol::{BoxFuture, Message, Protocol};
use crate::server::Hub;
use crate::transport::{FrameRead, FrameWrite, PeerInfo, TransportKind};
use crate::{CloseInfo, Code, Error, Initiator, Session};

/// Identifies a peer within one server (or one client) for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}

/// Lifecycle callbacks a connection reports to its owner (the server or the client).
pub(crate) trait Hooks: Send + Sync + 'static {
    /// Runs before the first frame is read; messages sent here precede every reply.
    fn connected(&self, peer: &Peer) -> BoxFuture<'static, ()>;
    /// A non-fatal or fatal error on this connection.
    fn error(&self, peer: &Peer, error: &Error);
    /// The connection is over; called exactly once.
    fn closed(&self, peer: &Peer, info: &CloseInfo);
}

struct Shared {
    id: PeerId,
    info: PeerInfo,
    config: ConnectionConfig,
    /// The outbound queue. A [`Kind::Close`] frame in it is a graceful close: the writer writes
    /// everything before it, then it, then ends the write direction.
    tx: mpsc::Sender<Frame>,
    session: Session,
    /// Set once no more frames may be queued (a close was requested or the connection ended).
    closing: AtomicBool,
    /// How the connection ended or is ending: the first cause recorded wins.
    end: Mutex<Option<CloseInfo>>,
    /// Cancelled to stop both loops at once (forced close, fatal error, end of either loop).
    stop: CancellationToken,
    /// Cancelled when the peer's close frame arrived and must be answered.
    peer_closed: CancellationToken,
    /// Becomes `Some` when the connection task has finished.
    finished: watch::Sender<Option<CloseInfo>>,
    server: Option<Weak<Hub>>,
}

/// A handle to one live connection: send to it, read its session, close it.
///
/// Cheap to clone; every clone refers to the same connection. A server's handlers receive the
/// peer that sent the message; a [`Client`](crate::Client) dereferences to its peer.
#[derive(Clone)]
pub struct Peer {
    shared: Arc<Shared>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.shared.id)
            .field("info", &self.shared.info)
            .finish()
    }
}

impl Peer {
    /// This peer's id.
    pub fn id(&self) -> PeerId {
        self.shared.id
    }

    /// Local and remote address, and the transport.
    pub fn info(&self) -> &PeerInfo {
        &self.shared.info
    }

    /// Whether the peer is connected over WebSocket.
    pub fn is_websocket(&self) -> bool {
        self.shared.info.transport == TransportKind::WebSocket
    }

    /// The peer's typed session store.
    pub fn session(&self) -> &Session {
        &self.shared.session
    }

    /// The server this peer is connected to, when the peer was accepted by one.
    pub fn server(&self) -> Option<crate::Server> {
        self.shared
            .server
            .as_ref()?
            .upgrade()
            .map(crate::Server::from_hub)
    }

    /// The largest payload this connection sends or accepts.
    pub fn max_payload(&self) -> u32 {
        self.shared.config.max_payload
    }

    /// Queues an application message, waiting while the outbound queue is full.
    ///
    /// `Ok` means queued, not delivered. Fails with [`Error::Frame`] if the id or the payload
    /// size breaks the wire's limits, and with [`Error::Closed`] once the connection is closing.
    pub async fn send(&self, message: Message) -> Result<(), Error> {
        self.send_frame(Frame::message(message.id, message.payload)).await
    }

    /// Queues an application message with `id` and `payload`; see [`Peer::send`].
    pub async fn send_raw(&self, id: u32, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.send_frame(Frame::message(id, payload.into())).await
    }

    /// Queues an application message without waiting; fails with [`Error::QueueFull`] when the
    /// queue is full.
    pub fn try_send(&self, message: Message) -> Result<(), Error> {
        let frame = Frame::message(message.id, message.payload);
        frame.check(self.shared.config.max_payload)?;
        self.try_enqueue(frame)
    }

    pub(crate) async fn send_frame(&self, frame: Frame) -> Result<(), Error> {
        frame.check(self.shared.config.max_payload)?;
        self.enqueue(frame).await
    }

    /// Queues a checked frame, waiting for space.
    pub(crate) async fn enqueue(&self, frame: Frame) -> Result<(), Error> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        self.shared.tx.send(frame).await.map_err(|_| self.closed_error())
    }

    /// Queues a checked frame without waiting.
    pub(crate) fn try_enqueue(&self, frame: Frame) -> Result<(), Error> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        self.shared.tx.try_send(frame).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => Error::QueueFull,
            mpsc::error::TrySendError::Closed(_) => self.closed_error(),
        })
    }

    fn closed_error(&self) -> Error {
        let info = self.end_info().unwrap_or_else(|| CloseInfo {
            code: Code::ABNORMAL,
            reason: "connection ended".into(),
            initiator: Initiator::Local,
        });
        Error::Closed(info)
    }

    /// Records the first cause of the end; later causes are ignored.
    fn record_end(&self, code: Code, reason: impl Into<String>, initiator: Initiator) {
        let mut end = self.shared.end.lock().unwrap_or_else(|p| p.into_inner());
        if end.is_none() {
            *end = Some(CloseInfo {
                code,
                reason: reason.into(),
                initiator,
            });
        }
    }

    fn end_info(&self) -> Option<CloseInfo> {
        self.shared.end.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Closes gracefully: frames queued before this call are written, then a close frame with
    /// `code` and `reason`; waits for the peer's answering close (at most `close_timeout`) and
    /// returns how the connection ended. Calling it again, or on a closed peer, just waits.
    pub async fn close(&self, code: Code, reason: &str) -> CloseInfo {
        self.begin_close(code, reason).await;
        self.closed().await
    }

    async fn begin_close(&self, code: Code, reason: &str) {
        if self.shared.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let close = Close::new(code, reason);
        self.record_end(code, close.reason.clone(), Initiator::Local);
        let queued = tokio::time::timeout(
            self.shared.config.close_timeout,
            self.shared.tx.send(close.to_frame(Kind::Close, 0)),
        );
        if !matches!(queued.await, Ok(Ok(()))) {
            self.shared.stop.cancel();
        }
    }

    /// Closes at once: queued frames are discarded, a close frame is sent if the stream is at a
    /// frame boundary, and the connection is dropped. Does not wait.
    pub fn close_now(&self, code: Code, reason: &str) {
        self.shared.closing.store(true, Ordering::Release);
        self.record_end(code, Close::new(code, reason).reason, Initiator::Local);
        self.shared.stop.cancel();
    }

    /// Waits until the connection has ended and returns how.
    pub async fn closed(&self) -> CloseInfo {
        let mut finished = self.shared.finished.subscribe();
        let result = finished.wait_for(Option::is_some).await.map(|info| info.clone());
        match result {
            Ok(Some(info)) => info,
            // The sender lives in `Shared`, which `self` keeps alive: unreachable in practice.
            _ => self.closed_error_info(),
        }
    }

    fn closed_error_info(&self) -> CloseInfo {
        match self.closed_error() {
            Error::Closed(info) => info,
            _ => CloseInfo {
                code: Code::ABNORMAL,
                reason: String::new(),
                initiator: Initiator::Local,
            },
        }
    }

    /// Whether the connection has ended or is closing.
    pub fn is_closed(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }
}

/// A peer and the queue receiver its connection task will drain.
pub(crate) struct NewPeer {
    pub(crate) peer: Peer,
    rx: mpsc::Receiver<Frame>,
}

pub(crate) fn new_peer(
    id: PeerId,
    info: PeerInfo,
    config: ConnectionConfig,
    server: Option<Weak<Hub>>,
) -> NewPeer {
    let (tx, rx) = mpsc::channel(config.outbound_queue.max(1));
    let shared = Shared {
        id,
        info,
        config,
        tx,
        session: Session::default(),
        closing: AtomicBool::new(false),
        end: Mutex::new(None),
        stop: CancellationToken::new(),
        peer_closed: CancellationToken::new(),
        finished: watch::channel(None).0,
        server,
    };
    NewPeer {
        peer: Peer {
            shared: Arc::new(shared),
        },
        rx,
    }
}

/// Runs a connection to its end: both loops, then the close hook.
pub(crate) async fn run<R: FrameRead, W: FrameWrite>(
    new: NewPeer,
    reader: R,
    writer: W,
    protocol: Arc<dyn Protocol>,
    hooks: Arc<dyn Hooks>,
) {
    let NewPeer { peer, rx } = new;
    let span = tracing::debug_span!("connection", peer = %peer.id(), remote = %peer.info().remote);
    async {
        debug!("open");
        let reading = async {
            let connected = hooks.connected(&peer);
            tokio::select! {
                biased;
                _ = peer.shared.stop.cancelled() => {}
                _ = connected => read_loop(&peer, reader, protocol.as_ref(), hooks.as_ref()).await,
            }
            peer.shared.stop.cancel();
        };
        let writing = async {
            write_loop(&peer, writer, rx, hooks.as_ref()).await;
            peer.shared.stop.cancel();
        };
        tokio::join!(reading, writing);

        peer.shared.closing.store(true, Ordering::Release);
        peer.record_end(Code::ABNORMAL, "connection ended", Initiator::Local);
        let info = peer.closed_error_info();
        debug!(code = %info.code, "closed");
        peer.shared.finished.send_replace(Some(info.clone()));
        hooks.closed(&peer, &info);
    }
    .instrument(span)
    .await
}

/// Ends the connection because of a fatal error found locally.
fn fail(peer: &Peer, hooks: &dyn Hooks, error: Error) {
    peer.record_end(
        error.code(),
        Close::new(error.code(), error.to_string()).reason,
        Initiator::Local,
    );
    peer.shared.closing.store(true, Ordering::Release);
    hooks.error(peer, &error);
    peer.shared.stop.cancel();
}

async fn read_loop<R: FrameRead>(peer: &Peer, mut reader: R, protocol: &dyn Protocol, hooks: &dyn Hooks) {
    let mut dispatch = protocol.open(peer);
    let stop = &peer.shared.stop;
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            frame = reader.read_frame() => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                peer.record_end(
                    Code::ABNORMAL,
                    "connection lost without a close frame",
                    Initiator::Remote,
                );
                return;
            }
            Err(error) => {
                let error = Error::Frame(error);
                if error.code() == Code::ABNORMAL {
                    peer.record_end(Code::ABNORMAL, error.to_string(), Initiator::Remote);
                    return;
                }
                return fail(peer, hooks, error);
            }
        };
        if frame.tag.is_some() {
            let error = Error::Handshake("protected frame on a connection without security".into());
            return fail(peer, hooks, error);
        }
        match frame.kind {
            Kind::Message => {
                let message = Message {
                    id: frame.id,
                    payload: frame.payload,
                };
                let result = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    result = dispatch.dispatch(peer, message) => result,
                };
                if let Err(error) = result {
                    if error.peer_fault {
                        let report =
                            Close::new(error.code, error.message.clone()).to_frame(Kind::Error, frame.id);
                        // Waiting here applies backpressure to a peer that provokes many errors.
                        let _ = tokio::select! {
                            biased;
                            _ = stop.cancelled() => return,
                            sent = peer.enqueue(report) => sent,
                        };
                    }
                    hooks.error(peer, &Error::Protocol(error));
                }
            }
            Kind::Ping => {
                let pong = Frame {
                    kind: Kind::Pong,
                    id: frame.id,
                    tag: None,
                    payload: frame.payload,
                };
                let _ = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    sent = peer.enqueue(pong) => sent,
                };
            }
            Kind::Pong => {}
            Kind::Error => match Close::parse(Kind::Error, &frame.payload) {
                Ok(report) => {
                    let error = Error::Remote {
                        code: report.code,
                        message: report.reason,
                        id: frame.id,
                    };
                    hooks.error(peer, &error);
                }
                Err(error) => return fail(peer, hooks, Error::Frame(error)),
            },
            Kind::Close => {
                let close = Close::parse(Kind::Close, &frame.payload)
                    .unwrap_or_else(|_| Close::new(Code::PROTOCOL_ERROR, "malformed close frame"));
                peer.record_end(close.code, close.reason, Initiator::Remote);
                peer.shared.closing.store(true, Ordering::Release);
                peer.shared.peer_closed.cancel();
                return;
            }
            Kind::Hello => {
                return fail(
                    peer,
                    hooks,
                    Error::Handshake("hello after the connection opened".into()),
                );
            }
        }
    }
}

async fn write_loop<W: FrameWrite>(
    peer: &Peer,
    mut writer: W,
    mut rx: mpsc::Receiver<Frame>,
    hooks: &dyn Hooks,
) {
    let shared = &peer.shared;
    let limit = shared.config.write_batch.max(1);
    // Grows to the batch sizes actually seen: an idle peer keeps no 64-frame buffer.
    let mut batch: Vec<Frame> = Vec::new();
    loop {
        let received = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => {
                // Forced: the stream is at a frame boundary here, so the peer can be told why.
                write_close(peer, &mut writer).await;
                return;
            }
            _ = shared.peer_closed.cancelled() => {
                write_close(peer, &mut writer).await;
                return;
            }
            received = rx.recv_many(&mut batch, limit) => received,
        };
        if received == 0 {
            return;
        }
        // A close frame ends the batch and the connection; nothing is queued after it.
        let close = batch.iter().position(|frame| frame.kind == Kind::Close);
        let end = close.map_or(batch.len(), |at| at + 1);
        let written = tokio::select! {
            biased;
            // Cancelled mid-write: the stream may be inside a frame, so no close frame.
            _ = shared.stop.cancelled() => return,
            written = writer.write_batch(&batch[..end]) => written,
        };
        batch.clear();
        if let Err(error) = written {
            peer.record_end(
                Code::ABNORMAL,
                format!("write failed: {error}"),
                Initiator::Remote,
            );
            hooks.error(peer, &Error::Io(error));
            return;
        }
        if close.is_some() {
            rx.close();
            let _ = tokio::time::timeout(shared.config.close_timeout, writer.shutdown()).await;
            // Wait for the peer's answering close (or its disconnect), bounded.
            tokio::select! {
                _ = shared.peer_closed.cancelled() => {}
                _ = shared.stop.cancelled() => {}
                _ = tokio::time::sleep(shared.config.close_timeout) => {}
            }
            return;
        }
    }
}

/// Writes the close frame for the recorded end and shuts the write direction, bounded by
/// `close_timeout`.
async fn write_close<W: FrameWrite>(peer: &Peer, writer: &mut W) {
    let Some(info) = peer.end_info() else { return };
    if info.code == Code::ABNORMAL {
        // Never sent on the wire: the connection is already gone.
        return;
    }
    let frame = Close::new(info.code, info.reason).to_frame(Kind::Close, 0);
    let finish = async {
        writer.write_batch(std::slice::from_ref(&frame)).await?;
        writer.shutdown().await
    };
    let _ = tokio::time::timeout(peer.shared.config.close_timeout, finish).await;
}
