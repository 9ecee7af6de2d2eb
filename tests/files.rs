//! File streaming over real sockets: big transfers with hash checks over TCP and WebSocket,
//! pause/resume, cancel from each side, decline, disconnects, concurrency with messages, and
//! hostile senders written by hand.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::relay::{seed, Relay};
use common::{within, Events, RawPeer};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use truflux::file::{FileConfig, FileOffer, FileStatus};
use truflux::frame::control::Close;
use truflux::frame::{Frame, Kind};
use truflux::{protocol, Client, ClientConfig, Code, ConnectionConfig, Reconnect, Server, ServerConfig};

/// A fresh directory under the system temp dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!(
            "truflux-{name}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// File names in the directory.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `len` octets of deterministic, non-repeating content; returns its SHA-256.
fn make_file(path: &Path, len: usize) -> [u8; 32] {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut block = [0u8; 64 * 1024];
    let mut written = 0usize;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    while written < len {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let n = block.len().min(len - written);
        file.write_all(&block[..n]).unwrap();
        hasher.update(&block[..n]);
        written += n;
    }
    file.flush().unwrap();
    hasher.finalize().into()
}

fn sha256_of(path: &Path) -> [u8; 32] {
    Sha256::digest(std::fs::read(path).unwrap()).into()
}

/// A server that hands every offer to the test through a channel.
async fn receiving_server(
    events: &Events,
    files: FileConfig,
) -> (Server, mpsc::UnboundedReceiver<FileOffer>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .ws("127.0.0.1:0", "/f")
        .config(ServerConfig::default().connection(ConnectionConfig::default().files(files)))
        .protocol(protocol::from_fn(|peer, message| async move {
            let _ = peer.send(message).await;
        }))
        .on_connect(events.connected())
        .on_disconnect(events.disconnected())
        .on_error(events.error())
        .on_file(move |_peer, offer| {
            let _ = tx.send(offer);
        })
        .start()
        .await
        .unwrap();
    (server, rx)
}

async fn client(server: &Server, ws: bool) -> (Client, mpsc::UnboundedReceiver<(u32, Instant)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let builder = Client::builder().protocol(protocol::from_fn(move |_peer, message: truflux::Message| {
        let _ = tx.send((message.id, Instant::now()));
        std::future::ready(())
    }));
    let client = if ws {
        builder.connect_ws(&server.ws_urls()[0]).await
    } else {
        builder.connect(server.local_addrs()[0]).await
    };
    (client.unwrap(), rx)
}

async fn next_offer(offers: &mut mpsc::UnboundedReceiver<FileOffer>) -> FileOffer {
    within("an offer", offers.recv()).await.unwrap()
}

#[tokio::test]
async fn two_hundred_megabytes_arrive_intact_over_tcp_and_websocket() {
    let panics = common::watch_panics();
    let source = Dir::new("src");
    let file = source.join("big.bin");
    let sha = make_file(&file, 200 * 1000 * 1000);
    for ws in [false, true] {
        let events = Events::default();
        let (server, mut offers) = receiving_server(&events, FileConfig::default()).await;
        let (client, _rx) = client(&server, ws).await;
        let dest = Dir::new("dst");
        let start = Instant::now();
        let sending = client.peer().send_file(&file).await.unwrap();
        let offer = next_offer(&mut offers).await;
        assert_eq!(
            (offer.name(), offer.size(), offer.is_stream()),
            ("big.bin", Some(200_000_000), false)
        );
        let receiving = offer.accept_into(&dest.0).await.unwrap();
        let (size, hash) = tokio::time::timeout(Duration::from_secs(120), receiving.finished())
            .await
            .unwrap()
            .unwrap();
        let elapsed = start.elapsed();
        assert_eq!((size, hash), (200_000_000, sha));
        assert_eq!(sending.finished().await.unwrap(), (200_000_000, sha));
        assert_eq!(
            dest.names(),
            vec!["big.bin"],
            "renamed into place, no partial left"
        );
        assert_eq!(sha256_of(&dest.join("big.bin")), sha);
        eprintln!(
            "200 MB over {}: {:.2} s, {:.0} MB/s (debug build of the tests)",
            if ws { "WebSocket" } else { "TCP" },
            elapsed.as_secs_f64(),
            200.0 / elapsed.as_secs_f64()
        );
    }
    common::assert_no_panics(panics);
}

