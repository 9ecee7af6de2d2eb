//! Connection lifecycle: bearer-token authentication, heartbeats, requests with replies, and
//! resumable sessions that reconnect and lose nothing. Real sockets on loopback; a relay in the
//! middle cuts or freezes connections.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::relay::{seed, Relay};
use common::{assert_no_panics, watch_panics, within, Events, RawPeer};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use truflux::auth::{AuthRequest, Rejection};
use truflux::frame::control::{Close, Hello};
use truflux::frame::{Frame, Kind};
use truflux::protocol::from_fn;
use truflux::{
    ClientConfig, CloseInfo, Code, ConnectionConfig, Error, Message, Peer, Reconnect, Server, ServerConfig,
    SessionStore, TokenCarrier,
};

#[derive(Clone, Debug, PartialEq, Eq)]
struct User(String);

/// Accepts the tokens `"alice"` and `"bob"`; counts every validation.
fn validator(calls: Arc<AtomicUsize>) -> impl Fn(AuthRequest) -> std::future::Ready<Result<User, Rejection>> {
    move |request: AuthRequest| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(match request.token.as_str() {
            name @ ("alice" | "bob") => Ok(User(name.to_owned())),
            _ => Err(Rejection::from("unknown token")),
        })
    }
}

/// A server that authenticates and reports each peer's identity as it connects.
async fn auth_server(calls: Arc<AtomicUsize>) -> (Server, mpsc::UnboundedReceiver<Option<User>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .ws("127.0.0.1:0", "/t")
        .authenticate(validator(calls))
        .on_connect(move |peer: Peer| {
            let _ = tx.send(peer.session().get::<User>());
            std::future::ready(())
        })
        .start()
        .await
        .expect("server");
    (server, rx)
}

#[tokio::test]
async fn a_valid_token_over_tcp_sets_the_identity_and_others_are_unauthorized() {
    let panics = watch_panics();
    let calls = Arc::new(AtomicUsize::new(0));
    let (server, mut identities) = auth_server(calls.clone()).await;
    let addr = server.local_addrs()[0];

    let client = truflux::Client::builder()
        .token("alice")
        .connect(addr)
        .await
        .expect("alice");
    assert_eq!(
        within("identity", identities.recv()).await.flatten(),
        Some(User("alice".into()))
    );
    assert!(!client.peer().is_closed());

    for builder in [
        truflux::Client::builder().token("mallory"),
        truflux::Client::builder(),
    ] {
        match builder.connect(addr).await {
            Err(Error::Unauthorized(reason)) => assert!(!reason.to_string().contains("mallory"), "{reason}"),
            other => panic!("expected Unauthorized, got {other:?}"),
        }
    }
    // A raw peer sees the close code itself.
    let mut raw = RawPeer::connect(addr).await;
    raw.write_frame(&Hello::current().to_frame()).await;
    assert_eq!(raw.expect_close().await.code, Code::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "no token: no validator call");
    assert_eq!(server.num_connections(), 1);
    assert_no_panics(panics);
}

#[tokio::test]
async fn websocket_tokens_travel_in_the_header_the_subprotocol_or_the_hello() {
    let panics = watch_panics();
    let calls = Arc::new(AtomicUsize::new(0));
    let (server, mut identities) = auth_server(calls.clone()).await;
    let url = server.ws_urls()[0].clone();

    let mut clients = Vec::new();
    for (carrier, name) in [
        (TokenCarrier::Header, "alice"),
        (TokenCarrier::Subprotocol, "bob"),
        (TokenCarrier::Hello, "alice"),
    ] {
        let client = truflux::Client::builder()
            .token(name)
            .token_carrier(carrier)
            .connect_ws(&url)
            .await
            .unwrap_or_else(|e| panic!("{carrier:?}: {e}"));
        let identity = within("identity", identities.recv()).await.flatten();
        assert_eq!(identity, Some(User(name.into())), "{carrier:?}");
        clients.push(client);
    }
    for carrier in [
        TokenCarrier::Header,
        TokenCarrier::Subprotocol,
        TokenCarrier::Hello,
    ] {
        let refused = truflux::Client::builder()
            .token("mallory")
            .token_carrier(carrier)
            .connect_ws(&url)
            .await;
        assert!(
            matches!(refused, Err(Error::Unauthorized(_))),
            "{carrier:?}: {refused:?}"
        );
    }
    // Refused in the upgrade: a plain 401, no WebSocket.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str())
            .expect("request");
    request
        .headers_mut()
        .insert("authorization", http::HeaderValue::from_static("Bearer mallory"));
    let stream = TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches("/t"))
        .await
        .expect("tcp");
    match tokio_tungstenite::client_async(request, stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    assert_eq!(server.num_connections(), 3);
    assert_no_panics(panics);
}

/// Fast reconnection for tests.
fn reconnecting() -> ClientConfig {
    ClientConfig::default().reconnect(Some(
        Reconnect::default()
            .initial_delay(Duration::from_millis(5))
            .max_delay(Duration::from_millis(100))
            .max_attempts(None),
    ))
}

