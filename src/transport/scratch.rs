//! One read buffer per thread, for reads that should take memory only once data has arrived.
//!
//! An idle connection waits for data without a buffer of its own; when the socket has data it
//! is read here first and the caller copies what arrived into memory it keeps. This module owns
//! the scratch and nothing else; it must not know what the octets mean.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// The scratch's size: the most one read through it can return.
pub(crate) const SCRATCH_LEN: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8; SCRATCH_LEN]>> = RefCell::new(Box::new([0; SCRATCH_LEN]));
}

/// Polls `stream` for at most `limit` octets (at most [`SCRATCH_LEN`]) into this thread's
/// scratch and hands what arrived to `take` (nothing: the end of the stream).
///
/// A read nested in another (a stream that is itself read through the scratch) finds the
/// scratch taken and reads into a buffer of its own instead of panicking.
fn poll_read<R: AsyncRead + Unpin, T>(
    stream: &mut R,
    cx: &mut Context<'_>,
    limit: usize,
    take: impl FnOnce(&[u8]) -> T,
) -> Poll<io::Result<T>> {
    let limit = limit.min(SCRATCH_LEN);
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => read_into(&mut scratch[..limit], stream, cx, take),
        Err(_) => read_into(&mut vec![0; limit], stream, cx, take),
    })
}

/// Growth of a buffer that holds part of a frame whose length is not known yet.
const GROW: usize = 4096;

/// Reads more of `stream` into `buf`; returns how many octets arrived (0: the end).
///
/// With nothing pending, reads at most `limit` octets (at most [`SCRATCH_LEN`]) through the
/// scratch and takes memory only for what arrived: its size, or room for the whole first frame
/// when `frame_len` can tell that frame's length and it is longer. With something pending,
/// reads into `buf`, growing it by 4 KiB when it is full (a decoder reserves a whole frame
/// once it knows its length).
pub(crate) async fn read_more<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    limit: usize,
    frame_len: impl Fn(&[u8]) -> Option<usize>,
) -> io::Result<usize> {
    if !buf.is_empty() {
        if buf.capacity() == buf.len() {
            buf.reserve(GROW);
        }
        return stream.read_buf(buf).await;
    }
    std::future::poll_fn(|cx| {
        poll_read(stream, cx, limit, |filled| {
            let first = frame_len(filled).unwrap_or(GROW);
            buf.reserve(first.max(filled.len()));
            buf.extend_from_slice(filled);
            filled.len()
        })
    })
    .await
}

/// Reads at most [`SCRATCH_LEN`] octets of `stream` and drops them; returns how many (0: the
/// end of the stream).
pub(crate) async fn discard<R: AsyncRead + Unpin>(stream: &mut R) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_read(stream, cx, SCRATCH_LEN, |filled| filled.len())).await
}

fn read_into<R: AsyncRead + Unpin, T>(
    space: &mut [u8],
    stream: &mut R,
    cx: &mut Context<'_>,
    take: impl FnOnce(&[u8]) -> T,
) -> Poll<io::Result<T>> {
    let mut read = ReadBuf::new(space);
    ready!(Pin::new(stream).poll_read(cx, &mut read))?;
    Poll::Ready(Ok(take(read.filled())))
}
