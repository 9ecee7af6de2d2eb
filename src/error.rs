//! Typed errors, and the std codes that travel on the wire in close and error frames.
//!
//! Each concern has its own error type ([`FrameError`](crate::frame::FrameError) for the wire,
//! [`ProtocolError`] for message registries); [`Error`] gathers them for the public API. Every
//! error maps to a [`Code`] so that the peer can be told what went wrong.

use std::fmt;

use crate::frame::FrameError;

/// A std code: the reason a connection closed, or the cause of an error frame.
///
/// The numbering follows WebSocket close codes (RFC 6455 §7.4), so a truflux close travels
/// unchanged in a WebSocket close frame: 1000–1015 keep their WebSocket meaning, 4000–4999
/// (WebSocket's private-use range) are truflux's own. Codes a peer sends that this version does
/// not name are kept as they are.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u16);

macro_rules! codes {
    ($($(#[doc = $doc:literal])* $name:ident = $value:literal,)*) => {
        impl Code {
            $($(#[doc = $doc])* pub const $name: Code = Code($value);)*

            /// The code's name, or `"UNKNOWN"` for a code this version does not name.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $($value => stringify!($name),)*
                    _ => "UNKNOWN",
                }
            }

            /// Every code this version names, in numeric order.
            pub const ALL: &'static [Code] = &[$(Code($value)),*];
        }
    };
}

codes! {
    /// 1000: the connection finished its work; a deliberate close.
    NORMAL = 1000,
    /// 1001: the endpoint is going away (server shutting down).
    GOING_AWAY = 1001,
    /// 1002: the peer broke the wire protocol (malformed frame, unknown kind, bad hello, a frame
    /// that is not allowed in the current state). Fatal.
    PROTOCOL_ERROR = 1002,
    /// 1003: data of a type the endpoint does not accept (a text WebSocket message). Fatal.
    UNSUPPORTED_DATA = 1003,
    /// 1006: never sent; reported locally when the connection ended without a close frame.
    ABNORMAL = 1006,
    /// 1008: the peer violated a policy of the endpoint. Fatal.
    POLICY_VIOLATION = 1008,
    /// 1009: a frame exceeded the maximum payload length. Fatal.
    MESSAGE_TOO_BIG = 1009,
    /// 1011: the endpoint met an internal error.
    INTERNAL_ERROR = 1011,
    /// 1013: the server is at its connection limit; try again later. Fatal.
    TRY_AGAIN_LATER = 1013,
    /// 4000: a message id that the receiving registry does not know. Non-fatal.
    UNKNOWN_MESSAGE = 4000,
    /// 4001: a payload that does not decode as its message's type. Non-fatal.
    INVALID_PAYLOAD = 4001,
    /// 4002: a message arrived before the messages it depends on. Non-fatal.
    UNMET_DEPENDENCY = 4002,
    /// 4003: a singleton message arrived a second time on the connection. Non-fatal.
    REPEATED_SINGLETON = 4003,
    /// 4004: a known message that the receiver has no handler for. Non-fatal.
    UNIMPLEMENTED = 4004,
    /// 4005: the peer did not complete the opening hello in time. Fatal.
    HANDSHAKE_TIMEOUT = 4005,
    /// 4006: the peer speaks a protocol version this endpoint does not. Fatal.
    VERSION_MISMATCH = 4006,
    /// 4007: the peer's outbound queue was full when a broadcast reached it (it reads too
    /// slowly). Fatal.
    SLOW_CONSUMER = 4007,
    /// 4008: the server refused the peer's credentials (missing, malformed or rejected bearer
    /// token). Fatal; a client does not reconnect after it.
    UNAUTHORIZED = 4008,
    /// 4009: nothing arrived from the peer within the heartbeat interval plus its timeout.
    /// Fatal.
    HEARTBEAT_TIMEOUT = 4009,
    /// 4010: a session could not be resumed: unknown or expired on the server, or the two sides'
    /// counts do not fit together. Fatal; the session ends.
    RESUME_FAILED = 4010,
    /// 4011: a reply names a request that is not pending (already answered, timed out, or never
    /// made). Non-fatal.
    UNKNOWN_REQUEST = 4011,
    /// 4012: a request reached an endpoint that did not reply to it (no request handler, or the
    /// handler ended without replying). Non-fatal; ends that request.
    NO_REPLY = 4012,
    /// 4013: never sent: reported locally when a request got no reply within its timeout.
    REQUEST_TIMEOUT = 4013,
    /// 4020: the two sides share no security suite (carried in `KEX_FAIL`). Non-fatal by
    /// itself; a side that did not opt into falling back closes with `SECURITY_REQUIRED`.
    NO_COMMON_SUITE = 4020,
    /// 4021: security was needed and could not be had: no common suite without a configured
    /// fallback, a plain opening to a server that requires security, a peer that must be
    /// secure turning its direction off (fatal); a refused request to turn a direction off (in
    /// an error frame).
    SECURITY_REQUIRED = 4021,
    /// 4022: the key exchange failed (malformed message, invalid public value, finished MAC
    /// mismatch: tampering or a downgrade). Fatal.
    HANDSHAKE_FAILED = 4022,
    /// 4023: a protected record failed to verify (tampered, replayed, reordered, dropped,
    /// truncated or injected). Fatal.
    BAD_RECORD = 4023,
    /// 4024: a plain frame arrived where PROTOCOL.md §9.3 requires a protected one. Fatal.
    UNEXPECTED_PLAINTEXT = 4024,
    /// 4025: the server's key is missing, not one the client pins, or its signature does not
    /// verify. Fatal; the client does not reconnect.
    UNTRUSTED_SERVER = 4025,
    /// 4030: the receiver declined a file offer. Ends the transfer only.
    FILE_DECLINED = 4030,
    /// 4031: a side cancelled a file transfer. Ends the transfer only.
    FILE_CANCELLED = 4031,
    /// 4032: the received content does not match the announced size or SHA-256. Ends the
    /// transfer only.
    FILE_INTEGRITY = 4032,
    /// 4033: a file frame for a transfer that does not exist. Non-fatal.
    UNKNOWN_TRANSFER = 4033,
    /// 4034: more concurrent incoming transfers than the receiver allows. Ends the offer only.
    TOO_MANY_TRANSFERS = 4034,
    /// 4035: the sender broke flow control (more than its credit, an oversized chunk, a
    /// malformed file frame). Ends the transfer only.
    FILE_FLOW_VIOLATION = 4035,
    /// 4036: reading or writing the file failed locally. Ends the transfer only.
    FILE_IO = 4036,
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.name())
    }
}

