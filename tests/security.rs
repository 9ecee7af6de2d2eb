//! In-band security end to end: key exchanges and toggles over TCP and WebSocket, pinned server
//! keys, key rotation, and a man in the middle on loopback that tampers with records,
//! handshakes and openings. (Known-answer vectors and the record format live next to the code,
//! in `src/security`.)

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use common::{within, Events};
use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{Encoder, FramedRead};
use truflux::frame::control::Close;
use truflux::frame::{Frame, FrameCodec, Kind};
use truflux::security::{RekeyPolicy, SecurityConfig, SecurityEvent, Suite};
use truflux::{
    protocol, Client, ClientConfig, Code, ConnectionConfig, Error, Message, Peer, Server, ServerConfig,
};

// ---- end to end ---------------------------------------------------------------------------------

/// A server that relays every message to every other peer, with the given security settings.
async fn relay_server(security: SecurityConfig, events: &Events) -> Server {
    let security_events = events.clone();
    let config = ServerConfig::default().connection(ConnectionConfig::default().security(security));
    Server::builder()
        .tcp("127.0.0.1:0")
        .ws("127.0.0.1:0", "/s")
        .config(config)
        .protocol(protocol::from_fn(|peer, message| async move {
            if let Some(server) = peer.server() {
                let _ = server.broadcast(message, &[peer.id()]);
            }
        }))
        .on_connect(events.connected())
        .on_disconnect(events.disconnected())
        .on_error(events.error())
        .on_security(move |peer, event| security_events.security(peer, event))
        .start()
        .await
        .unwrap()
}

trait SecurityEvents {
    fn security(&self, peer: &Peer, event: &SecurityEvent);
}

impl SecurityEvents for Events {
    fn security(&self, peer: &Peer, event: &SecurityEvent) {
        // Reported as an error event with a recognisable text, so tests can wait for it.
        let code = match event {
            SecurityEvent::FailSecure { code, .. } => *code,
            _ => Code::NORMAL,
        };
        let error = Error::FailSecure {
            code,
            reason: format!("event {event:?}"),
        };
        self.error()(Some(peer), &error);
    }
}

type Received = mpsc::UnboundedReceiver<(Message, bool)>;
type SecurityLog = Arc<Mutex<Vec<SecurityEvent>>>;

/// A client builder whose messages arrive in a channel, each with the mode it arrived in, and
/// whose security events are logged.
fn collecting_builder(security: SecurityConfig) -> (truflux::ClientBuilder, Received, SecurityLog) {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let builder = Client::builder()
        .config(ClientConfig::default().connection(ConnectionConfig::default().security(security)))
        .protocol(protocol::from_fn(move |peer: Peer, message| {
            let _ = tx.send((message, peer.is_peer_secure()));
            std::future::ready(())
        }))
        .on_security(move |event| log.lock().unwrap().push(event.clone()));
    (builder, rx, seen)
}

/// A collecting client over TCP or WebSocket.
async fn client(
    server: &Server,
    ws: bool,
    security: SecurityConfig,
) -> Result<(Client, Received, SecurityLog), Error> {
    let (builder, rx, seen) = collecting_builder(security);
    let client = if ws {
        builder.connect_ws(&server.ws_urls()[0]).await?
    } else {
        builder.connect(server.local_addrs()[0]).await?
    };
    Ok((client, rx, seen))
}

#[tokio::test]
async fn both_suites_handshake_and_protect_both_directions_over_tcp_and_ws() {
    let panics = common::watch_panics();
    for suite in Suite::ALL {
        for ws in [false, true] {
            let events = Events::default();
            let server = relay_server(SecurityConfig::default().suites([suite]), &events).await;
            let (a, mut a_rx, a_events) = client(&server, ws, SecurityConfig::default()).await.unwrap();
            let (b, mut b_rx, _) = client(&server, !ws, SecurityConfig::default()).await.unwrap();
            assert_eq!(a.peer().handshake().await.unwrap(), suite);
            a.peer()
                .set_own_security(true)
                .await
                .unwrap()
                .set_peer_security(true)
                .await
                .unwrap();
            assert!(a.peer().is_secure());
            assert_eq!(a.peer().suite(), Some(suite));
            assert!(a_events
                .lock()
                .unwrap()
                .contains(&SecurityEvent::Handshaked { suite }));

            a.peer().send_raw(1, &b"secret hello"[..]).await.unwrap();
            let (message, _) = within("relayed", b_rx.recv()).await.unwrap();
            assert_eq!(message.payload, &b"secret hello"[..]);
            // The server now encrypts what it sends to `a`: b's message arrives protected.
            b.peer().send_raw(2, &b"to a"[..]).await.unwrap();
            let (message, protected) = within("relayed back", a_rx.recv()).await.unwrap();
            assert_eq!(
                (message.id, &message.payload[..], protected),
                (2, &b"to a"[..], true),
                "{suite} ws={ws}"
            );
        }
    }
    common::assert_no_panics(panics);
}

#[tokio::test]
async fn toggling_both_directions_under_a_stream_keeps_order_and_mode() {
    for ws in [false, true] {
        let events = Events::default();
        let (tx, mut server_rx) = mpsc::unbounded_channel();
        let server = Server::builder()
            .tcp("127.0.0.1:0")
            .ws("127.0.0.1:0", "/s")
            .protocol(protocol::from_fn(move |peer: Peer, message| {
                let _ = tx.send((message, peer.is_peer_secure()));
                std::future::ready(())
            }))
            .on_connect(events.connected())
            .start()
            .await
            .unwrap();
        let (client, mut client_rx, _) = client(&server, ws, SecurityConfig::default()).await.unwrap();
        let server_side = events.connected_peer().await;

        const N: u32 = 600;
        // Each message carries its number and the mode it must arrive in.
        async fn stream(peer: Peer) {
            let mut secure = false;
            for i in 0..N {
                if i % 37 == 0 {
                    secure = !secure;
                    peer.set_own_security(secure).await.unwrap();
                }
                peer.send_raw(i, Bytes::from(vec![u8::from(secure)]))
                    .await
                    .unwrap();
            }
        }
        let up = tokio::spawn(stream(client.peer().clone()));
        let down = tokio::spawn(stream(server_side));
        for rx in [&mut server_rx, &mut client_rx] {
            for i in 0..N {
                let (message, arrived_secure) = within("a toggled message", rx.recv()).await.unwrap();
                assert_eq!(message.id, i, "in order, once");
                assert_eq!(
                    arrived_secure,
                    message.payload[0] == 1,
                    "message {i} in the mode it was sent in (ws={ws})"
                );
            }
        }
        up.await.unwrap();
        down.await.unwrap();
    }
}

