//! The listeners: accepting TCP, TLS over TCP, WebSocket and WebSocket over TLS, and
//! handing each connection to admission (or, for WebSocket, to the HTTP layer first).
//!
//! This module owns binding, the accept loops and the TLS handshake of accepted connections;
//! it must not decide anything about a connection after that.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
#[cfg(feature = "ws")]
use tracing::debug;
use tracing::{info, warn};

use super::{Hub, Server};
use crate::error::Error;
#[cfg(feature = "ws")]
use crate::http::{ConnectionAddrs, HttpBind, NotFound};
use crate::transport::TlsAcceptor as Tls;
use crate::transport::{PeerInfo, TcpTransport, TransportKind};

/// What a [`ServerBuilder`](super::ServerBuilder) listens on.
pub(crate) enum Listen {
    Tcp(String),
    #[cfg(feature = "ws")]
    Ws(String, String),
    #[cfg(feature = "tls-base")]
    Tls(String, Arc<crate::tls::rustls::ServerConfig>),
    #[cfg(all(feature = "tls-base", feature = "ws"))]
    Wss(String, String, Arc<crate::tls::rustls::ServerConfig>),
}

/// A listener bound, not yet accepting.
enum Bound {
    Tcp(TcpListener, Option<Tls>),
    #[cfg(feature = "ws")]
    Ws(TcpListener, String, HttpBind<NotFound>, Option<Tls>),
}

/// Binds every listener (a failure leaves nothing running), then starts accepting on each.
pub(crate) async fn start(hub: &Arc<Hub>, internal: &Server, listen: &[Listen]) -> Result<(), Error> {
    let mut bound = Vec::new();
    for spec in listen {
        bound.push(bind(spec, internal).await?);
    }
    for listener in bound {
        let task = match listener {
            Bound::Tcp(listener, tls) => {
                let addr = listener.local_addr()?;
                info!(%addr, tls = tls.is_some(), "listening for TCP peers");
                hub.local_addrs
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(addr);
                tokio::spawn(hub.clone().serve_tcp(listener, tls))
            }
            #[cfg(feature = "ws")]
            Bound::Ws(listener, path, binding, tls) => {
                let scheme = if tls.is_some() { "wss" } else { "ws" };
                let url = format!("{scheme}://{}{path}", listener.local_addr()?);
                info!(%url, "listening for WebSocket peers");
                hub.ws_urls.write().unwrap_or_else(|p| p.into_inner()).push(url);
                tokio::spawn(hub.clone().serve_ws(listener, binding, tls))
            }
        };
        hub.listeners.add(task);
    }
    Ok(())
}

async fn bind(spec: &Listen, internal: &Server) -> Result<Bound, Error> {
    #[cfg(feature = "ws")]
    let ws = |path: &String| HttpBind::new(NotFound).mount(path.clone(), internal);
    #[cfg(not(feature = "ws"))]
    let _ = internal;
    Ok(match spec {
        Listen::Tcp(addr) => Bound::Tcp(TcpListener::bind(addr).await?, None),
        #[cfg(feature = "ws")]
        Listen::Ws(addr, path) => Bound::Ws(TcpListener::bind(addr).await?, path.clone(), ws(path)?, None),
        #[cfg(feature = "tls-base")]
        Listen::Tls(addr, config) => {
            let config = crate::tls::with_alpn(config, crate::tls::ALPN_TCP);
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            Bound::Tcp(TcpListener::bind(addr).await?, Some(acceptor))
        }
        #[cfg(all(feature = "tls-base", feature = "ws"))]
        Listen::Wss(addr, path, config) => {
            let config = crate::tls::with_alpn(config, crate::tls::ALPN_WS);
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            Bound::Ws(
                TcpListener::bind(addr).await?,
                path.clone(),
                ws(path)?,
                Some(acceptor),
            )
        }
    })
}

/// The stream's local and remote addresses (`0.0.0.0:0` where the OS no longer knows them).
fn addrs_of(stream: &TcpStream) -> (SocketAddr, SocketAddr) {
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    (
        stream.local_addr().unwrap_or(unknown),
        stream.peer_addr().unwrap_or(unknown),
    )
}

impl Hub {
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

