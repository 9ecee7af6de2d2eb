//! What this node holds for Redis: entries in the order they were made (bounded in count and
//! octets), and membership changes not yet written (coalesced per peer and room).
//!
//! This module owns the bound, the order, the sequence numbers and what happens at the bound;
//! it must not talk to Redis. The writer takes entries from the front, writes them, and only
//! then removes them: an entry whose write failed is written again, and readers skip the
//! copy by its sequence number.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{watch, Notify};

use crate::event::{EntryKind, NodeId};
use crate::wire::{Body, Header};

/// Which stream an entry goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    /// The shared stream every node reads.
    Bus,
    /// One node's inbox (replies).
    Inbox(NodeId),
}

/// An entry ready to be written: its header is encoded once, its payload shared.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) stream: Stream,
    pub(crate) header: Bytes,
    pub(crate) payload: Option<Bytes>,
}

/// A membership change not yet written: the label it joined with, or `None` for a leave.
pub(crate) type Op = Option<Option<String>>;

/// A change and whose it is: (peer, room).
pub(crate) type Change = ((u64, String), Op);

#[derive(Default)]
struct Queue {
    entries: VecDeque<Outgoing>,
    bytes: usize,
    /// The last change of each (peer, room) since the last write.
    ops: HashMap<(u64, String), Op>,
    /// Write the node's whole membership again before anything else.
    resync: bool,
    /// The sequence number of the last entry for the shared stream.
    seq: u64,
    /// Entries accepted, and entries written (for `flushed`).
    pushed: u64,
}

/// The entries and changes held for Redis.
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    node: NodeId,
    max: usize,
    max_bytes: usize,
    /// Woken when there is something to write.
    pub(crate) wake: Notify,
    /// Entries written so far.
    written: watch::Sender<u64>,
}