#[tokio::test]
async fn no_common_suite_closes_with_security_required_unless_both_sides_fall_back() {
    let only_dh = SecurityConfig::default().suites([Suite::DhFfdhe2048Aes256CbcHmacSha256]);
    let only_ecdh = SecurityConfig::default().suites([Suite::EcdhP256Aes128Gcm]);
    // No fallback configured: the failed negotiation ends the connection.
    let events = Events::default();
    let server = relay_server(only_dh.clone(), &events).await;
    let (a, _a_rx, a_events) = client(&server, false, only_ecdh.clone()).await.unwrap();
    match a.peer().set_own_security(true).await {
        Err(Error::FailSecure { code, .. }) => assert_eq!(code, Code::NO_COMMON_SUITE),
        other => panic!("expected fail_secure, got {other:?}"),
    }
    assert_eq!(
        within("the close", a.peer().closed()).await.code,
        Code::SECURITY_REQUIRED
    );
    assert!(matches!(
        a_events.lock().unwrap()[..],
        [SecurityEvent::FailSecure {
            code: Code::NO_COMMON_SUITE,
            ..
        }]
    ));
    // Both sides opted in: reported, and the connection goes on in plain.
    let events = Events::default();
    let server = relay_server(only_dh.fallback_plain(true), &events).await;
    let (a, _a_rx, _) = client(&server, false, only_ecdh.fallback_plain(true))
        .await
        .unwrap();
    let (_b, mut b_rx, _) = client(&server, false, SecurityConfig::default()).await.unwrap();
    assert!(matches!(
        a.peer().set_own_security(true).await,
        Err(Error::FailSecure { .. })
    ));
    let (text, code) = events.error_event().await;
    assert_eq!(code, Code::NO_COMMON_SUITE, "{text}");
    assert!(!a.peer().is_secure());
    a.peer().send_raw(5, &b"plain still works"[..]).await.unwrap();
    assert_eq!(
        within("plain relay", b_rx.recv()).await.unwrap().0.payload,
        &b"plain still works"[..]
    );
}

#[tokio::test]
async fn a_server_that_requires_security_refuses_plain_openings_and_closes_when_no_suite_is_common() {
    let events = Events::default();
    let required = SecurityConfig::default()
        .suites([Suite::DhFfdhe2048Aes256CbcHmacSha256])
        .required(true);
    let server = relay_server(required, &events).await;
    let plain = client(
        &server,
        false,
        SecurityConfig::default().opening(truflux::security::Opening::Plain),
    )
    .await;
    assert_eq!(plain.err().map(|e| e.code()), Some(Code::SECURITY_REQUIRED));
    let keyed = client(
        &server,
        false,
        SecurityConfig::default()
            .suites([Suite::EcdhP256Aes128Gcm])
            .opening(truflux::security::Opening::Keyed),
    )
    .await;
    assert_eq!(keyed.err().map(|e| e.code()), Some(Code::SECURITY_REQUIRED));
}

