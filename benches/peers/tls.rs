//! TLS for the benchmark (feature `tls`): a test CA made by the orchestrator, its files shared
//! with the server processes through `TRUFLUX_BENCH_TLS_DIR`, and the TLS floor (a
//! tokio-rustls echo with a 4-octet length prefix, the raw floor's shape).
//!
//! The floor and truflux use the same configs (`truflux::tls::server_config_from_pem` and
//! `truflux::tls::client_config`), so the same rustls provider and cipher suites; the client
//! verifies the server's certificate (name `localhost`) against the CA as any client would.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Buf;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use truflux::tls::rustls;
use truflux::tls::rustls::pki_types::pem::PemObject;
use truflux::tls::rustls::pki_types::{CertificateDer, ServerName};

#[allow(dead_code)]
#[path = "../../examples/support/certs.rs"]
mod certs;

/// The environment variable naming the folder of `ca.pem`, `cert.pem` and `key.pem`.
const DIR_VAR: &str = "TRUFLUX_BENCH_TLS_DIR";

/// The server name the certificate is for and the client checks.
pub const SERVER_NAME: &str = "localhost";

/// Makes a CA and a server certificate for `localhost` and 127.0.0.1, writes them to a fresh
/// folder, and names it in this process's environment (inherited by the processes it starts).
/// Returns the folder, for removal at the end.
pub fn make_certs() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("truflux-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("certificate folder");
    let ca = certs::TestCa::new("truflux bench CA").expect("CA");
    let leaf = ca.leaf(&[SERVER_NAME, "127.0.0.1"]).expect("server certificate");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca.pem");
    std::fs::write(dir.join("cert.pem"), &leaf.cert_pem).expect("cert.pem");
    std::fs::write(dir.join("key.pem"), &leaf.key_pem).expect("key.pem");
    // Set before any process or thread is started that could read the environment.
    std::env::set_var(DIR_VAR, &dir);
    dir
}

fn dir() -> PathBuf {
    PathBuf::from(std::env::var_os(DIR_VAR).expect("TRUFLUX_BENCH_TLS_DIR (set by the orchestrator)"))
}

/// The server's config, from the orchestrator's files.
pub fn server_config() -> Arc<rustls::ServerConfig> {
    let dir = dir();
    truflux::tls::server_config_from_pem(dir.join("cert.pem"), dir.join("key.pem")).expect("server config")
}

/// A client config trusting the orchestrator's CA alone.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    let ca = CertificateDer::from_pem_file(dir().join("ca.pem")).expect("ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("CA certificate");
    truflux::tls::client_config(roots).expect("client config")
}

/// The TLS floor's server: one task per connection, one reused buffer, the prefix and payload
/// handed to rustls in one vectored write (one record when it fits).
pub async fn spawn_floor_server() -> u16 {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(stream).await else {
                    return;
                };
                let mut buf = Vec::new();
                while crate::read_prefixed(&mut stream, &mut buf).await {
                    let prefix = (buf.len() as u32).to_be_bytes();
                    let mut out = Buf::chain(&prefix[..], &buf[..]);
                    if stream.write_all_buf(&mut out).await.is_err() || stream.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A TLS floor client connection.
pub type FloorStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects to the TLS floor at `addr`, verifying its certificate.
pub async fn connect_floor(addr: &str) -> FloorStream {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let name = ServerName::try_from(SERVER_NAME).expect("server name");
    tokio_rustls::TlsConnector::from(client_config())
        .connect(name, stream)
        .await
        .expect("TLS handshake")
}
