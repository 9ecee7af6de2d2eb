//! Payload layouts of the file frames (`docs/PROTOCOL.md` §10).

use bytes::{BufMut, Bytes, BytesMut};

use super::control::Close;
use super::{Frame, Kind};
use crate::error::Code;

/// The size field of an offer for a stream of unknown length.
pub(crate) const UNKNOWN_SIZE: u64 = u64::MAX;
/// The longest file name an offer may carry, in octets of UTF-8.
pub(crate) const MAX_NAME: usize = 1024;

pub(crate) fn frame(kind: Kind, id: u32, payload: Bytes) -> Frame {
    Frame {
        kind,
        id,
        tag: None,
        payload,
    }
}

/// `FILE_OFFER`: size (u64, all ones = unknown) ‖ name (UTF-8, the rest).
pub(crate) fn offer(id: u32, name: &str, size: Option<u64>) -> Frame {
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = BytesMut::with_capacity(8 + end);
    payload.put_u64(size.unwrap_or(UNKNOWN_SIZE));
    payload.put_slice(&name.as_bytes()[..end]);
    frame(Kind::FileOffer, id, payload.freeze())
}

pub(crate) fn parse_offer(payload: &[u8]) -> Result<(Option<u64>, String), ()> {
    if payload.len() < 8 || payload.len() > 8 + MAX_NAME {
        return Err(());
    }
    let size = u64::from_be_bytes(payload[..8].try_into().map_err(drop)?);
    let name = std::str::from_utf8(&payload[8..]).map_err(drop)?.to_owned();
    Ok(((size != UNKNOWN_SIZE).then_some(size), name))
}

/// `FILE_END`: size (u64) ‖ SHA-256 (32).
pub(crate) fn end(id: u32, size: u64, sha256: &[u8; 32]) -> Frame {
    let mut payload = BytesMut::with_capacity(40);
    payload.put_u64(size);
    payload.put_slice(sha256);
    frame(Kind::FileEnd, id, payload.freeze())
}

pub(crate) fn parse_end(payload: &[u8]) -> Result<(u64, [u8; 32]), ()> {
    if payload.len() != 40 {
        return Err(());
    }
    let size = u64::from_be_bytes(payload[..8].try_into().map_err(drop)?);
    let sha256 = payload[8..].try_into().map_err(drop)?;
    Ok((size, sha256))
}

/// `FILE_ACCEPT` / `FILE_CREDIT`: credit (u32).
pub(crate) fn credit(kind: Kind, id: u32, credit: u32) -> Frame {
    frame(kind, id, Bytes::copy_from_slice(&credit.to_be_bytes()))
}

pub(crate) fn parse_u32(payload: &[u8]) -> Result<u32, ()> {
    Ok(u32::from_be_bytes(payload.try_into().map_err(drop)?))
}

/// `FILE_REFUSE` (receiver) with a code and reason.
pub(crate) fn refuse(id: u32, code: Code, reason: &str) -> Frame {
    Close::new(code, reason).to_frame(Kind::FileRefuse, id)
}

/// `FILE_ABORT` (sender) with a code and reason.
pub(crate) fn abort(id: u32, code: Code, reason: &str) -> Frame {
    Close::new(code, reason).to_frame(Kind::FileAbort, id)
}

/// The code and reason of an abort or refusal; a malformed one reads as `default`.
pub(crate) fn parse_reason(payload: &[u8], default: Code) -> Close {
    Close::parse(Kind::FileRefuse, payload)
        .unwrap_or_else(|_| Close::new(default, "transfer ended by the peer"))
}
