//! The connection engine: every protocol rule of a session and its current connection, as a
//! synchronous state machine.
//!
//! In the manner of quinn-proto, the engine has no networking code, no tasks and no clock:
//! the driver ([`super::driver`]) feeds it frames that arrived ([`Engine::on_frame`]), frames the
//! application queued ([`Engine::transmit`]), finished key-exchange work ([`Engine::kex_done`])
//! and the time ([`Engine::on_timeout`]), and carries out what it returns: [`Event`]s (deliver to
//! the handler, answer the peer, report, compute a key-exchange step), frames to write, and when
//! to wake it next ([`Engine::poll_timeout`]).
//!
//! It owns: which frames may arrive in which security state and what happens otherwise
//! ([`security`]), toggles and rekeying, resume counts and the acknowledgement policy
//! ([`resume`]), pending requests and their deadlines ([`requests`]), heartbeat deadlines, the
//! close handshake in every state, and file credit accounting ([`files`]). It must not touch
//! sockets, queues, tasks or the application's handlers.
//!
//! A session lives from its first opening to its end; a connection is one life of its transport.
//! The engine keeps the session's state (resume counts and buffer, pending requests, file
//! transfers, whether our direction was ever secure, the resume secret) across connections and starts each
//! connection's state afresh ([`Engine::attach`]).

pub(crate) mod files;
mod inbound;
mod outbound;
mod rate;
pub(crate) mod requests;
pub(crate) mod resume;
pub(crate) mod security;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{CloseInfo, Code, Error, Initiator};
use crate::frame::control::Close;
use crate::frame::{Frame, Kind};
use crate::protocol::Message;
use crate::security::handshake::{self, Handshake, Keys, Role, Step, SEC_OFF, SEC_ON};
use crate::security::identity::Fingerprint;
use crate::security::record::Sealer;
use crate::security::schedule::Secret;
use crate::security::{SecurityConfig, SecurityError, SecurityEvent, Suite};
use files::{FileEvent, Files};
use requests::Requests;
use resume::{BadCount, Resume};
use security::{Rx, Tx};

/// The settings a session's engine keeps for its whole life.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) security: Arc<SecurityConfig>,
    pub(crate) heartbeat_interval: Option<Duration>,
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) max_incoming_files: usize,
    pub(crate) resume_buffer: usize,
    pub(crate) resume_buffer_bytes: usize,
    pub(crate) rate_limit: Option<crate::config::RateLimit>,
}

/// What the driver must do, in order, after a frame or a key-exchange step.
pub(crate) enum Event {
    /// Hand an application message to the protocol.
    Deliver(Message),
    /// Hand a request to the protocol, with a responder for `request`.
    Request { request: u32, message: Message },
    /// Queue this frame for the peer behind what is queued (a pong, an error report, a toggle
    /// the peer asked for), waiting for room: backpressure on a peer that provokes many.
    Respond(Frame),
    /// Report to the application; the connection goes on unless a [`Event::Stop`] follows.
    Error(Error),
    /// Report a security change to the application.
    Security(SecurityEvent),
    /// Run this key-exchange step off the runtime's threads, then hand it to
    /// [`Engine::kex_done`] before reading on. Boxed: a job is larger than every other event
    /// together, and events are moved on every frame.
    Kex(Box<KexJob>),
    /// A file frame for the file module.
    File(FileEvent),
    /// The connection is over for the reader (the end is recorded: [`Engine::end_info`]).
    Stop,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Deliver(m) => write!(f, "Deliver({})", m.id),
            Event::Request { request, message } => write!(f, "Request({request}, {})", message.id),
            Event::Respond(frame) => write!(f, "Respond({:?} {})", frame.kind, frame.id),
            Event::Error(error) => write!(f, "Error({})", error.code()),
            Event::Security(event) => write!(f, "Security({event:?})"),
            Event::Kex(_) => f.write_str("Kex"),
            Event::File(event) => write!(f, "File({event:?})"),
            Event::Stop => f.write_str("Stop"),
        }
    }
}

