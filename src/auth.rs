//! Authentication: the bearer token a client presents, and the server's validator.
//!
//! A token travels once per connection (PROTOCOL.md §11.1): in a keyed opening, inside the
//! client's protected credentials hello, never in the clear; in a plain opening, in the
//! client's hello (extension `AUTH`), or over WebSocket in the upgrade request's
//! `Authorization: Bearer` header or its `Sec-WebSocket-Protocol` header as
//! `truflux.bearer.<token>` (browsers cannot set `Authorization`). The server validates it
//! before the peer exists; the identity the validator returns is stored in the peer's
//! [`Session`], and a resume must present a token of the same identity.
//!
//! This module owns the token type (which never prints its value) and the validator's shape.
//! It must not touch sockets or frames.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::protocol::BoxFuture;
use crate::transport::PeerInfo;
use crate::Session;

/// Longest token accepted, in octets. Longer ones are refused with `UNAUTHORIZED`.
pub const MAX_TOKEN_LEN: usize = 4096;

/// A bearer token. Its `Debug` output never shows the value, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token with this value.
    pub fn new(value: impl Into<String>) -> Token {
        Token(value.into())
    }

    /// The token's value, for the validator.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} octets>)", self.0.len())
    }
}

/// What the validator is asked about: the token and where the peer connects from.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuthRequest {
    /// The presented token.
    pub token: Token,
    /// The peer's addresses and transport.
    pub info: PeerInfo,
}

/// Why a token was refused; the text goes to the client in the close frame (or the `401`
/// body), so it must not contain the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection(pub String);

impl<T: Into<String>> From<T> for Rejection {
    fn from(reason: T) -> Rejection {
        Rejection(reason.into())
    }
}

/// A validated identity, its type erased: it can be stored in a session and compared with
/// the one a session holds (a resume must present the session's own identity).
pub(crate) struct Identity {
    store: Box<dyn Fn(&Session) + Send + Sync>,
    same: Box<dyn Fn(&Session) -> bool + Send + Sync>,
}

impl Identity {
    fn new<I: Any + Send + Sync + Clone + PartialEq>(identity: I) -> Identity {
        let stored = identity.clone();
        Identity {
            store: Box::new(move |session| {
                session.insert(stored.clone());
            }),
            same: Box::new(move |session| session.get::<I>().as_ref() == Some(&identity)),
        }
    }

    /// Puts the identity into a new session.
    pub(crate) fn store(&self, session: &Session) {
        (self.store)(session);
    }

    /// Whether `session` holds this same identity.
    pub(crate) fn is_in(&self, session: &Session) -> bool {
        (self.same)(session)
    }
}

/// The validator, with the identity's type erased.
pub(crate) type Validator =
    Arc<dyn Fn(AuthRequest) -> BoxFuture<'static, Result<Identity, Rejection>> + Send + Sync>;

pub(crate) fn validator<F, Fut, I>(validate: F) -> Validator
where
    F: Fn(AuthRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<I, Rejection>> + Send + 'static,
    I: Any + Send + Sync + Clone + PartialEq,
{
    Arc::new(move |request| {
        let validated = validate(request);
        Box::pin(async move { Ok(Identity::new(validated.await?)) })
    })
}

/// Compares two tokens in constant time (for validators that check a token against a known
/// value): SHA-256 of each, compared without an early exit, so neither the content nor the
/// length of the expected token leaks through timing.
pub fn tokens_match(presented: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let (a, b) = (
        Sha256::digest(presented.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// Reads a token from an `Authorization: Bearer <token>` value.
#[cfg(feature = "ws")]
pub(crate) fn from_authorization(value: &[u8]) -> Option<Token> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| Token::new(token.trim()))
}

/// The `Sec-WebSocket-Protocol` entry that carries a token: `truflux.bearer.<token>`.
pub const SUBPROTOCOL_PREFIX: &str = "truflux.bearer.";

/// Reads a token from the offered subprotocols.
#[cfg(feature = "ws")]
pub(crate) fn from_subprotocols(value: &[u8]) -> Option<Token> {
    std::str::from_utf8(value)
        .ok()?
        .split(',')
        .find_map(|entry| entry.trim().strip_prefix(SUBPROTOCOL_PREFIX))
        .map(Token::new)
}
