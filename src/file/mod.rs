//! File streaming: offers, senders, receivers, credit flow control, integrity.
//!
//! This module owns file transfers on one connection: the table of transfers in both
//! directions, the sender task that reads a source within the receiver's credit, the receiver
//! task that writes a destination and returns credit, and the integrity check at the end. It
//! sends and receives only through the connection's queue and read loop (so chunks are sealed
//! like any record, and interleave fairly with messages); it must not touch sockets or the
//! security layer.
//!
//! A receiver grants a window of credit (default 256 KiB) when it accepts and returns credit as
//! it writes, so memory on both sides is bounded by the window, whatever the file's size. The
//! content goes to `<destination>.partial` and is renamed to the destination only after its size
//! and SHA-256 match the sender's; any failure removes the partial file.

mod receive;
mod send;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Notify};

pub use receive::FileReceive;
pub use send::FileSend;

use crate::frame::{Frame, Kind};
use crate::{Code, Error, Peer};

/// File transfer settings of a connection.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FileConfig {
    /// Largest chunk a sender sends, in octets. Default 64 KiB. Smaller chunks interleave more
    /// finely with messages; larger ones cost fewer frames.
    pub chunk: u32,
    /// Credit a receiver grants: the most content in flight per transfer. Default 256 KiB.
    /// Bounds memory per transfer on both sides.
    pub window: u32,
    /// Most incoming transfers at once (offered or running). Default 8. A further offer is
    /// refused with `TOO_MANY_TRANSFERS` (4034) and reported as an error.
    pub max_incoming: usize,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            chunk: 64 * 1024,
            window: 256 * 1024,
            max_incoming: 8,
        }
    }
}

crate::config::setters!(FileConfig {
    /// Sets [`FileConfig::chunk`].
    chunk: u32,
    /// Sets [`FileConfig::window`].
    window: u32,
    /// Sets [`FileConfig::max_incoming`].
    max_incoming: usize,
});

/// Where a transfer stands. Observed through [`Progress::status`] (both [`FileSend`] and
/// [`FileReceive`] dereference to a [`Progress`]);
/// intermediate progress values may be merged, a final state never is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileStatus {
    /// Offered, not yet accepted or declined.
    Offered,
    /// Moving: `bytes` of content so far.
    Transferring {
        /// Content octets sent (sender) or written (receiver).
        bytes: u64,
    },
    /// Paused by the receiver.
    Paused {
        /// Content octets so far.
        bytes: u64,
    },
    /// Complete and verified: the receiver stored exactly `size` octets with this SHA-256.
    Finished {
        /// Content octets.
        size: u64,
        /// SHA-256 of the content.
        sha256: [u8; 32],
    },
    /// Ended without completing: declined, cancelled by either side, integrity failure, I/O
    /// error, disconnect. No complete-looking file is left at the destination.
    Failed(FileError),
}

impl FileStatus {
    /// Whether the transfer has ended.
    pub fn is_final(&self) -> bool {
        matches!(self, FileStatus::Finished { .. } | FileStatus::Failed(_))
    }
}

/// Why a transfer did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("file transfer {code}: {reason}")]
pub struct FileError {
    /// The std code: `FILE_DECLINED`, `FILE_CANCELLED`, `FILE_INTEGRITY`, `FILE_FLOW_VIOLATION`,
    /// `FILE_IO`, `TOO_MANY_TRANSFERS`, or the connection's close code.
    pub code: Code,
    /// Why.
    pub reason: String,
}

impl FileError {
    pub(crate) fn new(code: Code, reason: impl Into<String>) -> FileError {
        FileError {
            code,
            reason: reason.into(),
        }
    }
}

/// A file the peer offers. Decide with [`FileOffer::accept`], [`FileOffer::accept_writer`] or
/// [`FileOffer::decline`]; an offer dropped undecided is declined.
pub struct FileOffer {
    peer: Peer,
    id: u32,
    name: String,
    size: Option<u64>,
    decided: bool,
}

