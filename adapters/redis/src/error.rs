//! The adapter's errors, and how they reach the application through truflux's own error type.
//!
//! This module owns [`Error`] and the mapping into [`truflux::Error`]; it must not retry or
//! decide anything.

use std::time::Duration;

/// What went wrong between this node and Redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The settings were refused before anything started.
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    /// The Redis URL could not be parsed (the URL itself is not repeated: it may hold a
    /// password).
    #[error("invalid Redis URL: {0}")]
    Url(String),
    /// Redis could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis, or the other nodes, did not answer in time.
    #[error("no answer from the cluster within {0:?}")]
    Timeout(Duration),
    /// The adapter is not attached to a running server, or has left the cluster.
    #[error("the cluster adapter is not running")]
    NotRunning,
    /// The entry could not be held for Redis: [`RedisConfig::max_held`](crate::RedisConfig::max_held)
    /// or `max_held_bytes` reached.
    #[error("too much held for Redis")]
    Full,
    /// Redis answered something the adapter cannot read.
    #[error("unexpected answer from Redis: {0}")]
    Unexpected(&'static str),
}

impl From<Error> for truflux::Error {
    /// Timeouts become `RequestTimeout`; everything else an `Io` error whose source is this
    /// [`Error`] (`io_error.get_ref()` downcasts to it).
    fn from(error: Error) -> truflux::Error {
        use std::io::ErrorKind;
        let kind = match &error {
            Error::Timeout(after) => return truflux::Error::RequestTimeout(*after),
            Error::Config(_) | Error::Url(_) => ErrorKind::InvalidInput,
            Error::NotRunning => ErrorKind::NotConnected,
            Error::Full => ErrorKind::WouldBlock,
            Error::Redis(_) | Error::Unexpected(_) => ErrorKind::Other,
        };
        truflux::Error::Io(std::io::Error::new(kind, error))
    }
}