#[tokio::test]
async fn required_security_on_both_sides_is_in_place_before_connect_returns() {
    let events = Events::default();
    let server = relay_server(SecurityConfig::default().required(true), &events).await;
    for ws in [false, true] {
        let (a, mut a_rx, _) = client(&server, ws, SecurityConfig::default().required(true))
            .await
            .unwrap();
        assert!(a.peer().is_secure() && a.peer().is_peer_secure());
        let (b, _b_rx, _) = client(&server, ws, SecurityConfig::default().required(true))
            .await
            .unwrap();
        b.peer().send_raw(3, &b"x"[..]).await.unwrap();
        let (message, protected) = within("relayed", a_rx.recv()).await.unwrap();
        assert_eq!((message.id, protected), (3, true));
        assert!(
            matches!(a.peer().set_own_security(false).await, Err(Error::Security(_))),
            "never off"
        );
    }
    // A client that does not ask for security still gets both directions secure from the
    // opening: the server requires it.
    let (c, mut c_rx, _) = client(
        &server,
        false,
        SecurityConfig::default().opening(truflux::security::Opening::Keyed),
    )
    .await
    .unwrap();
    let (d, _d_rx, _) = client(&server, false, SecurityConfig::default().required(true))
        .await
        .unwrap();
    d.peer().send_raw(4, &b"y"[..]).await.unwrap();
    let (message, protected) = within("relayed", c_rx.recv()).await.unwrap();
    assert_eq!((message.id, protected), (4, true));
    within("the client's own direction", async {
        while !c.peer().is_secure() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_pinned_server_key_authenticates_the_server_and_any_other_is_untrusted() {
    let events = Events::default();
    let key = truflux::security::ServerKey::generate();
    let server = relay_server(SecurityConfig::default().server_key(key.clone()), &events).await;
    let (good, _rx, _) = client(&server, false, SecurityConfig::default().pin(key.fingerprint()))
        .await
        .unwrap();
    assert!(good.peer().server_authenticated());
    assert_eq!(good.peer().server_key(), Some(key.fingerprint()));
    let other = truflux::security::ServerKey::generate();
    let wrong = client(&server, false, SecurityConfig::default().pin(other.fingerprint())).await;
    assert_eq!(wrong.err().map(|e| e.code()), Some(Code::UNTRUSTED_SERVER));
    // Without a pin the exchange is anonymous, and the API says so.
    let (anonymous, _rx, _) = client(&server, false, SecurityConfig::default()).await.unwrap();
    anonymous.peer().handshake().await.unwrap();
    assert!(!anonymous.peer().server_authenticated());
    assert_eq!(anonymous.peer().server_key(), Some(key.fingerprint()));
    // A server without a key cannot satisfy a pin.
    let keyless = relay_server(SecurityConfig::default(), &Events::default()).await;
    let pinned = client(&keyless, true, SecurityConfig::default().pin(key.fingerprint())).await;
    assert_eq!(pinned.err().map(|e| e.code()), Some(Code::UNTRUSTED_SERVER));
}

#[tokio::test]
async fn keys_rotate_without_losing_or_reordering_messages() {
    let rekey = SecurityConfig::default().rekey(RekeyPolicy::default().records(8).bytes(4096));
    for suite in Suite::ALL {
        let events = Events::default();
        let server = relay_server(rekey.clone().suites([suite]), &events).await;
        let tap = Tap::start(server.local_addrs()[0], |_, frame| vec![frame]).await;
        let (a, mut a_rx, _) = client_via(tap.addr, rekey.clone()).await;
        let (b, mut b_rx, _) = client(&server, true, rekey.clone()).await.unwrap();
        a.peer()
            .set_own_security(true)
            .await
            .unwrap()
            .set_peer_security(true)
            .await
            .unwrap();
        b.peer().set_own_security(true).await.unwrap();
        // Asking is not waiting: the server turns its direction on when it reads the request.
        within("the server's direction to a to turn secure", async {
            while !a.peer().is_peer_secure() {
                tokio::task::yield_now().await;
            }
        })
        .await;
        for i in 0..300u32 {
            a.peer().send_raw(i, Bytes::from(vec![7u8; 100])).await.unwrap();
            b.peer().send_raw(i, Bytes::from(vec![8u8; 100])).await.unwrap();
        }
        for i in 0..300u32 {
            assert_eq!(within("b gets a's", b_rx.recv()).await.unwrap().0.id, i);
            let (message, protected) = within("a gets b's", a_rx.recv()).await.unwrap();
            assert_eq!((message.id, protected), (i, true));
        }
        // Protected security records from the client: SEC_ON plus a REKEY every 8 records.
        let security_records = tap.count(Direction::Up, |f| f.kind == Kind::Security && f.tag.is_some());
        let up_total = tap.count(Direction::Up, |_| true);
        assert!(
            security_records >= 300 / 8,
            "{suite}: only {security_records} security records of {up_total}: keys did not rotate"
        );
    }
}

#[tokio::test]
async fn a_broadcast_reaches_plain_and_secure_peers_each_in_its_mode() {
    let events = Events::default();
    let server = relay_server(SecurityConfig::default(), &events).await;
    let tap = Tap::start(server.local_addrs()[0], |_, frame| vec![frame]).await;
    let (secure, mut secure_rx, _) = client_via(tap.addr, SecurityConfig::default()).await;
    secure.peer().set_peer_security(true).await.unwrap();
    let (_plain, mut plain_rx, _) = client(&server, false, SecurityConfig::default()).await.unwrap();
    within("the server's direction to turn secure", async {
        while !server.peers().iter().any(|p| p.is_secure()) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let report = server.broadcast_raw(42, &b"to everyone"[..], &[]).unwrap();
    assert_eq!(report.queued, 2);
    let (s, s_protected) = within("secure peer", secure_rx.recv()).await.unwrap();
    let (p, p_protected) = within("plain peer", plain_rx.recv()).await.unwrap();
    assert_eq!(
        (s.payload.clone(), s_protected),
        (Bytes::from_static(b"to everyone"), true)
    );
    assert_eq!(
        (p.payload.clone(), p_protected),
        (Bytes::from_static(b"to everyone"), false)
    );
    assert!(
        tap.count(Direction::Down, |f| f.kind == Kind::Message && f.tag.is_some()) >= 1,
        "sealed on the wire"
    );
}

// ---- the man in the middle ---------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

type Rewrite = Box<dyn FnMut(Direction, Frame) -> Vec<Frame> + Send>;

/// A relay on loopback that parses frames both ways and lets a test rewrite them.
struct Tap {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(Direction, Frame)>>>,
}

impl Tap {
    async fn start(
        upstream: SocketAddr,
        rewrite: impl FnMut(Direction, Frame) -> Vec<Frame> + Send + 'static,
    ) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let rewrite: Arc<Mutex<Rewrite>> = Arc::new(Mutex::new(Box::new(rewrite)));
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let outbound = TcpStream::connect(upstream).await.unwrap();
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                tokio::spawn(pump(
                    Direction::Up,
                    in_read,
                    out_write,
                    rewrite.clone(),
                    log.clone(),
                ));
                tokio::spawn(pump(
                    Direction::Down,
                    out_read,
                    in_write,
                    rewrite.clone(),
                    log.clone(),
                ));
            }
        });
        Tap { addr, seen }
    }

    fn count(&self, direction: Direction, what: impl Fn(&Frame) -> bool) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, f)| *d == direction && what(f))
            .count()
    }
}

async fn pump(
    direction: Direction,
    read: tokio::net::tcp::OwnedReadHalf,
    mut write: tokio::net::tcp::OwnedWriteHalf,
    rewrite: Arc<Mutex<Rewrite>>,
    seen: Arc<Mutex<Vec<(Direction, Frame)>>>,
) {
    let mut frames = FramedRead::new(read, FrameCodec::new(u32::MAX));
    while let Some(Ok(frame)) = frames.next().await {
        seen.lock().unwrap().push((direction, frame.clone()));
        let out = (rewrite.lock().unwrap())(direction, frame);
        let mut bytes = BytesMut::new();
        for frame in &out {
            FrameCodec::new(u32::MAX).encode(frame, &mut bytes).unwrap();
        }
        if tokio::io::AsyncWriteExt::write_all(&mut write, &bytes)
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut write).await;
}

