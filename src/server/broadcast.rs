//! Broadcast: `server.to(room).except(peer).broadcast(message)`, the local fan-out (encoded
//! once, each recipient once), the adapter's share, room membership from a peer's side.
//!
//! This module owns who receives a broadcast on this node and what happens to a peer whose
//! queue is full; the membership table is [`super::rooms`]'s, the other nodes the adapter's.

use std::collections::HashSet;

use tracing::warn;

use super::adapter::{Envelope, Target};
use super::rooms::{Member, Presence, RoomError};
use super::{Hub, Server};
use crate::config::SlowPeerPolicy;
use crate::connection::{Peer, PeerId};
use crate::error::{Code, Error};
use crate::frame::Frame;
use crate::protocol::Message;

/// Which peers a broadcast reached on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BroadcastReport {
    /// Peers the message was queued for.
    pub queued: usize,
    /// Peers whose queue was full: closed with `SLOW_CONSUMER` under [`SlowPeerPolicy::Close`],
    /// left connected without the message under [`SlowPeerPolicy::Report`].
    pub slow: Vec<PeerId>,
}

/// Rooms to broadcast to: one name, or several.
#[derive(Clone, Debug)]
pub struct RoomSet(pub(crate) Vec<String>);

impl From<&str> for RoomSet {
    fn from(room: &str) -> RoomSet {
        RoomSet(vec![room.to_owned()])
    }
}

impl From<String> for RoomSet {
    fn from(room: String) -> RoomSet {
        RoomSet(vec![room])
    }
}

impl<const N: usize> From<[&str; N]> for RoomSet {
    fn from(rooms: [&str; N]) -> RoomSet {
        RoomSet(rooms.iter().map(|r| r.to_string()).collect())
    }
}

impl From<Vec<String>> for RoomSet {
    fn from(rooms: Vec<String>) -> RoomSet {
        RoomSet(rooms)
    }
}

impl From<&[String]> for RoomSet {
    fn from(rooms: &[String]) -> RoomSet {
        RoomSet(rooms.to_vec())
    }
}

/// Whom to leave out of a broadcast: a peer, or the members of a room.
#[derive(Clone, Debug)]
pub enum Except {
    /// This peer.
    Peer(PeerId),
    /// Every member of this room.
    Room(String),
}

impl From<PeerId> for Except {
    fn from(id: PeerId) -> Except {
        Except::Peer(id)
    }
}

impl From<&Peer> for Except {
    fn from(peer: &Peer) -> Except {
        Except::Peer(peer.id())
    }
}

impl From<&str> for Except {
    fn from(room: &str) -> Except {
        Except::Room(room.to_owned())
    }
}

/// A broadcast being aimed: [`Server::to`] and [`Server::everyone`], then `except`, then
/// [`To::broadcast`]. Across a cluster when the server has an adapter for one.
#[must_use = "a broadcast goes out only with .broadcast()"]
#[derive(Clone, Debug)]
pub struct To {
    server: Server,
    target: Target,
}

impl To {
    /// Also the members of `rooms`.
    pub fn to(mut self, rooms: impl Into<RoomSet>) -> To {
        self.target.rooms.extend(rooms.into().0);
        self
    }

    /// Leaves a peer, or the members of a room, out.
    pub fn except(mut self, who: impl Into<Except>) -> To {
        match who.into() {
            Except::Peer(id) => self.target.except_peers.push(id),
            Except::Room(room) => self.target.except_rooms.push(room),
        }
        self
    }

    /// The target as it stands.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Queues `message` for every peer aimed at, without waiting; the payload is shared by all
    /// of them. A peer in several of the rooms gets it once. A peer whose queue is full is
    /// handled by [`ServerConfig::slow_peer`](crate::ServerConfig::slow_peer). Rooms that keep
    /// history remember it. Fails only if the message breaks the wire's limits.
    pub fn broadcast(self, message: Message) -> Result<BroadcastReport, Error> {
        let envelope = Envelope::new(self.target, message);
        let report = self.server.hub.deliver_local(&envelope)?;
        self.server
            .hub
            .rooms
            .remember(&envelope.target.rooms, &envelope.message);
        self.server.hub.adapter.publish(&envelope);
        Ok(report)
    }

