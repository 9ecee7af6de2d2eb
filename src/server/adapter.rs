//! The cluster boundary: where broadcasts, room fan-out and membership queries go beyond this
//! process.
//!
//! A server always delivers to its own peers itself (encoded once, from its local room table);
//! an [`Adapter`] carries what happened here to the other nodes and answers cluster-wide
//! queries, and hands what other nodes publish back through the [`Node`] it was given. The
//! default, [`LocalAdapter`], is a server alone: nothing to carry, every query answered with
//! this node's view. The application's API (`server.to(room)…`, `peer.join`, `server.rooms()`)
//! is the same whichever adapter runs. This module owns the trait and the node handle; it must
//! not know any engine (Redis or other).

use std::sync::{Arc, Weak};

use super::rooms::{Member, Presence};
use super::{BroadcastReport, Hub};
use crate::connection::PeerId;
use crate::error::Error;
use crate::protocol::{BoxFuture, Message};

/// Who a broadcast is for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Target {
    /// The rooms whose members get it; empty: every peer.
    pub rooms: Vec<String>,
    /// Peers left out.
    pub except_peers: Vec<PeerId>,
    /// Members of these rooms left out.
    pub except_rooms: Vec<String>,
}

impl Target {
    /// Every peer.
    pub fn everyone() -> Target {
        Target::default()
    }

    /// The members of `rooms`.
    pub fn rooms(rooms: Vec<String>) -> Target {
        Target {
            rooms,
            ..Target::default()
        }
    }
}

/// A broadcast as it travels between nodes: who it is for, and the encoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope {
    /// Who it is for.
    pub target: Target,
    /// The message, encoded once.
    pub message: Message,
}

impl Envelope {
    /// A broadcast of `message` to `target`.
    pub fn new(target: Target, message: Message) -> Envelope {
        Envelope { target, message }
    }
}

/// Carries a server's broadcasts, presence and queries to and from other nodes.
///
/// Every method has a default that behaves like a server alone, so an adapter implements what
/// it carries. Methods are called on the application's tasks and must not block: an adapter
/// that talks to a network hands the work to tasks of its own.
pub trait Adapter: Send + Sync + 'static {
    /// The server started: `node` delivers to this server's peers what other nodes publish.
    fn attach(&self, node: Node) {
        let _ = node;
    }

    /// A broadcast this node made (its own peers have it already): carry it to the others.
    fn publish(&self, envelope: &Envelope) {
        let _ = envelope;
    }

    /// A membership change on this node: carry it to the others.
    fn presence(&self, change: &Presence) {
        let _ = change;
    }

    /// A message for a peer that is not connected here; `Ok(true)` once another node took it.
    fn send_to(&self, peer: PeerId, message: Message) -> BoxFuture<'static, Result<bool, Error>> {
        let _ = (peer, message);
        Box::pin(std::future::ready(Ok(false)))
    }

    /// Every room with members on any node, given this node's.
    fn rooms(&self, local: Vec<String>) -> BoxFuture<'static, Result<Vec<String>, Error>> {
        Box::pin(std::future::ready(Ok(local)))
    }

    /// The members of `room` on every node, given this node's.
    fn members(&self, room: String, local: Vec<Member>) -> BoxFuture<'static, Result<Vec<Member>, Error>> {
        let _ = room;
        Box::pin(std::future::ready(Ok(local)))
    }

    /// Peers connected to every node, given this node's count.
    fn connections(&self, local: usize) -> BoxFuture<'static, Result<usize, Error>> {
        Box::pin(std::future::ready(Ok(local)))
    }

    /// The server is shutting down: this node leaves the cluster.
    fn shutdown(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// A server alone: the default adapter.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalAdapter;

impl Adapter for LocalAdapter {}

/// This node, as its adapter sees it.
#[derive(Clone)]
pub struct Node {
    hub: Weak<Hub>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").finish_non_exhaustive()
    }
}

impl Node {
    pub(crate) fn new(hub: &Arc<Hub>) -> Node {
        Node {
            hub: Arc::downgrade(hub),
        }
    }

    /// Delivers another node's broadcast to this node's peers (and nowhere else); this node's
    /// rooms that keep history remember it, as they remember its own broadcasts.
    pub fn deliver(&self, envelope: &Envelope) -> BroadcastReport {
        let Some(hub) = self.hub.upgrade() else {
            return BroadcastReport::default();
        };
        match hub.deliver_local(envelope) {
            Ok(report) => {
                hub.rooms.remember(&envelope.target.rooms, &envelope.message);
                report
            }
            Err(_) => BroadcastReport::default(),
        }
    }

    /// Delivers a message to one of this node's peers; false if it is not connected here.
    pub fn deliver_to(&self, peer: PeerId, message: Message) -> bool {
        self.hub
            .upgrade()
            .is_some_and(|hub| hub.deliver_to_local(peer, message))
    }

    /// Tells this node's application of another node's membership change.
    pub fn presence(&self, change: &Presence) {
        if let Some(hub) = self.hub.upgrade() {
            hub.tell_presence(change);
        }
    }

    /// This node's rooms and their members: what to register again with a cluster that lost
    /// its state.
    pub fn local_members(&self) -> Vec<(String, Vec<Member>)> {
        let Some(hub) = self.hub.upgrade() else {
            return Vec::new();
        };
        hub.rooms
            .rooms()
            .into_iter()
            .map(|room| {
                let members = hub.rooms.members(&room);
                (room, members)
            })
            .collect()
    }

    /// Peers connected to this node.
    pub fn local_connections(&self) -> usize {
        self.hub.upgrade().map_or(0, |hub| hub.connected())
    }

    /// Whether the server is still running.
    pub fn is_running(&self) -> bool {
        self.hub.upgrade().is_some_and(|hub| !hub.shutdown.is_cancelled())
    }
}
