//! Server and client behaviour over real loopback sockets.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{within, Events, RawPeer};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use truflux::{protocol, Client, ClientConfig, Code, Error, Initiator, Message, Server, ServerConfig};
use truflux_msg::{Msg, RawMsg, Registry, Text, TextMsg};

async fn echo_server(events: &Events) -> Server {
    Server::builder()
        .tcp("127.0.0.1:0")
        .protocol(protocol::from_fn(|peer, message| async move {
            let _ = peer.send(message).await;
        }))
        .on_connect(events.connected())
        .on_disconnect(events.disconnected())
        .on_error(events.error())
        .start()
        .await
        .expect("server starts")
}

/// A client whose received messages land in a channel.
async fn collecting_client(server: &Server) -> (Client, mpsc::UnboundedReceiver<Message>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = Client::connect(
        server.local_addrs()[0],
        protocol::from_fn(move |_peer, message| {
            let _ = tx.send(message);
            std::future::ready(())
        }),
    )
    .await
    .expect("client connects");
    (client, rx)
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
    within("a message", rx.recv())
        .await
        .expect("message channel open")
}

#[tokio::test]
async fn echo_round_trip_in_order() {
    let panics = common::watch_panics();
    let events = Events::default();
    let server = echo_server(&events).await;
    let (client, mut rx) = collecting_client(&server).await;
    for i in 0..100u32 {
        client
            .peer()
            .send_raw(i, Bytes::from(vec![i as u8; i as usize]))
            .await
            .unwrap();
    }
    for i in 0..100u32 {
        let message = recv(&mut rx).await;
        assert_eq!(message.id, i);
        assert_eq!(message.payload, vec![i as u8; i as usize]);
    }
    common::assert_no_panics(panics);
}

#[tokio::test]
async fn connection_count_follows_connects_and_disconnects() {
    let events = Events::default();
    let server = echo_server(&events).await;
    assert_eq!(server.num_connections(), 0);
    let (a, _ra) = collecting_client(&server).await;
    let (b, _rb) = collecting_client(&server).await;
    assert_eq!(server.num_connections(), 2);
    let info = a.peer().close(Code::NORMAL, "bye").await;
    assert_eq!((info.code, info.initiator), (Code::NORMAL, Initiator::Local));
    let (_, seen) = events.disconnect().await;
    assert_eq!(
        (seen.code, seen.reason.as_str(), seen.initiator),
        (Code::NORMAL, "bye", Initiator::Remote)
    );
    assert_eq!(server.num_connections(), 1);
    drop(b);
    events.disconnect().await;
    assert_eq!(server.num_connections(), 0);
}

#[tokio::test]
async fn info_reports_both_addresses() {
    let events = Events::default();
    let server = echo_server(&events).await;
    let (client, _rx) = collecting_client(&server).await;
    let peer = events.connected_peer().await;
    assert_eq!(client.peer().info().remote, server.local_addrs()[0]);
    assert_eq!(peer.info().remote, client.peer().info().local);
    assert_eq!(peer.info().local, client.peer().info().remote);
    assert!(!peer.is_websocket());
    assert_eq!(peer.info().transport, truflux::TransportKind::Tcp);
}

#[tokio::test]
async fn broadcast_reaches_everyone_but_the_excluded() {
    let events = Events::default();
    let server = echo_server(&events).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(collecting_client(&server).await);
    }
    let ids: Vec<_> = server.peers().iter().map(|p| p.id()).collect();
    let excluded = [ids[0], ids[1]];
    let report = server.broadcast_raw(7, &b"news"[..], &excluded).unwrap();
    assert_eq!(report.queued, 2);
    assert!(report.slow.is_empty());
    // Each client learns its own server-side id by a broadcast to everyone.
    server.broadcast_raw(8, &b"all"[..], &[]).unwrap();
    let mut got_news = 0;
    for (_, rx) in &mut clients {
        let first = recv(rx).await;
        if first.id == 7 {
            got_news += 1;
            assert_eq!(first.payload, &b"news"[..]);
            assert_eq!(recv(rx).await.id, 8);
        } else {
            assert_eq!(first.id, 8);
        }
    }
    assert_eq!(got_news, 2);
}

