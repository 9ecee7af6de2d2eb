//! One peer: the [`Peer`] handle, its session, and the task that runs each connection.
//!
//! This module owns a peer from the end of its first hello to the end of its session: the
//! bounded outbound queue, the batching writer, the reading loop that hands messages to the
//! protocol, heartbeats, requests waiting for replies, the close handshake and forced closes.
//! A resumable session ([`resume`]) outlives a lost connection: the next connection takes over
//! the queue and the dispatcher and sends again what the peer missed. It must not know about
//! listeners, the server's peer table or any registry's rules; those reach it through
//! [`Hooks`] and [`Protocol`].
//!
//! Each connection is one task running two loops side by side:
//!
//! * the read loop ([`read`]): frame → open if protected → control handling or
//!   [`Dispatch`](crate::Dispatch) → handler; it notes when it last heard from the peer;
//! * the write loop ([`write`]): queue → batch of up to `write_batch` frames → seal if our
//!   direction is secure → one vectored write; its timer sends heartbeats and ends a
//!   connection that stayed silent too long.
//!
//! A graceful close travels through the queue as the close frame itself, so everything queued
//! before it is written first.
//! A forced close (a call to `close_now`, a fatal error, a slow consumer) cancels the loops at
//! once; a close frame is still sent if the stream is at a frame boundary. Once our close frame
//! is out and our direction shut, the connection reads on and drops what still arrives until the
//! peer closes too (at most `close_timeout`): dropped with the peer's data unread, the socket
//! would answer with a reset, which fails the peer's next write (a peer that ends on that never
//! reads the close frame waiting for it) and on some systems discards what it has not read.
//! The other way round, a write that fails lets the read loop finish what arrived before the
//! end is recorded (at most `close_timeout`), so that a close frame the peer sent before
//! resetting decides the code.

mod queue;
mod read;
mod request;
pub(crate) mod resume;
mod signal;
mod write;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use crate::config::ConnectionConfig;
use crate::frame::control::{Close, Hello};
use crate::frame::{Frame, Kind};
use crate::protocol::{BoxFuture, Dispatch, Message, Protocol};
use crate::security::handshake::{self, Handshake, Role};
use crate::security::record::Sealer;
use crate::security::{SecurityEvent, Suite};
use crate::server::Hub;
use crate::transport::{FrameRead, FrameWrite, PeerInfo, TransportKind};
use crate::{CloseInfo, Code, Error, Initiator, Session};
use resume::Resume;
use signal::{Signal, TaskToken};

/// Identifies a peer within one server (or one client) for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl PeerId {
    /// A process-wide unique id: sessions may move between servers sharing a store.
    pub(crate) fn next() -> PeerId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        PeerId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

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
    /// A heartbeat `PING`.
    Ping,
    /// An acknowledgement of what a resumable session received so far.
    Ack,
}

/// The writer's priority lane: handshake frames and key installs. Allocates nothing until the
/// first handshake (an idle plain peer pays for an empty deque); bounded by the handshake, one
/// per connection, to a handful of items.
///
/// The writer looks at it before every wait, so an empty lane answers from an atomic flag
/// without taking the lock, and only the writer waits on it (one waker slot).
#[derive(Default)]
pub(crate) struct ControlLane {
    items: Mutex<std::collections::VecDeque<Control>>,
    /// Whether `items` holds something; changed only under the lock.
    pending: AtomicBool,
    writer: futures_util::task::AtomicWaker,
}