/// A key-exchange step to run where it cannot stall other peers (it may cost milliseconds).
pub(crate) struct KexJob {
    handshake: Handshake,
    input: KexInput,
}

enum KexInput {
    /// Make the client's offer.
    Offer,
    /// A handshake message from the peer.
    Message(u32, Bytes),
}

/// A finished [`KexJob`].
pub(crate) struct KexDone {
    handshake: Handshake,
    result: Result<Step, SecurityError>,
}

impl KexJob {
    /// Does the work. Pure and synchronous.
    pub(crate) fn run(mut self) -> KexDone {
        let result = match &self.input {
            KexInput::Offer => self.handshake.offer().map(|send| Step {
                send,
                ..Step::default()
            }),
            KexInput::Message(id, payload) => self.handshake.on_message(*id, payload),
        };
        KexDone {
            handshake: self.handshake,
            result,
        }
    }
}

/// Where the key exchange stands, for callers that wait on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KexStatus {
    Idle,
    Running,
    Done(Suite),
    Failed(Code, String),
}

/// What an opening exchange hands to the engine: the key exchange (done in a keyed opening,
/// idle otherwise), both directions' state (keyed in a keyed opening, with the credentials
/// hellos already sealed and opened), and whether both directions start secure.
pub(crate) struct Opened {
    pub(crate) handshake: Handshake,
    pub(crate) tx: Tx,
    pub(crate) rx: Rx,
    /// What the key exchange of a keyed opening produced.
    pub(crate) keys: Option<Keys>,
    /// Both directions secure from the opening on (the `SECURE` extension).
    pub(crate) secure: bool,
}

/// What the writer learns from one [`Engine::transmit`].
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Our close frame is in the batch: nothing follows it, the write direction ends.
    pub(crate) close: bool,
    /// Each change of our direction's protection in this batch, in order.
    pub(crate) own: Vec<bool>,
}

/// Frames for the writer ahead of the queue.
enum Control {
    Frame(Frame),
    /// Our direction is keyed from here on (after the frame that completed our keys).
    Keys(Box<Sealer>),
}

/// One connection's state. `repr(C)`, what every frame sent reads first (see `Engine`).
#[repr(C)]
struct Conn {
    /// Nothing but control frames goes out until our `SEC_ON` has: a session whose direction
    /// was secure, or a strict connection, never sends an application or file frame in the clear.
    hold: bool,
    close_sent: bool,
    ping_due: bool,
    ping_sent: bool,
    /// The reader is done: the peer closed, the connection was lost, or a fatal error. (A
    /// graceful close of ours records the end but goes on reading until the peer answers.)
    stopped: bool,
    /// The session ends with this connection (it is not a lost connection of a resumable one).
    ends_session: bool,
    /// The peer's `CLOSE` arrived: answer it.
    peer_closed: bool,
    /// Both directions must stay secure: required here, or agreed in the opening.
    strict: bool,
    /// A toggle of our direction that waits for the key exchange (the peer asked).
    wants_own: Option<bool>,
    control: VecDeque<Control>,
    replay: Vec<Frame>,
    end: Option<CloseInfo>,
    tx: Tx,
    last_heard: Instant,
    rx: Rx,
    status: KexStatus,
    /// `None` while a [`KexJob`] holds it.
    handshake: Option<Handshake>,
}

/// A session's rules: the state of the session and of its current connection.
///
/// `repr(C)`, hot fields first: with thousands of peers, each cache line a frame touches is a
/// miss, so what every frame reads (the resume state, then the front of `conn`) sits together
/// at the start.
#[repr(C)]
pub(crate) struct Engine {
    /// Boxed: a session that cannot resume reads only that it has none.
    resume: Option<Box<Resume>>,
    /// Flood control, for the whole session; boxed, since most servers set no limit and
    /// inline it would cost every peer 144 octets.
    rate: Option<Box<rate::Rate>>,
    conn: Conn,
    settings: Settings,
    requests: Requests,
    /// Our direction was secure at some time in the session.
    ever_secure: bool,
    /// The session's resume secret, from its first key exchange.
    resume_secret: Option<Secret>,
    /// The server's key, as the last key exchange saw it (client side), and whether it is
    /// pinned.
    server_key: Option<(Fingerprint, bool)>,
    /// The session's file transfers: in a resumable session they outlive a lost connection
    /// (their frames are counted and sent again like messages).
    files: Files,
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
            | Code::UNTRUSTED_SERVER
    )
}

