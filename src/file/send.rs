//! The sending side of a transfer: reads the source within the receiver's credit.

use std::path::Path;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use futures_util::FutureExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{wire, FileError, FileStatus, Outgoing, Progress, Router};
use crate::connection::link::Link;
use crate::connection::Peer;
use crate::error::{Code, Error};
use crate::frame::Kind;
use crate::meters::Direction;

/// A transfer we send: its [`Progress`], and [`FileSend::cancel`]. Dropping the handle does
/// not stop the transfer.
#[derive(Debug)]
pub struct FileSend {
    outgoing: Arc<Outgoing>,
    progress: Progress,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outgoing")
    }
}

impl std::ops::Deref for FileSend {
    type Target = Progress;

    fn deref(&self) -> &Progress {
        &self.progress
    }
}

impl std::ops::DerefMut for FileSend {
    fn deref_mut(&mut self) -> &mut Progress {
        &mut self.progress
    }
}

impl FileSend {
    /// Cancels: the receiver is told (`FILE_CANCELLED`) and discards what it has.
    pub fn cancel(&self) {
        self.outgoing.update(|state| state.cancel = true);
    }
}

impl Peer {
    /// Offers the file at `path` to the peer (named after its file name, with its size) and
    /// streams it once accepted.
    pub async fn send_file(&self, path: impl AsRef<Path>) -> Result<FileSend, Error> {
        let path = path.as_ref();
        let file = tokio::fs::File::open(path).await?;
        let size = file.metadata().await?.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.send_file_from(file, &name, Some(size)).await
    }

    /// Offers content from any reader under `name`; `size` is `None` for a stream of unknown
    /// length. With a size, the transfer fails if the reader yields more or less.
    pub async fn send_file_from<R>(&self, source: R, name: &str, size: Option<u64>) -> Result<FileSend, Error>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let link = self.link();
        let router = Router::of(&link).ok_or_else(|| self.closed_error())?;
        let (id, outgoing) = router.new_outgoing(&link).ok_or_else(|| self.closed_error())?;
        if let Err(error) = link.enqueue(wire::offer(id, name, size)).await {
            router.remove_outgoing(&link, id);
            return Err(error);
        }
        let status = outgoing.status.subscribe();
        let task = Sender {
            chunk: link.files_config().chunk.max(1),
            link,
            router,
            id,
            outgoing: outgoing.clone(),
        };
        tokio::spawn(task.run(source, size));
        Ok(FileSend {
            outgoing,
            progress: Progress::new(id, status),
        })
    }
}

struct Sender {
    link: Link,
    router: Router,
    id: u32,
    outgoing: Arc<Outgoing>,
    chunk: u32,
}

enum Wait {
    Credit(u64),
    Done([u8; 32]),
}

impl Sender {
    async fn run<R: AsyncRead + Unpin>(self, source: R, size: Option<u64>) {
        let result = self.transfer(source, size).await;
        self.router.remove_outgoing(&self.link, self.id);
        let confirmed = self.outgoing.lock().confirmed;
        self.link
            .meters()
            .file(Direction::Sent, result.is_ok(), confirmed);
        self.outgoing.status.send_replace(match result {
            Ok((size, sha256)) => FileStatus::Finished { size, sha256 },
            Err(error) => FileStatus::Failed(error),
        });
    }

    /// Gives up: tells the receiver, returns the error.
    async fn abort(&self, error: FileError) -> FileError {
        let _ = self
            .link
            .enqueue(wire::abort(self.id, error.code, &error.reason))
            .await;
        error
    }

