//! The adapter's settings: names, bounds, timers, and what happens when a bound is reached.
//!
//! This module owns [`RedisConfig`] and its validation; it must not talk to Redis.

use std::time::Duration;

use crate::error::Error;

/// How a node talks to Redis and to the rest of the cluster.
///
/// Built with [`Default`] and chained setters (`RedisConfig::default().prefix("chat")`), so
/// that a new field never breaks a caller. [`RedisAdapter::builder`](crate::RedisAdapter::builder)
/// checks it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The namespace of every key the adapter uses: servers with the same prefix on the same
    /// Redis form one cluster. Default `"truflux"`. Empty, or containing a space, is refused.
    pub prefix: String,
    /// Most entries (broadcasts, presence changes, direct messages, query requests) held for
    /// Redis while it cannot be reached or is slower than the application. Default 10,000.
    /// When full, a new entry is not held: the node's own peers still have it, the other nodes
    /// do not; [`Stats::dropped`](crate::Stats::dropped) counts it and
    /// [`ClusterEvent::Dropped`](crate::ClusterEvent::Dropped) reports it. Entries held before
    /// it are still sent, in order.
    pub max_held: usize,
    /// Most payload octets held, with the same policy as [`RedisConfig::max_held`].
    /// Default 64 MiB.
    pub max_held_bytes: usize,
    /// Approximate length the shared stream is trimmed to (`XADD … MAXLEN ~`): how far behind
    /// a node's reader may fall (a node cut off from Redis while Redis stays up, a slow node)
    /// and still catch up. Default 100,000 entries. A node that falls further behind misses
    /// the trimmed entries: [`Stats::lost`](crate::Stats::lost) counts them and
    /// [`ClusterEvent::Lost`](crate::ClusterEvent::Lost) reports them. Memory in Redis is about
    /// this many entries times their size.
    pub stream_max_len: usize,
    /// How often a node refreshes its liveness key and looks for nodes whose key expired.
    /// Default 1 s.
    pub heartbeat_interval: Duration,
    /// How long a node's liveness key lives without a refresh. Default 5 s; at least twice
    /// [`RedisConfig::heartbeat_interval`]. A node that stopped (killed, or cut off from Redis)
    /// is taken for gone once its key has expired at two heartbeats in a row of another node:
    /// that node removes its members from every room and every application sees them leave,
    /// at most `node_ttl + 2 × heartbeat_interval` (default 7 s) after its last refresh. The
    /// second look gives nodes coming back with Redis after an outage one heartbeat to refresh.
    /// A node cut off for longer than this is taken for gone, then registers again (its
    /// members announced again) when it is back.
    pub node_ttl: Duration,
    /// How long `server.rooms()`, `room_members()`, `cluster_connections()` and a `send_to` to a
    /// peer on another node wait for Redis and for the other nodes' answers. Default 2 s; past
    /// it they fail with `truflux::Error::RequestTimeout`.
    pub query_timeout: Duration,
    /// How long one Redis command may go unanswered before its connection is taken for broken
    /// and opened again. Default 2 s.
    pub command_timeout: Duration,
    /// First pause before connecting again after a failure; it doubles up to
    /// [`RedisConfig::reconnect_max`] (with jitter). Default 50 ms.
    pub reconnect_min: Duration,
    /// Longest pause between attempts to connect. Default 2 s.
    pub reconnect_max: Duration,
    /// Most entries written in one pipelined round trip, and read with one `XREAD`.
    /// Default 512. A read holds at most this many entries in memory (each as large as the
    /// message it carries, at most the servers' `max_payload`).
    pub batch: usize,
    /// How long `Server::close` waits for held entries to reach Redis before the node leaves
    /// the cluster. Default 2 s; entries still held then are dropped and counted.
    pub shutdown_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            prefix: "truflux".to_owned(),
            max_held: 10_000,
            max_held_bytes: 64 * 1024 * 1024,
            stream_max_len: 100_000,
            heartbeat_interval: Duration::from_secs(1),
            node_ttl: Duration::from_secs(5),
            query_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            batch: 512,
            shutdown_timeout: Duration::from_secs(2),
        }
    }
}

macro_rules! setters {
    ($($(#[doc = $doc:literal])* $field:ident : $fty:ty,)*) => {
        impl RedisConfig {
            $(
                $(#[doc = $doc])*
                #[must_use]
                pub fn $field(mut self, value: $fty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`RedisConfig::max_held`].
    max_held: usize,
    /// Sets [`RedisConfig::max_held_bytes`].
    max_held_bytes: usize,
    /// Sets [`RedisConfig::stream_max_len`].
    stream_max_len: usize,
    /// Sets [`RedisConfig::heartbeat_interval`].
    heartbeat_interval: Duration,
    /// Sets [`RedisConfig::node_ttl`].
    node_ttl: Duration,
    /// Sets [`RedisConfig::query_timeout`].
    query_timeout: Duration,
    /// Sets [`RedisConfig::command_timeout`].
    command_timeout: Duration,
    /// Sets [`RedisConfig::reconnect_min`].
    reconnect_min: Duration,
    /// Sets [`RedisConfig::reconnect_max`].
    reconnect_max: Duration,
    /// Sets [`RedisConfig::batch`].
    batch: usize,
    /// Sets [`RedisConfig::shutdown_timeout`].
    shutdown_timeout: Duration,
}

impl RedisConfig {
    /// Sets [`RedisConfig::prefix`].
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Refuses settings that cannot work together.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let refuse = |why: &str| Err(Error::Config(why.to_owned()));
        if self.prefix.is_empty() || self.prefix.contains(' ') {
            return refuse("prefix must be non-empty and without spaces");
        }
        if self.max_held == 0 || self.max_held_bytes == 0 || self.batch == 0 || self.stream_max_len == 0 {
            return refuse("max_held, max_held_bytes, batch and stream_max_len must be at least 1");
        }
        if self.heartbeat_interval.is_zero() || self.node_ttl < self.heartbeat_interval * 2 {
            return refuse("node_ttl must be at least twice a non-zero heartbeat_interval");
        }
        if self.command_timeout.is_zero() || self.query_timeout.is_zero() {
            return refuse("command_timeout and query_timeout must be non-zero");
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return refuse("reconnect_min must be non-zero and at most reconnect_max");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_contradictions_are_refused() {
        assert!(RedisConfig::default().check().is_ok());
        let short_ttl = RedisConfig::default()
            .heartbeat_interval(Duration::from_secs(2))
            .node_ttl(Duration::from_secs(3));
        assert!(short_ttl.check().is_err());
        assert!(RedisConfig::default().prefix("a b").check().is_err());
        assert!(RedisConfig::default().max_held(0).check().is_err());
    }
}
