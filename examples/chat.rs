//! The main job: a chat server with embedded defaults and no external service.
//!
//! ```sh
//! cargo run --example chat                      # listens on 127.0.0.1:7878
//! TRUFLUX_ADDR=0.0.0.0:9000 cargo run --example chat
//! ```
//!
//! Then, in other terminals: `cargo run --example messenger -- client 127.0.0.1:7878`.

#[path = "support/chat.rs"]
mod chat;

#[tokio::main]
async fn main() -> Result<(), truflux::Error> {
    let addr = std::env::var("TRUFLUX_ADDR").unwrap_or_else(|_| "127.0.0.1:7878".into());
    let server = chat::serve(&addr).await?;
    let bound = server.local_addrs()[0];
    println!("truflux chat server listening on {bound} (TCP)");
    println!("connect a terminal client:  cargo run --example messenger -- client {bound}");
    println!("stop with Ctrl-C");
    tokio::signal::ctrl_c().await?;
    println!("shutting down: {} peer(s) connected", server.num_connections());
    server
        .close(truflux::Code::GOING_AWAY, "server shutting down")
        .await;
    Ok(())
}
