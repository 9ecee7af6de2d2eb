//! Rooms: membership, `to(room).except(…)`, each recipient once, limits, presence, history,
//! and the typed helper of truflux-msg.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{within, Events};
use tokio::sync::mpsc;
use truflux::{
    protocol, Client, Error, HistoryLimit, Message, Peer, Presence, RoomConfig, RoomError, Server,
    ServerConfig,
};

/// A server whose peers the test reaches through `events`, with presence recorded.
async fn server(config: ServerConfig) -> (Server, Events, Arc<Mutex<Vec<Presence>>>) {
    let events = Events::default();
    let presence = Arc::new(Mutex::new(Vec::new()));
    let log = presence.clone();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .config(config)
        .on_connect(events.connected())
        .on_presence(move |change| log.lock().unwrap().push(change.clone()))
        .start()
        .await
        .unwrap();
    (server, events, presence)
}

/// A client whose messages arrive in a channel, and its peer on the server.
async fn member(server: &Server, events: &Events) -> (Client, mpsc::UnboundedReceiver<Bytes>, Peer) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = Client::connect(
        server.local_addrs()[0],
        protocol::from_fn(move |_peer, message: Message| {
            let _ = tx.send(message.payload);
            std::future::ready(())
        }),
    )
    .await
    .unwrap();
    let peer = events.connected_peer().await;
    (client, rx, peer)
}

/// What `rx` received once everything queued so far went through: `client` asks the server to
/// echo a marker back, and everything before the marker is the answer.
async fn drain(rx: &mut mpsc::UnboundedReceiver<Bytes>, server: &Server, peer: &Peer) -> Vec<Bytes> {
    server.to("__marker__").broadcast_raw(1, &b"-"[..]).unwrap();
    peer.send_raw(1, &b"end"[..]).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let payload = within("a message", rx.recv()).await.expect("open");
        if payload == b"end"[..] {
            return seen;
        }
        seen.push(payload);
    }
}

#[tokio::test]
async fn a_peer_in_many_rooms_gets_a_broadcast_once_and_except_leaves_out_peers_and_rooms() {
    let (server, events, _) = server(ServerConfig::default()).await;
    let (_a, mut a_rx, a) = member(&server, &events).await;
    let (_b, mut b_rx, b) = member(&server, &events).await;
    let (_c, mut c_rx, c) = member(&server, &events).await;
    for (peer, room) in [(&a, "x"), (&a, "y"), (&b, "y"), (&b, "z"), (&c, "z")] {
        peer.join(room).await.unwrap();
    }
    assert_eq!(a.rooms(), ["x", "y"]);
    let report = server
        .to(["x", "y", "z"])
        .broadcast_raw(1, &b"all three"[..])
        .unwrap();
    assert_eq!(report.queued, 3, "a is in x and y, b in y and z: each once");
    server
        .to("y")
        .except(&b)
        .broadcast_raw(1, &b"y but b"[..])
        .unwrap();
    server
        .to(["x", "y"])
        .except("z")
        .broadcast_raw(1, &b"x y but z"[..])
        .unwrap();
    server
        .everyone()
        .except("x")
        .broadcast_raw(1, &b"all but x"[..])
        .unwrap();
    assert_eq!(
        drain(&mut a_rx, &server, &a).await,
        ["all three", "y but b", "x y but z"]
    );
    assert_eq!(drain(&mut b_rx, &server, &b).await, ["all three", "all but x"]);
    assert_eq!(drain(&mut c_rx, &server, &c).await, ["all three", "all but x"]);
    assert!(a.leave("x") && !a.leave("x"));
    assert_eq!(server.room_members("x").await.unwrap(), []);
    assert_eq!(server.rooms().await.unwrap(), ["y", "z"]);
}

