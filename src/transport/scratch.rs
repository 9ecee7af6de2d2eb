//! One read buffer per thread, for reads that should take memory only once data has arrived.
//!
//! An idle connection waits for data without a buffer of its own; when the socket has data it
//! is read here first and the caller copies what arrived into memory it keeps. This module owns
//! the scratch and nothing else; it must not know what the octets mean.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The scratch's size: the most one read through it can return.
pub(crate) const SCRATCH_LEN: usize = 64 * 1024;

/// Arrivals of at least this many octets keep the scratch's memory (shrunk to what arrived,
/// which the allocator does in place) instead of being copied out of it, and the thread takes
/// a new scratch for its next read: below it a copy costs less than the allocation.
const KEEP: usize = 4096;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What one read through the scratch brought.
enum Arrival<'a> {
    /// Fewer than [`KEEP`] octets (or a read that keeps nothing): still in the scratch.
    Lent(&'a [u8]),
    /// At least [`KEEP`] octets, in what was the scratch's memory.
    Kept(Vec<u8>),
}

impl Arrival<'_> {
    fn octets(&self) -> &[u8] {
        match self {
            Arrival::Lent(octets) => octets,
            Arrival::Kept(octets) => octets,
        }
    }
}

/// Polls `stream` for at most `limit` octets (at most [`SCRATCH_LEN`]) into this thread's
/// scratch and hands what arrived to `take` (nothing: the end of the stream); `keep` lets a
/// large arrival take the scratch's memory with it.
///
/// A read nested in another (a stream that is itself read through the scratch) finds the
/// scratch taken and reads into a buffer of its own instead of panicking.
fn poll_read<R: AsyncRead + Unpin, T>(
    stream: &mut R,
    cx: &mut Context<'_>,
    limit: usize,
    keep: bool,
    take: impl FnOnce(Arrival<'_>) -> io::Result<T>,
) -> Poll<io::Result<T>> {
    let limit = limit.min(SCRATCH_LEN);
    SCRATCH.with(|scratch| {
        let (mut borrowed, mut nested) = (scratch.try_borrow_mut(), Vec::new());
        let space = match &mut borrowed {
            Ok(scratch) => &mut **scratch,
            Err(_) => &mut nested,
        };
        space.clear();
        if space.capacity() < limit {
            // Not zeroed: the read writes before anything is read back.
            space
                .try_reserve_exact(SCRATCH_LEN)
                .map_err(|_| out_of_memory())?;
        }
        ready!(tokio_util::io::poll_read_buf(
            Pin::new(stream),
            cx,
            &mut (&mut *space).limit(limit)
        ))?;
        if keep && space.len() >= KEEP {
            return Poll::Ready(take(Arrival::Kept(std::mem::take(space))));
        }
        let taken = take(Arrival::Lent(space));
        space.clear();
        Poll::Ready(taken)
    })
}

fn out_of_memory() -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, "no memory for the frame being read")
}

/// Growth of a buffer that holds part of a frame whose length is not known yet.
const GROW: usize = 4096;

/// The most a frame's buffer is grown beyond what has arrived: this, or as much as has arrived
/// (doubling keeps a large frame's reallocations few, and reallocation of large buffers moves
/// pages rather than copying them).
pub(crate) const STEP: usize = 64 * 1024;

/// What a reader holds of a stream: octets that arrived and are not frames yet.
///
/// Memory is taken only as octets arrive: a header announcing a large frame reserves nothing
/// by itself, and a frame's buffer grows at most [`STEP`] or its own size beyond what
/// arrived, with fallible allocation, so that a peer that announces 16 MiB and sends 100
/// octets costs 64 KiB, and running out of memory ends that connection (an error), not the
/// process.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// What to decode from.
    pub(crate) buf: BytesMut,
    /// A frame whose length is known and which has not all arrived: its octets so far, and
    /// its whole length.
    large: Option<(Vec<u8>, usize)>,
}

impl Pending {
    /// Holding octets that arrived elsewhere (what the HTTP layer read past an upgrade).
    #[cfg(feature = "ws")]
    pub(crate) fn holding(buf: BytesMut) -> Pending {
        Pending { buf, large: None }
    }

    /// Whether any octet waits to be decoded.
    pub(crate) fn holds_any(&self) -> bool {
        !self.buf.is_empty() || self.large.is_some()
    }

    /// Drops what is held (the connection no longer decodes).
    pub(crate) fn clear(&mut self) {
        *self = Pending::default();
    }

