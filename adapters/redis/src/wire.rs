//! What travels through Redis: stream entries (a MessagePack header and the message payload
//! as it is), the membership values kept in hashes, and reading `XREAD` answers.
//!
//! This module owns the byte layout between nodes; it must not do IO. Everything read from
//! Redis is checked: a malformed entry is an error for the caller to count, never a panic.

use bytes::Bytes;
use redis::Value;
use serde::{Deserialize, Serialize};
use truflux::adapter::{Envelope, Target};
use truflux::{Member, Message, PeerId};

use crate::event::NodeId;

/// Field of an entry holding its [`Header`].
pub(crate) const HEADER: &str = "h";
/// Field of an entry holding a message's payload, exactly as the application encoded it.
pub(crate) const PAYLOAD: &str = "d";

/// Who wrote an entry, its place in that node's sequence, and what it says.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Header {
    /// The writing node.
    pub(crate) node: u64,
    /// 1, 2, 3… for entries in the shared stream; 0 for replies (they carry a request id).
    pub(crate) seq: u64,
    pub(crate) body: Body,
}

/// A peer in a room, as entries and hashes carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Membership {
    pub(crate) room: String,
    pub(crate) peer: u64,
    pub(crate) label: Option<String>,
}

impl Membership {
    /// Every membership of `node`'s own peers, room by room.
    pub(crate) fn of(node: &truflux::adapter::Node) -> Vec<Membership> {
        node.local_members()
            .into_iter()
            .flat_map(|(room, members)| {
                members.into_iter().map(move |m| Membership {
                    room: room.clone(),
                    peer: m.id.0,
                    label: m.label,
                })
            })
            .collect()
    }

    pub(crate) fn member(&self) -> Member {
        Member::new(PeerId(self.peer), self.label.clone())
    }
}

/// What an entry says.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Body {
    /// A broadcast; the payload is in [`PAYLOAD`].
    Broadcast {
        id: u32,
        rooms: Vec<String>,
        except_peers: Vec<u64>,
        except_rooms: Vec<String>,
    },
    /// A message for one peer, wherever it is; the node that has it answers `req`.
    Direct { id: u32, peer: u64, req: u64 },
    /// A peer joined a room on the writing node.
    Joined(Membership),
    /// A peer left a room on the writing node.
    Left(Membership),
    /// `node` left the cluster (or was taken for gone): its members left their rooms.
    Gone { node: u64, members: Vec<Membership> },
    /// The writing node had been taken for gone and is back: its members are in their rooms.
    Back { members: Vec<Membership> },
    /// How many peers are connected to you? Answer `req`.
    Count { req: u64 },
    /// The answer to request `req` (in the asking node's inbox).
    Reply { req: u64, value: u64 },
    /// Creates a node's inbox (replies are written only into inboxes that exist).
    Hello,
}

impl Header {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Header> {
        rmp_serde::from_slice(bytes).ok()
    }
}

/// The body of a broadcast entry.
pub(crate) fn broadcast_body(envelope: &Envelope) -> Body {
    let target = &envelope.target;
    Body::Broadcast {
        id: envelope.message.id,
        rooms: target.rooms.clone(),
        except_peers: target.except_peers.iter().map(|p| p.0).collect(),
        except_rooms: target.except_rooms.clone(),
    }
}

/// The envelope a broadcast entry carries.
pub(crate) fn envelope(
    id: u32,
    rooms: Vec<String>,
    except_peers: &[u64],
    except_rooms: Vec<String>,
    payload: Bytes,
) -> Envelope {
    let mut target = Target::rooms(rooms);
    target.except_peers = except_peers.iter().map(|p| PeerId(*p)).collect();
    target.except_rooms = except_rooms;
    Envelope::new(target, Message { id, payload })
}

/// What a room's hash holds for a member: the node it is on and its label.
pub(crate) fn member_value(node: NodeId, label: Option<&str>) -> Vec<u8> {
    rmp_serde::to_vec(&(node.0, label)).unwrap_or_default()
}

