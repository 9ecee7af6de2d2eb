//! The write loop: queue → batch → one write, with the sending direction's security.
//!
//! It owns the sealer and whether our direction is secure. Because toggles travel in the queue
//! as `SEC_ON` / `SEC_OFF` records and are applied exactly where they stand, every frame is sent
//! in the mode that was in force when it was queued. Keys rotate here too: after the policy's
//! limit a `REKEY` record goes out under the old keys and the next record uses the new ones.

use std::time::{Duration, Instant};

use super::{fail, Beat, Conn, Control, Hooks, Peer};
use crate::frame::control::Close;
use crate::frame::{Frame, Kind};
use crate::security::handshake::{self, REKEY, SEC_OFF, SEC_ON};
use crate::security::record::Sealer;
use crate::security::{RekeyPolicy, SecurityError};
use crate::transport::FrameWrite;
use crate::{Code, Error, Initiator};

/// Never more records than this under one key, whatever the policy says.
const MAX_RECORDS_PER_KEY: u64 = 1 << 32;

/// The sending direction's security state.
struct Outgoing {
    sealer: Option<Sealer>,
    secure: bool,
    policy: RekeyPolicy,
    bytes: u64,
    since: Instant,
}

impl Outgoing {
    fn is_plain(&self) -> bool {
        !self.secure
    }

    /// Appends `frame` to `out` in the current mode, applying a toggle it carries.
    fn push(&mut self, frame: Frame, out: &mut Vec<Frame>) -> Result<(), SecurityError> {
        // Close frames end the connection and stay plain (see PROTOCOL.md §9).
        if frame.kind == Kind::Close {
            out.push(frame);
            return Ok(());
        }
        let toggle = if frame.kind == Kind::Security { frame.id } else { 0 };
        if toggle == SEC_ON {
            self.secure = true;
        }
        if !self.secure {
            out.push(frame);
            return Ok(());
        }
        let sealer = self
            .sealer
            .as_mut()
            .ok_or(SecurityError::Handshake("no keys to seal with"))?;
        self.bytes += frame.payload.len() as u64;
        out.push(sealer.seal(frame)?);
        if toggle == SEC_OFF {
            self.secure = false;
            return Ok(());
        }
        let records = self.policy.records.min(MAX_RECORDS_PER_KEY);
        let expired = self
            .policy
            .interval
            .is_some_and(|interval| self.since.elapsed() >= interval);
        if self.bytes >= self.policy.bytes || sealer.sequence() >= records || expired {
            out.push(sealer.seal(handshake::frame(REKEY, bytes::Bytes::new()))?);
            *sealer = sealer.next();
            self.bytes = 0;
            self.since = Instant::now();
        }
        Ok(())
    }
}

fn apply(
    peer: &Peer,
    control: Control,
    outgoing: &mut Outgoing,
    out: &mut Vec<Frame>,
) -> Result<(), SecurityError> {
    match control {
        Control::Keys(sealer) => {
            outgoing.sealer = Some(*sealer);
            Ok(())
        }
        Control::Frame(frame) => outgoing.push(frame, out),
        Control::Ping => outgoing.push(Frame::control(Kind::Ping, bytes::Bytes::new()), out),
        Control::Ack => match peer.resume_state() {
            Some(resume) => outgoing.push(resume.ack_frame(), out),
            None => Ok(()),
        },
    }
}