async fn client_via(addr: SocketAddr, security: SecurityConfig) -> (Client, Received, SecurityLog) {
    let (builder, rx, seen) = collecting_builder(security);
    (builder.connect(addr).await.unwrap(), rx, seen)
}

/// What the man in the middle does to the client's 5th protected message (index 4).
#[derive(Clone, Copy, Debug)]
enum Attack {
    FlipBit,
    Replay,
    Swap,
    Truncate,
    InjectPlaintext,
}

/// Runs one record attack for one suite. Returns the message numbers the server's application
/// received and how the server ended the connection.
async fn record_attack(suite: Suite, attack: Attack) -> (Vec<u32>, Code) {
    let (tx, mut received) = mpsc::unbounded_channel();
    let events = Events::default();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .config(
            ServerConfig::default()
                .connection(ConnectionConfig::default().security(SecurityConfig::default().suites([suite]))),
        )
        .protocol(protocol::from_fn(move |_peer, message: Message| {
            let _ = tx.send(message.id);
            std::future::ready(())
        }))
        .on_disconnect(events.disconnected())
        .start()
        .await
        .unwrap();
    let mut protected_messages = 0;
    let mut held: Option<Frame> = None;
    let tap = Tap::start(server.local_addrs()[0], move |direction, mut frame| {
        if direction != Direction::Up || frame.kind != Kind::Message || frame.tag.is_none() {
            return vec![frame];
        }
        let index = protected_messages;
        protected_messages += 1;
        match (attack, index) {
            (Attack::FlipBit, 4) => {
                let mut payload = frame.payload.to_vec();
                payload[0] ^= 0x01;
                frame.payload = payload.into();
                vec![frame]
            }
            (Attack::Replay, 4) => vec![frame.clone(), frame],
            (Attack::Swap, 4) => {
                held = Some(frame);
                vec![]
            }
            (Attack::Swap, 5) => vec![frame, held.take().unwrap()],
            (Attack::Truncate, 4) => {
                frame.payload = frame.payload.slice(..frame.payload.len() - 1);
                vec![frame]
            }
            (Attack::InjectPlaintext, 4) => vec![Frame::message(999, Bytes::from_static(b"forged")), frame],
            _ => vec![frame],
        }
    })
    .await;
    let (client, _rx, _) = client_via(tap.addr, SecurityConfig::default().suites([suite])).await;
    client.peer().set_own_security(true).await.unwrap();
    for i in 0..10u32 {
        if client
            .peer()
            .send_raw(i, Bytes::from(format!("message {i}")))
            .await
            .is_err()
        {
            break;
        }
    }
    let (_, info) = events.disconnect().await;
    let mut ids = Vec::new();
    while let Ok(id) = received.try_recv() {
        ids.push(id);
    }
    (ids, info.code)
}

#[tokio::test]
async fn tampered_records_close_the_connection_and_nothing_after_them_is_delivered() {
    let panics = common::watch_panics();
    for suite in Suite::ALL {
        for (attack, delivered, code) in [
            (Attack::FlipBit, vec![0, 1, 2, 3], Code::BAD_RECORD),
            (Attack::Truncate, vec![0, 1, 2, 3], Code::BAD_RECORD),
            // The original record 4 is delivered; its copy is not.
            (Attack::Replay, vec![0, 1, 2, 3, 4], Code::BAD_RECORD),
            (Attack::Swap, vec![0, 1, 2, 3], Code::BAD_RECORD),
            (
                Attack::InjectPlaintext,
                vec![0, 1, 2, 3],
                Code::UNEXPECTED_PLAINTEXT,
            ),
        ] {
            let (ids, got) = within("the attack to be detected", record_attack(suite, attack)).await;
            assert_eq!(got, code, "{suite} {attack:?}");
            assert_eq!(
                ids, delivered,
                "{suite} {attack:?}: delivered after the tampered record"
            );
        }
    }
    common::assert_no_panics(panics);
}

/// Rewrites the client's offer (security frame type 1, KEX_INIT; PROTOCOL.md §9).
fn rewrite_offer(
    edit: impl Fn(&mut Vec<u8>) + Send + 'static,
) -> impl FnMut(Direction, Frame) -> Vec<Frame> + Send + 'static {
    move |direction, mut frame| {
        if direction == Direction::Up && frame.kind == Kind::Security && frame.id == 1 && frame.tag.is_none()
        {
            let mut payload = frame.payload.to_vec();
            edit(&mut payload);
            frame.payload = payload.into();
        }
        vec![frame]
    }
}

async fn handshake_through(
    server: &Server,
    rewrite: impl FnMut(Direction, Frame) -> Vec<Frame> + Send + 'static,
    client: SecurityConfig,
) -> (Result<Suite, Error>, Code) {
    let tap = Tap::start(server.local_addrs()[0], rewrite).await;
    let (client, _rx, _) = client_via(tap.addr, client).await;
    let result = client.peer().handshake().await;
    let info = within("the close", client.peer().closed()).await;
    (result, info.code)
}

#[tokio::test]
async fn an_invalid_public_key_in_the_offer_closes_with_handshake_failed() {
    for suite in Suite::ALL {
        let events = Events::default();
        let server = relay_server(SecurityConfig::default().suites([suite]), &events).await;
        let invalid = move |payload: &mut Vec<u8>| {
            // One suite offered: random (32), count, suite, length (2), value.
            let value = &mut payload[36..];
            match suite {
                // The value 1: outside the allowed range.
                Suite::DhFfdhe2048Aes256CbcHmacSha256 => {
                    value.fill(0);
                    value[255] = 1;
                }
                // y changed: no longer on the curve.
                _ => value[64] ^= 0x01,
            }
        };
        let (result, code) = handshake_through(
            &server,
            rewrite_offer(invalid),
            SecurityConfig::default().suites([suite]),
        )
        .await;
        assert!(result.is_err(), "{suite}");
        assert_eq!(code, Code::HANDSHAKE_FAILED, "{suite}");
    }
}