impl Conn {
    fn new(settings: &Settings, opened: Opened, now: Instant) -> Conn {
        let status = match opened.handshake.suite() {
            Some(suite) => KexStatus::Done(suite),
            None if opened.handshake.is_over() => {
                KexStatus::Failed(Code::NO_COMMON_SUITE, "no common security suite".into())
            }
            None => KexStatus::Idle,
        };
        let strict = settings.security.required || opened.secure;
        Conn {
            tx: opened.tx,
            rx: opened.rx,
            handshake: Some(opened.handshake),
            status,
            wants_own: None,
            strict,
            hold: false,
            control: VecDeque::new(),
            ping_due: false,
            replay: Vec::new(),
            last_heard: now,
            ping_sent: false,
            end: None,
            stopped: false,
            ends_session: false,
            peer_closed: false,
            close_sent: false,
        }
    }
}

impl Engine {
    /// A new session on its first connection; `resumable` when the server granted a resume
    /// token.
    pub(crate) fn new(settings: Settings, mut opened: Opened, resumable: bool, now: Instant) -> Engine {
        let resume =
            resumable.then(|| Box::new(Resume::new(settings.resume_buffer, settings.resume_buffer_bytes)));
        let keys = opened.keys.take();
        let conn = Conn::new(&settings, opened, now);
        let rate = settings
            .rate_limit
            .as_ref()
            .map(|limit| Box::new(rate::Rate::new(limit, now)));
        let mut engine = Engine {
            rate,
            files: Files::new(settings.max_incoming_files),
            settings,
            resume,
            requests: Requests::default(),
            ever_secure: false,
            resume_secret: None,
            server_key: None,
            conn,
        };
        if let Some(keys) = keys {
            engine.keys_ready(keys);
        }
        engine.start_connection();
        engine
    }

    /// Starts the next connection of a resumable session, whose peer has received `count` of
    /// our counted frames: what it missed is sent again first.
    pub(crate) fn attach(&mut self, mut opened: Opened, count: u64, now: Instant) -> Result<(), BadCount> {
        let replay = match self.resume.as_mut() {
            Some(resume) => resume.replay_after(count)?,
            None => Vec::new(),
        };
        let keys = opened.keys.take();
        self.conn = Conn::new(&self.settings, opened, now);
        self.conn.replay = replay;
        if let Some(keys) = keys {
            self.keys_ready(keys);
        }
        self.start_connection();
        Ok(())
    }

    /// Starts a new session (a client renewing after a refused resume): the session's counts,
    /// buffer and secrets begin again, and pending requests fail with `ended`.
    pub(crate) fn renew(&mut self, opened: Opened, resumable: bool, now: Instant, ended: &CloseInfo) {
        self.requests.fail_all(ended);
        *self = Engine::new(self.settings.clone(), opened, resumable, now);
    }

    /// A connection that must be secure sends `SEC_ON` before anything else.
    fn start_connection(&mut self) {
        if self.conn.strict || self.ever_secure {
            self.conn.hold = true;
            if !self.conn.tx.is_keyed() {
                let error = SecurityError::Required("security could not be re-established");
                self.record_end(error.code(), error.to_string(), Initiator::Local, true);
                return;
            }
            self.conn.control.push_back(Control::Frame(marker(true)));
        }
    }

    /// Takes what a keyed opening learnt about keys: the resume secret of a session's first
    /// exchange and the server's key.
    pub(crate) fn keys_ready(&mut self, keys: Keys) {
        if self.resume_secret.is_none() {
            self.resume_secret = Some(keys.resumption);
        }
        if let Some(fingerprint) = keys.server_key {
            self.server_key = Some((fingerprint, keys.authenticated));
        }
    }

