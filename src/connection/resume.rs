//! Resumable sessions: counting application frames, the resume buffer, acknowledgements.
//!
//! A resumable session numbers its application frames implicitly, per direction: the n-th
//! application frame written in the session is frame n, on whichever connection it travels.
//! The receiver counts what it has handed to the application; on a resume each side tells the
//! other its count and the other sends again exactly the frames after it. Nothing is delivered
//! twice and nothing is skipped, without a sequence number on the wire.
//!
//! This module owns the counts and the buffer of frames written but not yet acknowledged. It
//! must not touch sockets or decide when a session ends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use crate::frame::{Frame, Kind};

/// Length of a session's resume token.
pub(crate) const TOKEN_LEN: usize = 32;

/// The receiver acknowledges at least every this many application frames.
pub(crate) const ACK_EVERY: u64 = 32;

/// One resumable session's counts and buffer.
pub(crate) struct Resume {
    /// The secret the client presents to resume; random, never logged.
    pub(crate) token: [u8; TOKEN_LEN],
    /// Application frames received from the peer (and handed to the application).
    received: AtomicU64,
    /// The count we last acknowledged.
    acked: AtomicU64,
    /// An acknowledgement is waiting in the writer's lane.
    ack_queued: AtomicBool,
    outbox: Mutex<Outbox>,
    /// Signalled when an acknowledgement frees room in the buffer.
    pub(crate) room: tokio::sync::Notify,
    max_frames: usize,
    max_bytes: usize,
    /// Our direction was secure at some point of the session: a resumed connection makes it
    /// secure again before it sends anything.
    pub(crate) ever_secure: AtomicBool,
}

/// Frames written but not acknowledged, oldest first; `base` numbers the first.
#[derive(Default)]
struct Outbox {
    base: u64,
    frames: VecDeque<Frame>,
    bytes: usize,
}

/// A count from the peer that does not fit what we wrote.
#[derive(Debug)]
pub(crate) struct BadCount {
    pub(crate) claimed: u64,
    pub(crate) low: u64,
    pub(crate) high: u64,
}

impl std::fmt::Display for BadCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "peer counts {} frames received; this side can account for {}..={}",
            self.claimed, self.low, self.high
        )
    }
}

impl Resume {
    pub(crate) fn new(token: [u8; TOKEN_LEN], max_frames: usize, max_bytes: usize) -> Resume {
        Resume {
            token,
            received: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            ack_queued: AtomicBool::new(false),
            outbox: Mutex::new(Outbox::default()),
            room: tokio::sync::Notify::new(),
            max_frames: max_frames.max(2 * ACK_EVERY as usize),
            max_bytes: max_bytes.max(1),
            ever_secure: AtomicBool::new(false),
        }
    }

    /// A fresh random token.
    pub(crate) fn new_token() -> std::io::Result<[u8; TOKEN_LEN]> {
        let mut token = [0u8; TOKEN_LEN];
        getrandom::fill(&mut token).map_err(std::io::Error::other)?;
        Ok(token)
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Application frames received so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Acquire)
    }

    /// Counts one received application frame; true when an acknowledgement is due.
    pub(crate) fn count_received(&self) -> bool {
        let received = self.received.fetch_add(1, Ordering::AcqRel) + 1;
        received - self.acked.load(Ordering::Acquire) >= ACK_EVERY
    }

    /// Whether received frames are not yet acknowledged.
    pub(crate) fn unacked(&self) -> bool {
        self.received() > self.acked.load(Ordering::Acquire)
    }

    /// Claims the right to queue an acknowledgement; false if one is already queued.
    pub(crate) fn claim_ack(&self) -> bool {
        !self.ack_queued.swap(true, Ordering::AcqRel)
    }

    /// The acknowledgement frame for what was received so far.
    pub(crate) fn ack_frame(&self) -> Frame {
        self.ack_queued.store(false, Ordering::Release);
        let received = self.received();
        self.acked.fetch_max(received, Ordering::AcqRel);
        Frame::control(Kind::Ack, Bytes::copy_from_slice(&received.to_be_bytes()))
    }

    /// Whether the writer may take more frames from the queue.
    pub(crate) fn has_room(&self) -> bool {
        let outbox = self.outbox();
        outbox.frames.len() < self.max_frames && outbox.bytes < self.max_bytes
    }

    /// Records application frames as written, in wire order.
    pub(crate) fn record_written<'a>(&self, frames: impl Iterator<Item = &'a Frame>) {
        let mut outbox = self.outbox();
        for frame in frames.filter(|frame| frame.kind.is_application()) {
            outbox.bytes += frame.payload.len();
            outbox.frames.push_back(frame.clone());
        }
    }

    /// The peer has received `count` frames: forget those.
    pub(crate) fn acknowledge(&self, count: u64) -> Result<(), BadCount> {
        let mut outbox = self.outbox();
        let written = outbox.base + outbox.frames.len() as u64;
        if count > written {
            return Err(BadCount {
                claimed: count,
                low: outbox.base,
                high: written,
            });
        }
        while outbox.base < count {
            if let Some(frame) = outbox.frames.pop_front() {
                outbox.bytes -= frame.payload.len();
            }
            outbox.base += 1;
        }
        drop(outbox);
        self.room.notify_one();
        Ok(())
    }

    /// On a resume, the peer has received `count` frames: the frames to send again, in order.
    pub(crate) fn replay_after(&self, count: u64) -> Result<Vec<Frame>, BadCount> {
        let outbox = self.outbox();
        let written = outbox.base + outbox.frames.len() as u64;
        if count < outbox.base || count > written {
            return Err(BadCount {
                claimed: count,
                low: outbox.base,
                high: written,
            });
        }
        drop(outbox);
        self.acknowledge(count)?;
        Ok(self.outbox().frames.iter().cloned().collect())
    }
}

/// Parses an acknowledgement payload.
pub(crate) fn parse_count(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.try_into().ok()?))
}