    /// [`To::broadcast`] of a message with `id` and `payload`.
    pub fn broadcast_raw(self, id: u32, payload: impl Into<bytes::Bytes>) -> Result<BroadcastReport, Error> {
        self.broadcast(Message {
            id,
            payload: payload.into(),
        })
    }
}

impl Server {
    /// Aims a broadcast at the members of `rooms` (`"lobby"`, or `["a", "b"]`).
    pub fn to(&self, rooms: impl Into<RoomSet>) -> To {
        To {
            server: self.clone(),
            target: Target::rooms(rooms.into().0),
        }
    }

    /// Aims a broadcast at every peer.
    pub fn everyone(&self) -> To {
        To {
            server: self.clone(),
            target: Target::everyone(),
        }
    }

    /// Queues `message` for every connected peer except those in `exclude`, without waiting:
    /// `server.everyone().except(…).broadcast(message)`.
    pub fn broadcast(&self, message: Message, exclude: &[PeerId]) -> Result<BroadcastReport, Error> {
        let mut to = self.everyone();
        to.target.except_peers.extend_from_slice(exclude);
        to.broadcast(message)
    }

    /// Queues a message with `id` and `payload` for every peer but `exclude`; see
    /// [`Server::broadcast`].
    pub fn broadcast_raw(
        &self,
        id: u32,
        payload: impl Into<bytes::Bytes>,
        exclude: &[PeerId],
    ) -> Result<BroadcastReport, Error> {
        self.broadcast(
            Message {
                id,
                payload: payload.into(),
            },
            exclude,
        )
    }

    /// Every room with members, on every node of the cluster (this server's alone without an
    /// adapter for one), sorted.
    pub async fn rooms(&self) -> Result<Vec<String>, Error> {
        let local = self.hub.rooms.rooms();
        self.hub.adapter.rooms(local).await
    }

    /// The members of `room` on every node of the cluster.
    pub async fn room_members(&self, room: &str) -> Result<Vec<Member>, Error> {
        let local = self.hub.rooms.members(room);
        self.hub.adapter.members(room.to_owned(), local).await
    }

    /// The rooms with members on this server, sorted.
    pub fn local_rooms(&self) -> Vec<String> {
        self.hub.rooms.rooms()
    }

    /// Peers connected to every node of the cluster.
    pub async fn cluster_connections(&self) -> Result<usize, Error> {
        let local = self.num_connections();
        self.hub.adapter.connections(local).await
    }

    /// Sends `message` to the peer with `id`, wherever in the cluster it is connected; false
    /// when no node has it.
    pub async fn send_to(&self, id: PeerId, message: Message) -> Result<bool, Error> {
        if let Some(peer) = self.peer(id) {
            peer.send(message).await?;
            return Ok(true);
        }
        self.hub.adapter.send_to(id, message).await
    }
}

impl Hub {
    /// Delivers a broadcast to this node's peers: each recipient once, the payload shared.
    pub(crate) fn deliver_local(&self, envelope: &Envelope) -> Result<BroadcastReport, Error> {
        let message = &envelope.message;
        let frame = Frame::message(message.id, message.payload.clone());
        frame.check(self.config.connection.max_payload)?;
        let target = &envelope.target;
        let excluded: HashSet<PeerId> = target.except_peers.iter().copied().collect();
        let mut report = BroadcastReport::default();
        let mut slow = Vec::new();
        let started = self.meters.fanout_start();
        let mut offer = |peer: &Peer| match peer.try_enqueue(frame.clone()) {
            Ok(()) => report.queued += 1,
            Err(Error::QueueFull) => slow.push(peer.clone()),
            // Already closing: it is leaving and its disconnect handler will say so.
            Err(_) => {}
        };
        let peers = self.peers();
        if target.rooms.is_empty() {
            let skip_rooms = !target.except_rooms.is_empty();
            for (id, peer) in peers.iter() {
                if excluded.contains(id) || (skip_rooms && self.rooms.in_any(*id, &target.except_rooms)) {
                    continue;
                }
                offer(peer);
            }
        } else {
            for id in self.rooms.recipients(&target.rooms, &target.except_rooms) {
                if let Some(peer) = peers.get(&id).filter(|_| !excluded.contains(&id)) {
                    offer(peer);
                }
            }
        }
        drop(peers);
        self.meters.fanout_done(started);
        self.handle_slow(&mut report, slow);
        Ok(report)
    }

