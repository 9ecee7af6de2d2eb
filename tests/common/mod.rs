//! Helpers shared by the integration tests: raw peers written by hand, event collectors and a
//! panic detector (a panic inside a spawned connection task would not fail a test by itself).
#![allow(dead_code)]

pub mod relay;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use truflux::frame::control::{Close, Hello};
use truflux::frame::{Frame, FrameCodec, Kind};
use truflux::{CloseInfo, Error, Peer, Server, ServerBuilder};

static PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

/// Counts every panic in the process from now on (tests run on several threads: counting is
/// global, so a test asserts "no new panic" by comparing counts).
pub fn watch_panics() -> usize {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
    PANICS.load(Ordering::SeqCst)
}

/// Asserts that no panic happened anywhere since `watch_panics` returned `before`.
pub fn assert_no_panics(before: usize) {
    assert_eq!(PANICS.load(Ordering::SeqCst), before, "a task panicked");
}

/// Upper bound for any wait in a test: a hung test fails instead of hanging CI.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// What a server reported, in order.
#[derive(Debug)]
pub enum Event {
    Connected(Peer),
    Disconnected(Peer, CloseInfo),
    Error(Option<Peer>, String, truflux::Code),
}

/// Collects server or client events into a channel.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<Event>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>>,
}

impl Default for Events {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Events {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }
}

impl Events {
    pub fn connected(&self) -> impl Fn(Peer) -> std::future::Ready<()> + Send + Sync + 'static {
        let tx = self.tx.clone();
        move |peer| {
            let _ = tx.send(Event::Connected(peer));
            std::future::ready(())
        }
    }

    pub fn disconnected(&self) -> impl Fn(&Peer, &CloseInfo) + Send + Sync + 'static {
        let tx = self.tx.clone();
        move |peer, info| {
            let _ = tx.send(Event::Disconnected(peer.clone(), info.clone()));
        }
    }

    pub fn error(&self) -> impl Fn(Option<&Peer>, &Error) + Send + Sync + 'static {
        let tx = self.tx.clone();
        move |peer, error| {
            let _ = tx.send(Event::Error(peer.cloned(), error.to_string(), error.code()));
        }
    }

    pub async fn next(&self) -> Event {
        within("an event", async {
            self.rx.lock().await.recv().await.expect("event channel open")
        })
        .await
    }

    /// Skips events until one matches.
    pub async fn until<T>(&self, mut pick: impl FnMut(Event) -> Option<T>) -> T {
        loop {
            if let Some(found) = pick(self.next().await) {
                return found;
            }
        }
    }

    /// The next peer that connected.
    pub async fn connected_peer(&self) -> Peer {
        self.until(|event| match event {
            Event::Connected(peer) => Some(peer),
            _ => None,
        })
        .await
    }

    pub async fn disconnect(&self) -> (Peer, CloseInfo) {
        self.until(|event| match event {
            Event::Disconnected(peer, info) => Some((peer, info)),
            _ => None,
        })
        .await
    }

    pub async fn error_event(&self) -> (String, truflux::Code) {
        self.until(|event| match event {
            Event::Error(_, text, code) => Some((text, code)),
            _ => None,
        })
        .await
    }
}

/// A hand-written peer speaking raw bytes.
pub struct RawPeer {
    pub stream: TcpStream,
    buf: bytes::BytesMut,
    codec: FrameCodec,
}

