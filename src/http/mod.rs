//! Binding truflux servers into HTTP: WebSocket peers arrive through hyper's upgrades.
//!
//! This module owns routing an HTTP request to a truflux server by path, the fallback to the
//! application's own service for every other request, and the HTTP side of the standalone
//! WebSocket listener. The WebSocket protocol itself belongs to [`crate::ws`]; admission and the
//! connection belong to the server.
//!
//! * [`HttpBind`] mounts servers at paths in front of a fallback service. It is both a
//!   [`tower_service::Service`] and a [`hyper::service::Service`], so it can be given to
//!   `hyper::server::conn::http1` directly or layered in a tower stack.
//! * [`Endpoint`] is one server at one path, as a tower service that never fails: mount it in
//!   axum with `Router::route_service(path, Endpoint::new(&server))`.
//!
//! A non-upgrade request to a mounted path gets `426 Upgrade Required`; an upgrade from a
//! browser page whose `Origin` is not in [`ServerConfig::allowed_origins`](crate::ServerConfig::allowed_origins)
//! gets `403 Forbidden`. The upgrade request (without its token) is kept in the peer's
//! [`PeerInfo::upgrade`] ([`UpgradeRequest`]). The peer's addresses
//! come from a [`ConnectionAddrs`] request extension when the HTTP server inserts one (the
//! standalone listener does; with the `axum` feature, axum's `ConnectInfo` is used too);
//! otherwise they are reported as `0.0.0.0:0`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};

mod upgrade;

pub use upgrade::UpgradeRequest;

use crate::error::ConfigError;
use crate::transport::{PeerInfo, TransportKind};
use crate::ws::{self, WsTransport};
use crate::{Error, Server};

/// The local and remote address of the HTTP connection a request came on. Insert it as a
/// request extension so that WebSocket peers report real addresses in [`crate::Peer::info`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionAddrs {
    /// The server's address.
    pub local: SocketAddr,
    /// The client's address.
    pub remote: SocketAddr,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One truflux server as an HTTP endpoint: upgrades WebSocket requests into peers, answers
/// anything else with `426 Upgrade Required`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    server: Server,
}

impl Endpoint {
    /// The endpoint for `server`.
    pub fn new(server: &Server) -> Endpoint {
        Endpoint {
            server: server.clone(),
        }
    }

    /// Answers `request`: `101` and a new peer, or the refusal.
    ///
    /// When the server authenticates and the request carries a token (`Authorization: Bearer`
    /// or a `truflux.bearer.<token>` subprotocol), the token is validated first and a refused
    /// one is answered with `401 Unauthorized`; without one in the request, the token is
    /// expected in the hello.
    pub async fn handle<B>(&self, mut request: Request<B>) -> Response<Full<Bytes>> {
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        let addrs = connection_addrs(&request).unwrap_or(ConnectionAddrs {
            local: unknown,
            remote: unknown,
        });
        let mut info = PeerInfo::new(addrs.local, addrs.remote, TransportKind::WebSocket);
        info.tls = request.extensions().get::<OverTls>().is_some();
        let headers = request.headers();
        let origin = headers.get(http::header::ORIGIN);
        if !upgrade::origin_allowed(self.server.allowed_origins(), origin) {
            let origin = String::from_utf8_lossy(origin.map_or(&b""[..], |o| o.as_bytes()));
            tracing::info!(remote = %addrs.remote, %origin, "upgrade refused: origin not allowed");
            return status(StatusCode::FORBIDDEN, "this origin may not connect\n");
        }
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| crate::auth::from_authorization(value.as_bytes()))
            .or_else(|| {
                headers
                    .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
                    .iter()
                    .find_map(|value| crate::auth::from_subprotocols(value.as_bytes()))
            });
        let identity = if ws::is_upgrade(&request) {
            info.upgrade = Some(Arc::new(UpgradeRequest::of(&request)));
            match self.server.authenticate_upgrade(token, &info).await {
                Ok(identity) => identity,
                Err(error) => {
                    self.server.report_refused(&error);
                    return status(StatusCode::UNAUTHORIZED, format!("{error}\n"));
                }
            }
        } else {
            None
        };
        let (response, on_upgrade) = match ws::accept(&mut request) {
            Ok(accepted) => accepted,
            Err(refusal) => return *refusal,
        };
        let server = self.server.clone();
        let config = server.connection_config();
        let (max_payload, read_buffer) = (config.max_payload, config.ws_read_buffer);
        tokio::spawn(async move {
            // Out of the result before the peer runs (a result held across that await would
            // stay in the task for the peer's whole life).
            let stream = match ws::upgraded(on_upgrade).await {
                Ok(stream) => stream,
                Err(error) => return server.report_refused(&Error::Io(error)),
            };
            let transport = WsTransport::new(stream, info, ws::Role::Server, max_payload, read_buffer);
            server.admit(transport, identity).await;
        });
        response
    }
}

