//! The client: connect (transport, opening within a timeout), then a [`Peer`] to the server,
//! and with [`Reconnect`] a supervisor that resumes the session over new connections.
//!
//! This module owns how a client decides its opening (keyed or plain, where its token travels,
//! which server keys it trusts) and the reconnection loop. What happens on a connection belongs
//! to [`crate::connection`]; the opening itself to [`crate::opening`].

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpStream, ToSocketAddrs};
use tracing::debug;

use crate::auth::Token;
use crate::config::{ClientConfig, Reconnect};
use crate::connection::engine::{ends_session, Engine};
use crate::connection::{self, Hooks, KexPool, Outcome, Owner, Peer, ResumeRefused};
use crate::error::{CloseInfo, Code, Error, Initiator, Timeout};
use crate::file::{FileOffer, OfferFn, Router};
use crate::opening::client::{Connected, Plan};
use crate::opening::extensions::{Claim, Credentials};
use crate::protocol::{BoxFuture, NoMessages, Protocol};
use crate::security::handshake::Pins;
use crate::security::{Fingerprint, Opening, SecurityConfig, SecurityEvent, Trust};
use crate::transport::{PeerInfo, TcpTransport, Transport};

type CloseFn = Arc<dyn Fn(&CloseInfo) + Send + Sync>;
type ErrorFn = Arc<dyn Fn(&Error) + Send + Sync>;
type SecurityFn = Arc<dyn Fn(&SecurityEvent) + Send + Sync>;
type PeerFn = Arc<dyn Fn(&Peer) + Send + Sync>;
type ReconnectFn = Arc<dyn Fn(&Peer, u32) + Send + Sync>;
type RenewFn = Arc<dyn Fn(&Peer) + Send + Sync>;

#[derive(Default)]
struct ClientHooks {
    on_connect: Option<PeerFn>,
    on_disconnect: Option<CloseFn>,
    on_reconnect: Option<ReconnectFn>,
    on_renew: Option<RenewFn>,
    on_close: Option<CloseFn>,
    on_error: Option<ErrorFn>,
    on_security: Option<SecurityFn>,
    on_file: Option<OfferFn>,
}

impl Hooks for ClientHooks {
    fn connected(&self, peer: &Peer) -> BoxFuture<'static, ()> {
        if let Some(on_connect) = &self.on_connect {
            on_connect(peer);
        }
        Box::pin(std::future::ready(()))
    }

    fn error(&self, _peer: &Peer, error: &Error) {
        debug!(%error, "client connection error");
        if let Some(on_error) = &self.on_error {
            on_error(error);
        }
    }

    fn closed(&self, _peer: &Peer, info: &CloseInfo) {
        if let Some(on_close) = &self.on_close {
            on_close(info);
        }
    }

    fn security(&self, _peer: &Peer, event: &SecurityEvent) {
        debug!(?event, "security");
        if let Some(on_security) = &self.on_security {
            on_security(event);
        }
    }
}

