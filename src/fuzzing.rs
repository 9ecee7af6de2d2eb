//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not part of the API).
//!
//! Each function takes arbitrary octets, drives one pure surface with them and panics only when
//! a property breaks: the engine (sequences of frames, sends, toggles, closes and time, between
//! two engines with an attacker in the middle), both sides of the key exchange (a client parsing
//! a hostile server's replies too), the file rules, the hello extensions, and the frame and
//! WebSocket codecs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::connection::engine::security::{Rx, Tx};
use crate::connection::engine::{marker, Engine, Event, Opened, Settings};
use crate::error::Code;
use crate::frame::control::{Close, Hello};
use crate::frame::{Frame, FrameCodec, Kind};
use crate::security::handshake::{self, Handshake, Pins, Role};
use crate::security::record::{Opener, Sealer};
use crate::security::{RekeyPolicy, SecurityConfig, Suite};

/// Octets read one decision at a time; the end reads as zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((first, rest)) => {
                self.0 = rest;
                *first
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

fn settings() -> Settings {
    let security = SecurityConfig::default()
        .suites(vec![Suite::EcdhP256Aes128Gcm])
        .rekey(RekeyPolicy::default().records(5));
    Settings {
        security: Arc::new(security),
        heartbeat_interval: Some(Duration::from_secs(10)),
        heartbeat_timeout: Duration::from_secs(5),
        max_incoming_files: 2,
        resume_buffer: 64,
        resume_buffer_bytes: 1 << 16,
        // Held reads are the driver's business; the buckets' arithmetic runs on every frame.
        rate_limit: Some(
            crate::config::RateLimit::new(crate::config::RatePolicy::Slow)
                .messages(100, 10)
                .bytes(1 << 16, 1 << 12),
        ),
    }
}

/// Both sides keyed with fixed traffic secrets (as after a keyed opening, without the cost of
/// a key exchange per run: the exchange has targets of its own).
fn keyed() -> Option<(Opened, Opened)> {
    let config = Arc::new(settings().security.as_ref().clone());
    let now = Instant::now();
    let secret = |n: u8| zeroize::Zeroizing::new([n; 32]);
    let suite = Suite::EcdhP256Aes128Gcm;
    let side = |role, send: u8, receive: u8| {
        let mut handshake = Handshake::new(role, config.clone(), Pins::default());
        handshake.set_hellos(&Hello::current(), &Hello::current());
        let mut tx = Tx::new(config.rekey.clone());
        let mut rx = Rx::default();
        tx.install(Sealer::new(suite, secret(send)), now);
        rx.install(Opener::new(suite, secret(receive)));
        Opened {
            handshake,
            tx,
            rx,
            keys: None,
            secure: false,
        }
    };
    Some((side(Role::Client, 1, 2), side(Role::Server, 2, 1)))
}

/// One side, with what its application saw.
struct Side {
    engine: Engine,
    queue: Vec<Frame>,
    stopped: bool,
}

impl Side {
    /// Feeds one frame and checks: nothing is handled after the reader stopped, and a message
    /// handed over in a secure direction arrived protected.
    fn receive(&mut self, frame: Frame, now: Instant) {
        let protected = frame.tag.is_some();
        let secure_before = self.engine.is_peer_secure();
        let mut events = VecDeque::new();
        self.engine.on_frame(frame, now, &mut events);
        while let Some(event) = events.pop_front() {
            match event {
                Event::Deliver(_) | Event::Request { .. } => {
                    assert!(!self.stopped, "delivered after the connection stopped");
                    assert!(
                        protected || !secure_before,
                        "a plain message delivered in a secure direction"
                    );
                }
                Event::Respond(frame) => self.queue.push(frame),
                Event::Kex(job) => self.engine.kex_done(job.run(), now, &mut events),
                Event::Stop => self.stopped = true,
                Event::Error(_) | Event::Security(_) | Event::File(_) => {}
            }
        }
        check_end(&self.engine);
    }
}

/// Every end this side decided carries a code the protocol documents (a peer's close keeps
/// the peer's code, whatever it is).
fn check_end(engine: &Engine) {
    if let Some(info) = engine.end_info() {
        if info.initiator == crate::error::Initiator::Local {
            assert!(
                Code::ALL.contains(&info.code),
                "undocumented close code {:?}",
                info.code
            );
        }
    }
}

/// What the fuzzer makes a side send.
fn application_frame(input: &mut Input<'_>) -> Frame {
    let len = usize::from(input.byte());
    let payload = Bytes::copy_from_slice(input.bytes(len));
    match input.byte() % 8 {
        0 => marker(true),
        1 => marker(false),
        2 => handshake::frame(handshake::REQUEST, Bytes::copy_from_slice(&[input.byte() % 2])),
        3 => crate::connection::request::frame(1, u32::from(input.byte()), &payload),
        4 => crate::frame::file::offer(u32::from(input.byte() % 4), "f", Some(100)),
        5 => crate::frame::file::frame(Kind::FileChunk, u32::from(input.byte() % 4), payload),
        6 => Close::new(Code(1000 + u16::from(input.byte())), "x").to_frame(Kind::Close, 0),
        _ => Frame::message(u32::from(input.byte()), payload),
    }
}

