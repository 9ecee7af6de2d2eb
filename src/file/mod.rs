//! File streaming: offers, senders, receivers, credit, integrity.
//!
//! This module owns file transfers above the connection: the sender task that reads a source
//! within the receiver's credit, the receiver task that writes a destination and returns
//! credit, the integrity check at the end, and the routing of file frames to those tasks
//! (`Router`). The rules a hostile peer could break (offers beyond the limit, content before
//! acceptance or beyond the credit, unknown transfers) are the connection engine's; this module
//! talks to the connection only through its narrow `Link`, sends through the session's queue
//! (so chunks are sealed like any record and interleave fairly with messages), and must not
//! touch sockets or the security layer.
//!
//! A receiver grants a window of credit (default 256 KiB) when it accepts and returns credit as
//! it writes, so memory on both sides is bounded by the window, whatever the file's size (in a
//! resumable session the sender's written chunks also stay in the resume buffer until
//! acknowledged, at most its bound). Transfers belong to the session: a lost connection of a
//! resumable session parks them, and they end only with the session. The
//! content goes to `<destination>.partial`, created new (never over an existing file), and is
//! linked to the destination only after its size and SHA-256 match the sender's; any failure
//! removes the partial file.

mod names;
mod receive;
mod send;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Notify};

pub use crate::error::FileError;
pub use receive::FileReceive;
pub use send::FileSend;

use crate::connection::engine::files::FileEvent;
use crate::connection::link::{FileSink, Link, Refusal};
use crate::error::{Code, Error};
use crate::frame::file as wire;

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

crate::setters::setters!(FileConfig {
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

/// Runs for every offer a peer makes.
pub(crate) type OfferFn = Arc<dyn Fn(&crate::connection::Peer, FileOffer) + Send + Sync>;

/// A file the peer offers. Decide with [`FileOffer::accept`], [`FileOffer::accept_into`],
/// [`FileOffer::accept_writer`] or [`FileOffer::decline`]; an offer dropped undecided is
/// declined.
pub struct FileOffer {
    link: Link,
    router: Router,
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

    /// The name reduced to a plain file name that is safe on every system, or `None` if
    /// nothing usable is left: no directories, no `..`, no leading dots, no control
    /// characters, no trailing dots or spaces, and refused outright when it holds a `:` (a
    /// Windows drive-relative path or an alternate data stream) or is a reserved device name
    /// (`CON`, `NUL`, `COM1`, … with any extension).
    pub fn safe_name(&self) -> Option<String> {
        names::safe_name(&self.name)
    }

    /// The announced size; `None` for a stream of unknown length.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// Whether the sender streams content of unknown length.
    pub fn is_stream(&self) -> bool {
        self.size.is_none()
    }

    /// Accepts into `path`: content goes to a new `.partial` file beside it and becomes the
    /// file only once verified. An existing file is never overwritten: when `path` (or its
    /// partial file) is taken, the first free name of `stem (1).ext`, `stem (2).ext`, … is
    /// used; [`FileReceive::path`] tells which. Fails if no partial file can be created (the
    /// offer is then refused with `FILE_IO`).
    pub async fn accept(mut self, path: impl Into<PathBuf>) -> Result<FileReceive, Error> {
        self.decided = true;
        match receive::Destination::create(path.into()).await {
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
                Err(crate::error::ConfigError::FileName.into())
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
        receive::start(&self.link, &self.router, self.id, self.size, destination).await
    }

    /// Declines with a reason.
    pub fn decline(mut self, reason: &str) {
        self.decided = true;
        self.refuse(Code::FILE_DECLINED, reason);
    }

    fn refuse(&self, code: Code, reason: &str) {
        self.link.end_incoming(self.id);
        let _ = self.link.try_enqueue(wire::refuse(self.id, code, reason));
    }
}

impl Drop for FileOffer {
    fn drop(&mut self) {
        if !self.decided {
            self.refuse(Code::FILE_DECLINED, "the application did not take the offer");
        }
    }
}

/// What the router hands a receiver task.
pub(crate) enum Inbound {
    Chunk(Bytes),
    End { size: u64, sha256: [u8; 32] },
    Abort(FileError),
}

/// State shared between a sender task and the router.
pub(crate) struct Outgoing {
    state: Mutex<OutState>,
    notify: Notify,
    /// What the sender's [`Progress`] shows: its progress is what the receiver confirmed.
    status: watch::Sender<FileStatus>,
}

#[derive(Default)]
struct OutState {
    cancel: bool,
    accepted: bool,
    credit: u64,
    /// Content octets the receiver wrote: the credit it returned after accepting.
    confirmed: u64,
    paused: bool,
    done: Option<[u8; 32]>,
    ended: Option<FileError>,
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

    /// Credit came back: the receiver wrote `n` more octets.
    fn confirm(&self, n: u64) {
        let confirmed = {
            let mut state = self.lock();
            state.confirmed += n;
            state.confirmed
        };
        self.status.send_if_modified(|status| match status {
            FileStatus::Transferring { .. } | FileStatus::Paused { .. } => {
                *status = FileStatus::Transferring { bytes: confirmed };
                true
            }
            _ => false,
        });
    }
}

/// Routes a session's file frames to the tasks of its transfers.
#[derive(Clone)]
pub(crate) struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    on_offer: Option<OfferFn>,
    routes: Mutex<Routes>,
}

#[derive(Default)]
struct Routes {
    outgoing: HashMap<u32, Arc<Outgoing>>,
    incoming: HashMap<u32, mpsc::Sender<Inbound>>,
}

impl Router {
    /// A router that hands offers to `on_offer` (without one, every offer is declined).
    pub(crate) fn new(on_offer: Option<OfferFn>) -> Router {
        Router {
            inner: Arc::new(RouterInner {
                on_offer,
                routes: Mutex::new(Routes::default()),
            }),
        }
    }

    /// The router of the session `link` belongs to.
    pub(crate) fn of(link: &Link) -> Option<Router> {
        link.sink().as_any().downcast_ref::<Router>().cloned()
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.inner.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new outgoing transfer; `None` once the connection is over.
    fn new_outgoing(&self, link: &Link) -> Option<(u32, Arc<Outgoing>)> {
        let mut routes = self.routes();
        let id = link.new_outgoing()?;
        let outgoing = Arc::new(Outgoing {
            state: Mutex::new(OutState::default()),
            notify: Notify::new(),
            status: status_channel().0,
        });
        routes.outgoing.insert(id, outgoing.clone());
        Some((id, outgoing))
    }

    fn remove_outgoing(&self, link: &Link, id: u32) {
        self.routes().outgoing.remove(&id);
        link.end_outgoing(id);
    }

    fn register_incoming(&self, id: u32, tx: mpsc::Sender<Inbound>) {
        self.routes().incoming.insert(id, tx);
    }

    fn remove_incoming(&self, link: &Link, id: u32) {
        self.routes().incoming.remove(&id);
        link.end_incoming(id);
    }

    fn to_receiver(&self, link: &Link, id: u32, inbound: Inbound) -> Result<(), Refusal> {
        let tx = self.routes().incoming.get(&id).cloned();
        let Some(tx) = tx else {
            // Ended between the engine's check and here: in flight, dropped, reported.
            let error = FileError::new(
                Code::UNKNOWN_TRANSFER,
                format!("late frame for ended transfer {id}"),
            );
            return Err(Refusal { reply: None, error });
        };
        match tx.try_send(inbound) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                let error = FileError::new(
                    Code::UNKNOWN_TRANSFER,
                    format!("late frame for ended transfer {id}"),
                );
                Err(Refusal { reply: None, error })
            }
            // Octets are bounded by the credit, chunks by the channel's room.
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.remove_incoming(link, id);
                let reply = wire::refuse(id, Code::FILE_FLOW_VIOLATION, "too many chunks in flight");
                let error = FileError::new(
                    Code::FILE_FLOW_VIOLATION,
                    format!("transfer {id}: too many chunks in flight"),
                );
                Err(Refusal {
                    reply: Some(reply),
                    error,
                })
            }
        }
    }

    fn to_sender(&self, id: u32, change: impl FnOnce(&mut OutState)) {
        let outgoing = self.routes().outgoing.get(&id).cloned();
        if let Some(outgoing) = outgoing {
            outgoing.update(change);
        }
    }
}

