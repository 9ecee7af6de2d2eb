//! A plain WebSocket echo endpoint (text and binary, echoed as received) on truflux's own
//! upgrade path and frame codec (`truflux::ws::codec`), so that the WebSocket layer can be
//! checked by the Autobahn conformance suite's fuzzing client like any WebSocket server.
//!
//! ```sh
//! cargo run --release --example ws_echo -- --addr 127.0.0.1:9001
//! ```
//!
//! Every path upgrades; a non-upgrade request gets `426 Upgrade Required`.

use std::convert::Infallible;

use bytes::BytesMut;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use truflux::ws::codec::{self, Decoder, Role};

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
    let Ok(mut stream) = truflux::ws::upgraded(on_upgrade).await else {
        return;
    };
    let mut decoder = Decoder::new(Role::Server, 16 << 20);
    let mut buf = BytesMut::new();
    loop {
        let message = match decoder.decode(&mut buf) {
            Ok(Some(message)) => message,
            Ok(None) => match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
            Err(error) => {
                let code = if matches!(error, truflux::frame::FrameError::PayloadTooLarge { .. }) {
                    1009
                } else {
                    1002
                };
                let _ = send(&mut stream, codec::opcode::CLOSE, &codec::close_payload(code, "")).await;
                return;
            }
        };
        let sent = match message {
            codec::Incoming::Text(text) if std::str::from_utf8(&text).is_err() => {
                let _ = send(&mut stream, codec::opcode::CLOSE, &codec::close_payload(1007, "")).await;
                return;
            }
            codec::Incoming::Text(text) => send(&mut stream, codec::opcode::TEXT, &text).await,
            codec::Incoming::Binary(data) => send(&mut stream, codec::opcode::BINARY, &data).await,
            codec::Incoming::Ping(data) => send(&mut stream, codec::opcode::PONG, &data).await,
            codec::Incoming::Pong(_) => Ok(()),
            codec::Incoming::Close(close) => {
                let payload = close.map_or_else(BytesMut::new, |(code, _)| codec::close_payload(code, ""));
                let _ = send(&mut stream, codec::opcode::CLOSE, &payload).await;
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Writes one unfragmented, unmasked frame.
async fn send<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    opcode: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    codec::put_header(&mut out, true, opcode, payload.len(), None);
    out.extend_from_slice(payload);
    stream.write_all(&out).await
}
