//! The outbound queue: a bounded FIFO of frames with many senders and one writer.
//!
//! It owns the frames queued for a session and the space left for more; it must not know what
//! the frames mean. It lives inside the session (no allocation of its own until something is
//! queued, so an idle peer pays a few dozen octets for it), and it outlives connections: the
//! writer of each connection of a resumable session drains the same queue.
//!
//! Space is a semaphore of `capacity` permits: a sender takes one per frame, the writer gives
//! them back for every frame it takes out. Waiting senders are served in order (the semaphore
//! is fair), and closing the queue fails them at once.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::{Semaphore, TryAcquireError};

use crate::frame::Frame;

/// A drained queue whose deque grew past this many slots gives the memory back.
const KEEP_CAPACITY: usize = 64;

thread_local! {
    /// The queue whose own connection's read loop this thread is polling right now (its
    /// address), or 0.
    static READER_OF: Cell<usize> = const { Cell::new(0) };
}

/// Marks this thread as polling the read loop of `queue`'s connection until dropped. The
/// connection polls its writer right after its reader in every pass, so a frame the read loop
/// queues (a handler's reply) needs no wake: the writer is about to look. Waking it would only
/// make the runtime poll the whole connection once more for nothing.
pub(crate) struct PollingReader {
    previous: usize,
}

impl PollingReader {
    pub(crate) fn enter(queue: &Queue) -> PollingReader {
        let previous = READER_OF.with(|reader| reader.replace(queue.address()));
        PollingReader { previous }
    }
}

impl Drop for PollingReader {
    fn drop(&mut self) {
        READER_OF.with(|reader| reader.set(self.previous));
    }
}

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No space left (only from [`Queue::try_push`]).
    Full,
    /// The queue was closed.
    Closed,
}

/// `repr(C)`: `frames`, which a write-through checks, first (see `Shared`).
#[repr(C)]
pub(crate) struct Queue {
    frames: Mutex<State>,
    /// One permit per free slot.
    space: Semaphore,
    /// Wakes the writer when a frame arrives or the queue closes: one slot, for the one writer.
    ready: AtomicWaker,
    /// The read loop has more of the peer's data in hand: its handlers' replies wait for the
    /// writer, which then writes those of a burst together (see [`Queue::polled_by_own_reader`]).
    batching: AtomicBool,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Frame>,
    closed: bool,
}

impl Queue {
    /// An empty queue with room for `capacity` frames (at least one).
    pub(crate) fn new(capacity: usize) -> Queue {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Queue {
            frames: Mutex::default(),
            space: Semaphore::new(capacity),
            ready: AtomicWaker::new(),
            batching: AtomicBool::new(false),
        }
    }

    fn address(&self) -> usize {
        self as *const Queue as usize
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.frames.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `frame`, waiting for space. Cancel safe: a dropped call queued nothing.
    pub(crate) async fn push(&self, frame: Frame) -> Result<(), Refused> {
        let permit = self.space.acquire().await.map_err(|_| Refused::Closed)?;
        permit.forget();
        self.put(frame)
    }

    /// Queues `frame` if there is space now.
    pub(crate) fn try_push(&self, frame: Frame) -> Result<(), Refused> {
        match self.space.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => return Err(Refused::Full),
            Err(TryAcquireError::Closed) => return Err(Refused::Closed),
        }
        self.put(frame)
    }

