//! Configuration: every limit with its default and what happens when it is hit.

use std::time::Duration;

use crate::frame::DEFAULT_MAX_PAYLOAD;
use crate::security::SecurityConfig;

use crate::setters::setters;

/// Settings of one connection, on either side.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// Largest payload of one frame, in octets. Default 16 MiB.
    ///
    /// An incoming frame announcing more is refused before anything is allocated and the
    /// connection closes with `MESSAGE_TOO_BIG` (1009); sending more fails at the sender with
    /// [`FrameError::PayloadTooLarge`](crate::frame::FrameError::PayloadTooLarge). The read buffer
    /// grows to the largest frame actually received, so this also bounds per-peer read memory.
    /// Big data belongs in file streams, not messages.
    pub max_payload: u32,
    /// Frames the outbound queue holds. Default 1024.
    ///
    /// When full, `send` waits (backpressure), `try_send` fails with
    /// [`Error::QueueFull`](crate::Error::QueueFull), and a server broadcast applies
    /// [`ServerConfig::slow_peer`]. Worst-case queued memory is this times `max_payload`, but
    /// broadcast payloads are shared between queues, not copied.
    pub outbound_queue: usize,
    /// Most frames the writer takes from the queue for one batch of writes. Default 64.
    pub write_batch: usize,
    /// How long a graceful close waits for queue space and for the peer's close frame before the
    /// connection is dropped. Default 5 s.
    ///
    /// Also how long a connection whose close frame went out keeps reading, and dropping, what
    /// the peer still sends, until the peer closes too: dropping a TCP connection with unread
    /// data resets it, and the reset can cost the peer the close frame (its next write fails
    /// before it reads the frame; some systems discard what it has not read). The
    /// drain holds the socket and no buffer; a longer timeout lets a slow peer see the close
    /// code, a shorter one frees the socket sooner from a peer that never closes.
    ///
    /// And how long a connection whose write failed keeps reading for a close frame that may
    /// have arrived before the failure (the read usually ends at once, at that frame or at
    /// the reset).
    pub close_timeout: Duration,
    /// Sets `TCP_NODELAY` (no Nagle delay on small frames). Default `true`.
    pub nodelay: bool,
    /// Most octets a WebSocket peer's read takes while nothing is pending, 1 KiB to 64 KiB.
    /// Default 64 KiB (TCP peers read the same).
    ///
    /// The read goes into a per-thread scratch buffer; the connection keeps memory only for
    /// what arrived, and for a message whose header arrived, room for all of it, which the
    /// next read fills directly. An idle peer holds no read buffer whatever this is. A smaller
    /// value copies less out of the scratch but takes more system calls per message: at the
    /// former default of 4 KiB, a 16 KiB round trip took 8 % longer over TCP.
    pub ws_read_buffer: usize,
    /// Security: suites, pre-shared key, whether security is required, key rotation. Default
    /// [`SecurityConfig::default`] (both suites offered, nothing required).
    pub security: SecurityConfig,
    /// File transfers: chunk size, window, concurrent incoming transfers. Default
    /// [`FileConfig::default`](crate::file::FileConfig::default).
    pub files: crate::file::FileConfig,
    /// How long the connection may be silent before this side sends a `PING`. Default 25 s;
    /// `None` sends no heartbeats (the peer's own heartbeats are still answered).
    ///
    /// Any frame from the peer counts as a sign of life. If nothing arrives within
    /// `heartbeat_interval + heartbeat_timeout` of the last frame, the connection closes with
    /// `HEARTBEAT_TIMEOUT` (4009). Time a handler spends on a message does not count: the
    /// silence is measured while the connection is waiting to read.
    pub heartbeat_interval: Option<Duration>,
    /// How long after its `PING` this side waits for any frame before closing with
    /// `HEARTBEAT_TIMEOUT`. Default 20 s.
    pub heartbeat_timeout: Duration,
    /// How long [`Peer::request`](crate::Peer::request) waits for the reply. Default 30 s;
    /// then it fails with [`Error::RequestTimeout`](crate::Error::RequestTimeout) and a late
    /// reply is refused with `UNKNOWN_REQUEST` (4011).
    pub request_timeout: Duration,
    /// Resumable sessions only: most application and file frames sent but not yet acknowledged
    /// by the peer. Default 4096 (at least 64 is used).
    ///
    /// These are kept to be sent again after a reconnect. When the buffer is full the writer
    /// stops taking frames from the outbound queue until the peer acknowledges (every 32 frames,
    /// and with each heartbeat), so the queue fills and `send` waits: backpressure, never loss.
    pub resume_buffer: usize,
    /// Resumable sessions only: most payload octets in the resume buffer. Default 16 MiB. The
    /// last batch taken may exceed it by at most `write_batch` frames.
    pub resume_buffer_bytes: usize,
    /// Flood control on what the peer sends: message and byte rates, and whether a peer over
    /// its rate is slowed or closed. Default `None` (no limit).
    ///
    /// See [`RateLimit`]. Counted per session (a reconnect does not refill the buckets).
    pub rate_limit: Option<RateLimit>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_payload: DEFAULT_MAX_PAYLOAD,
            outbound_queue: 1024,
            write_batch: 64,
            close_timeout: Duration::from_secs(5),
            nodelay: true,
            ws_read_buffer: crate::transport::scratch::SCRATCH_LEN,
            security: SecurityConfig::default(),
            files: crate::file::FileConfig::default(),
            heartbeat_interval: Some(Duration::from_secs(25)),
            heartbeat_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(30),
            resume_buffer: 4096,
            resume_buffer_bytes: 16 * 1024 * 1024,
            rate_limit: None,
        }
    }
}