impl std::fmt::Debug for FileOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileOffer")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("size", &self.size)
            .finish()
    }
}

impl FileOffer {
    /// The transfer id (unique among the peer's offers on this connection).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The name the sender gave, exactly as sent. It is metadata chosen by the peer: never use
    /// it as a path without checking it; see [`FileOffer::safe_name`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name reduced to a plain file name (no directories, no `..`, no leading dots or
    /// control characters), or `None` if nothing usable is left.
    pub fn safe_name(&self) -> Option<String> {
        let last = self.name.rsplit(['/', '\\']).next().unwrap_or("");
        let cleaned: String = last.chars().filter(|c| !c.is_control()).collect();
        let cleaned = cleaned.trim_start_matches('.').trim();
        (!cleaned.is_empty()).then(|| cleaned.to_owned())
    }

    /// The announced size; `None` for a stream of unknown length.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// Whether the sender streams content of unknown length.
    pub fn is_stream(&self) -> bool {
        self.size.is_none()
    }

    /// Accepts into `path`: content goes to `path` + `.partial` and is renamed to `path` only
    /// once verified. Fails if the partial file cannot be created (the offer is then declined).
    pub async fn accept(mut self, path: impl Into<PathBuf>) -> Result<FileReceive, Error> {
        self.decided = true;
        let path = path.into();
        match receive::Destination::create(path).await {
            Ok(destination) => self.start(destination).await,
            Err(error) => {
                self.refuse(Code::FILE_IO, &format!("cannot create the destination: {error}"));
                Err(Error::Io(error))
            }
        }
    }

    /// Accepts into `dir`, under [`FileOffer::safe_name`]. An offer without a usable name is
    /// declined.
    pub async fn accept_into(self, dir: impl Into<PathBuf>) -> Result<FileReceive, Error> {
        match self.safe_name() {
            Some(name) => {
                let path = dir.into().join(name);
                self.accept(path).await
            }
            None => {
                let mut offer = self;
                offer.decided = true;
                offer.refuse(Code::FILE_DECLINED, "no usable file name");
                Err(Error::Config("the offered name has no usable file name".into()))
            }
        }
    }

    /// Accepts into any writer. The writer sees content as it arrives; whether it is complete
    /// and intact is known only from the final status, so discard what it holds on failure.
    pub async fn accept_writer<W>(mut self, writer: W) -> Result<FileReceive, Error>
    where
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        self.decided = true;
        self.start(receive::Destination::Writer(Box::new(writer))).await
    }

    async fn start(&mut self, destination: receive::Destination) -> Result<FileReceive, Error> {
        receive::start(&self.peer, self.id, self.size, destination).await
    }

    /// Declines with a reason.
    pub fn decline(mut self, reason: &str) {
        self.decided = true;
        self.refuse(Code::FILE_DECLINED, reason);
    }

    fn refuse(&self, code: Code, reason: &str) {
        self.peer.shared_files().remove_incoming(self.id);
        let _ = self.peer.try_enqueue(wire::refuse(self.id, code, reason));
    }
}

impl Drop for FileOffer {
    fn drop(&mut self) {
        if !self.decided {
            self.refuse(Code::FILE_DECLINED, "the application did not take the offer");
        }
    }
}

/// What the read loop hands a receiver task.
pub(crate) enum Inbound {
    Chunk(Bytes),
    End { size: u64, sha256: [u8; 32] },
    Abort(FileError),
}

/// State shared between a sender task and the read loop.
pub(crate) struct Outgoing {
    state: Mutex<OutState>,
    notify: Notify,
}

#[derive(Default)]
struct OutState {
    cancel: bool,
    accepted: bool,
    credit: u64,
    paused: bool,
    done: Option<[u8; 32]>,
    ended: Option<FileError>,
}

