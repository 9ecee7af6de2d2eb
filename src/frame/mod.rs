//! The wire format: the fixed frame header, control payloads and the codec.
//!
//! This module owns the byte layout of a truflux frame and nothing else. It never touches IO
//! (see the transport module), never decides what a message id means (see [`crate::protocol`])
//! and never verifies or produces authentication tags (the security layer does; the codec only
//! carries the 12 tag octets of a protected frame).
//!
//! ```text
//!  0        1                 5                 9                       21
//!  +--------+-----------------+-----------------+------------------------+--------------
//!  |P| kind |   id (u32 BE)   | length (u32 BE) | tag (12 octets, P = 1) | payload ...
//!  +--------+-----------------+-----------------+------------------------+--------------
//! ```
//!
//! The normative description, with whole-frame hex examples, is `docs/PROTOCOL.md`.

mod codec;
pub mod control;
pub(crate) mod file;

pub use codec::{decode_exact, FrameCodec};

use bytes::{BufMut, Bytes};

/// Length of the plain header: kind, id, length.
pub const HEADER_LEN: usize = 9;
/// Length of the authentication tag carried by a protected frame.
pub const TAG_LEN: usize = 12;
/// Length of the header of a protected (secure-mode) frame: the plain header plus the tag.
pub const SECURE_HEADER_LEN: usize = HEADER_LEN + TAG_LEN;
/// The largest message id: ids are 31-bit, the top bit of the id field must be zero.
pub const MAX_ID: u32 = 0x7FFF_FFFF;
/// Default bound on the payload length of one frame: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 16 * 1024 * 1024;
/// Octets a protected frame's payload may exceed the maximum by (CBC padding).
pub const SEAL_OVERHEAD: u32 = 16;
/// Bit of the kind octet that marks a protected frame (a tag follows the plain header).
pub const PROTECTED_BIT: u8 = 0x80;

/// What a frame is. The low seven bits of the first header octet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Opens a connection: magic, protocol version, extensions. See [`control::Hello`].
    Hello = 0x01,
    /// Ends a connection: a std code and a reason. See [`control::Close`].
    Close = 0x02,
    /// Reports a non-fatal error to the peer: a std code and a text; the id field names the
    /// message that caused it (0 if none). See [`control::Close`] for the payload layout.
    Error = 0x03,
    /// Asks the peer to answer with a [`Kind::Pong`] carrying the same payload.
    Ping = 0x04,
    /// The answer to a [`Kind::Ping`].
    Pong = 0x05,
    /// The security layer: key exchange, direction toggles, key rotation. The id field is the
    /// message type (`docs/PROTOCOL.md` §9).
    Security = 0x06,
    /// Resumable sessions: how many application frames the sender has received in the session
    /// (a u64), so the peer can drop them from its resume buffer (`docs/PROTOCOL.md` §11.3).
    Ack = 0x07,
    /// An application message: the id field is the message id, the payload its body.
    Message = 0x10,
    /// A request: the id field is the message id; the payload is a 4-octet request id, then
    /// the body. Answered by [`Kind::Reply`] or [`Kind::ReplyError`] (`docs/PROTOCOL.md` §11.4).
    Request = 0x11,
    /// The answer to a request: the id field is the request id, the payload the body.
    Reply = 0x12,
    /// A request failed at the receiver: the id field is the request id, the payload a std code
    /// and a text (the [`control::Close`] layout).
    ReplyError = 0x13,
    /// File sender → receiver: an offer (`docs/PROTOCOL.md` §10). The id is the transfer id.
    FileOffer = 0x20,
    /// File sender → receiver: a chunk of content.
    FileChunk = 0x21,
    /// File sender → receiver: the end, with the size and SHA-256 of the content.
    FileEnd = 0x22,
    /// File sender → receiver: the sender gives the transfer up.
    FileAbort = 0x23,
    /// File receiver → sender: accepted, with the first credit.
    FileAccept = 0x24,
    /// File receiver → sender: declined, or cancelled by the receiver.
    FileRefuse = 0x25,
    /// File receiver → sender: more credit.
    FileCredit = 0x26,
    /// File receiver → sender: paused.
    FilePause = 0x27,
    /// File receiver → sender: resumed.
    FileResume = 0x28,
    /// File receiver → sender: verified and stored.
    FileDone = 0x29,
}

