//! One peer: the [`Peer`] handle, its session, the engine that holds every rule, and the driver
//! that runs each connection.
//!
//! This module owns a peer from the end of its opening to the end of its session. The rules
//! live in [`engine`], a synchronous state machine with no IO and no clock; the [`driver`] only
//! moves bytes: it reads frames and feeds the engine, awaits handlers, and writes what the
//! engine emits. Between them sit the bounded outbound queue ([`queue`]) that senders fill, and
//! the session ([`Shared`]): queue, engine, session store, how it ended. A resumable session
//! outlives a lost connection: the next connection takes over the queue, the engine's session
//! state and the dispatcher, and sends again what the peer missed.
//!
//! It must not know about listeners, the server's peer table, files or any registry's rules:
//! those reach it through [`Hooks`], [`link::FileSink`] and [`Protocol`].

pub(crate) mod driver;
pub(crate) mod engine;
pub(crate) mod link;
mod peer;
mod queue;
pub(crate) mod request;
mod signal;
mod through;

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Instant;

use futures_util::task::AtomicWaker;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::ConnectionConfig;
use crate::error::{CloseInfo, Error};
use crate::protocol::{BoxFuture, Dispatch, Protocol};
use crate::security::SecurityEvent;
use crate::session::Session;
use crate::transport::PeerInfo;
use engine::{Engine, KexDone, KexJob, KexStatus};
pub use peer::Peer;
use signal::{Signal, TaskToken};

/// Identifies a peer: unique in the process, and across the nodes of a cluster (a random
/// 32-bit prefix per process, then a counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl PeerId {
    /// A new id: sessions may move between servers sharing a store, and nodes of a cluster
    /// address each other's peers by id.
    pub(crate) fn next() -> PeerId {
        static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let prefix =
            *PREFIX.get_or_init(|| u64::from(u32::from_be_bytes(crate::security::random_array())) << 32);
        PeerId(prefix | (NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff))
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
    /// The session is over; called exactly once.
    fn closed(&self, peer: &Peer, info: &CloseInfo);
    /// The security layer reports something.
    fn security(&self, peer: &Peer, event: &SecurityEvent);
}

/// Runs key-exchange steps off the runtime's worker threads, at most `permits` at once, so a
/// flood of handshakes never stalls the peers already connected.
#[derive(Clone)]
pub(crate) struct KexPool {
    permits: Arc<Semaphore>,
}