/// Where a WebSocket client puts its bearer token in a plain opening (see [`crate::auth`]).
/// In a keyed opening the token always travels in the protected hello; over TCP it travels in
/// the hello.
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
    #[cfg(feature = "tls-base")]
    tls: Option<Arc<crate::tls::rustls::ClientConfig>>,
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

    /// Where a WebSocket connection carries the token in a plain opening. Default
    /// [`TokenCarrier::Header`].
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

    /// With [`Reconnect::renew`](crate::Reconnect::renew): runs when the server could not
    /// resume the session and the client started a new one instead. Messages of the old
    /// session may have been missed; what the server knew of it (rooms, say) is gone, so this
    /// is where an application joins its rooms again. `on_reconnect` runs after it.
    pub fn on_renew(mut self, handler: impl Fn(&Peer) + Send + Sync + 'static) -> Self {
        self.hooks.on_renew = Some(Arc::new(handler));
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

    /// Runs for every security event: key exchange done, no common suite, either direction
    /// switched.
    pub fn on_security(mut self, handler: impl Fn(&SecurityEvent) + Send + Sync + 'static) -> Self {
        self.hooks.on_security = Some(Arc::new(handler));
        self
    }

    /// Runs for every file the server offers (see [`crate::ServerBuilder::on_file`]).
    pub fn on_file(mut self, handler: impl Fn(FileOffer) + Send + Sync + 'static) -> Self {
        self.hooks.on_file = Some(Arc::new(move |_peer: &Peer, offer| handler(offer)));
        self
    }

    /// Connects over TCP and completes the opening, within `connect_timeout`.
    ///
    /// A server that refuses (connection limit, version) yields [`Error::Closed`] with its code;
    /// a refused token yields [`Error::Unauthorized`]; a server key that is not trusted,
    /// [`Error::Security`] with `UNTRUSTED_SERVER`.
    ///
    /// The address is resolved once; reconnections use the addresses it resolved to.
    pub async fn connect(self, addr: impl ToSocketAddrs) -> Result<Client, Error> {
        let config = &self.config.connection;
        let (nodelay, max_payload) = (config.nodelay, config.max_payload);
        let addrs: Arc<[std::net::SocketAddr]> = tokio::net::lookup_host(addr).await?.collect();
        let dial = move |_keyed: bool| {
            let addrs = addrs.clone();
            async move {
                let stream = TcpStream::connect(&addrs[..]).await?;
                Ok::<_, Error>(TcpTransport::new(stream, nodelay, max_payload)?)
            }
        };
        self.open(dial, true).await
    }

    /// The TLS config of [`connect_tls`](Self::connect_tls) and `wss://` URLs (feature
    /// `tls`): its root store decides which servers are trusted
    /// ([`truflux::tls::client_config`](crate::tls::client_config)). Without it, feature
    /// `tls-webpki-roots` trusts Mozilla's roots; otherwise connecting is a config error.
    /// An ALPN list left empty gets the transport's (`truflux`, or `http/1.1` for `wss://`).
    #[cfg(feature = "tls-base")]
    pub fn tls(mut self, config: Arc<crate::tls::rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Connects over TLS over TCP (feature `tls`), checking that the server's certificate is
    /// valid for `server_name` (a DNS name or an IP address), and completes the opening, all
    /// within `connect_timeout`. A certificate that is not trusted, not for this name or
    /// expired yields [`Error::Tls`] with code `UNTRUSTED_SERVER`, and a reconnecting client
    /// gives up on it rather than retrying.
    #[cfg(feature = "tls-base")]
    pub async fn connect_tls(self, addr: impl ToSocketAddrs, server_name: &str) -> Result<Client, Error> {
        let tls = crate::tls::Dial::new(self.tls.as_ref(), crate::tls::ALPN_TCP, server_name)?;
        let config = &self.config.connection;
        let (nodelay, max_payload) = (config.nodelay, config.max_payload);
        let addrs: Arc<[std::net::SocketAddr]> = tokio::net::lookup_host(addr).await?.collect();
        let dial = move |_keyed: bool| {
            let (addrs, tls) = (addrs.clone(), tls.clone());
            async move {
                let stream = TcpStream::connect(&addrs[..]).await?;
                stream.set_nodelay(nodelay)?;
                let (local, remote) = (stream.local_addr()?, stream.peer_addr()?);
                let mut info = PeerInfo::new(local, remote, crate::transport::TransportKind::Tcp);
                info.tls = true;
                let stream = tls.connect(stream).await?;
                Ok::<_, Error>(TcpTransport::over(stream, info, max_payload))
            }
        };
        self.open(dial, true).await
    }

    /// Connects over WebSocket to a `ws://host:port/path` URL, or `wss://` with feature `tls`
    /// (see [`tls`](Self::tls)), offering the `truflux` subprotocol, and completes the
    /// opening, within `connect_timeout`. A refused token (`401`) yields
    /// [`Error::Unauthorized`]; a certificate problem, [`Error::Tls`] as for
    /// [`connect_tls`](Self::connect_tls).
    #[cfg(feature = "ws")]
    pub async fn connect_ws(self, url: &str) -> Result<Client, Error> {
        let target = crate::ws::client::Target::parse(url)?;
        let tls = self.ws_tls(&target)?;
        let config = &self.config.connection;
        let upgrade = crate::ws::client::Upgrade {
            target,
            token: self.token.clone(),
            carrier: self.carrier,
            nodelay: config.nodelay,
            max_payload: config.max_payload,
            read_buffer: config.ws_read_buffer,
            tls,
        };
        let upgrade = Arc::new(upgrade);
        let dial = move |keyed: bool| {
            let upgrade = upgrade.clone();
            async move { upgrade.dial(keyed).await }
        };
        let hello_token = self.carrier == TokenCarrier::Hello;
        self.open(dial, hello_token).await
    }

    #[cfg(all(feature = "ws", feature = "tls-base"))]
    fn ws_tls(&self, target: &crate::ws::client::Target) -> Result<Option<crate::ws::client::Tls>, Error> {
        let alpn = crate::tls::ALPN_WS;
        target
            .secure
            .then(|| crate::tls::Dial::new(self.tls.as_ref(), alpn, &target.host))
            .transpose()
    }

    #[cfg(all(feature = "ws", not(feature = "tls-base")))]
    fn ws_tls(&self, _: &crate::ws::client::Target) -> Result<Option<crate::ws::client::Tls>, Error> {
        Ok(None)
    }

    /// Connects with `dial`, then starts the connection and, with reconnection on, the task
    /// that reconnects it.
    async fn open<T, D, F>(self, dial: D, token_in_hello: bool) -> Result<Client, Error>
    where
        T: Transport,
        D: Fn(bool) -> F + Send + Sync + 'static,
        F: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let security = Arc::new(self.config.connection.security.clone());
        let dialer = Dialer {
            dial,
            timeout: self.config.connect_timeout,
            token: self.token,
            token_in_hello,
            security: security.clone(),
            reconnect: self.config.reconnect.is_some(),
            first_key: Arc::new(Mutex::new(None)),
            pool: KexPool::new(2),
        };
        let (info, reader, writer, connected) = dialer.attempt(None).await?;
        let resume_token = connected.answer.session;
        if dialer.reconnect && resume_token.is_none() {
            tracing::warn!("the server keeps no sessions: this client will not reconnect");
        }
        let fell_back = connected.fell_back.clone();
        let settings = connection::settings(&self.config.connection);
        let engine = Engine::new(
            settings,
            connected.opened,
            resume_token.is_some(),
            std::time::Instant::now(),
        );
        let hooks = Arc::new(self.hooks);
        let owner = Owner {
            server: std::sync::RwLock::new(None),
            kex: dialer.pool.clone(),
            files: Arc::new(Router::new(hooks.on_file.clone())),
            meters: crate::meters::Meters::default(),
        };
        let new = connection::new_peer(
            info,
            Arc::new(self.config.connection.clone()),
            engine,
            owner,
            self.protocol.as_ref(),
            resume_token,
        );
        let peer = new.peer.clone();
        dialer.remember_key(&peer);
        if let Some(event) = fell_back {
            hooks.security(&peer, &event);
        }
        let reconnect = self.config.reconnect.clone();
        tokio::spawn(supervise(
            new.peer, new.start, reader, writer, hooks, dialer, reconnect,
        ));
        let client = Client {
            _life: Arc::new(ClientLife { peer: peer.clone() }),
            peer,
        };
        if security.required {
            client.secured(self.config.connect_timeout).await?;
        }
        Ok(client)
    }
}

