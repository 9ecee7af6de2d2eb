//! The server: listeners, the table of connected peers, broadcast, shutdown.
//!
//! This module owns accepting connections (limit, hello, registration) and the set of live
//! peers. What happens on a connection after its hello belongs to [`crate::connection`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::{ServerConfig, SlowPeerPolicy};
use crate::connection::{self, Hellos, Hooks, PeerId};
use crate::file::FileOffer;
use crate::frame::control::Hello;
use crate::frame::Frame;
use crate::hello;
use crate::protocol::{BoxFuture, Message, NoMessages, Protocol};
use crate::security::SecurityEvent;
use crate::transport::{FrameWrite, TcpTransport, Transport};
use crate::{CloseInfo, Code, Error, Peer};

type ConnectFn = Arc<dyn Fn(Peer) -> BoxFuture<'static, ()> + Send + Sync>;
type DisconnectFn = Arc<dyn Fn(&Peer, &CloseInfo) + Send + Sync>;
type ErrorFn = Arc<dyn Fn(Option<&Peer>, &Error) + Send + Sync>;
type SecurityFn = Arc<dyn Fn(&Peer, &SecurityEvent) + Send + Sync>;
type FileFn = Arc<dyn Fn(&Peer, FileOffer) + Send + Sync>;

/// The state shared by a server's listeners, connections and handles.
pub(crate) struct Hub {
    config: ServerConfig,
    protocol: Arc<dyn Protocol>,
    on_connect: Option<ConnectFn>,
    on_disconnect: Option<DisconnectFn>,
    on_error: Option<ErrorFn>,
    on_security: Option<SecurityFn>,
    on_file: Option<FileFn>,
    peers: RwLock<HashMap<PeerId, Peer>>,
    next_id: AtomicU64,
    /// Cancelled when the server stops accepting.
    shutdown: CancellationToken,
    local_addrs: RwLock<Vec<SocketAddr>>,
    ws_urls: RwLock<Vec<String>>,
}

impl Hub {
    fn peers(&self) -> RwLockReadGuard<'_, HashMap<PeerId, Peer>> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn peers_mut(&self) -> RwLockWriteGuard<'_, HashMap<PeerId, Peer>> {
        self.peers.write().unwrap_or_else(|p| p.into_inner())
    }

    fn report(&self, peer: Option<&Peer>, error: &Error) {
        match peer {
            Some(peer) => debug!(peer = %peer.id(), %error, "connection error"),
            None => debug!(%error, "connection refused"),
        }
        if let Some(on_error) = &self.on_error {
            on_error(peer, error);
        }
    }

    /// Takes a transport through the hello and, if it passes, runs it as a peer.
    async fn admit<T: Transport>(self: Arc<Self>, transport: T) {
        let info = transport.info();
        let (mut reader, mut writer) = transport.split();
        if self.shutdown.is_cancelled() {
            return hello::refuse(&mut writer, Code::GOING_AWAY, "server is shutting down").await;
        }
        if self.peers().len() >= self.config.max_connections {
            debug!(remote = %info.remote, "refused: connection limit");
            return hello::refuse(
                &mut writer,
                Code::TRY_AGAIN_LATER,
                "server is at its connection limit",
            )
            .await;
        }
        let client_hello = match hello::accept(&mut reader, &mut writer, self.config.handshake_timeout).await
        {
            Ok(hello) => hello,
            Err(error) => return self.report(None, &error),
        };
        let hellos = Hellos {
            client: client_hello,
            server: Hello::current(),
        };
        let id = PeerId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let new = connection::new_peer(
            id,
            info,
            self.config.connection.clone(),
            Some(Arc::downgrade(&self)),
            &hellos,
        );
        // Registered before our hello goes out: once the client is open, the server counts it.
        self.peers_mut().insert(id, new.peer.clone());
        let hello = hellos.server.to_frame();
        if let Err(error) = writer.write_batch(&[hello]).await {
            self.peers_mut().remove(&id);
            return self.report(None, &Error::Io(error));
        }
        let protocol = self.protocol.clone();
        connection::run(new, reader, writer, protocol, self).await;
    }