fn status(code: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = code;
    response
}

fn connection_addrs<B>(request: &Request<B>) -> Option<ConnectionAddrs> {
    if let Some(addrs) = request.extensions().get::<ConnectionAddrs>() {
        return Some(*addrs);
    }
    #[cfg(feature = "axum")]
    if let Some(info) = request
        .extensions()
        .get::<::axum::extract::ConnectInfo<SocketAddr>>()
    {
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        return Some(ConnectionAddrs {
            local: unknown,
            remote: info.0,
        });
    }
    None
}

impl<B: Send + 'static> tower_service::Service<Request<B>> for Endpoint {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Full<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let endpoint = self.clone();
        Box::pin(async move { Ok(endpoint.handle(request).await) })
    }
}

/// Truflux servers mounted at paths in front of a fallback service.
///
/// ```no_run
/// # async fn run() -> Result<(), truflux::Error> {
/// use truflux::http::{HttpBind, NotFound};
/// let server = truflux::Server::builder().start().await?;
/// let service = HttpBind::new(NotFound).mount("/truflux", &server)?;
/// // Serve `service` with hyper's http1 connection builder `.with_upgrades()`.
/// # let _ = service; Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpBind<F> {
    mounts: Arc<HashMap<String, Endpoint>>,
    #[cfg(feature = "prometheus")]
    metrics: Option<(String, crate::prometheus::Prometheus)>,
    fallback: F,
}

impl<F> HttpBind<F> {
    /// No mounts yet; every request goes to `fallback`.
    pub fn new(fallback: F) -> HttpBind<F> {
        HttpBind {
            mounts: Arc::new(HashMap::new()),
            #[cfg(feature = "prometheus")]
            metrics: None,
            fallback,
        }
    }

    /// Serves the Prometheus scrape at `path` (such as `/metrics`): `GET` gets the current
    /// values in the text format.
    #[cfg(feature = "prometheus")]
    pub fn metrics(mut self, path: impl Into<String>, prometheus: &crate::prometheus::Prometheus) -> Self {
        self.metrics = Some((path.into(), prometheus.clone()));
        self
    }

    /// The scrape, if `request` is for the metrics path.
    fn scrape<B>(&self, request: &Request<B>) -> Option<Response<Full<Bytes>>> {
        #[cfg(feature = "prometheus")]
        if let Some((path, prometheus)) = &self.metrics {
            if request.uri().path() == path {
                let mut response = status(StatusCode::OK, prometheus.render());
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                return Some(response);
            }
        }
        let _ = request;
        None
    }

    /// Mounts `server` at `path` (an exact request path such as `/truflux`).
    ///
    /// Fails with [`ConfigError::PathNotAbsolute`] if `path` does not start with `/`, with
    /// [`ConfigError::PathTaken`] if it already has a server.
    pub fn mount(mut self, path: impl Into<String>, server: &Server) -> Result<HttpBind<F>, Error> {
        let path = path.into();
        if !path.starts_with('/') {
            return Err(ConfigError::PathNotAbsolute(path).into());
        }
        if self.mounts.contains_key(&path) {
            return Err(ConfigError::PathTaken(path).into());
        }
        Arc::make_mut(&mut self.mounts).insert(path, Endpoint::new(server));
        Ok(self)
    }

    fn endpoint<B>(&self, request: &Request<B>) -> Option<&Endpoint> {
        self.mounts.get(request.uri().path())
    }