/// Opens transports to the server and runs the opening on them.
struct Dialer<D> {
    dial: D,
    timeout: Duration,
    token: Option<Token>,
    /// The token travels in the hello of a plain opening (not in a WebSocket upgrade).
    token_in_hello: bool,
    security: Arc<SecurityConfig>,
    reconnect: bool,
    /// The server key the first connection saw, pinned afterwards under `Trust::FirstUse`.
    first_key: Arc<Mutex<Option<Fingerprint>>>,
    pool: KexPool,
}

impl<T, D, F> Dialer<D>
where
    T: Transport,
    D: Fn(bool) -> F + Send + Sync + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    /// Whether an opening exchanges keys first: when it carries something worth protecting.
    fn keyed(&self, resume_secret: bool) -> bool {
        let security = &self.security;
        if !security.can_exchange() {
            return false;
        }
        match security.opening {
            Opening::Keyed => true,
            Opening::Plain => resume_secret || security.required,
            _ => {
                resume_secret
                    || security.required
                    || self.token.is_some()
                    || self.reconnect
                    || security.trust != Trust::Anonymous
            }
        }
    }

    fn pins(&self) -> Pins {
        let fingerprints = match &self.security.trust {
            Trust::Pinned(pins) => pins.clone(),
            Trust::FirstUse => self
                .first_key
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .copied()
                .collect(),
            _ => Vec::new(),
        };
        Pins { fingerprints }
    }

    /// The plan of one opening: a fresh session, or a resume of `resume`.
    fn plan(&self, resume: Option<(Claim, Option<crate::security::schedule::Secret>)>) -> Plan {
        let (claim, secret) = match resume {
            Some((claim, secret)) => (Some(claim), secret),
            None => (None, None),
        };
        let keyed = self.keyed(secret.is_some());
        let credentials = Credentials {
            token: self.token.clone().filter(|_| keyed || self.token_in_hello),
            session: self.reconnect && claim.is_none(),
            resume: claim,
            secure: self.security.required,
        };
        Plan {
            credentials,
            keyed,
            security: self.security.clone(),
            pins: self.pins(),
            resume_secret: secret,
        }
    }

    /// One connection attempt: transport, opening, within the timeout.
    async fn attempt(
        &self,
        resume: Option<(Claim, Option<crate::security::schedule::Secret>)>,
    ) -> Result<(PeerInfo, T::Reader, T::Writer, Connected), Error> {
        let plan = self.plan(resume);
        let opening = async {
            let transport = (self.dial)(plan.keyed).await?;
            let info = transport.info();
            let (mut reader, mut writer) = transport.split();
            let connected =
                crate::opening::client::connect(&mut reader, &mut writer, plan, &self.pool).await?;
            Ok::<_, Error>((info, reader, writer, connected))
        };
        tokio::time::timeout(self.timeout, opening)
            .await
            .map_err(|_| Error::Timeout(Timeout::Connect))?
    }

    /// Under `Trust::FirstUse`, the first key seen is pinned for every later connection.
    fn remember_key(&self, peer: &Peer) {
        if self.security.trust == Trust::FirstUse {
            let mut first = self.first_key.lock().unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = peer.server_key();
            }
        }
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
    D: Fn(bool) -> F + Send + Sync + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    let mut outcome = connection::driver::run(peer.clone(), start, reader, writer, hooks.clone()).await;
    loop {
        let Outcome::Parked(lost) = outcome else { return };
        let (Some(policy), Some(token)) = (&reconnect, peer.resume_token()) else {
            return peer.give_up(&lost);
        };
        if let Some(on_disconnect) = &hooks.on_disconnect {
            on_disconnect(&lost);
        }
        let Some(next) = reconnect_once(&peer, &dialer, policy, token, &lost).await else {
            return;
        };
        dialer.remember_key(&peer);
        if next.renewed {
            if let Some(on_renew) = &hooks.on_renew {
                on_renew(&peer);
            }
        }
        if let Some(on_reconnect) = &hooks.on_reconnect {
            on_reconnect(&peer, next.attempts);
        }
        outcome =
            connection::driver::run(peer.clone(), next.start, next.reader, next.writer, hooks.clone()).await;
    }
}

