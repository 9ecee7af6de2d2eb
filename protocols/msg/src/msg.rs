//! [`Msg`]: a typed handle to one kind of message, usable as a `const`.

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use truflux::{BroadcastReport, Code, Error, Except, Message, Peer, PeerId, ProtocolError, RoomSet, Server};

use crate::codec::{Codec, MsgPack, Raw, Text, Utf8};

/// The id a name gets when none is given: FNV-1a (32-bit) of the name's UTF-8 octets, with the
/// top bit cleared to fit the 31-bit id field.
///
/// ```
/// // FNV-1a("chat") = 0xa24bf9ab; with the top bit cleared:
/// assert_eq!(truflux_msg::name_id("chat"), 0x224b_f9ab);
/// ```
pub const fn name_id(name: &str) -> u32 {
    let bytes = name.as_bytes();
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash & truflux::frame::MAX_ID
}

/// A message kind: its name, its id and the type and codec of its value.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use truflux_msg::{Msg, RawMsg};
///
/// #[derive(Serialize, Deserialize)]
/// struct Say { text: String }
///
/// const SAY: Msg<Say> = Msg::named("say");          // id = name_id("say")
/// const BLOB: RawMsg = RawMsg::with_id("blob", 7);  // an explicit id
/// assert_eq!(SAY.id(), truflux_msg::name_id("say"));
/// assert_eq!(BLOB.id(), 7);
/// ```
pub struct Msg<T, C = MsgPack> {
    name: &'static str,
    id: u32,
    _value: PhantomData<fn() -> (T, C)>,
}

/// A message whose value is raw octets ([`Bytes`]), sent without serialization or copy.
pub type RawMsg = Msg<Bytes, Raw>;
/// A message whose value is UTF-8 text ([`Text`]), sent without serialization or copy.
pub type TextMsg = Msg<Text, Utf8>;

impl<T, C> Msg<T, C> {
    /// A message named `name` with the id [`name_id`]`(name)`.
    pub const fn named(name: &'static str) -> Self {
        Msg {
            name,
            id: name_id(name),
            _value: PhantomData,
        }
    }

    /// A message named `name` with an explicit `id`. Panics (at compile time in a `const`) if
    /// `id` does not fit 31 bits.
    pub const fn with_id(name: &'static str, id: u32) -> Self {
        assert!(id <= truflux::frame::MAX_ID, "message ids are 31-bit");
        Msg {
            name,
            id,
            _value: PhantomData,
        }
    }

    /// The name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The id on the wire.
    pub const fn id(&self) -> u32 {
        self.id
    }
}

impl<T, C: Codec<T>> Msg<T, C> {
    /// Encodes `value` into a message ready to send or broadcast.
    pub fn encode(&self, value: &T) -> Result<Message, ProtocolError> {
        let payload = C::encode(value).map_err(|error| {
            ProtocolError::local(
                Code::INVALID_PAYLOAD,
                Some(self.id),
                format!("cannot encode {}: {error}", self.name),
            )
        })?;
        Ok(Message { id: self.id, payload })
    }

    /// Decodes a payload of this message.
    pub fn decode(&self, payload: Bytes) -> Result<T, ProtocolError> {
        C::decode(payload).map_err(|error| {
            ProtocolError::peer(
                Code::INVALID_PAYLOAD,
                self.id,
                format!("payload of {} does not decode: {error}", self.name),
            )
        })
    }

    /// Encodes `value` and queues it for `peer` (waiting while its queue is full). `peer` is
    /// a [`Peer`] or a [`Client`](truflux::Client).
    pub async fn send(&self, peer: &impl AsRef<Peer>, value: &T) -> Result<(), Error> {
        peer.as_ref().send(self.encode(value)?).await
    }

    /// Sends `value` as a request to `peer` and decodes the reply as `reply` (see
    /// [`Peer::request`] for timeouts and errors; a reply that does not decode is
    /// `INVALID_PAYLOAD`).
    pub async fn request<R, D: Codec<R>>(
        &self,
        peer: &impl AsRef<Peer>,
        value: &T,
        reply: Msg<R, D>,
    ) -> Result<R, Error> {
        let answer = peer.as_ref().request(self.encode(value)?).await?;
        Ok(reply.decode(answer)?)
    }

    /// Aims this message at the members of `rooms` on `server` (then `except`, then
    /// `broadcast`): `SAY.to(&server, "lobby").except(&peer).broadcast(&say)`.
    pub fn to(&self, server: &Server, rooms: impl Into<RoomSet>) -> To<T, C> {
        To {
            msg: *self,
            to: server.to(rooms),
        }
    }

    /// Encodes `value` once and queues it for every peer of `server` but `exclude`.
    pub fn broadcast(
        &self,
        server: &Server,
        value: &T,
        exclude: &[PeerId],
    ) -> Result<BroadcastReport, Error> {
        server.broadcast(self.encode(value)?, exclude)
    }
}

/// A typed broadcast being aimed at rooms: [`Msg::to`], then [`To::except`], then
/// [`To::broadcast`] (encoded once).
#[must_use = "a broadcast goes out only with .broadcast()"]
pub struct To<T, C = MsgPack> {
    msg: Msg<T, C>,
    to: truflux::To,
}

impl<T, C: Codec<T>> To<T, C> {
    /// Also the members of `rooms`.
    pub fn to(self, rooms: impl Into<RoomSet>) -> Self {
        To {
            msg: self.msg,
            to: self.to.to(rooms),
        }
    }

    /// Leaves a peer, or the members of a room, out.
    pub fn except(self, who: impl Into<Except>) -> Self {
        To {
            msg: self.msg,
            to: self.to.except(who),
        }
    }

    /// Encodes `value` once and queues it for every peer aimed at (see
    /// [`truflux::To::broadcast`]).
    pub fn broadcast(self, value: &T) -> Result<BroadcastReport, Error> {
        self.to.broadcast(self.msg.encode(value)?)
    }
}

impl<T, C> Clone for Msg<T, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, C> Copy for Msg<T, C> {}

impl<T, C> fmt::Debug for Msg<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Msg({:?}, id {})", self.name, self.id)
    }
}
