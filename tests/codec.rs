//! The frame codec: properties over arbitrary frames and splits, arbitrary bytes, and the
//! whole-frame hex vectors of docs/PROTOCOL.md checked byte for byte.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};
use truflux::frame::control::{Close, Hello};
use truflux::frame::{Frame, FrameCodec, FrameError, Kind, MAX_ID};
use truflux::Code;

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Hello),
        Just(Kind::Close),
        Just(Kind::Error),
        Just(Kind::Ping),
        Just(Kind::Pong),
        Just(Kind::Message),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        kind(),
        0..=MAX_ID,
        proptest::option::of(any::<[u8; 12]>()),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(kind, id, tag, payload)| Frame {
            kind,
            id,
            tag,
            payload: Bytes::from(payload),
        })
}

fn encode_all(frames: &[Frame]) -> BytesMut {
    let mut codec = FrameCodec::new(1024);
    let mut wire = BytesMut::new();
    for frame in frames {
        codec.encode(frame, &mut wire).unwrap();
    }
    wire
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn decode_of_encode_is_identity_whatever_the_splits(
        frames in proptest::collection::vec(frame(), 0..20),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let wire = encode_all(&frames);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut at = 0;
        for point in points {
            buf.extend_from_slice(&wire[at..point]);
            at = point;
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        prop_assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_over_allocate(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
    ) {
        let mut codec = FrameCodec::new(4096);
        let mut buf = BytesMut::new();
        'feed: for chunk in chunks {
            buf.extend_from_slice(&chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => prop_assert!(frame.payload.len() <= 4096),
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
            // Reserved memory stays within one maximal frame.
            prop_assert!(buf.capacity() <= 4096 + 21 + 64 * 16 + 64);
        }
        let _ = codec.decode_eof(&mut buf);
    }

    #[test]
    fn control_payload_parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let data = Bytes::from(data);
        let _ = Hello::parse(&data);
        let _ = Close::parse(Kind::Close, &data);
    }

    #[test]
    fn hello_round_trips(version in any::<u16>(), exts in proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..20)), 0..8)) {
        let hello = Hello { version, extensions: exts.into_iter().map(|(t, v)| (t, Bytes::from(v))).collect() };
        prop_assert_eq!(Hello::parse(&hello.to_frame().payload).unwrap(), hello);
    }
}

#[test]
fn oversize_length_is_refused_before_any_allocation() {
    let mut codec = FrameCodec::new(1000);
    let mut buf = BytesMut::from(&[0x10, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff][..]);
    let capacity = buf.capacity();
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::PayloadTooLarge {
            len: 0xffff_ffff,
            max: 1000
        })
    ));
    assert_eq!(buf.capacity(), capacity);
}

#[test]
fn frame_len_is_known_from_a_valid_header_only() {
    let codec = FrameCodec::new(1000);
    let wire = encode_all(&[Frame::message(5, Bytes::from(vec![1u8; 300]))]);
    assert_eq!(codec.frame_len(&wire), Some(9 + 300));
    assert_eq!(codec.frame_len(&wire[..9]), Some(9 + 300));
    assert_eq!(codec.frame_len(&wire[..8]), None, "header not complete");
    // Over the limit: no length to reserve for (decoding reports the error).
    assert_eq!(codec.frame_len(&[0x10, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]), None);
}

#[test]
fn reserved_id_bit_and_unknown_kind_are_refused() {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(&[0x10, 0x80, 0, 0, 0, 0, 0, 0, 0][..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::ReservedIdBit(0x8000_0000))
    ));
    let mut buf = BytesMut::from(&[0x14, 0, 0, 0, 0, 0, 0, 0, 0][..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::UnknownKind(0x14))
    ));
    let mut buf = BytesMut::from(&[0x00, 0, 0, 0, 0, 0, 0, 0, 0][..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::UnknownKind(0x00))
    ));
}

