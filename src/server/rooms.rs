//! Rooms on one server: who is in which room, what a room remembers, and the limits.
//!
//! This module owns the local membership table (room → members, peer → rooms and label), the
//! optional history of each room, and the checks on names and counts. Fan-out and the cluster
//! belong to [`super::broadcast`] and [`super::adapter`]; this module must not send anything.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::connection::PeerId;
use crate::protocol::Message;

/// Limits of rooms, and a room's history.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RoomConfig {
    /// Rooms one peer may be in at once. Default 64; one more join fails with
    /// [`RoomError::TooManyRooms`] and changes nothing.
    pub max_rooms_per_peer: usize,
    /// Longest room name, in octets of UTF-8. Default 128; a longer (or empty) name fails with
    /// [`RoomError::BadName`].
    pub max_name: usize,
    /// What each room remembers of its broadcasts, delivered to a peer that joins (oldest
    /// first, before anything newer). Default `None`: rooms remember nothing.
    pub history: Option<HistoryLimit>,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            max_rooms_per_peer: 64,
            max_name: 128,
            history: None,
        }
    }
}

crate::setters::setters!(RoomConfig {
    /// Sets [`RoomConfig::max_rooms_per_peer`].
    max_rooms_per_peer: usize,
    /// Sets [`RoomConfig::max_name`].
    max_name: usize,
    /// Sets [`RoomConfig::history`].
    history: Option<HistoryLimit>,
});

/// How much a room remembers: the last `messages`, and never more than `bytes` of payload
/// (the oldest go first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryLimit {
    /// Most messages kept. Default 100.
    pub messages: usize,
    /// Most payload octets kept. Default 256 KiB.
    pub bytes: usize,
}

impl Default for HistoryLimit {
    fn default() -> Self {
        HistoryLimit {
            messages: 100,
            bytes: 256 * 1024,
        }
    }
}

crate::setters::setters!(HistoryLimit {
    /// Sets [`HistoryLimit::messages`].
    messages: usize,
    /// Sets [`HistoryLimit::bytes`].
    bytes: usize,
});

/// Why a room operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The name is empty or longer than the limit.
    #[error("room names are 1 to {max} octets")]
    BadName {
        /// The limit.
        max: usize,
    },
    /// The peer is in as many rooms as allowed.
    #[error("a peer is in at most {max} rooms")]
    TooManyRooms {
        /// The limit.
        max: usize,
    },
    /// The peer is not connected to a server (a client's own peer has no rooms).
    #[error("rooms live on the server")]
    NotOnServer,
}

/// A peer in a room, as presence reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct Member {
    /// The peer.
    pub id: PeerId,
    /// The label the server gave it ([`Peer::set_label`](crate::Peer::set_label)): a nickname,
    /// or the identity from authentication. `None` when it has none.
    pub label: Option<String>,
}

impl Member {
    /// A member with this id and label.
    pub fn new(id: PeerId, label: Option<String>) -> Member {
        Member { id, label }
    }
}

/// A change of a room's members.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Presence {
    /// `member` joined `room`.
    Joined {
        /// The room.
        room: String,
        /// Who.
        member: Member,
    },
    /// `member` left `room` (by leaving, or because its session ended).
    Left {
        /// The room.
        room: String,
        /// Who.
        member: Member,
    },
}

#[derive(Default)]
struct Room {
    members: BTreeSet<PeerId>,
    history: VecDeque<Message>,
    history_bytes: usize,
}

#[derive(Default)]
struct Membership {
    label: Option<Arc<str>>,
    rooms: Vec<Arc<str>>,
}

#[derive(Default)]
struct Table {
    rooms: HashMap<Arc<str>, Room>,
    peers: HashMap<PeerId, Membership>,
}

/// One server's rooms.
#[derive(Default)]
pub(crate) struct Rooms {
    table: RwLock<Table>,
    config: RoomConfig,
}

/// What a join did.
pub(crate) struct Joined {
    /// The member as presence reports it; `None` when it was in the room already.
    pub(crate) member: Option<Member>,
    /// The room's history, to hand to the peer that joined.
    pub(crate) history: Vec<Message>,
}