#[tokio::test]
async fn pause_stops_the_sender_and_resume_finishes() {
    let events = Events::default();
    let (server, mut offers) =
        receiving_server(&events, FileConfig::default().window(64 * 1024).chunk(16 * 1024)).await;
    let (client, _rx) = client(&server, false).await;
    let source = Dir::new("pause-src");
    let file = source.join("f.bin");
    let sha = make_file(&file, 8 * 1024 * 1024);
    let dest = Dir::new("pause-dst");
    let mut sending = client.peer().send_file(&file).await.unwrap();
    let mut receiving = next_offer(&mut offers)
        .await
        .accept(dest.join("f.bin"))
        .await
        .unwrap();
    // Wait for some progress, then pause.
    loop {
        match within("progress", receiving.next_status()).await.unwrap() {
            FileStatus::Transferring { bytes } if bytes >= 1024 * 1024 => break,
            _ => {}
        }
    }
    receiving.pause();
    let paused_at = loop {
        if let FileStatus::Paused { bytes } = within("the sender to see the pause", sending.next_status())
            .await
            .unwrap()
        {
            break bytes;
        }
    };
    // While paused the sender is held by the window: it cannot run ahead.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let FileStatus::Paused { bytes: still } = sending.status() else {
        panic!("not paused: {:?}", sending.status())
    };
    assert!(
        still <= paused_at + 64 * 1024,
        "sent {still} after pausing at {paused_at}: more than the window"
    );
    let received = match receiving.status() {
        FileStatus::Paused { bytes } => bytes,
        other => panic!("receiver not paused: {other:?}"),
    };
    assert!(received < 8 * 1024 * 1024);
    receiving.resume();
    assert_eq!(
        within("completion", receiving.finished()).await.unwrap(),
        (8 * 1024 * 1024, sha)
    );
    assert_eq!(sha256_of(&dest.join("f.bin")), sha);
}

/// A 50 MiB transfer from a client to a server, running: both handles once the receiver has
/// written more than `progress` octets. The directories live as long as the returned value.
struct Running {
    _server: Server,
    client: Client,
    sending: truflux::file::FileSend,
    receiving: truflux::file::FileReceive,
    _source: Dir,
    dest: Dir,
}

async fn running_transfer(name: &str, progress: u64) -> Running {
    let events = Events::default();
    let (server, mut offers) = receiving_server(&events, FileConfig::default()).await;
    let (client, _rx) = client(&server, false).await;
    let source = Dir::new(&format!("{name}-src"));
    let file = source.join("f.bin");
    make_file(&file, 50 * 1024 * 1024);
    let dest = Dir::new(&format!("{name}-dst"));
    let sending = client.peer().send_file(&file).await.unwrap();
    let mut receiving = next_offer(&mut offers)
        .await
        .accept(dest.join("f.bin"))
        .await
        .unwrap();
    loop {
        if let Some(FileStatus::Transferring { bytes }) = within("progress", receiving.next_status()).await {
            if bytes > progress {
                break;
            }
        }
    }
    Running {
        _server: server,
        client,
        sending,
        receiving,
        _source: source,
        dest,
    }
}

#[tokio::test]
async fn cancel_from_either_side_leaves_no_file() {
    for cancel_by_sender in [true, false] {
        let run = running_transfer("cancel", 0).await;
        if cancel_by_sender {
            run.sending.cancel();
        } else {
            run.receiving.cancel();
        }
        let sender_end = within("sender end", run.sending.finished()).await.unwrap_err();
        let receiver_end = within("receiver end", run.receiving.finished())
            .await
            .unwrap_err();
        assert_eq!(
            (sender_end.code, receiver_end.code),
            (Code::FILE_CANCELLED, Code::FILE_CANCELLED)
        );
        assert!(
            run.dest.names().is_empty(),
            "cancel by sender={cancel_by_sender} left {:?}",
            run.dest.names()
        );
        // The connection is fine.
        run.client.peer().send_raw(1, &b"still here"[..]).await.unwrap();
        assert!(!run.client.peer().is_closed());
    }
}

