//! The server: listeners, admission, the table of connected peers, broadcast, shutdown.
//!
//! This module owns accepting connections ([`admission`]: limits, the opening, tokens,
//! sessions new and resumed), the set of live peers, the session store ([`store`]) and
//! broadcast. What happens on a connection after its opening belongs to
//! [`crate::connection`].

pub mod adapter;
mod admission;
mod broadcast;
mod lifecycle;
mod limits;
mod listeners;
mod rooms;
mod store;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::auth::{AuthRequest, Rejection, Validator};
use crate::config::ServerConfig;
use crate::connection::{Hooks, KexPool, Peer, PeerId};
use crate::error::{CloseInfo, Error};
use crate::file::{FileOffer, OfferFn};
use crate::protocol::{BoxFuture, NoMessages, Protocol};
use crate::security::{SecurityConfig, SecurityEvent};
pub use broadcast::{BroadcastReport, Except, RoomSet, To};
pub use rooms::{HistoryLimit, Member, Presence, RoomConfig, RoomError};
pub use store::SessionStore;

type ConnectFn = Arc<dyn Fn(Peer) -> BoxFuture<'static, ()> + Send + Sync>;
type DisconnectFn = Arc<dyn Fn(&Peer, &CloseInfo) + Send + Sync>;
type ErrorFn = Arc<dyn Fn(Option<&Peer>, &Error) + Send + Sync>;
type SecurityFn = Arc<dyn Fn(&Peer, &SecurityEvent) + Send + Sync>;
type PresenceFn = Arc<dyn Fn(&Presence) + Send + Sync>;

/// The state shared by a server's listeners, connections and handles.
pub(crate) struct Hub {
    config: ServerConfig,
    security: Arc<SecurityConfig>,
    /// `config.connection`, shared by every peer's session.
    connection: Arc<crate::config::ConnectionConfig>,
    kex: KexPool,
    limits: limits::Limits,
    protocol: Arc<dyn Protocol>,
    on_connect: Option<ConnectFn>,
    on_disconnect: Option<DisconnectFn>,
    on_error: Option<ErrorFn>,
    on_security: Option<SecurityFn>,
    on_file: Option<OfferFn>,
    on_presence: Option<PresenceFn>,
    auth: Option<Validator>,
    store: SessionStore,
    peers: RwLock<BTreeMap<PeerId, Peer>>,
    rooms: rooms::Rooms,
    adapter: Arc<dyn adapter::Adapter>,
    /// Cancelled when the server stops accepting.
    shutdown: CancellationToken,
    local_addrs: RwLock<Vec<SocketAddr>>,
    ws_urls: RwLock<Vec<String>>,
    listeners: lifecycle::Listeners,
    meters: crate::meters::Meters,
    /// The application's handles' shared life (see [`lifecycle`]).
    life: std::sync::OnceLock<std::sync::Weak<lifecycle::Life>>,
}

impl Hub {
    fn peers(&self) -> RwLockReadGuard<'_, BTreeMap<PeerId, Peer>> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn peers_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<PeerId, Peer>> {
        self.peers.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Peers connected here.
    fn connected(&self) -> usize {
        self.peers().len()
    }

    fn report(&self, peer: Option<&Peer>, error: &Error) {
        match peer {
            Some(peer) => info!(peer = %peer.id(), code = %error.code(), %error, "error"),
            None => info!(code = %error.code(), %error, "connection refused"),
        }
        if let Some(on_error) = &self.on_error {
            on_error(peer, error);
        }
    }
}

impl Hooks for Hub {
    fn connected(&self, peer: &Peer) -> BoxFuture<'static, ()> {
        let info = peer.info();
        info!(peer = %peer.id(), transport = ?info.transport, remote = %info.remote, "connected");
        match &self.on_connect {
            Some(on_connect) => on_connect(peer.clone()),
            None => Box::pin(std::future::ready(())),
        }
    }

    fn error(&self, peer: &Peer, error: &Error) {
        self.report(Some(peer), error);
    }

    fn closed(&self, peer: &Peer, info: &CloseInfo) {
        info!(
            peer = %peer.id(),
            code = %info.code,
            reason = %info.reason,
            by = ?info.initiator,
            "disconnected"
        );
        self.peers_mut().remove(&peer.id());
        if let Some(token) = peer.resume_token() {
            self.store.remove(&token);
        }
        self.leave_rooms(peer.id());
        if let Some(on_disconnect) = &self.on_disconnect {
            on_disconnect(peer, info);
        }
    }

    fn security(&self, peer: &Peer, event: &SecurityEvent) {
        debug!(peer = %peer.id(), ?event, "security");
        if let Some(on_security) = &self.on_security {
            on_security(peer, event);
        }
    }
}

