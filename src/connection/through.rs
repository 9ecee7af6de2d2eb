//! Write-through: a send from outside the connection's task is written straight to the socket
//! when the writer is idle and nothing waits ahead of it, instead of waking the connection's
//! task to write it. So is a handler's reply in the connection's own task when the frame it
//! answers was the last the reader had in hand; during a burst, replies wait for the writer,
//! which writes them together (`Queue::reply_waits`).
//!
//! This module owns the rule for when a sender may write and the state the writer and the
//! senders share: the socket (plain TCP, or a WebSocket over it; see `transport::direct`),
//! whether the writer has frames in hand, and what a sender's write left unwritten (the tail,
//! which the writer writes before anything else). It must not decide what a frame becomes on
//! the wire: the engine does (counting for resume, sealing), exactly as for the writer.
//!
//! Order holds because everything that writes goes through one lock: a sender writes only
//! while the writer is not `busy`, no tail waits, the queue is empty, the engine has nothing
//! of its own to send and the connection is not ending; the writer becomes `busy` in the same
//! critical section in which it takes frames from the queue (or sees the engine's), and stays
//! so until they are written. Close frames and security toggles always travel through the
//! queue: the writer acts on them.

use std::cell::Cell;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::{driver, Peer};
use crate::frame::{Frame, Kind};
use crate::transport::direct::{DirectSocket, Written};

/// What the writer and the senders of a session share.
#[derive(Default)]
pub(crate) struct Through {
    state: Mutex<State>,
}

/// `repr(C)`: `busy` and `socket`, which every write-through reads, share the first cache line
/// with the lock.
#[derive(Default)]
#[repr(C)]
pub(crate) struct State {
    /// The writer has frames in hand: senders queue behind them.
    pub(crate) busy: bool,
    /// The current connection's socket, while senders may write to it.
    socket: Option<Arc<dyn DirectSocket>>,
    /// What a sender's write left for the writer.
    pub(crate) tail: Option<Tail>,
}

thread_local! {
    /// The frames of a sender's write, kept between writes so that a broadcast neither
    /// allocates nor touches a buffer of its own per peer.
    static SCRATCH: Cell<Vec<Frame>> = const { Cell::new(Vec::new()) };
}

/// Frames the engine already transmitted, of which the socket took only `written` octets.
pub(crate) struct Tail {
    pub(crate) frames: Vec<Frame>,
    pub(crate) written: usize,
}

impl Through {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection's writer starts: senders may write to `socket` (if it has one).
    pub(crate) fn install(&self, socket: Option<Arc<dyn DirectSocket>>) -> Installed<'_> {
        *self.lock() = State {
            socket,
            ..State::default()
        };
        Installed(self)
    }

    /// The writer stops (or shuts the write direction): senders queue from now on; returns what
    /// a sender left unwritten.
    pub(crate) fn withdraw(&self) -> Option<Tail> {
        let mut state = self.lock();
        state.socket = None;
        state.busy = false;
        state.tail.take()
    }
}

/// Withdraws the senders' share of the socket when the writer ends, however it ends.
pub(crate) struct Installed<'a>(&'a Through);

impl Installed<'_> {
    /// The writer has written what it had in hand.
    pub(crate) fn idle(&self) {
        self.0.lock().busy = false;
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        self.0.withdraw();
    }
}

/// Whether a frame may skip the queue: the writer must see close frames (it ends the write
/// direction after them) and toggles (they change the direction's mode where they stand).
fn may_skip_queue(frame: &Frame) -> bool {
    !matches!(frame.kind, Kind::Close | Kind::Security)
}

impl Peer {
    /// Writes `frame` straight to the socket if the writer is idle and nothing waits ahead of
    /// it; gives it back otherwise (it is then queued).
    pub(crate) fn write_through(&self, frame: Frame) -> Result<(), Frame> {
        let shared = self.shared();
        if !may_skip_queue(&frame) || shared.queue.reply_waits() {
            // A handler's reply while more of a burst is in hand: the writer looks right after
            // the read loop in the same pass and writes the replies together.
            return Err(frame);
        }
        let mut guard = shared.through.lock();
        // Split into fields, so that the socket stays borrowed while the others change.
        let state = &mut *guard;
        let Some(socket) = state.socket.as_deref() else {
            return Err(frame);
        };
        if state.busy || state.tail.is_some() || !shared.queue.is_empty() {
            return Err(frame);
        }
        let mut out = {
            let mut engine = shared.engine();
            if !engine.may_write_through() {
                return Err(frame);
            }
            let mut out = SCRATCH.take();
            if let Err(error) = engine.transmit_one(frame, &mut out, Instant::now()) {
                drop(engine);
                drop(guard);
                // As in the writer: the stream is at a frame boundary; the writer says why.
                driver::failed_to_transmit(self, error);
                return Ok(());
            }
            out
        };
        // Nothing written: the socket is full or busy (`WouldBlock`), or failed, which the
        // writer then meets on its own write and ends the connection for.
        let written = socket.try_write_frames(&out).unwrap_or(Written::NOTHING);
        shared.owner.meters.sent(&out);
        if !written.all {
            state.tail = Some(Tail {
                frames: out,
                written: written.octets,
            });
            drop(guard);
            shared.writer.wake();
        } else {
            out.clear();
            SCRATCH.set(out);
        }
        Ok(())
    }
}
