//! [`Peer`]: the application's handle to one peer's session.
//!
//! Sends are written straight to the socket when the writer is idle (`through`), and go to the
//! session's queue otherwise; everything that needs a rule (security, requests,
//! closing) asks the engine under its lock, which is never held across an await. The handle
//! owns nothing itself: the session lives as long as any handle or its connection task.

use std::any::Any;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::debug;

use super::engine::{marker, KexStatus};
use super::{queue, request, Conn, Hooks, Idle, PeerId, Shared};
use crate::error::{CloseInfo, Code, Error, FileError, Initiator};
use crate::frame::control::Close;
use crate::frame::{Frame, Kind};
use crate::protocol::Message;
use crate::security::handshake::{self, REQUEST};
use crate::security::{Fingerprint, Suite};
use crate::session::Session;
use crate::transport::{PeerInfo, TransportKind};

/// A handle to one peer: send to it, read its session, close it.
///
/// Cheap to clone; every clone refers to the same peer. A server's handlers receive the peer
/// that sent the message; a [`Client`](crate::Client) hands out its peer with
/// [`Client::peer`](crate::Client::peer). With a resumable session (see
/// [`Reconnect`](crate::Reconnect)) the handle outlives a lost connection: sends are queued until
/// the session resumes or ends.
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

impl AsRef<Peer> for Peer {
    fn as_ref(&self) -> &Peer {
        self
    }
}

impl Peer {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Peer {
        Peer { shared }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

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
        self.resume_token().is_some()
    }

    /// The peer's typed session store.
    pub fn session(&self) -> &Session {
        &self.shared.session
    }

    /// The state of the server that accepted this peer, if one did (read by
    /// `Peer::server`, which the server module defines).
    pub(crate) fn owner(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        self.shared
            .owner
            .server
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()?
            .upgrade()
    }

