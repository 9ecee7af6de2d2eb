//! The driver: runs one connection of a session by moving bytes between the transport and the
//! engine. Every decision is the engine's; this module reads frames and feeds them in, awaits
//! handlers, runs key-exchange work on the pool, writes what the engine emits, and keeps the
//! engine's timer.
//!
//! One task per connection runs the read loop and the write loop side by side, the reader first
//! in every pass: what the read loop queues (a handler's reply) is found by the writer in the
//! same pass without a wake (see `queue::PollingReader`), and a pass that leaves the writer
//! nothing to do does not poll it (see `reader_then_writer`).
//!
//! A graceful close travels through the queue as the close frame itself, so everything queued
//! before it is written first. A forced close (`close_now`, a fatal error, a slow consumer)
//! stops both loops at once; a close frame is still sent if the stream is at a frame boundary.
//! Once our close frame is out and our direction shut, the connection reads on and drops what
//! still arrives until the peer closes too (at most `close_timeout`): dropped with the peer's
//! data unread, the socket would answer with a reset, which fails the peer's next write and on
//! some systems discards what it has not read. The other way round, a write that fails lets
//! the read loop finish what arrived before the end is recorded (at most `close_timeout`), so
//! that a close frame the peer sent before resetting decides the code.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tracing::{debug, Instrument};

use super::engine::Event;
use super::request::Responder;
use super::through::Tail;
use super::{queue, Conn, Hooks, Outcome, Peer, Start};
use crate::error::{Code, Error};
use crate::frame::control::Close;
use crate::frame::FrameError;
use crate::frame::{Frame, Kind};
use crate::protocol::Dispatch;
use crate::security::SecurityEvent;
use crate::transport::{FrameRead, FrameWrite};

/// Runs one connection of a session to its end: both loops, then either the end of the session
/// or, for a resumable session that lost its connection, the handover to the next one.
pub(crate) async fn run<R: FrameRead, W: FrameWrite>(
    peer: Peer,
    start: Start,
    mut reader: R,
    writer: W,
    hooks: Arc<dyn Hooks>,
) -> Outcome {
    let Start {
        conn,
        mut dispatch,
        first,
    } = start;
    let span = tracing::info_span!("connection", peer = %peer.id(), remote = %conn.info.remote);
    async {
        debug!(resumed = !first, "open");
        *peer.shared().hooks.write().unwrap_or_else(|p| p.into_inner()) = Some(hooks.clone());
        peer.shared().engine().heard(Instant::now());
        // Both loops are pinned here and polled through references: passed by value, each
        // would be stored twice in this task (an async fn keeps its arguments besides its
        // locals), for as long as the connection lives.
        let shut = {
            let reading = pin!(async {
                let connected = if first {
                    hooks.connected(&peer)
                } else {
                    Box::pin(std::future::ready(()))
                };
                tokio::select! {
                    biased;
                    _ = conn.stop.cancelled() => {}
                    _ = connected => read_loop(&peer, &conn, &mut reader, dispatch.as_mut(), hooks.as_ref()).await,
                }
                conn.stop.cancel();
            });
            let writing = pin!(async {
                let shut = write_loop(&peer, &conn, writer, hooks.as_ref()).await;
                conn.stop.cancel();
                shut
            });
            reader_then_writer(&peer, &conn, reading, writing).await
        };
        if shut {
            // Our close frame is out and our direction shut: read on, dropping what arrives,
            // until the peer closes too (module docs).
            tokio::spawn(linger(reader, peer.shared().config.close_timeout));
        }
        finish(&peer, &conn, dispatch, hooks)
    }
    .instrument(span)
    .await
}

