//! truflux-redis: several truflux servers form one cluster through Redis.
//!
//! A [`RedisAdapter`] is a [`truflux::adapter::Adapter`]: give it to
//! [`ServerBuilder::adapter`](truflux::ServerBuilder::adapter) and the application's API stays
//! what it was, now across every server with the same Redis and [`RedisConfig::prefix`]:
//! `server.everyone().except(peer).broadcast(…)`, `server.to(room).except(room)…`,
//! `server.rooms()`, `server.room_members(room)`, `server.cluster_connections()`,
//! `server.send_to(peer_id, …)` for a peer on any node, and presence events
//! (`on_presence`) for joins and leaves on other nodes.
//!
//! ```no_run
//! use truflux::Server;
//! use truflux_redis::RedisAdapter;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let adapter = RedisAdapter::connect("redis://127.0.0.1:6379").await?;
//! let server = Server::builder()
//!     .tcp("0.0.0.0:7878")
//!     .adapter(adapter.clone())
//!     .start()
//!     .await?;
//! // Every peer on every node of the cluster, but this one.
//! # let someone = truflux::PeerId(1);
//! server.everyone().except(someone).broadcast_raw(1, &b"hello"[..])?;
//! println!("{} peers in the cluster", server.cluster_connections().await?);
//! println!("held for Redis: {}", adapter.stats().held);
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! A server always delivers to its own peers itself; the adapter carries the rest. Every node
//! appends its broadcasts, presence changes and requests to one Redis stream (`XADD` with
//! `MAXLEN ~`), numbered 1, 2, 3… per node, and reads the stream from the last entry it read
//! (`XREAD BLOCK`), delivering each entry of the other nodes to its own peers with
//! [`Node::deliver`](truflux::adapter::Node::deliver). Room memberships live in Redis hashes
//! for the queries; each node refreshes a liveness key with a TTL, and a node whose key expired
//! is removed by the first other node to notice (its members leave, presence says so).
//! `docs/CLUSTER.md` in the repository has the whole design.
//!
//! # Guarantees
//!
//! - **Ordering**: entries of one node reach every other node in the order that node made
//!   them.
//! - **At most once** per peer: an entry written twice (a write whose answer was lost) or read
//!   twice (after Redis restarted from its files) is skipped by its sequence number.
//! - **No silent loss**: while Redis cannot be reached, entries are held in order, up to
//!   [`RedisConfig::max_held`] and [`RedisConfig::max_held_bytes`], and written when it is back.
//!   An entry past the bound is dropped and reported ([`ClusterEvent::Dropped`],
//!   [`Stats::dropped`]); entries a node never saw (trimmed from the stream before it read
//!   them, or lost with Redis's memory) are reported by that node ([`ClusterEvent::Lost`],
//!   [`Stats::lost`]), found as gaps in the sender's numbers.
//! - **Encoded once**: a broadcast is encoded once by the application; the adapter writes its
//!   payload once per broadcast and each node hands the same bytes to all its peers.
//! - A node that stops without leaving (killed, cut off) is removed, and its members leave
//!   on every node, within `node_ttl + 2 × heartbeat_interval` of its last heartbeat
//!   (default 7 s). A node that closes with `Server::close` leaves at once.
//!
//! # Why redis-rs
//!
//! The client is [redis-rs](https://docs.rs/redis) 1.x with `default-features = false` and
//! only `tokio-comp`: a multiplexed async connection, pipelines, and raw commands for streams
//! and `EVAL`. fred was the other candidate: its own reconnection and command retrying, pools,
//! typed command interfaces and cluster routing are what the adapter does not use (reconnecting
//! depends on the adapter's own state: cursors, sequence numbers, the outbox, registering
//! again), and its non-optional dependencies (`futures`, `parking_lot`, `rand`, `async-trait`,
//! its own protocol crate…) are the larger build on 2 cores. redis-rs's connection manager,
//! cluster, TLS and scripting features are left off for the same reason. `docs/CLUSTER.md`
//! compares them further.
//!
//! # Reporting
//!
//! [`RedisAdapterBuilder::on_event`] receives every [`ClusterEvent`]; [`RedisAdapter::stats`]
//! counts them. With the `metrics` feature the counters also go through the `metrics` facade
//! (`truflux_redis_entries_dropped_total`, `truflux_redis_entries_lost_total`,
//! `truflux_redis_entries_held`…). Logs never carry a payload or the URL.
//!
//! # Limits
//!
//! One Redis (or its primary), not Redis Cluster: scripts name keys from their arguments.
//! Redis 6.2 or later (`SET … GET`, `XADD … NOMKSTREAM`). Every node reads every entry of the
//! shared stream, its own included: the stream carries the cluster's whole traffic.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod error;
mod event;
mod heartbeat;
mod keys;
mod link;
mod outbox;
mod query;
mod reader;
mod wire;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use truflux::adapter::{Adapter, Envelope, Node};
use truflux::protocol::BoxFuture;
use truflux::{Message, PeerId, Presence};

