//! The receiving side of a transfer: writes the destination and returns credit.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};

use super::{names, status_channel, wire, FileError, FileStatus, Inbound, Progress, Router};
use crate::connection::link::Link;
use crate::error::{Code, Error};
use crate::frame::Kind;
use crate::meters::Direction;

/// Where accepted content goes.
pub(crate) enum Destination {
    /// A file written as `partial` and renamed to `path` once verified.
    File {
        path: PathBuf,
        partial: PathBuf,
        file: tokio::fs::File,
    },
    /// Any writer.
    Writer(Box<dyn AsyncWrite + Unpin + Send>),
}

impl Destination {
    /// A new partial file for `path`, or for the first free numbered name beside it: never
    /// over an existing file.
    pub(crate) async fn create(path: PathBuf) -> std::io::Result<Destination> {
        for n in 0..=names::MAX_SUFFIX {
            let candidate = if n == 0 {
                path.clone()
            } else {
                names::numbered(&path, n)
            };
            if tokio::fs::try_exists(&candidate).await? {
                continue;
            }
            let partial = names::partial(&candidate);
            match tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&partial)
                .await
            {
                Ok(file) => {
                    return Ok(Destination::File {
                        path: candidate,
                        partial,
                        file,
                    })
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error),
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "every numbered name beside the destination is taken",
        ))
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Destination::File { file, .. } => file.write_all(bytes).await,
            Destination::Writer(writer) => writer.write_all(bytes).await,
        }
    }

    /// Makes the content durable and visible under its final name, which is never one that
    /// exists already; returns that name.
    async fn commit(self) -> std::io::Result<Option<PathBuf>> {
        match self {
            Destination::File {
                path,
                partial,
                mut file,
            } => {
                file.flush().await?;
                file.sync_all().await?;
                drop(file);
                let stored = link_new(&partial, &path).await?;
                tokio::fs::remove_file(&partial).await?;
                Ok(Some(stored))
            }
            Destination::Writer(mut writer) => {
                writer.flush().await?;
                writer.shutdown().await?;
                Ok(None)
            }
        }
    }

    /// Throws away what was written: no complete-looking file stays behind.
    async fn discard(self) {
        if let Destination::File { partial, file, .. } = self {
            drop(file);
            let _ = tokio::fs::remove_file(&partial).await;
        }
    }
}

/// Gives `partial`'s content the name `path`, or the first free numbered name beside it if
/// `path` appeared meanwhile: a hard link fails instead of replacing an existing file.
async fn link_new(partial: &std::path::Path, path: &std::path::Path) -> std::io::Result<PathBuf> {
    for n in 0..=names::MAX_SUFFIX {
        let candidate = if n == 0 {
            path.to_path_buf()
        } else {
            names::numbered(path, n)
        };
        match tokio::fs::hard_link(partial, &candidate).await {
            Ok(()) => return Ok(candidate),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) if error.kind() == std::io::ErrorKind::Unsupported => {
                // No hard links here: the name was free when chosen.
                tokio::fs::copy(partial, &candidate).await?;
                return Ok(candidate);
            }
            Err(error) => return Err(error),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "every numbered name beside the destination is taken",
    ))
}

#[derive(Default)]
struct Requests {
    paused: bool,
    cancel: bool,
}

struct Control {
    requests: Mutex<Requests>,
    notify: Notify,
}

/// A transfer we receive: its [`Progress`], and pause, resume, cancel. Dropping the handle does
/// not stop the transfer.
pub struct FileReceive {
    control: Arc<Control>,
    progress: Progress,
    stored: Arc<Mutex<Option<PathBuf>>>,
}

impl std::fmt::Debug for FileReceive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReceive")
            .field("progress", &self.progress)
            .finish()
    }
}

impl std::ops::Deref for FileReceive {
    type Target = Progress;

    fn deref(&self) -> &Progress {
        &self.progress
    }
}

impl std::ops::DerefMut for FileReceive {
    fn deref_mut(&mut self) -> &mut Progress {
        &mut self.progress
    }
}

impl FileReceive {
    fn request(&self, f: impl FnOnce(&mut Requests)) {
        f(&mut self.control.requests.lock().unwrap_or_else(|p| p.into_inner()));
        self.control.notify.notify_one();
    }

