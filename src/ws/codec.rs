//! The WebSocket frame codec (RFC 6455 §5): octets in, messages out; headers and masks for
//! frames going out.
//!
//! Pure: no IO, no tasks, no truflux frames. It owns the framing rules: header layout, masking
//! (a server accepts only masked frames, a client only unmasked ones), fragmentation and its
//! reassembly, control frames interleaved with fragments, the size limit, and the close frame's
//! payload. No extension is negotiated, so every reserved bit must be clear.
//!
//! A complete unfragmented message — what truflux peers send — is split off the read buffer
//! without copying; only fragmented messages are copied, into one buffer, as they arrive.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frame::{FrameError, WsViolation};

/// The most octets a control frame (close, ping, pong) may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The longest header: 2 octets, an 8-octet length, a 4-octet mask.
pub const MAX_HEADER_LEN: usize = 14;

/// Frame opcodes (RFC 6455 §5.2); the others are reserved.
pub mod opcode {
    /// Continues a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// Starts a text message.
    pub const TEXT: u8 = 0x1;
    /// Starts a binary message.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xa;
}

/// Which end of the connection this codec serves: it decides which frames must be masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Receives masked frames, sends unmasked ones.
    Server,
    /// Receives unmasked frames, sends masked ones.
    Client,
}

/// One complete incoming WebSocket message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A binary message, reassembled if it was fragmented.
    Binary(Bytes),
    /// A text message. Its octets are not checked for UTF-8: truflux refuses text anyway.
    Text(Bytes),
    /// A ping, to be answered with a pong carrying the same octets.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame: its code and reason, or `None` when it carried no payload.
    Close(Option<(u16, String)>),
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    header_len: usize,
    len: usize,
}

fn violation(what: WsViolation) -> FrameError {
    FrameError::WebSocket(what)
}

/// Decodes WebSocket frames into messages for one role, within a message size limit.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    max_message: usize,
    /// A fragmented message being reassembled: its opcode and what arrived so far.
    partial: Option<(u8, BytesMut)>,
}

impl Decoder {
    /// A decoder for the `role` end that refuses messages longer than `max_message` octets.
    pub fn new(role: Role, max_message: usize) -> Decoder {
        Decoder {
            role,
            max_message,
            partial: None,
        }
    }

    /// Parses the header at the start of `src`: `None` until all of it has arrived. Checks
    /// everything the header alone can break, so no payload is buffered for a frame that
    /// would be refused.
    fn header(&self, src: &[u8]) -> Result<Option<Header>, FrameError> {
        let [first, second, ..] = *src else {
            return Ok(None);
        };
        let fin = first & 0x80 != 0;
        if first & 0x70 != 0 {
            return Err(violation(WsViolation::ReservedBits));
        }
        let opcode = first & 0x0f;
        let control = opcode & 0x08 != 0;
        if !matches!(
            opcode,
            opcode::CONTINUATION
                | opcode::TEXT
                | opcode::BINARY
                | opcode::CLOSE
                | opcode::PING
                | opcode::PONG
        ) {
            return Err(violation(WsViolation::ReservedOpcode(opcode)));
        }
        let masked = second & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(violation(WsViolation::UnmaskedFromClient)),
            (Role::Client, true) => return Err(violation(WsViolation::MaskedFromServer)),
            _ => {}
        }
        let (len, mut at) = match second & 0x7f {
            126 => match src.get(2..4) {
                Some(octets) => (u64::from(u16::from_be_bytes([octets[0], octets[1]])), 4),
                None => return Ok(None),
            },
            127 => match src.get(2..10).and_then(|octets| <[u8; 8]>::try_from(octets).ok()) {
                Some(octets) => (u64::from_be_bytes(octets), 10),
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        if control && (!fin || len > MAX_CONTROL_PAYLOAD as u64) {
            return Err(violation(WsViolation::OversizedControl));
        }
        if !control {
            let before = self.partial.as_ref().map_or(0, |(_, buf)| buf.len()) as u64;
            if len.saturating_add(before) > self.max_message as u64 {
                return Err(FrameError::PayloadTooLarge {
                    len: len.saturating_add(before),
                    max: u32::try_from(self.max_message).unwrap_or(u32::MAX),
                });
            }
        }
        let mask = if masked {
            let Some(octets) = src.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some([octets[0], octets[1], octets[2], octets[3]])
        } else {
            None
        };
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            header_len: at,
            // At most `max_message` (data) or 125 (control): fits.
            len: len as usize,
        }))
    }

    /// The whole length (header and payload) of the frame at the start of `src`, once its
    /// header has arrived and passes the checks: a reader reserves room for all of it at once.
    pub fn frame_len(&self, src: &[u8]) -> Option<usize> {
        match self.header(src) {
            Ok(Some(header)) => Some(header.header_len + header.len),
            _ => None,
        }
    }

    /// Takes the next complete message or control frame off `src`: `None` until one has
    /// arrived. A refused frame is an error; the connection cannot go on after one.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, FrameError> {
        loop {
            let Some(header) = self.header(src)? else {
                return Ok(None);
            };
            if src.len() < header.header_len + header.len {
                return Ok(None);
            }
            src.advance(header.header_len);
            let mut payload = src.split_to(header.len);
            if let Some(mask) = header.mask {
                apply_mask(&mut payload, mask);
            }
            let message = match header.opcode {
                opcode::CLOSE => Incoming::Close(parse_close(&payload)?),
                opcode::PING => Incoming::Ping(payload.freeze()),
                opcode::PONG => Incoming::Pong(payload.freeze()),
                opcode::CONTINUATION => {
                    let Some((_, buf)) = self.partial.as_mut() else {
                        return Err(violation(WsViolation::OrphanContinuation));
                    };
                    buf.extend_from_slice(&payload);
                    if !header.fin {
                        continue;
                    }
                    let Some((opcode, buf)) = self.partial.take() else {
                        continue;
                    };
                    data(opcode, buf.freeze())
                }
                opcode => {
                    if self.partial.is_some() {
                        return Err(violation(WsViolation::NestedMessage));
                    }
                    if !header.fin {
                        self.partial = Some((opcode, payload));
                        continue;
                    }
                    data(opcode, payload.freeze())
                }
            };
            return Ok(Some(message));
        }
    }
}