    /// Reads more of `stream`; returns how many octets arrived (0: the end of the stream, with
    /// whatever had arrived of an unfinished frame back in `buf`).
    ///
    /// With nothing pending, reads at most `limit` octets (at most [`SCRATCH_LEN`]) through the
    /// scratch and keeps only what arrived. Once `frame_len` can tell the length of the frame
    /// that has begun, that frame alone is read into a buffer of its own that grows as above.
    pub(crate) async fn read_more<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
        limit: usize,
        frame_len: impl Fn(&[u8]) -> Option<usize>,
    ) -> io::Result<usize> {
        if self.large.is_none() {
            match frame_len(&self.buf) {
                Some(total) if total > self.buf.len() => self.begin_large(total)?,
                _ if self.buf.is_empty() => return self.read_scratch(stream, limit, &frame_len).await,
                _ => {
                    if self.buf.capacity() == self.buf.len() {
                        self.buf.reserve(GROW);
                    }
                    return stream.read_buf(&mut self.buf).await;
                }
            }
        }
        self.read_large(stream).await
    }

    /// Reads through the scratch; what arrived goes to `buf`, or, when it is the start of a
    /// frame longer than what arrived, straight into that frame's own buffer (one allocation
    /// and one copy for a large frame, not two). A large arrival keeps the scratch's memory and
    /// is not copied at all.
    async fn read_scratch<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
        limit: usize,
        frame_len: &impl Fn(&[u8]) -> Option<usize>,
    ) -> io::Result<usize> {
        let (buf, large) = (&mut self.buf, &mut self.large);
        std::future::poll_fn(|cx| {
            poll_read(stream, cx, limit, true, |arrival| {
                let arrived = arrival.octets().len();
                match (frame_len(arrival.octets()), arrival) {
                    (Some(total), Arrival::Kept(mut frame)) if total > arrived => {
                        frame.shrink_to(total);
                        *large = Some((frame, total));
                    }
                    (Some(total), Arrival::Lent(filled)) if total > arrived => {
                        let mut frame = Vec::new();
                        reserve_towards(&mut frame, arrived, total)?;
                        frame.extend_from_slice(filled);
                        *large = Some((frame, total));
                    }
                    (_, Arrival::Kept(mut octets)) => {
                        // Frames keep this memory: none of it beyond what arrived.
                        octets.shrink_to_fit();
                        *buf = BytesMut::from(Bytes::from(octets));
                    }
                    (_, Arrival::Lent(filled)) => {
                        buf.reserve(arrived);
                        buf.extend_from_slice(filled);
                    }
                }
                Ok(arrived)
            })
        })
        .await
    }

    /// Moves the start of a frame of `total` octets out of `buf` into its own buffer.
    fn begin_large(&mut self, total: usize) -> io::Result<()> {
        let mut frame = Vec::new();
        reserve_towards(&mut frame, self.buf.len(), total)?;
        frame.extend_from_slice(&self.buf);
        self.buf = BytesMut::new();
        self.large = Some((frame, total));
        Ok(())
    }

    async fn read_large<R: AsyncRead + Unpin>(&mut self, stream: &mut R) -> io::Result<usize> {
        let Some((frame, total)) = self.large.as_mut() else {
            return Ok(0);
        };
        let total = *total;
        if frame.len() == frame.capacity() {
            reserve_towards(frame, frame.len(), total)?;
        }
        let room = (frame.capacity() - frame.len()).min(total - frame.len());
        let read = stream.read_buf(&mut (&mut *frame).limit(room)).await?;
        if read == 0 || frame.len() == total {
            // Done, or the stream ended inside the frame: what arrived is decoded (or reported
            // truncated) from `buf`.
            if let Some((frame, _)) = self.large.take() {
                self.buf = BytesMut::from(Bytes::from(frame));
            }
        }
        Ok(read)
    }
}

/// Grows `frame` (holding `held` octets of a frame of `total`) by at most [`STEP`] or `held`,
/// whichever is more, and never past `total`; fails instead of aborting when memory runs out.
fn reserve_towards(frame: &mut Vec<u8>, held: usize, total: usize) -> io::Result<()> {
    let target = total.min(held + STEP.max(held));
    frame
        .try_reserve_exact(target.saturating_sub(frame.len()))
        .map_err(|_| out_of_memory())
}