/// A new connection of the session: resumed, or (with `Reconnect::renew`) a new session.
struct Reconnected<R, W> {
    start: connection::Start,
    reader: R,
    writer: W,
    attempts: u32,
    renewed: bool,
}

/// Reconnects with backoff until the session resumes (or, with `renew`, a new session starts
/// once the server refused to resume it); `None` when it ended instead (given up, refused, or
/// closed meanwhile).
async fn reconnect_once<T, D, F>(
    peer: &Peer,
    dialer: &Dialer<D>,
    policy: &Reconnect,
    token: [u8; 32],
    lost: &CloseInfo,
) -> Option<Reconnected<T::Reader, T::Writer>>
where
    T: Transport,
    D: Fn(bool) -> F + Send + Sync + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    let (mut attempts, mut renewing) = (0, false);
    while policy.max_attempts.is_none_or(|max| attempts < max) {
        tokio::select! {
            _ = tokio::time::sleep(policy.delay(attempts, random_fraction())) => {}
            _ = peer.closed() => return None,
        }
        attempts += 1;
        let claim = (!renewing).then(|| resume_claim(peer, token));
        let refused = match dialer.attempt(claim).await {
            Ok((info, reader, writer, connected)) => match attach(peer, info, connected, renewing) {
                Ok(start) => {
                    return Some(Reconnected {
                        start,
                        reader,
                        writer,
                        attempts,
                        renewed: renewing,
                    })
                }
                Err(refused) => refused,
            },
            Err(error) if ends_session(error.code()) => {
                debug!(%error, "reconnection refused");
                let reason = match &error {
                    Error::Closed(info) => info.reason.clone(),
                    error => error.to_string(),
                };
                CloseInfo::new(error.code(), reason, Initiator::Remote)
            }
            Err(error) => {
                debug!(%error, attempts, "reconnection attempt failed");
                continue;
            }
        };
        if policy.renew && refused.code == Code::RESUME_FAILED {
            debug!(reason = %refused.reason, "the session could not resume: starting a new one");
            renewing = true;
            continue;
        }
        peer.give_up(&refused);
        return None;
    }
    let reason = format!("{} (reconnection gave up after {attempts} attempts)", lost.reason);
    peer.give_up(&CloseInfo::new(lost.code, reason, lost.initiator));
    None
}

