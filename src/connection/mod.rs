//! One live peer: the [`Peer`] handle and the task that owns its transport.
//!
//! This module owns a connection from the end of the hello exchange to its close: the bounded
//! outbound queue, the batching writer, the reading loop that hands messages to the protocol,
//! the close handshake and forced closes. It must not know about listeners, the server's peer
//! table or any registry's rules; those reach it through [`Hooks`] and [`Protocol`].
//!
//! Each connection is one task running two loops side by side:
//!
//! * the read loop ([`read`]): frame → open if protected → control handling or
//!   [`Dispatch`](crate::Dispatch) → handler;
//! * the write loop ([`write`]): queue → batch of up to `write_batch` frames → seal if our
//!   direction is secure → one vectored write.
//!
//! A graceful close travels through the queue as the close frame itself, so everything queued
//! before it is written first.
//! A forced close (a call to `close_now`, a fatal error, a slow consumer) cancels both loops at
//! once; a close frame is still sent if the stream is at a frame boundary.

mod read;
mod write;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use crate::config::ConnectionConfig;
use crate::frame::control::{Close, Hello};
use crate::frame::{Frame, Kind};
use crate::protocol::{BoxFuture, Message, Protocol};
use crate::security::handshake::{self, Handshake, Role};
use crate::security::record::Sealer;
use crate::security::{SecurityEvent, Suite};
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
    /// The security layer reports something.
    fn security(&self, peer: &Peer, event: &SecurityEvent);
    /// The peer offers a file; dropping the offer declines it.
    fn file_offer(&self, peer: &Peer, offer: crate::file::FileOffer);
}

/// What the write loop takes ahead of the queue.
pub(crate) enum Control {
    /// A handshake frame, sent in the current mode.
    Frame(Frame),
    /// Keys for the direction we send.
    Keys(Box<Sealer>),
}

/// The writer's priority lane: handshake frames and key installs. Allocates nothing until the
/// first handshake (an idle plain peer pays for an empty deque); bounded by the handshake, one
/// per connection, to a handful of items.
#[derive(Default)]
pub(crate) struct ControlLane {
    items: Mutex<std::collections::VecDeque<Control>>,
    notify: tokio::sync::Notify,
}

impl ControlLane {
    pub(crate) fn push(&self, control: Control) {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(control);
        self.notify.notify_one();
    }

    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    pub(crate) fn pop(&self) -> Option<Control> {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }
}

/// Where the handshake stands, for callers waiting on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SecStatus {
    Idle,
    InProgress,
    Done(Suite),
    Failed(Code, String),
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
    role: Role,
    /// Handshake frames and key installs for the writer, ahead of the queue. Unbounded but
    /// tiny: one handshake per connection, a handful of frames.
    ctl: ControlLane,
    handshake: Mutex<Handshake>,
    sec_status: watch::Sender<SecStatus>,
    /// Our direction: set when security on is queued, cleared when off is queued.
    own_secure: AtomicBool,
    /// The peer's direction, as the read loop last saw it.
    peer_secure: AtomicBool,
    /// What the peer last asked our direction to be (`REQUEST`).
    wanted_secure: AtomicBool,
    /// A task is waiting for the handshake to apply `wanted_secure`.
    request_waiting: AtomicBool,
    /// File transfers in both directions.
    files: crate::file::Table,
}