impl ControlLane {
    fn lock(&self) -> MutexGuard<'_, std::collections::VecDeque<Control>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, control: Control) {
        let mut items = self.lock();
        items.push_back(control);
        self.pending.store(true, Ordering::Release);
        drop(items);
        self.writer.wake();
    }

    /// Resolves once the lane holds something. Only the write loop may await it.
    pub(crate) fn ready(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            // Registered before looking: a push after the look wakes the writer.
            self.writer.register(cx.waker());
            if self.pending.load(Ordering::Acquire) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }

    pub(crate) fn pop(&self) -> Option<Control> {
        if !self.pending.load(Ordering::Acquire) {
            return None;
        }
        let mut items = self.lock();
        let control = items.pop_front();
        self.pending.store(!items.is_empty(), Ordering::Release);
        control
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

/// A peer's session: what lives from the hello to the end, across the connections of a
/// resumable session.
struct Shared {
    id: PeerId,
    config: ConnectionConfig,
    role: Role,
    /// The outbound queue. A [`Kind::Close`] frame in it is a graceful close: the writer writes
    /// everything before it, then it, then ends the write direction.
    queue: queue::Queue,
    session: Session,
    /// Set once no more frames may be queued: the session is ending.
    closing: AtomicBool,
    /// Becomes `Some` when the session has ended.
    finished: Signal<Option<CloseInfo>>,
    server: RwLock<Option<Weak<Hub>>>,
    /// The current connection, or the last one while a resumable session waits to resume.
    conn: RwLock<Arc<Conn>>,
    /// What a connection hands to the next one of the session.
    idle: Mutex<Idle>,
    /// Counts and buffer of a resumable session.
    resume: Option<Resume>,
    /// Requests we made that wait for their answer.
    requests: request::Pending,
}

/// Kept between two connections of a session.
#[derive(Default)]
struct Idle {
    dispatch: Option<Box<dyn Dispatch>>,
    hooks: Option<Arc<dyn Hooks>>,
}

/// One connection of a session: the transport's life, from hello to close.
pub(crate) struct Conn {
    info: PeerInfo,
    /// How the connection ended or is ending: the first cause recorded wins.
    end: Mutex<Option<CloseInfo>>,
    /// Cancelled to stop both loops at once (forced close, fatal error, end of either loop).
    /// Only the connection's task waits on it.
    stop: TaskToken,
    /// Cancelled when the peer's close frame arrived and must be answered.
    peer_closed: TaskToken,
    /// Cancelled when the connection's task has ended.
    done: CancellationToken,
    /// Handshake frames and key installs for the writer, ahead of the queue. Unbounded but
    /// tiny: one handshake per connection, a handful of frames.
    ctl: ControlLane,
    handshake: Mutex<Handshake>,
    sec_status: Signal<SecStatus>,
    /// Our direction: set when security on is queued, cleared when off is queued.
    own_secure: AtomicBool,
    /// The peer's direction, as the read loop last saw it.
    peer_secure: AtomicBool,
    /// What the peer last asked our direction to be (`REQUEST`).
    wanted_secure: AtomicBool,
    /// A task is waiting for the handshake to apply `wanted_secure`.
    request_waiting: AtomicBool,
    /// File transfers in both directions; they end with the connection.
    files: crate::file::Table,
    /// When the connection started, and milliseconds after it that the read loop was last
    /// ready for the peer (a frame arrived, or a handler finished): heartbeats measure from it.
    origin: tokio::time::Instant,
    last_heard: AtomicU64,
}

impl Conn {
    pub(crate) fn new(info: PeerInfo, role: Role, config: &ConnectionConfig, hellos: &Hellos) -> Arc<Conn> {
        Arc::new(Conn {
            info,
            end: Mutex::new(None),
            stop: TaskToken::default(),
            peer_closed: TaskToken::default(),
            done: CancellationToken::new(),
            ctl: ControlLane::default(),
            handshake: Mutex::new(Handshake::new(
                role,
                config.security.clone(),
                &hellos.client,
                &hellos.server,
            )),
            sec_status: Signal::new(SecStatus::Idle),
            own_secure: AtomicBool::new(false),
            peer_secure: AtomicBool::new(false),
            wanted_secure: AtomicBool::new(false),
            request_waiting: AtomicBool::new(false),
            files: crate::file::Table::default(),
            origin: tokio::time::Instant::now(),
            last_heard: AtomicU64::new(0),
        })
    }

    fn lock_handshake(&self) -> MutexGuard<'_, Handshake> {
        self.handshake.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the first cause of the end; later causes are ignored.
    fn record_end(&self, code: Code, reason: impl Into<String>, initiator: Initiator) {
        let mut end = self.end.lock().unwrap_or_else(|p| p.into_inner());
        if end.is_none() {
            *end = Some(CloseInfo {
                code,
                reason: reason.into(),
                initiator,
            });
        }
    }

    fn end_info(&self) -> Option<CloseInfo> {
        self.end.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The read loop is ready for the peer now.
    fn heard(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.last_heard.store(now, Ordering::Relaxed);
    }

    fn last_heard(&self) -> tokio::time::Instant {
        self.origin + Duration::from_millis(self.last_heard.load(Ordering::Relaxed))
    }
}

/// A handle to one peer: send to it, read its session, close it.
///
/// Cheap to clone; every clone refers to the same peer. A server's handlers receive the peer
/// that sent the message; a [`Client`](crate::Client) dereferences to its peer. With a
/// resumable session (see [`Reconnect`](crate::Reconnect)) the handle outlives a lost
/// connection: sends are queued until the session resumes or ends.
#[derive(Clone)]
pub struct Peer {
    shared: Arc<Shared>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.shared.id)
            .field("info", &self.info())
            .finish()
    }
}

