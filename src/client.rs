//! The client: connect (with a timeout and the hello), then a [`Peer`] to the server.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;
use tracing::debug;

use tokio::net::{TcpStream, ToSocketAddrs};

use crate::auth::Token;
use crate::config::{ClientConfig, Reconnect};
use crate::connection::resume::TOKEN_LEN;
use crate::connection::{self, Hellos, Hooks, Outcome, PeerId, ResumeRefused};
use crate::file::FileOffer;
use crate::frame::control::Hello;
use crate::hello;
use crate::protocol::{BoxFuture, NoMessages, Protocol};
use crate::security::SecurityEvent;
use crate::transport::{PeerInfo, TcpTransport, Transport};
use crate::{CloseInfo, Code, Error, Initiator, Peer};

type CloseFn = Arc<dyn Fn(&CloseInfo) + Send + Sync>;
type ErrorFn = Arc<dyn Fn(&Error) + Send + Sync>;
type SecurityFn = Arc<dyn Fn(&SecurityEvent) + Send + Sync>;
type FileFn = Arc<dyn Fn(FileOffer) + Send + Sync>;
type PeerFn = Arc<dyn Fn(&Peer) + Send + Sync>;
type ReconnectFn = Arc<dyn Fn(&Peer, u32) + Send + Sync>;

#[derive(Default)]
struct ClientHooks {
    on_connect: Option<PeerFn>,
    on_disconnect: Option<CloseFn>,
    on_reconnect: Option<ReconnectFn>,
    on_close: Option<CloseFn>,
    on_error: Option<ErrorFn>,
    on_security: Option<SecurityFn>,
    on_file: Option<FileFn>,
}

impl Hooks for ClientHooks {
    fn connected(&self, peer: &Peer) -> BoxFuture<'static, ()> {
        if let Some(on_connect) = &self.on_connect {
            on_connect(peer);
        }
        Box::pin(std::future::ready(()))
    }

    fn error(&self, _peer: &Peer, error: &Error) {
        tracing::debug!(%error, "client connection error");
        if let Some(on_error) = &self.on_error {
            on_error(error);
        }
    }

    fn closed(&self, _peer: &Peer, info: &CloseInfo) {
        if let Some(on_close) = &self.on_close {
            on_close(info);
        }
    }

    fn file_offer(&self, _peer: &Peer, offer: FileOffer) {
        // Without a handler the offer is dropped, which declines it.
        if let Some(on_file) = &self.on_file {
            on_file(offer);
        }
    }

    fn security(&self, _peer: &Peer, event: &SecurityEvent) {
        tracing::debug!(?event, "security");
        if let Some(on_security) = &self.on_security {
            on_security(event);
        }
    }
}

/// Where a WebSocket client puts its bearer token (see [`crate::auth`]). Over TCP the token
/// always travels in the hello.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenCarrier {
    /// `Authorization: Bearer <token>` in the upgrade request. The default.
    #[default]
    Header,
    /// `Sec-WebSocket-Protocol: truflux, truflux.bearer.<token>`: what a browser can set. The
    /// token must then consist of HTTP token characters (base64url and JWTs do).
    Subprotocol,
    /// In the hello, as over TCP.
    Hello,
}

/// Builds a [`Client`].
#[must_use]
pub struct ClientBuilder {
    config: ClientConfig,
    protocol: Arc<dyn Protocol>,
    hooks: ClientHooks,
    token: Option<Token>,
    carrier: TokenCarrier,
}

impl ClientBuilder {
    /// The protocol (message registry) that handles messages from the server. Default:
    /// [`NoMessages`].
    pub fn protocol(mut self, protocol: impl Protocol) -> Self {
        self.protocol = Arc::new(protocol);
        self
    }