    /// The answer when the request is ours (the scrape, a mounted endpoint); otherwise the
    /// request back, for the fallback. Shared by the tower and the hyper service.
    fn answer_own<B: Send + 'static, FB: Send + 'static, E: Send + 'static>(
        &self,
        request: Request<B>,
    ) -> Routed<B, FB, E> {
        if let Some(scrape) = self.scrape(&request) {
            return Routed::Ours(Box::pin(std::future::ready(Ok(scrape.map(Either::Left)))));
        }
        match self.endpoint(&request).cloned() {
            Some(endpoint) => Routed::Ours(Box::pin(async move {
                Ok(endpoint.handle(request).await.map(Either::Left))
            })),
            None => Routed::Fallback(request),
        }
    }
}

/// The body of an [`HttpBind`] response: ours (upgrades, refusals) or the fallback's.
pub type BindBody<FB> = Either<Full<Bytes>, FB>;

/// Where [`HttpBind`] sends a request: its own answer, or the fallback.
#[allow(clippy::large_enum_variant)] // matched at once, never stored
enum Routed<B, FB, E> {
    Ours(BoxFuture<Result<Response<BindBody<FB>>, E>>),
    Fallback(Request<B>),
}

impl<F, B, FB> tower_service::Service<Request<B>> for HttpBind<F>
where
    F: tower_service::Service<Request<B>, Response = Response<FB>> + Clone + Send + 'static,
    F::Future: Send + 'static,
    F::Error: Send + 'static,
    FB: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BindBody<FB>>;
    type Error = F::Error;
    type Future = BoxFuture<Result<Self::Response, F::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), F::Error>> {
        self.fallback.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let request = match self.answer_own(request) {
            Routed::Ours(answer) => return answer,
            Routed::Fallback(request) => request,
        };
        // The ready instance serves this request; a fresh clone waits for the next poll_ready.
        let fresh = self.fallback.clone();
        let mut ready = std::mem::replace(&mut self.fallback, fresh);
        Box::pin(async move { ready.call(request).await.map(|r| r.map(Either::Right)) })
    }
}

impl<F, B, FB> hyper::service::Service<Request<B>> for HttpBind<F>
where
    F: tower_service::Service<Request<B>, Response = Response<FB>> + Clone + Send + 'static,
    F::Future: Send + 'static,
    F::Error: Send + 'static,
    FB: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BindBody<FB>>;
    type Error = F::Error;
    type Future = BoxFuture<Result<Self::Response, F::Error>>;

    fn call(&self, request: Request<B>) -> Self::Future {
        let request = match self.answer_own(request) {
            Routed::Ours(answer) => return answer,
            Routed::Fallback(request) => request,
        };
        let mut fallback = self.fallback.clone();
        Box::pin(async move {
            poll_fn(|cx| fallback.poll_ready(cx)).await?;
            fallback.call(request).await.map(|r| r.map(Either::Right))
        })
    }
}

/// A fallback that answers every request with `404 Not Found`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotFound;

impl<B> tower_service::Service<Request<B>> for NotFound {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        let mut response = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        std::future::ready(Ok(response))
    }
}

/// A fallback made from an async function of the request (a tower `service_fn`).
pub fn service_fn<F>(f: F) -> ServiceFn<F> {
    ServiceFn { f }
}

/// The service made by [`service_fn`].
#[derive(Clone, Copy, Debug)]
pub struct ServiceFn<F> {
    f: F,
}

impl<F, Fut, B, R, E> tower_service::Service<Request<B>> for ServiceFn<F>
where
    F: FnMut(Request<B>) -> Fut,
    Fut: Future<Output = Result<Response<R>, E>>,
{
    type Response = Response<R>;
    type Error = E;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Fut {
        (self.f)(request)
    }
}

/// Marks a request that came over TLS: WebSocket peers from it report
/// [`PeerInfo::tls`](crate::PeerInfo::tls). Listeners of truflux insert it; an application
/// serving [`HttpBind`] or [`Endpoint`] behind its own TLS may insert it too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverTls;

/// Serves one accepted connection as HTTP/1.1 with upgrades, giving truflux the connection's
/// addresses (and whether it is TLS): the driver of the standalone WebSocket listeners and of
/// [`HttpBind::serve`].
pub(crate) async fn serve_connection<I, F, FB>(
    io: I,
    addrs: ConnectionAddrs,
    tls: bool,
    bind: HttpBind<F>,
    header_timeout: std::time::Duration,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    F: tower_service::Service<Request<hyper::body::Incoming>, Response = Response<FB>>
        + Clone
        + Send
        + 'static,
    F::Future: Send + 'static,
    F::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    FB: hyper::body::Body<Data = Bytes> + Send + 'static,
    FB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(addrs);
        if tls {
            request.extensions_mut().insert(OverTls);
        }
        hyper::service::Service::call(&bind, request)
    });
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades()
        .await
}

