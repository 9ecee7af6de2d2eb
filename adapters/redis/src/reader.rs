//! The reader task: the shared stream and this node's inbox, read from where it stopped, each
//! entry of another node applied once and in its sender's order.
//!
//! This module owns the cursors, the per-sender sequence check (duplicates skipped, gaps
//! reported) and what each entry does on this node (deliver, tell presence, answer); it must
//! not write to Redis (answers go through the outbox).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, Value};
use tracing::{debug, info, warn};
use truflux::{Message, PeerId, Presence};

use crate::event::{ClusterEvent, EntryKind, NodeId};
use crate::link::{Backoff, Link};
use crate::outbox::Stream;
use crate::wire::{self, Body, Header, RawEntry};
use crate::Inner;

/// How long one `XREAD` waits for entries.
const BLOCK: Duration = Duration::from_secs(1);

/// A stream entry id, `ms-seq`, ordered as Redis orders them.
type EntryId = (u64, u64);

fn parse_id(id: &str) -> Option<EntryId> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Where reading stands.
struct Cursors {
    bus_key: String,
    inbox_key: String,
    bus: String,
    inbox: String,
    /// The Redis process the cursors belong to.
    run_id: Option<String>,
    /// After Redis restarted, the stream is read from its start again: entries up to this id
    /// from nodes this one has never heard of are old, not new.
    floor: Option<EntryId>,
    /// The last sequence number seen of each node.
    last: HashMap<u64, u64>,
}

pub(crate) async fn run(inner: Arc<Inner>) {
    let timeout = inner.config.command_timeout;
    let link = Link::new(inner.client.clone(), timeout, BLOCK + timeout);
    let mut backoff = Backoff::new(
        inner.config.reconnect_min,
        inner.config.reconnect_max,
        !inner.id.0,
    );
    let (run_id, bus) = inner.start.clone();
    let mut cursors = Cursors {
        bus_key: inner.keys.bus.clone(),
        inbox_key: inner.keys.inbox(inner.id),
        bus,
        inbox: "0-0".to_owned(),
        run_id: Some(run_id),
        floor: None,
        last: HashMap::new(),
    };
    let mut failed = false;
    loop {
        let step = async {
            let (generation, mut connection, fresh) = link.get().await.map_err(|e| (None, e))?;
            if fresh {
                let restarted = cursors
                    .start(&mut connection)
                    .await
                    .map_err(|e| (Some(generation), e))?;
                if failed {
                    info!(node = %inner.id, restarted, "reading the cluster's stream again");
                    inner.telemetry.emit(ClusterEvent::Resubscribed {
                        redis_restarted: restarted,
                    });
                }
            }
            read_once(&inner, &mut connection, &mut cursors)
                .await
                .map_err(|e| (Some(generation), e))
        };
        let result = tokio::select! {
            result = step => result,
            _ = inner.until_stopped() => return,
        };
        match result {
            Ok(()) => {
                backoff.reset();
                failed = false;
            }
            Err((generation, error)) => {
                if let Some(generation) = generation {
                    link.broken(generation);
                }
                if !failed {
                    warn!(node = %inner.id, %error, "cannot read from Redis");
                }
                failed = true;
                if !inner.pause(backoff.pause()).await {
                    return;
                }
            }
        }
    }
}

impl Cursors {
    /// A new connection: where to read from. True if Redis restarted since the last one.
    async fn start(&mut self, connection: &mut MultiplexedConnection) -> Result<bool, RedisError> {
        let run_id = run_id(connection).await?;
        let restarted = match &self.run_id {
            None => {
                // A node reads what is written after it started, not the stream's past.
                self.bus = last_id(connection, &self.bus_key).await?;
                false
            }
            Some(previous) if *previous != run_id => {
                // The stream may be empty, or restored from Redis's files: read it all again;
                // sequence numbers skip what was already applied.
                self.floor = parse_id(&self.bus).max(self.floor);
                self.bus = "0-0".to_owned();
                self.inbox = "0-0".to_owned();
                true
            }
            Some(_) => false,
        };
        self.run_id = Some(run_id);
        Ok(restarted)
    }
}

/// Where a new node starts reading: the Redis process (its `run_id`) and the id of the
/// shared stream's last entry. Taken when the adapter connects, before its server starts, so
/// that nothing written for the server's peers is missed.
pub(crate) async fn starting_point(
    connection: &mut MultiplexedConnection,
    bus: &str,
) -> Result<(String, String), RedisError> {
    Ok((run_id(connection).await?, last_id(connection, bus).await?))
}

async fn run_id(connection: &mut MultiplexedConnection) -> Result<String, RedisError> {
    let info: String = redis::cmd("INFO").arg("server").query_async(connection).await?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(|id| id.trim().to_owned())
        .unwrap_or_default())
}

/// The id of the last entry of `stream`, or `0-0`.
async fn last_id(connection: &mut MultiplexedConnection, stream: &str) -> Result<String, RedisError> {
    let last: Value = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(connection)
        .await?;
    let entries = wire::entries_of(last).map_err(|why| RedisError::from((ErrorKind::Parse, why)))?;
    Ok(entries
        .into_iter()
        .next()
        .map_or_else(|| "0-0".to_owned(), |entry| entry.id))
}