impl Peer {
    /// The server this peer is connected to, when the peer was accepted by one.
    pub fn server(&self) -> Option<Server> {
        let hub = self.owner()?.downcast::<Hub>().ok()?;
        let life = hub.life.get()?.upgrade()?;
        Some(Server {
            hub,
            _life: Some(life),
        })
    }
}

/// Builds a [`Server`]: protocol, listeners, handlers, configuration.
#[must_use]
pub struct ServerBuilder {
    config: ServerConfig,
    protocol: Arc<dyn Protocol>,
    on_connect: Option<ConnectFn>,
    on_disconnect: Option<DisconnectFn>,
    on_error: Option<ErrorFn>,
    on_security: Option<SecurityFn>,
    on_file: Option<OfferFn>,
    on_presence: Option<PresenceFn>,
    adapter: Arc<dyn adapter::Adapter>,
    listen: Vec<listeners::Listen>,
    auth: Option<Validator>,
    store: Option<SessionStore>,
}

impl ServerBuilder {
    /// The protocol (message registry) that handles incoming messages. Default: [`NoMessages`].
    pub fn protocol(mut self, protocol: impl Protocol) -> Self {
        self.protocol = Arc::new(protocol);
        self
    }

    /// The server's configuration. Default: [`ServerConfig::default`].
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Listens for TCP peers on `addr` (for example `"127.0.0.1:7000"`; port 0 picks a free
    /// port, see [`Server::local_addrs`]). May be given several times.
    pub fn tcp(mut self, addr: impl Into<String>) -> Self {
        self.listen.push(listeners::Listen::Tcp(addr.into()));
        self
    }

    /// Runs for every security event of a peer: handshake done, handshake failed without ending
    /// the connection (`fail_secure`), the peer's direction switched.
    pub fn on_security(mut self, handler: impl Fn(&Peer, &SecurityEvent) + Send + Sync + 'static) -> Self {
        self.on_security = Some(Arc::new(handler));
        self
    }

    /// Runs for every file a peer offers. Decide on the offer (accept into a path or writer, or
    /// decline), here or later in a task; an offer dropped undecided, or offered to a server
    /// without this handler, is declined.
    pub fn on_file(mut self, handler: impl Fn(&Peer, FileOffer) + Send + Sync + 'static) -> Self {
        self.on_file = Some(Arc::new(handler));
        self
    }

    /// Listens for TLS-over-TCP peers on `addr` with `config` (feature `tls`; see
    /// [`crate::tls::server_config_from_pem`]). ALPN `truflux` is offered unless `config`
    /// names protocols of its own. The TLS handshake counts against the handshake timeout; a
    /// failed one is reported to the error handler as [`Error::Tls`] or [`Error::Io`].
    #[cfg(feature = "tls-base")]
    pub fn tls(mut self, addr: impl Into<String>, config: Arc<crate::tls::rustls::ServerConfig>) -> Self {
        self.listen.push(listeners::Listen::Tls(addr.into(), config));
        self
    }

    /// Listens for WebSocket-over-TLS (`wss://`) peers on `addr` at `path` with `config`
    /// (feature `tls`), as [`ServerBuilder::ws`] does in the clear. ALPN `http/1.1` is
    /// offered unless `config` names protocols of its own.
    #[cfg(all(feature = "tls-base", feature = "ws"))]
    pub fn wss(
        mut self,
        addr: impl Into<String>,
        path: impl Into<String>,
        config: Arc<crate::tls::rustls::ServerConfig>,
    ) -> Self {
        self.listen
            .push(listeners::Listen::Wss(addr.into(), path.into(), config));
        self
    }

    /// Listens for WebSocket peers on `addr`, upgrading HTTP/1.1 requests to `path` (for
    /// example `.ws("127.0.0.1:7001", "/truflux")`); every other request gets `404`, a
    /// non-upgrade request to `path` gets `426`. May be given several times. To serve truflux
    /// inside an existing HTTP server instead, see [`crate::http`].
    #[cfg(feature = "ws")]
    pub fn ws(mut self, addr: impl Into<String>, path: impl Into<String>) -> Self {
        self.listen.push(listeners::Listen::Ws(addr.into(), path.into()));
        self
    }

    /// Runs for every change of a room's members: a peer joined or left (by leaving, or because
    /// its session ended), on this node or, with a cluster adapter, on another.
    pub fn on_presence(mut self, handler: impl Fn(&Presence) + Send + Sync + 'static) -> Self {
        self.on_presence = Some(Arc::new(handler));
        self
    }

    /// Where broadcasts, room fan-out and membership queries go beyond this process (a cluster
    /// engine such as `truflux-redis`). Default [`adapter::LocalAdapter`]: a server alone.
    pub fn adapter(mut self, adapter: impl adapter::Adapter) -> Self {
        self.adapter = Arc::new(adapter);
        self
    }

    /// Runs for each new peer, after its hello and before its first message is read: frames it
    /// sends arrive before any reply to the peer's messages.
    pub fn on_connect<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connect = Some(Arc::new(move |peer| Box::pin(handler(peer))));
        self
    }

