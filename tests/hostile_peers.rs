//! Hostile peers, written by hand on loopback. Each test checks the typed error, the close code
//! the peer receives where the connection cannot go on, that an honest bystander keeps being
//! served, and that nothing panicked.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{header, within, Events, RawPeer};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use truflux::frame::control::{Close, Hello};
use truflux::frame::{Frame, Kind};
use truflux::{protocol, Client, Code, ConnectionConfig, Message, Server, ServerConfig};
use truflux_msg::{Msg, Registry};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Note {
    text: String,
}
const NOTE: Msg<Note> = Msg::named("note");

/// A server whose registry echoes `note`, with a small payload limit and hello timeout, plus an
/// honest client that must keep working whatever the hostile peer does.
struct Fixture {
    server: Server,
    events: Events,
    handled: Arc<AtomicUsize>,
    bystander: Client,
    bystander_rx: mpsc::UnboundedReceiver<Note>,
    panics: usize,
}

const MAX_PAYLOAD: u32 = 64 * 1024;

async fn fixture(config: ServerConfig) -> Fixture {
    let panics = common::watch_panics();
    let events = Events::default();
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let registry = Registry::builder()
        .on(NOTE, move |peer, note: Note| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { NOTE.send(&peer, &note).await }
        })
        .build()
        .unwrap();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .protocol(registry)
        .config(config)
        .on_disconnect(events.disconnected())
        .on_error(events.error())
        .start()
        .await
        .unwrap();
    let (tx, bystander_rx) = mpsc::unbounded_channel();
    let client_registry = Registry::builder()
        .on(NOTE, move |_, note: Note| {
            let _ = tx.send(note);
            std::future::ready(())
        })
        .build()
        .unwrap();
    let bystander = Client::connect(server.local_addrs()[0], client_registry)
        .await
        .unwrap();
    Fixture {
        server,
        events,
        handled,
        bystander,
        bystander_rx,
        panics,
    }
}

fn small_limits() -> ServerConfig {
    ServerConfig::default()
        .connection(ConnectionConfig::default().max_payload(MAX_PAYLOAD))
        .handshake_timeout(Duration::from_millis(300))
}

impl Fixture {
    fn bystander_server_id(&self) -> truflux::PeerId {
        let local = self.bystander.peer().info().local;
        self.server
            .peers()
            .into_iter()
            .find(|p| p.info().remote == local)
            .expect("bystander connected")
            .id()
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.server.local_addrs()[0]
    }

    /// The bystander still gets its echo, and no task panicked.
    async fn assert_healthy(&mut self) {
        let note = Note {
            text: "still here".into(),
        };
        NOTE.send(&self.bystander, &note).await.unwrap();
        assert_eq!(
            within("bystander echo", self.bystander_rx.recv()).await.unwrap(),
            note
        );
        assert_eq!(self.server.num_connections(), 1, "only the bystander is left");
        common::assert_no_panics(self.panics);
    }
}

#[tokio::test]
async fn truncated_header_then_eof() {
    let mut f = fixture(small_limits()).await;
    let mut peer = RawPeer::open(f.addr()).await;
    peer.write(&header(0x10, 1, 10)[..5]).await;
    tokio::io::AsyncWriteExt::shutdown(&mut peer.stream)
        .await
        .unwrap();
    let (text, code) = f.events.error_event().await;
    assert!(text.contains("stream ended inside a frame"), "{text}");
    assert_eq!(code, Code::PROTOCOL_ERROR);
    let (_, info) = f.events.disconnect().await;
    assert_eq!(info.code, Code::PROTOCOL_ERROR);
    f.assert_healthy().await;
}

#[tokio::test]
async fn length_above_the_maximum() {
    let mut f = fixture(small_limits()).await;
    let mut peer = RawPeer::open(f.addr()).await;
    peer.write(&header(0x10, NOTE.id(), MAX_PAYLOAD + 1)).await;
    assert_eq!(peer.expect_close().await.code, Code::MESSAGE_TOO_BIG);
    let (text, code) = f.events.error_event().await;
    assert_eq!(code, Code::MESSAGE_TOO_BIG);
    assert!(text.contains("exceeds the limit"), "{text}");
    f.assert_healthy().await;
}

