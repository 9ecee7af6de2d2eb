//! Liveness: this node's key with a TTL, refreshed every heartbeat; nodes whose key expired
//! removed (their members leave, on every node); this node leaving when its server closes.
//!
//! This module owns registration in the node set, finding and removing gone nodes, and the
//! end of the adapter's tasks; entries and memberships are written by [`crate::writer`].

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};
use truflux::{PeerId, Presence};

use crate::event::{ClusterEvent, EntryKind, NodeId};
use crate::keys::{self, Keys};
use crate::outbox::Stream;
use crate::query;
use crate::wire::{self, Body, Header, Membership};
use crate::Inner;

/// What the heartbeat remembers between beats.
#[derive(Default)]
struct Beat {
    /// This node's key was written at least once.
    registered: bool,
    /// The inbox is still to be created.
    hello: bool,
    /// Nodes whose key had expired at the last beat (when it succeeded): removed if it still
    /// has at the next one, so that nodes coming back with Redis get one beat to refresh.
    suspects: BTreeSet<NodeId>,
}

pub(crate) async fn run(inner: Arc<Inner>) {
    let mut interval = tokio::time::interval(inner.config.heartbeat_interval);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // `RedisAdapterBuilder::connect` registered the node and created its inbox.
    let mut state = Beat {
        registered: true,
        ..Beat::default()
    };
    let mut server_gone = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = inner.until_stopped() => return,
        }
        if !inner.node().is_some_and(|node| node.is_running()) {
            if inner.left.load(Ordering::Acquire) {
                return; // `leave` is running.
            }
            if server_gone {
                // Closed without `Server::close` (or dropped): send what is held, then end;
                // the TTL takes this node out of the cluster.
                let _ = tokio::time::timeout(inner.config.shutdown_timeout, inner.outbox.flushed()).await;
                inner.stop.send_replace(true);
                return;
            }
            server_gone = true;
        }
        let beat = async {
            let (generation, mut connection, _) = inner.control.get().await.map_err(|e| (None, e))?;
            beat(&inner, &mut connection, &mut state)
                .await
                .map_err(|e| (Some(generation), e))
        };
        if let Err((generation, error)) = beat.await {
            if let Some(generation) = generation {
                inner.control.broken(generation);
            }
            // A failed beat says nothing about the others: start suspecting afresh.
            state.suspects.clear();
            debug!(node = %inner.id, %error, "heartbeat failed");
        }
    }
}

/// Refreshes this node's key, then removes nodes whose key expired.
async fn beat(
    inner: &Inner,
    connection: &mut MultiplexedConnection,
    state: &mut Beat,
) -> Result<(), RedisError> {
    let previous = refresh(connection, &inner.keys, inner.id, inner.config.node_ttl).await?;
    if previous.is_none() {
        if state.registered {
            // Redis lost this node's key (restarted empty, or the key expired while this node
            // was cut off): write its memberships again.
            warn!(node = %inner.id, "registration gone from Redis; registering again");
            inner.registration_lost.store(true, Ordering::Release);
            inner.outbox.want_resync();
        }
        state.hello = true;
    }
    state.registered = true;
    if state.hello {
        create_inbox(connection, &inner.keys, inner.id).await?;
        state.hello = false;
    }
    let (_, expired) = query::nodes(inner, connection).await?;
    let expired: BTreeSet<NodeId> = expired.into_iter().collect();
    for gone in expired.intersection(&state.suspects) {
        remove(inner, connection, *gone).await?;
    }
    state.suspects = expired;
    Ok(())
}

/// Writes this node's liveness key (and puts it in the node set); what the key held before
/// (`None`: the node was not registered).
pub(crate) async fn refresh(
    connection: &mut MultiplexedConnection,
    keys: &Keys,
    node: NodeId,
    ttl: Duration,
) -> Result<Option<Vec<u8>>, RedisError> {
    let (previous, _): (Option<Vec<u8>>, i64) = redis::pipe()
        .cmd("SET")
        .arg(keys.alive(node))
        .arg(1)
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .arg("GET")
        .cmd("SADD")
        .arg(keys.nodes())
        .arg(node.to_string())
        .query_async(connection)
        .await?;
    Ok(previous)
}