/// Reads at most [`SCRATCH_LEN`] octets of `stream` and drops them; returns how many (0: the
/// end of the stream).
pub(crate) async fn discard<R: AsyncRead + Unpin>(stream: &mut R) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        poll_read(stream, cx, SCRATCH_LEN, false, |arrival| {
            Ok(arrival.octets().len())
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, FrameCodec};
    use bytes::Bytes;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::{Decoder, Encoder};

    fn wire(frame: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        FrameCodec::new(32 << 20).encode(frame, &mut out).unwrap();
        out.to_vec()
    }

    #[tokio::test]
    async fn a_header_announcing_16_mib_costs_what_arrived_plus_a_step() {
        let codec = FrameCodec::new(32 << 20);
        let (mut peer, mut stream) = tokio::io::duplex(1 << 16);
        let mut head = wire(&Frame::message(1, Bytes::from(vec![0u8; 16 << 20])));
        head.truncate(109);
        peer.write_all(&head).await.unwrap();
        let mut pending = Pending::default();
        let mut arrived = 0;
        while arrived < 109 {
            arrived += pending
                .read_more(&mut stream, SCRATCH_LEN, |b| codec.frame_len(b))
                .await
                .unwrap();
        }
        let held = pending.large.as_ref().map_or(0, |(frame, _)| frame.capacity()) + pending.buf.capacity();
        assert!(held <= 109 + STEP, "{held} octets held for 109 that arrived");
    }

    #[tokio::test]
    async fn a_large_frame_in_small_pieces_arrives_whole_and_the_next_one_after_it() {
        let mut codec = FrameCodec::new(32 << 20);
        let payload = Bytes::from((0..3_000_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let mut bytes = wire(&Frame::message(1, payload.clone()));
        bytes.extend(wire(&Frame::message(2, Bytes::from_static(b"next"))));
        let (mut peer, mut stream) = tokio::io::duplex(7919);
        let writer = tokio::spawn(async move {
            for piece in bytes.chunks(10_007) {
                peer.write_all(piece).await.unwrap();
            }
        });
        let mut pending = Pending::default();
        let mut frames = Vec::new();
        while frames.len() < 2 {
            if let Some(frame) = codec.decode(&mut pending.buf).unwrap() {
                frames.push(frame);
                continue;
            }
            let read = pending
                .read_more(&mut stream, SCRATCH_LEN, |b| codec.frame_len(b))
                .await
                .unwrap();
            assert!(read > 0, "the stream ended early");
        }
        writer.await.unwrap();
        assert_eq!(frames[0].payload, payload);
        assert_eq!(&frames[1].payload[..], b"next");
    }

    #[tokio::test]
    async fn a_large_arrival_keeps_the_scratch_memory_shrunk_to_what_arrived() {
        let mut codec = FrameCodec::new(32 << 20);
        let bytes = wire(&Frame::message(1, Bytes::from(vec![3u8; 16 << 10])));
        let (mut peer, mut stream) = tokio::io::duplex(1 << 17);
        peer.write_all(&bytes).await.unwrap();
        let mut pending = Pending::default();
        let read = pending
            .read_more(&mut stream, SCRATCH_LEN, |b| codec.frame_len(b))
            .await
            .unwrap();
        assert_eq!(read, bytes.len());
        assert_eq!(
            pending.buf.capacity(),
            bytes.len(),
            "the frame holds no more than arrived"
        );
        let frame = codec.decode(&mut pending.buf).unwrap().unwrap();
        assert_eq!(frame.payload.len(), 16 << 10);

        // The thread's next read takes a new scratch.
        let small = wire(&Frame::message(2, Bytes::from_static(b"after")));
        peer.write_all(&small).await.unwrap();
        pending
            .read_more(&mut stream, SCRATCH_LEN, |b| codec.frame_len(b))
            .await
            .unwrap();
        assert_eq!(
            &codec.decode(&mut pending.buf).unwrap().unwrap().payload[..],
            b"after"
        );
        assert!(
            frame.payload.iter().all(|&octet| octet == 3),
            "the first frame is untouched"
        );
    }

    #[tokio::test]
    async fn a_large_arrival_inside_a_longer_frame_holds_at_most_that_frame() {
        let codec = FrameCodec::new(32 << 20);
        let mut bytes = wire(&Frame::message(1, Bytes::from(vec![4u8; 40_000])));
        bytes.truncate(10_000);
        let (mut peer, mut stream) = tokio::io::duplex(1 << 17);
        peer.write_all(&bytes).await.unwrap();
        let mut pending = Pending::default();
        pending
            .read_more(&mut stream, SCRATCH_LEN, |b| codec.frame_len(b))
            .await
            .unwrap();
        let (frame, total) = pending.large.as_ref().expect("the frame has begun");
        assert_eq!((frame.len(), *total), (10_000, 40_009));
        assert!(frame.capacity() <= 40_009, "{} octets held", frame.capacity());
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_large_frame_leaves_what_arrived_to_report() {
        let mut codec = FrameCodec::new(32 << 20);
        let mut bytes = wire(&Frame::message(1, Bytes::from(vec![5u8; 500_000])));
        bytes.truncate(200_000);
        let (mut peer, mut stream) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            peer.write_all(&bytes).await.unwrap();
        });
        let mut pending = Pending::default();
        while pending
            .read_more(&mut stream, SCRATCH_LEN, |b| codec.frame_len(b))
            .await
            .unwrap()
            > 0
        {}
        assert!(matches!(
            codec.decode_eof(&mut pending.buf),
            Err(crate::frame::FrameError::Truncated { buffered: 200_000 })
        ));
    }
}
