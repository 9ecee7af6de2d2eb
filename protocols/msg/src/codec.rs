//! Payload codecs: how a message's value becomes the payload octets and back.

use bytes::Bytes;
use bytestring::ByteString;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Turns values of `T` into payloads and back. Implemented by [`MsgPack`], [`Raw`] and [`Utf8`].
pub trait Codec<T>: Send + Sync + 'static {
    /// Which codec this is, for by-name sends and the structure check.
    const KIND: CodecKind;

    /// Encodes a value.
    fn encode(value: &T) -> Result<Bytes, String>;

    /// Decodes a payload; an error text never contains the payload.
    fn decode(payload: Bytes) -> Result<T, String>;
}

/// The codecs a registry knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecKind {
    /// MessagePack via serde.
    MsgPack,
    /// Raw octets.
    Raw,
    /// UTF-8 text.
    Utf8,
}

/// MessagePack (serde): structs as maps keyed by field name, byte buffers as `bin` when the
/// field uses `serde_bytes` (or `bytes::Bytes` with its `serde` feature).
///
/// `Option::None` travels as `nil`, so a nested option loses a level: `Some(None)` of an
/// `Option<Option<T>>` encodes as `nil` and decodes as `None`. Where "absent" and "present but
/// empty" must differ, use an enum or a wrapper struct instead of a nested option.
#[derive(Clone, Copy, Debug)]
pub struct MsgPack;

impl<T: Serialize + DeserializeOwned + Send + 'static> Codec<T> for MsgPack {
    const KIND: CodecKind = CodecKind::MsgPack;

    fn encode(value: &T) -> Result<Bytes, String> {
        rmp_serde::to_vec_named(value)
            .map(Bytes::from)
            .map_err(|error| error.to_string())
    }

    fn decode(payload: Bytes) -> Result<T, String> {
        // rmp-serde reads lengths from the input but allocates only as it reads elements, and
        // bounds its nesting depth, so a hostile payload cannot exhaust memory or the stack.
        rmp_serde::from_slice(&payload).map_err(|error| error.to_string())
    }
}

/// Raw octets: the payload *is* the value. No serialization, no copy.
#[derive(Clone, Copy, Debug)]
pub struct Raw;

impl Codec<Bytes> for Raw {
    const KIND: CodecKind = CodecKind::Raw;

    fn encode(value: &Bytes) -> Result<Bytes, String> {
        Ok(value.clone())
    }

    fn decode(payload: Bytes) -> Result<Bytes, String> {
        Ok(payload)
    }
}

/// UTF-8 text that shares the payload's memory.
pub type Text = ByteString;

/// UTF-8 text: the payload is the text's octets, checked on receipt. No copy either way.
#[derive(Clone, Copy, Debug)]
pub struct Utf8;

impl Codec<Text> for Utf8 {
    const KIND: CodecKind = CodecKind::Utf8;

    fn encode(value: &Text) -> Result<Bytes, String> {
        Ok(value.as_bytes().clone())
    }

    fn decode(payload: Bytes) -> Result<Text, String> {
        ByteString::try_from(payload).map_err(|error| format!("not UTF-8: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_option_loses_a_level_as_documented() {
        let inner: Option<Option<u8>> = Some(None);
        let payload = <MsgPack as Codec<Option<Option<u8>>>>::encode(&inner).unwrap();
        assert_eq!(&payload[..], [0xc0], "nil");
        let decoded = <MsgPack as Codec<Option<Option<u8>>>>::decode(payload).unwrap();
        assert_eq!(decoded, None, "Some(None) comes back as None");
    }
}