impl FileSink for Router {
    fn on_event(&self, link: &Link, event: FileEvent) -> Result<(), Refusal> {
        match event {
            FileEvent::Offer { id, size, name } => {
                let offer = FileOffer {
                    link: link.clone(),
                    router: self.clone(),
                    id,
                    name,
                    size,
                    decided: false,
                };
                // Without a handler the offer is dropped, which declines it.
                if let Some(on_offer) = &self.inner.on_offer {
                    on_offer(&link.peer(), offer);
                }
                Ok(())
            }
            FileEvent::Chunk { id, bytes } => self.to_receiver(link, id, Inbound::Chunk(bytes)),
            FileEvent::End { id, size, sha256 } => self.to_receiver(link, id, Inbound::End { size, sha256 }),
            FileEvent::Abort { id, code, reason } => {
                let routed = self.to_receiver(link, id, Inbound::Abort(FileError::new(code, reason)));
                // Withdrawn before the application decided: nothing waits for it.
                routed.or(Ok(()))
            }
            FileEvent::Credit { id, credit, accepted } => {
                self.to_sender(id, |state| {
                    state.accepted = true;
                    state.credit = state.credit.saturating_add(u64::from(credit));
                });
                // The first credit is the window; every later one is content written.
                let outgoing = self.routes().outgoing.get(&id).cloned();
                if let (false, Some(outgoing)) = (accepted, outgoing) {
                    outgoing.confirm(u64::from(credit));
                }
                Ok(())
            }
            FileEvent::Pause { id, paused } => {
                self.to_sender(id, |state| state.paused = paused);
                Ok(())
            }
            FileEvent::Done { id, sha256 } => {
                self.to_sender(id, |state| state.done = Some(sha256));
                Ok(())
            }
            FileEvent::Refused { id, code, reason } => {
                self.to_sender(id, |state| {
                    state.ended.get_or_insert(FileError::new(code, reason));
                });
                Ok(())
            }
        }
    }

    fn session_ended(&self, _link: &Link, error: FileError) {
        let routes = std::mem::take(&mut *self.routes());
        for (_, outgoing) in routes.outgoing {
            outgoing.end(error.clone());
        }
        for (_, tx) in routes.incoming {
            // Room is likely (the task drains as it writes); without it the task finds the
            // channel closed and reports the end of the session instead.
            let _ = tx.try_send(Inbound::Abort(error.clone()));
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
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

    /// Every status from now on as a [`Stream`](futures_util::Stream): the current one first,
    /// then each change (intermediate progress values may be merged), ending after the final
    /// status. Independent of this `Progress` (it can be moved into another task).
    pub fn updates(&self) -> impl futures_util::Stream<Item = FileStatus> + Send + Unpin + 'static {
        let mut status = self.status.clone();
        status.mark_changed();
        let progress = Progress::new(self.id, status);
        Box::pin(futures_util::stream::unfold(
            progress,
            |mut progress| async move {
                let status = progress.next_status().await?;
                Some((status, progress))
            },
        ))
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