/// Writes until the connection ends; returns whether it ended with our close frame written
/// and the write direction shut, i.e. whether the peer will see a clean end from us.
///
/// `replay` (a resumed session's frames the peer missed) goes out before anything from the
/// queue. With `hold`, nothing but the lane goes out until the lane's `SEC_ON` has: a resumed
/// session whose direction was secure sends nothing plain.
pub(super) async fn write_loop<W: FrameWrite>(
    peer: &Peer,
    conn: &Conn,
    mut writer: W,
    mut replay: Vec<Frame>,
    mut hold: bool,
    hooks: &dyn Hooks,
) -> bool {
    let shared = &peer.shared;
    let resume = shared.resume.as_ref();
    let limit = shared.config.write_batch.max(1);
    let mut outgoing = Outgoing {
        sealer: None,
        secure: false,
        policy: shared.config.security.rekey.clone(),
        bytes: 0,
        since: Instant::now(),
    };
    // Both grow to the batch sizes actually seen: an idle peer keeps no 64-frame buffer.
    let mut batch: Vec<Frame> = Vec::new();
    let mut out: Vec<Frame> = Vec::new();
    // The heartbeat timer: a `PING` after `heartbeat_interval` of silence, the end after
    // `heartbeat_timeout` more. Off: a timer that never fires.
    let heartbeat = shared.config.heartbeat_interval;
    let beat = Heartbeat {
        interval: heartbeat.unwrap_or_default(),
        timeout: shared.config.heartbeat_timeout,
        far: tokio::time::Instant::now() + Duration::from_secs(86_400 * 365),
    };
    let tick = tokio::time::sleep_until(heartbeat.map_or(beat.far, |interval| conn.last_heard() + interval));
    let mut tick = std::pin::pin!(tick);
    loop {
        // Handshake frames, key installs, pings and acknowledgements go ahead of the queue.
        let control = conn.ctl.pop();
        let replaying = control.is_none() && !hold && !replay.is_empty();
        // A resumable session takes from the queue only while its resume buffer has room.
        let room = resume.is_none_or(|resume| resume.has_room());
        let received = if control.is_some() || replaying {
            0
        } else {
            tokio::select! {
            biased;
            _ = conn.stop.cancelled() => {
                // Forced: the stream is at a frame boundary here, so the peer can be told why.
                return write_close(peer, conn, &mut writer).await;
            }
            _ = conn.peer_closed.cancelled() => {
                return write_close(peer, conn, &mut writer).await;
            }
            _ = &mut tick, if heartbeat.is_some() => {
                on_beat(peer, conn, &beat, tick.as_mut(), hooks);
                continue;
            }
            _ = conn.ctl.ready() => continue,
            _ = async { resume.map(|resume| resume.room.notified()).expect("resumable").await }, if !room => continue,
            received = shared.queue.pop_many(&mut batch, limit), if room && !hold => {
                if received == 0 {
                    return false;
                }
                received
            }
            }
        };
        out.clear();
        let mut close = None;
        let prepared = match control {
            Some(control) => {
                let turns_on =
                    matches!(&control, Control::Frame(f) if (f.kind, f.id) == (Kind::Security, SEC_ON));
                let applied = apply(peer, control, &mut outgoing, &mut out);
                if turns_on {
                    hold = false;
                }
                applied
            }
            None if replaying => std::mem::take(&mut replay)
                .into_iter()
                .try_for_each(|frame| outgoing.push(frame, &mut out)),
            None => {
                // A close frame ends the batch and the connection; nothing is queued after it.
                close = batch.iter().position(|frame| frame.kind == Kind::Close);
                let end = close.map_or(received, |at| at + 1);
                if let Some(resume) = resume {
                    resume.record_written(batch[..end].iter());
                }
                if outgoing.is_plain() && !batch[..end].iter().any(|f| f.kind == Kind::Security) {
                    std::mem::swap(&mut out, &mut batch);
                    out.truncate(end);
                    Ok(())
                } else {
                    batch
                        .drain(..end)
                        .try_for_each(|frame| outgoing.push(frame, &mut out))
                }
            }
        };
        batch.clear();
        if let Err(error) = prepared {
            // The stream is still at a frame boundary: the next turn tells the peer why.
            fail(peer, conn, hooks, error.into());
            continue;
        }
        if out.is_empty() {
            continue;
        }
        let written = {
            let mut write = std::pin::pin!(writer.write_batch(&out));
            loop {
                tokio::select! {
                    biased;
                    // Cancelled mid-write: the stream may be inside a frame, so no close frame.
                    _ = conn.stop.cancelled() => return false,
                    written = &mut write => break written,
                    // A peer that stopped reading and answering is found even mid-write.
                    _ = &mut tick, if heartbeat.is_some() => on_beat(peer, conn, &beat, tick.as_mut(), hooks),
                }
            }
        };
        if let Err(error) = written {
            // A peer that closed and reset the connection fails our write before our reader
            // has read its close frame, which may be waiting in the socket. The reader goes on
            // (it ends at that frame, the end of the stream or the reset), bounded, so that the
            // peer's code, not this failure, is the end recorded.
            until_the_reader_ends(conn, shared.config.close_timeout).await;
            conn.record_end(
                Code::ABNORMAL,
                format!("write failed: {error}"),
                Initiator::Remote,
            );
            hooks.error(peer, &Error::Io(error));
            return false;
        }
        if close.is_some() {
            shared.queue.close();
            let shut = tokio::time::timeout(shared.config.close_timeout, writer.shutdown()).await;
            // Wait for the peer's answering close (or its disconnect), bounded.
            until_the_reader_ends(conn, shared.config.close_timeout).await;
            return matches!(shut, Ok(Ok(())));
        }
    }
}

/// Waits, at most `limit`, until the read loop has read the peer's close frame or the
/// connection is stopping (the reader ended, or a forced close).
async fn until_the_reader_ends(conn: &Conn, limit: Duration) {
    let ended = async {
        tokio::select! {
            _ = conn.peer_closed.cancelled() => {}
            _ = conn.stop.cancelled() => {}
        }
    };
    let _ = tokio::time::timeout(limit, ended).await;
}

/// The heartbeat's settings, as the writer's timer uses them.
struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    /// An instant the timer never reaches.
    far: tokio::time::Instant,
}

/// The heartbeat timer fired: wait longer, queue a `PING`, or end the connection.
fn on_beat(
    peer: &Peer,
    conn: &Conn,
    beat: &Heartbeat,
    tick: std::pin::Pin<&mut tokio::time::Sleep>,
    hooks: &dyn Hooks,
) {
    match conn.beat(beat.interval, beat.timeout) {
        Beat::Later(at) => tick.reset(at),
        Beat::Ping(at) => {
            tick.reset(at);
            conn.ctl.push(Control::Ping);
            if let Some(resume) = peer.resume_state() {
                if resume.unacked() && resume.claim_ack() {
                    conn.ctl.push(Control::Ack);
                }
            }
        }
        Beat::Dead(after) => {
            tick.reset(beat.far);
            fail(peer, conn, hooks, Error::HeartbeatTimeout(after));
        }
    }
}

/// Writes the close frame for the recorded end and shuts the write direction, bounded by
/// `close_timeout`; returns whether both happened.
async fn write_close<W: FrameWrite>(peer: &Peer, conn: &Conn, writer: &mut W) -> bool {
    let Some(info) = conn.end_info() else { return false };
    if info.code == Code::ABNORMAL {
        // Never sent on the wire: the connection is already gone.
        return false;
    }
    let frame = Close::new(info.code, info.reason).to_frame(Kind::Close, 0);
    let finish = async {
        writer.write_batch(std::slice::from_ref(&frame)).await?;
        writer.shutdown().await
    };
    matches!(
        tokio::time::timeout(peer.shared.config.close_timeout, finish).await,
        Ok(Ok(()))
    )
}
