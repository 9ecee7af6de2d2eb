//! Two engines against each other in memory, with a fake clock: every rule of the engine
//! without a socket. The harness plays the driver's part: it carries frames between the two
//! sides, runs key-exchange jobs inline and records what each side's application would see.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::security::{Rx, Tx};
use super::{marker, Engine, Event, Opened, Settings};
use crate::error::{Code, Error};
use crate::frame::control::{Close, Hello};
use crate::frame::{Frame, Kind};
use crate::security::handshake::{self, Handshake, Pins, Role, FINISHED, KEX_INIT, KEX_REPLY, REQUEST};
use crate::security::{RekeyPolicy, SecurityConfig, SecurityEvent, Suite};

/// What one side's application saw.
#[derive(Default)]
struct Seen {
    delivered: Vec<Bytes>,
    requests: Vec<(u32, Bytes)>,
    errors: Vec<Code>,
    security: Vec<SecurityEvent>,
    files: Vec<super::files::FileEvent>,
    stopped: bool,
}

struct Side {
    engine: Engine,
    /// The session's outbound queue.
    queue: VecDeque<Frame>,
    seen: Seen,
    /// Frames this side wrote, as they went on the wire (for inspection).
    wrote: Vec<Frame>,
}

impl Side {
    fn send(&mut self, payload: &'static [u8]) {
        self.queue
            .push_back(Frame::message(1, Bytes::from_static(payload)));
    }

    fn handle(&mut self, events: &mut VecDeque<Event>, now: Instant) {
        while let Some(event) = events.pop_front() {
            match event {
                Event::Deliver(message) => self.seen.delivered.push(message.payload),
                Event::Request { request, message } => self.seen.requests.push((request, message.payload)),
                Event::Respond(frame) => self.queue.push_back(frame),
                Event::Error(error) => self.seen.errors.push(error.code()),
                Event::Security(event) => self.seen.security.push(event),
                Event::Kex(job) => self.engine.kex_done(job.run(), now, events),
                Event::File(event) => self.seen.files.push(event),
                Event::Stop => self.seen.stopped = true,
            }
        }
    }

    /// One write: what the engine emits, with what the queue may give it.
    fn transmit(&mut self, now: Instant) -> Vec<Frame> {
        let mut batch = Vec::new();
        if self.engine.may_take() {
            batch.extend(self.queue.drain(..));
        }
        let mut out = Vec::new();
        let sent = self.engine.transmit(&mut batch, &mut out, now).expect("transmit");
        for on in sent.own {
            self.seen.security.push(SecurityEvent::OwnSecure(on));
        }
        self.wrote.extend(out.iter().cloned());
        out
    }

    fn receive(&mut self, frames: Vec<Frame>, now: Instant) {
        let mut events = VecDeque::new();
        for frame in frames {
            self.engine.on_frame(frame, now, &mut events);
            self.handle(&mut events, now);
        }
    }

    fn end(&self) -> Option<(Code, crate::error::Initiator)> {
        self.engine.end_info().map(|info| (info.code, info.initiator))
    }
}

struct Pair {
    client: Side,
    server: Side,
    now: Instant,
}

fn settings(security: SecurityConfig, heartbeat: Option<Duration>) -> Settings {
    Settings {
        security: Arc::new(security),
        heartbeat_interval: heartbeat,
        heartbeat_timeout: Duration::from_secs(5),
        max_incoming_files: 2,
        resume_buffer: 64,
        resume_buffer_bytes: 1 << 20,
        rate_limit: None,
    }
}

fn hellos() -> (Hello, Hello) {
    (Hello::current(), Hello::current())
}

/// Both sides of a plain opening: no keys, key exchanges idle.
fn plain_openings(client: &SecurityConfig, server: &SecurityConfig) -> (Opened, Opened) {
    let (hc, hs) = hellos();
    let open = |role, config: &SecurityConfig| {
        let mut handshake = Handshake::new(role, Arc::new(config.clone()), Pins::default());
        handshake.set_hellos(&hc, &hs);
        Opened {
            handshake,
            tx: Tx::new(config.rekey.clone()),
            rx: Rx::default(),
            keys: None,
            secure: false,
        }
    };
    (open(Role::Client, client), open(Role::Server, server))
}

