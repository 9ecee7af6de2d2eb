//! In-band security: known-answer vectors, the record format of PROTOCOL.md byte for byte, the
//! id mapping, handshakes and toggles over TCP and WebSocket, key rotation, and a man in the
//! middle on loopback that tampers with records and handshakes.

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
use truflux::security::pht::Pht;
use truflux::security::record::{Opener, Sealer};
use truflux::security::{kex, schedule, RekeyPolicy, SecurityConfig, SecurityEvent, Suite};
use truflux::{
    protocol, Client, ClientConfig, Code, ConnectionConfig, Error, Message, Peer, Server, ServerConfig,
};

fn hex(text: &str) -> Vec<u8> {
    let text: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

// ---- known-answer vectors for what the crates provide -----------------------------------------

#[test]
fn sha256_fips180_abc() {
    assert_eq!(
        schedule::hash(b"abc").to_vec(),
        hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
}

#[test]
fn hmac_sha256_rfc4231_case_2() {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
    mac.update(b"what do ya want for nothing?");
    assert_eq!(
        mac.finalize().into_bytes().to_vec(),
        hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
}

#[test]
fn hkdf_sha256_rfc5869_case_1() {
    let ikm = [0x0bu8; 22];
    let salt = hex("000102030405060708090a0b0c");
    let info = hex("f0f1f2f3f4f5f6f7f8f9");
    let (prk, hkdf) = hkdf::Hkdf::<sha2::Sha256>::extract(Some(&salt), &ikm);
    assert_eq!(
        prk.to_vec(),
        hex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
    );
    let mut okm = [0u8; 42];
    hkdf.expand(&info, &mut okm).unwrap();
    assert_eq!(
        okm.to_vec(),
        hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    );
}

#[test]
fn aes256_cbc_sp800_38a_f25() {
    use aes::cipher::block_padding::NoPadding;
    use aes::cipher::{BlockModeEncrypt, KeyIvInit};
    let key = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
    let iv = hex("000102030405060708090a0b0c0d0e0f");
    let mut buf = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
    let key: [u8; 32] = key.try_into().unwrap();
    let iv: [u8; 16] = iv.try_into().unwrap();
    let encryptor = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into());
    let len = buf.len();
    encryptor.encrypt_padded::<NoPadding>(&mut buf, len).unwrap();
    assert_eq!(
        buf,
        hex("f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d")
    );
}

#[test]
fn aes128_gcm_test_case_2_with_a_96_bit_tag() {
    use aes_gcm::aead::consts::U12;
    use aes_gcm::{AeadInOut, AesGcm, KeyInit};
    // McGrew & Viega, GCM test case 2: zero key, zero IV, one zero block. A 96-bit tag is the
    // first 12 octets of the 128-bit tag ab6e47d42cec13bdf53a67b21257bddf.
    let aead = AesGcm::<aes::Aes128, U12, U12>::new(&[0u8; 16].into());
    let mut buf = [0u8; 16];
    let tag = aead
        .encrypt_inout_detached(&[0u8; 12].into(), &[], (&mut buf[..]).into())
        .unwrap();
    assert_eq!(buf.to_vec(), hex("0388dace60b6a392f328c2b971b2fe78"));
    assert_eq!(tag.to_vec(), hex("ab6e47d42cec13bdf53a67b2"));
}

#[test]
fn p256_ecdh_rfc5903_section_8_1() {
    let i = p256::SecretKey::from_slice(&hex(
        "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
    ))
    .unwrap();
    let gr = hex(
        "04D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63\
         56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB",
    );
    let share = kex::KeyShare::Ecdh(i);
    let z = share.agree(&gr).unwrap();
    assert_eq!(
        z.to_vec(),
        hex("D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE")
    );
    // A point off the curve (last octet of y changed) is refused.
    let mut bad = gr.clone();
    bad[64] ^= 1;
    assert!(share.agree(&bad).is_err());
}

#[test]
fn ffdhe2048_generator_has_prime_order_and_bad_values_are_refused() {
    use num_bigint_dig::BigUint;
    let p = kex::ffdhe2048_p();
    assert_eq!(p.bits(), 2048);
    let q: BigUint = (&p - 1u32) >> 1usize;
    // 2 generates the subgroup of prime order q: a typo in p would break this.
    assert_eq!(BigUint::from(2u32).modpow(&q, &p), BigUint::from(1u32));
    let fixed = |v: &BigUint| {
        let b = v.to_bytes_be();
        let mut out = vec![0u8; 256 - b.len()];
        out.extend_from_slice(&b);
        out
    };
    for bad in [
        BigUint::from(0u32),
        BigUint::from(1u32),
        &p - 1u32,
        p.clone(),
        &p - 2u32,
    ] {
        // p − 2 = −2 is a quadratic non-residue: outside the subgroup.
        assert!(
            kex::validate_dh_public(&fixed(&bad), &p).is_err(),
            "{bad:x} accepted"
        );
    }
    assert!(
        kex::validate_dh_public(&[1u8; 255], &p).is_err(),
        "short value accepted"
    );
    let (share, public) = kex::KeyShare::generate(Suite::DhFfdhe2048Aes256CbcHmacSha256);
    let (other, other_public) = kex::KeyShare::generate(Suite::DhFfdhe2048Aes256CbcHmacSha256);
    assert!(kex::validate_dh_public(&public, &p).is_ok());
    assert_eq!(
        *share.agree(&other_public).unwrap(),
        *other.agree(&public).unwrap()
    );
}

// ---- our record format, byte for byte against PROTOCOL.md --------------------------------------

fn fixed_secret() -> schedule::Secret {
    let mut secret = [0u8; 32];
    for (i, b) in secret.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    zeroize::Zeroizing::new(secret)
}

/// `<!-- sealed-vector: NAME -->` and the fenced hex that follows, from PROTOCOL.md.
fn sealed_vector(name: &str) -> Vec<u8> {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let marker = format!("<!-- sealed-vector: {name} -->");
    let at = spec
        .find(&marker)
        .unwrap_or_else(|| panic!("{marker} missing from PROTOCOL.md"));
    let rest = &spec[at..];
    let start = rest.find("```").unwrap();
    let body = &rest[start + rest[start..].find('\n').unwrap() + 1..];
    let body = &body[..body.find("```").unwrap()];
    hex(&body
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<String>())
}

fn wire(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    FrameCodec::default().encode(frame, &mut out).unwrap();
    out.to_vec()
}

#[test]
fn sealed_records_match_protocol_md_byte_for_byte() {
    for (suite, name) in [
        (Suite::EcdhP256Aes128Gcm, "gcm"),
        (Suite::DhFfdhe2048Aes256CbcHmacSha256, "cbc"),
    ] {
        let mut sealer = Sealer::new(suite, fixed_secret());
        let mut opener = Opener::new(suite, fixed_secret());
        for seq in 0..2u32 {
            let frame = Frame::message(7, Bytes::from_static(b"hi"));
            let sealed = sealer.seal(frame.clone()).unwrap();
            assert_eq!(
                wire(&sealed),
                sealed_vector(&format!("{name}-seq{seq}")),
                "{name} record {seq}"
            );
            assert_eq!(opener.open(sealed).unwrap(), frame);
        }
    }
    let pht = Pht::new(&[0u8; 16]);
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let line = format!("maps id 7 to 0x{:08x}", pht.map(7));
    assert!(spec.contains(&line), "PROTOCOL.md must say: {line}");
}

#[test]
fn sealing_and_opening_never_change_bytes_another_handle_shares() {
    for suite in Suite::ALL {
        let original = vec![0x5au8; 1000];
        let payload = Bytes::from(original.clone());
        let mut sealer = Sealer::new(suite, fixed_secret());
        let sealed = sealer.seal(Frame::message(1, payload.clone())).unwrap();
        assert_eq!(payload, original, "{suite}: the sender's copy stays plain");
        assert_ne!(
            sealed.payload[..16],
            original[..16],
            "{suite}: the record is encrypted"
        );

        let ciphertext = sealed.payload.to_vec();
        let kept = sealed.payload.clone();
        let opened = Opener::new(suite, fixed_secret()).open(sealed).unwrap();
        assert_eq!(opened.payload, original, "{suite}: opens to the plaintext");
        assert_eq!(kept, ciphertext, "{suite}: another holder still sees the record");

        // Nothing else holds these: sealed and opened in their own memory, still correct.
        let mut sealer = Sealer::new(suite, fixed_secret());
        let sealed = sealer
            .seal(Frame::message(1, Bytes::from(original.clone())))
            .unwrap();
        assert_eq!(
            sealed.payload, ciphertext,
            "{suite}: in place seals the same record"
        );
        let opened = Opener::new(suite, fixed_secret()).open(sealed).unwrap();
        assert_eq!(
            opened.payload, original,
            "{suite}: in place opens the same plaintext"
        );
    }
}

#[test]
fn records_are_bound_to_their_sequence_header_and_key() {
    for suite in Suite::ALL {
        let mut sealer = Sealer::new(suite, fixed_secret());
        let first = sealer
            .seal(Frame::message(1, Bytes::from_static(b"first")))
            .unwrap();
        let second = sealer
            .seal(Frame::message(1, Bytes::from_static(b"second")))
            .unwrap();
        // Out of order: the second record under the first sequence number.
        assert!(
            Opener::new(suite, fixed_secret()).open(second).is_err(),
            "{suite}: reorder"
        );
        // A changed header (the id) breaks the tag.
        let mut moved = first.clone();
        moved.id ^= 1;
        assert!(
            Opener::new(suite, fixed_secret()).open(moved).is_err(),
            "{suite}: header"
        );
        // Another kind with the same bytes.
        let mut rekinded = first.clone();
        rekinded.kind = Kind::Error;
        assert!(
            Opener::new(suite, fixed_secret()).open(rekinded).is_err(),
            "{suite}: kind"
        );
        // Another key.
        let other = zeroize::Zeroizing::new([9u8; 32]);
        assert!(
            Opener::new(suite, other).open(first.clone()).is_err(),
            "{suite}: key"
        );
        // After a rekey both sides move on together.
        let mut sealer = Sealer::new(suite, fixed_secret()).next();
        let mut opener = Opener::new(suite, fixed_secret());
        opener.advance();
        assert!(
            opener
                .open(sealer.seal(Frame::message(3, Bytes::new())).unwrap())
                .is_ok(),
            "{suite}: rekey"
        );
    }
}

// ---- the id mapping ------------------------------------------------------------------------------

#[test]
fn pht_is_a_bijection_over_the_whole_31_bit_range() {
    let pht = Pht::new(&[
        0x5a, 0x13, 0xc4, 0x09, 0xff, 0x00, 0x71, 0x2e, 0x88, 0x41, 0x3b, 0xd0, 0x06, 0x99, 0xe7, 0x52,
    ]);
    // unmap ∘ map = identity on the whole finite domain, so map is injective, hence bijective;
    // map never leaves the domain. Split over two threads.
    let halves: Vec<_> = (0..2u32)
        .map(|half| {
            let pht = pht.clone();
            std::thread::spawn(move || {
                let (start, end) = (half << 30, (half << 30) | ((1 << 30) - 1));
                for id in start..=end {
                    let mapped = pht.map(id);
                    if mapped > truflux::frame::MAX_ID || pht.unmap(mapped) != id {
                        return Err(id);
                    }
                }
                Ok(())
            })
        })
        .collect();
    for half in halves {
        assert_eq!(half.join().unwrap(), Ok(()));
    }
}

#[test]
fn the_same_id_maps_differently_in_different_sessions() {
    // Two sessions' traffic secrets differ, and so do their mappings.
    let mut a = Sealer::new(Suite::EcdhP256Aes128Gcm, zeroize::Zeroizing::new([1u8; 32]));
    let mut b = Sealer::new(Suite::EcdhP256Aes128Gcm, zeroize::Zeroizing::new([2u8; 32]));
    let differing = (0..100u32)
        .filter(|&id| {
            a.seal(Frame::message(id, Bytes::new())).unwrap().id
                != b.seal(Frame::message(id, Bytes::new())).unwrap().id
        })
        .count();
    assert!(differing >= 99, "only {differing} of 100 ids map differently");
}

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
        let error = Error::Security {
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
async fn no_common_suite_fails_secure_and_stays_usable_in_plain() {
    let events = Events::default();
    let server = relay_server(
        SecurityConfig::default().suites([Suite::DhFfdhe2048Aes256CbcHmacSha256]),
        &events,
    )
    .await;
    let (a, _a_rx, a_events) = client(
        &server,
        false,
        SecurityConfig::default().suites([Suite::EcdhP256Aes128Gcm]),
    )
    .await
    .unwrap();
    let (_b, mut b_rx, _) = client(&server, false, SecurityConfig::default()).await.unwrap();
    match a.set_own_security(true).await {
        Err(Error::Security { code, .. }) => assert_eq!(code, Code::NO_COMMON_SUITE),
        other => panic!("expected fail_secure, got {other:?}"),
    }
    assert!(matches!(
        a_events.lock().unwrap()[..],
        [SecurityEvent::FailSecure {
            code: Code::NO_COMMON_SUITE,
            ..
        }]
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
async fn a_server_that_requires_security_closes_when_no_suite_is_common() {
    let events = Events::default();
    let required = SecurityConfig::default()
        .suites([Suite::DhFfdhe2048Aes256CbcHmacSha256])
        .required(true);
    let server = relay_server(required, &events).await;
    let (a, _rx, _) = client(
        &server,
        false,
        SecurityConfig::default().suites([Suite::EcdhP256Aes128Gcm]),
    )
    .await
    .unwrap();
    let info = within("the close", a.closed()).await;
    assert_eq!(info.code, Code::SECURITY_REQUIRED);
}

#[tokio::test]
async fn required_security_on_both_sides_is_in_place_before_connect_returns() {
    let events = Events::default();
    let server = relay_server(SecurityConfig::default().required(true), &events).await;
    for ws in [false, true] {
        let (a, mut a_rx, _) = client(&server, ws, SecurityConfig::default().required(true))
            .await
            .unwrap();
        assert!(a.is_secure());
        let (b, _b_rx, _) = client(&server, ws, SecurityConfig::default().required(true))
            .await
            .unwrap();
        b.send_raw(3, &b"x"[..]).await.unwrap();
        let (message, protected) = within("relayed", a_rx.recv()).await.unwrap();
        assert_eq!((message.id, protected), (3, true));
    }
    // A plain client's messages are refused with SECURITY_REQUIRED until its direction is secure.
    let (plain, _rx, _) = client(&server, false, SecurityConfig::default()).await.unwrap();
    plain.send_raw(4, &b"too early"[..]).await.unwrap();
    let refused = events
        .until(|e| match e {
            common::Event::Error(_, text, Code::SECURITY_REQUIRED) => Some(text),
            _ => None,
        })
        .await;
    assert!(
        refused.contains("before the sender's direction was secure"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_pre_shared_key_must_match() {
    let events = Events::default();
    let server = relay_server(SecurityConfig::default().psk(&b"token-123"[..]), &events).await;
    let (good, _rx, _) = client(&server, false, SecurityConfig::default().psk(&b"token-123"[..]))
        .await
        .unwrap();
    assert!(good.handshake().await.is_ok());
    let (bad, _rx, _) = client(&server, false, SecurityConfig::default().psk(&b"guess"[..]))
        .await
        .unwrap();
    assert!(
        bad.handshake().await.is_err(),
        "a wrong PSK must fail the handshake"
    );
    let info = within("close", bad.closed()).await;
    assert_eq!(info.code, Code::HANDSHAKE_FAILED);
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