pub use config::RedisConfig;
pub use error::Error;
pub use event::{ClusterEvent, EntryKind, NodeId, Stats};

use event::Telemetry;
use keys::Keys;
use link::Link;
use outbox::{Outbox, Stream};
use wire::{Body, Membership};

/// A cluster adapter over Redis. Cheap to clone: clones share the node; keep one to read
/// [`RedisAdapter::stats`] after handing one to the server.
#[derive(Clone)]
pub struct RedisAdapter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAdapter")
            .field("node", &self.inner.id)
            .field("prefix", &self.inner.config.prefix)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisAdapter`]: the URL, the settings, the event handler.
#[must_use]
pub struct RedisAdapterBuilder {
    url: String,
    config: RedisConfig,
    on_event: Option<event::EventFn>,
}

impl RedisAdapterBuilder {
    /// The settings. Default [`RedisConfig::default`].
    pub fn config(mut self, config: RedisConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs for every [`ClusterEvent`] (Redis lost and back, entries dropped or lost, nodes
    /// gone). Runs on the adapter's tasks: keep it short and never block.
    pub fn on_event(mut self, handler: impl Fn(&ClusterEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(handler));
        self
    }

    /// Checks the settings and that Redis answers (within [`RedisConfig::command_timeout`]),
    /// and notes where the cluster's stream ends: the node delivers everything written after
    /// this. Nothing else runs until a server starts with the adapter.
    pub async fn connect(self) -> Result<RedisAdapter, Error> {
        self.config.check()?;
        // The URL may hold a password: it never goes into an error or a log.
        let client = redis::Client::open(self.url.as_str())
            .map_err(|error| Error::Url(format!("{:?}", error.kind())))?;
        let timeout = self.config.command_timeout;
        let control = Link::new(client.clone(), timeout, timeout);
        let (_, mut connection, _) = control.get().await?;
        let keys = Keys::new(&self.config.prefix);
        let id = NodeId::random();
        let register = async {
            let start = reader::starting_point(&mut connection, &keys.bus).await?;
            // Registered before the server starts: a request to this node waits in the stream
            // for its reader, which starts from `start`.
            heartbeat::refresh(&mut connection, &keys, id, self.config.node_ttl).await?;
            heartbeat::create_inbox(&mut connection, &keys, id).await?;
            Ok::<_, redis::RedisError>(start)
        };
        let start = tokio::time::timeout(timeout, register)
            .await
            .map_err(|_| Error::Timeout(timeout))??;
        let inner = Inner {
            id,
            keys,
            start,
            outbox: Outbox::new(id, self.config.max_held, self.config.max_held_bytes),
            telemetry: Telemetry::new(self.on_event),
            requests: query::Requests::default(),
            client,
            control,
            node: OnceLock::new(),
            stop: tokio::sync::watch::Sender::new(false),
            left: AtomicBool::new(false),
            registration_lost: AtomicBool::new(false),
            dropping: AtomicBool::new(false),
            config: self.config,
        };
        tracing::debug!(node = %id, "cluster adapter ready");
        Ok(RedisAdapter {
            inner: Arc::new(inner),
        })
    }
}

impl RedisAdapter {
    /// An adapter with the default settings; see [`RedisAdapterBuilder::connect`].
    /// `url` is `redis://[user:password@]host[:port][/db]`.
    pub async fn connect(url: &str) -> Result<RedisAdapter, Error> {
        RedisAdapter::builder(url).connect().await
    }

    /// A builder for an adapter with settings or an event handler.
    pub fn builder(url: impl Into<String>) -> RedisAdapterBuilder {
        RedisAdapterBuilder {
            url: url.into(),
            config: RedisConfig::default(),
            on_event: None,
        }
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> NodeId {
        self.inner.id
    }

    /// The counters since the adapter started.
    pub fn stats(&self) -> Stats {
        self.inner.telemetry.snapshot(self.inner.outbox.held())
    }

    /// Waits until every entry held when it was called has been written to Redis (or dropped
    /// because the adapter left). With Redis down this waits until it is back: bound it with a
    /// timeout. An application that broadcasts faster than Redis takes it can wait on this
    /// when [`Stats::held`] grows, instead of reaching [`RedisConfig::max_held`].
    pub async fn flushed(&self) {
        self.inner.outbox.flushed().await;
    }
}