    /// The server that now holds this session (a resume on a server sharing the store).
    pub(crate) fn set_owner(&self, server: std::sync::Weak<dyn Any + Send + Sync>) {
        *self
            .shared
            .owner
            .server
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(server);
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
        let (tx, answer) = oneshot::channel();
        let id = self.shared.engine().register_request(
            Instant::now(),
            timeout,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        let _forget = request::Forget { peer: self, id };
        let exchange = async {
            self.send_frame(request::frame(message.id, id, &message.payload))
                .await?;
            answer.await.unwrap_or_else(|_| Err(self.closed_error()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(Error::RequestTimeout(timeout)))
    }

    pub(crate) fn forget_request(&self, id: u32) {
        self.shared.engine().forget_request(id);
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
        let Err(frame) = self.write_through(frame) else {
            // Written at once: a loop of sends still yields now and then, as a socket write does.
            tokio::task::coop::consume_budget().await;
            return Ok(());
        };
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
        let Err(frame) = self.write_through(frame) else {
            return Ok(());
        };
        self.shared
            .queue
            .try_push(frame)
            .map_err(|refused| match refused {
                queue::Refused::Full => {
                    self.shared.owner.meters.queue_full();
                    Error::QueueFull
                }
                queue::Refused::Closed => self.closed_error(),
            })
    }

    pub(crate) fn closed_error(&self) -> Error {
        Error::Closed(self.end_or_default())
    }

    /// How the session ended, or how its connection is ending, or an abnormal end.
    pub(crate) fn end_or_default(&self) -> CloseInfo {
        if let Some(info) = self.shared.finished.get() {
            return info;
        }
        self.shared
            .engine()
            .end_info()
            .unwrap_or_else(|| CloseInfo::new(Code::ABNORMAL, "connection ended", Initiator::Local))
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
        self.shared
            .engine()
            .record_end(code, close.reason.clone(), Initiator::Local, true);
        if conn.done.is_cancelled() {
            return self.end_idle();
        }
        let queued = tokio::time::timeout(
            self.shared.config.close_timeout,
            self.shared.queue.push(close.to_frame(Kind::Close, 0)),
        );
        if !matches!(queued.await, Ok(Ok(()))) {
            conn.stop.cancel();
        }
        if conn.done.is_cancelled() {
            self.end_idle();
        }
    }

    /// Closes at once: queued frames are discarded, a close frame is sent if the stream is at a
    /// frame boundary, and the connection is dropped. Does not wait.
    pub fn close_now(&self, code: Code, reason: &str) {
        self.shared.closing.store(true, Ordering::Release);
        let conn = self.conn();
        self.shared
            .engine()
            .record_end(code, reason, Initiator::Local, true);
        conn.stop.cancel();
        if conn.done.is_cancelled() {
            self.end_idle();
        }
    }

    /// Closes the current connection with `code` but keeps a resumable session, which waits
    /// for its client to resume it. Waits for the connection to end, at most `close_timeout`.
    pub(crate) async fn disconnect(&self, code: Code, reason: &str) {
        let conn = self.conn();
        self.shared
            .engine()
            .record_end(code, reason, Initiator::Local, false);
        conn.stop.cancel();
        let _ = tokio::time::timeout(self.shared.config.close_timeout, conn.done.cancelled()).await;
    }

    /// Ends a session whose connection is gone (it waits to resume), if nobody did yet.
    pub(crate) fn end_idle(&self) {
        let hooks = self.shared.lock_idle().hooks.take();
        if let Some(hooks) = hooks {
            let info = self.end_or_default();
            self.end_session(&info, hooks.as_ref());
        }
    }

    /// The session is over: fail what waits on it, publish how it ended, tell the owner. Runs
    /// its effects once.
    pub(crate) fn end_session(&self, info: &CloseInfo, hooks: &dyn Hooks) {
        self.shared.closing.store(true, Ordering::Release);
        let first = self.shared.finished.update(|finished| {
            if finished.is_some() {
                return false;
            }
            *finished = Some(info.clone());
            true
        });
        if first {
            *self.shared.lock_idle() = Idle::default();
            self.shared.queue.close_and_clear();
            self.shared.engine().session_ended(info);
            self.end_transfers(info);
            debug!(peer = %self.id(), code = %info.code, "session ended");
            hooks.closed(self, info);
        }
    }

    /// Every file transfer of the session ends with how the session did. After `closing` is
    /// set: no transfer can start any more (the file module checks under its own lock).
    pub(crate) fn end_transfers(&self, info: &CloseInfo) {
        let error = FileError::new(info.code, format!("session ended: {}", info.reason));
        self.shared.owner.files.session_ended(&self.link(), error);
    }

    /// Keeps what the next connection of a resumable session needs.
    pub(crate) fn park(&self, dispatch: Box<dyn crate::protocol::Dispatch>, hooks: Arc<dyn Hooks>) {
        *self.shared.lock_idle() = Idle {
            dispatch: Some(dispatch),
            hooks: Some(hooks),
        };
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
    /// Fails with [`Error::FailSecure`] if no suite is common (the connection then closes with
    /// `SECURITY_REQUIRED` unless [`SecurityConfig::fallback_plain`](crate::security::SecurityConfig::fallback_plain)
    /// is set), and with [`Error::Closed`] if the connection ends first (a failed exchange ends
    /// it). Each connection of a resumable session runs its own exchange.
    pub async fn handshake(&self) -> Result<Suite, Error> {
        let job = {
            let mut engine = self.shared.engine();
            let job = engine.begin_kex();
            self.shared.publish_security(&engine);
            job?
        };
        self.shared.writer.wake();
        if let Some(job) = job {
            self.run_kex(Box::new(job)).await;
        }
        let conn = self.conn();
        let ready = |s: &super::SecState| matches!(s.kex, KexStatus::Done(_) | KexStatus::Failed(..));
        tokio::select! {
            biased;
            state = self.shared.security.wait_for(ready) => match state.kex {
                KexStatus::Done(suite) => Ok(suite),
                KexStatus::Failed(code, reason) if code == Code::NO_COMMON_SUITE => {
                    Err(Error::FailSecure { code, reason })
                }
                _ => Err(self.closed_error()),
            },
            _ = conn.done.cancelled() => Err(self.closed_error()),
        }
    }

    /// Turns encryption of what *we send* on or off (`setOwnSecurity`). Returns `self` so calls
    /// chain.
    ///
    /// On: runs the key exchange first if needed, then queues an authenticated "security on"
    /// record, and returns once that record has gone to the transport: from then on
    /// [`Peer::is_secure`] is true and every frame queued after this call is protected. Off:
    /// queues an authenticated "security off" and returns once it went out; application frames
    /// queued after it are plain (control frames stay protected, PROTOCOL.md §9.3). Refused
    /// with [`Error::Security`] on a connection that must stay secure. The keys stay, so
    /// toggling again needs no new exchange.
    pub async fn set_own_security(&self, on: bool) -> Result<&Self, Error> {
        if on {
            self.handshake().await?;
        } else {
            self.shared.engine().may_turn_off()?;
        }
        self.enqueue(marker(on)).await?;
        tokio::select! {
            _ = self.shared.security.wait_for(|s| s.own == on) => Ok(self),
            info = self.closed() => Err(Error::Closed(info)),
        }
    }

    /// Asks the peer to turn encryption of what *it sends us* on or off (`setClientSecurity`).
    /// The peer complies unless its key exchange fails or, for off, it must stay secure;
    /// [`Peer::is_peer_secure`] and the `PeerSecure` event tell when its records change. Returns
    /// `self` so calls chain.
    pub async fn set_peer_security(&self, on: bool) -> Result<&Self, Error> {
        if on {
            self.handshake().await?;
        }
        self.enqueue(handshake::frame(REQUEST, Bytes::from(vec![u8::from(on)])))
            .await?;
        Ok(self)
    }

    /// Whether what we send is protected: true from the moment our "security on" record went
    /// to the transport (every later frame is protected) until our "security off" did.
    pub fn is_secure(&self) -> bool {
        self.shared.engine().is_secure()
    }

    /// Whether what the peer sends us is protected: true from the moment its "security on"
    /// record was read (before the next frame is handled) until its "security off" was.
    pub fn is_peer_secure(&self) -> bool {
        self.shared.engine().is_peer_secure()
    }

    /// The negotiated suite, once this connection's key exchange is done.
    pub fn suite(&self) -> Option<Suite> {
        self.shared.engine().suite()
    }

    /// The server's key as this connection's key exchange saw it (client side): `None` for a
    /// server without a key, or before any exchange.
    pub fn server_key(&self) -> Option<Fingerprint> {
        self.shared.engine().server_key().map(|(key, _)| key)
    }

    /// Whether the server proved it holds a key this client pins (client side). False for an
    /// anonymous exchange, and on the first connection under [`Trust::FirstUse`](crate::security::Trust::FirstUse).
    pub fn server_authenticated(&self) -> bool {
        self.shared
            .engine()
            .server_key()
            .is_some_and(|(_, pinned)| pinned)
    }

    /// Waits until the security state satisfies `ready`; fails once the session ends first.
    pub(crate) async fn shared_security(
        &self,
        ready: impl Fn(&super::SecState) -> bool,
    ) -> Result<(), Error> {
        tokio::select! {
            _ = self.shared.security.wait_for(ready) => Ok(()),
            info = self.closed() => Err(Error::Closed(info)),
        }
    }

    pub(crate) fn resume_token(&self) -> Option<[u8; 32]> {
        *self.shared.resume_token.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The engine, for the owner's resume bookkeeping (counts, resume secret).
    pub(crate) fn engine(&self) -> std::sync::MutexGuard<'_, super::engine::Engine> {
        self.shared.engine()
    }

    pub(crate) fn link(&self) -> super::link::Link {
        super::link::Link::new(self.shared.clone())
    }
}