#[tokio::test]
async fn a_token_refused_on_reconnection_ends_the_client_without_retrying() {
    let panics = watch_panics();
    for via in [Via::Tcp, Via::Ws] {
        let calls = Arc::new(AtomicUsize::new(0));
        let revoked = Arc::new(AtomicBool::new(false));
        let server = listen(Server::builder(), via, "127.0.0.1:0")
            .authenticate({
                let (calls, revoked) = (calls.clone(), revoked.clone());
                move |_request: AuthRequest| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let ok = !revoked.load(Ordering::SeqCst);
                    std::future::ready(if ok {
                        Ok(())
                    } else {
                        Err(Rejection::from("token revoked"))
                    })
                }
            })
            .start()
            .await
            .expect("server");
        let relay = Relay::start(listening_addr(&server, via)).await;
        let (closed_tx, mut closed) = mpsc::unbounded_channel();
        let (lost_tx, mut lost) = mpsc::unbounded_channel();
        let builder = truflux::Client::builder()
            .config(reconnecting())
            .token("t")
            .on_disconnect(move |info: &CloseInfo| {
                let _ = lost_tx.send(info.code);
            })
            .on_close(move |info: &CloseInfo| {
                let _ = closed_tx.send(info.clone());
            });
        let client = open(builder, &relay, via).await.expect("connect");
        assert!(client.peer().is_resumable());
        revoked.store(true, Ordering::SeqCst);
        relay.cut();
        assert_eq!(within("loss", lost.recv()).await, Some(Code::ABNORMAL), "{via:?}");
        let info = within("client end", closed.recv()).await.expect("closed");
        assert_eq!(info.code, Code::UNAUTHORIZED, "{via:?}: {info:?}");
        assert!(client.peer().is_closed());
        // The supervisor has returned: exactly one reconnection reached the server.
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{via:?}");
        assert_eq!(relay.accepted(), 2, "{via:?}");
    }
    assert_no_panics(panics);
}

#[derive(Clone, Copy, Debug)]
enum Via {
    Tcp,
    Ws,
}

/// The address of `server`'s listener for `via`, for a relay to forward to.
fn target(server: &Server, via: Via) -> SocketAddr {
    match via {
        Via::Tcp => server.local_addrs()[0],
        Via::Ws => server.ws_urls()[0]
            .trim_start_matches("ws://")
            .trim_end_matches("/t")
            .parse()
            .expect("ws addr"),
    }
}

async fn open(builder: truflux::ClientBuilder, relay: &Relay, via: Via) -> Result<truflux::Client, Error> {
    match via {
        Via::Tcp => builder.connect(relay.addr).await,
        Via::Ws => builder.connect_ws(&format!("ws://{}/t", relay.addr)).await,
    }
}

fn heartbeat(interval_ms: u64, timeout_ms: u64) -> ConnectionConfig {
    ConnectionConfig::default()
        .heartbeat_interval(Some(Duration::from_millis(interval_ms)))
        .heartbeat_timeout(Duration::from_millis(timeout_ms))
}

#[tokio::test]
async fn a_silent_peer_is_closed_by_heartbeat_on_both_ends() {
    let panics = watch_panics();
    for via in [Via::Tcp, Via::Ws] {
        let (down_tx, mut down) = mpsc::unbounded_channel();
        let server = Server::builder()
            .tcp("127.0.0.1:0")
            .ws("127.0.0.1:0", "/t")
            .config(ServerConfig::default().connection(heartbeat(100, 200)))
            .on_disconnect(move |_peer: &Peer, info: &CloseInfo| {
                let _ = down_tx.send(info.code);
            })
            .start()
            .await
            .expect("server");
        let relay = Relay::start(target(&server, via)).await;
        let (closed_tx, mut closed) = mpsc::unbounded_channel();
        let builder = truflux::Client::builder()
            .config(ClientConfig::default().connection(heartbeat(100, 200)))
            .on_close(move |info: &CloseInfo| {
                let _ = closed_tx.send(info.code);
            });
        let client = open(builder, &relay, via).await.expect("connect");
        // Heartbeats keep an idle connection open well past interval + timeout.
        let mut pongs = 0;
        for _ in 0..3 {
            pongs += usize::from(
                client
                    .peer()
                    .request_timeout(
                        Message {
                            id: 1,
                            payload: Bytes::new(),
                        },
                        Duration::from_millis(400),
                    )
                    .await
                    .is_err(),
            );
        }
        assert_eq!(
            pongs, 3,
            "requests to NoMessages fail with NO_REPLY, but the connection stays"
        );
        assert!(
            !client.peer().is_closed(),
            "{via:?}: closed while the peer answered"
        );
        let frozen_at = tokio::time::Instant::now();
        relay.freeze();
        assert_eq!(
            within("client heartbeat", closed.recv()).await,
            Some(Code::HEARTBEAT_TIMEOUT),
            "{via:?}"
        );
        assert_eq!(
            within("server heartbeat", down.recv()).await,
            Some(Code::HEARTBEAT_TIMEOUT),
            "{via:?}"
        );
        // interval + timeout after the last frame, plus the close timeout's share: generous.
        assert!(
            frozen_at.elapsed() < Duration::from_secs(3),
            "{via:?}: {:?}",
            frozen_at.elapsed()
        );
        relay.cut();
    }
    assert_no_panics(panics);
}