    fn handle_slow(&self, report: &mut BroadcastReport, slow: Vec<Peer>) {
        for peer in slow {
            if self.config.slow_peer == SlowPeerPolicy::Close {
                warn!(peer = %peer.id(), "closing slow consumer");
                self.meters.slow_consumer();
                peer.close_now(Code::SLOW_CONSUMER, "outbound queue full");
            }
            report.slow.push(peer.id());
        }
    }

    /// Delivers a message to one of this node's peers without waiting; false if it is not here
    /// (or its queue is full, which the slow-peer policy then handles).
    pub(crate) fn deliver_to_local(&self, id: PeerId, message: Message) -> bool {
        let Some(peer) = self.peers().get(&id).cloned() else {
            return false;
        };
        match peer.try_send(message) {
            Ok(()) => true,
            Err(Error::QueueFull) => {
                let mut report = BroadcastReport::default();
                self.handle_slow(&mut report, vec![peer]);
                false
            }
            Err(_) => false,
        }
    }

    /// A membership change: the application's presence handler, and the other nodes.
    pub(crate) fn presence_changed(&self, change: Presence) {
        self.tell_presence(&change);
        self.adapter.presence(&change);
    }

    pub(crate) fn tell_presence(&self, change: &Presence) {
        if let Some(on_presence) = &self.on_presence {
            on_presence(change);
        }
    }
}

impl Peer {
    /// Joins a room (a server's peer). Returns once the room's history, if it keeps one, is
    /// queued for this peer (oldest first, before anything newer). Joining a room it is in
    /// changes nothing. Fails with [`RoomError`] past the name or count limits
    /// ([`RoomConfig`](crate::RoomConfig)), and on a client's own peer.
    pub async fn join(&self, room: &str) -> Result<(), Error> {
        let server = self.server().ok_or(RoomError::NotOnServer)?;
        let joined = server.hub.rooms.join(self.id(), room)?;
        let Some(member) = joined.member else {
            return Ok(());
        };
        for message in joined.history {
            self.send(message).await?;
        }
        server.hub.presence_changed(Presence::Joined {
            room: room.to_owned(),
            member,
        });
        Ok(())
    }

    /// Leaves a room; false if the peer was not in it.
    pub fn leave(&self, room: &str) -> bool {
        let Some(server) = self.server() else { return false };
        let Some(member) = server.hub.rooms.leave(self.id(), room) else {
            return false;
        };
        server.hub.presence_changed(Presence::Left {
            room: room.to_owned(),
            member,
        });
        true
    }

    /// The rooms this peer is in, sorted (none on a client's own peer).
    pub fn rooms(&self) -> Vec<String> {
        self.server()
            .map(|server| server.hub.rooms.rooms_of(self.id()))
            .unwrap_or_default()
    }

    /// The label presence reports this peer with (a nickname, or the identity from
    /// authentication); it applies to the rooms it joins from now on and to membership
    /// queries.
    pub fn set_label(&self, label: impl Into<Option<String>>) {
        if let Some(server) = self.server() {
            server.hub.rooms.set_label(self.id(), label.into());
        }
    }
}

impl Hub {
    /// The session ended: it leaves every room, and presence says so.
    pub(crate) fn leave_rooms(&self, id: PeerId) {
        let (rooms, member) = self.rooms.leave_all(id);
        for room in rooms {
            self.presence_changed(Presence::Left {
                room,
                member: member.clone(),
            });
        }
    }
}