    /// Accepts until shutdown, handing each stream to `serve`.
    async fn accept_loop(self: Arc<Self>, listener: TcpListener, serve: impl Fn(&Arc<Self>, TcpStream)) {
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => serve(&self, stream),
                Err(error) => {
                    // Out of file descriptors and similar: pause rather than spin.
                    warn!(%error, "accept failed");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                    }
                }
            }
        }
    }

    async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        self.accept_loop(listener, |hub, stream| {
            tokio::spawn(hub.clone().admit_tcp(stream));
        })
        .await;
    }

    async fn serve_ws(
        self: Arc<Self>,
        listener: TcpListener,
        bind: crate::http::HttpBind<crate::http::NotFound>,
    ) {
        self.accept_loop(listener, move |hub, stream| {
            let _ = stream.set_nodelay(hub.config.connection.nodelay);
            let (bind, timeout, shutdown) =
                (bind.clone(), hub.config.handshake_timeout, hub.shutdown.clone());
            tokio::spawn(async move {
                // An upgraded connection lives on as a peer after this future ends; plain HTTP
                // connections end with the server.
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    served = crate::http::serve_connection(stream, bind, timeout) => {
                        if let Err(error) = served {
                            debug!(%error, "http connection");
                        }
                    }
                }
            });
        })
        .await;
    }

    async fn admit_tcp(self: Arc<Self>, stream: TcpStream) {
        let connection = &self.config.connection;
        match TcpTransport::new(stream, connection.nodelay, connection.max_payload) {
            Ok(transport) => self.admit(transport).await,
            Err(error) => self.report(None, &Error::Io(error)),
        }
    }
}