/// What a resume presents: the token, and how much of the session this side received.
fn resume_claim(peer: &Peer, token: [u8; 32]) -> (Claim, Option<crate::security::schedule::Secret>) {
    let engine = peer.engine();
    let claim = Claim {
        token,
        count: engine.received(),
        binder: None,
    };
    (claim, engine.resume_secret().cloned())
}

/// Attaches a new connection whose opening succeeded: as the session's next connection, or as
/// a new session when `renewing`. `Err`: why the session cannot go on this way.
fn attach(
    peer: &Peer,
    info: PeerInfo,
    connected: Connected,
    renewing: bool,
) -> Result<connection::Start, CloseInfo> {
    let refused = |reason: String| CloseInfo::new(Code::RESUME_FAILED, reason, Initiator::Local);
    if renewing {
        return peer
            .renew(info, connected.opened, connected.answer.session)
            .map_err(|_| refused("the session has ended".into()));
    }
    match connected.answer.resume {
        Some(count) => peer
            .resume(info, connected.opened, count)
            .map_err(|refusal| match refusal {
                ResumeRefused::Count(bad) => refused(bad.to_string()),
                ResumeRefused::Ended => refused("the session has ended".into()),
            }),
        None => Err(refused("the server did not resume the session".into())),
    }
}

/// A random number in `[0, 1)` for the reconnection jitter.
fn random_fraction() -> f64 {
    let bytes = crate::security::random_array::<8>();
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// A connection to a server. [`Client::peer`] gives its [`Peer`] for `send`, `close`, `info`,
/// `session`, and the rest; message helpers such as `Msg::send` take a `&Client` as they take
/// a `&Peer`.
///
/// Cheap to clone. When the last clone is dropped the connection closes gracefully with
/// `NORMAL` (1000), unless it was closed already; clones of its [`Peer`] do not keep it open
/// (a handler holding the peer cannot keep a client alive that the application dropped).
#[derive(Clone)]
pub struct Client {
    peer: Peer,
    _life: Arc<ClientLife>,
}

/// Closes the connection when the last [`Client`] clone goes.
struct ClientLife {
    peer: Peer,
}

impl Drop for ClientLife {
    fn drop(&mut self) {
        if self.peer.is_closed() {
            return;
        }
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

impl AsRef<Peer> for Client {
    fn as_ref(&self) -> &Peer {
        &self.peer
    }
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
            #[cfg(feature = "tls-base")]
            tls: None,
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

    /// Waits until both directions are secure (what `SecurityConfig::required` promises
    /// before `connect` returns), at most `limit`.
    async fn secured(&self, limit: Duration) -> Result<(), Error> {
        let both = self.peer.shared_security(|state| state.own && state.peer);
        match tokio::time::timeout(limit, both).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error),
            Err(_) => {
                self.peer
                    .close_now(Code::HANDSHAKE_TIMEOUT, "the connection did not become secure");
                Err(Error::Timeout(Timeout::Security))
            }
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("peer", &self.peer).finish()
    }
}