/// Creates this node's inbox: answers are written only into inboxes that exist.
pub(crate) async fn create_inbox(
    connection: &mut MultiplexedConnection,
    keys: &Keys,
    node: NodeId,
) -> Result<(), RedisError> {
    let hello = Header {
        node: node.0,
        seq: 0,
        body: Body::Hello,
    };
    redis::cmd("XADD")
        .arg(keys.inbox(node))
        .arg("MAXLEN")
        .arg("~")
        .arg(crate::writer::INBOX_MAX_LEN)
        .arg("*")
        .arg(wire::HEADER)
        .arg(hello.encode())
        .query_async(connection)
        .await
}

/// Removes a node whose key expired, if no other node did first: its members leave here, and
/// the other nodes are told.
async fn remove(
    inner: &Inner,
    connection: &mut MultiplexedConnection,
    gone: NodeId,
) -> Result<(), RedisError> {
    let answer: Vec<Value> = redis::cmd("EVAL")
        .arg(keys::remove_node())
        .arg(0)
        .arg(&inner.keys.prefix)
        .arg(gone.to_string())
        .arg("expired")
        .query_async(connection)
        .await?;
    let mut answer = answer.into_iter();
    if !matches!(answer.next(), Some(Value::Int(1))) {
        return Ok(());
    }
    let members = memberships(answer);
    inner.telemetry.nodes_removed.add(1);
    info!(node = %inner.id, %gone, members = members.len(), "removed a node whose heartbeat stopped");
    inner.telemetry.emit(ClusterEvent::NodeDown {
        node: gone,
        members: members.len(),
    });
    if let Some(node) = inner.node() {
        for m in &members {
            node.presence(&Presence::Left {
                room: m.room.clone(),
                member: m.member(),
            });
        }
    }
    inner.hold(
        Stream::Bus,
        EntryKind::Presence,
        Body::Gone {
            node: gone.0,
            members,
        },
        None,
    );
    Ok(())
}

/// The `"peer room" value` pairs of a node's membership hash.
fn memberships(flat: impl Iterator<Item = Value>) -> Vec<Membership> {
    let mut flat = flat.map(wire::bulk);
    let mut members = Vec::new();
    while let (Some(field), Some(value)) = (flat.next(), flat.next()) {
        let (Some(field), Some(value)) = (field, value) else {
            continue;
        };
        let Ok(field) = String::from_utf8(field) else {
            continue;
        };
        let Some((peer, room)) = field.split_once(' ') else {
            continue;
        };
        let (Ok(peer), Some((_, label))) = (peer.parse::<u64>(), wire::parse_member_value(&value)) else {
            continue;
        };
        members.push(Membership {
            room: room.to_owned(),
            peer: PeerId(peer).0,
            label,
        });
    }
    members
}

/// The server is closing: send what is held, tell the other nodes this node's members leave,
/// remove this node from Redis, and end every task.
pub(crate) async fn leave(inner: &Inner) {
    let deadline = inner.config.shutdown_timeout;
    let left = async {
        inner.outbox.flushed().await;
        let members = inner.node().map(Membership::of).unwrap_or_default();
        let gone = Body::Gone {
            node: inner.id.0,
            members,
        };
        // Past `left`: the last entry, after everything this node sent.
        if inner
            .outbox
            .push(Stream::Bus, EntryKind::Presence, gone, None)
            .is_ok()
        {
            inner.outbox.flushed().await;
        }
        let (_, mut connection, _) = inner.control.get().await?;
        redis::cmd("EVAL")
            .arg(keys::remove_node())
            .arg(0)
            .arg(&inner.keys.prefix)
            .arg(inner.id.to_string())
            .arg("leave")
            .query_async::<()>(&mut connection)
            .await
    };
    match tokio::time::timeout(deadline, left).await {
        Ok(Ok(())) => debug!(node = %inner.id, "left the cluster"),
        Ok(Err(error)) => warn!(node = %inner.id, %error, "could not leave the cluster; its TTL will"),
        Err(_) => warn!(node = %inner.id, "leaving the cluster timed out; its TTL will"),
    }
    let dropped = inner.outbox.clear();
    if dropped > 0 {
        let total = inner.telemetry.dropped.add(dropped as u64);
        warn!(node = %inner.id, dropped, "entries still held when the server closed were dropped");
        inner.telemetry.emit(ClusterEvent::Dropped {
            kind: EntryKind::Broadcast,
            total,
        });
    }
    inner.stop.send_replace(true);
}