    /// Whether the session's first key exchange has happened (a resume then needs a binder).
    pub(crate) fn resume_secret(&self) -> Option<&Secret> {
        self.resume_secret.as_ref()
    }

    /// Whether a peer's count on a resume fits what this side wrote and still holds.
    pub(crate) fn check_count(&self, count: u64) -> Result<(), BadCount> {
        match &self.resume {
            Some(resume) => resume.check_count(count),
            None => Err(BadCount {
                claimed: count,
                low: 0,
                high: 0,
            }),
        }
    }

    /// Application frames received in the session (the count a resume hello carries).
    pub(crate) fn received(&self) -> u64 {
        self.resume.as_ref().map_or(0, |resume| resume.received())
    }

    /// Whether our direction is protected on the wire now.
    pub(crate) fn is_secure(&self) -> bool {
        self.conn.tx.is_secure()
    }

    /// Whether the peer's direction is protected, as the last frame read showed.
    pub(crate) fn is_peer_secure(&self) -> bool {
        self.conn.rx.is_secure()
    }

    pub(crate) fn suite(&self) -> Option<Suite> {
        match self.conn.status {
            KexStatus::Done(suite) => Some(suite),
            _ => None,
        }
    }

    pub(crate) fn status(&self) -> KexStatus {
        self.conn.status.clone()
    }

    /// The server's key as the last key exchange saw it, and whether it is pinned.
    pub(crate) fn server_key(&self) -> Option<(Fingerprint, bool)> {
        self.server_key
    }

    /// How the connection ended, once it has.
    pub(crate) fn end_info(&self) -> Option<CloseInfo> {
        self.conn.end.clone()
    }

    /// Whether the session ends with this connection's end.
    pub(crate) fn ends_with_connection(&self) -> bool {
        self.conn.ends_session || self.resume.is_none()
    }

    /// The peer's close arrived and waits for our answer.
    pub(crate) fn peer_closed(&self) -> bool {
        self.conn.peer_closed
    }

    /// Records how the connection ends; the first cause wins. `ends_session`: the session
    /// ends too (a lost connection of a resumable session does not).
    pub(crate) fn record_end(
        &mut self,
        code: Code,
        reason: impl Into<String>,
        initiator: Initiator,
        ends_session: bool,
    ) {
        if self.conn.end.is_none() {
            let reason = Close::new(code, reason).reason;
            self.conn.end = Some(CloseInfo::new(code, reason, initiator));
            self.conn.ends_session = ends_session || self.resume.is_none();
        }
    }

    /// A fatal error found here: the end, and the events that tell the driver.
    fn fail(&mut self, error: Error, events: &mut VecDeque<Event>) {
        self.on_error(&error);
        events.push_back(Event::Error(error));
        events.push_back(Event::Stop);
    }

    /// The connection is lost (not closed): a resumable session waits for the next one.
    fn lost(&mut self, reason: &str, events: &mut VecDeque<Event>) {
        self.on_lost(reason);
        events.push_back(Event::Stop);
    }

    /// The stream ended, or broke, without a close frame.
    pub(crate) fn on_lost(&mut self, reason: &str) {
        self.record_end(Code::ABNORMAL, reason, Initiator::Remote, false);
        self.conn.stopped = true;
    }

    /// A fatal error, found here or by the driver (an undecodable frame): the end, and the
    /// reader stops. A heartbeat timeout is a lost connection, which a resumable session
    /// survives; every other fatal error ends the session.
    pub(crate) fn on_error(&mut self, error: &Error) {
        let ends = !matches!(error, Error::HeartbeatTimeout(_));
        self.record_end(error.code(), error.to_string(), Initiator::Local, ends);
        self.conn.stopped = true;
    }

    /// The close frame for the recorded end, sealed when our direction is keyed; `None` when
    /// there is nothing to send (no end, a lost connection, or ours already went).
    pub(crate) fn close_frame(&mut self, now: Instant) -> Option<Frame> {
        let info = self.conn.end.clone()?;
        if info.code == Code::ABNORMAL || self.conn.close_sent {
            return None;
        }
        self.conn.close_sent = true;
        let frame = Close::new(info.code, info.reason).to_frame(Kind::Close, 0);
        self.conn.tx.seal_now(frame, now).ok()
    }