impl Peer {
    /// This peer's id.
    pub fn id(&self) -> PeerId {
        self.shared.id
    }

    pub(crate) fn conn(&self) -> Arc<Conn> {
        self.shared.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Local and remote address, and the transport, of the current (or last) connection.
    pub fn info(&self) -> PeerInfo {
        self.conn().info.clone()
    }

    /// Whether the peer is connected over WebSocket.
    pub fn is_websocket(&self) -> bool {
        self.conn().info.transport == TransportKind::WebSocket
    }

    /// Whether a connection is up: false once the session ended, and while a resumable session
    /// waits to resume.
    pub fn is_connected(&self) -> bool {
        !self.conn().done.is_cancelled()
    }

    /// Whether the session survives a lost connection (the client asked for reconnection and
    /// the server keeps sessions).
    pub fn is_resumable(&self) -> bool {
        self.shared.resume.is_some()
    }

    /// The peer's typed session store.
    pub fn session(&self) -> &Session {
        &self.shared.session
    }

    /// The server this peer is connected to, when the peer was accepted by one.
    pub fn server(&self) -> Option<crate::Server> {
        self.shared
            .server
            .read()
            .unwrap_or_else(|p| p.into_inner())
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

    /// Sends a request and waits for the peer's reply, at most
    /// [`ConnectionConfig::request_timeout`](crate::ConnectionConfig::request_timeout).
    ///
    /// The peer's protocol answers through a [`Responder`](crate::Responder). Fails with
    /// [`Error::RequestTimeout`] when the time runs out, [`Error::Remote`] when the peer
    /// answered with an error (`NO_REPLY` if it had no handler for it), and [`Error::Closed`]
    /// when the session ends first. In a resumable session a lost connection does not fail the
    /// request: it is sent again, or its reply is, after the resume.
    pub async fn request(&self, message: Message) -> Result<Bytes, Error> {
        self.request_timeout(message, self.shared.config.request_timeout)
            .await
    }

    /// [`Peer::request`] with its own timeout.
    pub async fn request_timeout(&self, message: Message, timeout: Duration) -> Result<Bytes, Error> {
        let pending = &self.shared.requests;
        let (id, answer) = pending.register();
        let _forget = request::Forget { pending, id };
        let exchange = async {
            self.send_frame(request::frame(message.id, id, &message.payload))
                .await?;
            answer.await.unwrap_or_else(|_| Err(self.closed_error()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(Error::RequestTimeout(timeout)))
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
        self.shared
            .queue
            .push(frame)
            .await
            .map_err(|_| self.closed_error())
    }

    /// Queues a checked frame without waiting.
    pub(crate) fn try_enqueue(&self, frame: Frame) -> Result<(), Error> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        self.shared
            .queue
            .try_push(frame)
            .map_err(|refused| match refused {
                queue::Refused::Full => Error::QueueFull,
                queue::Refused::Closed => self.closed_error(),
            })
    }

    pub(crate) fn closed_error(&self) -> Error {
        Error::Closed(self.end_or_default())
    }

    /// How the session ended, or how its connection is ending, or an abnormal end.
    fn end_or_default(&self) -> CloseInfo {
        if let Some(info) = self.shared.finished.get() {
            return info;
        }
        self.conn().end_info().unwrap_or_else(|| CloseInfo {
            code: Code::ABNORMAL,
            reason: "connection ended".into(),
            initiator: Initiator::Local,
        })
    }

    /// Closes gracefully: frames queued before this call are written, then a close frame with
    /// `code` and `reason`; waits for the peer's answering close (at most `close_timeout`) and
    /// returns how the connection ended. Calling it again, or on a closed peer, just waits.
    ///
    /// A resumable session waiting to resume ends at once: what was queued for it is dropped.
    pub async fn close(&self, code: Code, reason: &str) -> CloseInfo {
        self.begin_close(code, reason).await;
        self.closed().await
    }

    async fn begin_close(&self, code: Code, reason: &str) {
        if self.shared.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let close = Close::new(code, reason);
        let conn = self.conn();
        conn.record_end(code, close.reason.clone(), Initiator::Local);
        if conn.done.is_cancelled() {
            return self.end_idle(&conn);
        }
        let queued = tokio::time::timeout(
            self.shared.config.close_timeout,
            self.shared.queue.push(close.to_frame(Kind::Close, 0)),
        );
        if !matches!(queued.await, Ok(Ok(()))) {
            conn.stop.cancel();
        }
        if conn.done.is_cancelled() {
            self.end_idle(&conn);
        }
    }

    /// Closes at once: queued frames are discarded, a close frame is sent if the stream is at a
    /// frame boundary, and the connection is dropped. Does not wait.
    pub fn close_now(&self, code: Code, reason: &str) {
        self.shared.closing.store(true, Ordering::Release);
        let conn = self.conn();
        conn.record_end(code, Close::new(code, reason).reason, Initiator::Local);
        conn.stop.cancel();
        if conn.done.is_cancelled() {
            self.end_idle(&conn);
        }
    }

    /// Closes the current connection with `code` but keeps a resumable session, which waits
    /// for its client to resume it. Waits for the connection to end, at most `close_timeout`.
    pub(crate) async fn disconnect(&self, code: Code, reason: &str) {
        let conn = self.conn();
        conn.record_end(code, Close::new(code, reason).reason, Initiator::Local);
        conn.stop.cancel();
        let _ = tokio::time::timeout(self.shared.config.close_timeout, conn.done.cancelled()).await;
    }

    /// Ends a session whose connection is gone (it waits to resume), if nobody did yet.
    fn end_idle(&self, conn: &Conn) {
        let hooks = self.lock_idle().hooks.take();
        if let Some(hooks) = hooks {
            let info = conn.end_info().unwrap_or_else(|| self.end_or_default());
            self.end_session(&info, hooks.as_ref());
        }
    }

    /// The session is over: fail what waits on it, publish how it ended, tell the owner. Runs
    /// its effects once.
    fn end_session(&self, info: &CloseInfo, hooks: &dyn Hooks) {
        self.shared.closing.store(true, Ordering::Release);
        let first = self.shared.finished.update(|finished| {
            if finished.is_some() {
                return false;
            }
            *finished = Some(info.clone());
            true
        });
        if first {
            *self.lock_idle() = Idle::default();
            self.shared.queue.close_and_clear();
            self.shared.requests.fail_all(info);
            debug!(peer = %self.id(), code = %info.code, "session ended");
            hooks.closed(self, info);
        }
    }

    fn lock_idle(&self) -> MutexGuard<'_, Idle> {
        self.shared.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the session has ended and returns how.
    pub async fn closed(&self) -> CloseInfo {
        match self.shared.finished.wait_for(Option::is_some).await {
            Some(info) => info,
            None => self.end_or_default(),
        }
    }

    /// Whether the session has ended or is closing.
    pub fn is_closed(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }

    /// Runs the key exchange if it has not run, and waits for it: returns the negotiated suite.
    ///
    /// Either side may start it; the client always makes the offer (a server asks for one).
    /// Fails with [`Error::Security`] if no suite is common or the exchange fails, and with
    /// [`Error::Closed`] if the connection ends first. Each connection of a resumable session
    /// runs its own exchange.
    pub async fn handshake(&self) -> Result<Suite, Error> {
        let conn = self.conn();
        if let Some(frame) = conn.lock_handshake().begin() {
            conn.sec_status.set(SecStatus::InProgress);
            conn.ctl.push(Control::Frame(frame));
        }
        tokio::select! {
            status = conn.sec_status.wait_for(|s| matches!(s, SecStatus::Done(_) | SecStatus::Failed(..))) => {
                match status {
                    SecStatus::Done(suite) => Ok(suite),
                    SecStatus::Failed(code, reason) => Err(Error::Security { code, reason }),
                    _ => Err(self.closed_error()),
                }
            }
            _ = conn.done.cancelled() => Err(self.closed_error()),
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
            if let Some(resume) = &self.shared.resume {
                resume.ever_secure.store(true, Ordering::Release);
            }
            if !self.conn().own_secure.swap(true, Ordering::AcqRel) {
                self.enqueue(handshake::frame(handshake::SEC_ON, Bytes::new()))
                    .await?;
            }
        } else if self.conn().own_secure.swap(false, Ordering::AcqRel) {
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
        self.conn().own_secure.load(Ordering::Acquire)
    }

    /// Whether what the peer sends us is protected.
    pub fn is_peer_secure(&self) -> bool {
        self.conn().peer_secure.load(Ordering::Acquire)
    }

    /// The negotiated suite, once the handshake is done.
    pub fn suite(&self) -> Option<Suite> {
        self.conn().lock_handshake().suite()
    }

    pub(crate) fn shared_files(&self) -> FilesRef {
        FilesRef(self.conn())
    }

    pub(crate) fn file_config(&self) -> &crate::file::FileConfig {
        &self.shared.config.files
    }

    pub(crate) fn max_incoming_files(&self) -> usize {
        self.shared.config.files.max_incoming
    }

    pub(crate) fn resume_token(&self) -> Option<[u8; resume::TOKEN_LEN]> {
        self.shared.resume.as_ref().map(|resume| resume.token)
    }

    pub(crate) fn resume_state(&self) -> Option<&Resume> {
        self.shared.resume.as_ref()
    }

    pub(crate) fn set_server(&self, hub: Weak<Hub>) {
        *self.shared.server.write().unwrap_or_else(|p| p.into_inner()) = Some(hub);
    }
}

/// The current connection's file table.
pub(crate) struct FilesRef(Arc<Conn>);

impl std::ops::Deref for FilesRef {
    type Target = crate::file::Table;

    fn deref(&self) -> &crate::file::Table {
        &self.0.files
    }
}

/// The two hellos of a connection, which begin the security transcript.
pub(crate) struct Hellos {
    pub(crate) client: Hello,
    pub(crate) server: Hello,
}

/// A new peer: its session and first connection, ready to run.
pub(crate) struct NewPeer {
    pub(crate) peer: Peer,
    pub(crate) start: Start,
}

/// Everything one connection of a session starts with.
pub(crate) struct Start {
    conn: Arc<Conn>,
    dispatch: Box<dyn Dispatch>,
    /// The first connection of the session (runs the connect hook).
    first: bool,
    /// Frames to send again before anything else (a resumed session).
    replay: Vec<Frame>,
}

pub(crate) fn new_peer(
    id: PeerId,
    info: PeerInfo,
    config: ConnectionConfig,
    server: Option<Weak<Hub>>,
    hellos: &Hellos,
    protocol: &dyn Protocol,
    resume_token: Option<[u8; resume::TOKEN_LEN]>,
) -> NewPeer {
    let role = if server.is_some() {
        Role::Server
    } else {
        Role::Client
    };
    let conn = Conn::new(info, role, &config, hellos);
    let resume =
        resume_token.map(|token| Resume::new(token, config.resume_buffer, config.resume_buffer_bytes));
    let shared = Shared {
        id,
        role,
        queue: queue::Queue::new(config.outbound_queue),
        session: Session::default(),
        closing: AtomicBool::new(false),
        finished: Signal::new(None),
        server: RwLock::new(server),
        conn: RwLock::new(conn.clone()),
        idle: Mutex::new(Idle::default()),
        resume,
        requests: request::Pending::default(),
        config,
    };
    let peer = Peer {
        shared: Arc::new(shared),
    };
    let dispatch = protocol.open(&peer);
    NewPeer {
        peer,
        start: Start {
            conn,
            dispatch,
            first: true,
            replay: Vec::new(),
        },
    }
}

/// Why a resume was refused.
pub(crate) enum ResumeRefused {
    /// The session has ended or is ending.
    Ended,
    /// The peer's count does not fit ours.
    Count(resume::BadCount),
}

impl Peer {
    /// Stops the current connection of a resumable session (if it still runs) so that a new one
    /// can take over, and waits for it to hand over, at most `close_timeout`.
    pub(crate) async fn take_over(&self) {
        let conn = self.conn();
        if !conn.done.is_cancelled() {
            conn.record_end(
                Code::ABNORMAL,
                "replaced by a resumed connection",
                Initiator::Remote,
            );
            conn.stop.cancel();
            let _ = tokio::time::timeout(self.shared.config.close_timeout, conn.done.cancelled()).await;
        }
    }

    /// Prepares the next connection of a resumable session, whose peer has received `count` of
    /// our application frames. The current connection must be over.
    pub(crate) fn resume(&self, info: PeerInfo, hellos: &Hellos, count: u64) -> Result<Start, ResumeRefused> {
        let resume = self.shared.resume.as_ref().ok_or(ResumeRefused::Ended)?;
        if self.shared.closing.load(Ordering::Acquire) || !self.conn().done.is_cancelled() {
            return Err(ResumeRefused::Ended);
        }
        let replay = resume.replay_after(count).map_err(ResumeRefused::Count)?;
        let mut idle = self.lock_idle();
        let Some(dispatch) = idle.dispatch.take() else {
            return Err(ResumeRefused::Ended);
        };
        idle.hooks = None;
        drop(idle);
        let conn = Conn::new(info, self.shared.role, &self.shared.config, hellos);
        *self.shared.conn.write().unwrap_or_else(|p| p.into_inner()) = conn.clone();
        Ok(Start {
            conn,
            dispatch,
            first: false,
            replay,
        })
    }

    /// Ends a session that could not resume (refused, or the reconnection gave up).
    pub(crate) fn give_up(&self, info: &CloseInfo) {
        self.shared.closing.store(true, Ordering::Release);
        let hooks = self.lock_idle().hooks.take();
        if let Some(hooks) = hooks {
            self.end_session(info, hooks.as_ref());
        }
    }
}

/// How a connection's task ended.
pub(crate) enum Outcome {
    /// The session ended with it.
    Ended,
    /// The connection was lost; the resumable session waits for the next one.
    Parked(CloseInfo),
}

/// Whether a connection that ended with `code` ends its session even if it could resume.
pub(crate) fn ends_session(code: Code) -> bool {
    matches!(
        code,
        Code::NORMAL
            | Code::UNAUTHORIZED
            | Code::VERSION_MISMATCH
            | Code::POLICY_VIOLATION
            | Code::RESUME_FAILED
    )
}

/// Runs one connection of a session to its end: both loops and the heartbeat, then either
/// the end of the session or, for a resumable session that lost its connection, the handover
/// to the next one.
pub(crate) async fn run<R: FrameRead, W: FrameWrite>(
    peer: Peer,
    start: Start,
    mut reader: R,
    writer: W,
    hooks: Arc<dyn Hooks>,
) -> Outcome {
    let Start {
        conn,
        mut dispatch,
        first,
        replay,
    } = start;
    let span = tracing::debug_span!("connection", peer = %peer.id(), remote = %conn.info.remote);
    async {
        debug!(resumed = !first, "open");
        let resecure = !first
            && peer.shared.resume.as_ref().is_some_and(|resume| {
                resume.ever_secure.load(Ordering::Acquire) || peer.shared.config.security.required
            });
        if resecure {
            // Our direction was secure in this session: nothing goes out plain before it is
            // secure again on this connection.
            let secure = peer.clone();
            let conn = conn.clone();
            tokio::spawn(async move {
                match secure.handshake().await {
                    Ok(_) => {
                        conn.own_secure.store(true, Ordering::Release);
                        conn.ctl.push(Control::Frame(handshake::frame(handshake::SEC_ON, Bytes::new())));
                    }
                    // Lost again before the exchange finished: the session waits for the next
                    // connection, which tries again.
                    Err(Error::Closed(_)) => {}
                    Err(error) => {
                        debug!(%error, "security could not be re-established on the resumed connection");
                        conn.record_end(
                            Code::SECURITY_REQUIRED,
                            "security could not be re-established",
                            Initiator::Local,
                        );
                        secure.shared.closing.store(true, Ordering::Release);
                        conn.stop.cancel();
                    }
                }
            });
        } else if peer.shared.role == Role::Server && peer.shared.config.security.required {
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
        conn.heard();
        let reading = async {
            let connected = if first {
                hooks.connected(&peer)
            } else {
                Box::pin(std::future::ready(()))
            };
            tokio::select! {
                biased;
                _ = conn.stop.cancelled() => {}
                _ = connected => read::read_loop(&peer, &conn, &mut reader, dispatch.as_mut(), hooks.as_ref()).await,
            }
            conn.stop.cancel();
        };
        let writing = async {
            let shut = write::write_loop(&peer, &conn, writer, replay, resecure, hooks.as_ref()).await;
            conn.stop.cancel();
            shut
        };
        // The reader first, then the writer, in every pass: what the read loop queues is
        // written in the same pass, without a wake (see `queue::PollingReader`).
        let shut = {
            let (mut reading, mut writing) = (std::pin::pin!(reading), std::pin::pin!(writing));
            let (mut read_done, mut shut) = (false, None);
            std::future::poll_fn(|cx| {
                if !read_done {
                    let _polling = queue::PollingReader::enter(&peer.shared.queue);
                    read_done = std::future::Future::poll(reading.as_mut(), cx).is_ready();
                }
                if shut.is_none() {
                    if let std::task::Poll::Ready(done) = std::future::Future::poll(writing.as_mut(), cx) {
                        shut = Some(done);
                    }
                }
                match (read_done, shut) {
                    (true, Some(shut)) => std::task::Poll::Ready(shut),
                    _ => std::task::Poll::Pending,
                }
            })
            .await
        };
        if shut {
            // Our close frame is out and our direction shut: read on, dropping what arrives,
            // until the peer closes too. Closing with its data unread would reset the
            // connection, and the reset can cost the peer our close frame (module docs).
            tokio::spawn(linger(reader, peer.shared.config.close_timeout));
        }

        conn.record_end(Code::ABNORMAL, "connection ended", Initiator::Local);
        let info = conn.end_info().unwrap_or_else(|| peer.end_or_default());
        conn.files.close(&crate::file::FileError::new(
            info.code,
            format!("connection ended: {}", info.reason),
        ));
        let park = peer.shared.resume.is_some()
            && !ends_session(info.code)
            && !peer.shared.closing.load(Ordering::Acquire);
        if park {
            *peer.lock_idle() = Idle {
                dispatch: Some(dispatch),
                hooks: Some(hooks.clone()),
            };
        }
        conn.done.cancel();
        if !park {
            peer.end_session(&info, hooks.as_ref());
            return Outcome::Ended;
        }
        if peer.shared.closing.load(Ordering::Acquire) {
            // Closed while handing over: whoever takes the hooks ends the session.
            peer.end_idle(&conn);
            return Outcome::Ended;
        }
        debug!(code = %info.code, "connection lost; the session waits to resume");
        Outcome::Parked(info)
    }
    .instrument(span)
    .await
}

/// Reads and drops what the peer still sends after our close, until it closes or `limit`
/// passes; then the connection is dropped.
async fn linger<R: FrameRead>(mut reader: R, limit: Duration) {
    let drain = async { while let Ok(1..) = reader.discard().await {} };
    let _ = tokio::time::timeout(limit, drain).await;
}

/// What the heartbeat does when its timer fires.
pub(crate) enum Beat {
    /// Nothing yet: look again at this instant.
    Later(tokio::time::Instant),
    /// Silent for the interval: send a `PING`, look again at this instant.
    Ping(tokio::time::Instant),
    /// Silent for interval + timeout: the peer is gone.
    Dead(Duration),
}

impl Conn {
    /// The heartbeat's decision now, given the configured interval and timeout.
    pub(crate) fn beat(&self, interval: Duration, timeout: Duration) -> Beat {
        let heard = self.last_heard();
        let now = tokio::time::Instant::now();
        if now < heard + interval {
            Beat::Later(heard + interval)
        } else if now < heard + interval + timeout {
            Beat::Ping(heard + interval + timeout)
        } else {
            Beat::Dead(interval + timeout)
        }
    }
}

/// Ends the connection because of a fatal error found locally. The session ends with it.
fn fail(peer: &Peer, conn: &Conn, hooks: &dyn Hooks, error: Error) {
    conn.record_end(
        error.code(),
        Close::new(error.code(), error.to_string()).reason,
        Initiator::Local,
    );
    // A heartbeat timeout is a lost connection, which a resumable session survives.
    if !matches!(error, Error::HeartbeatTimeout(_)) {
        peer.shared.closing.store(true, Ordering::Release);
    }
    hooks.error(peer, &error);
    conn.stop.cancel();
}