/// Who ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    /// This endpoint: a call to close, or an error it found.
    Local,
    /// The peer: its close frame, or its disappearance.
    Remote,
}

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseInfo {
    /// The std code.
    pub code: Code,
    /// The reason text.
    pub reason: String,
    /// Which side ended it.
    pub initiator: Initiator,
}

impl CloseInfo {
    /// How a connection ended.
    pub fn new(code: Code, reason: impl Into<String>, initiator: Initiator) -> CloseInfo {
        CloseInfo {
            code,
            reason: reason.into(),
            initiator,
        }
    }
}

impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = match self.initiator {
            Initiator::Local => "locally",
            Initiator::Remote => "by the peer",
        };
        write!(f, "closed {by} with {}: {}", self.code, self.reason)
    }
}

/// A message that a registry refused, on either side of the wire.
///
/// Returned by a [`Dispatch`](crate::Dispatch) for an incoming message (the connection then
/// reports it locally and, when [`ProtocolError::peer_fault`] is set, tells the peer with an error
/// frame), and by registries' send functions for an outgoing one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
#[non_exhaustive]
pub struct ProtocolError {
    /// The std code.
    pub code: Code,
    /// What went wrong, for humans; never the payload.
    pub message: String,
    /// The message id concerned, if any.
    pub id: Option<u32>,
    /// True when the peer caused it (it is then told with an error frame).
    pub peer_fault: bool,
}

impl ProtocolError {
    /// An error caused by what the peer sent about message `id`.
    pub fn peer(code: Code, id: u32, message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            code,
            message: message.into(),
            id: Some(id),
            peer_fault: true,
        }
    }

    /// An error of this endpoint (an unregistered name, a failing handler).
    pub fn local(code: Code, id: Option<u32>, message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            code,
            message: message.into(),
            id,
            peer_fault: false,
        }
    }
}

/// An error the peer reported: its `ERROR` frame, or a `REPLY_ERROR` to our request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("peer reported {code} for {id}: {message}")]
#[non_exhaustive]
pub struct RemoteError {
    /// The peer's std code.
    pub code: Code,
    /// The peer's text.
    pub message: String,
    /// The message id (an `ERROR`) or request id (a `REPLY_ERROR`) the peer named; 0 for none.
    pub id: u32,
}