    /// Waits until `ready` says go, the transfer ends, or we cancel.
    async fn wait(&self, mut ready: impl FnMut(&super::OutState) -> Option<Wait>) -> Result<Wait, FileError> {
        loop {
            let notified = self.outgoing.notify.notified();
            let (decision, paused) = {
                let state = self.outgoing.lock();
                let decision = if let Some(error) = &state.ended {
                    Some(Err(Some(error.clone())))
                } else if state.cancel {
                    Some(Err(None))
                } else {
                    ready(&state).map(Ok)
                };
                (decision, state.paused)
            };
            match decision {
                Some(Ok(go)) => return Ok(go),
                Some(Err(Some(ended))) => return Err(ended),
                Some(Err(None)) => {
                    return Err(self
                        .abort(FileError::new(Code::FILE_CANCELLED, "cancelled by the sender"))
                        .await);
                }
                None => {}
            }
            if paused {
                self.outgoing.status.send_if_modified(|status| match *status {
                    FileStatus::Transferring { bytes } => {
                        *status = FileStatus::Paused { bytes };
                        true
                    }
                    _ => false,
                });
            }
            notified.await;
        }
    }

    async fn transfer<R: AsyncRead + Unpin>(
        &self,
        mut source: R,
        size: Option<u64>,
    ) -> Result<(u64, [u8; 32]), FileError> {
        self.wait(|state| state.accepted.then_some(Wait::Credit(0)))
            .await?;
        let confirmed = self.outgoing.lock().confirmed;
        self.outgoing
            .status
            .send_replace(FileStatus::Transferring { bytes: confirmed });
        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        loop {
            let allowed = match self
                .wait(|s| (!s.paused && s.credit > 0).then_some(Wait::Credit(s.credit)))
                .await?
            {
                Wait::Credit(credit) => credit.min(u64::from(self.chunk)) as usize,
                Wait::Done(_) => 0,
            };
            let mut buf = BytesMut::with_capacity(allowed);
            // Fill the chunk with what the source has ready; a slow source sends what it has.
            let read = read_ready(&mut source, &mut buf, allowed).await;
            let n = match read {
                Ok(n) => n,
                Err(error) => {
                    return Err(self
                        .abort(FileError::new(
                            Code::FILE_IO,
                            format!("reading the source: {error}"),
                        ))
                        .await)
                }
            };
            if n == 0 {
                break;
            }
            if size.is_some_and(|size| total + n as u64 > size) {
                return Err(self
                    .abort(FileError::new(
                        Code::FILE_INTEGRITY,
                        "the source is longer than announced",
                    ))
                    .await);
            }
            hasher.update(&buf);
            total += n as u64;
            self.outgoing.update(|state| state.credit -= n as u64);
            let chunk = wire::frame(Kind::FileChunk, self.id, buf.freeze());
            if let Err(error) = self.link.enqueue(chunk).await {
                return Err(FileError::new(error.code(), error.to_string()));
            }
        }
        if size.is_some_and(|size| total != size) {
            return Err(self
                .abort(FileError::new(
                    Code::FILE_INTEGRITY,
                    "the source is shorter than announced",
                ))
                .await);
        }
        let sha256: [u8; 32] = hasher.finalize().into();
        if let Err(error) = self.link.enqueue(wire::end(self.id, total, &sha256)).await {
            return Err(FileError::new(error.code(), error.to_string()));
        }
        match self.wait(|state| state.done.map(Wait::Done)).await? {
            Wait::Done(confirmed) if confirmed == sha256 => Ok((total, sha256)),
            _ => Err(FileError::new(
                Code::FILE_INTEGRITY,
                "the receiver confirmed another hash",
            )),
        }
    }
}

/// Reads at least one octet (waiting for it), then whatever else is ready at once, up to `max`.
async fn read_ready<R: AsyncRead + Unpin>(
    source: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> std::io::Result<usize> {
    let first = source.read_buf(&mut (&mut *buf).limit(max)).await?;
    if first == 0 {
        return Ok(0);
    }
    while buf.len() < max {
        let remaining = max - buf.len();
        match source.read_buf(&mut (&mut *buf).limit(remaining)).now_or_never() {
            Some(Ok(n)) if n > 0 => {}
            Some(Err(error)) => return Err(error),
            _ => break,
        }
    }
    Ok(buf.len())
}
