//! A client's WebSocket transport: parse the URL, connect, upgrade, with the token where the
//! opening wants it.
//!
//! This module owns the client side of dialing a WebSocket server; the upgrade itself is
//! [`super::client_upgrade`]. It must not run the truflux opening.

use std::sync::Arc;

use tokio::net::TcpStream;

use super::{client_upgrade, Role, WsTransport, SUBPROTOCOL};
use crate::auth::{Token, SUBPROTOCOL_PREFIX};
use crate::client::TokenCarrier;
use crate::error::{ConfigError, Error};
use crate::transport::{PeerInfo, TransportKind};

fn bad_url(url: &str, problem: &'static str) -> Error {
    ConfigError::Url {
        url: url.to_owned(),
        problem,
    }
    .into()
}

/// Where a `ws://` or `wss://` URL points.
pub(crate) struct Target {
    uri: http::Uri,
    /// The host as it goes to the resolver and TLS (an IPv6 address without brackets).
    pub(crate) host: String,
    port: u16,
    /// `wss://`: TLS under the upgrade.
    #[cfg_attr(not(feature = "tls-base"), allow(dead_code))]
    pub(crate) secure: bool,
}

impl Target {
    /// Parses a `ws://host[:port]/path` or `wss://host[:port]/path` URL.
    pub(crate) fn parse(url: &str) -> Result<Target, Error> {
        let uri: http::Uri = url.parse().map_err(|_| bad_url(url, "it does not parse"))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") if cfg!(feature = "tls-base") => true,
            Some("wss") => return Err(bad_url(url, "wss:// needs the `tls` feature")),
            _ => return Err(bad_url(url, "only ws:// and wss:// are supported")),
        };
        let host = uri.host().ok_or_else(|| bad_url(url, "it has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        Ok(Target {
            uri,
            host,
            port,
            secure,
        })
    }
}

#[cfg(feature = "tls-base")]
pub(crate) type Tls = crate::tls::Dial;
/// Without TLS there is no dial config (a `wss://` URL is refused when parsed).
#[cfg(not(feature = "tls-base"))]
pub(crate) type Tls = std::convert::Infallible;

/// Everything one dial needs.
pub(crate) struct Upgrade {
    pub(crate) target: Target,
    pub(crate) token: Option<Token>,
    pub(crate) carrier: TokenCarrier,
    pub(crate) nodelay: bool,
    pub(crate) max_payload: u32,
    pub(crate) read_buffer: usize,
    /// For `wss://`: how to dial TLS.
    pub(crate) tls: Option<Tls>,
}

impl Upgrade {
    /// The upgrade request's headers: the subprotocol, and the token where a plain opening
    /// carries it (a keyed opening carries it protected, never here).
    fn headers(&self, keyed: bool) -> Result<http::HeaderMap, Error> {
        let mut headers = http::HeaderMap::new();
        let mut protocols = SUBPROTOCOL.to_owned();
        match (&self.token, self.carrier) {
            (Some(token), TokenCarrier::Header) if !keyed => {
                let value = http::HeaderValue::from_str(&format!("Bearer {}", token.as_str()))
                    .map_err(|_| ConfigError::TokenNotHeaderSafe)?;
                headers.insert(http::header::AUTHORIZATION, value);
            }
            (Some(token), TokenCarrier::Subprotocol) if !keyed => {
                protocols = format!("{protocols}, {SUBPROTOCOL_PREFIX}{}", token.as_str());
            }
            _ => {}
        }
        let protocols =
            http::HeaderValue::from_str(&protocols).map_err(|_| ConfigError::TokenNotHeaderSafe)?;
        headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, protocols);
        Ok(headers)
    }

    /// Connects and upgrades.
    pub(crate) async fn dial(self: Arc<Self>, keyed: bool) -> Result<WsTransport, Error> {
        let headers = self.headers(keyed)?;
        let stream = TcpStream::connect((self.target.host.as_str(), self.target.port)).await?;
        stream.set_nodelay(self.nodelay)?;
        let mut info = PeerInfo::new(
            stream.local_addr()?,
            stream.peer_addr()?,
            TransportKind::WebSocket,
        );
        info.tls = self.tls.is_some();
        let stream = match &self.tls {
            None => client_upgrade(stream, &self.target.uri, &headers).await?,
            #[cfg(feature = "tls-base")]
            Some(tls) => {
                let stream = tls.connect(stream).await?;
                client_upgrade(stream, &self.target.uri, &headers).await?
            }
            #[cfg(not(feature = "tls-base"))]
            Some(never) => match *never {},
        };
        Ok(WsTransport::new(
            stream,
            info,
            Role::Client,
            self.max_payload,
            self.read_buffer,
        ))
    }
}