setters!(ConnectionConfig {
    /// Sets [`ConnectionConfig::max_payload`].
    max_payload: u32,
    /// Sets [`ConnectionConfig::outbound_queue`].
    outbound_queue: usize,
    /// Sets [`ConnectionConfig::write_batch`].
    write_batch: usize,
    /// Sets [`ConnectionConfig::close_timeout`].
    close_timeout: Duration,
    /// Sets [`ConnectionConfig::nodelay`].
    nodelay: bool,
    /// Sets [`ConnectionConfig::ws_read_buffer`].
    ws_read_buffer: usize,
    /// Sets [`ConnectionConfig::security`].
    security: SecurityConfig,
    /// Sets [`ConnectionConfig::files`].
    files: crate::file::FileConfig,
    /// Sets [`ConnectionConfig::heartbeat_interval`].
    heartbeat_interval: Option<Duration>,
    /// Sets [`ConnectionConfig::heartbeat_timeout`].
    heartbeat_timeout: Duration,
    /// Sets [`ConnectionConfig::request_timeout`].
    request_timeout: Duration,
    /// Sets [`ConnectionConfig::resume_buffer`].
    resume_buffer: usize,
    /// Sets [`ConnectionConfig::resume_buffer_bytes`].
    resume_buffer_bytes: usize,
    /// Sets [`ConnectionConfig::rate_limit`].
    rate_limit: Option<RateLimit>,
});

/// A token bucket: up to `burst` at once, refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bucket {
    /// Tokens added per second (at least 1 is used).
    pub per_second: u64,
    /// Most tokens held: what a peer that was quiet may send at once (at least 1 is used).
    pub burst: u64,
}

impl Bucket {
    /// A bucket of `burst` tokens refilled at `per_second`.
    pub fn new(per_second: u64, burst: u64) -> Bucket {
        Bucket { per_second, burst }
    }
}