/// Both sides of a keyed opening: the key exchange run in memory.
fn keyed_openings(config: &SecurityConfig, secure: bool) -> (Opened, Opened) {
    let (hc, hs) = hellos();
    let shared = Arc::new(config.clone());
    let mut client = Handshake::new(Role::Client, shared.clone(), Pins::default());
    let mut server = Handshake::new(Role::Server, shared, Pins::default());
    client.set_hellos(&hc, &hs);
    server.set_hellos(&hc, &hs);
    let offer = client.offer().unwrap().unwrap();
    let reply = server.on_message(KEX_INIT, &offer.payload).unwrap();
    let confirm = client
        .on_message(KEX_REPLY, &reply.send.unwrap().payload)
        .unwrap();
    let done = server
        .on_message(FINISHED, &confirm.send.unwrap().payload)
        .unwrap();
    let now = Instant::now();
    let (mut ctx, mut crx, mut stx, mut srx) = (
        Tx::new(config.rekey.clone()),
        Rx::default(),
        Tx::new(config.rekey.clone()),
        Rx::default(),
    );
    ctx.install(confirm.tx.unwrap(), now);
    crx.install(confirm.rx.unwrap());
    stx.install(reply.tx.unwrap(), now);
    srx.install(done.rx.unwrap());
    let opened = |handshake, tx, rx, keys| Opened {
        handshake,
        tx,
        rx,
        keys,
        secure,
    };
    (
        opened(client, ctx, crx, confirm.keys),
        opened(server, stx, srx, done.keys),
    )
}

impl Pair {
    fn new(
        client: Opened,
        server: Opened,
        security: &SecurityConfig,
        resumable: bool,
        heartbeat: Option<Duration>,
    ) -> Pair {
        let now = Instant::now();
        let side = |opened| Side {
            engine: Engine::new(settings(security.clone(), heartbeat), opened, resumable, now),
            queue: VecDeque::new(),
            seen: Seen::default(),
            wrote: Vec::new(),
        };
        Pair {
            client: side(client),
            server: side(server),
            now,
        }
    }

    fn keyed(security: SecurityConfig) -> Pair {
        let (c, s) = keyed_openings(&security, false);
        Pair::new(c, s, &security, true, None)
    }

    fn plain(security: SecurityConfig) -> Pair {
        let (c, s) = plain_openings(&security, &security);
        Pair::new(c, s, &security, true, None)
    }

    /// Carries frames both ways until neither side has anything to send.
    fn settle(&mut self) {
        for _ in 0..64 {
            let c2s = self.client.transmit(self.now);
            let s2c = self.server.transmit(self.now);
            if c2s.is_empty() && s2c.is_empty() {
                return;
            }
            self.server.receive(c2s, self.now);
            self.client.receive(s2c, self.now);
        }
        panic!("the pair never settled");
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let mut events = VecDeque::new();
        self.client.engine.on_timeout(self.now, &mut events);
        self.client.handle(&mut events, self.now);
        self.server.engine.on_timeout(self.now, &mut events);
        self.server.handle(&mut events, self.now);
    }
}

fn gcm() -> SecurityConfig {
    SecurityConfig::default().suites(vec![Suite::EcdhP256Aes128Gcm])
}

fn request(on: bool) -> Frame {
    handshake::frame(REQUEST, Bytes::from(vec![u8::from(on)]))
}

