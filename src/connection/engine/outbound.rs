//! What goes out: control frames first, then what a resumed session must send again, then the
//! queue, each frame in the mode its direction is in where it stands.
//!
//! Toggles travel in the queue as `SEC_ON` / `SEC_OFF` markers and take effect exactly where
//! they stand, so every frame is sent in the mode that was in force when it was queued. Frames
//! a resumable session writes are kept (plain, before sealing) until acknowledged.

use std::time::Instant;

use bytes::Bytes;

use super::{Control, Engine, Sent};
use crate::error::Error;
use crate::frame::{Frame, Kind};

impl Engine {
    /// Whether the writer may take more from the queue: not after our close, not while the
    /// resume buffer is full, not before a direction that must be secure is.
    pub(crate) fn may_take(&self) -> bool {
        !self.conn.close_sent
            && !self.conn.hold
            && self.resume.as_ref().is_none_or(|resume| resume.has_room())
    }

    /// Whether something waits to go out ahead of the queue.
    pub(crate) fn has_output(&self) -> bool {
        !self.conn.control.is_empty()
            || self.conn.ping_due
            || self.resume.as_ref().is_some_and(|resume| resume.ack_due())
            || (!self.conn.hold && !self.conn.replay.is_empty())
    }

    /// Builds the next write into `out`: control frames, a due `PING` and `ACK`, the frames a
    /// resumed session sends again, then `queued` (taken from the queue) up to our close.
    pub(crate) fn transmit(
        &mut self,
        queued: &mut Vec<Frame>,
        out: &mut Vec<Frame>,
        now: Instant,
    ) -> Result<Sent, Error> {
        let mut sent = Sent::default();
        while let Some(control) = self.conn.control.pop_front() {
            match control {
                Control::Keys(sealer) => self.conn.tx.install(sealer, now),
                Control::Frame(frame) => self.push(frame, out, now, &mut sent)?,
            }
        }
        if std::mem::take(&mut self.conn.ping_due) {
            self.push(Frame::control(Kind::Ping, Bytes::new()), out, now, &mut sent)?;
        }
        if let Some(ack) = self.resume.as_mut().and_then(|resume| resume.take_ack()) {
            self.push(ack, out, now, &mut sent)?;
        }
        if !self.conn.hold && !self.conn.replay.is_empty() {
            for frame in std::mem::take(&mut self.conn.replay) {
                self.push(frame, out, now, &mut sent)?;
            }
        }
        if self.conn.hold || self.conn.close_sent {
            queued.clear();
            return Ok(sent);
        }
        for frame in queued.drain(..) {
            let close = frame.kind == Kind::Close;
            if let Some(resume) = self.resume.as_mut() {
                resume.record_written(&frame);
            }
            self.push(frame, out, now, &mut sent)?;
            if close {
                self.conn.close_sent = true;
                sent.close = true;
                break;
            }
        }
        queued.clear();
        Ok(sent)
    }

    /// Whether a sender may write a frame itself now (`through`): nothing waits ahead of it,
    /// the writer could take it, and the connection is not ending (once it is, a frame belongs
    /// in the queue, which a resumable session carries to its next connection).
    pub(crate) fn may_write_through(&self) -> bool {
        self.conn.end.is_none() && !self.has_output() && self.may_take()
    }

    /// Transmits one frame a sender writes itself, when [`Engine::may_write_through`]; never a
    /// close frame or a toggle, so no change of mode or of the connection's end comes of it.
    pub(crate) fn transmit_one(
        &mut self,
        frame: Frame,
        out: &mut Vec<Frame>,
        now: Instant,
    ) -> Result<(), Error> {
        debug_assert!(self.may_write_through());
        debug_assert!(!matches!(frame.kind, Kind::Close | Kind::Security));
        if let Some(resume) = self.resume.as_mut() {
            resume.record_written(&frame);
        }
        let mut sent = Sent::default();
        self.push(frame, out, now, &mut sent)
    }

    /// The last write of a connection that is stopping: what waits in the control lane (a
    /// `KEX_FAIL` that explains the close, say), then the close frame for the recorded end.
    pub(crate) fn closing_frames(&mut self, now: Instant) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut sent = Sent::default();
        while let Some(control) = self.conn.control.pop_front() {
            let pushed = match control {
                Control::Keys(sealer) => {
                    self.conn.tx.install(sealer, now);
                    Ok(())
                }
                Control::Frame(frame) => self.push(frame, &mut out, now, &mut sent),
            };
            if pushed.is_err() {
                break;
            }
        }
        out.extend(self.close_frame(now));
        out
    }

    fn push(
        &mut self,
        frame: Frame,
        out: &mut Vec<Frame>,
        now: Instant,
        sent: &mut Sent,
    ) -> Result<(), Error> {
        let was = self.conn.tx.is_secure();
        let pushed = self.conn.tx.push(frame, out, now)?;
        if pushed.toggle == Some(true) {
            self.ever_secure = true;
            self.conn.hold = false;
        }
        let is = self.conn.tx.is_secure();
        if was != is {
            sent.own.push(is);
        }
        Ok(())
    }
}