#[tokio::test]
async fn a_declined_offer_is_reported_to_the_sender() {
    let events = Events::default();
    let (server, mut offers) = receiving_server(&events, FileConfig::default()).await;
    let (client, _rx) = client(&server, true).await;
    let sending = client
        .peer()
        .send_file_from(&b"some content"[..], "notes.txt", Some(12))
        .await
        .unwrap();
    next_offer(&mut offers).await.decline("not today");
    let error = within("decline", sending.finished()).await.unwrap_err();
    assert_eq!(
        (error.code, error.reason.as_str()),
        (Code::FILE_DECLINED, "not today")
    );
    // An offer nobody takes is declined too.
    let sending = client
        .peer()
        .send_file_from(&b"x"[..], "x", Some(1))
        .await
        .unwrap();
    drop(next_offer(&mut offers).await);
    assert_eq!(
        within("decline", sending.finished()).await.unwrap_err().code,
        Code::FILE_DECLINED
    );
}

#[tokio::test]
async fn a_stream_of_unknown_length_arrives_with_its_hash() {
    let events = Events::default();
    let (server, mut offers) = receiving_server(&events, FileConfig::default()).await;
    let (client, _rx) = client(&server, false).await;
    let (mut write, read) = tokio::io::duplex(1024);
    let sending = client
        .peer()
        .send_file_from(read, "stream.log", None)
        .await
        .unwrap();
    let offer = next_offer(&mut offers).await;
    assert!(offer.is_stream());
    let collected = Arc::new(Mutex::new(Vec::new()));
    let sink = Collect(collected.clone());
    let receiving = offer.accept_writer(sink).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..200u32 {
        let line = format!("line {i}\n");
        expected.extend_from_slice(line.as_bytes());
        tokio::io::AsyncWriteExt::write_all(&mut write, line.as_bytes())
            .await
            .unwrap();
    }
    drop(write);
    let (size, hash) = within("stream end", receiving.finished()).await.unwrap();
    assert_eq!(size as usize, expected.len());
    assert_eq!(hash, <[u8; 32]>::from(Sha256::digest(&expected)));
    assert_eq!(*collected.lock().unwrap(), expected);
    assert!(sending.finished().await.is_ok());
}

/// An `AsyncWrite` into shared memory.
struct Collect(Arc<Mutex<Vec<u8>>>);