#[tokio::test]
async fn a_raw_peer_that_never_answers_is_closed_with_heartbeat_timeout() {
    let panics = watch_panics();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .config(ServerConfig::default().connection(heartbeat(50, 100)))
        .start()
        .await
        .expect("server");
    let mut raw = RawPeer::open(server.local_addrs()[0]).await;
    let started = tokio::time::Instant::now();
    let ping = raw.read_frame().await.expect("ping");
    assert_eq!(ping.kind, Kind::Ping);
    assert!(started.elapsed() >= Duration::from_millis(45));
    let close = raw.expect_close().await;
    assert_eq!(close.code, Code::HEARTBEAT_TIMEOUT);
    assert!(
        started.elapsed() >= Duration::from_millis(145),
        "{:?}",
        started.elapsed()
    );
    assert_no_panics(panics);
}

/// A protocol that answers every request with its payload reversed, after `delay` when the
/// payload is `"slow"`.
fn reversing() -> truflux::protocol::FnProtocol<impl Fn(Peer, Message) -> std::future::Ready<()> + Send + Sync>
{
    from_fn(|_peer: Peer, _message: Message| std::future::ready(())).on_request(
        |_peer, message, responder| async move {
            if message.payload.as_ref() == b"slow" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            if message.payload.as_ref() == b"ignore" {
                drop(responder);
                return;
            }
            let reversed: Vec<u8> = message.payload.iter().rev().copied().collect();
            let _ = responder.reply(reversed).await;
        },
    )
}