/// An accepted incoming transfer, as the read loop sees it.
struct Accepted {
    tx: mpsc::Sender<Inbound>,
    /// Content octets the sender may still send: granted minus received.
    credit: Arc<std::sync::atomic::AtomicU64>,
}

/// One connection's transfers in both directions.
#[derive(Default)]
pub(crate) struct Table {
    inner: Mutex<TableInner>,
}

#[derive(Default)]
struct TableInner {
    next_id: u32,
    outgoing: HashMap<u32, Arc<Outgoing>>,
    /// `None` while offered, `Some` once accepted.
    incoming: HashMap<u32, Option<Accepted>>,
    /// Recently ended incoming ids: chunks still in flight for them are expected.
    recent: VecDeque<u32>,
    closed: bool,
}

/// How many ended incoming transfers are remembered to recognise late chunks.
const RECENT: usize = 64;

impl Table {
    fn lock(&self) -> MutexGuard<'_, TableInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn new_outgoing(&self) -> Option<(u32, Arc<Outgoing>)> {
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        let id = inner.next_id & crate::frame::MAX_ID;
        inner.next_id = inner.next_id.wrapping_add(1);
        let outgoing = Arc::new(Outgoing {
            state: Mutex::new(OutState::default()),
            notify: Notify::new(),
        });
        inner.outgoing.insert(id, outgoing.clone());
        Some((id, outgoing))
    }

    pub(crate) fn remove_outgoing(&self, id: u32) {
        self.lock().outgoing.remove(&id);
    }

    fn remove_incoming(&self, id: u32) {
        let mut inner = self.lock();
        if inner.incoming.remove(&id).is_some() {
            inner.recent.push_back(id);
            if inner.recent.len() > RECENT {
                inner.recent.pop_front();
            }
        }
    }

    /// Ends every transfer: the connection is over.
    pub(crate) fn close(&self, reason: &FileError) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.incoming.clear();
        for (_, outgoing) in inner.outgoing.drain() {
            outgoing.end(reason.clone());
        }
    }
}

impl Outgoing {
    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut OutState)) {
        f(&mut self.lock());
        self.notify.notify_one();
    }

    fn end(&self, error: FileError) {
        self.update(|state| {
            state.ended.get_or_insert(error);
        });
    }
}

/// A file-frame error the read loop reports; `fatal` is never set: files never end the
/// connection.
pub(crate) struct FrameOutcome {
    pub(crate) reply: Option<Frame>,
    pub(crate) error: Option<Error>,
    pub(crate) offer: Option<FileOffer>,
}

impl FrameOutcome {
    fn none() -> FrameOutcome {
        FrameOutcome {
            reply: None,
            error: None,
            offer: None,
        }
    }

    fn error(error: FileError, reply: Option<Frame>) -> FrameOutcome {
        FrameOutcome {
            reply,
            error: Some(Error::File(error)),
            offer: None,
        }
    }
}