#[test]
fn toggles_in_both_directions_protect_exactly_the_frames_after_them() {
    let mut pair = Pair::keyed(gcm());
    pair.client.send(b"plain");
    pair.client.queue.push_back(marker(true));
    pair.client.send(b"sealed");
    // The server asks the client to turn off again, and turns its own on at the client's request.
    pair.client.queue.push_back(request(true));
    pair.settle();
    assert_eq!(pair.server.seen.delivered, ["plain", "sealed"]);
    assert!(pair.client.engine.is_secure() && pair.server.engine.is_peer_secure());
    assert!(
        pair.server.engine.is_secure(),
        "the server honoured the protected request"
    );
    assert!(pair
        .client
        .seen
        .security
        .contains(&SecurityEvent::PeerSecure(true)));
    assert!(pair
        .server
        .seen
        .security
        .contains(&SecurityEvent::OwnSecure(true)));
    let app: Vec<bool> = pair
        .client
        .wrote
        .iter()
        .filter(|f| f.kind == Kind::Message)
        .map(|f| f.tag.is_some())
        .collect();
    assert_eq!(app, [false, true], "only what follows SEC_ON is protected");

    pair.client.queue.push_back(marker(false));
    pair.client.send(b"plain again");
    pair.settle();
    assert!(!pair.server.engine.is_peer_secure());
    assert_eq!(pair.client.wrote.last().map(|f| f.tag.is_some()), Some(false));
    assert!(
        pair.client
            .wrote
            .iter()
            .filter(|f| f.kind == Kind::Security)
            .all(|f| f.tag.is_some()),
        "security frames are always protected once keyed"
    );
}

#[test]
fn a_plain_frame_in_a_secure_direction_is_unexpected_plaintext_and_nothing_after_it_is_delivered() {
    let mut pair = Pair::keyed(gcm());
    pair.client.queue.push_back(marker(true));
    pair.settle();
    let injected = vec![
        Frame::message(1, Bytes::from_static(b"forged")),
        Frame::message(1, Bytes::from_static(b"later")),
    ];
    pair.server.receive(injected, pair.now);
    assert_eq!(pair.server.end().map(|e| e.0), Some(Code::UNEXPECTED_PLAINTEXT));
    assert!(pair.server.seen.delivered.is_empty());
    assert!(pair.server.seen.stopped);
}

#[test]
fn after_keys_a_plain_request_to_turn_off_is_refused_and_changes_nothing() {
    let mut pair = Pair::keyed(gcm());
    pair.server.queue.push_back(marker(true));
    pair.settle();
    assert!(pair.server.engine.is_secure());
    // A relay injects a plain REQUEST 00 towards the server.
    pair.server.receive(vec![request(false)], pair.now);
    assert_eq!(pair.server.end().map(|e| e.0), Some(Code::UNEXPECTED_PLAINTEXT));
    assert!(
        pair.server.engine.is_secure(),
        "the server's direction stayed secure"
    );
    assert!(!pair
        .server
        .queue
        .iter()
        .any(|f| (f.kind, f.id) == (Kind::Security, handshake::SEC_OFF)));
}

#[test]
fn a_plain_close_in_a_keyed_direction_is_a_lost_connection_not_a_clean_end() {
    let mut pair = Pair::keyed(gcm());
    let forged = Close::new(Code::NORMAL, "bye").to_frame(Kind::Close, 0);
    pair.client.receive(vec![forged], pair.now);
    let info = pair.client.engine.end_info().unwrap();
    assert_eq!(info.code, Code::ABNORMAL);
    assert!(
        !pair.client.engine.ends_with_connection(),
        "a resumable session resumes"
    );
    // A protected close is believed.
    let mut pair = Pair::keyed(gcm());
    pair.server
        .engine
        .record_end(Code::NORMAL, "bye", crate::error::Initiator::Local, true);
    let real = pair.server.engine.close_frame(pair.now).unwrap();
    assert!(real.tag.is_some());
    pair.client.receive(vec![real], pair.now);
    assert_eq!(pair.client.end().map(|e| e.0), Some(Code::NORMAL));
    assert!(pair.client.engine.ends_with_connection());
    assert!(pair.client.engine.peer_closed(), "the close is answered");
}

