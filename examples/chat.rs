//! The main job: a chat server with embedded defaults and no external service.
//!
//! ```sh
//! cargo run --example chat        # TCP on 127.0.0.1:7878, WebSocket on ws://127.0.0.1:7879/chat
//! TRUFLUX_ADDR=0.0.0.0:9000 TRUFLUX_WS_ADDR=0.0.0.0:9001 cargo run --example chat
//! ```
//!
//! Then, in other terminals: `cargo run --example messenger -- client 127.0.0.1:7878` (TCP) or
//! `cargo run --example messenger -- client ws://127.0.0.1:7879/chat` (WebSocket): both see
//! each other's lines.

#[path = "support/chat.rs"]
mod chat;

#[tokio::main]
async fn main() -> Result<(), truflux::Error> {
    let addr = std::env::var("TRUFLUX_ADDR").unwrap_or_else(|_| "127.0.0.1:7878".into());
    let ws_addr = std::env::var("TRUFLUX_WS_ADDR").unwrap_or_else(|_| "127.0.0.1:7879".into());
    let server = chat::serve(&addr, Some((&ws_addr, "/chat"))).await?;
    let bound = server.local_addrs()[0];
    let ws_url = &server.ws_urls()[0];
    println!("truflux chat server listening on {bound} (TCP) and {ws_url} (WebSocket)");
    println!("connect a terminal client:  cargo run --example messenger -- client {bound}");
    println!("            or over WebSocket: cargo run --example messenger -- client {ws_url}");
    println!("stop with Ctrl-C");
    tokio::signal::ctrl_c().await?;
    println!("shutting down: {} peer(s) connected", server.num_connections());
    server
        .close(truflux::Code::GOING_AWAY, "server shutting down")
        .await;
    Ok(())
}
