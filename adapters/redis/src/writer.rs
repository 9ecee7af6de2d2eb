//! The writer task: this node's memberships and entries into Redis, in order, again after
//! every failure.
//!
//! This module owns writing (pipelined `XADD`s, the membership scripts) and the connection
//! state the application sees (`Disconnected`, `Reconnected`); what is held and its bound are
//! [`crate::outbox`]'s. Nothing leaves the outbox before Redis has acknowledged it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use redis::aio::MultiplexedConnection;
use redis::RedisError;
use tracing::{debug, info, warn};

use crate::event::{ClusterEvent, EntryKind};
use crate::keys;
use crate::link::{Backoff, Link};
use crate::outbox::{Change, Outgoing, Stream};
use crate::wire::{self, Body, Membership};
use crate::Inner;

/// Length inboxes are trimmed to: replies are read as they come.
pub(crate) const INBOX_MAX_LEN: usize = 1000;

pub(crate) async fn run(inner: Arc<Inner>) {
    let timeout = inner.config.command_timeout;
    let link = Link::new(inner.client.clone(), timeout, timeout);
    let mut backoff = Backoff::new(inner.config.reconnect_min, inner.config.reconnect_max, inner.id.0);
    let mut down_since: Option<Instant> = None;
    loop {
        if inner.stopped() {
            return;
        }
        if !inner.outbox.has_work() {
            tokio::select! {
                _ = inner.outbox.wake.notified() => {}
                _ = inner.until_stopped() => return,
            }
            continue;
        }
        let held = inner.outbox.held();
        inner.telemetry.held(held);
        let written = match link.get().await {
            Ok((generation, mut connection, fresh)) => {
                if fresh {
                    // A new connection may be to a Redis that lost everything: register again.
                    inner.outbox.want_resync();
                }
                let written = write_once(&inner, &mut connection).await;
                if written.is_err() {
                    link.broken(generation);
                }
                written
            }
            Err(error) => Err(error),
        };
        match written {
            Ok(()) => {
                backoff.reset();
                if let Some(since) = down_since.take() {
                    inner.telemetry.reconnects.add(1);
                    info!(node = %inner.id, held, "writing to Redis again");
                    inner.telemetry.emit(ClusterEvent::Reconnected {
                        held,
                        down_for: since.elapsed(),
                    });
                }
            }
            Err(error) => {
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                    warn!(node = %inner.id, %error, "cannot write to Redis; holding entries");
                    inner.telemetry.emit(ClusterEvent::Disconnected {
                        error: error.to_string(),
                    });
                } else {
                    debug!(node = %inner.id, %error, "Redis still unavailable");
                }
                if !inner.pause(backoff.pause()).await {
                    return;
                }
            }
        }
    }
}

/// One round: memberships first (so that queries see a join before the entries after it),
/// then up to a batch of entries.
async fn write_once(inner: &Inner, connection: &mut MultiplexedConnection) -> Result<(), RedisError> {
    let (resync, ops) = inner.outbox.take_changes();
    // A resync reads the server's rooms after the changes were taken: it includes them.
    let changed = if resync {
        register(inner, connection).await
    } else if !ops.is_empty() {
        apply(inner, connection, &ops).await
    } else {
        Ok(())
    };
    if let Err(error) = changed {
        inner.outbox.changes_failed();
        return Err(error);
    }
    let batch = inner.outbox.front(inner.config.batch);
    if batch.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for entry in &batch {
        xadd(&mut pipe, inner, entry);
    }
    pipe.query_async::<()>(connection).await?;
    inner.outbox.written(batch.len());
    inner.telemetry.held(inner.outbox.held());
    inner.telemetry.published.add(batch.len() as u64);
    Ok(())
}

fn xadd(pipe: &mut redis::Pipeline, inner: &Inner, entry: &Outgoing) {
    let command = pipe.cmd("XADD");
    match entry.stream {
        Stream::Bus => command
            .arg(&inner.keys.bus)
            .arg("MAXLEN")
            .arg("~")
            .arg(inner.config.stream_max_len),
        // An inbox that does not exist belongs to a node that is gone: do not create it.
        Stream::Inbox(node) => command
            .arg(inner.keys.inbox(node))
            .arg("NOMKSTREAM")
            .arg("MAXLEN")
            .arg("~")
            .arg(INBOX_MAX_LEN),
    };
    command.arg("*").arg(wire::HEADER).arg(&entry.header[..]);
    if let Some(payload) = &entry.payload {
        command.arg(wire::PAYLOAD).arg(&payload[..]);
    }
}

/// Writes this node's whole membership again, from the server's rooms. If other nodes had
/// taken this node for gone, its members are announced again.
async fn register(inner: &Inner, connection: &mut MultiplexedConnection) -> Result<(), RedisError> {
    let Some(node) = inner.node() else { return Ok(()) };
    let members = Membership::of(node);
    let mut script = redis::cmd("EVAL");
    script
        .arg(keys::resync())
        .arg(0)
        .arg(&inner.keys.prefix)
        .arg(inner.id.to_string());
    for m in &members {
        script
            .arg(m.peer)
            .arg(&m.room)
            .arg(wire::member_value(inner.id, m.label.as_deref()));
    }
    let was_gone: i64 = script.query_async(connection).await?;
    let lost = inner.registration_lost.swap(false, Ordering::AcqRel);
    if was_gone == 1 || lost {
        info!(node = %inner.id, members = members.len(), was_gone = was_gone == 1, "registered again");
        inner.telemetry.emit(ClusterEvent::Registered {
            was_taken_for_gone: was_gone == 1,
        });
    }
    if was_gone == 1 && !members.is_empty() {
        inner.hold(Stream::Bus, EntryKind::Presence, Body::Back { members }, None);
    }
    Ok(())
}

/// Writes joins and leaves, a batch per script call.
async fn apply(
    inner: &Inner,
    connection: &mut MultiplexedConnection,
    ops: &[Change],
) -> Result<(), RedisError> {
    for chunk in ops.chunks(inner.config.batch) {
        let mut script = redis::cmd("EVAL");
        script
            .arg(keys::APPLY)
            .arg(0)
            .arg(&inner.keys.prefix)
            .arg(inner.id.to_string());
        for ((peer, room), op) in chunk {
            match op {
                Some(label) => script
                    .arg("j")
                    .arg(*peer)
                    .arg(room)
                    .arg(wire::member_value(inner.id, label.as_deref())),
                None => script.arg("l").arg(*peer).arg(room).arg(""),
            };
        }
        script.query_async::<()>(connection).await?;
    }
    Ok(())
}