    /// The session has ended: every pending request fails with how.
    pub(crate) fn session_ended(&mut self, info: &CloseInfo) {
        self.requests.fail_all(info);
    }

    /// The read loop is ready for the peer again (a handler returned): silence is measured
    /// from now.
    pub(crate) fn heard(&mut self, now: Instant) {
        self.conn.last_heard = now;
        self.conn.ping_sent = false;
    }

    /// Until when the driver must not read: the peer is over its rate under
    /// [`RatePolicy::Slow`](crate::RatePolicy::Slow).
    pub(crate) fn read_pause(&self, now: Instant) -> Option<Instant> {
        self.rate
            .as_deref()
            .and_then(rate::Rate::paid_at)
            .filter(|&until| until > now)
    }

    /// Whether the peer's frames are under a rate limit at all (else there is never a pause).
    pub(crate) fn rate_limited(&self) -> bool {
        self.rate.is_some()
    }

    /// Where the heartbeat's silence starts: the last frame, or the end of a rate pause (the
    /// peer is not silent while we choose not to read).
    fn silence_from(&self) -> Instant {
        let paid = self.rate.as_deref().and_then(rate::Rate::paid_at);
        self.conn.last_heard.max(paid.unwrap_or(self.conn.last_heard))
    }

    /// Takes a received frame's tokens; under [`RatePolicy::Close`](crate::RatePolicy::Close),
    /// `Err` when the peer is over its rate.
    fn charge(&mut self, frame: &Frame, now: Instant) -> Result<(), Error> {
        let Some(rate) = self.rate.as_mut() else {
            return Ok(());
        };
        let len = frame.payload.len() + crate::frame::HEADER_LEN;
        rate.charge(now, frame.kind.is_application(), len)
            .map_err(Error::RateLimited)
    }

