//! truflux-msg: a stateless message registry for truflux.
//!
//! Messages have a name, a 31-bit id (by default [`name_id`] of the name, or explicit) and a
//! typed value carried by a codec: [`MsgPack`] for serde types, [`Raw`] for octets and [`Utf8`]
//! for text (the last two without serialization or copy). A [`Registry`] maps ids to handlers
//! and is the [`truflux::Protocol`] of a server or client.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use truflux_msg::{Msg, Registry};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Say { text: String }
//!
//! const SAY: Msg<Say> = Msg::named("say");
//!
//! let registry = Registry::builder()
//!     .on(SAY, |peer, say: Say| async move {
//!         // Echo it back to the sender.
//!         SAY.send(&peer, &say).await
//!     })
//!     .build()
//!     .expect("no duplicate names or ids");
//! assert_eq!(registry.name_of(SAY.id()), Some("say"));
//! ```
//!
//! Receiving: an unknown id is answered with `UNKNOWN_MESSAGE` (4000), a payload that does not
//! decode with `INVALID_PAYLOAD` (4001), a message without handler with `UNIMPLEMENTED` (4004);
//! each is an error frame to the sender and an error event here, never a crash, and the
//! connection goes on. Sending: an unregistered name or a value of the wrong structure fails
//! at the sender and nothing is sent.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod codec;
mod msg;
mod registry;

pub use codec::{Codec, CodecKind, MsgPack, Raw, Text, Utf8};
pub use msg::{name_id, Msg, RawMsg, TextMsg, To};
pub use registry::{HandlerOutput, Registry, RegistryBuilder, RegistryError};
