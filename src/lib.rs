//! truflux: real-time typed messaging over raw TCP and WebSocket at once.
//!
//! A [`Server`] accepts peers and hands their messages to a [`Protocol`] (a message registry
//! such as `truflux-msg`); a [`Client`] connects to one. Both sides see the other as a
//! [`Peer`]: send to it, close it, keep typed session data on it. Every frame carries a fixed
//! 9-octet header ([`frame`]); `docs/PROTOCOL.md` is the normative wire specification.
//!
//! ```no_run
//! use truflux::{protocol, Client, Server};
//!
//! # async fn run() -> Result<(), truflux::Error> {
//! // An echo server: every message goes back to its sender.
//! let server = Server::builder()
//!     .tcp("127.0.0.1:7000")
//!     .protocol(protocol::from_fn(|peer, message| async move {
//!         let _ = peer.send(message).await;
//!     }))
//!     .start()
//!     .await?;
//!
//! let client = Client::connect(server.local_addrs()[0], protocol::from_fn(|_peer, message| async move {
//!     println!("echoed: {} octets", message.payload.len());
//! }))
//! .await?;
//! client.peer().send_raw(1, &b"hello"[..]).await?;
//! # Ok(()) }
//! ```
//!
//! Data flows one way: frame ([`frame`]) → transport → connection (engine and driver) →
//! protocol ([`protocol`]) → handler.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
mod client;
mod config;
mod connection;
mod error;
pub mod file;
pub mod frame;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "ws")]
pub mod http;
mod meters;
mod opening;
#[cfg(feature = "prometheus")]
pub mod prometheus;
pub mod protocol;
pub mod security;
mod server;
mod session;
mod setters;
#[cfg(feature = "tls-base")]
pub mod tls;
mod transport;
#[cfg(feature = "ws")]
pub mod ws;

pub use client::{Client, ClientBuilder, TokenCarrier};
pub use config::{
    Bucket, ClientConfig, ConnectionConfig, RateLimit, RatePolicy, Reconnect, ServerConfig, SlowPeerPolicy,
};
pub use connection::{Peer, PeerId};
pub use error::{
    AuthError, CloseInfo, Code, ConfigError, Error, FileError, HelloError, Initiator, Limited, ProtocolError,
    RemoteError, Timeout,
};
pub use protocol::{Dispatch, Message, Protocol, Responder};
pub use server::adapter;
pub use server::{
    BroadcastReport, Except, HistoryLimit, Member, Presence, RoomConfig, RoomError, RoomSet, Server,
    ServerBuilder, SessionStore, To,
};
pub use session::Session;
pub use transport::{PeerInfo, TransportKind};

/// The README's examples, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