#[test]
fn a_strict_side_refuses_to_turn_off_and_closes_when_its_peer_does() {
    let security = gcm().required(true);
    let (c, s) = keyed_openings(&security, true);
    let mut pair = Pair::new(c, s, &security, false, None);
    pair.settle();
    assert!(
        pair.client.engine.is_secure() && pair.server.engine.is_secure(),
        "both start secure"
    );
    assert!(pair.client.engine.may_turn_off().is_err());
    // The peer asks our direction off: refused with an error frame, still secure.
    pair.client.queue.push_back(request(false));
    pair.settle();
    assert!(pair.server.engine.is_secure());
    assert!(pair.client.seen.errors.contains(&Code::SECURITY_REQUIRED));
    // A peer that turns its own off anyway (past its own engine's refusal) ends the connection.
    let mut forced = Vec::new();
    pair.client
        .engine
        .conn
        .tx
        .push(marker(false), &mut forced, pair.now)
        .unwrap();
    pair.server.receive(forced, pair.now);
    assert_eq!(pair.server.end().map(|e| e.0), Some(Code::SECURITY_REQUIRED));
}

#[test]
fn keys_rotate_after_the_policy_limit_and_the_receiver_follows() {
    let security = gcm().rekey(RekeyPolicy::default().records(3));
    let mut pair = Pair::keyed(security);
    pair.client.queue.push_back(marker(true));
    for _ in 0..10 {
        pair.client.send(b"m");
    }
    pair.settle();
    assert_eq!(pair.server.seen.delivered.len(), 10);
    let rekeys = pair
        .client
        .wrote
        .iter()
        .filter(|f| f.kind == Kind::Security && f.tag.is_some())
        .count();
    assert!(rekeys >= 4, "SEC_ON and a REKEY every 3 records");
    // A record replayed across the boundary no longer verifies.
    let replay = pair.client.wrote[2].clone();
    pair.server.receive(vec![replay], pair.now);
    assert_eq!(pair.server.end().map(|e| e.0), Some(Code::BAD_RECORD));
}

/// Sends `n` messages, lets the first `delivered` of them reach the server, cuts the
/// connection (what was in flight is lost), and resumes on a fresh keyed connection.
fn resume_after_cut(n: usize, delivered: usize) -> Vec<Bytes> {
    let security = gcm();
    let mut pair = Pair::keyed(security.clone());
    for i in 0..n {
        pair.client
            .queue
            .push_back(Frame::message(1, Bytes::from(vec![i as u8])));
    }
    let wire = pair.client.transmit(pair.now);
    let (arrived, _lost): (Vec<_>, Vec<_>) = wire.into_iter().enumerate().partition(|(i, _)| *i < delivered);
    pair.server
        .receive(arrived.into_iter().map(|(_, f)| f).collect(), pair.now);
    pair.client.engine.on_lost("cut");
    pair.server.engine.on_lost("cut");
    let (c, s) = keyed_openings(&security, false);
    let (client_count, server_count) = (pair.client.engine.received(), pair.server.engine.received());
    pair.client.engine.attach(c, server_count, pair.now).unwrap();
    pair.server.engine.attach(s, client_count, pair.now).unwrap();
    pair.settle();
    pair.server.seen.delivered
}

#[test]
fn a_resume_after_a_cut_at_every_position_delivers_each_frame_once_in_order() {
    let n = 12;
    let expected: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![i as u8])).collect();
    for cut in 0..=n {
        assert_eq!(resume_after_cut(n, cut), expected, "cut after {cut} frames");
    }
}

#[test]
fn a_resume_whose_count_does_not_fit_is_refused() {
    let security = gcm();
    let mut pair = Pair::keyed(security.clone());
    pair.client.send(b"one");
    pair.settle();
    let (c, _) = keyed_openings(&security, false);
    assert!(
        pair.client.engine.attach(c, 5, pair.now).is_err(),
        "more than written"
    );
}

