//! The basic echo server: every message goes straight back to its sender, unparsed.
//!
//! ```sh
//! cargo run --example echo                                # 127.0.0.1:7000, plus a demo client
//! cargo run --example echo -- --serve --addr 127.0.0.1:0  # server only, on a free port
//! ```
//!
//! With `--serve` it prints `listening on ADDR` once it accepts connections and runs until
//! Ctrl-C (the hostile-peer tests start it this way, under an address-space limit).

#[path = "support/logs.rs"]
mod logs;

use bytes::Bytes;
use truflux::{protocol, Client, Code, Server};

#[tokio::main]
async fn main() -> Result<(), truflux::Error> {
    logs::init("info");
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .iter()
        .position(|arg| arg == "--addr")
        .and_then(|at| args.get(at + 1))
        .map_or("127.0.0.1:7000", String::as_str);
    let server = Server::builder()
        .tcp(addr)
        .protocol(protocol::from_fn(|peer, message| async move {
            // Back to the sender; the payload is shared, not copied.
            let _ = peer.send(message).await;
        }))
        .start()
        .await?;
    println!("listening on {}", server.local_addrs()[0]);
    if args.iter().any(|arg| arg == "--serve") {
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let client = Client::connect(
        server.local_addrs()[0],
        protocol::from_fn(move |_peer, message| {
            let _ = tx.send(message);
            std::future::ready(())
        }),
    )
    .await?;
    for text in ["hello", "truflux", "echo"] {
        client.peer().send_raw(1, Bytes::from(text)).await?;
        if let Some(echo) = rx.recv().await {
            println!("echoed: {}", String::from_utf8_lossy(&echo.payload));
        }
    }
    client.peer().close(Code::NORMAL, "done").await;
    server.close(Code::GOING_AWAY, "demo over").await;
    Ok(())
}