    async fn serve_tcp(self: Arc<Self>, listener: TcpListener, tls: Option<Tls>) {
        self.accept_loop(listener, move |hub, stream| {
            let _ = stream.set_nodelay(hub.config.connection.nodelay);
            // Two kinds of task: a task takes the size of its future's largest state for its
            // whole life, and a plain peer's must not be sized for a TLS handshake.
            match tls.clone() {
                None => drop(tokio::spawn(hub.clone().admit_tcp(stream))),
                Some(tls) => drop(tokio::spawn(hub.clone().admit_tls(stream, tls))),
            }
        })
        .await;
    }

    /// The peer's task (not an `async fn`, which would keep the stream in it a second time).
    fn admit_tcp(self: Arc<Self>, stream: TcpStream) -> impl Future<Output = ()> + Send {
        let (local, remote) = addrs_of(&stream);
        let info = PeerInfo::new(local, remote, TransportKind::Tcp);
        let max_payload = self.config.connection.max_payload;
        self.admit(TcpTransport::over(stream, info, max_payload), None)
    }

    async fn admit_tls(self: Arc<Self>, stream: TcpStream, tls: Tls) {
        let (local, remote) = addrs_of(&stream);
        let mut info = PeerInfo::new(local, remote, TransportKind::Tcp);
        info.tls = true;
        let max_payload = self.config.connection.max_payload;
        // Taken out of the result before the connection runs: a result held across that
        // await would keep room for a whole TLS session in the task.
        let stream = match self.tls_accept(&tls, stream).await {
            Ok(stream) => stream,
            Err(error) => return self.report(None, &error),
        };
        self.admit(TcpTransport::over(stream, info, max_payload), None)
            .await
    }

    /// The TLS handshake of an accepted connection, within the handshake timeout.
    #[cfg(feature = "tls-base")]
    async fn tls_accept(
        &self,
        tls: &Tls,
        stream: TcpStream,
    ) -> Result<tokio_rustls::TlsStream<TcpStream>, Error> {
        let accepted = tokio::time::timeout(self.config.handshake_timeout, tls.accept(stream)).await;
        match accepted {
            Ok(Ok(stream)) => Ok(tokio_rustls::TlsStream::Server(stream)),
            Ok(Err(error)) => Err(crate::tls::TlsError::classify(error)),
            Err(_) => Err(Error::Timeout(crate::error::Timeout::Hello)),
        }
    }

    #[cfg(not(feature = "tls-base"))]
    async fn tls_accept(&self, tls: &Tls, _: TcpStream) -> Result<TcpStream, Error> {
        match *tls {}
    }

    #[cfg(feature = "ws")]
    async fn serve_ws(self: Arc<Self>, listener: TcpListener, bind: HttpBind<NotFound>, tls: Option<Tls>) {
        self.accept_loop(listener, move |hub, stream| {
            let _ = stream.set_nodelay(hub.config.connection.nodelay);
            let (hub, bind) = (hub.clone(), bind.clone());
            // Two kinds of task, as for TCP: a plain connection's is not sized for TLS.
            match tls.clone() {
                None => drop(tokio::spawn(hub.serve_http(stream, bind))),
                Some(tls) => drop(tokio::spawn(hub.serve_https(stream, bind, tls))),
            }
        })
        .await;
    }

    /// Serves one HTTP connection until it ends or the server shuts down: an upgraded
    /// connection lives on as a peer after this future ends; plain HTTP connections end with
    /// the server.
    #[cfg(feature = "ws")]
    async fn serve_http(self: Arc<Self>, stream: TcpStream, bind: HttpBind<NotFound>) {
        let (local, remote) = addrs_of(&stream);
        let addrs = ConnectionAddrs { local, remote };
        let timeout = self.config.handshake_timeout;
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            served = crate::http::serve_connection(stream, addrs, false, bind, timeout) => http_ended(served),
        }
    }

    /// [`serve_http`](Self::serve_http) after a TLS handshake.
    #[cfg(feature = "ws")]
    async fn serve_https(self: Arc<Self>, stream: TcpStream, bind: HttpBind<NotFound>, tls: Tls) {
        let (local, remote) = addrs_of(&stream);
        let addrs = ConnectionAddrs { local, remote };
        let timeout = self.config.handshake_timeout;
        let accepted = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            accepted = self.tls_accept(&tls, stream) => accepted,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => return self.report(None, &error),
        };
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            served = crate::http::serve_connection(stream, addrs, true, bind, timeout) => http_ended(served),
        }
    }
}

#[cfg(feature = "ws")]
fn http_ended(served: Result<(), hyper::Error>) {
    if let Err(error) = served {
        debug!(%error, "http connection");
    }
}
