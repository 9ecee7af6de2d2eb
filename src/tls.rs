//! TLS with rustls (feature `tls`, or `tls-aws-lc` for the aws-lc-rs provider): configs from
//! PEM files, the ALPN names, and what a TLS failure means.
//!
//! In-band security (PROTOCOL.md §9) is for deployments without TLS; with TLS, both can run
//! together. This module owns building rustls configs and classifying TLS errors; the
//! listeners are the server's and the dialing is the client's.
//!
//! ALPN: a TLS-over-TCP listener offers [`ALPN_TCP`] (`truflux`); a `wss` listener offers
//! `http/1.1`. A client that sets no ALPN gets the one of its transport.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls::rustls;

use crate::error::{Code, ConfigError, Error};

/// The ALPN protocol of truflux over TLS over TCP.
pub const ALPN_TCP: &[u8] = b"truflux";
/// The ALPN protocol of WebSocket over TLS.
pub const ALPN_WS: &[u8] = b"http/1.1";

/// The crypto provider the enabled feature chose.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "tls-aws-lc")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(not(feature = "tls-aws-lc"))]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

/// A server config from a PEM certificate chain (leaf first) and a PEM private key (PKCS#8,
/// PKCS#1 or SEC1), with no client authentication. ALPN is set per listener.
pub fn server_config_from_pem(
    cert_chain: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let pem = |what: &'static str| move |error: rustls::pki_types::pem::Error| bad(what, error.to_string());
    let chain = CertificateDer::pem_file_iter(cert_chain.as_ref())
        .map_err(pem("certificate file"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem("certificate file"))?;
    if chain.is_empty() {
        return Err(bad("certificate file", "no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key.as_ref()).map_err(pem("key file"))?;
    server_config(chain, key)
}

/// A server config from DER certificates and key, with no client authentication.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| bad("TLS versions", error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| bad("certificate and key", error.to_string()))?;
    Ok(Arc::new(config))
}

/// A client config that trusts `roots` (for a private CA, or a test's).
pub fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, Error> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| bad("TLS versions", error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client config that trusts Mozilla's root certificates (feature `tls-webpki-roots`).
#[cfg(feature = "tls-webpki-roots")]
pub fn webpki_roots_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    client_config(roots)
}

/// `config` offering `alpn`, unless the application chose its own protocols.
pub(crate) fn with_alpn<T: Clone + Alpn>(config: &Arc<T>, alpn: &[u8]) -> Arc<T> {
    if !config.protocols().is_empty() {
        return config.clone();
    }
    let mut owned = T::clone(config);
    owned.set_protocols(vec![alpn.to_vec()]);
    Arc::new(owned)
}

/// The ALPN list of a rustls config.
pub(crate) trait Alpn {
    fn protocols(&self) -> &[Vec<u8>];
    fn set_protocols(&mut self, protocols: Vec<Vec<u8>>);
}

impl Alpn for rustls::ServerConfig {
    fn protocols(&self) -> &[Vec<u8>] {
        &self.alpn_protocols
    }
    fn set_protocols(&mut self, protocols: Vec<Vec<u8>>) {
        self.alpn_protocols = protocols;
    }
}

impl Alpn for rustls::ClientConfig {
    fn protocols(&self) -> &[Vec<u8>] {
        &self.alpn_protocols
    }
    fn set_protocols(&mut self, protocols: Vec<Vec<u8>>) {
        self.alpn_protocols = protocols;
    }
}

/// How a client dials TLS: a connector offering its transport's ALPN, and the name the
/// server's certificate must be valid for.
#[derive(Clone)]
pub(crate) struct Dial {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

impl Dial {
    /// With `config`, or without one the default ([`webpki_roots_config`] with feature
    /// `tls-webpki-roots`; otherwise there is none and this is a config error).
    pub(crate) fn new(
        config: Option<&Arc<rustls::ClientConfig>>,
        alpn: &[u8],
        server_name: &str,
    ) -> Result<Dial, Error> {
        let config = match config {
            Some(config) => config.clone(),
            None => default_client_config()?,
        };
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).map_err(|_| {
            bad(
                "server name",
                format!("{server_name:?} is not a DNS name or an IP address"),
            )
        })?;
        let connector = tokio_rustls::TlsConnector::from(with_alpn(&config, alpn));
        Ok(Dial { connector, name })
    }

    /// The TLS handshake on a connected stream; certificate problems are typed
    /// ([`TlsError`]).
    pub(crate) async fn connect<S>(&self, stream: S) -> Result<tokio_rustls::TlsStream<S>, Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let stream = self.connector.connect(self.name.clone(), stream).await;
        stream
            .map(tokio_rustls::TlsStream::Client)
            .map_err(TlsError::classify)
    }
}

#[cfg(feature = "tls-webpki-roots")]
fn default_client_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    webpki_roots_config()
}

#[cfg(not(feature = "tls-webpki-roots"))]
fn default_client_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    Err(bad(
        "client config",
        "none given: call ClientBuilder::tls (or enable feature tls-webpki-roots)".into(),
    ))
}

fn bad(what: &'static str, problem: String) -> Error {
    ConfigError::Tls { what, problem }.into()
}

/// Why a TLS handshake failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The server's certificate is not signed by a trusted root.
    #[error("the server's certificate is not trusted (unknown issuer)")]
    UntrustedCertificate,
    /// The server's certificate is not valid for the name the client asked for.
    #[error("the server's certificate is not valid for this name")]
    WrongName,
    /// The server's certificate has expired (or is not valid yet).
    #[error("the server's certificate has expired or is not yet valid")]
    Expired,
    /// Another certificate problem.
    #[error("the server's certificate was refused: {0}")]
    BadCertificate(String),
    /// The handshake failed for another reason (no common version or cipher, an alert).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

impl TlsError {
    /// The std code: `UNTRUSTED_SERVER` for certificate problems (the client does not
    /// reconnect after them), `HANDSHAKE_FAILED` otherwise.
    pub fn code(&self) -> Code {
        match self {
            TlsError::Handshake(_) => Code::HANDSHAKE_FAILED,
            _ => Code::UNTRUSTED_SERVER,
        }
    }

    /// What a failed TLS connect or accept means: a TLS error, or the I/O error it was.
    pub(crate) fn classify(error: std::io::Error) -> Error {
        let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
            return Error::Io(error);
        };
        use rustls::CertificateError as C;
        let tls = match tls {
            rustls::Error::InvalidCertificate(C::UnknownIssuer) => TlsError::UntrustedCertificate,
            rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                TlsError::WrongName
            }
            rustls::Error::InvalidCertificate(
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
            ) => TlsError::Expired,
            rustls::Error::InvalidCertificate(other) => TlsError::BadCertificate(format!("{other:?}")),
            other => TlsError::Handshake(other.to_string()),
        };
        Error::Tls(tls)
    }
}
