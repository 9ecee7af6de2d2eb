//! Cluster-wide questions: rooms and members (from the hashes in Redis), connection counts and
//! messages for a peer elsewhere (requests every other live node answers).
//!
//! This module owns the requests in flight and how answers are gathered within
//! [`RedisConfig::query_timeout`](crate::RedisConfig::query_timeout); it must not read the
//! stream (the reader hands answers over).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use tokio::sync::mpsc;
use truflux::{Member, Message, PeerId};

use crate::error::Error;
use crate::event::{EntryKind, NodeId};
use crate::keys;
use crate::outbox::Stream;
use crate::wire::{self, Body};
use crate::Inner;

/// Answers: (node, value).
type Answers = mpsc::Receiver<(u64, u64)>;

/// Requests waiting for answers.
#[derive(Default)]
pub(crate) struct Requests {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, mpsc::Sender<(u64, u64)>>>,
}

impl Requests {
    /// A new request expecting up to `nodes` answers.
    fn open(&self, nodes: usize) -> (u64, Answers) {
        let req = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        // Room for a node that started after the question was asked, too.
        let (tx, rx) = mpsc::channel(nodes + 8);
        self.lock().insert(req, tx);
        (req, rx)
    }

    fn close(&self, req: u64) {
        self.lock().remove(&req);
    }