async fn read_once(
    inner: &Inner,
    connection: &mut MultiplexedConnection,
    cursors: &mut Cursors,
) -> Result<(), RedisError> {
    let answer: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(inner.config.batch)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(&cursors.bus_key)
        .arg(&cursors.inbox_key)
        .arg(&cursors.bus)
        .arg(&cursors.inbox)
        .query_async(connection)
        .await?;
    let streams = wire::parse_xread(answer).map_err(|why| RedisError::from((ErrorKind::Parse, why)))?;
    for (key, entries) in streams {
        let from_bus = key == cursors.bus_key.as_bytes();
        for entry in entries {
            let id = entry.id.clone();
            if from_bus {
                on_bus_entry(inner, cursors, entry);
                cursors.bus = id;
            } else {
                on_inbox_entry(inner, entry);
                cursors.inbox = id;
            }
        }
    }
    Ok(())
}

fn malformed(inner: &Inner, entry: &str) {
    let total = inner.telemetry.malformed.add(1);
    if total == 1 {
        warn!(node = %inner.id, entry, "skipping an entry that cannot be read");
    }
    inner.telemetry.emit(ClusterEvent::Malformed {
        entry: entry.to_owned(),
    });
}

fn on_inbox_entry(inner: &Inner, entry: RawEntry) {
    match entry.header.as_deref().and_then(Header::decode) {
        Some(Header {
            node,
            body: Body::Reply { req, value },
            ..
        }) => inner.requests.answer(req, node, value),
        Some(Header {
            body: Body::Hello, ..
        }) => {}
        _ => malformed(inner, &entry.id),
    }
}

fn on_bus_entry(inner: &Inner, cursors: &mut Cursors, entry: RawEntry) {
    let Some(header) = entry.header.as_deref().and_then(Header::decode) else {
        return malformed(inner, &entry.id);
    };
    if header.node == inner.id.0 || !is_new(inner, cursors, &entry.id, &header) {
        return;
    }
    let Some(node) = inner.node() else { return };
    inner.telemetry.received.add(1);
    match header.body {
        Body::Broadcast {
            id,
            rooms,
            except_peers,
            except_rooms,
        } => {
            let Some(payload) = entry.payload else {
                return malformed(inner, &entry.id);
            };
            node.deliver(&wire::envelope(id, rooms, &except_peers, except_rooms, payload));
        }
        Body::Direct { id, peer, req } => {
            let Some(payload) = entry.payload else {
                return malformed(inner, &entry.id);
            };
            let took = node.deliver_to(PeerId(peer), Message { id, payload });
            answer(inner, header.node, req, u64::from(took));
        }
        Body::Count { req } => answer(inner, header.node, req, node.local_connections() as u64),
        Body::Joined(m) => node.presence(&Presence::Joined {
            member: m.member(),
            room: m.room,
        }),
        Body::Left(m) => node.presence(&Presence::Left {
            member: m.member(),
            room: m.room,
        }),
        Body::Back { members } => {
            for m in members {
                node.presence(&Presence::Joined {
                    member: m.member(),
                    room: m.room,
                });
            }
        }
        Body::Gone { node: gone, members } => on_gone(inner, cursors, header.node, NodeId(gone), members),
        Body::Reply { .. } | Body::Hello => {}
    }
}

/// A node left (`by` is the node itself) or was removed by `by`: its members leave on this node
/// too.
fn on_gone(inner: &Inner, cursors: &mut Cursors, by: u64, gone: NodeId, members: Vec<wire::Membership>) {
    if gone == inner.id {
        // Others took this node for gone while it was away: register again.
        inner
            .registration_lost
            .store(true, std::sync::atomic::Ordering::Release);
        inner.outbox.want_resync();
        return;
    }
    if by == gone.0 {
        // It left for good (a node that starts again is a new node): its sequence is over.
        // A node removed by another may come back and go on numbering; a copy of one of its
        // entries written again after the removal must still be skipped.
        cursors.last.remove(&gone.0);
    }
    debug!(node = %inner.id, %gone, members = members.len(), "a node left the cluster");
    if let Some(node) = inner.node() {
        for m in members {
            node.presence(&Presence::Left {
                member: m.member(),
                room: m.room,
            });
        }
    }
}

/// Whether an entry is one this node has not applied: its sequence number follows the last
/// seen of its node. Duplicates are counted and skipped, gaps counted and reported.
fn is_new(inner: &Inner, cursors: &mut Cursors, id: &str, header: &Header) -> bool {
    let last = cursors.last.get(&header.node).copied();
    match last {
        Some(last) if header.seq <= last => {
            inner.telemetry.duplicates.add(1);
            return false;
        }
        Some(last) if header.seq > last + 1 => {
            let count = header.seq - last - 1;
            inner.telemetry.lost.add(count);
            let node = NodeId(header.node);
            warn!(node = %inner.id, from = %node, count, "entries of another node never arrived");
            inner.telemetry.emit(ClusterEvent::Lost { node, count });
        }
        None if cursors
            .floor
            .is_some_and(|floor| parse_id(id).is_none_or(|id| id <= floor)) =>
        {
            // Read again after a Redis restart, from a node that was gone before this one came.
            inner.telemetry.duplicates.add(1);
            return false;
        }
        _ => {}
    }
    cursors.last.insert(header.node, header.seq);
    true
}

/// Answers a request of `asker` (into its inbox, through the outbox).
fn answer(inner: &Inner, asker: u64, req: u64, value: u64) {
    inner.hold(
        Stream::Inbox(NodeId(asker)),
        EntryKind::Request,
        Body::Reply { req, value },
        None,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_as_redis_orders_them() {
        assert!(parse_id("2-0") > parse_id("1-99"));
        assert!(parse_id("10-1") > parse_id("9-5"));
        assert_eq!(parse_id("x-1"), None);
    }
}