#[test]
fn a_silent_peer_gets_a_ping_after_the_interval_and_times_out_after_the_timeout() {
    let security = gcm();
    let (c, s) = keyed_openings(&security, false);
    let mut pair = Pair::new(c, s, &security, true, Some(Duration::from_secs(10)));
    let start = pair.now;
    let client = &mut pair.client;
    let mut events = VecDeque::new();
    assert_eq!(
        client.engine.poll_timeout(),
        Some(start + Duration::from_secs(10))
    );
    client
        .engine
        .on_timeout(start + Duration::from_secs(10), &mut events);
    let pings = client.transmit(start + Duration::from_secs(10));
    assert!(
        pings.iter().any(|f| f.kind == Kind::Ping && f.tag.is_some()),
        "a protected ping"
    );
    assert_eq!(
        client.engine.poll_timeout(),
        Some(start + Duration::from_secs(15))
    );
    client
        .engine
        .on_timeout(start + Duration::from_secs(14), &mut events);
    assert!(client.end().is_none());
    client
        .engine
        .on_timeout(start + Duration::from_secs(15), &mut events);
    assert_eq!(client.end().map(|e| e.0), Some(Code::HEARTBEAT_TIMEOUT));
    assert!(
        !client.engine.ends_with_connection(),
        "a heartbeat timeout is a lost connection"
    );
    // On the other side, any frame counts as a sign of life.
    let later = start + Duration::from_secs(12);
    pair.server.receive(pings, later);
    assert_eq!(
        pair.server.engine.poll_timeout(),
        Some(later + Duration::from_secs(10))
    );
}

#[test]
fn a_request_times_out_at_its_deadline_and_its_late_reply_is_unknown() {
    let mut pair = Pair::keyed(gcm());
    let answers = Arc::new(Mutex::new(Vec::new()));
    let recorded = answers.clone();
    let id = pair.client.engine.register_request(
        pair.now,
        Duration::from_secs(2),
        Box::new(move |answer| recorded.lock().unwrap().push(answer.map_err(|e: Error| e.code()))),
    );
    assert_eq!(
        pair.client.engine.poll_timeout(),
        Some(pair.now + Duration::from_secs(2))
    );
    pair.advance(Duration::from_secs(2));
    assert_eq!(*answers.lock().unwrap(), [Err(Code::REQUEST_TIMEOUT)]);
    let late = Frame {
        kind: Kind::Reply,
        id,
        tag: None,
        payload: Bytes::from_static(b"late"),
    };
    pair.server.queue.push_back(late);
    pair.settle();
    assert!(pair.client.seen.errors.contains(&Code::UNKNOWN_REQUEST));
    assert_eq!(
        pair.server.seen.errors,
        [Code::UNKNOWN_REQUEST],
        "the server is told"
    );
}

#[test]
fn a_graceful_close_is_written_after_everything_queued_before_it_and_answered() {
    let mut pair = Pair::keyed(gcm());
    pair.client.send(b"first");
    pair.client
        .engine
        .record_end(Code::NORMAL, "done", crate::error::Initiator::Local, true);
    pair.client
        .queue
        .push_back(Close::new(Code::NORMAL, "done").to_frame(Kind::Close, 0));
    pair.client.send(b"never");
    let wire = pair.client.transmit(pair.now);
    assert_eq!(
        wire.iter().map(|f| f.kind).collect::<Vec<_>>(),
        [Kind::Message, Kind::Close]
    );
    assert!(
        wire[1].tag.is_some(),
        "the close of a keyed direction is protected"
    );
    assert!(!pair.client.engine.may_take());
    pair.server.receive(wire, pair.now);
    assert_eq!(pair.server.seen.delivered, ["first"]);
    assert!(pair.server.engine.peer_closed());
    let answer = pair
        .server
        .engine
        .close_frame(pair.now)
        .expect("the answering close");
    assert_eq!(
        Close::parse(Kind::Close, &open_for(&mut pair.client, answer))
            .unwrap()
            .code,
        Code::NORMAL
    );
    // Our graceful close was recorded first: it stays the end, and reading goes on meanwhile.
    assert_eq!(pair.client.end().map(|e| e.0), Some(Code::NORMAL));
}

/// Opens a frame the way `side`'s receiving rules do, returning its payload.
fn open_for(side: &mut Side, frame: Frame) -> Bytes {
    match side.engine.conn.rx.accept(frame).unwrap() {
        super::security::Arrival::Frame(frame) => frame.payload,
        super::security::Arrival::Lost => panic!("unprotected"),
    }
}

