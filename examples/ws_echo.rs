//! A plain WebSocket echo endpoint (text and binary, echoed as received) served through
//! truflux's own hyper upgrade path and WebSocket configuration, so that the WebSocket layer can
//! be checked by the Autobahn conformance suite's fuzzing client like any WebSocket server.
//!
//! ```sh
//! cargo run --release --example ws_echo -- --addr 127.0.0.1:9001
//! ```
//!
//! Every path upgrades; a non-upgrade request gets `426 Upgrade Required`.

use std::convert::Infallible;

use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use truflux::ws::tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut addr = String::from("127.0.0.1:9001");
    while let Some(arg) = args.next() {
        if arg == "--addr" {
            addr = args.next().unwrap_or(addr);
        }
    }
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("WebSocket echo on ws://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|mut request: http::Request<Incoming>| async move {
                let response = match truflux::ws::accept(&mut request) {
                    Err(refusal) => *refusal,
                    Ok((response, on_upgrade)) => {
                        tokio::spawn(echo(on_upgrade));
                        response
                    }
                };
                Ok::<_, Infallible>(response)
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await;
        });
    }
}

async fn echo(on_upgrade: hyper::upgrade::OnUpgrade) {
    let config = truflux::ws::config(&truflux::ConnectionConfig::default());
    let Ok(mut ws) = truflux::ws::upgraded(on_upgrade, config).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            // Pings are answered and closes completed by the WebSocket layer itself.
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}