pub(crate) fn parse_member_value(bytes: &[u8]) -> Option<(NodeId, Option<String>)> {
    let (node, label): (u64, Option<String>) = rmp_serde::from_slice(bytes).ok()?;
    Some((NodeId(node), label))
}

/// One entry as read from a stream.
#[derive(Debug)]
pub(crate) struct RawEntry {
    pub(crate) id: String,
    pub(crate) header: Option<Vec<u8>>,
    pub(crate) payload: Option<Bytes>,
}

/// A stream's name and the entries read from it.
pub(crate) type StreamEntries = (Vec<u8>, Vec<RawEntry>);

/// The entries of an `XREAD` answer, stream by stream (`Nil` when the block timed out).
pub(crate) fn parse_xread(value: Value) -> Result<Vec<StreamEntries>, &'static str> {
    let streams: Vec<(Value, Value)> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    match (pair.next(), pair.next()) {
                        (Some(key), Some(entries)) => Ok((key, entries)),
                        _ => Err("a stream without entries"),
                    }
                }
                _ => Err("a stream that is not a pair"),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(pairs) => pairs,
        _ => return Err("XREAD answered neither nil, an array nor a map"),
    };
    streams
        .into_iter()
        .map(|(key, entries)| {
            Ok((
                bulk(key).ok_or("a stream name that is not a string")?,
                entries_of(entries)?,
            ))
        })
        .collect()
}

/// The entries of one stream in an `XREAD` or `XREVRANGE` answer.
pub(crate) fn entries_of(value: Value) -> Result<Vec<RawEntry>, &'static str> {
    let Value::Array(entries) = value else {
        return Err("entries that are not an array");
    };
    entries.into_iter().map(entry).collect()
}

fn entry(value: Value) -> Result<RawEntry, &'static str> {
    let Value::Array(parts) = value else {
        return Err("an entry that is not an array");
    };
    let mut parts = parts.into_iter();
    let id = parts.next().and_then(bulk).ok_or("an entry without an id")?;
    let id = String::from_utf8(id).map_err(|_| "an entry id that is not text")?;
    let mut raw = RawEntry {
        id,
        header: None,
        payload: None,
    };
    // Deleted entries come back without fields: they stay without a header.
    if let Some(Value::Array(fields)) = parts.next() {
        let mut fields = fields.into_iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            match (bulk(name).as_deref(), bulk(value)) {
                (Some(b"h"), Some(header)) => raw.header = Some(header),
                (Some(b"d"), Some(payload)) => raw.payload = Some(Bytes::from(payload)),
                _ => {}
            }
        }
    }
    Ok(raw)
}

/// The bytes of a string answer.
pub(crate) fn bulk(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_garbage_is_refused() {
        let header = Header {
            node: 7,
            seq: 42,
            body: Body::Broadcast {
                id: 9,
                rooms: vec!["lobby".into()],
                except_peers: vec![3],
                except_rooms: vec!["muted".into()],
            },
        };
        assert_eq!(Header::decode(&header.encode()), Some(header));
        assert_eq!(Header::decode(b"\xc1\xff"), None);
        assert_eq!(
            Header::decode(&[0x9f; 64]),
            None,
            "an array claiming more than is there"
        );
    }

    #[test]
    fn xread_answers_are_read_and_strange_ones_refused() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = Value::Array(vec![
            bulk("1-1"),
            Value::Array(vec![bulk("h"), bulk("H"), bulk("d"), bulk("payload")]),
        ]);
        let answer = Value::Array(vec![Value::Array(vec![bulk("bus"), Value::Array(vec![entry])])]);
        let streams = parse_xread(answer).unwrap();
        assert_eq!(streams[0].0, b"bus");
        let raw = &streams[0].1[0];
        assert_eq!(raw.id, "1-1");
        assert_eq!(raw.header.as_deref(), Some(&b"H"[..]));
        assert_eq!(raw.payload.as_deref(), Some(&b"payload"[..]));
        assert!(parse_xread(Value::Nil).unwrap().is_empty());
        assert!(parse_xread(Value::Int(3)).is_err());
        assert!(parse_xread(Value::Array(vec![Value::Int(3)])).is_err());
    }
}