#[test]
fn truncated_frame_at_eof_is_an_error() {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(&[0x10, 0, 0, 0, 1, 0, 0, 0, 5, b'a'][..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(matches!(
        codec.decode_eof(&mut buf),
        Err(FrameError::Truncated { buffered: 10 })
    ));
}

#[test]
fn decoded_payload_shares_the_read_buffer() {
    let wire = encode_all(&[Frame::message(1, Bytes::from_static(b"zero copy please"))]);
    let mut buf = wire.clone();
    let start = buf.as_ptr() as usize;
    let frame = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(frame.payload.as_ptr() as usize, start + 9);
}

#[test]
fn close_reason_is_cut_at_a_char_boundary() {
    let close = Close::new(Code::NORMAL, "é".repeat(100));
    assert!(close.reason.len() <= 123);
    assert!(Close::parse(Kind::Close, &close.to_frame(Kind::Close, 0).payload).is_ok());
}

#[test]
fn every_std_code_has_a_distinct_name_and_is_documented() {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let mut names = std::collections::HashSet::new();
    for code in Code::ALL {
        assert!(names.insert(code.name()), "{code:?}");
        let row = format!("| {} | `{}` |", code.0, code.name());
        assert!(spec.contains(&row), "PROTOCOL.md lacks the row {row}");
    }
}

// ---- the hex vectors of docs/PROTOCOL.md ---------------------------------------------------

/// The frames the spec shows, by the name of their vector.
fn spec_frames() -> Vec<(&'static str, Frame)> {
    vec![
        ("client-hello", Hello::current().to_frame()),
        (
            "hello-with-extension",
            Hello {
                version: 3,
                extensions: vec![(0x0001, Bytes::from_static(b"abc"))],
            }
            .to_frame(),
        ),
        ("message-raw", Frame::message(7, Bytes::from_static(b"hi"))),
        // name_id("chat") = 0x224bf9ab; MessagePack {"text": "yo"}.
        (
            "message-chat",
            Frame::message(
                0x224b_f9ab,
                Bytes::from_static(&[0x81, 0xa4, b't', b'e', b'x', b't', 0xa2, b'y', b'o']),
            ),
        ),
        (
            "close-normal",
            Close::new(Code::NORMAL, "bye").to_frame(Kind::Close, 0),
        ),
        (
            "error-unknown-message",
            Close::new(Code::UNKNOWN_MESSAGE, "no").to_frame(Kind::Error, 0x0102_0304),
        ),
        (
            "ping",
            Frame::control(Kind::Ping, Bytes::from_static(&[0, 0, 0, 1])),
        ),
        (
            "pong",
            Frame::control(Kind::Pong, Bytes::from_static(&[0, 0, 0, 1])),
        ),
        ("message-empty", Frame::message(0, Bytes::new())),
        (
            "message-protected",
            Frame {
                kind: Kind::Message,
                id: 7,
                tag: Some(*b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b"),
                payload: Bytes::from_static(b"hi"),
            },
        ),
    ]
}

/// `<!-- vector: NAME -->` followed by a fenced block of hex.
fn spec_vectors() -> Vec<(String, Vec<u8>)> {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let mut vectors = Vec::new();
    let mut rest = spec.as_str();
    while let Some(at) = rest.find("<!-- vector: ") {
        rest = &rest[at + 13..];
        let end = rest.find(" -->").expect("vector marker ends");
        let name = rest[..end].to_owned();
        let open = rest.find("```").expect("a fenced block follows the marker");
        let body_start = open + rest[open..].find('\n').expect("fence line ends") + 1;
        let body_end = body_start + rest[body_start..].find("```").expect("fence closes");
        let hex: String = rest[body_start..body_end]
            .lines()
            .map(|line| line.split('#').next().unwrap_or(""))
            .collect::<String>()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        vectors.push((name, bytes));
        rest = &rest[body_end..];
    }
    vectors
}

#[test]
fn protocol_md_hex_vectors_match_the_codec_byte_for_byte() {
    let frames = spec_frames();
    let vectors = spec_vectors();
    assert_eq!(
        vectors.len(),
        frames.len(),
        "every vector in PROTOCOL.md has a frame here, and back"
    );
    for (name, frame) in frames {
        let (_, bytes) = vectors
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("vector {name} missing from PROTOCOL.md"));
        let mut wire = BytesMut::new();
        FrameCodec::default().encode(&frame, &mut wire).unwrap();
        assert_eq!(&wire[..], &bytes[..], "vector {name}");
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            FrameCodec::default().decode(&mut buf).unwrap(),
            Some(frame),
            "vector {name} decodes"
        );
        assert!(buf.is_empty());
    }
}

#[test]
fn a_protected_frame_the_decoder_accepts_the_encoder_writes_back() {
    // Sealing may pad a maximal payload by 16 octets: both directions allow it.
    let mut codec = FrameCodec::new(100);
    let frame = Frame {
        kind: Kind::Message,
        id: 1,
        tag: Some([7; 12]),
        payload: Bytes::from(vec![0u8; 116]),
    };
    let mut wire = BytesMut::new();
    codec
        .encode(&frame, &mut wire)
        .expect("the padded record encodes");
    assert_eq!(codec.decode(&mut wire).unwrap(), Some(frame));
    let plain = Frame::message(1, Bytes::from(vec![0u8; 101]));
    assert!(
        codec.encode(&plain, &mut BytesMut::new()).is_err(),
        "a plain frame gets no allowance"
    );
}