fn data(opcode: u8, payload: Bytes) -> Incoming {
    if opcode == opcode::TEXT {
        Incoming::Text(payload)
    } else {
        Incoming::Binary(payload)
    }
}

/// Whether `code` may appear in a close frame on the wire (RFC 6455 §7.4).
pub fn is_wire_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(violation(WsViolation::ShortClose)),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !is_wire_close_code(code) {
                return Err(violation(WsViolation::CloseCode(code)));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| violation(WsViolation::CloseReason))?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

/// Appends a frame header: `fin`, `opcode`, a payload of `len` octets, and the masking key a
/// client must send (`None` for a server).
pub fn put_header(dst: &mut impl BufMut, fin: bool, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    dst.put_u8(if fin { 0x80 } else { 0 } | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        dst.put_u8(mask_bit | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        dst.put_u8(mask_bit | 126);
        dst.put_u16(len);
    } else {
        dst.put_u8(mask_bit | 127);
        dst.put_u64(len as u64);
    }
    if let Some(mask) = mask {
        dst.put_slice(&mask);
    }
}

/// The octets [`put_header`] appends for a payload of `len` octets.
pub(crate) fn header_len(len: usize, masked: bool) -> usize {
    let length = if len < 126 {
        0
    } else if len <= usize::from(u16::MAX) {
        2
    } else {
        8
    };
    2 + length + if masked { 4 } else { 0 }
}

/// Masks or unmasks `data` in place with `key` (the same operation both ways), as if `data`
/// began at the start of a frame's payload.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut octets = [0u8; 8];
        octets.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(octets) ^ wide).to_ne_bytes());
    }
    // Whole chunks are a multiple of 4 octets, so the key starts over for the rest.
    for (octet, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *octet ^= k;
    }
}