impl RemoteError {
    pub(crate) fn new(code: Code, message: impl Into<String>, id: u32) -> RemoteError {
        RemoteError {
            code,
            message: message.into(),
            id,
        }
    }
}

/// Why a transfer did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("file transfer {code}: {reason}")]
#[non_exhaustive]
pub struct FileError {
    /// The std code: `FILE_DECLINED`, `FILE_CANCELLED`, `FILE_INTEGRITY`, `FILE_FLOW_VIOLATION`,
    /// `FILE_IO`, `TOO_MANY_TRANSFERS`, or the connection's close code.
    pub code: Code,
    /// Why.
    pub reason: String,
}

impl FileError {
    pub(crate) fn new(code: Code, reason: impl Into<String>) -> FileError {
        FileError {
            code,
            reason: reason.into(),
        }
    }
}

/// Why the opening exchange (the hellos, PROTOCOL.md §4.1) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// The stream ended before the exchange finished.
    #[error("the stream ended before the opening exchange finished")]
    StreamEnded,
    /// A frame other than the one the exchange expects next.
    #[error("expected {expected}, got a {got:?} frame")]
    Unexpected {
        /// What the exchange waited for.
        expected: &'static str,
        /// What arrived.
        got: crate::frame::Kind,
    },
    /// The hello is malformed (an extension of the wrong length, repeated, or not allowed
    /// where it was).
    #[error("malformed hello: {0}")]
    Malformed(&'static str),
    /// The peer speaks another protocol version.
    #[error("peer speaks version {peer}, this endpoint {ours}")]
    Version {
        /// The peer's version.
        peer: u16,
        /// Ours.
        ours: u16,
    },
    /// The WebSocket upgrade did not complete.
    #[error("WebSocket upgrade failed: {0}")]
    Upgrade(String),
    /// The server closed a keyed opening without protection, where anyone on the path could
    /// have forged the close: not believed, reported as a failed attempt (a reconnecting client
    /// tries again).
    #[error("unprotected close during a keyed opening ({code}: {reason}), not believed")]
    UnprotectedClose {
        /// The code it carried.
        code: Code,
        /// The reason it carried.
        reason: String,
    },
}

impl HelloError {
    /// The std code a refusal for this error carries.
    pub fn code(&self) -> Code {
        match self {
            HelloError::Version { .. } => Code::VERSION_MISMATCH,
            HelloError::StreamEnded | HelloError::UnprotectedClose { .. } => Code::ABNORMAL,
            _ => Code::PROTOCOL_ERROR,
        }
    }
}

/// What did not finish in its configured time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Timeout {
    /// Connecting: the transport and the opening exchange (`ClientConfig::connect_timeout`).
    #[error("connecting")]
    Connect,
    /// The peer's hello, or the rest of the opening (`ServerConfig::handshake_timeout`).
    #[error("waiting for the hello and the rest of the opening")]
    Hello,
    /// The token validator.
    #[error("validating the token")]
    Validation,
    /// Making both directions secure after connecting (`SecurityConfig::required`).
    #[error("making the connection secure")]
    Security,
}

impl Timeout {
    /// The std code: `HANDSHAKE_TIMEOUT` for the opening's steps, `ABNORMAL` (reported
    /// locally) for a connect that did not complete.
    pub fn code(self) -> Code {
        match self {
            Timeout::Connect => Code::ABNORMAL,
            Timeout::Hello | Timeout::Validation | Timeout::Security => Code::HANDSHAKE_TIMEOUT,
        }
    }
}