    /// The client's configuration. Default: [`ClientConfig::default`].
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Presents `token` as a bearer token on every connection (and every reconnection).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Token::new(token));
        self
    }

    /// Where a WebSocket connection carries the token. Default [`TokenCarrier::Header`].
    pub fn token_carrier(mut self, carrier: TokenCarrier) -> Self {
        self.carrier = carrier;
        self
    }

    /// Runs once the first connection is up, before anything from the server is handled.
    pub fn on_connect(mut self, handler: impl Fn(&Peer) + Send + Sync + 'static) -> Self {
        self.hooks.on_connect = Some(Arc::new(handler));
        self
    }

    /// With [`Reconnect`](crate::Reconnect): runs when the connection is lost and the client
    /// starts reconnecting, with how it was lost.
    pub fn on_disconnect(mut self, handler: impl Fn(&CloseInfo) + Send + Sync + 'static) -> Self {
        self.hooks.on_disconnect = Some(Arc::new(handler));
        self
    }

    /// With [`Reconnect`](crate::Reconnect): runs when the session has resumed on a new
    /// connection, with the number of attempts it took.
    pub fn on_reconnect(mut self, handler: impl Fn(&Peer, u32) + Send + Sync + 'static) -> Self {
        self.hooks.on_reconnect = Some(Arc::new(handler));
        self
    }

    /// Runs once when the client has ended (closed, or reconnection gave up), with the code
    /// and reason.
    pub fn on_close(mut self, handler: impl Fn(&CloseInfo) + Send + Sync + 'static) -> Self {
        self.hooks.on_close = Some(Arc::new(handler));
        self
    }

    /// Runs for every error on the connection (including error frames from the server).
    pub fn on_error(mut self, handler: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.hooks.on_error = Some(Arc::new(handler));
        self
    }

    /// Runs for every security event: handshake done, handshake failed without ending the
    /// connection (`fail_secure`), the server's direction switched.
    pub fn on_security(mut self, handler: impl Fn(&SecurityEvent) + Send + Sync + 'static) -> Self {
        self.hooks.on_security = Some(Arc::new(handler));
        self
    }

    /// Runs for every file the server offers (see [`crate::ServerBuilder::on_file`]).
    pub fn on_file(mut self, handler: impl Fn(FileOffer) + Send + Sync + 'static) -> Self {
        self.hooks.on_file = Some(Arc::new(handler));
        self
    }

    /// Connects over TCP and completes the hello, within `connect_timeout`.
    ///
    /// A server that refuses (connection limit, version) yields [`Error::Closed`] with its code;
    /// a refused token yields [`Error::Unauthorized`].
    ///
    /// The address is resolved once; reconnections use the addresses it resolved to.
    pub async fn connect(self, addr: impl ToSocketAddrs) -> Result<Client, Error> {
        let config = &self.config.connection;
        let (nodelay, max_payload) = (config.nodelay, config.max_payload);
        let addrs: Arc<[std::net::SocketAddr]> = tokio::net::lookup_host(addr).await?.collect();
        let dial = move || {
            let addrs = addrs.clone();
            async move {
                let stream = TcpStream::connect(&addrs[..]).await?;
                Ok::<_, Error>(TcpTransport::new(stream, nodelay, max_payload)?)
            }
        };
        self.open(dial, true).await
    }

    /// Connects over WebSocket to a `ws://host:port/path` URL (offering the `truflux`
    /// subprotocol) and completes the hello, within `connect_timeout`. `wss://` is not
    /// supported yet. A refused token (`401`) yields [`Error::Unauthorized`].
    pub async fn connect_ws(self, url: &str) -> Result<Client, Error> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Error::Config(format!("bad WebSocket URL {url:?}: {e}")))?;
        if uri.scheme_str() != Some("ws") {
            return Err(Error::Config(format!(
                "unsupported URL scheme in {url:?}: only ws:// is supported"
            )));
        }
        let host = uri
            .host()
            .ok_or_else(|| Error::Config(format!("no host in {url:?}")))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let config = &self.config.connection;
        let (nodelay, max_payload) = (config.nodelay, config.max_payload);
        let read_buffer = config.ws_read_buffer;
        let mut headers = http::HeaderMap::new();
        let mut protocols = crate::ws::SUBPROTOCOL.to_owned();
        match (&self.token, self.carrier) {
            (Some(token), TokenCarrier::Header) => {
                let value = http::HeaderValue::from_str(&format!("Bearer {}", token.as_str()))
                    .map_err(|_| Error::Config("the token is not a valid header value".into()))?;
                headers.insert(http::header::AUTHORIZATION, value);
            }
            (Some(token), TokenCarrier::Subprotocol) => {
                protocols = format!(
                    "{protocols}, {}{}",
                    crate::auth::SUBPROTOCOL_PREFIX,
                    token.as_str()
                );
            }
            _ => {}
        }
        let protocols = http::HeaderValue::from_str(&protocols)
            .map_err(|_| Error::Config("the token is not a valid subprotocol".into()))?;
        headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, protocols);
        let dial = move || {
            let (uri, headers, host) = (uri.clone(), headers.clone(), host.clone());
            async move {
                let stream = TcpStream::connect((host.as_str(), port)).await?;
                stream.set_nodelay(nodelay)?;
                let info = crate::transport::PeerInfo {
                    local: stream.local_addr()?,
                    remote: stream.peer_addr()?,
                    transport: crate::transport::TransportKind::WebSocket,
                };
                let stream = crate::ws::client_upgrade(stream, &uri, &headers).await?;
                Ok::<_, Error>(crate::ws::WsTransport::new(
                    stream,
                    info,
                    crate::ws::Role::Client,
                    max_payload,
                    read_buffer,
                ))
            }
        };
        let hello_token = self.carrier == TokenCarrier::Hello;
        self.open(dial, hello_token).await
    }

    /// Connects with `dial`, then starts the connection and, with reconnection on, the task
    /// that reconnects it.
    async fn open<T, D, F>(self, dial: D, token_in_hello: bool) -> Result<Client, Error>
    where
        T: Transport,
        D: Fn() -> F + Send + Sync + 'static,
        F: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let dialer = Dialer {
            dial,
            timeout: self.config.connect_timeout,
            token: self.token.filter(|_| token_in_hello),
        };
        let reconnect = self.config.reconnect.clone();
        let mut hello = dialer.hello();
        if reconnect.is_some() {
            hello.extensions.push((hello::EXT_SESSION, Bytes::new()));
        }
        let (info, reader, writer, server_hello) = dialer.attempt(&hello).await?;
        let resume_token = hello::extension(&server_hello, hello::EXT_SESSION)
            .and_then(|value| <[u8; TOKEN_LEN]>::try_from(value.as_ref()).ok());
        if reconnect.is_some() && resume_token.is_none() {
            tracing::warn!("the server keeps no sessions: this client will not reconnect");
        }
        let hellos = Hellos {
            client: hello,
            server: server_hello,
        };
        let required = self.config.connection.security.required;
        let new = connection::new_peer(
            PeerId::next(),
            info,
            self.config.connection,
            None,
            &hellos,
            self.protocol.as_ref(),
            resume_token,
        );
        let peer = new.peer.clone();
        let hooks = Arc::new(self.hooks);
        tokio::spawn(supervise(
            new.peer, new.start, reader, writer, hooks, dialer, reconnect,
        ));
        let client = Client { peer };
        if required {
            // Secure before anything is sent: key exchange, then both directions on.
            let secured = async {
                client
                    .set_own_security(true)
                    .await?
                    .set_peer_security(true)
                    .await
                    .map(drop)
            };
            match tokio::time::timeout(self.config.connect_timeout, secured).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    client.close_now(error.code(), "security could not be set up");
                    return Err(error);
                }
                Err(_) => {
                    client.close_now(Code::HANDSHAKE_FAILED, "security handshake timed out");
                    return Err(Error::Timeout("security handshake"));
                }
            }
        }
        Ok(client)
    }
}