impl tokio::io::AsyncWrite for Collect {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_disconnect_mid_transfer_leaves_no_complete_looking_file() {
    let run = running_transfer("cut", 1024 * 1024).await;
    run.client.peer().close_now(Code::GOING_AWAY, "cut");
    assert!(within("receiver end", run.receiving.finished()).await.is_err());
    assert!(within("sender end", run.sending.finished()).await.is_err());
    assert!(run.dest.names().is_empty(), "left {:?}", run.dest.names());
}

/// A resumable session carries its transfers across lost connections: each connection through
/// the relay dies after 30–60 MB, three times, and the transfer goes on each time from where the
/// receiver's count says, with the SHA-256 checked over the whole file at the end.
#[tokio::test]
async fn a_200_mb_transfer_cut_three_times_resumes_and_arrives_intact() {
    let panics = common::watch_panics();
    let source = Dir::new("cut-src");
    let file = source.join("big.bin");
    let sha = make_file(&file, 200 * 1000 * 1000);
    let events = Events::default();
    let (server, mut offers) = receiving_server(&events, FileConfig::default()).await;
    let relay = Relay::start(server.local_addrs()[0]).await;
    let (reconnects_tx, mut reconnects) = mpsc::unbounded_channel();
    let client = Client::builder()
        .config(
            ClientConfig::default().reconnect(Some(
                Reconnect::default()
                    .initial_delay(Duration::from_millis(5))
                    .max_delay(Duration::from_millis(50))
                    .max_attempts(None),
            )),
        )
        .on_reconnect(move |_peer: &truflux::Peer, _attempts: u32| {
            let _ = reconnects_tx.send(());
        })
        .connect(relay.addr)
        .await
        .unwrap();
    let dest = Dir::new("cut-dst");
    let sending = client.peer().send_file(&file).await.unwrap();
    let receiving = next_offer(&mut offers).await.accept_into(&dest.0).await.unwrap();
    // The next three connections die after 30–60 MB each (in both directions together).
    relay.cut_randomly(seed(0x5eed_f11e), 30_000_000..60_000_000, 3);
    relay.cut();
    let finished = tokio::time::timeout(Duration::from_secs(180), receiving.finished()).await;
    assert_eq!(finished.unwrap().unwrap(), (200_000_000, sha));
    assert_eq!(
        within("the sender's end", sending.finished()).await.unwrap(),
        (200_000_000, sha)
    );
    assert_eq!(dest.names(), vec!["big.bin"], "one file, no partial left");
    assert_eq!(sha256_of(&dest.join("big.bin")), sha);
    let mut resumed = 0;
    while reconnects.try_recv().is_ok() {
        resumed += 1;
    }
    assert_eq!(resumed, 4, "the first cut and three during the transfer");
    assert_eq!(relay.accepted(), 5);
    assert_eq!(server.num_connections(), 1, "one session throughout");
    common::assert_no_panics(panics);
}

/// An offer made while a resumable session waits for its next connection is queued like a
/// message: it goes out after the resume, and the transfer completes.
#[tokio::test]
async fn a_file_offered_while_disconnected_goes_out_after_the_resume() {
    let source = Dir::new("offline-src");
    let file = source.join("later.bin");
    let sha = make_file(&file, 3 * 1000 * 1000);
    let events = Events::default();
    let (server, mut offers) = receiving_server(&events, FileConfig::default()).await;
    let relay = Relay::start(server.local_addrs()[0]).await;
    let (down_tx, mut down) = mpsc::unbounded_channel();
    let client = Client::builder()
        .config(
            ClientConfig::default()
                .reconnect(Some(Reconnect::default().initial_delay(Duration::from_millis(5)))),
        )
        .on_disconnect(move |_info: &truflux::CloseInfo| {
            let _ = down_tx.send(());
        })
        .connect(relay.addr)
        .await
        .unwrap();
    relay.freeze();
    relay.cut();
    within("the client notices", down.recv()).await;
    assert!(!client.peer().is_connected());
    let sending = client
        .peer()
        .send_file(&file)
        .await
        .expect("queued while disconnected");
    relay.thaw();
    let dest = Dir::new("offline-dst");
    let receiving = next_offer(&mut offers).await.accept_into(&dest.0).await.unwrap();
    assert_eq!(
        within("the transfer", receiving.finished()).await.unwrap(),
        (3_000_000, sha)
    );
    assert_eq!(
        within("the sender's end", sending.finished()).await.unwrap(),
        (3_000_000, sha)
    );
}

/// A transfer waits with its session, and ends with it: past the resume window both sides
/// fail, and the receiver leaves nothing behind.
#[tokio::test]
async fn a_transfer_whose_session_expires_fails_on_both_sides_and_leaves_no_file() {
    let (offers_tx, mut offers) = mpsc::unbounded_channel();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .config(ServerConfig::default().resume_window(Duration::from_millis(100)))
        .on_file(move |_peer, offer| {
            let _ = offers_tx.send(offer);
        })
        .start()
        .await
        .unwrap();
    let relay = Relay::start(server.local_addrs()[0]).await;
    let client = Client::builder()
        .config(
            ClientConfig::default()
                .reconnect(Some(Reconnect::default().initial_delay(Duration::from_millis(5))))
                .connect_timeout(Duration::from_millis(300)),
        )
        .connect(relay.addr)
        .await
        .unwrap();
    let endless = tokio::io::repeat(7);
    let sending = client
        .peer()
        .send_file_from(endless, "endless", None)
        .await
        .unwrap();
    let dest = Dir::new("expired");
    let mut receiving = next_offer(&mut offers).await.accept_into(&dest.0).await.unwrap();
    // Content flows: then every connection is cut, and reconnections meet silence.
    while !matches!(
        receiving.next_status().await,
        Some(FileStatus::Transferring { bytes: 1.. })
    ) {}
    relay.freeze();
    relay.cut();
    let receiver = within("the receiver's end", receiving.finished())
        .await
        .unwrap_err();
    assert_eq!(receiver.code, Code::ABNORMAL, "{receiver:?}");
    // The server has forgotten the session: the client's next attempt learns it.
    relay.thaw();
    let sender = within("the sender's end", sending.finished()).await.unwrap_err();
    assert_eq!(sender.code, Code::RESUME_FAILED, "{sender:?}");
    assert!(dest.names().is_empty(), "left {:?}", dest.names());
}

#[tokio::test]
async fn two_transfers_both_ways_and_messages_interleave() {
    let events = Events::default();
    let (server, mut offers) = receiving_server(&events, FileConfig::default()).await;
    let (client_offers_tx, mut client_offers) = mpsc::unbounded_channel();
    let (echo_tx, mut echoes) = mpsc::unbounded_channel();
    let client = Client::builder()
        .protocol(protocol::from_fn(move |_peer, message: truflux::Message| {
            let _ = echo_tx.send((message.id, Instant::now()));
            std::future::ready(())
        }))
        .on_file(move |offer| {
            let _ = client_offers_tx.send(offer);
        })
        .connect(server.local_addrs()[0])
        .await
        .unwrap();
    let peer = events.connected_peer().await;
    let source = Dir::new("two-src");
    let (up, down) = (source.join("up.bin"), source.join("down.bin"));
    let (sha_up, sha_down) = (
        make_file(&up, 60 * 1024 * 1024),
        make_file(&down, 60 * 1024 * 1024),
    );
    let dest = Dir::new("two-dst");
    let send_up = client.peer().send_file(&up).await.unwrap();
    let send_down = peer.send_file(&down).await.unwrap();
    let recv_up = next_offer(&mut offers)
        .await
        .accept(dest.join("up.bin"))
        .await
        .unwrap();
    let recv_down = within("offer", client_offers.recv())
        .await
        .unwrap()
        .accept(dest.join("down.bin"))
        .await
        .unwrap();

    // Chat messages while both files stream: each is echoed; measure the round trips.
    let mut latencies = Vec::new();
    for i in 0..50u32 {
        let sent = Instant::now();
        client.peer().send_raw(i, &b"chat"[..]).await.unwrap();
        let (id, at) = within("echo during transfers", echoes.recv()).await.unwrap();
        assert_eq!(id, i, "messages stay in order");
        latencies.push(at.duration_since(sent));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    latencies.sort();
    eprintln!(
        "message round trip during two 60 MiB transfers: median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert_eq!(within("up", recv_up.finished()).await.unwrap().1, sha_up);
    assert_eq!(within("down", recv_down.finished()).await.unwrap().1, sha_down);
    assert!(send_up.finished().await.is_ok() && send_down.finished().await.is_ok());
}

// ---- hostile senders ------------------------------------------------------------------------

fn file_frame(kind: Kind, id: u32, payload: impl Into<Bytes>) -> Frame {
    Frame {
        kind,
        id,
        tag: None,
        payload: payload.into(),
    }
}

fn offer_frame(id: u32, name: &str, size: u64) -> Frame {
    let mut payload = size.to_be_bytes().to_vec();
    payload.extend_from_slice(name.as_bytes());
    file_frame(Kind::FileOffer, id, payload)
}

/// A server that accepts every offer into `dir` under its safe name.
async fn accepting_server(events: &Events, dir: PathBuf, files: FileConfig) -> Server {
    Server::builder()
        .tcp("127.0.0.1:0")
        .config(ServerConfig::default().connection(ConnectionConfig::default().files(files)))
        .protocol(protocol::from_fn(|peer, message| async move {
            let _ = peer.send(message).await;
        }))
        .on_error(events.error())
        .on_file(move |_peer, offer| {
            let dir = dir.clone();
            tokio::spawn(async move {
                let _ = offer.accept_into(dir).await;
            });
        })
        .start()
        .await
        .unwrap()
}

/// Reads frames until one of `kind` for `id`.
async fn expect(peer: &mut RawPeer, kind: Kind, id: u32) -> Frame {
    loop {
        let frame = peer.read_frame().await.expect("a frame");
        if frame.kind == kind && frame.id == id {
            return frame;
        }
    }
}

/// The connection still works: a message is echoed.
async fn assert_alive(peer: &mut RawPeer) {
    peer.write_frame(&Frame::message(77, Bytes::from_static(b"alive?")))
        .await;
    let echo = expect(peer, Kind::Message, 77).await;
    assert_eq!(echo.payload, Bytes::from_static(b"alive?"));
}

#[tokio::test]
async fn hostile_file_frames_give_typed_errors_and_the_connection_survives() {
    let panics = common::watch_panics();
    let events = Events::default();
    let dir = Dir::new("hostile");
    let server = accepting_server(&events, dir.0.clone(), FileConfig::default().max_incoming(2)).await;
    let mut peer = RawPeer::open(server.local_addrs()[0]).await;

    // A chunk for a transfer that does not exist.
    peer.write_frame(&file_frame(Kind::FileChunk, 4242, &b"data"[..]))
        .await;
    let report = expect(&mut peer, Kind::Error, 4242).await;
    assert_eq!(
        Close::parse(Kind::Error, &report.payload).unwrap().code,
        Code::UNKNOWN_TRANSFER
    );
    assert_eq!(events.error_event().await.1, Code::UNKNOWN_TRANSFER);
    assert_alive(&mut peer).await;

    // A path in the name: stored under its plain file name inside the chosen folder.
    peer.write_frame(&offer_frame(1, "../../etc/passwd", 4)).await;
    expect(&mut peer, Kind::FileAccept, 1).await;
    peer.write_frame(&file_frame(Kind::FileChunk, 1, &b"root"[..]))
        .await;
    let sha: [u8; 32] = Sha256::digest(b"root").into();
    let mut end = 4u64.to_be_bytes().to_vec();
    end.extend_from_slice(&sha);
    peer.write_frame(&file_frame(Kind::FileEnd, 1, end)).await;
    expect(&mut peer, Kind::FileDone, 1).await;
    assert_eq!(dir.names(), vec!["passwd"]);
    assert_eq!(std::fs::read(dir.join("passwd")).unwrap(), b"root");
    // An absolute name, likewise.
    peer.write_frame(&offer_frame(2, "/etc/shadow", 0)).await;
    expect(&mut peer, Kind::FileAccept, 2).await;
    let mut end = 0u64.to_be_bytes().to_vec();
    end.extend_from_slice(&<[u8; 32]>::from(Sha256::digest(b"")));
    peer.write_frame(&file_frame(Kind::FileEnd, 2, end)).await;
    expect(&mut peer, Kind::FileDone, 2).await;
    assert_eq!(dir.names(), vec!["passwd", "shadow"]);

    // More content than announced: refused, nothing stored, the partial file removed.
    peer.write_frame(&offer_frame(3, "short.txt", 3)).await;
    expect(&mut peer, Kind::FileAccept, 3).await;
    peer.write_frame(&file_frame(Kind::FileChunk, 3, &b"too long"[..]))
        .await;
    let refusal = expect(&mut peer, Kind::FileRefuse, 3).await;
    assert_eq!(
        Close::parse(Kind::FileRefuse, &refusal.payload).unwrap().code,
        Code::FILE_INTEGRITY
    );
    // A chunk after the transfer ended: a typed error, nothing else.
    peer.write_frame(&file_frame(Kind::FileChunk, 3, &b"late"[..]))
        .await;
    let late = events.until(|e| match e {
        common::Event::Error(_, text, Code::UNKNOWN_TRANSFER) if text.contains("late") => Some(text),
        _ => None,
    });
    within("the late chunk error", late).await;
    assert_alive(&mut peer).await;
    assert_eq!(dir.names(), vec!["passwd", "shadow"], "no trace of short.txt");

    // A wrong hash at the end: refused, nothing stored.
    peer.write_frame(&offer_frame(4, "bad.txt", 4)).await;
    expect(&mut peer, Kind::FileAccept, 4).await;
    peer.write_frame(&file_frame(Kind::FileChunk, 4, &b"abcd"[..]))
        .await;
    let mut end = 4u64.to_be_bytes().to_vec();
    end.extend_from_slice(&[0u8; 32]);
    peer.write_frame(&file_frame(Kind::FileEnd, 4, end)).await;
    let refusal = expect(&mut peer, Kind::FileRefuse, 4).await;
    assert_eq!(
        Close::parse(Kind::FileRefuse, &refusal.payload).unwrap().code,
        Code::FILE_INTEGRITY
    );

    // More than the credit: a flow violation for that transfer only.
    peer.write_frame(&offer_frame(5, "flood.bin", 10 * 1024 * 1024))
        .await;
    let accept = expect(&mut peer, Kind::FileAccept, 5).await;
    let window = u32::from_be_bytes(accept.payload[..].try_into().unwrap()) as usize;
    peer.write_frame(&file_frame(Kind::FileChunk, 5, vec![0u8; window + 1]))
        .await;
    let refusal = expect(&mut peer, Kind::FileRefuse, 5).await;
    assert_eq!(
        Close::parse(Kind::FileRefuse, &refusal.payload).unwrap().code,
        Code::FILE_FLOW_VIOLATION
    );
    assert_alive(&mut peer).await;

    // More concurrent offers than the limit (2): the third is refused.
    for id in [10, 11] {
        peer.write_frame(&offer_frame(id, "slow.bin", 1000)).await;
        expect(&mut peer, Kind::FileAccept, id).await;
    }
    peer.write_frame(&offer_frame(12, "one-too-many.bin", 1000)).await;
    let refusal = expect(&mut peer, Kind::FileRefuse, 12).await;
    assert_eq!(
        Close::parse(Kind::FileRefuse, &refusal.payload).unwrap().code,
        Code::TOO_MANY_TRANSFERS
    );
    assert_alive(&mut peer).await;
    assert_eq!(server.num_connections(), 1);
    drop(peer);
    common::assert_no_panics(panics);
}

#[tokio::test]
async fn the_senders_progress_is_what_the_receiver_wrote_and_comes_as_a_stream() {
    use futures_util::StreamExt;
    const LEN: usize = 1 << 20;
    const PIPE: usize = 1024;
    let events = Events::default();
    let (server, mut offers) = receiving_server(&events, FileConfig::default()).await;
    let (client, _rx) = client(&server, false).await;
    let content: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
    let sending = client
        .peer()
        .send_file_from(
            std::io::Cursor::new(content.clone()),
            "gated.bin",
            Some(LEN as u64),
        )
        .await
        .unwrap();
    let mut updates = sending.updates();
    // The receiver writes into a small pipe that this test drains slowly, so the sender runs a
    // whole window ahead of what was written.
    let (pipe_in, mut pipe_out) = tokio::io::duplex(PIPE);
    let receiving = next_offer(&mut offers)
        .await
        .accept_writer(pipe_in)
        .await
        .unwrap();
    let mut read = 0usize;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    while read < LEN {
        let n = within("the pipe", tokio::io::AsyncReadExt::read(&mut pipe_out, &mut buf))
            .await
            .unwrap();
        assert_eq!(&buf[..n], &content[read..read + n]);
        read += n;
        if let FileStatus::Transferring { bytes } = sending.status() {
            assert!(bytes as usize <= read + PIPE, "{bytes} shown, {read} written");
        }
        while let Some(Some(status)) = futures_util::FutureExt::now_or_never(updates.next()) {
            seen.push(status);
        }
    }
    within("the receiver", receiving.finished()).await.unwrap();
    while let Some(status) = within("the updates", updates.next()).await {
        seen.push(status);
    }
    assert!(
        matches!(seen.last(), Some(FileStatus::Finished { size, .. }) if *size == LEN as u64),
        "the stream ends with the final status: {:?}",
        seen.last()
    );
    assert!(seen.len() > 2, "progress in between: {}", seen.len());
}