impl Kind {
    /// The kind for a kind octet with the protected bit cleared, if it is one we know.
    pub const fn from_u8(octet: u8) -> Option<Kind> {
        Some(match octet {
            0x01 => Kind::Hello,
            0x02 => Kind::Close,
            0x03 => Kind::Error,
            0x04 => Kind::Ping,
            0x05 => Kind::Pong,
            0x06 => Kind::Security,
            0x07 => Kind::Ack,
            0x10 => Kind::Message,
            0x11 => Kind::Request,
            0x12 => Kind::Reply,
            0x13 => Kind::ReplyError,
            0x20 => Kind::FileOffer,
            0x21 => Kind::FileChunk,
            0x22 => Kind::FileEnd,
            0x23 => Kind::FileAbort,
            0x24 => Kind::FileAccept,
            0x25 => Kind::FileRefuse,
            0x26 => Kind::FileCredit,
            0x27 => Kind::FilePause,
            0x28 => Kind::FileResume,
            0x29 => Kind::FileDone,
            _ => return None,
        })
    }

    /// Whether this is a control frame (anything but application and file frames).
    pub const fn is_control(self) -> bool {
        !self.is_application() && !self.is_file()
    }

    /// Whether this frame is application data: a message, a request or an answer to one.
    pub const fn is_application(self) -> bool {
        (self as u8) & 0xf0 == 0x10
    }

    /// Whether a resumable session counts, buffers and redelivers this frame: application and
    /// file frames (PROTOCOL.md §11.3), so that a file transfer survives a lost connection too.
    pub const fn is_counted(self) -> bool {
        !self.is_control()
    }

    /// Whether this frame belongs to a file transfer.
    pub const fn is_file(self) -> bool {
        (self as u8) & 0xf0 == 0x20
    }
}

/// Malformed or oversized wire input, found by the codec before anything is allocated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length field exceeds the configured maximum payload length.
    #[error("frame payload of {len} octets exceeds the limit of {max}")]
    PayloadTooLarge {
        /// The announced (or attempted) payload length.
        len: u64,
        /// The configured limit.
        max: u32,
    },
    /// The kind octet names no known frame kind.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// The top bit of the id field is set: ids are 31-bit.
    #[error("message id 0x{0:08x} has the reserved top bit set")]
    ReservedIdBit(u32),
    /// A control frame's payload does not follow its documented layout.
    #[error("malformed {kind:?} payload: {what}")]
    MalformedControl {
        /// The control frame's kind.
        kind: Kind,
        /// What was wrong.
        what: &'static str,
    },
    /// A message-oriented transport carried a frame whose length field disagrees with the
    /// message's size.
    #[error("frame announces {announced} payload octets but its message carries {carried}")]
    LengthMismatch {
        /// The length field.
        announced: usize,
        /// The octets actually carried after the header.
        carried: usize,
    },
    /// The transport delivered data truflux does not carry (a WebSocket text message).
    #[error("unsupported data: {0}")]
    UnsupportedData(&'static str),
    /// The peer broke RFC 6455's framing.
    #[error("websocket: {0}")]
    WebSocket(#[from] WsViolation),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} octets buffered)")]
    Truncated {
        /// How many octets of the unfinished frame had arrived.
        buffered: usize,
    },
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The std code a connection closes with when it meets this error.
    pub fn code(&self) -> crate::Code {
        match self {
            FrameError::PayloadTooLarge { .. } => crate::Code::MESSAGE_TOO_BIG,
            FrameError::UnsupportedData(_) => crate::Code::UNSUPPORTED_DATA,
            FrameError::Io(_) => crate::Code::ABNORMAL,
            _ => crate::Code::PROTOCOL_ERROR,
        }
    }
}

/// A WebSocket framing violation (RFC 6455 §5), found by the WebSocket transport before any
/// truflux frame is decoded. Each ends the connection with `PROTOCOL_ERROR` (1002).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WsViolation {
    /// A reserved bit is set, and no extension was negotiated.
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// A reserved opcode.
    #[error("reserved opcode 0x{0:x}")]
    ReservedOpcode(u8),
    /// A client's frame without a mask.
    #[error("unmasked frame from a client")]
    UnmaskedFromClient,
    /// A server's frame with a mask.
    #[error("masked frame from a server")]
    MaskedFromServer,
    /// A control frame that is fragmented or longer than 125 octets.
    #[error("control frame fragmented or longer than 125 octets")]
    OversizedControl,
    /// A continuation frame with no fragmented message under way.
    #[error("continuation frame outside a fragmented message")]
    OrphanContinuation,
    /// A new data message inside a fragmented one.
    #[error("new message inside a fragmented one")]
    NestedMessage,
    /// A close frame whose payload is one octet.
    #[error("close frame with a 1-octet payload")]
    ShortClose,
    /// A close code WebSocket does not allow on the wire.
    #[error("close code {0} is not allowed on the wire")]
    CloseCode(u16),
    /// A close reason that is not UTF-8.
    #[error("close reason is not UTF-8")]
    CloseReason,
}