#[tokio::test]
async fn stripping_a_suite_from_the_offer_is_detected_as_a_downgrade() {
    let events = Events::default();
    // The server prefers ECDH; the attacker removes it so that DH is chosen.
    let server = relay_server(
        SecurityConfig::default().suites([Suite::EcdhP256Aes128Gcm, Suite::DhFfdhe2048Aes256CbcHmacSha256]),
        &events,
    )
    .await;
    let strip_ecdh = |payload: &mut Vec<u8>| {
        let mut at = 33;
        let mut kept = Vec::new();
        let count = payload[32];
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes([payload[at + 1], payload[at + 2]]));
            if payload[at] != Suite::EcdhP256Aes128Gcm.id() {
                kept.extend_from_slice(&payload[at..at + 3 + len]);
            }
            at += 3 + len;
        }
        payload.truncate(32);
        payload.push(count - 1);
        payload.extend_from_slice(&kept);
    };
    let (result, code) =
        handshake_through(&server, rewrite_offer(strip_ecdh), SecurityConfig::default()).await;
    assert!(result.is_err());
    assert_eq!(code, Code::HANDSHAKE_FAILED);
}

#[tokio::test]
async fn file_chunks_are_sealed_like_any_record_in_a_secure_direction() {
    let (offers_tx, mut offers) = mpsc::unbounded_channel();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .on_file(move |_peer, offer| {
            let _ = offers_tx.send(offer);
        })
        .start()
        .await
        .unwrap();
    let tap = Tap::start(server.local_addrs()[0], |_, frame| vec![frame]).await;
    let (client, _rx, _) = client_via(tap.addr, SecurityConfig::default()).await;
    client.peer().set_own_security(true).await.unwrap();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sending = client
        .peer()
        .send_file_from(std::io::Cursor::new(content.clone()), "secret.bin", Some(300_000))
        .await
        .unwrap();
    let offer = within("the offer", offers.recv()).await.unwrap();
    let (sink, mut stored) = tokio::io::duplex(1 << 20);
    let receiving = offer.accept_writer(sink).await.unwrap();
    let collect = tokio::spawn(async move {
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stored, &mut out)
            .await
            .unwrap();
        out
    });
    within("the transfer", receiving.finished()).await.unwrap();
    sending.finished().await.unwrap();
    assert_eq!(within("the content", collect).await.unwrap(), content);
    let sealed = tap.count(Direction::Up, |f| f.kind == Kind::FileChunk && f.tag.is_some());
    let plain = tap.count(Direction::Up, |f| f.kind == Kind::FileChunk && f.tag.is_none());
    assert!(sealed >= 5, "{sealed} sealed chunks");
    assert_eq!(plain, 0, "no chunk travelled in the clear");
    // The offer and the end are sealed too: nothing about the file is plain on the wire.
    assert_eq!(
        tap.count(Direction::Up, |f| f.kind.is_file() && f.tag.is_none()),
        0
    );
}

// ---- the review's findings, each through a man in the middle -----------------------------------

/// A server that answers a message `go N` (id 1) with N numbered messages (id 2) and otherwise
/// relays like `relay_server`.
async fn counting_server(security: SecurityConfig, resume: bool, events: &Events) -> Server {
    let config = ServerConfig::default()
        .resume_window(if resume {
            std::time::Duration::from_secs(30)
        } else {
            std::time::Duration::ZERO
        })
        .connection(ConnectionConfig::default().security(security));
    Server::builder()
        .tcp("127.0.0.1:0")
        .ws("127.0.0.1:0", "/s")
        .config(config)
        .protocol(protocol::from_fn(|peer, message: Message| async move {
            let text = String::from_utf8_lossy(&message.payload).into_owned();
            let Some(n) = text.strip_prefix("go ").and_then(|n| n.parse::<u32>().ok()) else {
                return;
            };
            for i in 0..n {
                let _ = peer.send_raw(2, Bytes::copy_from_slice(&i.to_be_bytes())).await;
            }
        }))
        .on_connect(events.connected())
        .on_disconnect(events.disconnected())
        .on_error(events.error())
        .start()
        .await
        .unwrap()
}

fn required() -> SecurityConfig {
    SecurityConfig::default().required(true)
}

/// Injects `frame` once, right after the first frame in `direction` that satisfies `after`.
fn inject_after(
    direction: Direction,
    after: impl Fn(&Frame) -> bool + Send + 'static,
    frame: Frame,
) -> impl FnMut(Direction, Frame) -> Vec<Frame> + Send + 'static {
    let mut pending = Some(frame);
    move |d, seen| {
        if d == direction && after(&seen) {
            if let Some(injected) = pending.take() {
                return vec![seen, injected];
            }
        }
        vec![seen]
    }
}

fn protected_message(frame: &Frame) -> bool {
    frame.kind == Kind::Message && frame.tag.is_some()
}

fn security_frame(id: u32, payload: &'static [u8]) -> Frame {
    Frame {
        kind: Kind::Security,
        id,
        tag: None,
        payload: Bytes::from_static(payload),
    }
}

/// The numbers of the messages `go N` brought back, in arrival order, until `n` arrived.
async fn numbers(rx: &mut Received, n: usize) -> Vec<u32> {
    let mut out = Vec::new();
    while out.len() < n {
        let (message, protected) = within("a numbered message", rx.recv()).await.expect("a message");
        assert!(protected, "message {} arrived in the clear", out.len());
        out.push(u32::from_be_bytes(message.payload[..4].try_into().unwrap()));
    }
    out
}

