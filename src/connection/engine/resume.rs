//! Resumable sessions: counting application and file frames, the resume buffer, the `ACK`
//! policy.
//!
//! A resumable session numbers its counted frames ([`Kind::is_counted`]: application and file
//! frames) implicitly, per direction: the n-th counted frame written in the session is frame n,
//! on whichever connection it travels.
//! The receiver counts what it has read; on a resume each side tells the other its count and
//! the other sends again exactly the frames after it. Nothing is delivered twice and nothing is
//! skipped, without a sequence number on the wire.
//!
//! This module owns the counts, the buffer of frames written but not acknowledged and when an
//! acknowledgement is due. It must not touch sockets or decide when a session ends.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::frame::{Frame, Kind};

/// The receiver acknowledges at least every this many counted frames.
pub(crate) const ACK_EVERY: u64 = 32;

/// One resumable session's counts and buffer.
pub(crate) struct Resume {
    /// Counted frames received from the peer.
    received: u64,
    /// The count we last acknowledged.
    acked: u64,
    /// An acknowledgement is due: the writer sends one.
    ack_due: bool,
    outbox: Outbox,
    max_frames: usize,
    max_bytes: usize,
}

/// Frames written but not acknowledged, oldest first; `base` numbers the first.
#[derive(Default)]
struct Outbox {
    base: u64,
    frames: VecDeque<Frame>,
    bytes: usize,
}

/// A count from the peer that does not fit what we wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub(crate) fn new(max_frames: usize, max_bytes: usize) -> Resume {
        Resume {
            received: 0,
            acked: 0,
            ack_due: false,
            outbox: Outbox::default(),
            max_frames: max_frames.max(2 * ACK_EVERY as usize),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Counted frames received so far.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Counts one received counted frame.
    pub(crate) fn count_received(&mut self) {
        self.received += 1;
        if self.received - self.acked >= ACK_EVERY {
            self.ack_due = true;
        }
    }

    /// The heartbeat found the connection silent: acknowledge what is unacknowledged.
    pub(crate) fn on_silence(&mut self) {
        if self.received > self.acked {
            self.ack_due = true;
        }
    }

    /// The acknowledgement to send now, if one is due.
    pub(crate) fn take_ack(&mut self) -> Option<Frame> {
        if !std::mem::take(&mut self.ack_due) {
            return None;
        }
        self.acked = self.received;
        let count = Bytes::copy_from_slice(&self.received.to_be_bytes());
        Some(Frame::control(Kind::Ack, count))
    }

    pub(crate) fn ack_due(&self) -> bool {
        self.ack_due
    }

    /// Whether the writer may take more frames from the queue.
    pub(crate) fn has_room(&self) -> bool {
        self.outbox.frames.len() < self.max_frames && self.outbox.bytes < self.max_bytes
    }

    /// Records one frame as written, in wire order (control frames are not kept).
    pub(crate) fn record_written(&mut self, frame: &Frame) {
        if frame.kind.is_counted() {
            self.outbox.bytes += frame.payload.len();
            self.outbox.frames.push_back(frame.clone());
        }
    }

    fn written(&self) -> u64 {
        self.outbox.base + self.outbox.frames.len() as u64
    }

    /// The peer has received `count` frames: forget those.
    pub(crate) fn acknowledge(&mut self, count: u64) -> Result<(), BadCount> {
        let written = self.written();
        if count > written {
            return Err(BadCount {
                claimed: count,
                low: self.outbox.base,
                high: written,
            });
        }
        while self.outbox.base < count {
            if let Some(frame) = self.outbox.frames.pop_front() {
                self.outbox.bytes -= frame.payload.len();
            }
            self.outbox.base += 1;
        }
        Ok(())
    }

    /// Whether `count` (the peer's, on a resume) fits what we wrote and still hold.
    pub(crate) fn check_count(&self, count: u64) -> Result<(), BadCount> {
        let written = self.written();
        if count < self.outbox.base || count > written {
            return Err(BadCount {
                claimed: count,
                low: self.outbox.base,
                high: written,
            });
        }
        Ok(())
    }

    /// On a resume, the peer has received `count` frames: the frames to send again, in order.
    /// Our own count travelled in the resume hellos, so it counts as acknowledged.
    pub(crate) fn replay_after(&mut self, count: u64) -> Result<Vec<Frame>, BadCount> {
        self.check_count(count)?;
        self.acknowledge(count)?;
        self.ack_due = false;
        self.acked = self.received;
        Ok(self.outbox.frames.iter().cloned().collect())
    }
}

/// Parses an acknowledgement payload.
pub(crate) fn parse_count(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: u8) -> Frame {
        Frame::message(1, Bytes::from(vec![n]))
    }

    #[test]
    fn acknowledgements_are_due_every_32_frames_and_on_silence() {
        let mut resume = Resume::new(64, 1 << 20);
        for _ in 0..31 {
            resume.count_received();
        }
        assert!(resume.take_ack().is_none());
        resume.count_received();
        let ack = resume.take_ack().expect("due after 32");
        assert_eq!(parse_count(&ack.payload), Some(32));
        resume.count_received();
        resume.on_silence();
        assert_eq!(parse_count(&resume.take_ack().unwrap().payload), Some(33));
        resume.on_silence();
        assert!(resume.take_ack().is_none(), "nothing unacknowledged");
    }

    #[test]
    fn the_buffer_keeps_what_is_unacknowledged_and_replays_after_a_count() {
        let mut resume = Resume::new(64, 1 << 20);
        for n in 1..=5 {
            resume.record_written(&message(n));
        }
        resume.record_written(&Frame::control(Kind::Ping, Bytes::new()));
        resume.acknowledge(2).unwrap();
        assert_eq!(resume.check_count(1).unwrap_err().low, 2);
        assert!(resume.acknowledge(6).is_err(), "more than written");
        let replay = resume.replay_after(3).unwrap();
        let numbers: Vec<u8> = replay.iter().map(|f| f.payload[0]).collect();
        assert_eq!(numbers, [4, 5]);
    }

    #[test]
    fn file_frames_are_counted_kept_and_replayed_like_messages() {
        let mut resume = Resume::new(64, 1 << 20);
        let chunk = crate::frame::file::frame(Kind::FileChunk, 3, Bytes::from_static(b"content"));
        resume.record_written(&message(1));
        resume.record_written(&chunk);
        resume.record_written(&Frame::control(Kind::Ack, Bytes::new()));
        let replay = resume.replay_after(1).unwrap();
        let kinds: Vec<Kind> = replay.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [Kind::FileChunk],
            "the chunk is frame 2; the ACK is not counted"
        );
    }

    #[test]
    fn a_full_buffer_has_no_room_until_acknowledged() {
        let mut resume = Resume::new(64, 10);
        for n in 0..10 {
            resume.record_written(&message(n));
        }
        assert!(!resume.has_room(), "10 octets is the byte limit");
        resume.acknowledge(5).unwrap();
        assert!(resume.has_room());
    }
}