impl KexPool {
    pub(crate) fn new(concurrent: usize) -> KexPool {
        KexPool {
            permits: Arc::new(Semaphore::new(concurrent.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }

    /// Runs one step on the blocking pool once a permit is free; `None` if the work could not
    /// run to its end (the runtime is shutting down).
    pub(crate) async fn run(&self, job: Box<KexJob>) -> Option<KexDone> {
        let _permit = self.permits.acquire().await.ok()?;
        tokio::task::spawn_blocking(move || job.run()).await.ok()
    }

    /// Runs any blocking closure under the same bound (the opening's key exchange).
    pub(crate) async fn run_fn<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let _permit = self.permits.acquire().await.ok()?;
        tokio::task::spawn_blocking(work).await.ok()
    }
}

/// Where the key exchange and our direction stand, for tasks that wait on them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SecState {
    pub(crate) kex: KexStatus,
    /// Our direction is protected on the wire.
    pub(crate) own: bool,
    /// The peer's direction is protected, as the last frame read showed.
    pub(crate) peer: bool,
}

/// One connection of a session, as the driver and the handles see it: addresses and the
/// flags that stop its loops. The rules of the connection are in the engine.
pub(crate) struct Conn {
    info: PeerInfo,
    /// Set to stop both loops at once (forced close, fatal error, end of either loop). Only
    /// the connection's task waits on it.
    stop: TaskToken,
    /// Set when the peer's close frame arrived and must be answered.
    peer_closed: TaskToken,
    /// Cancelled when the connection's task has ended.
    done: CancellationToken,
}

impl Conn {
    pub(crate) fn new(info: PeerInfo) -> Arc<Conn> {
        Arc::new(Conn {
            info,
            stop: TaskToken::default(),
            peer_closed: TaskToken::default(),
            done: CancellationToken::new(),
        })
    }
}

/// What the owner of a new session provides.
///
/// `repr(C)`: `meters`, which every frame sent reads, first (see `Shared`).
#[repr(C)]
pub(crate) struct Owner {
    /// The server's meters (counting nothing on clients).
    pub(crate) meters: crate::meters::Meters,
    /// The server's state, for [`Peer`]s that a server accepted (read by `Peer::server`); a
    /// session resumed on another server (sharing the store) moves to it.
    pub(crate) server: RwLock<Option<Weak<dyn Any + Send + Sync>>>,
    pub(crate) kex: KexPool,
    pub(crate) files: Arc<dyn link::FileSink>,
}

/// A peer's session: what lives from the opening to the end, across the connections of a
/// resumable session.
///
/// `repr(C)`, hot fields first: a send to an idle peer reads `closing`, `through`, the meters,
/// the queue's length and the front of `engine`, and with thousands of peers each cache line
/// it touches is a miss.
#[repr(C)]
pub(crate) struct Shared {
    /// Set once no more frames may be queued: the session is ending.
    closing: AtomicBool,
    /// What the writer shares with senders that write through.
    through: through::Through,
    owner: Owner,
    /// The outbound queue. A close frame in it is a graceful close: the writer writes
    /// everything before it, then it, then ends the write direction.
    queue: queue::Queue,
    engine: Mutex<Engine>,
    /// Wakes the writer when something other than the queue gives it work (a key exchange
    /// started by the application, a tail a sender left).
    writer: AtomicWaker,
    /// One for every session of a server: 280 octets a peer otherwise.
    config: Arc<ConnectionConfig>,
    /// The current connection, or the last one while a resumable session waits to resume.
    conn: RwLock<Arc<Conn>>,
    id: PeerId,
    session: Session,
    /// Becomes `Some` when the session has ended.
    finished: Signal<Option<CloseInfo>>,
    security: Signal<SecState>,
    /// What a connection hands to the next one of the session.
    idle: Mutex<Idle>,
    /// The running connection's hooks, for reports from tasks other than its driver.
    hooks: RwLock<Option<Arc<dyn Hooks>>>,
    /// The session's resume token (a client's changes when it renews its session).
    resume_token: Mutex<Option<[u8; 32]>>,
}

/// Kept between two connections of a session.
#[derive(Default)]
struct Idle {
    dispatch: Option<Box<dyn Dispatch>>,
    hooks: Option<Arc<dyn Hooks>>,
}

impl Shared {
    fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_idle(&self) -> MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the engine's security state to the tasks waiting on it.
    fn publish_security(&self, engine: &Engine) {
        let state = SecState {
            kex: engine.status(),
            own: engine.is_secure(),
            peer: engine.is_peer_secure(),
        };
        self.security.update(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }
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
}

/// The engine settings of a connection configuration.
pub(crate) fn settings(config: &ConnectionConfig) -> engine::Settings {
    engine::Settings {
        security: Arc::new(config.security.clone()),
        heartbeat_interval: config.heartbeat_interval,
        heartbeat_timeout: config.heartbeat_timeout,
        max_incoming_files: config.files.max_incoming,
        resume_buffer: config.resume_buffer,
        resume_buffer_bytes: config.resume_buffer_bytes,
        rate_limit: config.rate_limit,
    }
}

/// Creates a session on its first connection.
pub(crate) fn new_peer(
    info: PeerInfo,
    config: Arc<ConnectionConfig>,
    engine: Engine,
    owner: Owner,
    protocol: &dyn Protocol,
    resume_token: Option<[u8; 32]>,
) -> NewPeer {
    let conn = Conn::new(info);
    let security = SecState {
        kex: engine.status(),
        own: engine.is_secure(),
        peer: engine.is_peer_secure(),
    };
    let shared = Shared {
        id: PeerId::next(),
        queue: queue::Queue::new(config.outbound_queue),
        engine: Mutex::new(engine),
        writer: AtomicWaker::new(),
        through: through::Through::default(),
        session: Session::default(),
        closing: AtomicBool::new(false),
        finished: Signal::new(None),
        security: Signal::new(security),
        owner,
        conn: RwLock::new(conn.clone()),
        idle: Mutex::new(Idle::default()),
        hooks: RwLock::new(None),
        resume_token: Mutex::new(resume_token),
        config,
    };
    let peer = Peer::from_shared(Arc::new(shared));
    let dispatch = protocol.open(&peer);
    NewPeer {
        peer,
        start: Start {
            conn,
            dispatch,
            first: true,
        },
    }
}

/// Why a resume was refused.
#[derive(Debug)]
pub(crate) enum ResumeRefused {
    /// The session has ended or is ending, or its connection has not handed over.
    Ended,
    /// The peer's count does not fit ours.
    Count(engine::resume::BadCount),
}

/// How a connection's task ended.
pub(crate) enum Outcome {
    /// The session ended with it.
    Ended,
    /// The connection was lost; the resumable session waits for the next one.
    Parked(CloseInfo),
}

impl Peer {
    /// Prepares the next connection of a resumable session, whose peer has received `count` of
    /// our application frames. The current connection must be over.
    pub(crate) fn resume(
        &self,
        info: PeerInfo,
        opened: engine::Opened,
        count: u64,
    ) -> Result<Start, ResumeRefused> {
        let shared = self.shared();
        if shared.closing.load(Ordering::Acquire) || !self.conn().done.is_cancelled() {
            return Err(ResumeRefused::Ended);
        }
        let mut idle = shared.lock_idle();
        let Some(dispatch) = idle.dispatch.take() else {
            return Err(ResumeRefused::Ended);
        };
        if let Err(bad) = shared.engine().attach(opened, count, Instant::now()) {
            idle.dispatch = Some(dispatch);
            return Err(ResumeRefused::Count(bad));
        }
        idle.hooks = None;
        drop(idle);
        shared.publish_security(&shared.engine());
        let conn = Conn::new(info);
        *shared.conn.write().unwrap_or_else(|p| p.into_inner()) = conn.clone();
        Ok(Start {
            conn,
            dispatch,
            first: false,
        })
    }