    /// Runs once for each peer that was connected, when its connection has ended.
    pub fn on_disconnect(mut self, handler: impl Fn(&Peer, &CloseInfo) + Send + Sync + 'static) -> Self {
        self.on_disconnect = Some(Arc::new(handler));
        self
    }

    /// Runs for every error: with the peer for errors on a connection, with `None` for
    /// connections refused before their hello completed.
    pub fn on_error(mut self, handler: impl Fn(Option<&Peer>, &Error) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(handler));
        self
    }

    /// Requires every peer to present a bearer token, checked by `validate` before the peer
    /// exists (see [`crate::auth`] for how the token travels).
    ///
    /// The identity `validate` returns is stored in the peer's [`Session`](crate::Session)
    /// (read it with `peer.session().get::<I>()`). Each resume of a session validates its
    /// token again, and is refused with `RESUME_FAILED` unless the identity equals the
    /// session's. A missing, oversized (over 4 KiB) or refused token closes the connection
    /// with `UNAUTHORIZED` (4008), or answers the WebSocket upgrade with `401`; the client does
    /// not retry. Validation counts against the handshake timeout.
    pub fn authenticate<F, Fut, I>(mut self, validate: F) -> Self
    where
        F: Fn(AuthRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<I, Rejection>> + Send + 'static,
        I: std::any::Any + Send + Sync + Clone + PartialEq,
    {
        self.auth = Some(crate::auth::validator(validate));
        self
    }

    /// Where resumable sessions are kept. Default: a store of this server's own.
    ///
    /// Give the same store to the next server in the same process (after `close` with a code
    /// that does not end sessions, such as `GOING_AWAY`) and its clients resume their sessions
    /// on it, losing nothing. Sessions live in memory: a new process knows none of them, and
    /// resuming clients are refused with `RESUME_FAILED`.
    pub fn session_store(mut self, store: SessionStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Binds every listener and starts accepting. A server without listeners is fine: it gets
    /// its peers through [`crate::http`] bindings.
    pub async fn start(self) -> Result<Server, Error> {
        let security = Arc::new(self.config.connection.security.clone());
        let rooms = self.config.rooms.clone();
        let hub = Arc::new(Hub {
            kex: KexPool::new(self.config.max_handshakes),
            limits: limits::Limits::default(),
            security,
            connection: Arc::new(self.config.connection.clone()),
            config: self.config,
            protocol: self.protocol,
            on_connect: self.on_connect,
            on_disconnect: self.on_disconnect,
            on_error: self.on_error,
            on_security: self.on_security,
            on_file: self.on_file,
            on_presence: self.on_presence,
            auth: self.auth,
            store: self.store.unwrap_or_default(),
            peers: RwLock::new(BTreeMap::new()),
            rooms: rooms::Rooms::new(rooms),
            adapter: self.adapter,
            shutdown: CancellationToken::new(),
            local_addrs: RwLock::new(Vec::new()),
            ws_urls: RwLock::new(Vec::new()),
            listeners: lifecycle::Listeners::default(),
            meters: crate::meters::Meters::server(),
            life: std::sync::OnceLock::new(),
        });
        let server = Server {
            _life: Some(lifecycle::Life::new(&hub)),
            hub: hub.clone(),
        };
        // The listener's own handle does not keep the server alive.
        let internal = Server {
            hub: hub.clone(),
            _life: None,
        };
        hub.adapter.attach(adapter::Node::new(&hub));
        listeners::start(&hub, &internal, &self.listen).await?;
        Ok(server)
    }
}

/// A running server. Cheap to clone; every clone controls the same server.
///
/// The server runs while the application holds a handle: dropping the last one shuts it down
/// in the background, as [`Server::shutdown`] does (a handler's [`Peer::server`] gives a
/// handle only while the application holds one).
#[derive(Clone)]
#[must_use = "dropping the last Server handle shuts the server down"]
pub struct Server {
    hub: Arc<Hub>,
    /// `None` for the library's own handles, which do not keep the server running.
    _life: Option<Arc<lifecycle::Life>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs())
            .finish()
    }
}