#[tokio::test]
async fn length_field_all_ones_allocates_nothing() {
    let mut f = fixture(ServerConfig::default()).await;
    let mut peer = RawPeer::open(f.addr()).await;
    peer.write(&header(0x10, NOTE.id(), 0xFFFF_FFFF)).await;
    let close = peer.expect_close().await;
    assert_eq!(close.code, Code::MESSAGE_TOO_BIG);
    assert!(close.reason.contains("4294967295"), "{}", close.reason);
    f.assert_healthy().await;
}

#[tokio::test]
async fn unknown_frame_kind() {
    let mut f = fixture(small_limits()).await;
    let mut peer = RawPeer::open(f.addr()).await;
    peer.write(&header(0x7e, 0, 0)).await;
    let close = peer.expect_close().await;
    assert_eq!(close.code, Code::PROTOCOL_ERROR);
    assert!(
        close.reason.contains("unknown frame kind 0x7e"),
        "{}",
        close.reason
    );
    f.assert_healthy().await;
}

#[tokio::test]
async fn protected_frame_before_any_handshake() {
    let mut f = fixture(small_limits()).await;
    let mut peer = RawPeer::open(f.addr()).await;
    let frame = Frame {
        kind: Kind::Message,
        id: NOTE.id(),
        tag: Some([0; 12]),
        payload: Bytes::new(),
    };
    peer.write_frame(&frame).await;
    assert_eq!(
        peer.expect_close().await.code,
        Code::BAD_RECORD,
        "a protected record before any handshake"
    );
    f.assert_healthy().await;
}

#[tokio::test]
async fn unknown_message_id_is_reported_and_the_connection_goes_on() {
    let mut f = fixture(small_limits()).await;
    let mut peer = RawPeer::open(f.addr()).await;
    peer.write_frame(&Frame::message(424242, Bytes::from_static(b"?")))
        .await;
    let report = peer.read_frame().await.unwrap();
    assert_eq!((report.kind, report.id), (Kind::Error, 424242));
    assert_eq!(
        Close::parse(Kind::Error, &report.payload).unwrap().code,
        Code::UNKNOWN_MESSAGE
    );
    assert_eq!(f.events.error_event().await.1, Code::UNKNOWN_MESSAGE);
    // Still open: a valid message is echoed.
    let note = NOTE.encode(&Note { text: "ok".into() }).unwrap();
    peer.write_frame(&Frame::message(note.id, note.payload.clone()))
        .await;
    let echo = peer.read_frame().await.unwrap();
    assert_eq!((echo.kind, echo.payload), (Kind::Message, note.payload));
    drop(peer);
    f.events.disconnect().await;
    f.assert_healthy().await;
}

#[tokio::test]
async fn payload_that_does_not_decode() {
    let mut f = fixture(small_limits()).await;
    let mut peer = RawPeer::open(f.addr()).await;
    // A MessagePack map announcing 2^32-1 entries, then nothing: must not allocate for them.
    peer.write_frame(&Frame::message(
        NOTE.id(),
        Bytes::from_static(&[0xdf, 0xff, 0xff, 0xff, 0xff]),
    ))
    .await;
    let report = peer.read_frame().await.unwrap();
    assert_eq!(report.kind, Kind::Error);
    assert_eq!(
        Close::parse(Kind::Error, &report.payload).unwrap().code,
        Code::INVALID_PAYLOAD
    );
    // Deeply nested arrays: decoding is depth-bounded, no stack overflow.
    let nested = Bytes::from(vec![0x91u8; 60_000]);
    peer.write_frame(&Frame::message(NOTE.id(), nested)).await;
    let report = peer.read_frame().await.unwrap();
    assert_eq!(
        Close::parse(Kind::Error, &report.payload).unwrap().code,
        Code::INVALID_PAYLOAD
    );
    assert_eq!(f.handled.load(Ordering::SeqCst), 0, "no handler ran");
    drop(peer);
    f.events.disconnect().await;
    f.assert_healthy().await;
}