/// The payload of a close frame: the code and as much of `reason` as fits in a control frame,
/// cut at a character boundary.
pub fn close_payload(code: u16, reason: &str) -> BytesMut {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = BytesMut::with_capacity(2 + cut);
    payload.put_u16(code);
    payload.put_slice(&reason.as_bytes()[..cut]);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(decoder: &mut Decoder, wire: &[u8]) -> Result<Vec<Incoming>, FrameError> {
        let mut buf = BytesMut::from(wire);
        let mut out = Vec::new();
        while let Some(message) = decoder.decode(&mut buf)? {
            out.push(message);
        }
        assert!(buf.is_empty(), "{} octets left undecoded", buf.len());
        Ok(out)
    }

    // The examples of RFC 6455 §5.7.
    const HELLO_UNMASKED: &[u8] = &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    const HELLO_MASKED: &[u8] = &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    const HELLO_FRAGMENTS: &[u8] = &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    const PING_MASKED: &[u8] = &[0x89, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];

    #[test]
    fn rfc_6455_examples_decode() {
        let hello = Incoming::Text(Bytes::from_static(b"Hello"));
        let mut client = Decoder::new(Role::Client, 1 << 20);
        assert_eq!(decode_all(&mut client, HELLO_UNMASKED).unwrap(), [hello]);
        let hello = Incoming::Text(Bytes::from_static(b"Hello"));
        assert_eq!(decode_all(&mut client, HELLO_FRAGMENTS).unwrap(), [hello]);
        let mut server = Decoder::new(Role::Server, 1 << 20);
        let hello = Incoming::Text(Bytes::from_static(b"Hello"));
        assert_eq!(decode_all(&mut server, HELLO_MASKED).unwrap(), [hello]);
        let ping = Incoming::Ping(Bytes::from_static(b"Hello"));
        assert_eq!(decode_all(&mut server, PING_MASKED).unwrap(), [ping]);
    }

    #[test]
    fn rfc_6455_examples_encode() {
        let mut out = BytesMut::new();
        put_header(&mut out, true, opcode::TEXT, 5, None);
        out.put_slice(b"Hello");
        assert_eq!(&out[..], HELLO_UNMASKED);

        let mut out = BytesMut::new();
        let key = [0x37, 0xfa, 0x21, 0x3d];
        put_header(&mut out, true, opcode::TEXT, 5, Some(key));
        let mut payload = *b"Hello";
        apply_mask(&mut payload, key);
        out.put_slice(&payload);
        assert_eq!(&out[..], HELLO_MASKED);

        // 256 octets: a 16-bit length; 64 KiB: a 64-bit length (§5.7's last two examples).
        let mut out = BytesMut::new();
        put_header(&mut out, true, opcode::BINARY, 256, None);
        assert_eq!(&out[..], [0x82, 0x7e, 0x01, 0x00]);
        let mut out = BytesMut::new();
        put_header(&mut out, true, opcode::BINARY, 65536, None);
        assert_eq!(&out[..], [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn masking_matches_octet_by_octet_masking_at_every_length() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut fast = data.clone();
            apply_mask(&mut fast, key);
            let slow: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
            assert_eq!(fast, slow, "length {len}");
        }
    }

    /// A masked client frame carrying `payload`, as a browser would send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let key = [9, 8, 7, 6];
        let mut out = BytesMut::new();
        put_header(&mut out, fin, opcode, payload.len(), Some(key));
        let mut payload = payload.to_vec();
        apply_mask(&mut payload, key);
        out.put_slice(&payload);
        out.to_vec()
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_messages() {
        let mut wire = client_frame(false, opcode::BINARY, &[1; 300]);
        wire.extend(client_frame(true, opcode::PING, b"p"));
        wire.extend(client_frame(false, opcode::CONTINUATION, &[2; 70_000]));
        wire.extend(client_frame(true, opcode::CONTINUATION, &[3; 5]));
        wire.extend(client_frame(true, opcode::BINARY, b"whole"));
        wire.extend(client_frame(true, opcode::CLOSE, &close_payload(1000, "bye")));
        let mut joined = vec![1; 300];
        joined.extend([2; 70_000]);
        joined.extend([3; 5]);
        let expected = [
            Incoming::Ping(Bytes::from_static(b"p")),
            Incoming::Binary(Bytes::from(joined)),
            Incoming::Binary(Bytes::from_static(b"whole")),
            Incoming::Close(Some((1000, "bye".into()))),
        ];
        for step in [1, 2, 3, 7, 13, 125, 4096, wire.len()] {
            let mut decoder = Decoder::new(Role::Server, 1 << 20);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in wire.chunks(step) {
                buf.extend_from_slice(piece);
                while let Some(message) = decoder.decode(&mut buf).unwrap() {
                    out.push(message);
                }
            }
            assert_eq!(out, expected, "split every {step} octets");
        }
    }

    #[test]
    fn frame_len_covers_header_and_payload() {
        let decoder = Decoder::new(Role::Server, 1 << 20);
        let wire = client_frame(true, opcode::BINARY, &[0; 70_000]);
        assert_eq!(decoder.frame_len(&wire[..1]), None);
        assert_eq!(decoder.frame_len(&wire[..13]), None, "mask not yet here");
        assert_eq!(decoder.frame_len(&wire[..14]), Some(wire.len()));
    }

    fn refused(role: Role, max: usize, wire: &[u8]) -> FrameError {
        let mut decoder = Decoder::new(role, max);
        match decode_all(&mut decoder, wire) {
            Err(error) => error,
            Ok(messages) => panic!("accepted {messages:?}"),
        }
    }

    #[test]
    fn hostile_frames_are_refused_before_their_payload_is_buffered() {
        // Each is refused from its header alone: nothing after it is needed.
        let cases: &[(&str, Role, Vec<u8>)] = &[
            ("unmasked from a client", Role::Server, HELLO_UNMASKED.to_vec()),
            ("masked from a server", Role::Client, HELLO_MASKED.to_vec()),
            ("reserved bit", Role::Client, vec![0xc2, 0x00]),
            ("reserved opcode", Role::Client, vec![0x83, 0x00]),
            ("reserved control opcode", Role::Client, vec![0x8b, 0x00]),
            ("fragmented ping", Role::Client, vec![0x09, 0x00]),
            ("long ping", Role::Client, vec![0x89, 0x7e, 0x00, 0x7e]),
        ];
        for (what, role, wire) in cases {
            let mut decoder = Decoder::new(*role, 1 << 20);
            let mut buf = BytesMut::from(&wire[..]);
            assert!(
                matches!(decoder.decode(&mut buf), Err(FrameError::WebSocket(_))),
                "{what}"
            );
        }
    }

    #[test]
    fn a_huge_length_is_refused_without_allocating() {
        let mut wire = vec![0x82, 0x7f];
        wire.extend(u64::MAX.to_be_bytes());
        let mut decoder = Decoder::new(Role::Client, 1 << 20);
        let mut buf = BytesMut::from(&wire[..]);
        let capacity = buf.capacity();
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(FrameError::PayloadTooLarge { max: 1_048_576, .. })
        ));
        assert_eq!(buf.capacity(), capacity);
        assert_eq!(decoder.frame_len(&wire), None);
    }

    #[test]
    fn fragments_count_against_the_limit_together() {
        let mut wire = client_frame(false, opcode::BINARY, &[0; 600]);
        wire.extend(client_frame(true, opcode::CONTINUATION, &[0; 600]));
        assert!(matches!(
            refused(Role::Server, 1000, &wire),
            FrameError::PayloadTooLarge { len: 1200, max: 1000 }
        ));
    }

    #[test]
    fn broken_fragment_sequences_are_refused() {
        let orphan = client_frame(true, opcode::CONTINUATION, b"x");
        assert!(matches!(
            refused(Role::Server, 100, &orphan),
            FrameError::WebSocket(_)
        ));
        let mut nested = client_frame(false, opcode::BINARY, b"x");
        nested.extend(client_frame(true, opcode::BINARY, b"y"));
        assert!(matches!(
            refused(Role::Server, 100, &nested),
            FrameError::WebSocket(_)
        ));
    }

    #[test]
    fn close_payloads_are_checked() {
        for payload in [&[0x03][..], &[0x03, 0xed], &[0x03, 0xe8, 0xff, 0xfe]] {
            let wire = client_frame(true, opcode::CLOSE, payload);
            assert!(
                matches!(refused(Role::Server, 100, &wire), FrameError::WebSocket(_)),
                "{payload:?}"
            );
        }
        let mut decoder = Decoder::new(Role::Server, 100);
        let empty = client_frame(true, opcode::CLOSE, b"");
        assert_eq!(decode_all(&mut decoder, &empty).unwrap(), [Incoming::Close(None)]);
    }

    #[test]
    fn close_reasons_are_cut_to_fit_at_a_character_boundary() {
        let reason = "é".repeat(100);
        let payload = close_payload(4000, &reason);
        assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        let text = std::str::from_utf8(&payload[2..]).unwrap();
        assert_eq!(text, "é".repeat(61));
    }
}