impl RawPeer {
    pub async fn connect(addr: SocketAddr) -> RawPeer {
        let stream = TcpStream::connect(addr).await.expect("connect");
        RawPeer::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> RawPeer {
        stream.set_nodelay(true).expect("nodelay");
        RawPeer {
            stream,
            buf: bytes::BytesMut::new(),
            codec: FrameCodec::new(u32::MAX),
        }
    }

    /// Connects and completes the hello exchange.
    pub async fn open(addr: SocketAddr) -> RawPeer {
        let mut peer = RawPeer::connect(addr).await;
        peer.write_frame(&Hello::current().to_frame()).await;
        let hello = peer.read_frame().await.expect("server hello");
        assert_eq!(hello.kind, Kind::Hello);
        peer
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn write_frame(&mut self, frame: &Frame) {
        let mut out = bytes::BytesMut::new();
        tokio_util::codec::Encoder::encode(&mut self.codec, frame, &mut out).expect("encode");
        self.write(&out).await;
    }

    /// The next frame, or `None` at end of stream.
    pub async fn read_frame(&mut self) -> Option<Frame> {
        within("a frame", async {
            loop {
                if let Some(frame) =
                    tokio_util::codec::Decoder::decode(&mut self.codec, &mut self.buf).expect("valid frame")
                {
                    return Some(frame);
                }
                let read = self.stream.read_buf(&mut self.buf).await.unwrap_or(0);
                if read == 0 {
                    return None;
                }
            }
        })
        .await
    }

    /// Reads until a close frame and returns it; then expects end of stream.
    pub async fn expect_close(&mut self) -> Close {
        loop {
            match self.read_frame().await {
                Some(frame) if frame.kind == Kind::Close => {
                    let close = Close::parse(Kind::Close, &frame.payload).expect("close payload");
                    assert!(
                        self.read_frame().await.is_none(),
                        "stream ends after the close frame"
                    );
                    return close;
                }
                Some(_) => continue,
                None => panic!("stream ended without a close frame"),
            }
        }
    }
}

/// A message frame's header bytes, written by hand.
pub fn header(kind: u8, id: u32, len: u32) -> Vec<u8> {
    let mut bytes = vec![kind];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes
}

pub fn shared<T>(value: T) -> Arc<Mutex<T>> {
    Arc::new(Mutex::new(value))
}

/// Reads frames from a borrowed read half.
pub struct FrameStream<'a> {
    read: &'a mut tokio::net::tcp::OwnedReadHalf,
    buf: bytes::BytesMut,
    codec: FrameCodec,
}

impl RawPeer {
    pub fn from_stream_read(read: &mut tokio::net::tcp::OwnedReadHalf) -> FrameStream<'_> {
        FrameStream {
            read,
            buf: bytes::BytesMut::new(),
            codec: FrameCodec::new(u32::MAX),
        }
    }
}

impl FrameStream<'_> {
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) =
                tokio_util::codec::Decoder::decode(&mut self.codec, &mut self.buf).expect("valid frame")
            {
                return Some(frame);
            }
            if self.read.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    }
}

/// A handler's hold on its runtime's only thread, so that a connection's task cannot run: the
/// handler calls [`Holder::block`], which blocks the thread until [`Hold::release`] (or
/// `PATIENCE`); the test learns when the thread is held and whether the handler returned.
pub struct Hold {
    entered: mpsc::UnboundedReceiver<()>,
    release: std::sync::mpsc::Sender<()>,
    returned: Arc<std::sync::atomic::AtomicBool>,
}

/// The handler's side of a [`Hold`].
pub struct Holder {
    entered: mpsc::UnboundedSender<()>,
    held: Mutex<std::sync::mpsc::Receiver<()>>,
    returned: Arc<std::sync::atomic::AtomicBool>,
}

pub fn hold() -> (Hold, Holder) {
    let (release, held) = std::sync::mpsc::channel();
    let (entered_tx, entered) = mpsc::unbounded_channel();
    let returned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder = Holder {
        entered: entered_tx,
        held: Mutex::new(held),
        returned: returned.clone(),
    };
    (
        Hold {
            entered,
            release,
            returned,
        },
        holder,
    )
}

impl Holder {
    /// Blocks this thread until released (at most `PATIENCE`).
    pub fn block(&self) {
        let _ = self.entered.send(());
        let _ = self.held.lock().unwrap().recv_timeout(PATIENCE);
        self.returned.store(true, Ordering::SeqCst);
    }
}

impl Hold {
    /// Waits until the handler holds its thread.
    pub async fn held(&mut self) {
        within("the handler to block", self.entered.recv()).await.unwrap();
    }

    pub fn release(&self) {
        let _ = self.release.send(());
    }

    /// Whether the handler returned (released, or out of patience).
    pub fn returned(&self) -> bool {
        self.returned.load(Ordering::SeqCst)
    }
}

/// Runs `task` on a current-thread runtime on a thread of its own, until it ends; it gets the
/// receiving end of the stop signal returned beside the thread.
pub fn on_own_thread<F, Fut>(task: F) -> (std::thread::JoinHandle<()>, tokio::sync::oneshot::Sender<()>)
where
    F: FnOnce(tokio::sync::oneshot::Receiver<()>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(task(stop_rx));
    });
    (thread, stop)
}

/// Starts the server `builder` makes on a thread of its own (see [`on_own_thread`]); returns it
/// beside the thread and its stop signal.
pub async fn server_on_own_thread<F>(
    builder: F,
) -> (
    Server,
    std::thread::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
)
where
    F: FnOnce() -> ServerBuilder + Send + 'static,
{
    let (server_tx, server_rx) = tokio::sync::oneshot::channel();
    let (thread, stop) = on_own_thread(move |stop| async move {
        let server = builder().start().await.expect("server starts");
        let _ = server_tx.send(server.clone());
        let _ = stop.await;
    });
    let server = within("the server", server_rx).await.unwrap();
    (server, thread, stop)
}
