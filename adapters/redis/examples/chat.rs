//! The chat example (`examples/chat.rs` of the workspace root) with `--redis URL`: several chat
//! servers sharing one Redis are one chat.
//!
//! ```sh
//! cargo run --release -p truflux-redis --example chat -- --redis redis://127.0.0.1:6379
//! cargo run --release -p truflux-redis --example chat -- --redis redis://127.0.0.1:6379 \
//!     --tcp 127.0.0.1:7880 --http 127.0.0.1:7881 --key /tmp/chat-b.key
//! ```

#[path = "../../../examples/chat.rs"]
mod chat_example;

use std::future::Future;
use std::pin::Pin;

use chat_example::chat::ChatServer;
use chat_example::Failure;

fn join(url: String, chat: ChatServer) -> Pin<Box<dyn Future<Output = Result<ChatServer, Failure>>>> {
    Box::pin(async move {
        let adapter = truflux_redis::RedisAdapter::connect(&url).await?;
        Ok(chat.builder(|builder| builder.adapter(adapter)))
    })
}

#[tokio::main]
async fn main() {
    chat_example::main_with(Some(join)).await
}