    /// An answer arrived; one for a request no longer waiting is ignored.
    pub(crate) fn answer(&self, req: u64, node: u64, value: u64) {
        if let Some(tx) = self.lock().get(&req) {
            let _ = tx.try_send((node, value));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<(u64, u64)>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs `work` on the control connection within the query timeout; a failed connection is
/// dropped so that the next query opens a new one.
async fn bounded<T, F, Fut>(inner: &Inner, work: F) -> Result<T, Error>
where
    F: FnOnce(MultiplexedConnection) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    if inner.stopped() {
        return Err(Error::NotRunning);
    }
    let timeout = inner.config.query_timeout;
    let run = async {
        let (generation, connection, _) = inner.control.get().await?;
        let result = work(connection).await;
        if matches!(result, Err(Error::Redis(_))) {
            inner.control.broken(generation);
        }
        result
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

/// Every room with members on any node, sorted.
pub(crate) async fn rooms(inner: &Inner, local: Vec<String>) -> Result<Vec<String>, Error> {
    let key = inner.keys.rooms.clone();
    let remote: Vec<Vec<u8>> = bounded(inner, |mut c| async move {
        Ok(redis::cmd("SMEMBERS").arg(key).query_async(&mut c).await?)
    })
    .await?;
    let mut all: BTreeSet<String> = local.into_iter().collect();
    all.extend(remote.into_iter().filter_map(|room| String::from_utf8(room).ok()));
    Ok(all.into_iter().collect())
}

/// The members of `room` on every node, by id: this node's from `local`, the others' from
/// Redis.
pub(crate) async fn members(inner: &Inner, room: &str, local: Vec<Member>) -> Result<Vec<Member>, Error> {
    let key = inner.keys.room(room);
    let flat: Value = bounded(inner, |mut c| async move {
        Ok(redis::cmd("HGETALL").arg(key).query_async(&mut c).await?)
    })
    .await?;
    let mut all: BTreeMap<PeerId, Member> = local.into_iter().map(|m| (m.id, m)).collect();
    for (field, value) in pairs(flat)? {
        let peer = std::str::from_utf8(&field)
            .ok()
            .and_then(|p| p.parse::<u64>().ok());
        let (Some(peer), Some((node, label))) = (peer, wire::parse_member_value(&value)) else {
            continue;
        };
        if node != inner.id {
            all.entry(PeerId(peer))
                .or_insert_with(|| Member::new(PeerId(peer), label));
        }
    }
    Ok(all.into_values().collect())
}

/// A field of a hash and its value.
type Pair = (Vec<u8>, Vec<u8>);

/// A flat `field value field value…` answer as pairs.
fn pairs(value: Value) -> Result<Vec<Pair>, Error> {
    let items = match value {
        Value::Array(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        Value::Nil => Vec::new(),
        _ => return Err(Error::Unexpected("a hash that is not an array")),
    };
    let mut items = items.into_iter().map(wire::bulk);
    let mut out = Vec::new();
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        if let (Some(field), Some(value)) = (field, value) {
            out.push((field, value));
        }
    }
    Ok(out)
}

/// The other nodes whose liveness key exists, and those whose key expired.
pub(crate) async fn nodes(
    inner: &Inner,
    connection: &mut MultiplexedConnection,
) -> Result<(Vec<NodeId>, Vec<NodeId>), RedisError> {
    let (alive, expired): (Vec<String>, Vec<String>) = redis::cmd("EVAL")
        .arg(keys::NODES)
        .arg(0)
        .arg(&inner.keys.prefix)
        .query_async(connection)
        .await?;
    let others = |ids: Vec<String>| {
        ids.iter()
            .filter_map(|id| NodeId::parse(id))
            .filter(|id| *id != inner.id)
            .collect::<Vec<_>>()
    };
    Ok((others(alive), others(expired)))
}

async fn live_others(inner: &Inner) -> Result<Vec<NodeId>, Error> {
    bounded(inner, |mut c| async move { Ok(nodes(inner, &mut c).await?.0) }).await
}

/// Asks every other live node; `done` says from the answers so far whether the question is
/// settled. The answers gathered, or a timeout.
async fn ask(
    inner: &Inner,
    body: impl FnOnce(u64) -> Body,
    payload: Option<bytes::Bytes>,
    others: &[NodeId],
    mut done: impl FnMut(&BTreeMap<u64, u64>) -> bool,
) -> Result<BTreeMap<u64, u64>, Error> {
    let (req, mut answers) = inner.requests.open(others.len());
    let result = async {
        if !inner.hold(Stream::Bus, EntryKind::Request, body(req), payload) {
            return Err(Error::Full);
        }
        let timeout = inner.config.query_timeout;
        let mut got = BTreeMap::new();
        let gather = async {
            while let Some((node, value)) = answers.recv().await {
                got.insert(node, value);
                if done(&got) {
                    break;
                }
            }
        };
        tokio::time::timeout(timeout, gather)
            .await
            .map_err(|_| Error::Timeout(timeout))?;
        Ok(got)
    }
    .await;
    inner.requests.close(req);
    result
}

/// Peers connected to every node: this node's count and every other live node's answer.
pub(crate) async fn connections(inner: &Inner, local: usize) -> Result<usize, Error> {
    let others = live_others(inner).await?;
    if others.is_empty() {
        return Ok(local);
    }
    let expected: BTreeSet<u64> = others.iter().map(|n| n.0).collect();
    let got = ask(
        inner,
        |req| Body::Count { req },
        None,
        &others,
        |got| expected.iter().all(|n| got.contains_key(n)),
    )
    .await?;
    Ok(local + got.values().sum::<u64>() as usize)
}

/// Delivers `message` to `peer` on whichever other node has it: true once that node queued
/// it, false when every live node answered that it has no such peer.
pub(crate) async fn send_to(inner: &Inner, peer: PeerId, message: Message) -> Result<bool, Error> {
    let others = live_others(inner).await?;
    if others.is_empty() {
        return Ok(false);
    }
    let expected: BTreeSet<u64> = others.iter().map(|n| n.0).collect();
    let body = |req| Body::Direct {
        id: message.id,
        peer: peer.0,
        req,
    };
    let got = ask(inner, body, Some(message.payload.clone()), &others, |got| {
        got.values().any(|took| *took == 1) || expected.iter().all(|n| got.contains_key(n))
    })
    .await?;
    Ok(got.values().any(|took| *took == 1))
}