#[tokio::test]
async fn requests_get_replies_in_both_directions_and_typed_errors() {
    let panics = watch_panics();
    for via in [Via::Tcp, Via::Ws] {
        let events = Events::default();
        let server = Server::builder()
            .tcp("127.0.0.1:0")
            .ws("127.0.0.1:0", "/t")
            .protocol(reversing())
            .on_connect(events.connected())
            .start()
            .await
            .expect("server");
        let relay = Relay::start(target(&server, via)).await;
        let builder = truflux::Client::builder().protocol(reversing());
        let client = open(builder, &relay, via).await.expect("connect");
        let server_side = events.connected_peer().await;

        let ask = |payload: &'static [u8]| Message {
            id: 7,
            payload: Bytes::from_static(payload),
        };
        // Many in flight at once, answered out of order of completion.
        let (slow, fast) = tokio::join!(
            client.peer().request(ask(b"slow")),
            client.peer().request(ask(b"abc"))
        );
        assert_eq!(slow.expect("slow"), Bytes::from_static(b"wols"));
        assert_eq!(fast.expect("fast"), Bytes::from_static(b"cba"));
        assert_eq!(
            server_side.request(ask(b"xyz")).await.expect("server asks"),
            Bytes::from_static(b"zyx")
        );

        match client
            .peer()
            .request_timeout(ask(b"slow"), Duration::from_millis(50))
            .await
        {
            Err(Error::RequestTimeout(after)) => assert_eq!(after, Duration::from_millis(50)),
            other => panic!("{via:?}: expected a timeout, got {other:?}"),
        }
        match client.peer().request(ask(b"ignore")).await {
            Err(Error::Remote(remote)) => assert_eq!(remote.code, Code::NO_REPLY),
            other => panic!("{via:?}: expected NO_REPLY, got {other:?}"),
        }
        // The connection ends while a request waits: a typed error, not a hang.
        let waiting = tokio::spawn({
            let peer = client.peer().clone();
            async move {
                peer.request(Message {
                    id: 7,
                    payload: Bytes::from_static(b"slow"),
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        server_side.close_now(Code::POLICY_VIOLATION, "bye");
        match within("request end", waiting).await.expect("task") {
            // The close frame usually arrives; when the request was still unread at the server,
            // its socket resets and the client only sees the connection end.
            Err(Error::Closed(info)) => assert!(
                matches!(info.code, Code::POLICY_VIOLATION | Code::ABNORMAL),
                "{via:?}: {info:?}"
            ),
            Ok(reply) => panic!("{via:?}: got a reply {reply:?} from a closed peer"),
            Err(other) => panic!("{via:?}: expected Closed, got {other:?}"),
        }
    }
    assert_no_panics(panics);
}

#[tokio::test]
async fn a_reply_to_an_unknown_request_is_refused() {
    let panics = watch_panics();
    let (errors_tx, mut errors) = mpsc::unbounded_channel();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .on_error(move |_peer: Option<&Peer>, error: &Error| {
            let _ = errors_tx.send(error.code());
        })
        .start()
        .await
        .expect("server");
    let mut raw = RawPeer::open(server.local_addrs()[0]).await;
    raw.write_frame(&Frame {
        kind: Kind::Reply,
        id: 4242,
        tag: None,
        payload: Bytes::from_static(b"?"),
    })
    .await;
    let error = raw.read_frame().await.expect("error frame");
    assert_eq!((error.kind, error.id), (Kind::Error, 4242));
    assert_eq!(
        Close::parse(Kind::Error, &error.payload).expect("payload").code,
        Code::UNKNOWN_REQUEST
    );
    assert_eq!(
        within("error event", errors.recv()).await,
        Some(Code::UNKNOWN_REQUEST)
    );
    // The connection goes on: a ping is answered.
    raw.write_frame(&Frame::control(Kind::Ping, Bytes::from_static(b"p")))
        .await;
    assert_eq!(raw.read_frame().await.expect("pong").kind, Kind::Pong);
    assert_no_panics(panics);
}

/// Both directions of an exactly-once stream: what each side's application saw.
struct Streams {
    at_server: Arc<Mutex<Vec<u32>>>,
    at_client: Arc<Mutex<Vec<u32>>>,
    progress: watch::Sender<usize>,
}

impl Streams {
    fn new() -> Arc<Streams> {
        Arc::new(Streams {
            at_server: Arc::default(),
            at_client: Arc::default(),
            progress: watch::channel(0).0,
        })
    }

    /// A protocol recording each message's number into `into`.
    fn recorder(
        self: &Arc<Self>,
        server_side: bool,
    ) -> truflux::protocol::FnProtocol<impl Fn(Peer, Message) -> std::future::Ready<()> + Send + Sync> {
        let streams = self.clone();
        from_fn(move |_peer: Peer, message: Message| {
            let number = u32::from_be_bytes(message.payload[..4].try_into().expect("numbered"));
            let into = if server_side {
                &streams.at_server
            } else {
                &streams.at_client
            };
            into.lock().unwrap().push(number);
            streams.progress.send_modify(|n| *n += 1);
            std::future::ready(())
        })
    }

    async fn wait_for(&self, total: usize) {
        let mut progress = self.progress.subscribe();
        let done = tokio::time::timeout(Duration::from_secs(60), progress.wait_for(|n| *n >= total)).await;
        assert!(
            done.is_ok(),
            "stalled: server saw {}, client saw {}",
            self.at_server.lock().unwrap().len(),
            self.at_client.lock().unwrap().len()
        );
    }

    fn assert_exactly_once(&self, count: u32) {
        let expected: Vec<u32> = (0..count).collect();
        assert_eq!(*self.at_server.lock().unwrap(), expected, "client → server");
        assert_eq!(*self.at_client.lock().unwrap(), expected, "server → client");
    }
}

fn numbered(number: u32) -> Message {
    let mut payload = vec![0u8; 64];
    payload[..4].copy_from_slice(&number.to_be_bytes());
    Message {
        id: 1,
        payload: Bytes::from(payload),
    }
}

/// Sends `count` numbered messages to `peer`.
async fn send_numbered(peer: Peer, count: u32) {
    for number in 0..count {
        peer.send(numbered(number)).await.expect("send");
    }
}

#[tokio::test]
async fn connections_cut_at_random_points_lose_and_repeat_nothing() {
    let panics = watch_panics();
    const COUNT: u32 = 1000;
    for (via, seed) in [(Via::Tcp, seed(0x5eed_0001)), (Via::Ws, seed(0x5eed_0002))] {
        let streams = Streams::new();
        let events = Events::default();
        let server = Server::builder()
            .tcp("127.0.0.1:0")
            .ws("127.0.0.1:0", "/t")
            .protocol(streams.recorder(true))
            .on_connect(events.connected())
            .start()
            .await
            .expect("server");
        let relay = Relay::start(target(&server, via)).await;
        let (reconnects_tx, mut reconnects) = mpsc::unbounded_channel();
        let builder = truflux::Client::builder()
            .config(reconnecting())
            .protocol(streams.recorder(false))
            .on_reconnect(move |_peer: &Peer, _attempts: u32| {
                let _ = reconnects_tx.send(());
            });
        let client = open(builder, &relay, via).await.expect("connect");
        let server_side = events.connected_peer().await;
        // From now on each connection through the relay dies after 2–20 KB, ten times.
        relay.cut_randomly(seed, 2_000..20_000, 10);
        relay.cut();
        let sending = tokio::join!(
            send_numbered(client.peer().clone(), COUNT),
            send_numbered(server_side.clone(), COUNT),
            streams.wait_for(2 * COUNT as usize),
        );
        let _ = sending;
        streams.assert_exactly_once(COUNT);
        let mut resumed = 0;
        while reconnects.try_recv().is_ok() {
            resumed += 1;
        }
        assert!(resumed >= 5, "{via:?}: only {resumed} reconnections");
        assert_eq!(server.num_connections(), 1, "{via:?}: one session throughout");
        assert!(
            within("close", client.peer().close(Code::NORMAL, "done"))
                .await
                .code
                == Code::NORMAL
        );
        println!(
            "{via:?}: {resumed} reconnections, {} connections through the relay",
            relay.accepted()
        );
    }
    assert_no_panics(panics);
}

/// Adds a listener for `via` on `addr` ("127.0.0.1:0" for any port).
fn listen(builder: truflux::ServerBuilder, via: Via, addr: &str) -> truflux::ServerBuilder {
    match via {
        Via::Tcp => builder.tcp(addr),
        Via::Ws => builder.ws(addr, "/t"),
    }
}

fn listening_addr(server: &Server, via: Via) -> SocketAddr {
    match via {
        Via::Tcp => server.local_addrs()[0],
        Via::Ws => target(server, via),
    }
}

#[tokio::test]
async fn a_server_restarted_on_a_shared_store_resumes_every_session() {
    let panics = watch_panics();
    const COUNT: u32 = 1000;
    for via in [Via::Tcp, Via::Ws] {
        let streams = Streams::new();
        let store = SessionStore::new();
        let events = Events::default();
        let first = listen(Server::builder(), via, "127.0.0.1:0")
            .session_store(store.clone())
            .protocol(streams.recorder(true))
            .on_connect(events.connected())
            .start()
            .await
            .expect("server");
        let addr = listening_addr(&first, via);
        let builder = truflux::Client::builder()
            .config(reconnecting())
            .protocol(streams.recorder(false));
        let client = match via {
            Via::Tcp => builder.connect(addr).await,
            Via::Ws => builder.connect_ws(&format!("ws://{addr}/t")).await,
        }
        .expect("connect");
        let server_side = events.connected_peer().await;
        let client_sends = tokio::spawn(send_numbered(client.peer().clone(), COUNT));
        let server_sends = tokio::spawn(send_numbered(server_side.clone(), COUNT));
        // Mid-stream: the server goes away and a new one takes over the port and the sessions.
        let mut progress = streams.progress.subscribe();
        within("mid-stream", progress.wait_for(|n| *n >= 200))
            .await
            .expect("progress");
        first.close(Code::GOING_AWAY, "restarting").await;
        let at_restart = *streams.progress.borrow();
        assert!(
            at_restart < 2 * COUNT as usize,
            "{via:?}: the stream had finished"
        );
        assert_eq!(store.len(), 1, "{via:?}: the session waits in the store");
        let second = loop {
            let started = listen(Server::builder(), via, &addr.to_string())
                .session_store(store.clone())
                .protocol(streams.recorder(true))
                .start()
                .await;
            match started {
                Ok(server) => break server,
                // The first server's listener is still being dropped.
                Err(_) => tokio::task::yield_now().await,
            }
        };
        streams.wait_for(2 * COUNT as usize).await;
        within("client sends", client_sends).await.expect("task");
        within("server sends", server_sends).await.expect("task");
        streams.assert_exactly_once(COUNT);
        assert!(
            server_side.server().is_some(),
            "{via:?}: the peer belongs to the new server"
        );
        assert_eq!(second.num_connections(), 1);
        println!("{via:?}: restarted after {at_restart} of {} messages", 2 * COUNT);
        second.close(Code::NORMAL, "done").await;
        assert_eq!(store.len(), 0, "{via:?}: a NORMAL close ends the session");
    }
    assert_no_panics(panics);
}

#[tokio::test]
async fn a_session_past_its_resume_window_fails_cleanly() {
    let panics = watch_panics();
    let (down_tx, mut down) = mpsc::unbounded_channel();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .config(ServerConfig::default().resume_window(Duration::from_millis(100)))
        .on_disconnect(move |_peer: &Peer, info: &CloseInfo| {
            let _ = down_tx.send(info.code);
        })
        .start()
        .await
        .expect("server");
    let relay = Relay::start(server.local_addrs()[0]).await;
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    let client = truflux::Client::builder()
        // Attempts meet a frozen relay until the window is over: let them give up quickly.
        .config(reconnecting().connect_timeout(Duration::from_millis(300)))
        .on_close(move |info: &CloseInfo| {
            let _ = closed_tx.send(info.clone());
        })
        .connect(relay.addr)
        .await
        .expect("connect");
    relay.freeze();
    // Cut the connection, and hold every reconnection silent until the window is over.
    relay.cut();
    assert_eq!(
        within("session end at the server", down.recv()).await,
        Some(Code::ABNORMAL)
    );
    relay.thaw();
    let info = within("client told", closed.recv()).await.expect("closed");
    assert_eq!(info.code, Code::RESUME_FAILED, "{info:?}");
    assert!(client.peer().is_closed());
    assert!(matches!(
        client.peer().send(numbered(0)).await,
        Err(Error::Closed(_))
    ));
    assert_no_panics(panics);
}

#[tokio::test]
async fn a_deliberate_close_by_the_server_is_not_followed_by_a_reconnection() {
    let panics = watch_panics();
    let events = Events::default();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .on_connect(events.connected())
        .start()
        .await
        .expect("server");
    let relay = Relay::start(server.local_addrs()[0]).await;
    let lost = Arc::new(AtomicUsize::new(0));
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    let client = truflux::Client::builder()
        .config(reconnecting())
        .on_disconnect({
            let lost = lost.clone();
            move |_info: &CloseInfo| {
                lost.fetch_add(1, Ordering::SeqCst);
            }
        })
        .on_close(move |info: &CloseInfo| {
            let _ = closed_tx.send(info.clone());
        })
        .connect(relay.addr)
        .await
        .expect("connect");
    let peer = events.connected_peer().await;
    peer.close(Code::NORMAL, "kicked").await;
    let info = within("client end", closed.recv()).await.expect("closed");
    assert_eq!((info.code, info.reason.as_str()), (Code::NORMAL, "kicked"));
    assert_eq!(lost.load(Ordering::SeqCst), 0);
    assert_eq!(relay.accepted(), 1);
    assert!(client.peer().is_closed());

    // The client's own close: the server's session ends, nothing reconnects.
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    let client = truflux::Client::builder()
        .config(reconnecting())
        .on_disconnect({
            let lost = lost.clone();
            move |_info: &CloseInfo| {
                lost.fetch_add(1, Ordering::SeqCst);
            }
        })
        .on_close(move |info: &CloseInfo| {
            let _ = closed_tx.send(info.code);
        })
        .connect(relay.addr)
        .await
        .expect("connect");
    let peer = events.connected_peer().await;
    assert_eq!(client.peer().close(Code::NORMAL, "bye").await.code, Code::NORMAL);
    assert_eq!(within("client end", closed.recv()).await, Some(Code::NORMAL));
    assert_eq!(within("server end", peer.closed()).await.code, Code::NORMAL);
    assert_eq!(lost.load(Ordering::SeqCst), 0);
    assert_eq!(relay.accepted(), 2);
    assert_no_panics(panics);
}

#[tokio::test]
async fn secure_sessions_are_secure_again_after_each_resume_and_lose_nothing() {
    let panics = watch_panics();
    const COUNT: u32 = 300;
    let required =
        || ConnectionConfig::default().security(truflux::security::SecurityConfig::default().required(true));
    for (via, seed) in [(Via::Tcp, seed(0x5ec0_0001)), (Via::Ws, seed(0x5ec0_0002))] {
        let streams = Streams::new();
        let events = Events::default();
        let (errors_tx, mut errors) = mpsc::unbounded_channel();
        let server = Server::builder()
            .tcp("127.0.0.1:0")
            .ws("127.0.0.1:0", "/t")
            // A plain message would be refused with SECURITY_REQUIRED and never recorded.
            .config(ServerConfig::default().connection(required()))
            .protocol(streams.recorder(true))
            .on_connect(events.connected())
            .on_error(move |_peer: Option<&Peer>, error: &Error| {
                let _ = errors_tx.send(error.code());
            })
            .start()
            .await
            .expect("server");
        let relay = Relay::start(target(&server, via)).await;
        let builder = truflux::Client::builder()
            .config(reconnecting().connection(required()))
            .protocol(streams.recorder(false));
        let client = open(builder, &relay, via).await.expect("connect");
        let server_side = events.connected_peer().await;
        relay.cut_randomly(seed, 3_000..12_000, 6);
        relay.cut();
        tokio::join!(
            send_numbered(client.peer().clone(), COUNT),
            send_numbered(server_side.clone(), COUNT),
            streams.wait_for(2 * COUNT as usize),
        );
        streams.assert_exactly_once(COUNT);
        assert!(
            client.peer().is_secure() && client.peer().is_peer_secure(),
            "{via:?}"
        );
        assert!(server_side.is_secure() && server_side.is_peer_secure(), "{via:?}");
        while let Ok(code) = errors.try_recv() {
            assert_ne!(
                code,
                Code::SECURITY_REQUIRED,
                "{via:?}: a plain message reached the server"
            );
        }
        assert!(relay.accepted() >= 5, "{via:?}: {} connections", relay.accepted());
    }
    assert_no_panics(panics);
}

/// Opens a raw connection with `extensions` in the hello; returns the peer and the server's
/// hello.
async fn raw_with(addr: SocketAddr, extensions: Vec<(u16, Bytes)>) -> (RawPeer, Frame) {
    let mut raw = RawPeer::connect(addr).await;
    let hello = Hello {
        extensions,
        ..Hello::current()
    };
    raw.write_frame(&hello.to_frame()).await;
    let answer = raw.read_frame().await.expect("server answer");
    (raw, answer)
}

fn close_code(frame: &Frame) -> Code {
    assert_eq!(frame.kind, Kind::Close, "expected a close, got {frame:?}");
    Close::parse(Kind::Close, &frame.payload)
        .expect("close payload")
        .code
}

#[tokio::test]
async fn hostile_resume_and_ack_frames_are_refused_with_documented_codes() {
    let panics = watch_panics();
    let (errors_tx, mut errors) = mpsc::unbounded_channel();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .on_error(move |_peer: Option<&Peer>, error: &Error| {
            let _ = errors_tx.send(error.code());
        })
        .start()
        .await
        .expect("server");
    let addr = server.local_addrs()[0];
    // A bystander that must keep being served.
    let bystander = truflux::Client::builder().connect(addr).await.expect("bystander");

    // Resuming a session nobody has, and a malformed resume value.
    let (_raw, answer) = raw_with(addr, vec![(3, Bytes::from(vec![7u8; 40]))]).await;
    assert_eq!(close_code(&answer), Code::RESUME_FAILED);
    // A resume value of the wrong length is a malformed hello (PROTOCOL.md §4.1).
    let (_raw, answer) = raw_with(addr, vec![(3, Bytes::from_static(b"short"))]).await;
    assert_eq!(close_code(&answer), Code::PROTOCOL_ERROR);

    // An acknowledgement outside a resumable session.
    let (mut raw, answer) = raw_with(addr, vec![]).await;
    assert_eq!(answer.kind, Kind::Hello);
    raw.write_frame(&Frame::control(
        Kind::Ack,
        Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1]),
    ))
    .await;
    assert_eq!(raw.expect_close().await.code, Code::PROTOCOL_ERROR);

    // In a resumable session: acknowledging frames never sent, and a malformed acknowledgement.
    for payload in [&[0u8, 0, 0, 0, 0, 0, 0, 9][..], &[1, 2, 3][..]] {
        let (mut raw, answer) = raw_with(addr, vec![(2, Bytes::new())]).await;
        let token = answer
            .kind
            .eq(&Kind::Hello)
            .then(|| Hello::parse(&answer.payload).expect("hello"))
            .and_then(|hello| hello.extensions.into_iter().find(|(ty, _)| *ty == 2))
            .expect("a session token");
        assert_eq!(token.1.len(), 32);
        raw.write_frame(&Frame::control(Kind::Ack, Bytes::copy_from_slice(payload)))
            .await;
        assert_eq!(raw.expect_close().await.code, Code::PROTOCOL_ERROR);
        // The session ended with the protocol error: it cannot be resumed.
        let mut resume = token.1.to_vec();
        resume.extend_from_slice(&0u64.to_be_bytes());
        let (_raw, answer) = raw_with(addr, vec![(3, Bytes::from(resume))]).await;
        assert_eq!(close_code(&answer), Code::RESUME_FAILED);
    }

    // A request too short to hold its request id.
    let (mut raw, _) = raw_with(addr, vec![]).await;
    raw.write_frame(&Frame {
        kind: Kind::Request,
        id: 1,
        tag: None,
        payload: Bytes::from_static(b"ab"),
    })
    .await;
    assert_eq!(raw.expect_close().await.code, Code::PROTOCOL_ERROR);

    let mut seen = Vec::new();
    while let Ok(code) = errors.try_recv() {
        seen.push(code);
    }
    assert!(
        seen.contains(&Code::RESUME_FAILED) && seen.contains(&Code::PROTOCOL_ERROR),
        "{seen:?}"
    );
    assert!(!bystander.peer().is_closed());
    assert_eq!(server.num_connections(), 1, "only the bystander is left");
    assert_no_panics(panics);
}

#[tokio::test]
async fn room_membership_survives_a_resume_and_ends_with_the_session() {
    let events = Events::default();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .on_connect(events.connected())
        .start()
        .await
        .expect("server");
    let relay = Relay::start(server.local_addrs()[0]).await;
    let (tx, mut received) = mpsc::unbounded_channel();
    let client = truflux::Client::builder()
        .config(reconnecting())
        .protocol(from_fn(move |_peer, message: Message| {
            let _ = tx.send(message.payload);
            std::future::ready(())
        }))
        .connect(relay.addr)
        .await
        .expect("client");
    let peer = events.connected_peer().await;
    peer.join("room").await.expect("join");
    relay.cut();
    // A room message queued while the connection is down arrives after the resume.
    within("the cut to be noticed", async {
        while peer.is_connected() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(peer.rooms(), ["room"], "membership belongs to the session");
    server
        .to("room")
        .broadcast_raw(1, &b"after the cut"[..])
        .expect("broadcast");
    assert_eq!(
        within("the room message", received.recv())
            .await
            .expect("a message"),
        &b"after the cut"[..]
    );
    assert!(
        peer.is_connected() && relay.accepted() >= 2,
        "resumed on a new connection"
    );
    client.peer().close(Code::NORMAL, "done").await;
    within("the session to leave its rooms", async {
        while !server.local_rooms().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_client_that_renews_starts_a_new_session_when_the_restarted_server_knows_none() {
    let (tx, mut received) = mpsc::unbounded_channel();
    let recorder = move || {
        let tx = tx.clone();
        from_fn(move |_peer, message: Message| {
            let _ = tx.send(message.payload);
            std::future::ready(())
        })
    };
    let first = Server::builder()
        .tcp("127.0.0.1:0")
        .protocol(recorder())
        .start()
        .await
        .expect("server");
    let addr = first.local_addrs()[0];
    let renewed = Arc::new(AtomicUsize::new(0));
    let counter = renewed.clone();
    let config = ClientConfig::default().reconnect(Some(
        Reconnect::default()
            .initial_delay(Duration::from_millis(5))
            .max_delay(Duration::from_millis(50))
            .max_attempts(None)
            .renew(true),
    ));
    let client = truflux::Client::builder()
        .config(config)
        .on_renew(move |_peer| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .connect(addr)
        .await
        .expect("client");
    client.peer().send_raw(1, &b"before"[..]).await.expect("send");
    assert_eq!(
        within("before", received.recv()).await.expect("a message"),
        &b"before"[..]
    );
    // A new process would know no session: a server with its own, empty store.
    first.close(Code::GOING_AWAY, "restarting").await;
    drop(first);
    // Sent once the client knows its connection is gone: what a renew loses is what the old
    // connection wrote and the old server never acknowledged (`Reconnect::renew`).
    within("the client to see the close", async {
        while client.peer().is_connected() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let second = loop {
        match Server::builder()
            .tcp(addr.to_string())
            .protocol(recorder())
            .start()
            .await
        {
            Ok(server) => break server,
            Err(_) => tokio::task::yield_now().await,
        }
    };
    client
        .peer()
        .send_raw(1, &b"after"[..])
        .await
        .expect("queued while reconnecting");
    assert_eq!(
        within("after", received.recv()).await.expect("a message"),
        &b"after"[..]
    );
    assert_eq!(renewed.load(Ordering::SeqCst), 1, "renewed once");
    assert!(
        !client.peer().is_closed() && client.peer().is_resumable(),
        "a new resumable session"
    );
    assert_eq!(second.num_connections(), 1);
}

/// A client that records what it receives and how it closed.
async fn recording_client(
    addr: SocketAddr,
) -> (
    truflux::Client,
    mpsc::UnboundedReceiver<Bytes>,
    mpsc::UnboundedReceiver<CloseInfo>,
) {
    let (got_tx, got) = mpsc::unbounded_channel();
    let (close_tx, closed) = mpsc::unbounded_channel();
    let client = truflux::Client::builder()
        .protocol(from_fn(move |_, message: Message| {
            let _ = got_tx.send(message.payload);
            std::future::ready(())
        }))
        .on_close(move |info| {
            let _ = close_tx.send(info.clone());
        })
        .connect(addr)
        .await
        .unwrap();
    (client, got, closed)
}

async fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_err()
}

#[tokio::test]
async fn shutdown_writes_what_is_queued_closes_with_going_away_and_frees_the_port() {
    let panics = watch_panics();
    let server = Server::builder().tcp("127.0.0.1:0").start().await.unwrap();
    let addr = server.local_addrs()[0];
    let (_client, mut got, mut closed) = recording_client(addr).await;
    let peer = server.peers().pop().expect("the client's peer");
    for i in 0..100u32 {
        peer.send_raw(1, Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    within("shutdown", server.shutdown()).await;
    assert!(
        refused(addr).await,
        "the listener is closed when shutdown returns"
    );
    for i in 0..100u32 {
        let payload = within("a queued message", got.recv()).await.unwrap();
        assert_eq!(payload, Bytes::from(i.to_be_bytes().to_vec()));
    }
    assert_eq!(
        within("the close", closed.recv()).await.unwrap().code,
        Code::GOING_AWAY
    );
    assert_eq!(server.num_connections(), 0);
    assert_no_panics(panics);
}

#[tokio::test]
async fn a_peer_that_never_answers_the_close_is_cut_at_the_shutdown_timeout() {
    let config = ServerConfig::default().shutdown_timeout(Duration::from_millis(200));
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .config(config)
        .start()
        .await
        .unwrap();
    let mut raw = RawPeer::open(server.local_addrs()[0]).await;
    within("shutdown bounded by its timeout", server.shutdown()).await;
    // The close frame came, and then the end of the stream without waiting for our answer.
    let close = raw.read_frame().await.expect("a close frame");
    assert_eq!(close_code(&close), Code::GOING_AWAY);
    assert!(raw.read_frame().await.is_none());
}

#[tokio::test]
async fn dropping_the_last_server_handle_shuts_the_server_down() {
    let (handler_saw_tx, mut handler_saw) = mpsc::unbounded_channel();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .protocol(from_fn(move |peer: Peer, _| {
            let _ = handler_saw_tx.send(peer.server().is_some());
            std::future::ready(())
        }))
        .start()
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    let (client, _got, mut closed) = recording_client(addr).await;
    client.peer().send_raw(1, &b"hello"[..]).await.unwrap();
    assert!(
        within("handler", handler_saw.recv()).await.unwrap(),
        "held: a handle"
    );
    drop(server);
    assert_eq!(
        within("the close", closed.recv()).await.unwrap().code,
        Code::GOING_AWAY
    );
    within("the port freed", async {
        while !refused(addr).await {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_client_closes_when_its_last_clone_is_dropped_and_not_before() {
    let events = Events::default();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .protocol(from_fn(|peer: Peer, message: Message| async move {
            let _ = peer.send(message).await;
        }))
        .on_disconnect(events.disconnected())
        .start()
        .await
        .unwrap();
    let (client, mut got, _closed) = recording_client(server.local_addrs()[0]).await;
    let clone = client.clone();
    drop(client);
    clone.peer().send_raw(1, &b"still open"[..]).await.unwrap();
    assert_eq!(within("the echo", got.recv()).await.unwrap(), &b"still open"[..]);
    let kept_peer = clone.peer().clone();
    drop(clone);
    let (_, info) = events.disconnect().await;
    assert_eq!(info.code, Code::NORMAL, "the last clone closed it");
    assert!(kept_peer.is_closed(), "a Peer clone does not keep it open");
}