#[tokio::test]
async fn graceful_server_close_flushes_queued_frames_first() {
    let events = Events::default();
    let server = echo_server(&events).await;
    let (client, mut rx) = collecting_client(&server).await;
    let peer = server.peers().pop().unwrap();
    for i in 0..500u32 {
        peer.send_raw(i, Bytes::from_static(&[0u8; 1000])).await.unwrap();
    }
    server.close(Code::GOING_AWAY, "maintenance").await;
    for i in 0..500u32 {
        assert_eq!(recv(&mut rx).await.id, i);
    }
    let info = within("client close", client.peer().closed()).await;
    assert_eq!(
        (info.code, info.reason.as_str(), info.initiator),
        (Code::GOING_AWAY, "maintenance", Initiator::Remote)
    );
    assert_eq!(server.num_connections(), 0);
    assert!(matches!(
        peer.send_raw(1, Bytes::new()).await,
        Err(Error::Closed(_))
    ));
}

#[tokio::test]
async fn forced_close_tells_the_peer_and_refuses_new_sends() {
    let events = Events::default();
    let server = echo_server(&events).await;
    let (client, _rx) = collecting_client(&server).await;
    let peer = server.peers().pop().unwrap();
    peer.close_now(Code::POLICY_VIOLATION, "kicked");
    let info = within("client close", client.peer().closed()).await;
    assert_eq!(
        (info.code, info.reason.as_str()),
        (Code::POLICY_VIOLATION, "kicked")
    );
    assert!(matches!(
        client.peer().send_raw(1, Bytes::new()).await,
        Err(Error::Closed(_))
    ));
    let (_, seen) = events.disconnect().await;
    assert_eq!(
        (seen.code, seen.initiator),
        (Code::POLICY_VIOLATION, Initiator::Local)
    );
}