/// Handles one file frame from the read loop. Never blocks: chunks go to the receiver task's
/// bounded channel, whose room the credit guarantees.
pub(crate) fn on_frame(peer: &Peer, frame: Frame) -> FrameOutcome {
    let table = peer.shared_files();
    let id = frame.id;
    match frame.kind {
        Kind::FileOffer => {
            let Ok((size, name)) = wire::parse_offer(&frame.payload) else {
                let error = FileError::new(Code::FILE_FLOW_VIOLATION, "malformed file offer");
                return FrameOutcome::error(
                    error,
                    Some(wire::refuse(id, Code::FILE_FLOW_VIOLATION, "malformed offer")),
                );
            };
            let mut inner = table.lock();
            if inner.incoming.contains_key(&id) {
                drop(inner);
                let error = FileError::new(Code::FILE_FLOW_VIOLATION, format!("transfer {id} offered twice"));
                return FrameOutcome::error(error, None);
            }
            if inner.incoming.len() >= peer.max_incoming_files() {
                drop(inner);
                let error = FileError::new(
                    Code::TOO_MANY_TRANSFERS,
                    format!("offer {id} beyond the limit of concurrent transfers"),
                );
                let reply = wire::refuse(id, Code::TOO_MANY_TRANSFERS, "too many concurrent transfers");
                return FrameOutcome::error(error, Some(reply));
            }
            inner.incoming.insert(id, None);
            drop(inner);
            let offer = FileOffer {
                peer: peer.clone(),
                id,
                name,
                size,
                decided: false,
            };
            FrameOutcome {
                reply: None,
                error: None,
                offer: Some(offer),
            }
        }
        Kind::FileChunk | Kind::FileEnd | Kind::FileAbort => {
            let inbound = match frame.kind {
                Kind::FileChunk => Inbound::Chunk(frame.payload),
                Kind::FileEnd => match wire::parse_end(&frame.payload) {
                    Ok((size, sha256)) => Inbound::End { size, sha256 },
                    Err(()) => {
                        Inbound::Abort(FileError::new(Code::FILE_FLOW_VIOLATION, "malformed file end"))
                    }
                },
                _ => Inbound::Abort(wire::parse_reason(&frame.payload, Code::FILE_CANCELLED)),
            };
            let inner = table.lock();
            match inner.incoming.get(&id) {
                Some(Some(accepted)) => {
                    let (tx, credit) = (accepted.tx.clone(), accepted.credit.clone());
                    drop(inner);
                    let len = match &inbound {
                        Inbound::Chunk(bytes) => bytes.len() as u64,
                        _ => 0,
                    };
                    let within_credit = credit
                        .fetch_update(
                            std::sync::atomic::Ordering::AcqRel,
                            std::sync::atomic::Ordering::Acquire,
                            |c| c.checked_sub(len),
                        )
                        .is_ok();
                    if within_credit {
                        match tx.try_send(inbound) {
                            Ok(()) => return FrameOutcome::none(),
                            // The transfer is ending: this frame was in flight.
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                let error = FileError::new(
                                    Code::UNKNOWN_TRANSFER,
                                    format!("late {:?} for ended transfer {id}", frame.kind),
                                );
                                return FrameOutcome {
                                    reply: None,
                                    error: Some(Error::File(error)),
                                    offer: None,
                                };
                            }
                            Err(mpsc::error::TrySendError::Full(_)) => {}
                        }
                    }
                    // Octets are bounded by the credit, chunks by the channel's room.
                    let error = FileError::new(
                        Code::FILE_FLOW_VIOLATION,
                        format!("transfer {id}: more than the credit"),
                    );
                    table.remove_incoming(id);
                    let reply = wire::refuse(id, Code::FILE_FLOW_VIOLATION, "more than the credit");
                    FrameOutcome::error(error, Some(reply))
                }
                Some(None) => {
                    drop(inner);
                    if let Inbound::Abort(_) = inbound {
                        // Withdrawn before the application decided: forget the offer.
                        table.remove_incoming(id);
                        return FrameOutcome::none();
                    }
                    let error = FileError::new(
                        Code::FILE_FLOW_VIOLATION,
                        format!("transfer {id}: content before acceptance"),
                    );
                    FrameOutcome::error(
                        error,
                        Some(wire::refuse(
                            id,
                            Code::FILE_FLOW_VIOLATION,
                            "content before acceptance",
                        )),
                    )
                }
                None if inner.recent.contains(&id) => {
                    drop(inner);
                    // In flight when the transfer ended: expected, reported, dropped.
                    let error = FileError::new(
                        Code::UNKNOWN_TRANSFER,
                        format!("late {:?} for ended transfer {id}", frame.kind),
                    );
                    FrameOutcome {
                        reply: None,
                        error: Some(Error::File(error)),
                        offer: None,
                    }
                }
                None => {
                    drop(inner);
                    let error = FileError::new(
                        Code::UNKNOWN_TRANSFER,
                        format!("{:?} for unknown transfer {id}", frame.kind),
                    );
                    let reply = crate::frame::control::Close::new(Code::UNKNOWN_TRANSFER, "unknown transfer")
                        .to_frame(Kind::Error, id);
                    FrameOutcome::error(error, Some(reply))
                }
            }
        }
        // Receiver → sender frames: about a transfer we send.
        _ => {
            let Some(outgoing) = table.lock().outgoing.get(&id).cloned() else {
                let error = FileError::new(
                    Code::UNKNOWN_TRANSFER,
                    format!("{:?} for unknown outgoing transfer {id}", frame.kind),
                );
                return FrameOutcome {
                    reply: None,
                    error: Some(Error::File(error)),
                    offer: None,
                };
            };
            match frame.kind {
                Kind::FileAccept | Kind::FileCredit => match wire::parse_u32(&frame.payload) {
                    Ok(credit) => outgoing.update(|state| {
                        state.accepted = true;
                        state.credit = state.credit.saturating_add(u64::from(credit));
                    }),
                    Err(()) => outgoing.end(FileError::new(Code::FILE_FLOW_VIOLATION, "malformed credit")),
                },
                Kind::FilePause => outgoing.update(|state| state.paused = true),
                Kind::FileResume => outgoing.update(|state| state.paused = false),
                Kind::FileDone => match <[u8; 32]>::try_from(&frame.payload[..]) {
                    Ok(sha256) => outgoing.update(|state| state.done = Some(sha256)),
                    Err(_) => outgoing.end(FileError::new(Code::FILE_FLOW_VIOLATION, "malformed done")),
                },
                _ => outgoing.end(wire::parse_reason(&frame.payload, Code::FILE_CANCELLED)),
            }
            FrameOutcome::none()
        }
    }
}