/// A configuration or argument that was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A WebSocket URL that does not parse, has no host, or a scheme other than `ws://`
    /// (or `wss://` with the `tls` feature).
    #[error("WebSocket URL {url:?}: {problem}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An HTTP mount path that does not start with `/`.
    #[error("the path {0:?} must start with '/'")]
    PathNotAbsolute(String),
    /// An HTTP mount path that already has a server.
    #[error("the path {0:?} already has a truflux server")]
    PathTaken(String),
    /// A token with octets that cannot travel in a WebSocket upgrade's headers.
    #[error("the token cannot travel in an HTTP header")]
    TokenNotHeaderSafe,
    /// A file name with nothing usable left once directories are stripped.
    #[error("the offered name has no usable file name")]
    FileName,
    /// A TLS certificate, key or config that could not be used.
    #[error("TLS {what}: {problem}")]
    Tls {
        /// What was being loaded or built.
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A metrics recorder could not be installed (another one is).
    #[error("the metrics recorder could not be installed: {0}")]
    Recorder(String),
    /// The key-exchange pool is gone (the runtime is shutting down).
    #[error("the key exchange could not run")]
    KexUnavailable,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The server authenticates and no token came.
    #[error("no bearer token")]
    Missing,
    /// The token is longer than [`MAX_TOKEN_LEN`](crate::auth::MAX_TOKEN_LEN).
    #[error("token too long")]
    TooLong,
    /// The validator refused it, with its reason (on a client: the server's words).
    #[error("{0}")]
    Rejected(String),
}

/// Which of a [`RateLimit`](crate::RateLimit)'s buckets ran dry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Limited {
    /// Application frames.
    #[error("message")]
    Messages,
    /// Octets.
    #[error("byte")]
    Bytes,
}

/// Every error the public API returns or reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Malformed or oversized frame (received, or refused before sending).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A registry refused a message.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The peer reported an error: an error frame, or a failed request.
    #[error(transparent)]
    Remote(RemoteError),
    /// The opening exchange failed.
    #[error("opening exchange: {0}")]
    Hello(#[from] HelloError),
    /// An operation did not finish in its configured time.
    #[error("timed out {0}")]
    Timeout(Timeout),
    /// The connection is closed; nothing more can be sent on it.
    #[error("connection {0}")]
    Closed(CloseInfo),
    /// The peer's outbound queue is full (returned by non-waiting sends).
    #[error("outbound queue full")]
    QueueFull,
    /// A configuration or argument was refused.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A file transfer failed; the connection goes on.
    #[error(transparent)]
    File(#[from] FileError),
    /// The server refused the credentials (`UNAUTHORIZED`); the reason never contains the token.
    #[error("unauthorized: {0}")]
    Unauthorized(#[from] AuthError),
    /// Nothing arrived from the peer within the heartbeat interval plus its timeout.
    #[error("no frame from the peer for {0:?}")]
    HeartbeatTimeout(std::time::Duration),
    /// A request got no reply within its timeout.
    #[error("no reply within {0:?}")]
    RequestTimeout(std::time::Duration),
    /// The security layer failed: tampering, an invalid key exchange, an untrusted server,
    /// security that was required and could not be had.
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// A room operation was refused (a name or count limit).
    #[error(transparent)]
    Room(#[from] crate::server::RoomError),
    /// The TLS handshake failed (feature `tls`).
    #[cfg(feature = "tls-base")]
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The peer sent faster than its rate limit allows
    /// ([`RatePolicy::Close`](crate::RatePolicy::Close)).
    #[error("the peer exceeded its {0} rate limit")]
    RateLimited(Limited),
    /// The peer found no security suite in common (its `KEX_FAIL`).
    #[error("the peer could not agree on security, {code}: {reason}")]
    FailSecure {
        /// The peer's code (`NO_COMMON_SUITE`).
        code: Code,
        /// The peer's text.
        reason: String,
    },
}

impl Error {
    /// The std code that describes this error on the wire.
    pub fn code(&self) -> Code {
        match self {
            Error::Frame(e) => e.code(),
            Error::Io(_) => Code::ABNORMAL,
            Error::Protocol(e) => e.code,
            Error::Remote(e) => e.code,
            Error::Hello(e) => e.code(),
            Error::Timeout(t) => t.code(),
            Error::Closed(info) => info.code,
            Error::QueueFull => Code::SLOW_CONSUMER,
            Error::Config(_) => Code::INTERNAL_ERROR,
            Error::Security(e) => e.code(),
            Error::FailSecure { code, .. } => *code,
            Error::Unauthorized(_) => Code::UNAUTHORIZED,
            Error::HeartbeatTimeout(_) => Code::HEARTBEAT_TIMEOUT,
            Error::RequestTimeout(_) => Code::REQUEST_TIMEOUT,
            Error::File(error) => error.code,
            Error::Room(_) | Error::RateLimited(_) => Code::POLICY_VIOLATION,
            #[cfg(feature = "tls-base")]
            Error::Tls(error) => error.code(),
        }
    }
}
