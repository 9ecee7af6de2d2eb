//! Truflux in an axum application (feature `axum`): `/` is an axum route, `/truflux` a truflux
//! chat relay for WebSocket peers.
//!
//! ```sh
//! cargo run --example axum --features axum
//! ```

#[path = "support/logs.rs"]
mod logs;

use std::net::SocketAddr;

use axum::routing::get;
use truflux::{protocol, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logs::init("info");
    // Relays every message to every other peer.
    let relay = Server::builder()
        .protocol(protocol::from_fn(|peer, message| async move {
            if let Some(server) = peer.server() {
                let _ = server.broadcast(message, &[peer.id()]);
            }
        }))
        .start()
        .await?;

    let app = axum::Router::new()
        .route("/", get(|| async { "hello from axum\n" }))
        .merge(truflux::http::axum::route("/truflux", &relay));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
    println!(
        "http://{0}/ is axum; ws://{0}/truflux is truflux",
        listener.local_addr()?
    );
    // ConnectInfo gives truflux the peers' remote addresses.
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