/// A peer closed while it is still sending gets the close frame and its code, over TCP and
/// WebSocket. Without care the closing end resets the connection under the client, whose next
/// write fails before it reads the close frame: the closing end drains what keeps arriving,
/// and a client whose write fails still reads what had arrived.
#[tokio::test]
async fn a_forced_close_reaches_a_client_that_is_still_sending() {
    let received = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let counter = received.clone();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .ws("127.0.0.1:0", "/truflux")
        .protocol(protocol::from_fn(move |_peer, _message| {
            counter.add_permits(1);
            std::future::ready(())
        }))
        .start()
        .await
        .expect("server starts");
    for (round, websocket) in [false, true].into_iter().cycle().take(8).enumerate() {
        let builder = Client::builder().protocol(protocol::from_fn(|_, _| std::future::ready(())));
        let client = if websocket {
            builder.connect_ws(&server.ws_urls()[0]).await
        } else {
            builder.connect(server.local_addrs()[0]).await
        }
        .expect("client connects");
        let flood = tokio::spawn({
            let client = client.clone();
            async move {
                let payload = Bytes::from(vec![0x5a; 32 * 1024]);
                while client.peer().send_raw(1, payload.clone()).await.is_ok() {}
            }
        });
        // The server has taken some of the flood; more is in flight behind it.
        within("flood arriving", received.acquire_many(16))
            .await
            .unwrap()
            .forget();
        let peer = server.peers().pop().unwrap();
        peer.close_now(Code::POLICY_VIOLATION, "kicked");
        let info = within("client close", client.peer().closed()).await;
        assert_eq!(
            (info.code, info.reason.as_str()),
            (Code::POLICY_VIOLATION, "kicked"),
            "round {round}, websocket {websocket}"
        );
        within("flood ends", flood).await.unwrap();
        within("server forgets the peer", async {
            while server.num_connections() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
}

#[tokio::test]
async fn session_store_is_per_peer_and_typed() {
    #[derive(Clone, Debug, PartialEq)]
    struct Nick(String);
    let events = Events::default();
    let server = echo_server(&events).await;
    let (_a, _ra) = collecting_client(&server).await;
    let (_b, _rb) = collecting_client(&server).await;
    let peers = server.peers();
    peers[0].session().insert(Nick("ada".into()));
    peers[0].session().insert(42u32);
    assert_eq!(peers[0].session().get::<Nick>(), Some(Nick("ada".into())));
    assert_eq!(
        peers[0].session().with(|n: &mut u32| {
            *n += 1;
            *n
        }),
        Some(43)
    );
    assert_eq!(peers[1].session().get::<Nick>(), None);
    assert_eq!(peers[0].session().remove::<Nick>(), Some(Nick("ada".into())));
    assert!(!peers[0].session().contains::<Nick>());
}

#[tokio::test]
async fn connect_times_out_when_the_server_never_says_hello() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let (_socket, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
    });
    let config = ClientConfig::default().connect_timeout(Duration::from_millis(200));
    let result = Client::builder().config(config).connect(addr).await;
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
}

#[tokio::test]
async fn connection_limit_refuses_with_try_again_later() {
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .config(ServerConfig::default().max_connections(1))
        .start()
        .await
        .unwrap();
    let _first = Client::connect(server.local_addrs()[0], truflux::protocol::NoMessages)
        .await
        .unwrap();
    let second = Client::connect(server.local_addrs()[0], truflux::protocol::NoMessages).await;
    match second {
        Err(Error::Closed(info)) => assert_eq!(info.code, Code::TRY_AGAIN_LATER),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn connections_beyond_the_per_address_limit_get_try_again_later() {
    let events = common::Events::default();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .config(ServerConfig::default().max_connections_per_address(Some(2)))
        .on_disconnect(events.disconnected())
        .start()
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    let first = Client::connect(addr, truflux::protocol::NoMessages)
        .await
        .unwrap();
    let _second = Client::connect(addr, truflux::protocol::NoMessages)
        .await
        .unwrap();
    match Client::connect(addr, truflux::protocol::NoMessages).await {
        Err(Error::Closed(info)) => assert_eq!(info.code, Code::TRY_AGAIN_LATER),
        other => panic!("expected a refusal, got {other:?}"),
    }
    drop(first);
    events.disconnect().await;
    Client::connect(addr, truflux::protocol::NoMessages)
        .await
        .expect("a slot is free again");
}

#[tokio::test]
async fn listens_on_several_addresses() {
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .tcp("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let addrs = server.local_addrs();
    assert_eq!(addrs.len(), 2);
    let _a = Client::connect(addrs[0], truflux::protocol::NoMessages)
        .await
        .unwrap();
    let _b = Client::connect(addrs[1], truflux::protocol::NoMessages)
        .await
        .unwrap();
    assert_eq!(server.num_connections(), 2);
}

#[tokio::test]
async fn oversized_send_fails_at_the_sender() {
    let events = Events::default();
    let server = echo_server(&events).await;
    let (client, _rx) = collecting_client(&server).await;
    let too_big = Bytes::from(vec![0u8; client.peer().max_payload() as usize + 1]);
    let result = client.peer().send_raw(1, too_big).await;
    assert!(matches!(
        result,
        Err(Error::Frame(truflux::frame::FrameError::PayloadTooLarge { .. }))
    ));
    let result = client.peer().send_raw(0x8000_0000, Bytes::new()).await;
    assert!(matches!(
        result,
        Err(Error::Frame(truflux::frame::FrameError::ReservedIdBit(_)))
    ));
}

#[tokio::test]
async fn client_answers_ping_with_pong() {
    // A raw "server" that pings the truflux client after the hello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut raw = RawPeer::from_stream(socket);
        assert_eq!(raw.read_frame().await.unwrap().kind, truflux::frame::Kind::Hello);
        raw.write_frame(&truflux::frame::control::Hello::current().to_frame())
            .await;
        let ping = truflux::frame::Frame::control(truflux::frame::Kind::Ping, Bytes::from_static(b"t1"));
        raw.write_frame(&ping).await;
        let pong = raw.read_frame().await.unwrap();
        assert_eq!(
            (pong.kind, pong.payload),
            (truflux::frame::Kind::Pong, Bytes::from_static(b"t1"))
        );
    });
    let _client = Client::connect(addr, truflux::protocol::NoMessages)
        .await
        .unwrap();
    within("the raw server", server).await.unwrap();
}

// ---- typed messages through truflux-msg -------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Inner {
    flag: bool,
    list: Vec<i16>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Everything {
    text: String,
    small: u8,
    big: u64,
    negative: i64,
    ratio: f64,
    yes: bool,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    map: BTreeMap<String, u32>,
    inner: Inner,
    maybe: Option<String>,
    nothing: Option<u32>,
}

const EVERYTHING: Msg<Everything> = Msg::named("everything");
const BLOB: RawMsg = RawMsg::named("blob");
const LINE: TextMsg = TextMsg::named("line");

fn sample() -> Everything {
    Everything {
        text: "héllo ✓".into(),
        small: 255,
        big: u64::MAX,
        negative: i64::MIN,
        ratio: -1.5e300,
        yes: true,
        data: vec![0, 1, 2, 255],
        map: BTreeMap::from([("a".into(), 1), ("b".into(), 2)]),
        inner: Inner {
            flag: false,
            list: vec![-1, 0, 1],
        },
        maybe: Some("x".into()),
        nothing: None,
    }
}

#[tokio::test]
async fn typed_values_survive_the_trip() {
    let echo = Registry::builder()
        .on(EVERYTHING, |peer, value: Everything| async move {
            EVERYTHING.send(&peer, &value).await
        })
        .on(BLOB, |peer, value: Bytes| async move {
            BLOB.send(&peer, &value).await
        })
        .on(
            LINE,
            |peer, value: Text| async move { LINE.send(&peer, &value).await },
        )
        .build()
        .unwrap();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .protocol(echo)
        .start()
        .await
        .unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let (tx2, tx3) = (tx.clone(), tx.clone());
    let receiver = Registry::builder()
        .on(EVERYTHING, move |_, value: Everything| {
            let _ = tx.send(format!("{value:?}"));
            std::future::ready(())
        })
        .on(BLOB, move |_, value: Bytes| {
            let _ = tx2.send(format!("{value:?}"));
            std::future::ready(())
        })
        .on(LINE, move |_, value: Text| {
            let _ = tx3.send(value.to_string());
            std::future::ready(())
        })
        .build()
        .unwrap();
    let client = Client::connect(server.local_addrs()[0], receiver).await.unwrap();

    EVERYTHING.send(&client, &sample()).await.unwrap();
    BLOB.send(&client, &Bytes::from_static(&[9, 8, 7])).await.unwrap();
    LINE.send(&client, &Text::from("plain text ✓")).await.unwrap();
    assert_eq!(
        within("typed echo", rx.recv()).await.unwrap(),
        format!("{:?}", sample())
    );
    assert_eq!(
        within("raw echo", rx.recv()).await.unwrap(),
        format!("{:?}", Bytes::from_static(&[9, 8, 7]))
    );
    assert_eq!(within("text echo", rx.recv()).await.unwrap(), "plain text ✓");
}

#[test]
fn byte_buffers_travel_as_msgpack_bin_not_arrays() {
    let message = EVERYTHING.encode(&sample()).unwrap();
    // bin 8 marker (0xc4), length 4, then the octets: not an array (0x94) of numbers.
    let needle = [0xc4, 4, 0, 1, 2, 255];
    assert!(message.payload.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn raw_and_text_payloads_are_not_copied() {
    let data = Bytes::from(vec![1u8; 1024]);
    let message = BLOB.encode(&data).unwrap();
    assert_eq!(message.payload.as_ptr(), data.as_ptr());
    let text = Text::from(String::from("shared"));
    let message = LINE.encode(&text).unwrap();
    assert_eq!(message.payload.as_ptr(), text.as_bytes().as_ptr());
}

#[tokio::test]
async fn sending_by_name_checks_name_and_structure_at_the_sender() {
    #[derive(Serialize)]
    struct WrongShape {
        text: u32,
    }
    let registry = Registry::builder()
        .message(EVERYTHING)
        .message(BLOB)
        .build()
        .unwrap();
    let events = Events::default();
    let server = echo_server(&events).await;
    let client = Client::connect(server.local_addrs()[0], registry.clone())
        .await
        .unwrap();

    let unknown = registry.send_named(&client, "nope", &sample()).await;
    assert!(
        matches!(&unknown, Err(Error::Protocol(e)) if e.code == Code::UNKNOWN_MESSAGE),
        "{unknown:?}"
    );
    let wrong = registry
        .send_named(&client, "everything", &WrongShape { text: 1 })
        .await;
    assert!(
        matches!(&wrong, Err(Error::Protocol(e)) if e.code == Code::INVALID_PAYLOAD),
        "{wrong:?}"
    );
    let raw = registry.send_named(&client, "blob", &sample()).await;
    assert!(
        matches!(&raw, Err(Error::Protocol(e)) if e.code == Code::INVALID_PAYLOAD),
        "{raw:?}"
    );
    registry
        .send_named(&client, "everything", &sample())
        .await
        .expect("a fitting value is sent");
}

#[tokio::test]
async fn incoming_errors_are_reported_to_both_sides_and_the_connection_goes_on() {
    const KNOWN_NO_HANDLER: Msg<u32> = Msg::named("known");
    let server_events = Events::default();
    let registry = Registry::builder()
        .on(EVERYTHING, |peer, value: Everything| async move {
            EVERYTHING.send(&peer, &value).await
        })
        .message(KNOWN_NO_HANDLER)
        .build()
        .unwrap();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .protocol(registry)
        .on_error(server_events.error())
        .start()
        .await
        .unwrap();
    let client_events = Events::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let on_error = client_events.error();
    let client = Client::builder()
        .protocol(
            Registry::builder()
                .on(EVERYTHING, move |_, v: Everything| {
                    let _ = tx.send(v);
                    std::future::ready(())
                })
                .build()
                .unwrap(),
        )
        .on_error(move |error| on_error(None, error))
        .connect(server.local_addrs()[0])
        .await
        .unwrap();

    for (id, payload, code) in [
        (12345, Bytes::from_static(b"x"), Code::UNKNOWN_MESSAGE),
        (
            EVERYTHING.id(),
            Bytes::from_static(&[0xc1]),
            Code::INVALID_PAYLOAD,
        ),
        (
            KNOWN_NO_HANDLER.id(),
            KNOWN_NO_HANDLER.encode(&5).unwrap().payload,
            Code::UNIMPLEMENTED,
        ),
    ] {
        client.peer().send_raw(id, payload).await.unwrap();
        assert_eq!(server_events.error_event().await.1, code);
        assert_eq!(client_events.error_event().await.1, code);
    }
    EVERYTHING.send(&client, &sample()).await.unwrap();
    assert_eq!(within("echo after errors", rx.recv()).await.unwrap(), sample());
}

#[test]
fn registry_refuses_collisions_and_duplicates() {
    use truflux_msg::RegistryError;
    let a: Msg<u8> = Msg::with_id("a", 5);
    let b: Msg<u8> = Msg::with_id("b", 5);
    assert!(matches!(
        Registry::builder().message(a).message(b).build(),
        Err(RegistryError::IdCollision { id: 5, .. })
    ));
    let a2: Msg<u8> = Msg::with_id("a", 6);
    assert!(matches!(
        Registry::builder().message(a).message(a2).build(),
        Err(RegistryError::DuplicateName("a"))
    ));
    let twice = Registry::builder()
        .on(a, |_, _| async {})
        .on(a, |_, _| async {})
        .build();
    assert!(matches!(twice, Err(RegistryError::DuplicateHandler("a"))));
    // Registering once without and once with a handler is fine.
    assert!(Registry::builder()
        .message(a)
        .on(a, |_, _| async {})
        .build()
        .is_ok());
}

#[test]
fn name_ids_are_fnv1a_with_the_top_bit_cleared() {
    assert_eq!(truflux_msg::name_id(""), 0x811c_9dc5 & 0x7fff_ffff);
    assert_eq!(truflux_msg::name_id("chat"), 0x224b_f9ab);
    assert_eq!(truflux_msg::name_id("say"), 0x491c_7e60);
    assert_eq!(Msg::<u8>::named("login").id(), 0x497f_2f32);
}

// ---- write-through ----------------------------------------------------------------------------

/// A send from a task other than the peer's connection task is written by the sender itself
/// while the connection's writer is idle: it reaches the peer even while the connection's task
/// cannot run (its runtime's only thread is stuck in a handler); queued, it would wait for the
/// handler.
#[tokio::test]
async fn a_send_from_another_task_goes_out_while_the_connection_task_cannot_run() {
    let (mut hold, holder) = common::hold();
    // The server on a runtime of its own, on one thread, which its handler blocks.
    let (server, thread, stop) = common::server_on_own_thread(move || {
        Server::builder()
            .tcp("127.0.0.1:0")
            .protocol(protocol::from_fn(move |_peer, _message| {
                holder.block();
                std::future::ready(())
            }))
    })
    .await;
    let mut raw = RawPeer::open(server.local_addrs()[0]).await;
    raw.write_frame(&truflux::frame::Frame::message(1, Bytes::new()))
        .await;
    hold.held().await;
    let peer = server.peers().pop().unwrap();
    peer.send_raw(2, Bytes::from_static(b"through")).await.unwrap();
    let frame = raw.read_frame().await.expect("a frame");
    assert_eq!((frame.id, &frame.payload[..]), (2, &b"through"[..]));
    assert!(
        !hold.returned(),
        "the message arrived only once the connection's task ran again"
    );
    hold.release();
    drop((peer, server));
    stop.send(()).unwrap();
    thread.join().unwrap();
}

/// The payload of message `n` of sender `task`: its size alternates between small and large
/// enough to fill the socket, so that writes through leave tails for the writer.
fn through_payload(task: u32, n: u32) -> Bytes {
    let len = if n % 3 == 0 { 300 * 1024 } else { 40 + n as usize };
    Bytes::from(vec![(task * 31 + n) as u8; len])
}

/// Four tasks send at once, small and large messages, over plain and secure connections, TCP and
/// WebSocket: each message arrives whole, each sender's in its order (writes through, tails and
/// queued frames interleave only at frame boundaries, and sealing follows the order on the wire).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_from_many_tasks_arrive_whole_and_in_each_senders_order() {
    for (secure, ws) in [(false, false), (true, false), (false, true), (true, true)] {
        let security = truflux::security::SecurityConfig::default().required(secure);
        let connection = truflux::ConnectionConfig::default().security(security);
        let server = Server::builder()
            .tcp("127.0.0.1:0")
            .ws("127.0.0.1:0", "/truflux")
            .config(ServerConfig::default().connection(connection.clone()))
            .protocol(protocol::from_fn(|_, _| std::future::ready(())))
            .start()
            .await
            .expect("server starts");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let builder = Client::builder()
            .config(ClientConfig::default().connection(connection))
            .protocol(protocol::from_fn(move |_peer, message| {
                let _ = tx.send(message);
                std::future::ready(())
            }));
        let client = if ws {
            builder.connect_ws(&server.ws_urls()[0]).await
        } else {
            builder.connect(server.local_addrs()[0]).await
        }
        .expect("client connects");
        let peer = server.peers().pop().unwrap();
        const PER_TASK: u32 = 60;
        let senders: Vec<_> = (0..4u32)
            .map(|task| {
                let peer = peer.clone();
                tokio::spawn(async move {
                    for n in 0..PER_TASK {
                        peer.send_raw(task, through_payload(task, n)).await.unwrap();
                    }
                })
            })
            .collect();
        let mut next = [0u32; 4];
        for _ in 0..4 * PER_TASK {
            let message = recv(&mut rx).await;
            let task = message.id;
            let n = next[task as usize];
            assert!(
                message.payload == through_payload(task, n),
                "secure {secure}, WebSocket {ws}: task {task} message {n}"
            );
            next[task as usize] += 1;
        }
        for sender in senders {
            sender.await.unwrap();
        }
        assert_eq!(client.peer().is_peer_secure(), secure);
        client.peer().close(Code::NORMAL, "done").await;
    }
}

/// A large message written through (the socket takes part of it, the writer the rest), then a
/// graceful close: the message arrives whole, then the close.
#[tokio::test]
async fn a_close_after_a_large_send_from_another_task_follows_the_whole_message() {
    let events = Events::default();
    let server = echo_server(&events).await;
    let (client, mut rx) = collecting_client(&server).await;
    let peer = server.peers().pop().unwrap();
    let big = Bytes::from(vec![0x3c; 8 * 1024 * 1024]);
    let sender = tokio::spawn({
        let peer = peer.clone();
        let big = big.clone();
        async move { peer.send_raw(9, big).await }
    });
    within("the send", sender).await.unwrap().unwrap();
    peer.close(Code::GOING_AWAY, "bye").await;
    let message = recv(&mut rx).await;
    assert!(message.id == 9 && message.payload == big);
    let info = within("client close", client.peer().closed()).await;
    assert_eq!((info.code, info.reason.as_str()), (Code::GOING_AWAY, "bye"));
}