/// One truflux frame: a kind, an id, an optional authentication tag and a payload.
///
/// The payload is a [`Bytes`]: decoding splits it off the read buffer without copying, and a
/// broadcast shares one payload between every recipient by reference count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the frame is.
    pub kind: Kind,
    /// The message id for [`Kind::Message`]; for control frames as documented per kind.
    /// At most [`MAX_ID`].
    pub id: u32,
    /// The authentication tag: present exactly when the frame is protected (21-octet header).
    pub tag: Option<[u8; TAG_LEN]>,
    /// The payload, at most the configured maximum length.
    pub payload: Bytes,
}

impl Frame {
    /// A plain application message.
    pub fn message(id: u32, payload: Bytes) -> Frame {
        Frame {
            kind: Kind::Message,
            id,
            tag: None,
            payload,
        }
    }

    /// A plain control frame of `kind` with id 0.
    pub fn control(kind: Kind, payload: Bytes) -> Frame {
        Frame {
            kind,
            id: 0,
            tag: None,
            payload,
        }
    }

    /// The header length of this frame on the wire: 9, or 21 when protected.
    pub fn header_len(&self) -> usize {
        if self.tag.is_some() {
            SECURE_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The whole length of this frame on the wire.
    pub fn wire_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Checks the frame against the wire's rules before it is sent: id within 31 bits,
    /// payload within `max_payload` (and the 16 octets of padding a protected frame may add,
    /// as the decoder allows).
    pub fn check(&self, max_payload: u32) -> Result<(), FrameError> {
        if self.id > MAX_ID {
            return Err(FrameError::ReservedIdBit(self.id));
        }
        let limit = if self.tag.is_some() {
            u64::from(max_payload) + u64::from(SEAL_OVERHEAD)
        } else {
            u64::from(max_payload)
        };
        if self.payload.len() as u64 > limit {
            return Err(FrameError::PayloadTooLarge {
                len: self.payload.len() as u64,
                max: max_payload,
            });
        }
        Ok(())
    }

    /// Appends the header (9 or 21 octets) to `dst`. The payload is not written: writers that
    /// send payloads by reference (vectored IO) use this; [`FrameCodec`] writes both.
    pub fn put_header(&self, dst: &mut impl BufMut) {
        let protected = if self.tag.is_some() { PROTECTED_BIT } else { 0 };
        dst.put_u8(protected | self.kind as u8);
        dst.put_u32(self.id);
        // `check` bounds the payload by a u32 maximum; a larger payload never reaches here
        // through the crate's writers.
        dst.put_u32(u32::try_from(self.payload.len()).unwrap_or(u32::MAX));
        if let Some(tag) = &self.tag {
            dst.put_slice(tag);
        }
    }
}