#[tokio::test]
async fn finding_1_a_forged_plain_request_to_turn_security_off_closes_and_nothing_goes_out_plain() {
    let events = Events::default();
    let server = counting_server(required(), false, &events).await;
    // One plain REQUEST 00 injected right after the client's first protected message.
    let forged = security_frame(10, &[0]);
    let tap = Tap::start(
        server.local_addrs()[0],
        inject_after(Direction::Up, protected_message, forged),
    )
    .await;
    let (client, _rx, _) = client_via(tap.addr, required()).await;
    assert!(client.peer().is_secure() && client.peer().is_peer_secure());
    client.peer().send_raw(1, &b"go 20"[..]).await.unwrap();
    let (_, info) = events.disconnect().await;
    assert_eq!(info.code, Code::UNEXPECTED_PLAINTEXT);
    assert_eq!(
        tap.count(Direction::Down, |f| f.kind == Kind::Message && f.tag.is_none()),
        0,
        "no message of the server's crossed in the clear"
    );
    assert_eq!(
        within("the client's end", client.peer().closed()).await.code,
        Code::UNEXPECTED_PLAINTEXT
    );
}

/// The values of every plain hello's SESSION and RESUME extensions seen by `tap`.
fn plain_session_tokens(tap: &Tap) -> Vec<Bytes> {
    let seen = tap.seen.lock().unwrap();
    seen.iter()
        .filter(|(_, f)| f.kind == Kind::Hello && f.tag.is_none())
        .filter_map(|(_, f)| truflux::frame::control::Hello::parse(&f.payload).ok())
        .flat_map(|hello| hello.extensions)
        .filter(|(ty, value)| (*ty == 2 || *ty == 3) && value.len() >= 32)
        .map(|(_, value)| value)
        .collect()
}

fn reconnecting(security: SecurityConfig) -> ClientConfig {
    ClientConfig::default()
        .reconnect(Some(
            truflux::Reconnect::default().initial_delay(std::time::Duration::from_millis(5)),
        ))
        .connection(ConnectionConfig::default().security(security))
}

