//! What the adapter tells the application: events as they happen and counters to read at any
//! time.
//!
//! This module owns [`NodeId`], [`ClusterEvent`], [`Stats`] and the atomic counters behind
//! them; it must not talk to Redis.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One server's identity in the cluster: random, new for each adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl NodeId {
    pub(crate) fn random() -> NodeId {
        // A clock-derived id only if the OS has no randomness to give.
        let fallback = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 ^ u64::from(std::process::id()))
        };
        NodeId(getrandom::u64().unwrap_or_else(|_| fallback()))
    }

    pub(crate) fn parse(text: &str) -> Option<NodeId> {
        u64::from_str_radix(text, 16).ok().map(NodeId)
    }
}

/// What kind of entry was not carried to the other nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryKind {
    /// A broadcast (`everyone()` or `to(room)`).
    Broadcast,
    /// A join or leave, for the other nodes' presence handlers.
    Presence,
    /// A `send_to` a peer on another node, or a query to the other nodes.
    Request,
}

/// Something the application may want to know about the cluster. Delivered to the handler
/// given to [`RedisAdapterBuilder::on_event`](crate::RedisAdapterBuilder::on_event), on the
/// adapter's tasks: keep it short.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// The connection to Redis that carries this node's entries failed: from now on they are
    /// held (up to [`RedisConfig::max_held`](crate::RedisConfig::max_held)) until it is back.
    Disconnected {
        /// Why, as Redis or the socket said it.
        error: String,
    },
    /// Connected to Redis again; `held` entries waiting are being sent, and this node's rooms
    /// are registered again.
    Reconnected {
        /// Entries held when the connection came back.
        held: usize,
        /// How long this node could not write to Redis.
        down_for: Duration,
    },
    /// The reader is reading the cluster's stream again after a failure, from where it stopped
    /// (from the start of the stream if Redis restarted: entries already seen are skipped).
    Resubscribed {
        /// Whether Redis is a new process (its `run_id` changed).
        redis_restarted: bool,
    },
    /// An entry for the other nodes was not held: the bound was reached (or the adapter has
    /// left the cluster). This node's own peers had it; the other nodes will not.
    Dropped {
        /// What it was.
        kind: EntryKind,
        /// Entries dropped since the adapter started.
        total: u64,
    },
    /// Entries another node wrote never reached this node: trimmed from the stream before this
    /// node read them, or lost with Redis's memory.
    Lost {
        /// The node that wrote them.
        node: NodeId,
        /// How many.
        count: u64,
    },
    /// A node stopped refreshing its liveness key and was removed from the cluster; its
    /// members left their rooms (presence says so on every node).
    NodeDown {
        /// The node.
        node: NodeId,
        /// How many memberships it had.
        members: usize,
    },
    /// This node's registration had gone from Redis (Redis lost its data, or this node was
    /// taken for gone) and was written again from the server's rooms.
    Registered {
        /// Whether other nodes had taken this node for gone (its members are announced again).
        was_taken_for_gone: bool,
    },
    /// An entry in the stream could not be read and was skipped.
    Malformed {
        /// The stream entry's id.
        entry: String,
    },
}

/// The adapter's counters since it started; see [`RedisAdapter::stats`](crate::RedisAdapter::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Entries written to Redis.
    pub published: u64,
    /// Entries from other nodes read and applied (delivered, told, answered).
    pub received: u64,
    /// Entries held for Redis right now.
    pub held: u64,
    /// Entries not held because the bound was reached, or because the adapter had left.
    pub dropped: u64,
    /// Entries of other nodes that never arrived (gaps in their sequence numbers).
    pub lost: u64,
    /// Entries read twice (written again after a failed write, or read again after Redis
    /// restarted) and skipped.
    pub duplicates: u64,
    /// Entries that could not be read.
    pub malformed: u64,
    /// Times a connection to Redis was opened again after a failure.
    pub reconnects: u64,
    /// Nodes found gone and removed by this node.
    pub nodes_removed: u64,
}

pub(crate) type EventFn = Arc<dyn Fn(&ClusterEvent) + Send + Sync>;

/// One counter of [`Stats`], and its name for the `metrics` facade (feature `metrics`).
pub(crate) struct Count {
    value: AtomicU64,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    metric: &'static str,
}

impl Count {
    const fn new(metric: &'static str) -> Count {
        Count {
            value: AtomicU64::new(0),
            metric,
        }
    }

    /// Adds `n`; the new total.
    pub(crate) fn add(&self, n: u64) -> u64 {
        #[cfg(feature = "metrics")]
        metrics::counter!(self.metric).increment(n);
        self.value.fetch_add(n, Ordering::Relaxed) + n
    }

    fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// The counters, and the application's handler.
pub(crate) struct Telemetry {
    pub(crate) published: Count,
    pub(crate) received: Count,
    pub(crate) dropped: Count,
    pub(crate) lost: Count,
    pub(crate) duplicates: Count,
    pub(crate) malformed: Count,
    pub(crate) reconnects: Count,
    pub(crate) nodes_removed: Count,
    pub(crate) on_event: Option<EventFn>,
}

impl Telemetry {
    pub(crate) fn new(on_event: Option<EventFn>) -> Telemetry {
        Telemetry {
            published: Count::new("truflux_redis_entries_published_total"),
            received: Count::new("truflux_redis_entries_received_total"),
            dropped: Count::new("truflux_redis_entries_dropped_total"),
            lost: Count::new("truflux_redis_entries_lost_total"),
            duplicates: Count::new("truflux_redis_entries_duplicate_total"),
            malformed: Count::new("truflux_redis_entries_malformed_total"),
            reconnects: Count::new("truflux_redis_reconnects_total"),
            nodes_removed: Count::new("truflux_redis_nodes_removed_total"),
            on_event,
        }
    }

    pub(crate) fn emit(&self, event: ClusterEvent) {
        if let Some(on_event) = &self.on_event {
            on_event(&event);
        }
    }

    /// Entries held for Redis now, for the `metrics` facade (feature `metrics`).
    pub(crate) fn held(&self, held: usize) {
        #[cfg(feature = "metrics")]
        metrics::gauge!("truflux_redis_entries_held").set(held as f64);
        let _ = held;
    }

    pub(crate) fn snapshot(&self, held: usize) -> Stats {
        Stats {
            published: self.published.get(),
            received: self.received.get(),
            held: held as u64,
            dropped: self.dropped.get(),
            lost: self.lost.get(),
            duplicates: self.duplicates.get(),
            malformed: self.malformed.get(),
            reconnects: self.reconnects.get(),
            nodes_removed: self.nodes_removed.get(),
        }
    }
}