impl Hooks for Hub {
    fn connected(&self, peer: &Peer) -> BoxFuture<'static, ()> {
        match &self.on_connect {
            Some(on_connect) => on_connect(peer.clone()),
            None => Box::pin(std::future::ready(())),
        }
    }

    fn error(&self, peer: &Peer, error: &Error) {
        self.report(Some(peer), error);
    }

    fn closed(&self, peer: &Peer, info: &CloseInfo) {
        self.peers_mut().remove(&peer.id());
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

    fn file_offer(&self, peer: &Peer, offer: FileOffer) {
        // Without a handler the offer is dropped, which declines it.
        if let Some(on_file) = &self.on_file {
            on_file(peer, offer);
        }
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
    on_file: Option<FileFn>,
    tcp: Vec<String>,
    ws: Vec<(String, String)>,
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
        self.tcp.push(addr.into());
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

    /// Listens for WebSocket peers on `addr`, upgrading HTTP/1.1 requests to `path` (for
    /// example `.ws("127.0.0.1:7001", "/truflux")`); every other request gets `404`, a
    /// non-upgrade request to `path` gets `426`. May be given several times. To serve truflux
    /// inside an existing HTTP server instead, see [`crate::http`].
    pub fn ws(mut self, addr: impl Into<String>, path: impl Into<String>) -> Self {
        self.ws.push((addr.into(), path.into()));
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

    /// Binds every listener and starts accepting. A server without listeners is fine: it gets
    /// its peers through [`crate::http`] bindings.
    pub async fn start(self) -> Result<Server, Error> {
        let hub = Arc::new(Hub {
            config: self.config,
            protocol: self.protocol,
            on_connect: self.on_connect,
            on_disconnect: self.on_disconnect,
            on_error: self.on_error,
            on_security: self.on_security,
            on_file: self.on_file,
            peers: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            local_addrs: RwLock::new(Vec::new()),
            ws_urls: RwLock::new(Vec::new()),
        });
        let server = Server { hub: hub.clone() };
        // Bind everything first: a failure leaves nothing running.
        let mut tcp = Vec::new();
        for addr in &self.tcp {
            tcp.push(bind(addr).await?);
        }
        let mut ws = Vec::new();
        for (addr, path) in &self.ws {
            let binding = crate::http::HttpBind::new(crate::http::NotFound).mount(path.clone(), &server)?;
            ws.push((bind(addr).await?, path, binding));
        }
        for listener in tcp {
            hub.local_addrs
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .push(listener.local_addr()?);
            tokio::spawn(hub.clone().serve_tcp(listener));
        }
        for (listener, path, binding) in ws {
            let url = format!("ws://{}{}", listener.local_addr()?, path);
            hub.ws_urls.write().unwrap_or_else(|p| p.into_inner()).push(url);
            tokio::spawn(hub.clone().serve_ws(listener, binding));
        }
        Ok(server)
    }
}

async fn bind(addr: impl ToSocketAddrs) -> Result<TcpListener, Error> {
    Ok(TcpListener::bind(addr).await?)
}

/// Which peers a broadcast reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BroadcastReport {
    /// Peers the message was queued for.
    pub queued: usize,
    /// Peers whose queue was full: closed with `SLOW_CONSUMER` under [`SlowPeerPolicy::Close`],
    /// left connected without the message under [`SlowPeerPolicy::Report`].
    pub slow: Vec<PeerId>,
}

/// A running server. Cheap to clone; every clone controls the same server.
#[derive(Clone)]
pub struct Server {
    hub: Arc<Hub>,
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
            tcp: Vec::new(),
            ws: Vec::new(),
        }
    }

    pub(crate) fn from_hub(hub: Arc<Hub>) -> Server {
        Server { hub }
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

    /// Runs a transport accepted elsewhere (a WebSocket upgrade) through admission and serves it.
    pub(crate) async fn admit<T: Transport>(&self, transport: T) {
        self.hub.clone().admit(transport).await;
    }

    /// Reports an error of a connection that never became a peer.
    pub(crate) fn report_refused(&self, error: &Error) {
        self.hub.report(None, error);
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

    /// Queues `message` for every connected peer except those in `exclude`, without waiting.
    ///
    /// The payload is shared by all recipients (one encoding, reference counted). A peer whose
    /// queue is full is handled by [`ServerConfig::slow_peer`]; the other peers are never held
    /// up by it. Fails only if the message breaks the wire's limits.
    pub fn broadcast(&self, message: Message, exclude: &[PeerId]) -> Result<BroadcastReport, Error> {
        let frame = Frame::message(message.id, message.payload);
        frame.check(self.hub.config.connection.max_payload)?;
        // A short list is scanned; a long one is hashed once.
        let hashed: HashSet<PeerId> = if exclude.len() > 8 {
            exclude.iter().copied().collect()
        } else {
            HashSet::new()
        };
        let is_excluded = |id: &PeerId| {
            if hashed.is_empty() {
                exclude.contains(id)
            } else {
                hashed.contains(id)
            }
        };
        let mut report = BroadcastReport::default();
        let mut slow = Vec::new();
        for (id, peer) in self.hub.peers().iter() {
            if is_excluded(id) {
                continue;
            }
            match peer.try_enqueue(frame.clone()) {
                Ok(()) => report.queued += 1,
                Err(Error::QueueFull) => slow.push(peer.clone()),
                // Already closing: it is leaving and its disconnect handler will say so.
                Err(_) => {}
            }
        }
        for peer in slow {
            if self.hub.config.slow_peer == SlowPeerPolicy::Close {
                warn!(peer = %peer.id(), "closing slow consumer");
                peer.close_now(Code::SLOW_CONSUMER, "outbound queue full");
            }
            report.slow.push(peer.id());
        }
        Ok(report)
    }

    /// Queues a message with `id` and `payload` for every peer but `exclude`; see
    /// [`Server::broadcast`].
    pub fn broadcast_raw(
        &self,
        id: u32,
        payload: impl Into<Bytes>,
        exclude: &[PeerId],
    ) -> Result<BroadcastReport, Error> {
        self.broadcast(
            Message {
                id,
                payload: payload.into(),
            },
            exclude,
        )
    }

    /// Stops accepting, closes every peer gracefully with `code` and `reason` (queued frames are
    /// written first) and waits until all have ended.
    pub async fn close(&self, code: Code, reason: &str) {
        self.hub.shutdown.cancel();
        let peers = self.peers();
        futures_util::future::join_all(peers.iter().map(|peer| peer.close(code, reason))).await;
    }

    /// Stops accepting and closes every peer at once (see [`Peer::close_now`]). Does not wait.
    pub fn close_now(&self, code: Code, reason: &str) {
        self.hub.shutdown.cancel();
        for peer in self.peers() {
            peer.close_now(code, reason);
        }
    }
}