/// Opens transports to the server and runs the hello on them.
struct Dialer<D> {
    dial: D,
    timeout: std::time::Duration,
    /// The token, when it travels in the hello.
    token: Option<Token>,
}

impl<T, D, F> Dialer<D>
where
    T: Transport,
    D: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    fn hello(&self) -> Hello {
        let mut hello = Hello::current();
        if let Some(token) = &self.token {
            hello
                .extensions
                .push((hello::EXT_AUTH, Bytes::copy_from_slice(token.as_str().as_bytes())));
        }
        hello
    }

    /// One connection attempt: transport, our hello, the server's, within the timeout.
    async fn attempt(&self, hello: &Hello) -> Result<(PeerInfo, T::Reader, T::Writer, Hello), Error> {
        let handshake = async {
            let transport = (self.dial)().await?;
            let info = transport.info();
            let (mut reader, mut writer) = transport.split();
            let server_hello = hello::connect(&mut reader, &mut writer, hello).await?;
            Ok::<_, Error>((info, reader, writer, server_hello))
        };
        tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| Error::Timeout("connecting"))?
    }
}

/// Runs the client's connections: the first, then (with reconnection on) each resumed one,
/// until the session ends.
async fn supervise<T, D, F>(
    peer: Peer,
    start: connection::Start,
    reader: T::Reader,
    writer: T::Writer,
    hooks: Arc<ClientHooks>,
    dialer: Dialer<D>,
    reconnect: Option<Reconnect>,
) where
    T: Transport,
    D: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    let mut outcome = connection::run(peer.clone(), start, reader, writer, hooks.clone()).await;
    loop {
        let Outcome::Parked(lost) = outcome else { return };
        let (Some(policy), Some(token)) = (&reconnect, peer.resume_token()) else {
            return peer.give_up(&lost);
        };
        if let Some(on_disconnect) = &hooks.on_disconnect {
            on_disconnect(&lost);
        }
        let mut attempts = 0;
        let resumed = loop {
            if policy.max_attempts.is_some_and(|max| attempts >= max) {
                break None;
            }
            tokio::select! {
                _ = tokio::time::sleep(policy.delay(attempts, random_fraction())) => {}
                _ = peer.closed() => return,
            }
            attempts += 1;
            let received = peer.resume_state().map_or(0, |resume| resume.received());
            let mut hello = dialer.hello();
            let mut value = token.to_vec();
            value.extend_from_slice(&received.to_be_bytes());
            hello.extensions.push((hello::EXT_RESUME, Bytes::from(value)));
            match dialer.attempt(&hello).await {
                Ok((info, reader, writer, server_hello)) => {
                    let count = hello::extension(&server_hello, hello::EXT_RESUME)
                        .and_then(|value| <[u8; 8]>::try_from(value.as_ref()).ok())
                        .map(u64::from_be_bytes);
                    let hellos = Hellos {
                        client: hello,
                        server: server_hello,
                    };
                    let started = match count {
                        Some(count) => peer.resume(info, &hellos, count),
                        None => Err(ResumeRefused::Ended),
                    };
                    match started {
                        Ok(start) => break Some((start, reader, writer)),
                        Err(refused) => {
                            let reason = match refused {
                                ResumeRefused::Count(bad) => bad.to_string(),
                                ResumeRefused::Ended => "the server did not resume the session".into(),
                            };
                            debug!(%reason, "resume refused");
                            return peer.give_up(&CloseInfo {
                                code: Code::RESUME_FAILED,
                                reason,
                                initiator: Initiator::Local,
                            });
                        }
                    }
                }
                Err(error) if connection::ends_session(error.code()) => {
                    debug!(%error, "reconnection refused");
                    let reason = match &error {
                        Error::Closed(info) => info.reason.clone(),
                        error => error.to_string(),
                    };
                    return peer.give_up(&CloseInfo {
                        code: error.code(),
                        reason,
                        initiator: Initiator::Remote,
                    });
                }
                Err(error) => debug!(%error, attempts, "reconnection attempt failed"),
            }
        };
        let Some((start, reader, writer)) = resumed else {
            return peer.give_up(&CloseInfo {
                reason: format!("{} (reconnection gave up after {attempts} attempts)", lost.reason),
                ..lost
            });
        };
        if let Some(on_reconnect) = &hooks.on_reconnect {
            on_reconnect(&peer, attempts);
        }
        outcome = connection::run(peer.clone(), start, reader, writer, hooks.clone()).await;
    }
}

/// A random number in `[0, 1)` for the reconnection jitter.
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// A connection to a server. Dereferences to its [`Peer`]: `send`, `close`, `info`, `session`.
///
/// Dropping the last `Client` handle closes the connection gracefully with `NORMAL` (1000);
/// clones of its [`Peer`] do not keep it open.
pub struct Client {
    peer: Peer,
}

impl Client {
    /// A builder with the default configuration.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            config: ClientConfig::default(),
            protocol: Arc::new(NoMessages),
            hooks: ClientHooks::default(),
            token: None,
            carrier: TokenCarrier::default(),
        }
    }

    /// Connects to `addr` with the defaults and a protocol for the server's messages.
    pub async fn connect(addr: impl ToSocketAddrs, protocol: impl Protocol) -> Result<Client, Error> {
        Client::builder().protocol(protocol).connect(addr).await
    }

    /// The connection to the server.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl Deref for Client {
    type Target = Peer;

    fn deref(&self) -> &Peer {
        &self.peer
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("peer", &self.peer).finish()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if !self.peer.is_closed() {
            let peer = self.peer.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    peer.close(Code::NORMAL, "client dropped").await;
                });
            } else {
                peer.close_now(Code::NORMAL, "client dropped");
            }
        }
    }
}