impl Outbox {
    pub(crate) fn new(node: NodeId, max: usize, max_bytes: usize) -> Outbox {
        Outbox {
            queue: Mutex::new(Queue {
                resync: true,
                ..Queue::default()
            }),
            node,
            max,
            max_bytes,
            wake: Notify::new(),
            written: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds an entry for `stream`, numbered if it goes to the shared stream; `Err(kind)` when
    /// the bound is reached (nothing is held then).
    pub(crate) fn push(
        &self,
        stream: Stream,
        kind: EntryKind,
        body: Body,
        payload: Option<Bytes>,
    ) -> Result<(), EntryKind> {
        let size = payload.as_ref().map_or(0, Bytes::len);
        let mut queue = self.lock();
        // One entry larger than the byte bound still goes through an empty outbox; entries
        // without a payload count against `max` only.
        let over_bytes = size > 0 && queue.bytes + size > self.max_bytes && !queue.entries.is_empty();
        if queue.entries.len() >= self.max || over_bytes {
            return Err(kind);
        }
        let seq = match stream {
            Stream::Bus => {
                queue.seq += 1;
                queue.seq
            }
            Stream::Inbox(_) => 0,
        };
        let header = Header {
            node: self.node.0,
            seq,
            body,
        };
        queue.entries.push_back(Outgoing {
            stream,
            header: Bytes::from(header.encode()),
            payload,
        });
        queue.bytes += size;
        queue.pushed += 1;
        drop(queue);
        self.wake.notify_one();
        Ok(())
    }

    /// Records a membership change to write; past the bound, the changes are forgotten and the
    /// whole membership is written again instead.
    pub(crate) fn change(&self, peer: u64, room: String, op: Op) {
        let mut queue = self.lock();
        queue.ops.insert((peer, room), op);
        if queue.ops.len() > self.max {
            queue.ops.clear();
            queue.resync = true;
        }
        drop(queue);
        self.wake.notify_one();
    }

    /// Asks for the whole membership to be written again (after a reconnect).
    pub(crate) fn want_resync(&self) {
        self.lock().resync = true;
        self.wake.notify_one();
    }

    /// The membership work to do: whether to write everything again, and the changes. A
    /// resync clears the changes first: the server's rooms, read after this, include them.
    pub(crate) fn take_changes(&self) -> (bool, Vec<Change>) {
        let mut queue = self.lock();
        let resync = std::mem::take(&mut queue.resync);
        let ops = queue.ops.drain().collect();
        (resync, ops)
    }

    /// Puts a resync back after a failed write of changes.
    pub(crate) fn changes_failed(&self) {
        self.want_resync();
    }

    /// Copies of the first `n` entries, to write.
    pub(crate) fn front(&self, n: usize) -> Vec<Outgoing> {
        self.lock().entries.iter().take(n).cloned().collect()
    }

    /// The first `n` entries were written: they go.
    pub(crate) fn written(&self, n: usize) {
        let mut queue = self.lock();
        for _ in 0..n {
            if let Some(entry) = queue.entries.pop_front() {
                queue.bytes -= entry.payload.as_ref().map_or(0, Bytes::len);
            }
        }
        drop(queue);
        self.written.send_modify(|count| *count += n as u64);
    }

    /// Drops everything held (the adapter left); how many entries went.
    pub(crate) fn clear(&self) -> usize {
        let mut queue = self.lock();
        let n = queue.entries.len();
        queue.entries.clear();
        queue.bytes = 0;
        queue.ops.clear();
        drop(queue);
        self.written.send_modify(|count| *count += n as u64);
        n
    }

    /// Entries held now.
    pub(crate) fn held(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether there is anything to write.
    pub(crate) fn has_work(&self) -> bool {
        let queue = self.lock();
        !queue.entries.is_empty() || !queue.ops.is_empty() || queue.resync
    }

    /// Waits until every entry accepted before the call is written (or dropped by `clear`).
    pub(crate) async fn flushed(&self) {
        let target = self.lock().pushed;
        let mut written = self.written.subscribe();
        let _ = written.wait_for(|count| *count >= target).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Body {
        Body::Hello
    }

    #[test]
    fn entries_are_numbered_in_order_bounded_and_go_only_once_written() {
        let outbox = Outbox::new(NodeId(1), 3, 10);
        for _ in 0..3 {
            outbox
                .push(Stream::Bus, EntryKind::Broadcast, body(), None)
                .unwrap();
        }
        assert_eq!(
            outbox.push(Stream::Bus, EntryKind::Broadcast, body(), None),
            Err(EntryKind::Broadcast)
        );
        let front = outbox.front(2);
        let seqs: Vec<u64> = front
            .iter()
            .map(|e| Header::decode(&e.header).unwrap().seq)
            .collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(outbox.held(), 3, "copies: nothing leaves before it is written");
        outbox.written(2);
        assert_eq!(outbox.held(), 1);
        outbox
            .push(Stream::Bus, EntryKind::Broadcast, body(), None)
            .unwrap();
        let last = outbox.front(2).pop().unwrap();
        assert_eq!(
            Header::decode(&last.header).unwrap().seq,
            4,
            "a refused entry takes no number"
        );
    }

    #[test]
    fn octets_are_bounded_but_one_large_entry_passes_alone() {
        let outbox = Outbox::new(NodeId(1), 100, 10);
        let big = Some(Bytes::from(vec![0; 64]));
        outbox
            .push(Stream::Bus, EntryKind::Broadcast, body(), big.clone())
            .unwrap();
        assert!(outbox
            .push(Stream::Bus, EntryKind::Broadcast, body(), big)
            .is_err());
        assert!(outbox
            .push(Stream::Bus, EntryKind::Broadcast, body(), None)
            .is_ok());
    }

    #[test]
    fn changes_coalesce_and_too_many_become_a_resync() {
        let outbox = Outbox::new(NodeId(1), 2, 10);
        let _ = outbox.take_changes();
        outbox.change(1, "a".into(), Some(None));
        outbox.change(1, "a".into(), None);
        let (resync, ops) = outbox.take_changes();
        assert!(!resync);
        assert_eq!(ops, [((1, "a".into()), None)]);
        for peer in 0..3 {
            outbox.change(peer, "a".into(), Some(None));
        }
        let (resync, ops) = outbox.take_changes();
        assert!(resync && ops.is_empty());
    }
}
