//! One vectored write of a batch of frames: headers and small payloads copied into one buffer,
//! large payloads passed by reference, never copied.
//!
//! Shared by the TCP and WebSocket writers, which decide what goes into the buffer (headers,
//! masks) and which payloads go by reference; this module owns the layout of the write and
//! the write itself, nothing else.

use std::io::{self, IoSlice};

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::frame::Frame;

/// Payloads up to this size are copied next to their header so that a batch of small frames
/// goes out as one buffer; larger ones are written by reference.
pub(crate) const COALESCE_LIMIT: usize = 4096;
/// At most this many buffers are passed to one `writev` (Linux allows 1024).
pub(crate) const MAX_IOVECS: usize = 256;
/// A buffer that grew past this is released after its write: an idle peer keeps a small one.
const KEEP_CAPACITY: usize = 64 * 1024;

/// What one write is gathered from.
#[derive(Debug, Default)]
pub(crate) struct Gather {
    /// Headers and copied payloads, in order.
    pub(crate) buf: BytesMut,
    /// Payloads by reference: where in the buffer each goes, and its frame's index.
    by_reference: Vec<(usize, usize)>,
}

impl Gather {
    /// Starts a new write.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.by_reference.clear();
    }

    /// The payload of the batch's frame at `index` goes out here, by reference, after what the
    /// buffer holds so far.
    pub(crate) fn by_reference(&mut self, index: usize) {
        self.by_reference.push((self.buf.len(), index));
    }

    /// Writes what was gathered, in order, with `batch` the frames the payloads belong to.
    pub(crate) async fn write_to<W: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut W,
        batch: &[Frame],
    ) -> io::Result<()> {
        if self.by_reference.is_empty() {
            // Everything was copied: one plain write.
            stream.write_all(&self.buf).await?;
        } else {
            // Taken, not kept: an idle peer should not hold the last large batch's list.
            let by_reference = std::mem::take(&mut self.by_reference);
            let mut slices = Vec::with_capacity(by_reference.len() * 2 + 1);
            let mut start = 0;
            for (end, index) in by_reference {
                slices.push(IoSlice::new(&self.buf[start..end]));
                slices.push(IoSlice::new(&batch[index].payload));
                start = end;
            }
            slices.push(IoSlice::new(&self.buf[start..]));
            slices.retain(|slice| !slice.is_empty());
            let mut remaining: &mut [IoSlice<'_>] = &mut slices;
            while !remaining.is_empty() {
                let window = remaining.len().min(MAX_IOVECS);
                let written = stream.write_vectored(&remaining[..window]).await?;
                if written == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                IoSlice::advance_slices(&mut remaining, written);
            }
        }
        self.release();
        Ok(())
    }

    /// After a write: a buffer that grew past `KEEP_CAPACITY` is let go.
    pub(crate) fn release(&mut self) {
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::new();
        }
    }
}
