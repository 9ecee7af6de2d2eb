//! Authentication: the bearer token a client presents, and the server's validator.
//!
//! A token travels once per connection: over TCP in the client's hello (extension `AUTH`),
//! over WebSocket in the upgrade request's `Authorization: Bearer` header, in the
//! `Sec-WebSocket-Protocol` header as `truflux.bearer.<token>` (browsers cannot set
//! `Authorization`), or in the hello like TCP. The server validates it before the peer exists;
//! the identity the validator returns is stored in the peer's [`Session`].
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

/// Stores a validated identity into the new peer's session.
pub(crate) type Identity = Box<dyn FnOnce(&Session) + Send>;

/// The validator, with the identity's type erased.
pub(crate) type Validator =
    Arc<dyn Fn(AuthRequest) -> BoxFuture<'static, Result<Identity, Rejection>> + Send + Sync>;

pub(crate) fn validator<F, Fut, I>(validate: F) -> Validator
where
    F: Fn(AuthRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<I, Rejection>> + Send + 'static,
    I: Any + Send + Sync,
{
    Arc::new(move |request| {
        let validated = validate(request);
        Box::pin(async move {
            let identity = validated.await?;
            Ok(Box::new(move |session: &Session| {
                session.insert(identity);
            }) as Identity)
        })
    })
}

/// Reads a token from an `Authorization: Bearer <token>` value.
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
pub(crate) fn from_subprotocols(value: &[u8]) -> Option<Token> {
    std::str::from_utf8(value)
        .ok()?
        .split(',')
        .find_map(|entry| entry.trim().strip_prefix(SUBPROTOCOL_PREFIX))
        .map(Token::new)
}