/// A status channel starting at `Offered`.
fn status_channel() -> (watch::Sender<FileStatus>, watch::Receiver<FileStatus>) {
    watch::channel(FileStatus::Offered)
}

/// How a transfer is going, from either side: what [`FileSend`] and [`FileReceive`]
/// dereference to.
#[derive(Debug)]
pub struct Progress {
    id: u32,
    status: watch::Receiver<FileStatus>,
    seen_final: bool,
}

impl Progress {
    fn new(id: u32, status: watch::Receiver<FileStatus>) -> Progress {
        Progress {
            id,
            status,
            seen_final: false,
        }
    }

    /// The transfer id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The current status.
    pub fn status(&self) -> FileStatus {
        self.status.borrow().clone()
    }

    /// The next status change (offered → transferring ↔ paused → finished or failed); `None`
    /// after the final one. Progress values in between may be merged, a final status never is.
    pub async fn next_status(&mut self) -> Option<FileStatus> {
        if self.seen_final {
            return None;
        }
        let status = match self.status.changed().await {
            Ok(()) => self.status.borrow_and_update().clone(),
            // The task ended; its last status is final.
            Err(_) => self.status.borrow().clone(),
        };
        self.seen_final = status.is_final();
        Some(status)
    }

    /// Waits for the end. Sender: the receiver confirmed that it stored the content intact.
    /// Receiver: the content was verified and stored. Otherwise, why not.
    pub async fn finished(&self) -> Result<(u64, [u8; 32]), FileError> {
        let mut rx = self.status.clone();
        let waited = rx
            .wait_for(FileStatus::is_final)
            .await
            .map(|status| status.clone());
        // Err: the task ended, and its last status is final.
        let status = waited.unwrap_or_else(|_| rx.borrow().clone());
        match status {
            FileStatus::Finished { size, sha256 } => Ok((size, sha256)),
            FileStatus::Failed(error) => Err(error),
            _ => Err(FileError::new(
                Code::INTERNAL_ERROR,
                "transfer ended without a final status",
            )),
        }
    }
}