    /// Appends a frame whose slot is already taken.
    fn put(&self, frame: Frame) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        state.frames.push_back(frame);
        drop(state);
        // From our own read loop, the writer looks next anyway (see `PollingReader`).
        if !self.polled_by_own_reader() {
            self.ready.wake();
        }
        Ok(())
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().frames.is_empty()
    }

    /// Whether this thread is polling the read loop of this queue's own connection (see
    /// [`PollingReader`]).
    pub(crate) fn polled_by_own_reader(&self) -> bool {
        READER_OF.with(Cell::get) == self.address()
    }

    /// Whether a handler's reply must wait for the writer: the read loop of this queue's own
    /// connection is running it with more of the peer's data in hand ([`Queue::set_batching`]),
    /// and the writer, which looks next anyway, writes the replies of a burst together. After
    /// the last frame read, a reply may be written through like any other sender's.
    pub(crate) fn reply_waits(&self) -> bool {
        self.batching.load(Ordering::Relaxed) && self.polled_by_own_reader()
    }

    /// The read loop says whether more of the peer's data waits behind the frame it handles.
    pub(crate) fn set_batching(&self, more: bool) {
        self.batching.store(more, Ordering::Relaxed);
    }

    /// Moves up to `limit` frames into `batch`, waiting until there is at least one; returns
    /// how many, or 0 once the queue is closed and empty. Cancel safe: frames are only taken
    /// when the call returns. Only one task (the writer) may call it at a time.
    #[cfg(test)]
    pub(crate) async fn pop_many(&self, batch: &mut Vec<Frame>, limit: usize) -> usize {
        std::future::poll_fn(|cx| self.poll_pop_many(cx, batch, limit)).await
    }

    /// [`Queue::pop_many`] as a poll: `Pending` (the writer is woken by the next frame) while
    /// the queue is empty and open.
    pub(crate) fn poll_pop_many(
        &self,
        cx: &mut Context<'_>,
        batch: &mut Vec<Frame>,
        limit: usize,
    ) -> Poll<usize> {
        // Registered before looking, so a frame queued after the look wakes us.
        self.ready.register(cx.waker());
        let taken = {
            let mut state = self.lock();
            let n = state.frames.len().min(limit.max(1));
            batch.extend(state.frames.drain(..n));
            if state.frames.is_empty() && state.frames.capacity() > KEEP_CAPACITY {
                state.frames = VecDeque::new();
            }
            if n == 0 && state.closed {
                return Poll::Ready(0);
            }
            n
        };
        if taken == 0 {
            return Poll::Pending;
        }
        self.space.add_permits(taken);
        Poll::Ready(taken)
    }

    /// Refuses every later frame and fails waiting senders; frames already queued stay for
    /// the writer.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.space.close();
        self.ready.wake();
    }

    /// Drops the queued frames `keep` refuses, returning their slots.
    pub(crate) fn retain(&self, keep: impl FnMut(&Frame) -> bool) {
        let dropped = {
            let mut state = self.lock();
            let before = state.frames.len();
            state.frames.retain(keep);
            before - state.frames.len()
        };
        self.space.add_permits(dropped);
    }

    /// Closes the queue and drops what it holds.
    pub(crate) fn close_and_clear(&self) {
        self.close();
        // Closed first: nothing can be added after this takes.
        let dropped = std::mem::take(&mut self.lock().frames);
        drop(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Kind;
    use bytes::Bytes;

    fn frame(n: u8) -> Frame {
        Frame::control(Kind::Ping, Bytes::from(vec![n]))
    }

    #[tokio::test]
    async fn keeps_order_and_bounds_space() {
        let queue = Queue::new(2);
        queue.push(frame(1)).await.unwrap();
        queue.try_push(frame(2)).unwrap();
        assert_eq!(queue.try_push(frame(3)), Err(Refused::Full));
        let mut batch = Vec::new();
        assert_eq!(queue.pop_many(&mut batch, 1).await, 1);
        queue.try_push(frame(3)).unwrap();
        assert_eq!(queue.pop_many(&mut batch, 10).await, 2);
        let order: Vec<u8> = batch.iter().map(|f| f.payload[0]).collect();
        assert_eq!(order, [1, 2, 3]);
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_space_when_the_writer_takes() {
        let queue = std::sync::Arc::new(Queue::new(1));
        queue.push(frame(1)).await.unwrap();
        let sender = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(frame(2)).await }
        });
        let mut batch = Vec::new();
        assert_eq!(queue.pop_many(&mut batch, 8).await, 1);
        sender.await.unwrap().unwrap();
        assert_eq!(queue.pop_many(&mut batch, 8).await, 1);
        assert_eq!(batch[1].payload[0], 2);
    }

    #[tokio::test]
    async fn the_writer_wakes_for_a_frame_queued_while_it_waits() {
        let queue = std::sync::Arc::new(Queue::new(4));
        let writer = tokio::spawn({
            let queue = queue.clone();
            async move {
                let mut batch = Vec::new();
                queue.pop_many(&mut batch, 8).await
            }
        });
        tokio::task::yield_now().await;
        queue.push(frame(1)).await.unwrap();
        assert_eq!(writer.await.unwrap(), 1);
    }

    #[tokio::test]
    async fn closing_fails_waiting_senders_and_ends_the_writer_after_the_rest() {
        let queue = std::sync::Arc::new(Queue::new(1));
        queue.push(frame(1)).await.unwrap();
        let sender = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(frame(2)).await }
        });
        tokio::task::yield_now().await;
        queue.close();
        assert_eq!(sender.await.unwrap(), Err(Refused::Closed));
        assert_eq!(queue.try_push(frame(3)), Err(Refused::Closed));
        let mut batch = Vec::new();
        assert_eq!(queue.pop_many(&mut batch, 8).await, 1);
        assert_eq!(queue.pop_many(&mut batch, 8).await, 0);
    }

    #[test]
    fn a_frame_queued_by_its_own_read_loop_does_not_wake_the_writer() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::task::{Context, Wake, Waker};

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let queue = Queue::new(8);
        let other = Queue::new(8);
        let mut batch = Vec::new();
        let wait = |queue: &Queue, batch: &mut Vec<Frame>| {
            let mut pop = std::pin::pin!(queue.pop_many(batch, 8));
            assert!(std::future::Future::poll(pop.as_mut(), &mut Context::from_waker(&waker)).is_pending());
        };

        wait(&queue, &mut batch);
        {
            let _polling = PollingReader::enter(&queue);
            queue.try_push(frame(1)).unwrap();
            // Another peer's queue (a broadcast from a handler) is woken as usual.
            wait(&other, &mut batch);
            other.try_push(frame(2)).unwrap();
        }
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "only the other queue's writer woke"
        );

        queue.try_push(frame(3)).unwrap();
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            2,
            "from anywhere else, the writer wakes"
        );
    }

    #[test]
    fn a_reply_waits_for_the_writer_only_while_more_of_the_peer_s_data_is_in_hand() {
        let queue = Queue::new(8);
        let other = Queue::new(8);
        queue.set_batching(true);
        assert!(
            !queue.reply_waits(),
            "not in its read loop: a sender like any other"
        );
        {
            let _polling = PollingReader::enter(&queue);
            assert!(queue.reply_waits(), "a burst in hand: replies go out together");
            assert!(
                !other.reply_waits(),
                "another peer's queue (a broadcast from a handler)"
            );
            queue.set_batching(false);
            assert!(
                !queue.reply_waits(),
                "the last frame read: its reply may be written at once"
            );
            assert!(
                queue.polled_by_own_reader(),
                "and a queued one still needs no wake"
            );
        }
    }
}
