//! Line-based chat over TCP: a server, and a terminal client with `/nick`.
//!
//! ```sh
//! cargo run --example messenger -- server 127.0.0.1:7878
//! cargo run --example messenger -- client 127.0.0.1:7878
//! cargo run --example messenger -- client ws://127.0.0.1:7879/chat   # against the chat example
//! ```

#[path = "support/chat.rs"]
mod chat;

#[tokio::main]
async fn main() -> Result<(), truflux::Error> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7878".into());
    match mode.as_str() {
        "server" => {
            let server = chat::serve(&addr, None).await?;
            println!("messenger server on {}", server.local_addrs()[0]);
            tokio::signal::ctrl_c().await?;
            server.close(truflux::Code::GOING_AWAY, "bye").await;
            Ok(())
        }
        "client" => chat::terminal(&addr).await,
        _ => {
            eprintln!("usage: messenger (server|client) [ADDR]");
            std::process::exit(2);
        }
    }
}