/// Flood control on what a peer sends ([`ConnectionConfig::rate_limit`]).
///
/// Every application frame (message, request, reply) takes a token from `messages`; every
/// frame, control and file frames included, takes its length (header and payload) from
/// `bytes`. A frame larger than the byte burst passes a full bucket and leaves it in debt.
/// What happens to a peer over its rate is the [`RatePolicy`].
///
/// ```
/// use truflux::{ConnectionConfig, RateLimit, RatePolicy};
/// // 20 messages a second with bursts of 50, and 1 MiB/s with bursts of 4 MiB; slowed.
/// let limit = RateLimit::new(RatePolicy::Slow)
///     .messages(20, 50)
///     .bytes(1 << 20, 4 << 20);
/// let config = ConnectionConfig::default().rate_limit(Some(limit));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Application frames. Default `None` (not limited).
    pub messages: Option<Bucket>,
    /// Octets of every frame. Default `None` (not limited).
    pub bytes: Option<Bucket>,
    /// What happens to a peer over its rate.
    pub policy: RatePolicy,
}

impl RateLimit {
    /// No bucket yet, under `policy`.
    pub fn new(policy: RatePolicy) -> RateLimit {
        RateLimit {
            messages: None,
            bytes: None,
            policy,
        }
    }

    /// Limits application frames to `per_second`, with bursts of `burst`.
    #[must_use]
    pub fn messages(mut self, per_second: u64, burst: u64) -> RateLimit {
        self.messages = Some(Bucket::new(per_second, burst));
        self
    }

    /// Limits octets to `per_second`, with bursts of `burst`.
    #[must_use]
    pub fn bytes(mut self, per_second: u64, burst: u64) -> RateLimit {
        self.bytes = Some(Bucket::new(per_second, burst));
        self
    }
}

/// What happens to a peer that sends faster than its [`RateLimit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RatePolicy {
    /// Backpressure: the frame is handled, and nothing more is read from that peer until its
    /// buckets have refilled, so the peer's own sends wait on its transport. Other peers are
    /// not affected; heartbeats do not time out while a peer is held. The default.
    #[default]
    Slow,
    /// The frame that finds too few tokens is not handled; the connection closes with
    /// `POLICY_VIOLATION` (1008), which ends the session, and the error hook gets
    /// [`Error::RateLimited`](crate::Error::RateLimited).
    Close,
}

/// What a server broadcast does with a peer whose outbound queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlowPeerPolicy {
    /// Close that peer with `SLOW_CONSUMER` (4007); its disconnect handler says so. The default.
    #[default]
    Close,
    /// Leave the peer connected without the message, and name it in the
    /// [`BroadcastReport`](crate::BroadcastReport) so the caller decides.
    Report,
}