/// Polls the reader, then the writer, until both are done; returns the writer's result
/// (whether our close went out and our direction is shut).
///
/// The writer is polled in a pass only when it may have something to do: something it waits on
/// woke the task (it is polled with a waker of its own, [`WriterWake`]), the connection is
/// stopping, or the reader left work for it (engine output, or frames in the queue, which the
/// read loop fills without a wake). A pass for a message that needed no answer, or whose
/// answer was written through, leaves the writer's state untouched.
async fn reader_then_writer(
    peer: &Peer,
    conn: &Conn,
    mut reading: Pin<&mut impl Future<Output = ()>>,
    mut writing: Pin<&mut impl Future<Output = bool>>,
) -> bool {
    let wake = Arc::new(WriterWake {
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let waker = Waker::from(wake.clone());
    let (mut read_done, mut shut) = (false, None);
    poll_fn(|cx| {
        wake.task.register(cx.waker());
        if !read_done {
            let _polling = queue::PollingReader::enter(&peer.shared().queue);
            read_done = reading.as_mut().poll(cx).is_ready();
        }
        if shut.is_none() && writer_due(peer, conn, read_done, &wake) {
            if let Poll::Ready(done) = writing.as_mut().poll(&mut Context::from_waker(&waker)) {
                shut = Some(done);
            }
        }
        match (read_done, shut) {
            (true, Some(shut)) => Poll::Ready(shut),
            _ => Poll::Pending,
        }
    })
    .await
}

/// The writer's waker: records that something the writer waits on woke the connection's task.
struct WriterWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WriterWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Whether this pass polls the writer (see [`reader_then_writer`]). The stop flags are looked
/// at here because their one waker slot is shared by both loops (`signal::TaskToken`).
fn writer_due(peer: &Peer, conn: &Conn, read_done: bool, wake: &WriterWake) -> bool {
    // Cleared before the writer is polled: a wake during that poll counts for the next pass.
    let woken = wake.woken.swap(false, Ordering::AcqRel);
    if woken || read_done || conn.stop.is_cancelled() || conn.peer_closed.is_cancelled() {
        return true;
    }
    let shared = peer.shared();
    shared.engine().has_output() || !shared.queue.is_empty()
}

/// After both loops: end the session, or park it for the next connection.
fn finish(peer: &Peer, conn: &Conn, dispatch: Box<dyn Dispatch>, hooks: Arc<dyn Hooks>) -> Outcome {
    let shared = peer.shared();
    let (info, ends) = {
        let mut engine = shared.engine();
        engine.on_lost("connection ended");
        let info = engine.end_info().unwrap_or_else(|| peer.end_or_default());
        (info, engine.ends_with_connection())
    };
    let park = !ends && !shared.closing.load(Ordering::Acquire);
    if park {
        peer.park(dispatch, hooks.clone());
    }
    conn.done.cancel();
    // File transfers go on in a parked session; they end with the session (`end_session`).
    if !park {
        peer.end_session(&info, hooks.as_ref());
        return Outcome::Ended;
    }
    if shared.closing.load(Ordering::Acquire) {
        // Closed while handing over: whoever takes the hooks ends the session.
        peer.end_idle();
        return Outcome::Ended;
    }
    tracing::info!(code = %info.code, "connection lost; the session waits to resume");
    Outcome::Parked(info)
}

/// Reads and drops what the peer still sends after our close, until it closes or `limit`
/// passes; then the connection is dropped.
async fn linger<R: FrameRead>(mut reader: R, limit: Duration) {
    let drain = async { while let Ok(1..) = reader.discard().await {} };
    let _ = tokio::time::timeout(limit, drain).await;
}

/// Reads frames into the engine and carries out its events until the connection stops.
async fn read_loop<R: FrameRead>(
    peer: &Peer,
    conn: &Conn,
    reader: &mut R,
    dispatch: &mut dyn Dispatch,
    hooks: &dyn Hooks,
) {
    let mut events = VecDeque::new();
    loop {
        if let Some(until) = read_pause(peer) {
            if !pause(conn, until).await {
                return;
            }
        }
        let frame = tokio::select! {
            biased;
            _ = conn.stop.cancelled() => return,
            frame = reader.read_frame() => frame,
        };
        match frame {
            Ok(Some(frame)) => {
                let shared = peer.shared();
                shared.queue.set_batching(reader.buffered());
                shared.owner.meters.received(&frame);
                shared.engine().on_frame(frame, Instant::now(), &mut events)
            }
            Ok(None) => {
                return peer
                    .shared()
                    .engine()
                    .on_lost("connection lost without a close frame")
            }
            Err(error) => return read_failed(peer, hooks, error),
        }
        while let Some(event) = events.pop_front() {
            let go = match event {
                Event::Deliver(message) => {
                    let id = message.id;
                    let call = dispatch.dispatch(peer, message);
                    run_handler(peer, conn, hooks, id, call).await
                }
                Event::Request { request, message } => {
                    let id = message.id;
                    let responder = Responder::new(peer.clone(), request);
                    let call = dispatch.request(peer, message, responder);
                    run_handler(peer, conn, hooks, id, call).await
                }
                event => handle(peer, conn, hooks, event, &mut events).await,
            };
            if !go {
                return;
            }
        }
    }
}

/// Until when the reader must wait: the peer is over its rate (backpressure: its sends wait
/// on its transport). Only a peer under a rate limit costs a look at the clock.
fn read_pause(peer: &Peer) -> Option<Instant> {
    let engine = peer.shared().engine();
    if !engine.rate_limited() {
        return None;
    }
    engine.read_pause(Instant::now())
}

/// Waits until `until`; false if the connection stopped meanwhile.
async fn pause(conn: &Conn, until: Instant) -> bool {
    tokio::select! {
        biased;
        _ = conn.stop.cancelled() => false,
        _ = tokio::time::sleep_until(until.into()) => true,
    }
}

/// A frame that could not be read: a lost connection, or a fatal protocol error.
fn read_failed(peer: &Peer, hooks: &dyn Hooks, error: FrameError) {
    // A stream cut inside a frame is a lost connection, which a resumable session survives;
    // for any other session it stays a protocol error.
    let lost = matches!(error, FrameError::Truncated { .. }) && peer.is_resumable();
    let error = Error::Frame(error);
    let mut engine = peer.shared().engine();
    if error.code() == Code::ABNORMAL || lost {
        return engine.on_lost(&error.to_string());
    }
    engine.on_error(&error);
    drop(engine);
    hooks.error(peer, &error);
}

/// Carries out one engine event other than a message or a request (those run their handler,
/// [`run_handler`]); false when the reader must stop.
async fn handle(
    peer: &Peer,
    conn: &Conn,
    hooks: &dyn Hooks,
    event: Event,
    events: &mut VecDeque<Event>,
) -> bool {
    match event {
        Event::Kex(job) => {
            let done = tokio::select! {
                biased;
                _ = conn.stop.cancelled() => return false,
                done = peer.shared().owner.kex.run(job) => done,
            };
            kex_done(peer, done, events);
            true
        }
        event => side_event(peer, conn, hooks, event).await,
    }
}

/// Runs a handler to its end, unless the connection stops first (false); silence is measured
/// from its end, and a refusal is reported (and told to the peer when it caused it).
///
/// The handler is polled here, with the stop flag looked at first in every poll, rather than in
/// a `select!` of futures: this keeps what the connection's task writes per message to the
/// handler's box and a few words (the refusal's path is boxed, it is rare).
async fn run_handler(
    peer: &Peer,
    conn: &Conn,
    hooks: &dyn Hooks,
    id: u32,
    mut call: futures_util::future::BoxFuture<'_, Result<(), crate::error::ProtocolError>>,
) -> bool {
    let result = poll_fn(|cx| {
        if poll_token(&conn.stop, cx) {
            return Poll::Ready(None);
        }
        call.as_mut().poll(cx).map(Some)
    })
    .await;
    // The handler's box is freed now, not held across the refusal's wait below.
    drop(call);
    let Some(result) = result else { return false };
    peer.shared().engine().heard(Instant::now());
    match result {
        Ok(()) => true,
        Err(error) => Box::pin(refused(peer, conn, hooks, id, error)).await,
    }
}

fn kex_done(peer: &Peer, done: Option<super::engine::KexDone>, events: &mut VecDeque<Event>) {
    let shared = peer.shared();
    let mut engine = shared.engine();
    match done {
        Some(done) => engine.kex_done(done, Instant::now(), events),
        None => {
            let error = Error::Config(crate::error::ConfigError::KexUnavailable);
            engine.on_error(&error);
            events.push_back(Event::Error(error));
            events.push_back(Event::Stop);
        }
    }
    shared.publish_security(&engine);
}

/// A handler refused its message: reported, and told to the peer when it caused it.
async fn refused(
    peer: &Peer,
    conn: &Conn,
    hooks: &dyn Hooks,
    id: u32,
    error: crate::error::ProtocolError,
) -> bool {
    if error.peer_fault {
        let report = Close::new(error.code, error.message.clone()).to_frame(Kind::Error, id);
        if !respond(peer, conn, report).await {
            return false;
        }
    }
    hooks.error(peer, &Error::Protocol(error));
    true
}

/// The events that need no handler: answers, reports, files, the end.
async fn side_event(peer: &Peer, conn: &Conn, hooks: &dyn Hooks, event: Event) -> bool {
    match event {
        Event::Respond(frame) => respond(peer, conn, frame).await,
        Event::Error(error) => {
            hooks.error(peer, &error);
            true
        }
        Event::Security(event) => {
            peer.shared().publish_security(&peer.shared().engine());
            hooks.security(peer, &event);
            true
        }
        Event::File(event) => match peer.shared().owner.files.on_event(&peer.link(), event) {
            Ok(()) => true,
            Err(refusal) => {
                hooks.error(peer, &Error::File(refusal.error));
                match refusal.reply {
                    Some(reply) => respond(peer, conn, reply).await,
                    None => true,
                }
            }
        },
        Event::Stop => {
            stopped(peer, conn);
            false
        }
        Event::Deliver(_) | Event::Request { .. } | Event::Kex(_) => true,
    }
}

/// The reader stops: a peer's close is answered by the writer; anything else stops both.
fn stopped(peer: &Peer, conn: &Conn) {
    let shared = peer.shared();
    let engine = shared.engine();
    if engine.ends_with_connection() {
        shared.closing.store(true, Ordering::Release);
    }
    if engine.peer_closed() {
        conn.peer_closed.cancel();
    } else {
        conn.stop.cancel();
    }
}

/// Events a task other than the driver received from the engine (a key exchange it ran).
pub(crate) async fn side_events(peer: &Peer, mut events: VecDeque<Event>) {
    let Some(hooks) = hooks_of(peer) else { return };
    let conn = peer.conn();
    while let Some(event) = events.pop_front() {
        if !side_event(peer, &conn, hooks.as_ref(), event).await {
            return;
        }
    }
}

/// The hooks of the running (or last) connection.
fn hooks_of(peer: &Peer) -> Option<Arc<dyn Hooks>> {
    peer.shared()
        .hooks
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// Queues a frame for the peer, waiting for room (backpressure on a peer that provokes many
/// answers); false if the connection stopped first.
async fn respond(peer: &Peer, conn: &Conn, frame: Frame) -> bool {
    tokio::select! {
        biased;
        _ = conn.stop.cancelled() => false,
        queued = peer.enqueue(frame) => {
            // A closed queue: the session is ending, which the loops learn on their own.
            let _ = queued;
            true
        }
    }
}

/// What the writer waits for.
enum Next {
    /// Forced stop, or the peer's close to answer.
    Stop,
    /// The engine's timer is due.
    Timer,
    /// Something to write (`batch` may hold frames taken from the queue).
    Work,
    /// What a sender's write left unwritten (see `through`).
    Tail(Tail),
    /// The queue is closed and empty: the session is ending.
    Closed,
}

/// Writes until the connection ends; returns whether it ended with our close frame written
/// and the write direction shut, i.e. whether the peer will see a clean end from us.
async fn write_loop<W: FrameWrite>(peer: &Peer, conn: &Conn, mut writer: W, hooks: &dyn Hooks) -> bool {
    let shared = peer.shared();
    let limit = shared.config.write_batch.max(1);
    // Senders hold the only other share of the socket (none of it is kept here: the write
    // direction is shut through the writer, which must then hold the socket alone).
    let through = shared.through.install(writer.direct());
    // Both grow to the batch sizes actually seen: an idle peer keeps no 64-frame buffer.
    let (mut batch, mut out) = (Vec::new(), Vec::new());
    let mut timer = pin!(tokio::time::sleep(Duration::from_secs(3600)));
    loop {
        arm(peer, timer.as_mut());
        let next = poll_fn(|cx| poll_next(peer, conn, cx, &mut batch, limit, timer.as_mut())).await;
        match next {
            Next::Stop => return write_close(peer, &mut writer).await,
            Next::Closed => return false,
            Next::Timer => {
                on_timer(peer, conn, hooks);
                continue;
            }
            Next::Tail(tail) => {
                // Rare (a sender's write the socket did not take whole): boxed, so that it
                // does not add to the size every idle peer's task keeps.
                let mut write = Box::pin(writer.write_tail(&tail.frames, tail.written));
                if !write_out(peer, conn, hooks, write.as_mut(), timer.as_mut()).await {
                    return false;
                }
                through.idle();
                continue;
            }
            Next::Work => {}
        }
        out.clear();
        let transmitted = shared.engine().transmit(&mut batch, &mut out, Instant::now());
        let sent = match transmitted {
            Ok(sent) => sent,
            Err(error) => {
                // The stream is still at a frame boundary: the next turn tells the peer why.
                through.idle();
                fail(peer, conn, hooks, error);
                continue;
            }
        };
        own_changed(peer, hooks, &sent.own);
        if !out.is_empty() {
            if !write_out(peer, conn, hooks, pin!(writer.write_batch(&out)), timer.as_mut()).await {
                return false;
            }
            shared.owner.meters.sent(&out);
        }
        if sent.close {
            shared.queue.close();
            // Nobody writes after our close frame; the socket is ours alone to shut.
            shared.through.withdraw();
            let shut = tokio::time::timeout(shared.config.close_timeout, writer.shutdown()).await;
            // Wait for the peer's answering close (or its disconnect), bounded.
            until_the_reader_ends(conn, shared.config.close_timeout).await;
            return matches!(shut, Ok(Ok(())));
        }
        through.idle();
    }
}

/// Sets the timer to the engine's next deadline (far away when it has none).
fn arm(peer: &Peer, timer: std::pin::Pin<&mut tokio::time::Sleep>) {
    let deadline = peer.shared().engine().poll_timeout();
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let at = tokio::time::Instant::from_std(deadline.unwrap_or(far));
    if timer.deadline() != at {
        timer.reset(at);
    }
}

/// Looks for the writer's next step; registers every waker it waits on. Frames (or a tail)
/// taken make the writer busy in the same critical section (see `through`).
fn poll_next(
    peer: &Peer,
    conn: &Conn,
    cx: &mut Context<'_>,
    batch: &mut Vec<Frame>,
    limit: usize,
    timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Poll<Next> {
    let shared = peer.shared();
    if poll_token(&conn.stop, cx) || poll_token(&conn.peer_closed, cx) {
        return Poll::Ready(Next::Stop);
    }
    if timer.poll(cx).is_ready() {
        return Poll::Ready(Next::Timer);
    }
    shared.writer.register(cx.waker());
    let mut through = shared.through.lock();
    if let Some(tail) = through.tail.take() {
        through.busy = true;
        return Poll::Ready(Next::Tail(tail));
    }
    let engine = shared.engine();
    if engine.has_output() {
        through.busy = true;
        return Poll::Ready(Next::Work);
    }
    if !engine.may_take() {
        return Poll::Pending;
    }
    drop(engine);
    match shared.queue.poll_pop_many(cx, batch, limit) {
        Poll::Ready(0) => Poll::Ready(Next::Closed),
        Poll::Ready(_) => {
            through.busy = true;
            Poll::Ready(Next::Work)
        }
        Poll::Pending => Poll::Pending,
    }
}

fn poll_token(token: &super::signal::TaskToken, cx: &mut Context<'_>) -> bool {
    pin!(token.cancelled()).poll(cx).is_ready()
}

/// The engine's timer fired: it may queue a ping, expire requests, or end the connection.
fn on_timer(peer: &Peer, conn: &Conn, hooks: &dyn Hooks) {
    let mut events = VecDeque::new();
    peer.shared().engine().on_timeout(Instant::now(), &mut events);
    for event in events {
        match event {
            Event::Error(error) => hooks.error(peer, &error),
            Event::Stop => conn.stop.cancel(),
            _ => {}
        }
    }
}

/// A fatal error found while preparing a write.
fn fail(peer: &Peer, conn: &Conn, hooks: &dyn Hooks, error: Error) {
    peer.shared().engine().on_error(&error);
    peer.shared().closing.store(true, Ordering::Release);
    hooks.error(peer, &error);
    conn.stop.cancel();
}

/// A sender's write-through could not be prepared: as [`fail`], with the running connection's
/// hooks.
pub(crate) fn failed_to_transmit(peer: &Peer, error: Error) {
    if let Some(hooks) = hooks_of(peer) {
        fail(peer, &peer.conn(), hooks.as_ref(), error);
    }
}

fn own_changed(peer: &Peer, hooks: &dyn Hooks, changes: &[bool]) {
    if changes.is_empty() {
        return;
    }
    peer.shared().publish_security(&peer.shared().engine());
    for on in changes {
        hooks.security(peer, &SecurityEvent::OwnSecure(*on));
    }
}

/// Runs one write to its end; false when the connection must end (stopped mid-write, or the
/// write failed).
///
/// The write is pinned by the caller: passed by value, it would be stored twice in the
/// connection's task (as the argument, and pinned), which keeps every idle peer's task at that
/// size.
async fn write_out(
    peer: &Peer,
    conn: &Conn,
    hooks: &dyn Hooks,
    mut write: Pin<&mut (dyn Future<Output = std::io::Result<()>> + Send)>,
    mut timer: Pin<&mut tokio::time::Sleep>,
) -> bool {
    let written = loop {
        tokio::select! {
            biased;
            // Stopped mid-write: the stream may be inside a frame, so no close frame.
            _ = conn.stop.cancelled() => return false,
            written = &mut write => break written,
            // A peer that stopped reading and answering is found even mid-write.
            _ = &mut timer => {
                on_timer(peer, conn, hooks);
                arm(peer, timer.as_mut());
            }
        }
    };
    let Err(error) = written else {
        return true;
    };
    // A peer that closed and reset the connection fails our write before our reader has read
    // its close frame, which may be waiting in the socket. The reader goes on (it ends at that
    // frame, the end of the stream or the reset), bounded, so that the peer's code, not this
    // failure, is the end recorded.
    until_the_reader_ends(conn, peer.shared().config.close_timeout).await;
    peer.shared().engine().on_lost(&format!("write failed: {error}"));
    hooks.error(peer, &Error::Io(error));
    false
}

/// Waits, at most `limit`, until the read loop has read the peer's close frame or the
/// connection is stopping (the reader ended, or a forced close).
async fn until_the_reader_ends(conn: &Conn, limit: Duration) {
    let ended = async {
        tokio::select! {
            _ = conn.peer_closed.cancelled() => {}
            _ = conn.stop.cancelled() => {}
        }
    };
    let _ = tokio::time::timeout(limit, ended).await;
}

/// Writes what a sender left unwritten, what waits in the control lane and the close frame for
/// the recorded end (sealed if our direction is keyed), and shuts the write direction, bounded
/// by `close_timeout`; returns whether all of it happened.
async fn write_close<W: FrameWrite>(peer: &Peer, writer: &mut W) -> bool {
    // Senders stop writing first; the close frame goes after what they wrote.
    let tail = peer.shared().through.withdraw();
    let frames = peer.shared().engine().closing_frames(Instant::now());
    if !frames.iter().any(|frame| frame.kind == Kind::Close) {
        return false;
    }
    let finish = async {
        if let Some(tail) = tail {
            writer.write_tail(&tail.frames, tail.written).await?;
        }
        writer.write_batch(&frames).await?;
        writer.shutdown().await
    };
    matches!(
        tokio::time::timeout(peer.shared().config.close_timeout, finish).await,
        Ok(Ok(()))
    )
}