#[test]
fn a_close_before_any_keys_is_plain_and_a_forced_close_after_is_sealed() {
    let mut pair = Pair::plain(gcm());
    pair.client
        .engine
        .record_end(Code::POLICY_VIOLATION, "go", crate::error::Initiator::Local, true);
    let plain = pair.client.engine.close_frame(pair.now).unwrap();
    assert!(plain.tag.is_none());
    assert!(pair.client.engine.close_frame(pair.now).is_none(), "sent once");
    let mut keyed = Pair::keyed(gcm());
    keyed.client.engine.on_lost("gone");
    assert!(
        keyed.client.engine.close_frame(keyed.now).is_none(),
        "a lost connection sends nothing"
    );
}

#[test]
fn a_lazy_key_exchange_keys_each_direction_at_its_own_point_of_the_stream() {
    let mut pair = Pair::plain(gcm());
    pair.client.send(b"before");
    let job = pair
        .client
        .engine
        .begin_kex()
        .unwrap()
        .expect("the client offers");
    let mut events = VecDeque::new();
    pair.client.engine.kex_done(job.run(), pair.now, &mut events);
    pair.client.handle(&mut events, pair.now);
    pair.settle();
    assert!(pair.client.engine.suite().is_some(), "the exchange completed");
    pair.client.queue.push_back(marker(true));
    pair.client.send(b"after");
    pair.settle();
    assert_eq!(pair.server.seen.delivered, ["before", "after"]);
    assert!(pair.server.engine.is_peer_secure());
    assert!(matches!(
        pair.server.engine.suite(),
        Some(Suite::EcdhP256Aes128Gcm)
    ));
    assert!(pair
        .client
        .seen
        .security
        .iter()
        .any(|e| matches!(e, SecurityEvent::Handshaked { .. })));
    assert!(pair.server.engine.resume_secret().is_some() && pair.client.engine.resume_secret().is_some());
    assert_eq!(
        pair.server.engine.resume_secret().map(|s| **s),
        pair.client.engine.resume_secret().map(|s| **s),
        "both sides hold the same resume secret"
    );
}

#[test]
fn no_common_suite_closes_unless_the_side_opted_into_falling_back() {
    let server = SecurityConfig::default().suites(vec![Suite::DhFfdhe2048Aes256CbcHmacSha256]);
    let client = gcm();
    let (c, s) = plain_openings(&client, &server);
    let now = Instant::now();
    let side = |opened, security: &SecurityConfig| Side {
        engine: Engine::new(settings(security.clone(), None), opened, false, now),
        queue: VecDeque::new(),
        seen: Seen::default(),
        wrote: Vec::new(),
    };
    let mut pair = Pair {
        client: side(c, &client),
        server: side(s, &server),
        now,
    };
    let job = pair.client.engine.begin_kex().unwrap().unwrap();
    let mut events = VecDeque::new();
    pair.client.engine.kex_done(job.run(), now, &mut events);
    pair.settle();
    assert_eq!(pair.client.end().map(|e| e.0), Some(Code::SECURITY_REQUIRED));
    assert!(pair
        .client
        .seen
        .security
        .iter()
        .any(|e| matches!(e, SecurityEvent::FailSecure { .. })));
    assert_eq!(pair.server.end().map(|e| e.0), Some(Code::SECURITY_REQUIRED));
}

#[test]
fn protected_records_before_keys_and_plain_toggles_are_bad_records() {
    let mut pair = Pair::plain(gcm());
    let mut protected = Frame::message(1, Bytes::from_static(b"x"));
    protected.tag = Some([0; 12]);
    pair.server.receive(vec![protected], pair.now);
    assert_eq!(pair.server.end().map(|e| e.0), Some(Code::BAD_RECORD));
    let mut pair = Pair::plain(gcm());
    pair.server.receive(vec![marker(true)], pair.now);
    assert_eq!(pair.server.end().map(|e| e.0), Some(Code::BAD_RECORD));
}

