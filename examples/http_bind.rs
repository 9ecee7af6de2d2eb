//! Truflux inside a plain hyper server: `/` is the application's own route, `/truflux` is a
//! truflux echo server for WebSocket peers.
//!
//! ```sh
//! cargo run --example http_bind            # serves until Ctrl-C
//! cargo run --example http_bind -- --demo  # also connects a client, echoes once, exits
//! ```

#[path = "support/logs.rs"]
mod logs;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use truflux::http::{service_fn, ConnectionAddrs, HttpBind};
use truflux::{protocol, Client, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logs::init("info");
    let echo = Server::builder()
        .protocol(protocol::from_fn(|peer, message| async move {
            let _ = peer.send(message).await;
        }))
        .start()
        .await?;

    // The application's own routes; truflux takes `/truflux` and falls back to these.
    let app = service_fn(|request: http::Request<Incoming>| async move {
        let text = format!("hello from the app at {}\n", request.uri().path());
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(text))))
    });
    let bind = HttpBind::new(app).mount("/truflux", &echo)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    let addr = listener.local_addr()?;
    println!("http://{addr}/ is the app; ws://{addr}/truflux is truflux");
    tokio::spawn(async move {
        while let Ok((stream, remote)) = listener.accept().await {
            let bind = bind.clone();
            let local = addr;
            tokio::spawn(async move {
                // Tell truflux the peer's addresses, then serve with upgrades enabled.
                let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectionAddrs { local, remote });
                    hyper::service::Service::call(&bind, request)
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .with_upgrades()
                    .await;
            });
        }
    });

    if std::env::args().any(|arg| arg == "--demo") {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let client = Client::builder()
            .protocol(protocol::from_fn(move |_peer, message| {
                let _ = tx.send(message);
                std::future::ready(())
            }))
            .connect_ws(&format!("ws://{addr}/truflux"))
            .await?;
        client
            .peer()
            .send_raw(1, Bytes::from_static(b"hello over WebSocket"))
            .await?;
        if let Some(echo) = rx.recv().await {
            println!("echoed: {}", String::from_utf8_lossy(&echo.payload));
        }
        return Ok(());
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