/// Settings of a server.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Settings of each accepted connection.
    pub connection: ConnectionConfig,
    /// How long a new connection has for its whole opening (hello, key exchange,
    /// credentials, token validation). Default 10 s. When it runs out the connection is sent a
    /// close with `HANDSHAKE_TIMEOUT` (4005) and dropped.
    pub handshake_timeout: Duration,
    /// Most peers connected at once, connections in their opening included. Default 65 536. A
    /// connection beyond it is sent a close with `TRY_AGAIN_LATER` (1013) and dropped; its
    /// client reports that code. Sessions waiting to resume count as connected.
    pub max_connections: usize,
    /// What broadcast does with a peer whose queue is full. Default [`SlowPeerPolicy::Close`].
    pub slow_peer: SlowPeerPolicy,
    /// Rooms: limits, and what a room remembers. Default [`RoomConfig::default`](crate::RoomConfig::default).
    pub rooms: crate::RoomConfig,
    /// How many connections may be in their opening exchange at once (hello, key exchange,
    /// credentials). Default 1024. They count against `max_connections` too; a connection
    /// beyond either limit is sent a close with `TRY_AGAIN_LATER` (1013) before anything of
    /// it is read.
    pub max_opening: usize,
    /// How many key exchanges compute at once. Default 2. They run on tokio's blocking pool,
    /// never on the runtime's workers, so a flood of handshakes does not stall connected
    /// peers; the others wait their turn within the handshake timeout.
    pub max_handshakes: usize,
    /// New connections accepted per source address per second; `None` (the default) for no
    /// limit. Beyond it a connection is sent a close with `TRY_AGAIN_LATER` before its hello is
    /// read. Behind a proxy every connection may come from one address: leave it off there.
    pub connections_per_second: Option<u32>,
    /// Most connections from one source address at once (openings included); `None` (the
    /// default) for no limit. Beyond it a connection is sent a close with `TRY_AGAIN_LATER`
    /// (1013) before its hello is read. Behind a proxy every connection may come from one
    /// address: leave it off there.
    pub max_connections_per_address: Option<usize>,
    /// The `Origin`s a WebSocket upgrade may come from, such as `"https://chat.example"`
    /// (compared without regard to ASCII case; `"*"` allows any). Default `None`: any origin.
    ///
    /// An upgrade whose `Origin` is not in the list is answered `403 Forbidden`. A request
    /// without an `Origin` header is not from a browser page and is let through: the check
    /// protects against pages of other sites opening sockets with a user's cookies, which
    /// matters once the application authenticates by cookie.
    pub allowed_origins: Option<Vec<String>>,
    /// Whether a session that never exchanged keys may resume. Default `false`: its resume
    /// token travelled in the clear, so whoever saw it could take the session over (see
    /// SECURITY.md). A client that asks for a resumable session exchanges keys while
    /// connecting by default, which makes its session resumable without this. A session
    /// whose connections all came over TLS resumes over TLS without it (its token never
    /// crossed in the clear).
    pub plain_resume: bool,
    /// How long the session of a client that asked for one (see [`Reconnect`]) is kept after
    /// its connection is lost, waiting for the client to resume it. Default 30 s;
    /// `Duration::ZERO` offers no resumable sessions.
    ///
    /// While kept, the peer stays in the server's table and messages to it are queued (up to
    /// the outbound queue; a broadcast finding it full applies `slow_peer`). When the window
    /// runs out the session ends: its disconnect handler runs with the code the connection was
    /// lost with, and a later resume attempt is refused with `RESUME_FAILED` (4010).
    pub resume_window: Duration,
    /// How long [`Server::shutdown`](crate::Server::shutdown) waits for peers to take what is
    /// queued for them and answer the close. Default 10 s; then the rest are closed at once.
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            connection: ConnectionConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 65_536,
            max_opening: 1024,
            max_handshakes: 2,
            connections_per_second: None,
            max_connections_per_address: None,
            allowed_origins: None,
            plain_resume: false,
            slow_peer: SlowPeerPolicy::Close,
            rooms: crate::RoomConfig::default(),
            resume_window: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

setters!(ServerConfig {
    /// Sets [`ServerConfig::connection`].
    connection: ConnectionConfig,
    /// Sets [`ServerConfig::handshake_timeout`].
    handshake_timeout: Duration,
    /// Sets [`ServerConfig::max_connections`].
    max_connections: usize,
    /// Sets [`ServerConfig::max_opening`].
    max_opening: usize,
    /// Sets [`ServerConfig::max_handshakes`].
    max_handshakes: usize,
    /// Sets [`ServerConfig::connections_per_second`].
    connections_per_second: Option<u32>,
    /// Sets [`ServerConfig::max_connections_per_address`].
    max_connections_per_address: Option<usize>,
    /// Sets [`ServerConfig::allowed_origins`].
    allowed_origins: Option<Vec<String>>,
    /// Sets [`ServerConfig::plain_resume`].
    plain_resume: bool,
    /// Sets [`ServerConfig::slow_peer`].
    slow_peer: SlowPeerPolicy,
    /// Sets [`ServerConfig::rooms`].
    rooms: crate::RoomConfig,
    /// Sets [`ServerConfig::resume_window`].
    resume_window: Duration,
    /// Sets [`ServerConfig::shutdown_timeout`].
    shutdown_timeout: Duration,
});