#[tokio::test]
async fn ten_thousand_tiny_frames_in_one_write() {
    let mut f = fixture(small_limits()).await;
    let peer = RawPeer::open(f.addr()).await;
    let note = NOTE.encode(&Note { text: String::new() }).unwrap();
    let frame = Frame::message(note.id, note.payload);
    let mut burst = bytes::BytesMut::new();
    for _ in 0..10_000 {
        tokio_util::codec::Encoder::encode(&mut truflux::frame::FrameCodec::default(), &frame, &mut burst)
            .unwrap();
    }
    let (mut read, mut write) = peer.stream.into_split();
    // Read the echoes concurrently: the server's queue would otherwise fill and apply backpressure.
    let reader = tokio::spawn(async move {
        let mut raw = RawPeer::from_stream_read(&mut read);
        let mut n = 0;
        while n < 10_000 {
            let echo = raw.next().await.expect("an echo");
            assert_eq!(echo.kind, Kind::Message);
            n += 1;
        }
        n
    });
    tokio::io::AsyncWriteExt::write_all(&mut write, &burst)
        .await
        .unwrap();
    assert_eq!(within("10,000 echoes", reader).await.unwrap(), 10_000);
    assert_eq!(f.handled.load(Ordering::SeqCst), 10_000);
    drop(write);
    f.events.disconnect().await;
    f.assert_healthy().await;
}

#[tokio::test]
async fn echoes_of_bursts_and_of_single_frames_between_them_keep_their_order() {
    // Replies to a burst wait for the writer and go out together; the reply to the last frame
    // in hand is written at once. Mixed, they must still leave in the order they were made.
    let mut f = fixture(small_limits()).await;
    let mut peer = RawPeer::open(f.addr()).await;
    let note = |n: usize| {
        let note = NOTE.encode(&Note { text: n.to_string() }).unwrap();
        Frame::message(note.id, note.payload)
    };
    let burst = |from: usize| {
        let mut out = bytes::BytesMut::new();
        for n in from..from + 50 {
            tokio_util::codec::Encoder::encode(
                &mut truflux::frame::FrameCodec::default(),
                &note(n),
                &mut out,
            )
            .unwrap();
        }
        out
    };
    let mut expected = 0;
    let mut expect_echoes = async |peer: &mut RawPeer, upto: usize| {
        while expected < upto {
            let echo = peer.read_frame().await.expect("an echo");
            let text = NOTE.decode(echo.payload).unwrap().text;
            assert_eq!(text, expected.to_string(), "echoes in order");
            expected += 1;
        }
    };
    peer.write(&burst(0)).await;
    for n in 50..60 {
        peer.write_frame(&note(n)).await;
    }
    peer.write(&burst(60)).await;
    expect_echoes(&mut peer, 110).await;
    for n in 110..120 {
        peer.write_frame(&note(n)).await;
        expect_echoes(&mut peer, n + 1).await;
    }
    assert_eq!(f.handled.load(Ordering::SeqCst), 120);
    drop(peer);
    f.events.disconnect().await;
    f.assert_healthy().await;
}

#[tokio::test]
async fn connects_and_sends_nothing() {
    let mut f = fixture(small_limits()).await;
    let mut peer = RawPeer::connect(f.addr()).await;
    let close = peer.expect_close().await;
    assert_eq!(close.code, Code::HANDSHAKE_TIMEOUT);
    let (text, code) = f.events.error_event().await;
    assert_eq!(code, Code::HANDSHAKE_TIMEOUT);
    assert!(text.contains("hello"), "{text}");
    f.assert_healthy().await;
}

#[tokio::test]
async fn wrong_first_frame_or_version() {
    let mut f = fixture(small_limits()).await;
    let mut peer = RawPeer::connect(f.addr()).await;
    peer.write_frame(&Frame::message(NOTE.id(), Bytes::new())).await;
    assert_eq!(peer.expect_close().await.code, Code::PROTOCOL_ERROR);

    // Version 2 counted only application frames for a resume (§11.3 of version 3 counts file
    // frames too): a version-2 peer would disagree on every count, so it is refused.
    for version in [2, 99] {
        let mut peer = RawPeer::connect(f.addr()).await;
        peer.write_frame(
            &Hello {
                version,
                extensions: vec![],
            }
            .to_frame(),
        )
        .await;
        assert_eq!(
            peer.expect_close().await.code,
            Code::VERSION_MISMATCH,
            "version {version}"
        );
    }

    let mut peer = RawPeer::open(f.addr()).await;
    peer.write_frame(&Hello::current().to_frame()).await;
    assert_eq!(
        peer.expect_close().await.code,
        Code::PROTOCOL_ERROR,
        "a second hello"
    );
    f.assert_healthy().await;
}