#[tokio::test]
async fn presence_reports_joins_and_leaves_with_labels_and_a_session_that_ends_leaves_its_rooms() {
    let (server, events, presence) = server(ServerConfig::default()).await;
    let (alice_client, _rx, alice) = member(&server, &events).await;
    let (_bob_client, _rx2, bob) = member(&server, &events).await;
    alice.set_label("alice".to_owned());
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    alice.join("lobby").await.unwrap();
    let members = server.room_members("lobby").await.unwrap();
    let labels: Vec<Option<String>> = members.into_iter().map(|m| m.label).collect();
    assert!(labels.contains(&Some("alice".into())) && labels.contains(&None));
    alice_client.peer().close(truflux::Code::NORMAL, "bye").await;
    within("alice to leave the lobby", async {
        while server.room_members("lobby").await.unwrap().len() != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let log = presence.lock().unwrap().clone();
    let described: Vec<(bool, String, Option<String>)> = log
        .iter()
        .map(|change| match change {
            Presence::Joined { room, member } => (true, room.clone(), member.label.clone()),
            Presence::Left { room, member } => (false, room.clone(), member.label.clone()),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        described,
        [
            (true, "lobby".into(), Some("alice".into())),
            (true, "lobby".into(), None),
            (false, "lobby".into(), Some("alice".into())),
        ],
        "a second join of the same room is no change"
    );
}

#[tokio::test]
async fn room_names_and_counts_are_limited() {
    let config = ServerConfig::default().rooms(RoomConfig::default().max_rooms_per_peer(2).max_name(8));
    let (server, events, _) = server(config).await;
    let (client, _rx, peer) = member(&server, &events).await;
    for (room, expected) in [
        ("", Some(RoomError::BadName { max: 8 })),
        ("ninechars", Some(RoomError::BadName { max: 8 })),
        ("one", None),
        ("two", None),
        ("three", Some(RoomError::TooManyRooms { max: 2 })),
    ] {
        let got = match peer.join(room).await {
            Ok(()) => None,
            Err(Error::Room(error)) => Some(error),
            Err(other) => panic!("{other}"),
        };
        assert_eq!(got, expected, "{room:?}");
    }
    assert_eq!(peer.rooms(), ["one", "two"]);
    // A client's own peer has no rooms.
    assert!(matches!(
        client.peer().join("x").await,
        Err(Error::Room(RoomError::NotOnServer))
    ));
}

#[tokio::test]
async fn a_room_that_keeps_history_hands_it_to_whoever_joins_before_anything_newer() {
    let history = HistoryLimit::default().messages(2);
    let config = ServerConfig::default().rooms(RoomConfig::default().history(Some(history)));
    let (server, events, _) = server(config).await;
    let (_a, _a_rx, a) = member(&server, &events).await;
    a.join("news").await.unwrap();
    for text in ["one", "two", "three"] {
        server
            .to("news")
            .broadcast_raw(1, Bytes::from_static(text.as_bytes()))
            .unwrap();
    }
    let (_b, mut b_rx, b) = member(&server, &events).await;
    b.join("news").await.unwrap();
    server.to("news").broadcast_raw(1, &b"four"[..]).unwrap();
    assert_eq!(drain(&mut b_rx, &server, &b).await, ["two", "three", "four"]);
}

#[tokio::test]
async fn the_typed_helper_aims_at_rooms_and_encodes_once() {
    use serde::{Deserialize, Serialize};
    use truflux_msg::{Msg, Registry};
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Say {
        text: String,
    }
    const SAY: Msg<Say> = Msg::named("say");
    let (server, events, _) = server(ServerConfig::default()).await;
    let (tx, mut said) = mpsc::unbounded_channel();
    let registry = Registry::builder()
        .on(SAY, move |_peer, say: Say| {
            let _ = tx.send(say.text);
            std::future::ready(())
        })
        .build()
        .unwrap();
    let _listener = Client::connect(server.local_addrs()[0], registry).await.unwrap();
    let listening = events.connected_peer().await;
    let (_speaker, _rx, speaker) = member(&server, &events).await;
    listening.join("lobby").await.unwrap();
    speaker.join("lobby").await.unwrap();
    let report = SAY
        .to(&server, "lobby")
        .except(&speaker)
        .broadcast(&Say { text: "hi".into() })
        .unwrap();
    assert_eq!(report.queued, 1);
    assert_eq!(within("the typed broadcast", said.recv()).await.unwrap(), "hi");
}