/// Settings of a client.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Settings of the connection.
    pub connection: ConnectionConfig,
    /// How long connecting (TCP connect plus the hello exchange) may take. Default 10 s; when it
    /// runs out `connect` fails with [`Error::Timeout`](crate::Error::Timeout).
    pub connect_timeout: Duration,
    /// Automatic reconnection with session resume. Default `None`: a lost connection ends the
    /// client. See [`Reconnect`].
    pub reconnect: Option<Reconnect>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connection: ConnectionConfig::default(),
            connect_timeout: Duration::from_secs(10),
            reconnect: None,
        }
    }
}

/// How a client reconnects after losing its connection, and resumes its session.
///
/// With reconnection on, the client asks the server for a resumable session. When the
/// connection is lost (not closed deliberately: see below) the client waits, reconnects, runs a
/// fresh hello, authentication and, if security was ever on, key exchange; then both sides
/// exchange how many application frames they received and send again exactly those the other
/// missed. Messages sent meanwhile wait in the outbound queue. The application sees each message
/// once, in order (README, "Delivery guarantee").
///
/// Attempt `n` (from 0) waits `min(max_delay, initial_delay × 2ⁿ)`, shortened by a random
/// fraction of up to `jitter` so that many clients do not reconnect in step.
///
/// No reconnection after: the application's own close (or dropping the client), the server
/// closing with `NORMAL` (1000), `UNAUTHORIZED` (4008), `VERSION_MISMATCH` (4006),
/// `POLICY_VIOLATION` (1008) or `RESUME_FAILED` (4010), or a fatal protocol or security error
/// found locally. After the last attempt fails the client closes with the code the connection
/// was lost with.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Reconnect {
    /// Delay before the first attempt. Default 100 ms.
    pub initial_delay: Duration,
    /// Longest delay between attempts. Default 10 s.
    pub max_delay: Duration,
    /// Fraction of each delay that is randomised away, 0.0–1.0. Default 0.5.
    pub jitter: f64,
    /// Most attempts after one loss; `None` keeps trying (the server's resume window still
    /// ends the session). Default 20.
    pub max_attempts: Option<u32>,
    /// When the server refuses to resume the session (`RESUME_FAILED`: it restarted, or the
    /// window ran out), start a new session instead of ending the client. Default `false`.
    /// What was queued and not yet written goes out on the new session; what the old one
    /// wrote and the server did not acknowledge may have been missed (a send to an idle
    /// connection is written at once, so this includes one made after the server's close was
    /// on its way but before the client read it), pending requests fail,
    /// and what the server knew of the session (rooms) is gone:
    /// [`ClientBuilder::on_renew`](crate::ClientBuilder::on_renew) says when.
    pub renew: bool,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            jitter: 0.5,
            max_attempts: Some(20),
            renew: false,
        }
    }
}

impl Reconnect {
    /// The delay before attempt `attempt` (from 0), with `random` in `[0, 1)` for the jitter.
    pub(crate) fn delay(&self, attempt: u32, random: f64) -> Duration {
        let grown = self
            .initial_delay
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
        let capped = grown.min(self.max_delay);
        capped.mul_f64(1.0 - self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0))
    }
}

setters!(Reconnect {
    /// Sets [`Reconnect::initial_delay`].
    initial_delay: Duration,
    /// Sets [`Reconnect::max_delay`].
    max_delay: Duration,
    /// Sets [`Reconnect::jitter`].
    jitter: f64,
    /// Sets [`Reconnect::max_attempts`].
    max_attempts: Option<u32>,
    /// Sets [`Reconnect::renew`].
    renew: bool,
});

setters!(ClientConfig {
    /// Sets [`ClientConfig::connection`].
    connection: ConnectionConfig,
    /// Sets [`ClientConfig::connect_timeout`].
    connect_timeout: Duration,
    /// Sets [`ClientConfig::reconnect`].
    reconnect: Option<Reconnect>,
});
