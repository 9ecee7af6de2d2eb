//! [`FrameCodec`]: the tokio-util `Decoder`/`Encoder` for truflux frames.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{Frame, FrameError, Kind, HEADER_LEN, MAX_ID, PROTECTED_BIT, SEAL_OVERHEAD, TAG_LEN};

/// How far ahead of what arrived the decoder asks the buffer to grow: this, or as much as has
/// arrived.
const GROW_STEP: usize = 64 * 1024;

/// Decodes and encodes truflux frames.
///
/// The decoder reads the 9-octet header and rejects an unknown kind, a set reserved id bit or
/// a length above the maximum before it reserves any memory; while a frame is incomplete it
/// asks the buffer to grow by at most 64 KiB or what has arrived, never by the announced
/// length; once the whole frame is buffered it splits the payload off without copying. It is
/// a loop-free state machine: no recursion, no panics, whatever the input.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max_payload: u32,
}

impl FrameCodec {
    /// A codec that accepts payloads of at most `max_payload` octets.
    pub fn new(max_payload: u32) -> FrameCodec {
        FrameCodec { max_payload }
    }

    /// The configured payload limit.
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// The whole length (header, tag and payload) of the frame `buffered` begins with, once its
    /// header has arrived and passes the checks; `None` before that or if the header is bad
    /// (decoding reports why). Never more than `max_payload` + 21 + 16 octets.
    pub fn frame_len(&self, buffered: &[u8]) -> Option<usize> {
        let header = Header::parse(buffered.get(..HEADER_LEN)?, self.max_payload).ok()?;
        Some(header.header_len + header.len)
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(super::DEFAULT_MAX_PAYLOAD)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let header = Header::parse(header, self.max_payload)?;
        // Bounded by max_payload + 21, checked by `Header::parse`.
        let total = header.header_len + header.len;
        if src.len() < total {
            // A hint for the reader, never far ahead of what arrived: a header alone must not
            // make anyone allocate its announced length.
            let ahead = (total - src.len()).min(GROW_STEP.max(src.len()));
            src.reserve(ahead);
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let tag = if header.protected {
            let mut tag = [0u8; TAG_LEN];
            src.copy_to_slice(&mut tag);
            Some(tag)
        } else {
            None
        };
        let payload = src.split_to(header.len).freeze();
        Ok(Some(Frame {
            kind: header.kind,
            id: header.id,
            tag,
            payload,
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated { buffered: src.len() }),
        }
    }
}

/// The checked fields of a frame header.
struct Header {
    kind: Kind,
    id: u32,
    len: usize,
    protected: bool,
    header_len: usize,
}

impl Header {
    /// Parses and checks the 9 plain header octets: kind, reserved id bit, length limit.
    fn parse(octets: &[u8], max_payload: u32) -> Result<Header, FrameError> {
        let kind_octet = octets[0];
        let id = u32::from_be_bytes([octets[1], octets[2], octets[3], octets[4]]);
        let len = u32::from_be_bytes([octets[5], octets[6], octets[7], octets[8]]);
        let kind = Kind::from_u8(kind_octet & !PROTECTED_BIT).ok_or(FrameError::UnknownKind(kind_octet))?;
        if id > MAX_ID {
            return Err(FrameError::ReservedIdBit(id));
        }
        let protected = kind_octet & PROTECTED_BIT != 0;
        // Sealing may add up to 16 octets of padding to a payload of the maximum size.
        let limit = if protected {
            max_payload.saturating_add(SEAL_OVERHEAD)
        } else {
            max_payload
        };
        if len > limit {
            return Err(FrameError::PayloadTooLarge {
                len: u64::from(len),
                max: max_payload,
            });
        }
        let header_len = if protected {
            HEADER_LEN + TAG_LEN
        } else {
            HEADER_LEN
        };
        Ok(Header {
            kind,
            id,
            len: len as usize,
            protected,
            header_len,
        })
    }
}

/// Decodes `bytes` as exactly one frame, sharing its memory: the form used by message-oriented
/// transports (one WebSocket message carries one frame). A length field that disagrees with the
/// message's size is an error, in either direction.
pub fn decode_exact(bytes: Bytes, max_payload: u32) -> Result<Frame, FrameError> {
    let Some(octets) = bytes.get(..HEADER_LEN) else {
        return Err(FrameError::Truncated {
            buffered: bytes.len(),
        });
    };
    let header = Header::parse(octets, max_payload)?;
    if bytes.len() != header.header_len + header.len {
        return Err(FrameError::LengthMismatch {
            announced: header.len,
            carried: bytes.len().saturating_sub(header.header_len),
        });
    }
    let tag = match bytes.get(HEADER_LEN..header.header_len) {
        Some(tag) if header.protected => tag.try_into().ok(),
        _ => None,
    };
    Ok(Frame {
        kind: header.kind,
        id: header.id,
        tag,
        payload: bytes.slice(header.header_len..),
    })
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&frame, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        frame.check(self.max_payload)?;
        dst.reserve(frame.wire_len());
        frame.put_header(dst);
        dst.put_slice(&frame.payload);
        Ok(())
    }
}