impl Rooms {
    pub(crate) fn new(config: RoomConfig) -> Rooms {
        Rooms {
            table: RwLock::default(),
            config,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    fn check_name(&self, room: &str) -> Result<(), RoomError> {
        if room.is_empty() || room.len() > self.config.max_name {
            return Err(RoomError::BadName {
                max: self.config.max_name,
            });
        }
        Ok(())
    }

    pub(crate) fn join(&self, peer: PeerId, room: &str) -> Result<Joined, RoomError> {
        self.check_name(room)?;
        let mut table = self.write();
        let membership = table.peers.entry(peer).or_default();
        if membership.rooms.iter().any(|r| &**r == room) {
            return Ok(Joined {
                member: None,
                history: Vec::new(),
            });
        }
        if membership.rooms.len() >= self.config.max_rooms_per_peer {
            return Err(RoomError::TooManyRooms {
                max: self.config.max_rooms_per_peer,
            });
        }
        let name: Arc<str> = match table.rooms.get_key_value(room) {
            Some((name, _)) => name.clone(),
            None => Arc::from(room),
        };
        let membership = table.peers.entry(peer).or_default();
        membership.rooms.push(name.clone());
        let label = membership.label.as_deref().map(str::to_owned);
        let entry = table.rooms.entry(name).or_default();
        entry.members.insert(peer);
        Ok(Joined {
            member: Some(Member::new(peer, label)),
            history: entry.history.iter().cloned().collect(),
        })
    }

    /// Leaves a room; the member it was, if it was in it.
    pub(crate) fn leave(&self, peer: PeerId, room: &str) -> Option<Member> {
        let mut table = self.write();
        let membership = table.peers.get_mut(&peer)?;
        let at = membership.rooms.iter().position(|r| &**r == room)?;
        membership.rooms.swap_remove(at);
        let member = Member::new(peer, membership.label.as_deref().map(str::to_owned));
        remove_member(&mut table, room, peer);
        Some(member)
    }

    /// The session ended: it leaves every room; the rooms it was in, and the member it was.
    pub(crate) fn leave_all(&self, peer: PeerId) -> (Vec<String>, Member) {
        let mut table = self.write();
        let membership = table.peers.remove(&peer).unwrap_or_default();
        for room in &membership.rooms {
            remove_member(&mut table, room, peer);
        }
        let member = Member::new(peer, membership.label.as_deref().map(str::to_owned));
        (membership.rooms.iter().map(|r| r.to_string()).collect(), member)
    }

    pub(crate) fn set_label(&self, peer: PeerId, label: Option<String>) {
        self.write().peers.entry(peer).or_default().label = label.map(Arc::from);
    }

    pub(crate) fn rooms_of(&self, peer: PeerId) -> Vec<String> {
        let table = self.read();
        let mut rooms: Vec<String> = table
            .peers
            .get(&peer)
            .map(|m| m.rooms.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default();
        rooms.sort();
        rooms
    }

    /// Every room with at least one member here, sorted.
    pub(crate) fn rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self.read().rooms.keys().map(|r| r.to_string()).collect();
        rooms.sort();
        rooms
    }

    /// The members of `room` here, by id.
    pub(crate) fn members(&self, room: &str) -> Vec<Member> {
        let table = self.read();
        let Some(entry) = table.rooms.get(room) else {
            return Vec::new();
        };
        entry
            .members
            .iter()
            .map(|id| {
                let label = table
                    .peers
                    .get(id)
                    .and_then(|m| m.label.as_deref())
                    .map(str::to_owned);
                Member::new(*id, label)
            })
            .collect()
    }

    /// Each peer here that is in any of `rooms` and in none of `except_rooms`, once.
    pub(crate) fn recipients(&self, rooms: &[String], except_rooms: &[String]) -> BTreeSet<PeerId> {
        let table = self.read();
        let mut recipients = BTreeSet::new();
        for room in rooms {
            if let Some(entry) = table.rooms.get(room.as_str()) {
                recipients.extend(entry.members.iter().copied());
            }
        }
        for room in except_rooms {
            if let Some(entry) = table.rooms.get(room.as_str()) {
                for id in &entry.members {
                    recipients.remove(id);
                }
            }
        }
        recipients
    }

    /// Whether `peer` is in any of `rooms`.
    pub(crate) fn in_any(&self, peer: PeerId, rooms: &[String]) -> bool {
        let table = self.read();
        table
            .peers
            .get(&peer)
            .is_some_and(|m| m.rooms.iter().any(|r| rooms.iter().any(|room| room == &**r)))
    }

    /// A room broadcast, remembered by each of its rooms that keeps history.
    pub(crate) fn remember(&self, rooms: &[String], message: &Message) {
        let Some(limit) = self.config.history else { return };
        if limit.messages == 0 || message.payload.len() > limit.bytes {
            return;
        }
        let mut table = self.write();
        for room in rooms {
            if let Some(entry) = table.rooms.get_mut(room.as_str()) {
                entry.history.push_back(message.clone());
                entry.history_bytes += message.payload.len();
                while entry.history.len() > limit.messages || entry.history_bytes > limit.bytes {
                    if let Some(old) = entry.history.pop_front() {
                        entry.history_bytes -= old.payload.len();
                    }
                }
            }
        }
    }
}

/// Removes `peer` from `room`; a room left empty is forgotten, history included.
fn remove_member(table: &mut Table, room: &str, peer: PeerId) {
    if let Some(entry) = table.rooms.get_mut(room) {
        entry.members.remove(&peer);
        if entry.members.is_empty() {
            table.rooms.remove(room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(text: &'static str) -> Message {
        Message {
            id: 1,
            payload: Bytes::from_static(text.as_bytes()),
        }
    }

    #[test]
    fn a_peer_in_many_target_rooms_is_one_recipient_and_excluded_rooms_win() {
        let rooms = Rooms::default();
        let (a, b, c) = (PeerId(1), PeerId(2), PeerId(3));
        for (peer, room) in [(a, "x"), (a, "y"), (b, "y"), (c, "z"), (b, "z")] {
            rooms.join(peer, room).unwrap();
        }
        let all = rooms.recipients(&["x".into(), "y".into(), "z".into()], &[]);
        assert_eq!(all.into_iter().collect::<Vec<_>>(), [a, b, c]);
        let some = rooms.recipients(&["x".into(), "y".into()], &["z".into()]);
        assert_eq!(some.into_iter().collect::<Vec<_>>(), [a], "b is in z");
    }

    #[test]
    fn names_and_counts_are_limited_and_a_refused_join_changes_nothing() {
        let rooms = Rooms::new(RoomConfig::default().max_rooms_per_peer(2).max_name(4));
        let a = PeerId(1);
        assert_eq!(rooms.join(a, "").err(), Some(RoomError::BadName { max: 4 }));
        assert_eq!(
            rooms.join(a, "toolong").err(),
            Some(RoomError::BadName { max: 4 })
        );
        rooms.join(a, "one").unwrap();
        rooms.join(a, "two").unwrap();
        assert!(rooms.join(a, "two").unwrap().member.is_none(), "already in it");
        assert_eq!(
            rooms.join(a, "six").err(),
            Some(RoomError::TooManyRooms { max: 2 })
        );
        assert_eq!(rooms.rooms_of(a), ["one", "two"]);
    }

    #[test]
    fn history_keeps_the_last_messages_within_both_bounds_and_goes_with_the_room() {
        let limit = HistoryLimit::default().messages(3).bytes(10);
        let rooms = Rooms::new(RoomConfig::default().history(Some(limit)));
        let a = PeerId(1);
        rooms.join(a, "r").unwrap();
        for text in ["1", "22", "333", "4444"] {
            rooms.remember(&["r".into()], &message(text));
        }
        let seen: Vec<Bytes> = rooms
            .join(PeerId(2), "r")
            .unwrap()
            .history
            .into_iter()
            .map(|m| m.payload)
            .collect();
        assert_eq!(seen, ["22", "333", "4444"], "3 messages, 9 octets");
        rooms.remember(&["r".into()], &message("55555"));
        let seen = rooms.join(PeerId(3), "r").unwrap().history;
        assert_eq!(
            seen.iter().map(|m| m.payload.len()).sum::<usize>(),
            9,
            "at most 10 octets"
        );
        for peer in [PeerId(1), PeerId(2), PeerId(3)] {
            rooms.leave_all(peer);
        }
        assert!(rooms.rooms().is_empty());
        assert!(
            rooms.join(a, "r").unwrap().history.is_empty(),
            "an emptied room forgets"
        );
    }
}