/// The state every task of one adapter shares.
pub(crate) struct Inner {
    pub(crate) id: NodeId,
    pub(crate) config: RedisConfig,
    pub(crate) keys: Keys,
    /// The Redis process and the stream's last entry when the adapter connected.
    pub(crate) start: (String, String),
    pub(crate) client: redis::Client,
    /// Heartbeats and queries (the writer and reader have links of their own).
    pub(crate) control: Link,
    pub(crate) node: OnceLock<Node>,
    pub(crate) outbox: Outbox,
    pub(crate) telemetry: Telemetry,
    pub(crate) requests: query::Requests,
    /// Set once: every task ends.
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
    /// The node left the cluster: nothing more is carried.
    pub(crate) left: AtomicBool,
    /// The heartbeat found this node's registration gone (Redis lost it, or others removed
    /// the node): the writer says so once it has registered again.
    pub(crate) registration_lost: AtomicBool,
    /// Entries are being dropped (logged once per episode).
    pub(crate) dropping: AtomicBool,
}

impl Inner {
    /// Holds an entry for Redis, or counts and reports it.
    pub(crate) fn hold(
        &self,
        stream: Stream,
        kind: EntryKind,
        body: Body,
        payload: Option<bytes::Bytes>,
    ) -> bool {
        let refused = if self.left.load(Ordering::Acquire) {
            Err(kind)
        } else {
            self.outbox.push(stream, kind, body, payload)
        };
        match refused {
            Ok(()) => {
                self.dropping.store(false, Ordering::Relaxed);
                true
            }
            Err(kind) => {
                let total = self.telemetry.dropped.add(1);
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(node = %self.id, ?kind, total, "cluster entries dropped: too much held for Redis");
                }
                self.telemetry.emit(ClusterEvent::Dropped { kind, total });
                false
            }
        }
    }

    pub(crate) fn node(&self) -> Option<&Node> {
        self.node.get()
    }

    pub(crate) fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves when every task is to end.
    pub(crate) async fn until_stopped(&self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|stopped| *stopped).await;
    }

    /// Sleeps `pause`, or less if the adapter stops meanwhile; false if it stopped.
    pub(crate) async fn pause(&self, pause: std::time::Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(pause) => !self.stopped(),
            _ = self.until_stopped() => false,
        }
    }
}

impl Adapter for RedisAdapter {
    fn attach(&self, node: Node) {
        if self.inner.node.set(node).is_err() {
            tracing::warn!(node = %self.inner.id, "a RedisAdapter serves one server; attached again, ignored");
            return;
        }
        tokio::spawn(reader::run(self.inner.clone()));
        tokio::spawn(writer::run(self.inner.clone()));
        tokio::spawn(heartbeat::run(self.inner.clone()));
    }

    fn publish(&self, envelope: &Envelope) {
        let body = wire::broadcast_body(envelope);
        let payload = envelope.message.payload.clone();
        self.inner
            .hold(Stream::Bus, EntryKind::Broadcast, body, Some(payload));
    }

    fn presence(&self, change: &Presence) {
        let (joined, room, member) = match change {
            Presence::Joined { room, member } => (true, room, member),
            Presence::Left { room, member } => (false, room, member),
            _ => return,
        };
        if self.inner.left.load(Ordering::Acquire) {
            return;
        }
        let op = joined.then(|| member.label.clone());
        self.inner.outbox.change(member.id.0, room.clone(), op);
        let membership = Membership {
            room: room.clone(),
            peer: member.id.0,
            label: member.label.clone(),
        };
        let body = if joined {
            Body::Joined(membership)
        } else {
            Body::Left(membership)
        };
        self.inner.hold(Stream::Bus, EntryKind::Presence, body, None);
    }

    fn send_to(&self, peer: PeerId, message: Message) -> BoxFuture<'static, Result<bool, truflux::Error>> {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(query::send_to(&inner, peer, message).await?) })
    }

    fn rooms(&self, local: Vec<String>) -> BoxFuture<'static, Result<Vec<String>, truflux::Error>> {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(query::rooms(&inner, local).await?) })
    }

    fn members(
        &self,
        room: String,
        local: Vec<truflux::Member>,
    ) -> BoxFuture<'static, Result<Vec<truflux::Member>, truflux::Error>> {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(query::members(&inner, &room, local).await?) })
    }

    fn connections(&self, local: usize) -> BoxFuture<'static, Result<usize, truflux::Error>> {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(query::connections(&inner, local).await?) })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        // Set before the first await: from now on nothing new is carried.
        let first = !inner.left.swap(true, Ordering::AcqRel);
        Box::pin(async move {
            if first {
                heartbeat::leave(&inner).await;
            }
        })
    }
}