    /// When [`Engine::on_timeout`] must run next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let heartbeat = self.settings.heartbeat_interval.map(|interval| {
            let silence = if self.conn.ping_sent {
                interval + self.settings.heartbeat_timeout
            } else {
                interval
            };
            self.silence_from() + silence
        });
        match (heartbeat, self.requests.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time has passed: requests past their deadline fail; after the heartbeat interval of
    /// silence a `PING` (and a due `ACK`) goes out; after the timeout too, the connection is
    /// lost with `HEARTBEAT_TIMEOUT`.
    pub(crate) fn on_timeout(&mut self, now: Instant, events: &mut VecDeque<Event>) {
        self.requests.expire(now);
        let Some(interval) = self.settings.heartbeat_interval else {
            return;
        };
        if self.conn.stopped {
            return;
        }
        let silent = now.saturating_duration_since(self.silence_from());
        let dead = interval + self.settings.heartbeat_timeout;
        if silent >= dead {
            self.fail(Error::HeartbeatTimeout(dead), events);
        } else if silent >= interval && !self.conn.ping_sent {
            self.conn.ping_sent = true;
            self.conn.ping_due = true;
            if let Some(resume) = self.resume.as_mut() {
                resume.on_silence();
            }
        }
    }

    /// Registers a request: its id, the deadline, who waits.
    pub(crate) fn register_request(
        &mut self,
        now: Instant,
        timeout: Duration,
        waiter: requests::Waiter,
    ) -> u32 {
        self.requests.register(now, timeout, waiter)
    }

    pub(crate) fn forget_request(&mut self, id: u32) {
        self.requests.forget(id);
    }

    /// Starts the key exchange the application asked for: a server queues `START`; a client
    /// gets the job that makes its offer. `Ok(None)`: under way or done already.
    pub(crate) fn begin_kex(&mut self) -> Result<Option<KexJob>, Error> {
        match &self.conn.status {
            KexStatus::Done(_) | KexStatus::Running => return Ok(None),
            KexStatus::Failed(code, reason) => {
                return Err(Error::FailSecure {
                    code: *code,
                    reason: reason.clone(),
                })
            }
            KexStatus::Idle => {}
        }
        if !self.settings.security.can_exchange() {
            return Err(SecurityError::NoCommonSuite.into());
        }
        self.conn.status = KexStatus::Running;
        let Some(mut handshake) = self.conn.handshake.take() else {
            return Ok(None);
        };
        if handshake.role() == Role::Server {
            if let Some(start) = handshake.request() {
                self.conn.control.push_back(Control::Frame(start));
            }
            self.conn.handshake = Some(handshake);
            return Ok(None);
        }
        Ok(Some(KexJob {
            handshake,
            input: KexInput::Offer,
        }))
    }

    /// Takes back a finished key-exchange step and applies it.
    pub(crate) fn kex_done(&mut self, done: KexDone, now: Instant, events: &mut VecDeque<Event>) {
        self.conn.handshake = Some(done.handshake);
        match done.result {
            Ok(step) => self.apply_step(step, now, events),
            Err(error) => {
                self.conn.status = KexStatus::Failed(error.code(), error.to_string());
                self.fail(error.into(), events);
            }
        }
    }

    fn apply_step(&mut self, step: Step, _now: Instant, events: &mut VecDeque<Event>) {
        if let Some(rx) = step.rx {
            self.conn.rx.install(rx);
        }
        if let Some(frame) = step.send {
            self.conn.control.push_back(Control::Frame(frame));
        }
        if let Some(tx) = step.tx {
            self.conn.control.push_back(Control::Keys(Box::new(tx)));
        }
        if let Some(keys) = step.keys {
            self.keys_ready(keys);
        }
        match step.event {
            Some(event @ SecurityEvent::Handshaked { suite }) => {
                self.conn.status = KexStatus::Done(suite);
                events.push_back(Event::Security(event));
                if let Some(on) = self.conn.wants_own.take() {
                    events.push_back(Event::Respond(marker(on)));
                }
            }
            Some(SecurityEvent::FailSecure { code, reason }) => self.on_fail_secure(code, reason, events),
            Some(event) => events.push_back(Event::Security(event)),
            None if self.conn.status == KexStatus::Idle => self.conn.status = KexStatus::Running,
            None => {}
        }
    }

    /// No common suite: go on in plain only where this side opted in.
    fn on_fail_secure(&mut self, code: Code, reason: String, events: &mut VecDeque<Event>) {
        self.conn.status = KexStatus::Failed(code, reason.clone());
        self.conn.wants_own = None;
        events.push_back(Event::Security(SecurityEvent::FailSecure { code, reason }));
        let security = &self.settings.security;
        if security.required || !security.fallback_plain {
            self.fail(SecurityError::Required("no common security suite").into(), events);
        }
    }

    /// Files: a new outgoing transfer id.
    pub(crate) fn new_outgoing_file(&mut self) -> u32 {
        self.files.new_outgoing()
    }

    pub(crate) fn end_outgoing_file(&mut self, id: u32) {
        self.files.end_outgoing(id);
    }

    pub(crate) fn accept_file(&mut self, id: u32, window: u32) -> bool {
        self.files.accept(id, window)
    }

    pub(crate) fn grant_file(&mut self, id: u32, n: u32) {
        self.files.grant(id, n);
    }

    pub(crate) fn end_incoming_file(&mut self, id: u32) {
        self.files.end_incoming(id);
    }

    /// Whether our direction may be turned off (never on a strict connection).
    pub(crate) fn may_turn_off(&self) -> Result<(), Error> {
        if self.conn.strict {
            return Err(SecurityError::Required("this connection must stay secure").into());
        }
        Ok(())
    }
}

/// A toggle of our direction as it travels through the queue (`SEC_ON` / `SEC_OFF`): sealed
/// where it stands, so every frame goes out in the mode in force when it was queued.
pub(crate) fn marker(on: bool) -> Frame {
    handshake::frame(if on { SEC_ON } else { SEC_OFF }, Bytes::new())
}