/// Two engines and an attacker between them, driven by `data`.
pub fn engine(data: &[u8]) {
    let mut input = Input(data);
    let Some((client, server)) = keyed() else { return };
    let mut now = Instant::now();
    let mut sides = [client, server].map(|opened| Side {
        engine: Engine::new(settings(), opened, true, now),
        queue: Vec::new(),
        stopped: false,
    });
    let mut wire: [Vec<Frame>; 2] = [Vec::new(), Vec::new()];
    while !input.done() {
        let op = input.byte();
        let who = usize::from(op & 1);
        match op >> 1 & 7 {
            0 | 1 => {
                let frame = application_frame(&mut input);
                sides[who].queue.push(frame);
            }
            2 => {
                let side = &mut sides[who];
                let mut batch = if side.engine.may_take() {
                    std::mem::take(&mut side.queue)
                } else {
                    Vec::new()
                };
                let mut out = Vec::new();
                let _ = side.engine.transmit(&mut batch, &mut out, now);
                wire[who].extend(out);
            }
            3 | 4 => {
                // Deliver the next frame on the wire to the other side, possibly altered.
                if !wire[who].is_empty() {
                    let mut frame = wire[who].remove(0);
                    alter(&mut frame, &mut input);
                    sides[1 - who].receive(frame, now);
                }
            }
            5 => {
                // Arbitrary octets as a frame, when they decode as one.
                let len = usize::from(input.byte());
                let mut buf = BytesMut::from(input.bytes(len));
                if let Ok(Some(frame)) = FrameCodec::new(1 << 16).decode(&mut buf) {
                    sides[1 - who].receive(frame, now);
                }
            }
            6 => {
                now += Duration::from_millis(u64::from(input.byte()) * 100);
                let mut events = VecDeque::new();
                sides[who].engine.on_timeout(now, &mut events);
                check_end(&sides[who].engine);
            }
            _ => {
                let _ = sides[who].engine.close_frame(now);
                check_end(&sides[who].engine);
            }
        }
    }
}

/// What the attacker does to a frame in flight.
fn alter(frame: &mut Frame, input: &mut Input<'_>) {
    match input.byte() % 6 {
        0 if !frame.payload.is_empty() => {
            let mut payload = frame.payload.to_vec();
            let at = usize::from(input.byte()) % payload.len();
            payload[at] ^= 1;
            frame.payload = payload.into();
        }
        1 => frame.tag = None,
        2 => frame.id ^= 1,
        _ => {}
    }
}

/// A server's key exchange fed a hostile offer, then a hostile finished.
pub fn handshake_server(data: &[u8]) {
    let mut input = Input(data);
    let config = Arc::new(SecurityConfig::default());
    let mut server = Handshake::new(Role::Server, config, Pins::default());
    server.set_hellos(&Hello::current(), &Hello::current());
    while !input.done() {
        let id = u32::from(input.byte() % 12);
        let len = usize::from(input.byte()) * 2;
        let _ = server.on_message(id, input.bytes(len));
    }
}

/// A client that made a real offer, fed a hostile server's replies.
pub fn handshake_client(data: &[u8]) {
    let mut input = Input(data);
    let config = Arc::new(SecurityConfig::default().suites(vec![Suite::EcdhP256Aes128Gcm]));
    let mut client = Handshake::new(Role::Client, config, Pins::default());
    client.set_hellos(&Hello::current(), &Hello::current());
    if client.offer().is_err() {
        return;
    }
    while !input.done() {
        let id = u32::from(input.byte() % 12);
        let len = usize::from(input.byte()) * 2;
        let _ = client.on_message(id, input.bytes(len));
    }
}

/// The file rules fed arbitrary file frames and application decisions.
pub fn files(data: &[u8]) {
    let mut input = Input(data);
    let mut files = crate::connection::engine::files::Files::new(2);
    while !input.done() {
        let id = u32::from(input.byte() % 4);
        match input.byte() % 8 {
            0 => {
                let _ = files.new_outgoing();
            }
            1 => {
                files.accept(id, u32::from(input.byte()));
            }
            2 => files.grant(id, u32::from(input.byte())),
            3 => files.end_incoming(id),
            _ => {
                let kind = Kind::from_u8(0x20 + input.byte() % 10).unwrap_or(Kind::FileChunk);
                let len = usize::from(input.byte());
                let frame = crate::frame::file::frame(kind, id, Bytes::copy_from_slice(input.bytes(len)));
                let _ = files.on_frame(frame);
            }
        }
    }
}

/// Hello payloads: parsed as a hello, then as credentials and as an answer.
pub fn hello_extensions(data: &[u8]) {
    let Ok(hello) = Hello::parse(&Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = crate::opening::extensions::is_keyed(&hello);
    for keyed in [false, true] {
        if let Ok(credentials) = crate::opening::extensions::Credentials::parse(&hello, keyed) {
            let again = credentials.to_hello();
            let reparsed = crate::opening::extensions::Credentials::parse(&again, keyed);
            assert_eq!(reparsed.ok(), Some(credentials), "credentials survive encoding");
        }
    }
    let _ = crate::opening::extensions::Answer::parse(&hello);
}

/// The frame codec on a stream cut anywhere, and the WebSocket codec on both roles.
pub fn codecs(data: &[u8]) {
    let mut codec = FrameCodec::new(1 << 20);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        assert!(frame.payload.len() <= (1 << 20) + 16);
    }
    let _ = codec.decode_eof(&mut buf);
    for role in [crate::ws::codec::Role::Server, crate::ws::codec::Role::Client] {
        let mut decoder = crate::ws::codec::Decoder::new(role, 1 << 20);
        let mut buf = BytesMut::from(data);
        while let Ok(Some(_)) = decoder.decode(&mut buf) {}
    }
}
