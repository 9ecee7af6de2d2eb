//! The narrow handle the file module gets to a session, and the trait through which the
//! connection hands it file frames.
//!
//! File transfers need only this much of a connection: queue a frame, ask the engine for
//! transfer ids and credit, learn that the session ended. [`Link`] offers exactly that, and
//! [`FileSink`] is what the connection calls with every valid file frame; the file module
//! implements it. The connection never names a file type, and the file module never sees the
//! engine or the queue themselves.

use std::sync::Arc;

use super::engine::files::FileEvent;
use super::{Peer, Shared};
use crate::error::{CloseInfo, Error, FileError};
use crate::file::FileConfig;
use crate::frame::Frame;

/// What the connection tells the file module.
pub(crate) trait FileSink: Send + Sync + 'static {
    /// A valid file frame from the peer; `Err` when the file module refuses it (the reply goes
    /// to the peer, the error to the application).
    fn on_event(&self, link: &Link, event: FileEvent) -> Result<(), Refusal>;
    /// The session ended (or a client renewed it): every transfer ends with `error`.
    fn session_ended(&self, link: &Link, error: FileError);
    /// The sink itself, for the file module to find its own type again.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// A file frame the file module refused.
pub(crate) struct Refusal {
    pub(crate) reply: Option<Frame>,
    pub(crate) error: FileError,
}

/// A session as the file module sees it.
#[derive(Clone)]
pub(crate) struct Link {
    shared: Arc<Shared>,
}

impl Link {
    pub(crate) fn new(shared: Arc<Shared>) -> Link {
        Link { shared }
    }

    /// The file module's own sink.
    pub(crate) fn sink(&self) -> &dyn FileSink {
        self.shared.owner.files.as_ref()
    }

    /// The application's handle, for the callbacks that hand it out.
    pub(crate) fn peer(&self) -> Peer {
        Peer::from_shared(self.shared.clone())
    }

    /// The meters of the server this session belongs to.
    pub(crate) fn meters(&self) -> &crate::meters::Meters {
        &self.shared.owner.meters
    }

    pub(crate) fn files_config(&self) -> &FileConfig {
        &self.shared.config.files
    }

    /// Queues a frame behind what is queued, waiting for room.
    pub(crate) async fn enqueue(&self, frame: Frame) -> Result<(), Error> {
        self.peer().enqueue(frame).await
    }

    /// Queues a frame if there is room now.
    pub(crate) fn try_enqueue(&self, frame: Frame) -> Result<(), Error> {
        self.peer().try_enqueue(frame)
    }

    /// Waits for the end of the session.
    pub(crate) async fn closed(&self) -> CloseInfo {
        self.peer().closed().await
    }

    /// A new outgoing transfer id; `None` once the session is over. (While a resumable session
    /// waits for its next connection the offer is queued like a message.)
    pub(crate) fn new_outgoing(&self) -> Option<u32> {
        if self.peer().is_closed() {
            return None;
        }
        Some(self.shared.engine().new_outgoing_file())
    }

    pub(crate) fn end_outgoing(&self, id: u32) {
        self.shared.engine().end_outgoing_file(id);
    }

    /// Accepts an offer with its first credit; false if the offer is gone.
    pub(crate) fn accept(&self, id: u32, window: u32) -> bool {
        self.shared.engine().accept_file(id, window)
    }

    /// Records more credit before it is granted on the wire.
    pub(crate) fn grant(&self, id: u32, n: u32) {
        self.shared.engine().grant_file(id, n);
    }

    pub(crate) fn end_incoming(&self, id: u32) {
        self.shared.engine().end_incoming_file(id);
    }
}