#[test]
fn file_content_beyond_the_credit_is_refused_and_the_connection_goes_on() {
    use crate::frame::file as wire;
    let mut pair = Pair::keyed(gcm());
    let id = pair.client.engine.new_outgoing_file();
    pair.client.queue.push_back(wire::offer(id, "f", Some(10)));
    pair.settle();
    assert!(matches!(
        pair.server.seen.files[..],
        [super::files::FileEvent::Offer { .. }]
    ));
    assert!(pair.server.engine.accept_file(id, 4));
    pair.client
        .queue
        .push_back(wire::frame(Kind::FileChunk, id, Bytes::from_static(b"12345")));
    pair.client.send(b"still here");
    pair.settle();
    assert!(pair.server.seen.errors.contains(&Code::FILE_FLOW_VIOLATION));
    assert_eq!(pair.server.seen.delivered, ["still here"]);
    assert!(pair.server.end().is_none());
    assert!(
        matches!(
            &pair.client.seen.files[..],
            [super::files::FileEvent::Refused {
                code: Code::FILE_FLOW_VIOLATION,
                ..
            }]
        ),
        "the sender is told"
    );
}

#[test]
fn acknowledgements_free_the_resume_buffer_and_a_false_count_is_a_protocol_error() {
    let mut pair = Pair::keyed(gcm());
    for _ in 0..40 {
        pair.client.send(b"m");
    }
    pair.settle();
    assert_eq!(pair.server.seen.delivered.len(), 40);
    assert!(
        pair.server.wrote.iter().any(|f| f.kind == Kind::Ack),
        "an ACK after 32 frames"
    );
    let forged = Frame::control(Kind::Ack, Bytes::copy_from_slice(&1000u64.to_be_bytes()));
    let mut sealed = Vec::new();
    pair.server
        .engine
        .conn
        .tx
        .push(forged, &mut sealed, pair.now)
        .unwrap();
    pair.client.receive(sealed, pair.now);
    assert_eq!(pair.client.end().map(|e| e.0), Some(Code::PROTOCOL_ERROR));
}

fn limited(pair: &mut Pair, limit: crate::config::RateLimit) {
    pair.server.engine.rate = Some(Box::new(super::rate::Rate::new(&limit, pair.now)));
}

#[test]
fn a_slowed_peer_does_not_time_out_while_its_reads_are_held() {
    let security = gcm();
    let (c, s) = plain_openings(&security, &security);
    let mut pair = Pair::new(c, s, &security, true, Some(Duration::from_secs(10)));
    let limit = crate::config::RateLimit::new(crate::config::RatePolicy::Slow).messages(1, 1);
    limited(&mut pair, limit);
    for _ in 0..20 {
        pair.client.send(b"flood");
    }
    let start = pair.now;
    let frames = pair.client.transmit(start);
    pair.server.receive(frames, start);
    assert_eq!(pair.server.seen.delivered.len(), 20, "slowed, not dropped");
    let until = pair
        .server
        .engine
        .read_pause(start)
        .expect("held after the burst");
    assert_eq!(until - start, Duration::from_secs(19));
    // Silence would be fatal after 15 s; the held reads do not count as silence.
    pair.advance(Duration::from_secs(16));
    assert!(pair.server.end().is_none());
    assert_eq!(
        pair.server.engine.poll_timeout(),
        Some(until + Duration::from_secs(10))
    );
}

#[test]
fn a_peer_over_its_rate_under_the_close_policy_is_closed_with_policy_violation() {
    let mut pair = Pair::plain(gcm());
    let limit = crate::config::RateLimit::new(crate::config::RatePolicy::Close).messages(1, 2);
    limited(&mut pair, limit);
    for _ in 0..3 {
        pair.client.send(b"flood");
    }
    pair.settle();
    assert_eq!(pair.server.seen.delivered.len(), 2, "the burst, then nothing");
    assert_eq!(pair.server.seen.errors, vec![Code::POLICY_VIOLATION]);
    assert_eq!(pair.server.end().map(|e| e.0), Some(Code::POLICY_VIOLATION));
    assert!(pair.server.engine.ends_with_connection(), "the session ends");
    let close = pair.server.engine.close_frame(pair.now).expect("a close frame");
    assert_eq!(
        Close::parse(close.kind, &close.payload).map(|c| c.code).ok(),
        Some(Code::POLICY_VIOLATION)
    );
}