#[tokio::test]
async fn finding_2_a_keyed_session_never_shows_its_resume_token_and_a_stolen_one_resumes_nothing() {
    let events = Events::default();
    let server = counting_server(SecurityConfig::default(), true, &events).await;
    let tap = Tap::start(server.local_addrs()[0], |_, frame| vec![frame]).await;
    // A resumable client exchanges keys while connecting: its token travels protected.
    let keyed = Client::builder()
        .config(reconnecting(SecurityConfig::default()))
        .connect(tap.addr)
        .await
        .unwrap();
    assert!(keyed.peer().is_resumable());
    assert!(
        plain_session_tokens(&tap).is_empty(),
        "a resume token in the clear"
    );

    // A session opened plain shows its token; once it has exchanged keys, the token alone is
    // worth nothing: a resume needs the binder only the client can make.
    let plain = SecurityConfig::default().opening(truflux::security::Opening::Plain);
    let (builder, mut rx, _) = collecting_builder(plain.clone());
    let victim = builder
        .config(reconnecting(plain))
        .connect(tap.addr)
        .await
        .unwrap();
    victim
        .peer()
        .set_own_security(true)
        .await
        .unwrap()
        .set_peer_security(true)
        .await
        .unwrap();
    let stolen = plain_session_tokens(&tap)
        .pop()
        .expect("the plain session's token");
    let mut claim = stolen.to_vec();
    claim.extend_from_slice(&0u64.to_be_bytes());
    let mut attacker = common::RawPeer::connect(server.local_addrs()[0]).await;
    let hello = truflux::frame::control::Hello {
        extensions: vec![(3, Bytes::from(claim))],
        ..truflux::frame::control::Hello::current()
    };
    attacker.write_frame(&hello.to_frame()).await;
    assert_eq!(attacker.expect_close().await.code, Code::RESUME_FAILED);
    // The victim was not disturbed.
    victim.peer().send_raw(1, &b"go 3"[..]).await.unwrap();
    within("the victim's numbers", async {
        while !victim.peer().is_peer_secure() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(numbers(&mut rx, 3).await, [0, 1, 2]);
}

#[tokio::test]
async fn finding_2_a_resume_presenting_another_identity_is_refused() {
    let events = Events::default();
    let config = ServerConfig::default().plain_resume(true);
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .config(config)
        .authenticate(|request: truflux::auth::AuthRequest| async move {
            match request.token.as_str() {
                "alice-token" => Ok("alice".to_owned()),
                "bob-token" => Ok("bob".to_owned()),
                _ => Err(truflux::auth::Rejection::from("unknown")),
            }
        })
        .on_disconnect(events.disconnected())
        .start()
        .await
        .unwrap();
    let tap = Tap::start(server.local_addrs()[0], |_, frame| vec![frame]).await;
    let plain = SecurityConfig::default().opening(truflux::security::Opening::Plain);
    let alice = Client::builder()
        .token("alice-token")
        .config(reconnecting(plain))
        .connect(tap.addr)
        .await
        .unwrap();
    let stolen = plain_session_tokens(&tap)
        .pop()
        .expect("alice's token, in the clear");
    let mut claim = stolen.to_vec();
    claim.extend_from_slice(&0u64.to_be_bytes());
    let mut bob = common::RawPeer::connect(server.local_addrs()[0]).await;
    let hello = truflux::frame::control::Hello {
        extensions: vec![(1, Bytes::from_static(b"bob-token")), (3, Bytes::from(claim))],
        ..truflux::frame::control::Hello::current()
    };
    bob.write_frame(&hello.to_frame()).await;
    assert_eq!(bob.expect_close().await.code, Code::RESUME_FAILED);
    assert!(alice.peer().is_connected(), "alice's session is untouched");
}

/// A relay that records every octet the client sends.
async fn byte_tap(upstream: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let outbound = TcpStream::connect(upstream).await.unwrap();
            let (mut in_read, mut in_write) = inbound.into_split();
            let (mut out_read, mut out_write) = outbound.into_split();
            let log = log.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = in_read.read(&mut buf).await {
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                    if out_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn finding_3_the_bearer_token_never_travels_in_the_clear_when_keys_are_exchanged() {
    const TOKEN: &str = "a-very-secret-bearer-token-42";
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .ws("127.0.0.1:0", "/s")
        .authenticate(|request: truflux::auth::AuthRequest| async move {
            if truflux::auth::tokens_match(request.token.as_str(), TOKEN) {
                Ok(())
            } else {
                Err(truflux::auth::Rejection::from("unknown"))
            }
        })
        .start()
        .await
        .unwrap();
    let ws_addr: SocketAddr = server.ws_urls()[0]
        .trim_start_matches("ws://")
        .trim_end_matches("/s")
        .parse()
        .unwrap();
    for (upstream, ws) in [(server.local_addrs()[0], false), (ws_addr, true)] {
        let (addr, seen) = byte_tap(upstream).await;
        let builder = Client::builder()
            .token(TOKEN)
            .token_carrier(truflux::TokenCarrier::Subprotocol);
        let client = if ws {
            builder.connect_ws(&format!("ws://{addr}/s")).await.unwrap()
        } else {
            builder.connect(addr).await.unwrap()
        };
        assert!(client.peer().suite().is_some(), "a keyed opening (ws={ws})");
        client.peer().close(Code::NORMAL, "done").await;
        let seen = seen.lock().unwrap();
        assert!(
            !seen.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token crossed in the clear (ws={ws})"
        );
    }
}

#[tokio::test]
async fn finding_4_a_rewritten_offer_or_a_forged_kex_fail_ends_in_security_required_not_plain() {
    let events = Events::default();
    let server = counting_server(SecurityConfig::default(), false, &events).await;
    let keyed = SecurityConfig::default().opening(truflux::security::Opening::Keyed);
    // Every suite id of the offer rewritten to one nobody knows: no common suite.
    let unknown_suite = rewrite_offer(|payload: &mut Vec<u8>| {
        let mut at = 33;
        for _ in 0..payload[32] {
            let len = usize::from(u16::from_be_bytes([payload[at + 1], payload[at + 2]]));
            payload[at] = 0x7f;
            at += 3 + len;
        }
    });
    let tap = Tap::start(server.local_addrs()[0], unknown_suite).await;
    let refused = collecting_builder(keyed.clone()).0.connect(tap.addr).await;
    assert_eq!(refused.err().map(|e| e.code()), Some(Code::SECURITY_REQUIRED));
    // The server's reply replaced by a forged KEX_FAIL.
    let forged = Close::new(Code::NO_COMMON_SUITE, "none").to_frame(Kind::Security, 3);
    let tap = Tap::start(server.local_addrs()[0], move |direction, frame| {
        if direction == Direction::Down && frame.kind == Kind::Security && frame.id == 2 {
            return vec![forged.clone()];
        }
        vec![frame]
    })
    .await;
    let refused = collecting_builder(keyed).0.connect(tap.addr).await;
    assert_eq!(refused.err().map(|e| e.code()), Some(Code::SECURITY_REQUIRED));
    assert_eq!(
        tap.count(Direction::Up, |f| f.kind == Kind::Hello),
        1,
        "no credentials hello went out after the forged KEX_FAIL"
    );
    assert_eq!(tap.count(Direction::Up, |f| f.kind == Kind::Message), 0);
}

#[tokio::test]
async fn finding_5_a_forged_plain_close_in_a_secure_direction_is_a_lost_connection_that_resumes() {
    for forged_code in [Code::NORMAL, Code::UNAUTHORIZED, Code::RESUME_FAILED] {
        let events = Events::default();
        let server = counting_server(required(), true, &events).await;
        // Drops the server's protected messages 3 to 9, then injects a plain close; once.
        let (mut seen, mut done) = (0, false);
        let tap = Tap::start(server.local_addrs()[0], move |direction, frame| {
            if done || direction != Direction::Down || !protected_message(&frame) {
                return vec![frame];
            }
            seen += 1;
            match seen {
                3..=8 => vec![],
                9 => {
                    done = true;
                    vec![Close::new(forged_code, "forged").to_frame(Kind::Close, 0)]
                }
                _ => vec![frame],
            }
        })
        .await;
        let (builder, mut rx, _) = collecting_builder(required());
        let resumed = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = resumed.clone();
        let client = builder
            .config(reconnecting(required()))
            .on_reconnect(move |_, _| {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
            .connect(tap.addr)
            .await
            .unwrap();
        client.peer().send_raw(1, &b"go 20"[..]).await.unwrap();
        assert_eq!(
            numbers(&mut rx, 20).await,
            (0..20).collect::<Vec<_>>(),
            "{forged_code:?}"
        );
        assert!(
            resumed.load(std::sync::atomic::Ordering::SeqCst) >= 1,
            "{forged_code:?}: resumed"
        );
        assert!(
            !client.peer().is_closed(),
            "{forged_code:?}: the forged close did not end the session"
        );
    }
}

/// A canned keyed opening: the same offer every time, nothing computed by the sender.
fn canned_opening(suite: Suite) -> Vec<u8> {
    let (id, public) = match suite {
        Suite::EcdhP256Aes128Gcm => {
            let secret = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
            use p256::elliptic_curve::sec1::ToSec1Point;
            (2u8, secret.public_key().to_sec1_point(false).as_bytes().to_vec())
        }
        _ => {
            // 4 = 2², a quadratic residue: valid, so the server does its whole share of work.
            let mut four = vec![0u8; 256];
            four[255] = 4;
            (1u8, four)
        }
    };
    let mut offer = vec![9u8; 32];
    offer.push(1);
    offer.push(id);
    offer.extend_from_slice(&(public.len() as u16).to_be_bytes());
    offer.extend_from_slice(&public);
    let hello = truflux::frame::control::Hello {
        extensions: vec![(4, Bytes::new())],
        ..truflux::frame::control::Hello::current()
    };
    let mut bytes = BytesMut::new();
    let mut codec = FrameCodec::default();
    codec.encode(&hello.to_frame(), &mut bytes).unwrap();
    codec
        .encode(
            &Frame {
                kind: Kind::Security,
                id: 1,
                tag: None,
                payload: Bytes::from(offer),
            },
            &mut bytes,
        )
        .unwrap();
    bytes.to_vec()
}

#[tokio::test]
async fn finding_6_a_flood_of_canned_key_exchanges_leaves_a_bystander_served_and_is_bounded() {
    let config = ServerConfig::default()
        .max_opening(64)
        .connections_per_second(Some(1000));
    let (tx, mut echoes) = mpsc::unbounded_channel();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .config(config)
        .protocol(protocol::from_fn(|peer, message| async move {
            let _ = peer.send(message).await;
        }))
        .start()
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    let bystander = Client::connect(
        addr,
        protocol::from_fn(move |_peer, message: Message| {
            let _ = tx.send(message.payload);
            std::future::ready(())
        }),
    )
    .await
    .unwrap();
    let flood: Vec<_> = (0..300)
        .map(|i| {
            let suite = if i % 2 == 0 {
                Suite::EcdhP256Aes128Gcm
            } else {
                Suite::DhFfdhe2048Aes256CbcHmacSha256
            };
            tokio::spawn(async move {
                let mut peer = common::RawPeer::connect(addr).await;
                peer.write(&canned_opening(suite)).await;
                // The answer: the server's hello and reply, or a refusal.
                let first = peer.read_frame().await?;
                match first.kind {
                    Kind::Close => Some(Close::parse(Kind::Close, &first.payload).ok()?.code),
                    Kind::Hello => peer.read_frame().await.map(|reply| Code(reply.id as u16)),
                    _ => None,
                }
            })
        })
        .collect();
    for i in 0..50u32 {
        bystander
            .peer()
            .send_raw(1, Bytes::copy_from_slice(&i.to_be_bytes()))
            .await
            .unwrap();
        let echo = within("the bystander's echo during the flood", echoes.recv())
            .await
            .unwrap();
        assert_eq!(echo, &i.to_be_bytes()[..]);
    }
    let mut replied = 0;
    for outcome in flood {
        match within("a flood connection's answer", outcome).await.unwrap() {
            // A KEX_REPLY (security message 2).
            Some(Code(2)) => replied += 1,
            Some(Code::TRY_AGAIN_LATER) => {}
            other => panic!("a flood connection ended with {other:?}"),
        }
    }
    assert!(replied > 0, "no key exchange was answered");
    // A source past its rate is refused before its hello is read.
    let limited = Server::builder()
        .tcp("127.0.0.1:0")
        .config(ServerConfig::default().connections_per_second(Some(5)))
        .start()
        .await
        .unwrap();
    let mut refused = 0;
    for _ in 0..40 {
        let mut peer = common::RawPeer::connect(limited.local_addrs()[0]).await;
        peer.write_frame(&truflux::frame::control::Hello::current().to_frame())
            .await;
        let answer = peer.read_frame().await.expect("an answer");
        if answer.kind == Kind::Close {
            assert_eq!(
                Close::parse(Kind::Close, &answer.payload).unwrap().code,
                Code::TRY_AGAIN_LATER
            );
            refused += 1;
        }
    }
    assert!(
        refused > 0,
        "40 connections at once from one address were all admitted"
    );
}

#[tokio::test]
async fn finding_7_under_required_every_plain_frame_kind_ends_the_connection_in_both_directions() {
    let kinds = [
        Frame::message(5, Bytes::from_static(b"plain")),
        Frame {
            kind: Kind::Reply,
            id: 1,
            tag: None,
            payload: Bytes::from_static(b"r"),
        },
        Close::new(Code::NO_REPLY, "x").to_frame(Kind::ReplyError, 1),
        Frame {
            kind: Kind::FileChunk,
            id: 1,
            tag: None,
            payload: Bytes::from_static(b"c"),
        },
        Frame::control(Kind::Ack, Bytes::copy_from_slice(&0u64.to_be_bytes())),
        Close::new(Code::UNKNOWN_MESSAGE, "x").to_frame(Kind::Error, 0),
        Frame::control(Kind::Ping, Bytes::new()),
    ];
    for frame in kinds {
        let kind = frame.kind;
        // Towards the server.
        let events = Events::default();
        let server = counting_server(required(), false, &events).await;
        let tap = Tap::start(
            server.local_addrs()[0],
            inject_after(Direction::Up, protected_message, frame.clone()),
        )
        .await;
        let (client, _rx, _) = client_via(tap.addr, required()).await;
        client.peer().send_raw(1, &b"go 1"[..]).await.unwrap();
        let (_, info) = events.disconnect().await;
        assert_eq!(
            info.code,
            Code::UNEXPECTED_PLAINTEXT,
            "{kind:?} towards the server"
        );
        // Towards the client.
        let events = Events::default();
        let server = counting_server(required(), false, &events).await;
        let tap = Tap::start(
            server.local_addrs()[0],
            inject_after(Direction::Down, protected_message, frame),
        )
        .await;
        let (client, _rx, _) = client_via(tap.addr, required()).await;
        client.peer().send_raw(1, &b"go 2"[..]).await.unwrap();
        let info = within("the client's end", client.peer().closed()).await;
        assert_eq!(
            info.code,
            Code::UNEXPECTED_PLAINTEXT,
            "{kind:?} towards the client"
        );
    }
}