    /// Stops the sender (it may still deliver what was in flight, up to the window).
    pub fn pause(&self) {
        self.request(|r| r.paused = true);
    }

    /// Lets the sender go on.
    pub fn resume(&self) {
        self.request(|r| r.paused = false);
    }

    /// Cancels: the sender is told (`FILE_CANCELLED`) and the partial content is removed.
    pub fn cancel(&self) {
        self.request(|r| r.cancel = true);
    }

    /// Where the file was stored, once the transfer finished (a numbered name when the chosen
    /// one was taken); `None` before that, and for a writer.
    pub fn path(&self) -> Option<PathBuf> {
        self.stored.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Starts receiving an accepted offer.
pub(crate) async fn start(
    link: &Link,
    router: &Router,
    id: u32,
    size: Option<u64>,
    destination: Destination,
) -> Result<FileReceive, Error> {
    let window = link.files_config().window.max(1);
    // Octets are bounded by the credit; this bounds how many chunks carry them.
    let (tx, rx) = mpsc::channel((window / 512) as usize + 16);
    if !link.accept(id, window) {
        destination.discard().await;
        return Err(Error::File(FileError::new(
            Code::FILE_CANCELLED,
            "the offer was withdrawn",
        )));
    }
    router.register_incoming(id, tx);
    let control = Arc::new(Control {
        requests: Mutex::new(Requests::default()),
        notify: Notify::new(),
    });
    let (status_tx, status) = status_channel();
    status_tx.send_replace(FileStatus::Transferring { bytes: 0 });
    link.enqueue(wire::credit(Kind::FileAccept, id, window)).await?;
    let stored = Arc::new(Mutex::new(None));
    let task = Receiver {
        link: link.clone(),
        router: router.clone(),
        id,
        size,
        control: control.clone(),
        status: status_tx,
        stored: stored.clone(),
    };
    tokio::spawn(task.run(rx, destination));
    Ok(FileReceive {
        control,
        progress: Progress::new(id, status),
        stored,
    })
}

/// How a receive ended early: the error, and whether the sender must be told.
struct Ending {
    error: FileError,
    tell: bool,
}

impl Ending {
    /// Our decision: the sender is told with a refusal.
    fn tell(error: FileError) -> Ending {
        Ending { error, tell: true }
    }

    /// The sender's decision or a lost connection: nothing to tell.
    fn quiet(error: FileError) -> Ending {
        Ending { error, tell: false }
    }
}

/// What a receive has counted so far.
#[derive(Default)]
struct Receiving {
    hasher: Sha256,
    total: u64,
    paused: bool,
    /// Credit held back while paused.
    withheld: u64,
}

struct Receiver {
    link: Link,
    router: Router,
    id: u32,
    size: Option<u64>,
    control: Arc<Control>,
    status: watch::Sender<FileStatus>,
    stored: Arc<Mutex<Option<PathBuf>>>,
}

impl Receiver {
    async fn run(self, rx: mpsc::Receiver<Inbound>, mut destination: Destination) {
        let result = match self.receive(rx, &mut destination).await {
            Ok((size, sha256)) => match destination.commit().await {
                Ok(stored) => {
                    *self.stored.lock().unwrap_or_else(|p| p.into_inner()) = stored;
                    Ok((size, sha256))
                }
                Err(error) => Err(Ending::tell(FileError::new(
                    Code::FILE_IO,
                    format!("storing the file: {error}"),
                ))),
            },
            Err(ending) => {
                destination.discard().await;
                Err(ending)
            }
        };
        // Cleaned up and forgotten before the peer hears of the end: its frames still in flight
        // are then late, and no partial file outlives the news.
        self.router.remove_incoming(&self.link, self.id);
        let meters = self.link.meters();
        match &result {
            Ok((size, _)) => meters.file(Direction::Received, true, *size),
            Err(_) => meters.file(Direction::Received, false, 0),
        }
        let status = match result {
            Ok((size, sha256)) => {
                let done = wire::frame(Kind::FileDone, self.id, bytes::Bytes::copy_from_slice(&sha256));
                let _ = self.link.enqueue(done).await;
                FileStatus::Finished { size, sha256 }
            }
            Err(Ending { error, tell }) => {
                if tell {
                    let _ = self
                        .link
                        .enqueue(wire::refuse(self.id, error.code, &error.reason))
                        .await;
                }
                FileStatus::Failed(error)
            }
        };
        self.status.send_replace(status);
    }

    /// Grants `n` more octets: recorded before the frame goes out, so the engine never sees
    /// a chunk it does not know is allowed.
    async fn grant(&self, n: u64) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.link.grant(self.id, n);
        let _ = self
            .link
            .enqueue(wire::credit(Kind::FileCredit, self.id, n))
            .await;
    }

    async fn receive(
        &self,
        mut rx: mpsc::Receiver<Inbound>,
        destination: &mut Destination,
    ) -> Result<(u64, [u8; 32]), Ending> {
        let mut state = Receiving::default();
        loop {
            let notified = self.control.notify.notified();
            self.apply_requests(&mut state).await?;
            let item = tokio::select! {
                _ = notified => continue,
                item = rx.recv() => item,
            };
            match item {
                None => {
                    let info = self.link.closed().await;
                    return Err(Ending::quiet(FileError::new(
                        info.code,
                        format!("session ended: {}", info.reason),
                    )));
                }
                Some(Inbound::Abort(error)) => return Err(Ending::quiet(error)),
                Some(Inbound::Chunk(bytes)) => self.take_chunk(&mut state, destination, &bytes).await?,
                Some(Inbound::End { size, sha256 }) => return self.verify(state, size, sha256),
            }
        }
    }

    /// Carries out the application's pause, resume or cancel.
    async fn apply_requests(&self, state: &mut Receiving) -> Result<(), Ending> {
        let (want_paused, cancel) = {
            let r = self.control.requests.lock().unwrap_or_else(|p| p.into_inner());
            (r.paused, r.cancel)
        };
        if cancel {
            return Err(Ending::tell(FileError::new(
                Code::FILE_CANCELLED,
                "cancelled by the receiver",
            )));
        }
        if want_paused == state.paused {
            return Ok(());
        }
        state.paused = want_paused;
        let kind = if state.paused {
            Kind::FilePause
        } else {
            Kind::FileResume
        };
        let _ = self
            .link
            .enqueue(wire::frame(kind, self.id, bytes::Bytes::new()))
            .await;
        if state.paused {
            self.status
                .send_replace(FileStatus::Paused { bytes: state.total });
        } else {
            if state.withheld > 0 {
                self.grant(std::mem::take(&mut state.withheld)).await;
            }
            self.status
                .send_replace(FileStatus::Transferring { bytes: state.total });
        }
        Ok(())
    }

    /// Writes one chunk and returns its credit (or withholds it while paused).
    async fn take_chunk(
        &self,
        state: &mut Receiving,
        destination: &mut Destination,
        bytes: &[u8],
    ) -> Result<(), Ending> {
        let len = bytes.len() as u64;
        if self.size.is_some_and(|size| state.total + len > size) {
            return Err(Ending::tell(FileError::new(
                Code::FILE_INTEGRITY,
                "more content than announced",
            )));
        }
        if let Err(error) = destination.write(bytes).await {
            return Err(Ending::tell(FileError::new(
                Code::FILE_IO,
                format!("writing: {error}"),
            )));
        }
        state.hasher.update(bytes);
        state.total += len;
        if state.paused {
            state.withheld += len;
            self.status
                .send_replace(FileStatus::Paused { bytes: state.total });
        } else {
            self.grant(len).await;
            self.status
                .send_replace(FileStatus::Transferring { bytes: state.total });
        }
        Ok(())
    }

    /// The sender's end: size (against the end and the offer) and SHA-256 must match.
    fn verify(&self, state: Receiving, size: u64, sha256: [u8; 32]) -> Result<(u64, [u8; 32]), Ending> {
        let total = state.total;
        let ours: [u8; 32] = state.hasher.finalize().into();
        if size != total || self.size.is_some_and(|announced| announced != total) || sha256 != ours {
            return Err(Ending::tell(FileError::new(
                Code::FILE_INTEGRITY,
                "size or SHA-256 does not match",
            )));
        }
        Ok((total, ours))
    }
}
