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
            assert_eq!(a.handshake().await.unwrap(), suite);
            a.set_own_security(true)
                .await
                .unwrap()
                .set_peer_security(true)
                .await
                .unwrap();
            assert!(a.is_secure());
            assert_eq!(a.suite(), Some(suite));
            assert!(a_events
                .lock()
                .unwrap()
                .contains(&SecurityEvent::Handshaked { suite }));

            a.send_raw(1, &b"secret hello"[..]).await.unwrap();
            let (message, _) = within("relayed", b_rx.recv()).await.unwrap();
            assert_eq!(message.payload, &b"secret hello"[..]);
            // The server now encrypts what it sends to `a`: b's message arrives protected.
            b.send_raw(2, &b"to a"[..]).await.unwrap();
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
    match a.set_own_security(true).await {
        Err(Error::FailSecure { code, .. }) => assert_eq!(code, Code::NO_COMMON_SUITE),
        other => panic!("expected fail_secure, got {other:?}"),
    }
    assert_eq!(
        within("the close", a.closed()).await.code,
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
        a.set_own_security(true).await,
        Err(Error::FailSecure { .. })
    ));
    let (text, code) = events.error_event().await;
    assert_eq!(code, Code::NO_COMMON_SUITE, "{text}");
    assert!(!a.is_secure());
    a.send_raw(5, &b"plain still works"[..]).await.unwrap();
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
        assert!(a.is_secure() && a.is_peer_secure());
        let (b, _b_rx, _) = client(&server, ws, SecurityConfig::default().required(true))
            .await
            .unwrap();
        b.send_raw(3, &b"x"[..]).await.unwrap();
        let (message, protected) = within("relayed", a_rx.recv()).await.unwrap();
        assert_eq!((message.id, protected), (3, true));
        assert!(
            matches!(a.set_own_security(false).await, Err(Error::Security(_))),
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
    d.send_raw(4, &b"y"[..]).await.unwrap();
    let (message, protected) = within("relayed", c_rx.recv()).await.unwrap();
    assert_eq!((message.id, protected), (4, true));
    within("the client's own direction", async {
        while !c.is_secure() {
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
    assert!(good.server_authenticated());
    assert_eq!(good.server_key(), Some(key.fingerprint()));
    let other = truflux::security::ServerKey::generate();
    let wrong = client(&server, false, SecurityConfig::default().pin(other.fingerprint())).await;
    assert_eq!(wrong.err().map(|e| e.code()), Some(Code::UNTRUSTED_SERVER));
    // Without a pin the exchange is anonymous, and the API says so.
    let (anonymous, _rx, _) = client(&server, false, SecurityConfig::default()).await.unwrap();
    anonymous.handshake().await.unwrap();
    assert!(!anonymous.server_authenticated());
    assert_eq!(anonymous.server_key(), Some(key.fingerprint()));
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
        a.set_own_security(true)
            .await
            .unwrap()
            .set_peer_security(true)
            .await
            .unwrap();
        b.set_own_security(true).await.unwrap();
        // Asking is not waiting: the server turns its direction on when it reads the request.
        within("the server's direction to a to turn secure", async {
            while !a.is_peer_secure() {
                tokio::task::yield_now().await;
            }
        })
        .await;
        for i in 0..300u32 {
            a.send_raw(i, Bytes::from(vec![7u8; 100])).await.unwrap();
            b.send_raw(i, Bytes::from(vec![8u8; 100])).await.unwrap();
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
    secure.set_peer_security(true).await.unwrap();
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
    client.set_own_security(true).await.unwrap();
    for i in 0..10u32 {
        if client
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
    let result = client.handshake().await;
    let info = within("the close", client.closed()).await;
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
    client.set_own_security(true).await.unwrap();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sending = client
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
