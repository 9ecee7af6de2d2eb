//! Requests this side made that wait for their answer: ids, deadlines, waiters.
//!
//! This module owns the table of pending requests of a session (it outlives connections): a
//! request id, when it times out, and who waits for it. An answer, a timeout or the end of the
//! session removes the request and hands its waiter the outcome exactly once. It must not
//! build or read frames and never looks at a clock: times are passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{CloseInfo, Error};

/// How a request ended.
pub(crate) type Answer = Result<Bytes, Error>;

/// Who waits for an answer: called exactly once.
pub(crate) type Waiter = Box<dyn FnOnce(Answer) + Send>;

struct Pending {
    deadline: Instant,
    timeout: Duration,
    waiter: Waiter,
}

/// The pending requests of one session.
#[derive(Default)]
pub(crate) struct Requests {
    next: u32,
    pending: HashMap<u32, Pending>,
}

impl Requests {
    /// Registers a request that times out `timeout` after `now`; returns its id (unique among
    /// the pending ones).
    pub(crate) fn register(&mut self, now: Instant, timeout: Duration, waiter: Waiter) -> u32 {
        loop {
            let id = self.next;
            self.next = self.next.wrapping_add(1);
            if let std::collections::hash_map::Entry::Vacant(entry) = self.pending.entry(id) {
                let deadline = now
                    .checked_add(timeout)
                    .unwrap_or(now + Duration::from_secs(86_400 * 365));
                entry.insert(Pending {
                    deadline,
                    timeout,
                    waiter,
                });
                return id;
            }
        }
    }

    /// Delivers an answer; false if no request with this id is pending (answered, timed out,
    /// never made).
    pub(crate) fn answer(&mut self, id: u32, answer: Answer) -> bool {
        match self.pending.remove(&id) {
            Some(pending) => {
                (pending.waiter)(answer);
                true
            }
            None => false,
        }
    }

    /// Forgets a request whose caller stopped waiting.
    pub(crate) fn forget(&mut self, id: u32) {
        self.pending.remove(&id);
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Fails every request whose deadline has passed with `RequestTimeout`.
    pub(crate) fn expire(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(pending) = self.pending.remove(&id) {
                (pending.waiter)(Err(Error::RequestTimeout(pending.timeout)));
            }
        }
    }

    /// The session ended: every pending request fails with how.
    pub(crate) fn fail_all(&mut self, info: &CloseInfo) {
        for (_, pending) in self.pending.drain() {
            (pending.waiter)(Err(Error::Closed(info.clone())));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recorder() -> (Arc<Mutex<Vec<String>>>, impl Fn() -> Waiter) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let make = {
            let log = log.clone();
            move || -> Waiter {
                let log = log.clone();
                Box::new(move |answer: Answer| {
                    let text = match answer {
                        Ok(bytes) => format!("ok {}", bytes.len()),
                        Err(error) => format!("err {}", error.code().name()),
                    };
                    log.lock().unwrap().push(text);
                })
            }
        };
        (log, make)
    }

    #[test]
    fn a_request_times_out_at_its_deadline_and_a_late_answer_finds_nothing() {
        let (log, waiter) = recorder();
        let mut requests = Requests::default();
        let t0 = Instant::now();
        let id = requests.register(t0, Duration::from_secs(2), waiter());
        assert_eq!(requests.next_deadline(), Some(t0 + Duration::from_secs(2)));
        requests.expire(t0 + Duration::from_millis(1999));
        assert_eq!(requests.len(), 1);
        requests.expire(t0 + Duration::from_secs(2));
        assert!(!requests.answer(id, Ok(Bytes::new())), "timed out first");
        assert_eq!(*log.lock().unwrap(), ["err REQUEST_TIMEOUT"]);
    }

    #[test]
    fn ids_are_unique_among_pending_requests_and_each_waiter_runs_once() {
        let (log, waiter) = recorder();
        let mut requests = Requests::default();
        let t0 = Instant::now();
        let a = requests.register(t0, Duration::from_secs(1), waiter());
        let b = requests.register(t0, Duration::from_secs(1), waiter());
        assert_ne!(a, b);
        assert!(requests.answer(a, Ok(Bytes::from_static(b"xy"))));
        assert!(!requests.answer(a, Ok(Bytes::new())));
        requests.fail_all(&CloseInfo::new(
            crate::error::Code::GOING_AWAY,
            "bye",
            crate::error::Initiator::Remote,
        ));
        assert_eq!(*log.lock().unwrap(), ["ok 2", "err GOING_AWAY"]);
        let _ = b;
    }
}