impl<F, FB> HttpBind<F>
where
    F: tower_service::Service<Request<hyper::body::Incoming>, Response = Response<FB>>
        + Clone
        + Send
        + Sync
        + 'static,
    F::Future: Send + 'static,
    F::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    FB: hyper::body::Body<Data = Bytes> + Send + 'static,
    FB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Serves this binding on `listener` (HTTP/1.1 with upgrades, peers' real addresses,
    /// request headers within 30 s), for applications without an HTTP server of their own.
    /// Runs until the future is dropped; a failed accept (out of descriptors) is logged and
    /// retried after 50 ms.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        self.serve_with(listener, None).await
    }

    /// [`serve`](Self::serve) over TLS (feature `tls`): `https://` for the other routes and
    /// `wss://` for truflux. ALPN is `http/1.1` unless `config` sets its own; a TLS handshake
    /// gets 30 s, and one that fails is logged at debug and dropped.
    #[cfg(feature = "tls-base")]
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        config: Arc<crate::tls::rustls::ServerConfig>,
    ) {
        let config = crate::tls::with_alpn(&config, crate::tls::ALPN_WS);
        self.serve_with(listener, Some(Tls::from(config))).await
    }

    async fn serve_with(self, listener: tokio::net::TcpListener, tls: Option<Tls>) {
        const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
        self.log_listening(&listener, tls.is_some());
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
            let addrs = ConnectionAddrs {
                local: stream.local_addr().unwrap_or(unknown),
                remote: stream.peer_addr().unwrap_or(unknown),
            };
            let (bind, tls) = (self.clone(), tls.clone());
            tokio::spawn(async move {
                let served = match tls {
                    None => serve_connection(stream, addrs, false, bind, TIMEOUT).await,
                    Some(tls) => match accept_tls(&tls, stream, TIMEOUT).await {
                        Some(stream) => serve_connection(stream, addrs, true, bind, TIMEOUT).await,
                        None => return,
                    },
                };
                if let Err(error) = served {
                    tracing::debug!(%error, "http connection");
                }
            });
        }
    }
}

impl<F> HttpBind<F> {
    /// The info line a served binding starts with: where, and what it routes to truflux.
    fn log_listening(&self, listener: &tokio::net::TcpListener, tls: bool) {
        let Ok(addr) = listener.local_addr() else { return };
        let scheme = if tls { "https" } else { "http" };
        let mut mounts: Vec<&str> = self.mounts.keys().map(String::as_str).collect();
        mounts.sort_unstable();
        #[cfg(feature = "prometheus")]
        let metrics = self.metrics.as_ref().map(|(path, _)| path.as_str());
        #[cfg(not(feature = "prometheus"))]
        let metrics: Option<&str> = None;
        tracing::info!(url = %format!("{scheme}://{addr}"), ?mounts, ?metrics, "listening for HTTP");
    }
}

use crate::transport::TlsAcceptor as Tls;

#[cfg(feature = "tls-base")]
async fn accept_tls(
    tls: &Tls,
    stream: tokio::net::TcpStream,
    timeout: std::time::Duration,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(timeout, tls.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

#[cfg(not(feature = "tls-base"))]
async fn accept_tls(
    tls: &Tls,
    _: tokio::net::TcpStream,
    _: std::time::Duration,
) -> Option<tokio::net::TcpStream> {
    match *tls {}
}

#[cfg(feature = "axum")]
/// axum integration: routes for truflux servers.
pub mod axum {
    use super::Endpoint;
    use crate::Server;

    /// A router that serves `server` at `path`, to merge into an application's router:
    /// `app.merge(truflux::http::axum::route("/truflux", &server))`. Serve the application with
    /// `into_make_service_with_connect_info::<SocketAddr>()` for peers' remote addresses.
    pub fn route<S: Clone + Send + Sync + 'static>(path: &str, server: &Server) -> ::axum::Router<S> {
        ::axum::Router::new().route_service(path, Endpoint::new(server))
    }
}