    /// Starts a new session on a client's new connection, after the server refused to resume
    /// the old one: what was queued and not yet written goes out on the new session; what the
    /// old one wrote and the server did not acknowledge is lost, and pending requests fail.
    pub(crate) fn renew(
        &self,
        info: PeerInfo,
        opened: engine::Opened,
        resume_token: Option<[u8; 32]>,
    ) -> Result<Start, ResumeRefused> {
        let shared = self.shared();
        if shared.closing.load(Ordering::Acquire) || !self.conn().done.is_cancelled() {
            return Err(ResumeRefused::Ended);
        }
        let mut idle = shared.lock_idle();
        let Some(dispatch) = idle.dispatch.take() else {
            return Err(ResumeRefused::Ended);
        };
        idle.hooks = None;
        drop(idle);
        let renewed = crate::error::CloseInfo::new(
            crate::error::Code::RESUME_FAILED,
            "the session was renewed",
            crate::error::Initiator::Remote,
        );
        {
            let mut engine = shared.engine();
            engine.renew(opened, resume_token.is_some(), Instant::now(), &renewed);
            shared.publish_security(&engine);
        }
        // The new session knows nothing of the old one's transfers: they end, and their
        // frames still queued go with them.
        self.end_transfers(&renewed);
        shared.queue.retain(|frame| !frame.kind.is_file());
        *shared.resume_token.lock().unwrap_or_else(|p| p.into_inner()) = resume_token;
        let conn = Conn::new(info);
        *shared.conn.write().unwrap_or_else(|p| p.into_inner()) = conn.clone();
        Ok(Start {
            conn,
            dispatch,
            first: false,
        })
    }

    /// Ends a session that could not resume (refused, or the reconnection gave up).
    pub(crate) fn give_up(&self, info: &CloseInfo) {
        let shared = self.shared();
        shared.closing.store(true, Ordering::Release);
        let hooks = shared.lock_idle().hooks.take();
        if let Some(hooks) = hooks {
            self.end_session(info, hooks.as_ref());
        }
    }

    /// Stops the current connection of a resumable session (if it still runs) so that a new one
    /// can take over, and waits for it to hand over, at most `close_timeout`.
    pub(crate) async fn take_over(&self) {
        let conn = self.conn();
        if !conn.done.is_cancelled() {
            self.shared().engine().on_lost("replaced by a resumed connection");
            conn.stop.cancel();
            let _ = tokio::time::timeout(self.shared().config.close_timeout, conn.done.cancelled()).await;
        }
    }

    /// Runs the engine's key-exchange job in this task's stead: on the pool, then back into the
    /// engine; what it yields is reported like the driver would.
    async fn run_kex(&self, job: Box<KexJob>) {
        let shared = self.shared();
        let done = shared.owner.kex.run(job).await;
        let mut events = std::collections::VecDeque::new();
        {
            let mut engine = shared.engine();
            match done {
                Some(done) => engine.kex_done(done, Instant::now(), &mut events),
                None => engine.record_end(
                    crate::error::Code::INTERNAL_ERROR,
                    "the key exchange could not run",
                    crate::error::Initiator::Local,
                    true,
                ),
            }
            shared.publish_security(&engine);
        }
        shared.writer.wake();
        driver::side_events(self, events).await;
    }
}
