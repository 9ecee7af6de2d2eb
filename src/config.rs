//! Configuration: every limit with its default and what happens when it is hit.

use std::time::Duration;

use crate::frame::DEFAULT_MAX_PAYLOAD;
use crate::security::SecurityConfig;

/// `setters!(Type { /// doc\n field: Type, ... })`: one chainable setter per field.
macro_rules! setters {
    ($ty:ty { $($(#[doc = $doc:literal])* $field:ident : $fty:ty,)* }) => {
        impl $ty {
            $(
                $(#[doc = $doc])*
                #[must_use]
                pub fn $field(mut self, value: $fty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}
pub(crate) use setters;

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
    pub close_timeout: Duration,
    /// Sets `TCP_NODELAY` (no Nagle delay on small frames). Default `true`.
    pub nodelay: bool,
    /// Read buffer of a WebSocket peer, in octets. Default 4 KiB.
    ///
    /// The WebSocket layer allocates and fills this buffer for every connection and reads at
    /// most this much per system call. 4 KiB keeps an idle WebSocket peer small; 64–128 KiB
    /// reads large messages markedly faster at that much memory per peer (see the README's
    /// benchmark table). TCP peers are not affected.
    pub ws_read_buffer: usize,
    /// Security: suites, pre-shared key, whether security is required, key rotation. Default
    /// [`SecurityConfig::default`] (both suites offered, nothing required).
    pub security: SecurityConfig,
    /// File transfers: chunk size, window, concurrent incoming transfers. Default
    /// [`FileConfig::default`](crate::file::FileConfig::default).
    pub files: crate::file::FileConfig,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_payload: DEFAULT_MAX_PAYLOAD,
            outbound_queue: 1024,
            write_batch: 64,
            close_timeout: Duration::from_secs(5),
            nodelay: true,
            ws_read_buffer: crate::ws::READ_BUFFER,
            security: SecurityConfig::default(),
            files: crate::file::FileConfig::default(),
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
});

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
    /// How long a new peer has to send its hello. Default 10 s. When it runs out the peer is
    /// sent a close with `HANDSHAKE_TIMEOUT` (4005) and dropped.
    pub handshake_timeout: Duration,
    /// Most peers connected at once. Default 65 536. A peer beyond it is sent a close with
    /// `TRY_AGAIN_LATER` (1013) and dropped; its client reports that code.
    pub max_connections: usize,
    /// What broadcast does with a peer whose queue is full. Default [`SlowPeerPolicy::Close`].
    pub slow_peer: SlowPeerPolicy,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            connection: ConnectionConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 65_536,
            slow_peer: SlowPeerPolicy::Close,
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
    /// Sets [`ServerConfig::slow_peer`].
    slow_peer: SlowPeerPolicy,
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
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connection: ConnectionConfig::default(),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

setters!(ClientConfig {
    /// Sets [`ClientConfig::connection`].
    connection: ConnectionConfig,
    /// Sets [`ClientConfig::connect_timeout`].
    connect_timeout: Duration,
});
