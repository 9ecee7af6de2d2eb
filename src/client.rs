//! The client: connect (with a timeout and the hello), then a [`Peer`] to the server.

use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpStream, ToSocketAddrs};

use crate::config::ClientConfig;
use crate::connection::{self, Hellos, Hooks, PeerId};
use crate::file::FileOffer;
use crate::frame::control::Hello;
use crate::hello;
use crate::protocol::{BoxFuture, NoMessages, Protocol};
use crate::security::SecurityEvent;
use crate::transport::{TcpTransport, Transport};
use crate::{CloseInfo, Code, Error, Peer};

type CloseFn = Arc<dyn Fn(&CloseInfo) + Send + Sync>;
type ErrorFn = Arc<dyn Fn(&Error) + Send + Sync>;
type SecurityFn = Arc<dyn Fn(&SecurityEvent) + Send + Sync>;
type FileFn = Arc<dyn Fn(FileOffer) + Send + Sync>;

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

struct ClientHooks {
    on_close: Option<CloseFn>,
    on_error: Option<ErrorFn>,
    on_security: Option<SecurityFn>,
    on_file: Option<FileFn>,
}

impl Hooks for ClientHooks {
    fn connected(&self, _peer: &Peer) -> BoxFuture<'static, ()> {
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

/// Builds a [`Client`].
#[must_use]
pub struct ClientBuilder {
    config: ClientConfig,
    protocol: Arc<dyn Protocol>,
    hooks: ClientHooks,
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

    /// Runs once when the connection has ended, with its code and reason.
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
    /// A server that refuses (connection limit, version) yields [`Error::Closed`] with its code.
    pub async fn connect(self, addr: impl ToSocketAddrs) -> Result<Client, Error> {
        let config = &self.config.connection;
        let (nodelay, max_payload) = (config.nodelay, config.max_payload);
        let open = async {
            let stream = TcpStream::connect(addr).await?;
            Ok::<_, Error>(TcpTransport::new(stream, nodelay, max_payload)?)
        };
        self.open(open).await
    }

    /// Connects over WebSocket to a `ws://host:port/path` URL (offering the `truflux`
    /// subprotocol) and completes the hello, within `connect_timeout`. `wss://` is not
    /// supported yet.
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
        let ws_config = crate::ws::config(config);
        let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .map_err(|e| Error::Config(format!("bad WebSocket URL {url:?}: {e}")))?;
        request.headers_mut().insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static(crate::ws::SUBPROTOCOL),
        );
        let open = async move {
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(nodelay)?;
            let info = crate::transport::PeerInfo {
                local: stream.local_addr()?,
                remote: stream.peer_addr()?,
                transport: crate::transport::TransportKind::WebSocket,
            };
            let (stream, _response) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config))
                    .await
                    .map_err(|e| Error::Handshake(format!("WebSocket upgrade failed: {e}")))?;
            Ok::<_, Error>(crate::ws::WsTransport::new(stream, info, max_payload))
        };
        self.open(open).await
    }

    /// Completes the hello on a transport produced by `open`, then starts the connection.
    async fn open<T: Transport>(self, open: impl Future<Output = Result<T, Error>>) -> Result<Client, Error> {
        let handshake = async {
            let transport = open.await?;
            let info = transport.info();
            let (mut reader, mut writer) = transport.split();
            let server_hello = hello::connect(&mut reader, &mut writer).await?;
            Ok::<_, Error>((info, reader, writer, server_hello))
        };
        let (info, reader, writer, server_hello) =
            tokio::time::timeout(self.config.connect_timeout, handshake)
                .await
                .map_err(|_| Error::Timeout("connecting"))??;
        let id = PeerId(NEXT_CLIENT.fetch_add(1, Ordering::Relaxed));
        let hellos = Hellos {
            client: Hello::current(),
            server: server_hello,
        };
        let required = self.config.connection.security.required;
        let new = connection::new_peer(id, info, self.config.connection, None, &hellos);
        let peer = new.peer.clone();
        tokio::spawn(connection::run(
            new,
            reader,
            writer,
            self.protocol,
            Arc::new(self.hooks),
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
            hooks: ClientHooks {
                on_close: None,
                on_error: None,
                on_security: None,
                on_file: None,
            },
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