#[tokio::test]
async fn malformed_control_payloads() {
    let mut f = fixture(small_limits()).await;
    let mut peer = RawPeer::open(f.addr()).await;
    // An error frame too short for its code.
    peer.write_frame(&Frame::control(Kind::Error, Bytes::from_static(&[1])))
        .await;
    assert_eq!(peer.expect_close().await.code, Code::PROTOCOL_ERROR);
    f.assert_healthy().await;
}

#[tokio::test]
async fn a_peer_that_never_reads_is_dropped_and_others_keep_being_served() {
    const QUEUE: usize = 16;
    let config = small_limits().connection(
        ConnectionConfig::default()
            .max_payload(MAX_PAYLOAD)
            .outbound_queue(QUEUE),
    );
    let mut f = fixture(config).await;
    // Completes the hello, then never reads again.
    let _silent = RawPeer::open(f.addr()).await;
    within("second peer", async {
        while f.server.num_connections() != 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let chunk = Bytes::from(vec![7u8; 60 * 1024]);
    let mut slow = Vec::new();
    let mut sent = 0;
    // Kernel buffers absorb some megabytes, then the queue (16 frames) fills. Bounded by count.
    while slow.is_empty() && sent < 2_000 {
        let report = f
            .server
            .broadcast(
                Message {
                    id: 1,
                    payload: chunk.clone(),
                },
                &[f.bystander_server_id()],
            )
            .unwrap();
        slow = report.slow;
        sent += 1;
        tokio::task::yield_now().await;
    }
    assert_eq!(
        slow.len(),
        1,
        "the silent peer was found slow after {sent} broadcasts"
    );
    let (peer, info) = f.events.disconnect().await;
    assert_eq!(peer.id(), slow[0]);
    assert_eq!(info.code, Code::SLOW_CONSUMER);
    f.assert_healthy().await;
}

#[tokio::test]
async fn send_to_a_full_queue_waits_and_try_send_says_full() {
    let config = small_limits().connection(
        ConnectionConfig::default()
            .outbound_queue(4)
            .max_payload(MAX_PAYLOAD),
    );
    let mut f = fixture(config).await;
    let _silent = RawPeer::open(f.addr()).await;
    let peer = within("the silent peer", async {
        loop {
            if let Some(p) = f
                .server
                .peers()
                .into_iter()
                .find(|p| p.id() != f.bystander_server_id())
            {
                break p;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let chunk = Bytes::from(vec![1u8; 60 * 1024]);
    let mut full = false;
    for _ in 0..2_000 {
        match peer.try_send(Message {
            id: 1,
            payload: chunk.clone(),
        }) {
            Ok(()) => tokio::task::yield_now().await,
            Err(truflux::Error::QueueFull) => {
                full = true;
                break;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(full, "the queue filled up");
    // A waiting send does not complete while the peer does not read.
    let waiting = tokio::time::timeout(Duration::from_millis(100), peer.send_raw(1, chunk.clone())).await;
    assert!(waiting.is_err(), "send waits on a full queue");
    peer.close_now(Code::POLICY_VIOLATION, "test over");
    f.events.disconnect().await;
    f.assert_healthy().await;
}

#[tokio::test]
async fn abrupt_disconnect_mid_message() {
    let mut f = fixture(small_limits()).await;
    let mut peer = RawPeer::open(f.addr()).await;
    let mut partial = header(0x10, NOTE.id(), 1000);
    partial.extend_from_slice(&[0u8; 300]);
    peer.write(&partial).await;
    drop(peer);
    let (_, info) = f.events.disconnect().await;
    assert_eq!(info.code, Code::PROTOCOL_ERROR, "{info}");
    f.assert_healthy().await;
}

#[tokio::test]
async fn disconnect_between_frames_is_abnormal_not_an_error() {
    let mut f = fixture(small_limits()).await;
    let peer = RawPeer::open(f.addr()).await;
    drop(peer);
    let (_, info) = f.events.disconnect().await;
    assert_eq!(info.code, Code::ABNORMAL);
    f.assert_healthy().await;
}

#[tokio::test]
async fn echo_server_from_fn_survives_garbage() {
    // The raw protocol sees bytes only: garbage is the application's to judge.
    let panics = common::watch_panics();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .protocol(protocol::from_fn(|peer, message| async move {
            let _ = peer.send(message).await;
        }))
        .start()
        .await
        .unwrap();
    let mut peer = RawPeer::open(server.local_addrs()[0]).await;
    peer.write_frame(&Frame::message(5, Bytes::from_static(&[0xff; 32])))
        .await;
    assert_eq!(
        peer.read_frame().await.unwrap().payload,
        Bytes::from_static(&[0xff; 32])
    );
    common::assert_no_panics(panics);
}

#[tokio::test]
async fn a_flood_of_security_requests_spawns_no_pile_of_tasks() {
    let mut f = fixture(small_limits()).await;
    let tasks_before = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let mut peer = RawPeer::open(f.addr()).await;
    // 5,000 "please encrypt what you send" requests (SECURITY frame, type 10), then a ping.
    let mut burst = bytes::BytesMut::new();
    let request = Frame {
        kind: Kind::Security,
        id: 10,
        tag: None,
        payload: Bytes::from_static(&[1]),
    };
    for _ in 0..5_000 {
        tokio_util::codec::Encoder::encode(&mut truflux::frame::FrameCodec::default(), &request, &mut burst)
            .unwrap();
    }
    let ping = Frame::control(Kind::Ping, Bytes::from_static(b"after the flood"));
    tokio_util::codec::Encoder::encode(&mut truflux::frame::FrameCodec::default(), &ping, &mut burst)
        .unwrap();
    peer.write(&burst).await;
    // All requests were read once the pong comes back.
    loop {
        let frame = peer.read_frame().await.expect("a frame");
        if frame.kind == Kind::Pong {
            break;
        }
    }
    let tasks_after = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    assert!(
        tasks_after <= tasks_before + 4,
        "{tasks_before} tasks before, {tasks_after} after the flood"
    );
    drop(peer);
    f.events.disconnect().await;
    f.assert_healthy().await;
}

/// The `echo` example, built beside this test binary by `cargo test`.
fn echo_example() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    dir.join("examples")
        .join(format!("echo{}", std::env::consts::EXE_SUFFIX))
}

/// The address space of a process, in KiB (`VmSize`), or its peak (`VmPeak`).
fn address_space(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("the field")
}

#[tokio::test]
async fn two_thousand_headers_announcing_16_mib_cannot_exhaust_a_server_under_an_address_space_limit() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    // The server runs in a child process whose address space is limited to 2 GiB: reserving
    // each announced 16 MiB frame would need 32 GiB and abort it.
    let echo = echo_example();
    assert!(echo.exists(), "{} is built by `cargo test`", echo.display());
    let mut child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -v 2097152 && exec \"$0\" --serve --addr 127.0.0.1:0")
        .arg(&echo)
        // 2,000 refused peers would be 2,000 info lines in the test's output.
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the echo server");
    let pid = child.id().expect("a pid");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = within("the server to listen", lines.next_line())
        .await
        .unwrap()
        .expect("a line");
    let addr: std::net::SocketAddr = line
        .trim_start_matches("listening on ")
        .parse()
        .expect("an address");

    let (tx, mut echoes) = mpsc::unbounded_channel();
    let bystander = Client::connect(
        addr,
        protocol::from_fn(move |_peer, message: Message| {
            let _ = tx.send(message.payload);
            std::future::ready(())
        }),
    )
    .await
    .unwrap();
    let mut hostile = Vec::new();
    for i in 0..2000u32 {
        let mut peer = RawPeer::open(addr).await;
        // A header announcing 16 MiB, then 91 octets of it: 100 octets in all.
        let mut bytes = header(Kind::Message as u8, 1, 16 << 20);
        bytes.extend_from_slice(&[0u8; 91]);
        peer.write(&bytes).await;
        hostile.push(peer);
        if i % 500 == 499 {
            bystander
                .peer()
                .send_raw(2, Bytes::from(format!("after {}", i + 1)))
                .await
                .unwrap();
            let echo = within("the bystander's echo", echoes.recv()).await.unwrap();
            assert_eq!(echo, format!("after {}", i + 1));
        }
    }
    // Every hostile peer's 100 octets have reached the server once a later bystander message
    // has been echoed after all of them were written.
    bystander.peer().send_raw(2, &b"last"[..]).await.unwrap();
    assert_eq!(
        within("the last echo", echoes.recv()).await.unwrap(),
        &b"last"[..]
    );
    let size = address_space(pid, "VmSize:");
    let peak = address_space(pid, "VmPeak:");
    assert!(
        peak < 1024 * 1024,
        "address space peaked at {peak} KiB (now {size} KiB)"
    );
    drop(hostile);
    bystander.peer().close(Code::NORMAL, "done").await;
    let _ = child.kill().await;
}

fn rate_limited(limit: truflux::RateLimit) -> ServerConfig {
    small_limits().connection(
        ConnectionConfig::default()
            .max_payload(MAX_PAYLOAD)
            .rate_limit(Some(limit)),
    )
}

/// `count` note frames in one buffer.
fn notes(count: usize) -> bytes::BytesMut {
    let note = NOTE.encode(&Note { text: "flood".into() }).unwrap();
    let frame = Frame::message(note.id, note.payload);
    let mut burst = bytes::BytesMut::new();
    for _ in 0..count {
        tokio_util::codec::Encoder::encode(&mut truflux::frame::FrameCodec::default(), &frame, &mut burst)
            .unwrap();
    }
    burst
}

#[tokio::test]
async fn a_peer_over_its_message_rate_is_closed_with_policy_violation_under_the_close_policy() {
    // One token a second: within this test the bucket holds the burst and nothing more.
    let limit = truflux::RateLimit::new(truflux::RatePolicy::Close).messages(1, 20);
    let mut f = fixture(rate_limited(limit)).await;
    let mut peer = RawPeer::open(f.addr()).await;
    peer.write(&notes(200)).await;
    let close = peer.expect_close().await;
    assert_eq!(close.code, Code::POLICY_VIOLATION);
    assert_eq!(
        f.events.error_event().await.1,
        Code::POLICY_VIOLATION,
        "the error hook hears of it"
    );
    assert_eq!(f.events.disconnect().await.1.code, Code::POLICY_VIOLATION);
    let handled = f.handled.load(Ordering::SeqCst);
    assert!(
        (20..=21).contains(&handled),
        "the burst was handled, then nothing: {handled}"
    );
    f.assert_healthy().await;
}

#[tokio::test]
async fn a_flooding_peer_is_held_to_its_rate_while_a_bystander_is_served() {
    const RATE: u64 = 500;
    const BURST: u64 = 50;
    const FLOOD: usize = 5_000; // ten seconds' worth at the rate
    let limit = truflux::RateLimit::new(truflux::RatePolicy::Slow).messages(RATE, BURST);
    let mut f = fixture(rate_limited(limit)).await;
    let peer = RawPeer::open(f.addr()).await;
    let (mut read, mut write) = peer.stream.into_split();
    let started = std::time::Instant::now();
    let flood = tokio::spawn(async move {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut write, &notes(FLOOD)).await;
        write
    });
    let echoes = tokio::spawn(async move {
        let mut raw = RawPeer::from_stream_read(&mut read);
        while raw.next().await.is_some() {}
    });
    // The flooder is slowed, not starved: it is handled beyond its burst.
    let handled = &f.handled;
    within("the flooder handled past its burst", async {
        while handled.load(Ordering::SeqCst) < 2 * BURST as usize {
            tokio::task::yield_now().await;
        }
    })
    .await;
    for _ in 0..5 {
        let note = Note {
            text: "bystander".into(),
        };
        NOTE.send(&f.bystander, &note).await.unwrap();
        assert_eq!(
            within("bystander echo", f.bystander_rx.recv()).await.unwrap(),
            note
        );
    }
    // The bystander's five notes are counted by the same handler.
    let handled = f.handled.load(Ordering::SeqCst) - 5;
    let allowed = BURST as f64 + RATE as f64 * started.elapsed().as_secs_f64() + 1.0;
    assert!(
        (handled as f64) <= allowed,
        "{handled} handled, at most {allowed:.0} allowed by the rate"
    );
    assert!(handled < FLOOD, "still held back");
    assert_eq!(f.server.num_connections(), 2, "slowed, not closed");
    flood.abort();
    echoes.abort();
    common::assert_no_panics(f.panics);
}
