//! Payload layouts of the control frames: [`Hello`] and [`Close`] (also used by `Error`).
//!
//! Control payloads are plain binary, not MessagePack, so that a client in any language can be
//! written from `docs/PROTOCOL.md` alone.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Frame, FrameError, Kind};
use crate::Code;

/// The four octets every hello payload starts with: `TFLX`.
pub const MAGIC: [u8; 4] = *b"TFLX";
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 3;
/// The longest close reason or error text, in octets of UTF-8. Fits a WebSocket close frame.
pub const MAX_REASON_LEN: usize = 123;
/// The most extensions a hello may carry.
pub const MAX_HELLO_EXTENSIONS: usize = 32;

/// The first frame on a connection, in each direction: magic, version, extensions.
///
/// Layout: `"TFLX"`, version (u16), then zero or more extensions, each a type (u16), a length
/// (u16) and that many octets. A receiver ignores extension types it does not know.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version of the sender.
    pub version: u16,
    /// `(type, value)` pairs, in order.
    pub extensions: Vec<(u16, Bytes)>,
}

impl std::fmt::Debug for Hello {
    /// Shows extension types and lengths, never values: they can carry credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let extensions: Vec<_> = self.extensions.iter().map(|(ty, v)| (*ty, v.len())).collect();
        f.debug_struct("Hello")
            .field("version", &self.version)
            .field("extensions(type, len)", &extensions)
            .finish()
    }
}

impl Hello {
    /// A hello for this crate's protocol version with no extensions.
    pub fn current() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            extensions: Vec::new(),
        }
    }

    /// Encodes this hello as a [`Kind::Hello`] frame.
    pub fn to_frame(&self) -> Frame {
        let ext_len: usize = self.extensions.iter().map(|(_, v)| 4 + v.len()).sum();
        let mut buf = BytesMut::with_capacity(6 + ext_len);
        buf.put_slice(&MAGIC);
        buf.put_u16(self.version);
        for (ty, value) in &self.extensions {
            buf.put_u16(*ty);
            buf.put_u16(u16::try_from(value.len()).unwrap_or(u16::MAX));
            buf.put_slice(&value[..value.len().min(usize::from(u16::MAX))]);
        }
        Frame::control(Kind::Hello, buf.freeze())
    }

    /// Parses a hello payload.
    pub fn parse(payload: &Bytes) -> Result<Hello, FrameError> {
        let bad = |what| FrameError::MalformedControl {
            kind: Kind::Hello,
            what,
        };
        if payload.len() < 6 || payload[..4] != MAGIC {
            return Err(bad("missing TFLX magic"));
        }
        let version = u16::from_be_bytes([payload[4], payload[5]]);
        let mut extensions = Vec::new();
        let mut at = 6;
        while at < payload.len() {
            if extensions.len() == MAX_HELLO_EXTENSIONS {
                return Err(bad("too many extensions"));
            }
            let head = payload.get(at..at + 4).ok_or(bad("truncated extension header"))?;
            let ty = u16::from_be_bytes([head[0], head[1]]);
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let start = at + 4;
            if payload.len() - start < len {
                return Err(bad("truncated extension value"));
            }
            extensions.push((ty, payload.slice(start..start + len)));
            at = start + len;
        }
        Ok(Hello { version, extensions })
    }
}

/// The payload of a [`Kind::Close`] or [`Kind::Error`] frame: a std code and a UTF-8 text.
///
/// Layout: code (u16), then at most [`MAX_REASON_LEN`] octets of UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    /// The std code.
    pub code: Code,
    /// Human-readable text; never secrets or payloads.
    pub reason: String,
}

impl Close {
    /// A close payload; `reason` is cut to [`MAX_REASON_LEN`] octets at a character boundary.
    pub fn new(code: Code, reason: impl Into<String>) -> Close {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_LEN {
            let mut end = MAX_REASON_LEN;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Close { code, reason }
    }

    /// Encodes as a frame of `kind` ([`Kind::Close`] or [`Kind::Error`]) with the given id.
    pub fn to_frame(&self, kind: Kind, id: u32) -> Frame {
        let mut buf = BytesMut::with_capacity(2 + self.reason.len());
        buf.put_u16(self.code.0);
        buf.put_slice(self.reason.as_bytes());
        Frame {
            kind,
            id,
            tag: None,
            payload: buf.freeze(),
        }
    }

    /// Parses a close or error payload of a frame of `kind`.
    pub fn parse(kind: Kind, payload: &[u8]) -> Result<Close, FrameError> {
        let bad = |what| FrameError::MalformedControl { kind, what };
        let (code, text) = match payload {
            [hi, lo, text @ ..] => (Code(u16::from_be_bytes([*hi, *lo])), text),
            _ => return Err(bad("shorter than the 2-octet code")),
        };
        if text.len() > MAX_REASON_LEN {
            return Err(bad("reason longer than 123 octets"));
        }
        let reason = std::str::from_utf8(text).map_err(|_| bad("reason is not UTF-8"))?;
        Ok(Close {
            code,
            reason: reason.to_owned(),
        })
    }
}
