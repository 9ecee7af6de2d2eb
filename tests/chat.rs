//! The chat of the `chat` and `messenger` examples (examples/support/chat.rs) over real TCP:
//! rooms and presence, refusals of bad names, a shared file relayed to the room, and flood
//! control slowing one person while another's line goes through.

#[path = "../examples/support/chat.rs"]
mod chat;

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::timeout;
use truflux::{protocol, Client, Message, Server};
use truflux_msg::Msg;

const WAIT: Duration = Duration::from_secs(10);

/// A chat client whose incoming messages (and offered files' content) land in channels.
struct Person {
    client: Client,
    inbox: mpsc::UnboundedReceiver<Message>,
    files: mpsc::UnboundedReceiver<(u64, [u8; 32])>,
}

async fn person(server: &Server, nick: &str, room: Option<&str>) -> Person {
    let (tx, inbox) = mpsc::unbounded_channel();
    let (file_tx, files) = mpsc::unbounded_channel();
    let client = Client::builder()
        .protocol(protocol::from_fn(move |_, message| {
            let _ = tx.send(message);
            std::future::ready(())
        }))
        .on_file(move |offer| {
            let file_tx = file_tx.clone();
            tokio::spawn(async move {
                let Ok(receiving) = offer.accept_writer(tokio::io::sink()).await else {
                    return;
                };
                if let Ok(done) = receiving.finished().await {
                    let _ = file_tx.send(done);
                }
            });
        })
        .connect(server.local_addrs()[0])
        .await
        .expect("connects");
    chat::NICK.send(&client, &nick.to_string()).await.expect("sends");
    let mut person = Person { client, inbox, files };
    if let Some(room) = room {
        chat::JOIN
            .send(&person.client, &room.to_string())
            .await
            .expect("sends");
        person.expect(chat::JOINED, |r| r == room).await;
    }
    person
}

impl Person {
    /// The next `msg` that `matches`, skipping everything else, within the deadline.
    async fn expect<T>(&mut self, msg: Msg<T>, mut matches: impl FnMut(&T) -> bool) -> T
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static + std::fmt::Debug,
    {
        let found = timeout(WAIT, async {
            while let Some(message) = self.inbox.recv().await {
                if message.id != msg.id() {
                    continue;
                }
                let value = msg.decode(message.payload).expect("decodes");
                if matches(&value) {
                    return value;
                }
            }
            panic!("the connection ended");
        });
        found
            .await
            .unwrap_or_else(|_| panic!("no matching {} within {WAIT:?}", msg.name()))
    }

    async fn error(&mut self, text: &str) {
        self.expect(chat::NOTICE, |n| n.error && n.text == text).await;
    }
}

fn say(room: &str, text: &str) -> chat::Say {
    chat::Say {
        room: room.into(),
        text: text.into(),
    }
}

async fn server() -> Server {
    chat::serve(Server::builder().tcp("127.0.0.1:0"))
        .await
        .expect("starts")
}

#[tokio::test]
async fn rooms_presence_and_refusals() {
    let server = server().await;
    let mut ann = person(&server, "ann", Some("lobby")).await;
    let mut ben = person(&server, "ben", Some("lobby")).await;
    ann.expect(chat::PRESENCE, |p| {
        p.nick == "ben" && p.joined && p.room == "lobby"
    })
    .await;
    ann.expect(chat::DIRECTORY, |d| {
        d.rooms.iter().any(|r| r.name == "lobby" && r.members.len() == 2)
    })
    .await;

    chat::SAY
        .send(&ann.client, &say("lobby", "<b>hi</b>"))
        .await
        .unwrap();
    let line = ben.expect(chat::LINE, |_| true).await;
    assert_eq!((line.from.as_str(), line.text.as_str()), ("ann", "<b>hi</b>"));

    chat::NICK.send(&ann.client, &"  ".to_string()).await.unwrap();
    ann.error("a nickname cannot be empty").await;
    chat::NICK.send(&ann.client, &"n".repeat(25)).await.unwrap();
    ann.error("a nickname is at most 24 characters").await;
    chat::JOIN.send(&ann.client, &"r".repeat(33)).await.unwrap();
    ann.error("a room name is at most 32 characters").await;
    chat::SAY
        .send(&ann.client, &say("elsewhere", "psst"))
        .await
        .unwrap();
    ann.error("join #elsewhere to talk there").await;

    chat::LEAVE.send(&ben.client, &"lobby".to_string()).await.unwrap();
    ben.expect(chat::LEFT, |r| r == "lobby").await;
    ann.expect(chat::PRESENCE, |p| p.nick == "ben" && !p.joined).await;
    ann.expect(chat::DIRECTORY, |d| {
        d.rooms.iter().any(|r| r.name == "lobby" && r.members.len() == 1)
    })
    .await;
}

#[tokio::test]
async fn a_late_joiner_gets_the_history_and_a_shared_file_reaches_the_room() {
    let server = server().await;
    let mut ann = person(&server, "ann", Some("lobby")).await;
    chat::SAY
        .send(&ann.client, &say("lobby", "before you came"))
        .await
        .unwrap();
    ann.expect(chat::LINE, |l| l.text == "before you came").await;
    let mut ben = person(&server, "ben", Some("lobby")).await;
    ben.expect(chat::LINE, |l| l.text == "before you came").await;

    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest: [u8; 32] = Sha256::digest(&content).into();
    chat::SHARE.send(&ann.client, &"lobby".to_string()).await.unwrap();
    let size = content.len() as u64;
    let sending = ann
        .client
        .peer()
        .send_file_from(std::io::Cursor::new(content), "data.bin", Some(size))
        .await
        .unwrap();
    sending.finished().await.expect("the server took it");
    let note = ben.expect(chat::FILE, |_| true).await;
    assert_eq!(
        (note.from.as_str(), note.name.as_str(), note.size),
        ("ann", "data.bin", size)
    );
    let received = timeout(WAIT, ben.files.recv()).await.expect("in time");
    assert_eq!(received, Some((size, digest)));
    ann.expect(chat::NOTICE, |n| n.text == "shared with 1 other(s) in #lobby")
        .await;
}

#[tokio::test]
async fn a_flooding_person_is_slowed_while_another_is_heard_at_once() {
    let server = server().await;
    let mut watcher = person(&server, "watcher", Some("lobby")).await;
    let flooder = person(&server, "flooder", Some("lobby")).await;
    let calm = person(&server, "calm", Some("lobby")).await;
    for i in 0..200 {
        chat::SAY
            .send(&flooder.client, &say("lobby", &format!("flood {i}")))
            .await
            .unwrap();
    }
    let started = tokio::time::Instant::now();
    chat::SAY
        .send(&calm.client, &say("lobby", "hello"))
        .await
        .unwrap();
    let mut flood_seen = 0;
    let heard = watcher
        .expect(chat::LINE, |line| {
            if line.from == "flooder" {
                flood_seen += 1;
            }
            line.from == "calm"
        })
        .await;
    assert_eq!(heard.text, "hello");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "heard after {:?}",
        started.elapsed()
    );
    // 10 a second with bursts of 30: far fewer than 200 of the flood got through meanwhile.
    assert!(flood_seen < 100, "{flood_seen} flood lines before the calm one");
    // And the flood goes on at the allowed rate: line 45 is 15 beyond the burst, 1.5 s.
    watcher.expect(chat::LINE, |line| line.text == "flood 45").await;
    let slowed = started.elapsed();
    assert!(
        slowed >= Duration::from_millis(1200),
        "flood line 45 after {slowed:?}"
    );
}
