//! The chat protocol shared by the `chat` and `messenger` examples: nicknames, lines, notices.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use truflux::{Client, Code, Peer, Server};
use truflux_msg::{Msg, Registry};

/// Client → server: a line of chat.
pub const SAY: Msg<String> = Msg::named("say");
/// Client → server: choose a nickname.
pub const NICK: Msg<String> = Msg::named("nick");
/// Server → clients: a line from someone (`from` is "*" for server notices).
pub const LINE: Msg<Line> = Msg::named("line");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub from: String,
    pub text: String,
}

#[derive(Clone)]
struct Nick(String);

fn nick(peer: &Peer) -> String {
    peer.session()
        .get::<Nick>()
        .map(|n| n.0)
        .unwrap_or_else(|| format!("guest{}", peer.id().0))
}

fn notice(server: &Server, text: String, exclude: &[truflux::PeerId]) {
    let _ = LINE.broadcast(
        server,
        &Line {
            from: "*".into(),
            text,
        },
        exclude,
    );
}

/// Starts a chat server on `addr` (TCP) and, if given, `ws` (WebSocket address and path):
/// every line goes to everyone else, whatever their transport; `/nick` renames.
pub async fn serve(addr: &str, ws: Option<(&str, &str)>) -> Result<Server, truflux::Error> {
    let registry = Registry::builder()
        .on(SAY, |peer, text: String| async move {
            if let Some(server) = peer.server() {
                LINE.broadcast(
                    &server,
                    &Line {
                        from: nick(&peer),
                        text,
                    },
                    &[peer.id()],
                )?;
            }
            Ok::<_, truflux::Error>(())
        })
        .on(NICK, |peer, new: String| async move {
            let new: String = new.trim().chars().take(24).collect();
            if new.is_empty() {
                return;
            }
            let old = nick(&peer);
            peer.session().insert(Nick(new.clone()));
            if let Some(server) = peer.server() {
                notice(&server, format!("{old} is now {new}"), &[]);
            }
        })
        .message(LINE)
        .build()
        .expect("chat messages have distinct names and ids");
    let mut builder = Server::builder().tcp(addr);
    if let Some((ws_addr, path)) = ws {
        builder = builder.ws(ws_addr, path);
    }
    builder
        .protocol(registry)
        .on_connect(|peer| async move {
            let welcome = format!(
                "welcome, {}! /nick NAME to rename; {} online",
                nick(&peer),
                peer.server().map_or(0, |s| s.num_connections())
            );
            let _ = LINE
                .send(
                    &peer,
                    &Line {
                        from: "*".into(),
                        text: welcome,
                    },
                )
                .await;
            if let Some(server) = peer.server() {
                notice(&server, format!("{} joined", nick(&peer)), &[peer.id()]);
            }
        })
        .on_disconnect(|peer, info| {
            if let Some(server) = peer.server() {
                notice(
                    &server,
                    format!("{} left ({})", nick(peer), info.code.name()),
                    &[],
                );
            }
        })
        .start()
        .await
}

/// A terminal client: stdin lines are sent, `/nick NAME` renames, `/quit` leaves. `addr` is a
/// TCP address (`127.0.0.1:7878`) or a WebSocket URL (`ws://127.0.0.1:7879/chat`). It
/// reconnects and resumes its session when the connection is lost.
pub async fn terminal(addr: &str) -> Result<(), truflux::Error> {
    use tokio::io::AsyncBufReadExt;

    let registry = Registry::builder()
        .on(LINE, |_, line: Line| async move {
            println!("<{}> {}", line.from, line.text)
        })
        .message(SAY)
        .message(NICK)
        .build()
        .expect("chat messages have distinct names and ids");
    // A lost connection is resumed: lines typed meanwhile are sent, none is lost or doubled.
    let builder = Client::builder()
        .protocol(registry)
        .config(truflux::ClientConfig::default().reconnect(Some(truflux::Reconnect::default())))
        .on_disconnect(|info| eprintln!("connection lost ({}); reconnecting", info.code))
        .on_reconnect(|_, attempts| eprintln!("reconnected after {attempts} attempt(s)"))
        .on_close(|info| eprintln!("connection {info}"));
    let client = if addr.starts_with("ws://") {
        builder.connect_ws(addr).await?
    } else {
        builder.connect(addr).await?
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            info = client.peer().closed() => {
                eprintln!("bye ({})", info.code);
                return Ok(());
            }
            line = lines.next_line() => match line? {
                None => break,
                Some(line) if line == "/quit" => break,
                Some(line) if line.starts_with("/nick ") => NICK.send(&client, &line[6..].to_string()).await?,
                Some(line) if !line.trim().is_empty() => SAY.send(&client, &line).await?,
                Some(_) => {}
            },
        }
    }
    client.peer().close(Code::NORMAL, "quit").await;
    Ok(())
}