impl Server {
    /// A builder with the default configuration and no listener yet.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            config: ServerConfig::default(),
            protocol: Arc::new(NoMessages),
            on_connect: None,
            on_disconnect: None,
            on_error: None,
            on_security: None,
            on_file: None,
            on_presence: None,
            adapter: Arc::new(adapter::LocalAdapter),
            listen: Vec::new(),
            auth: None,
            store: None,
        }
    }

    /// The addresses the listeners are bound to, in the order they were given.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.hub
            .local_addrs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The URLs of the WebSocket listeners (`ws://addr/path`), in the order they were given.
    pub fn ws_urls(&self) -> Vec<String> {
        self.hub.ws_urls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The configuration of each connection.
    pub fn connection_config(&self) -> &crate::ConnectionConfig {
        &self.hub.config.connection
    }

    /// How many peers are connected (their hello done, their close not yet finished).
    pub fn num_connections(&self) -> usize {
        self.hub.peers().len()
    }

    /// The connected peer with `id`.
    pub fn peer(&self, id: PeerId) -> Option<Peer> {
        self.hub.peers().get(&id).cloned()
    }

    /// Every connected peer.
    pub fn peers(&self) -> Vec<Peer> {
        self.hub.peers().values().cloned().collect()
    }
}

/// What the HTTP layer needs of a server (feature `ws`).
#[cfg(feature = "ws")]
impl Server {
    /// Runs a transport accepted elsewhere (a WebSocket upgrade) through admission and serves it.
    pub(crate) fn admit<T: crate::transport::Transport>(
        &self,
        transport: T,
        identity: Option<crate::auth::Identity>,
    ) -> impl Future<Output = ()> + Send + 'static {
        self.hub.clone().admit(transport, identity)
    }

    /// Validates a token presented in a WebSocket upgrade request. `Ok(None)`: this server
    /// does not authenticate, or no token was in the request (it may come in the hello).
    pub(crate) async fn authenticate_upgrade(
        &self,
        token: Option<crate::auth::Token>,
        info: &crate::transport::PeerInfo,
    ) -> Result<Option<crate::auth::Identity>, Error> {
        match (&self.hub.auth, token) {
            (Some(_), Some(token)) => self.hub.authenticate(Some(token), info).await.map(Some),
            _ => Ok(None),
        }
    }

    /// The origins WebSocket upgrades may come from (`None`: any).
    pub(crate) fn allowed_origins(&self) -> Option<&[String]> {
        self.hub.config.allowed_origins.as_deref()
    }

    /// Reports an error of a connection that never became a peer.
    pub(crate) fn report_refused(&self, error: &Error) {
        self.hub.report(None, error);
    }
}
