//! Requests this side made and is waiting to have answered.
//!
//! This module owns the table of pending requests: ids, the waiting callers, removal on
//! answer, timeout or the end of the session. It must not touch frames beyond building the
//! request and reading answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::frame::{Frame, Kind};
use crate::{CloseInfo, Error};

type Answer = Result<Bytes, Error>;

/// The pending requests of one session.
#[derive(Default)]
pub(crate) struct Pending {
    next: AtomicU32,
    waiting: Mutex<HashMap<u32, oneshot::Sender<Answer>>>,
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, oneshot::Sender<Answer>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a request: its id and where the answer will arrive.
    pub(crate) fn register(&self) -> (u32, oneshot::Receiver<Answer>) {
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.lock();
        loop {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            if let std::collections::hash_map::Entry::Vacant(entry) = waiting.entry(id) {
                entry.insert(tx);
                return (id, rx);
            }
        }
    }

    /// Forgets a request (timed out, or its caller gave up).
    pub(crate) fn forget(&self, id: u32) {
        self.lock().remove(&id);
    }

    /// Delivers an answer; false if no request with this id is pending.
    pub(crate) fn answer(&self, id: u32, answer: Answer) -> bool {
        match self.lock().remove(&id) {
            Some(tx) => {
                let _ = tx.send(answer);
                true
            }
            None => false,
        }
    }

    /// The session ended: every pending request fails with how.
    pub(crate) fn fail_all(&self, info: &CloseInfo) {
        for (_, tx) in self.lock().drain() {
            let _ = tx.send(Err(Error::Closed(info.clone())));
        }
    }
}

/// A request frame: the message id in the header, the request id before the body.
pub(crate) fn frame(message_id: u32, request: u32, body: &[u8]) -> Frame {
    let mut payload = BytesMut::with_capacity(4 + body.len());
    payload.put_u32(request);
    payload.put_slice(body);
    Frame {
        kind: Kind::Request,
        id: message_id,
        tag: None,
        payload: payload.freeze(),
    }
}

/// Removes the request from the table when the caller stops waiting, however that happens.
pub(crate) struct Forget<'a> {
    pub(crate) pending: &'a Pending,
    pub(crate) id: u32,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.pending.forget(self.id);
    }
}