impl Shared {
    fn lock_handshake(&self) -> MutexGuard<'_, Handshake> {
        self.handshake.lock().unwrap_or_else(|p| p.into_inner())
    }
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

    pub(crate) fn closed_error(&self) -> Error {
        Error::Closed(self.end_or_default())
    }

    /// How the connection ended, or an abnormal end if no cause was recorded.
    fn end_or_default(&self) -> CloseInfo {
        self.end_info().unwrap_or_else(|| CloseInfo {
            code: Code::ABNORMAL,
            reason: "connection ended".into(),
            initiator: Initiator::Local,
        })
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
            _ => self.end_or_default(),
        }
    }

    /// Whether the connection has ended or is closing.
    pub fn is_closed(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }

    /// Runs the key exchange if it has not run, and waits for it: returns the negotiated suite.
    ///
    /// Either side may start it; the client always makes the offer (a server asks for one).
    /// Fails with [`Error::Security`] if no suite is common or the exchange fails, and with
    /// [`Error::Closed`] if the connection ends first.
    pub async fn handshake(&self) -> Result<Suite, Error> {
        let shared = &self.shared;
        let mut status = shared.sec_status.subscribe();
        if let Some(frame) = shared.lock_handshake().begin() {
            shared.sec_status.send_replace(SecStatus::InProgress);
            shared.ctl.push(Control::Frame(frame));
        }
        let mut finished = shared.finished.subscribe();
        tokio::select! {
            result = status.wait_for(|s| matches!(s, SecStatus::Done(_) | SecStatus::Failed(..))) => {
                match result.as_deref() {
                    Ok(SecStatus::Done(suite)) => Ok(*suite),
                    Ok(SecStatus::Failed(code, reason)) => Err(Error::Security { code: *code, reason: reason.clone() }),
                    _ => Err(self.closed_error()),
                }
            }
            _ = finished.wait_for(Option::is_some) => Err(self.closed_error()),
        }
    }

    /// Turns encryption of what *we send* on or off (`setOwnSecurity`). Returns `self` so calls
    /// chain.
    ///
    /// On: runs the handshake first if needed, then queues an authenticated "security on"
    /// record; every frame queued after this call returns is protected. Off: queues an
    /// authenticated "security off"; frames queued after it are plain. The keys stay, so
    /// toggling again needs no new handshake.
    pub async fn set_own_security(&self, on: bool) -> Result<&Self, Error> {
        if on {
            self.handshake().await?;
            if !self.shared.own_secure.swap(true, Ordering::AcqRel) {
                self.enqueue(handshake::frame(handshake::SEC_ON, Bytes::new()))
                    .await?;
            }
        } else if self.shared.own_secure.swap(false, Ordering::AcqRel) {
            self.enqueue(handshake::frame(handshake::SEC_OFF, Bytes::new()))
                .await?;
        }
        Ok(self)
    }

    /// Asks the peer to turn encryption of what *it sends us* on or off (`setClientSecurity`).
    /// The peer complies unless its handshake fails; [`Peer::is_peer_secure`] and the
    /// `PeerSecure` event tell when its records change. Returns `self` so calls chain.
    pub async fn set_peer_security(&self, on: bool) -> Result<&Self, Error> {
        if on {
            self.handshake().await?;
        }
        self.enqueue(handshake::frame(
            handshake::REQUEST,
            Bytes::from(vec![u8::from(on)]),
        ))
        .await?;
        Ok(self)
    }

    /// Whether what we send is protected (after `set_own_security(true)`).
    pub fn is_secure(&self) -> bool {
        self.shared.own_secure.load(Ordering::Acquire)
    }

    /// Whether what the peer sends us is protected.
    pub fn is_peer_secure(&self) -> bool {
        self.shared.peer_secure.load(Ordering::Acquire)
    }

    /// The negotiated suite, once the handshake is done.
    pub fn suite(&self) -> Option<Suite> {
        self.shared.lock_handshake().suite()
    }

    pub(crate) fn shared_files(&self) -> &crate::file::Table {
        &self.shared.files
    }

    pub(crate) fn file_config(&self) -> &crate::file::FileConfig {
        &self.shared.config.files
    }

    pub(crate) fn max_incoming_files(&self) -> usize {
        self.shared.config.files.max_incoming
    }
}

/// A peer and the queue receiver its connection task will drain.
pub(crate) struct NewPeer {
    pub(crate) peer: Peer,
    rx: mpsc::Receiver<Frame>,
}

/// The two hellos of a connection, which begin the security transcript.
pub(crate) struct Hellos {
    pub(crate) client: Hello,
    pub(crate) server: Hello,
}

pub(crate) fn new_peer(
    id: PeerId,
    info: PeerInfo,
    config: ConnectionConfig,
    server: Option<Weak<Hub>>,
    hellos: &Hellos,
) -> NewPeer {
    let (tx, rx) = mpsc::channel(config.outbound_queue.max(1));
    let role = if server.is_some() {
        Role::Server
    } else {
        Role::Client
    };
    let handshake = Handshake::new(role, config.security.clone(), &hellos.client, &hellos.server);
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
        role,
        ctl: ControlLane::default(),
        handshake: Mutex::new(handshake),
        sec_status: watch::channel(SecStatus::Idle).0,
        own_secure: AtomicBool::new(false),
        peer_secure: AtomicBool::new(false),
        wanted_secure: AtomicBool::new(false),
        request_waiting: AtomicBool::new(false),
        files: crate::file::Table::default(),
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
        if peer.shared.role == Role::Server && peer.shared.config.security.required {
            // The server insists: key exchange now, and both directions on.
            let secure = peer.clone();
            tokio::spawn(async move {
                let result = async {
                    secure
                        .set_own_security(true)
                        .await?
                        .set_peer_security(true)
                        .await
                        .map(drop)
                };
                if let Err(error) = result.await {
                    debug!(%error, "required security could not be set up");
                }
            });
        }
        let reading = async {
            let connected = hooks.connected(&peer);
            tokio::select! {
                biased;
                _ = peer.shared.stop.cancelled() => {}
                _ = connected => read::read_loop(&peer, reader, protocol.as_ref(), hooks.as_ref()).await,
            }
            peer.shared.stop.cancel();
        };
        let writing = async {
            write::write_loop(&peer, writer, rx, hooks.as_ref()).await;
            peer.shared.stop.cancel();
        };
        tokio::join!(reading, writing);

        peer.shared.closing.store(true, Ordering::Release);
        peer.record_end(Code::ABNORMAL, "connection ended", Initiator::Local);
        let info = peer.end_or_default();
        peer.shared.files.close(&crate::file::FileError::new(
            info.code,
            format!("connection ended: {}", info.reason),
        ));
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
