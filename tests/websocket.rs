//! WebSocket peers: beside TCP peers on one server, through `http_bind` in a hyper server, and
//! hostile ones written by hand.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::{within, Events};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use truflux::frame::control::Hello;
use truflux::frame::{Frame, FrameCodec, Kind};
use truflux::http::{ConnectionAddrs, HttpBind, NotFound};
use truflux::{protocol, Client, Code, ConnectionConfig, Error, Message, Server, ServerConfig};

/// Relays every message to every other peer.
async fn relay_server(events: &Events, config: ServerConfig) -> Server {
    Server::builder()
        .tcp("127.0.0.1:0")
        .ws("127.0.0.1:0", "/truflux")
        .config(config)
        .protocol(protocol::from_fn(|peer, message| async move {
            if let Some(server) = peer.server() {
                let _ = server.broadcast(message, &[peer.id()]);
            }
        }))
        .on_connect(events.connected())
        .on_disconnect(events.disconnected())
        .on_error(events.error())
        .start()
        .await
        .unwrap()
}

fn collector() -> (impl truflux::Protocol, mpsc::UnboundedReceiver<Message>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let protocol = protocol::from_fn(move |_peer, message| {
        let _ = tx.send(message);
        std::future::ready(())
    });
    (protocol, rx)
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
    within("a message", rx.recv()).await.expect("open")
}

#[tokio::test]
async fn tcp_and_websocket_peers_share_one_server() {
    let panics = common::watch_panics();
    let events = Events::default();
    let server = relay_server(&events, ServerConfig::default()).await;
    let (tcp_protocol, mut tcp_rx) = collector();
    let (ws_protocol, mut ws_rx) = collector();
    let tcp = Client::connect(server.local_addrs()[0], tcp_protocol)
        .await
        .unwrap();
    let ws = Client::builder()
        .protocol(ws_protocol)
        .connect_ws(&server.ws_urls()[0])
        .await
        .unwrap();
    assert!(ws.peer().is_websocket());
    assert_eq!(server.num_connections(), 2);
    assert_eq!(server.peers().iter().filter(|p| p.is_websocket()).count(), 1);
    let ws_side = server.peers().into_iter().find(|p| p.is_websocket()).unwrap();
    assert_eq!(
        ws_side.info().remote,
        ws.peer().info().local,
        "real addresses for standalone WS peers"
    );

    ws.peer().send_raw(1, &b"from ws"[..]).await.unwrap();
    assert_eq!(recv(&mut tcp_rx).await.payload, &b"from ws"[..]);
    tcp.peer().send_raw(2, &b"from tcp"[..]).await.unwrap();
    assert_eq!(recv(&mut ws_rx).await.payload, &b"from tcp"[..]);

    // A broadcast from the server reaches both, payload shared.
    let report = server
        .broadcast_raw(3, Bytes::from(vec![5u8; 100_000]), &[])
        .unwrap();
    assert_eq!(report.queued, 2);
    assert_eq!(recv(&mut tcp_rx).await.payload.len(), 100_000);
    assert_eq!(recv(&mut ws_rx).await.payload.len(), 100_000);

    // The close code and reason travel in the WebSocket close frame.
    ws_side.close(Code::POLICY_VIOLATION, "ws kicked").await;
    let info = within("ws close", ws.peer().closed()).await;
    assert_eq!(
        (info.code, info.reason.as_str()),
        (Code::POLICY_VIOLATION, "ws kicked")
    );
    let info = ws.peer().close(Code::NORMAL, "again").await;
    assert_eq!(
        info.code,
        Code::POLICY_VIOLATION,
        "closing a closed peer just reports"
    );
    common::assert_no_panics(panics);
}

#[tokio::test]
async fn websocket_client_closes_gracefully_with_its_code() {
    let events = Events::default();
    let server = relay_server(&events, ServerConfig::default()).await;
    let ws = Client::connect_ws_default(&server).await;
    ws.peer().close(Code::NORMAL, "done").await;
    let (_, info) = events.disconnect().await;
    assert_eq!((info.code, info.reason.as_str()), (Code::NORMAL, "done"));
    assert_eq!(server.num_connections(), 0);
}

trait ConnectDefault {
    async fn connect_ws_default(server: &Server) -> Client;
}

impl ConnectDefault for Client {
    async fn connect_ws_default(server: &Server) -> Client {
        Client::builder().connect_ws(&server.ws_urls()[0]).await.unwrap()
    }
}

// ---- http_bind ------------------------------------------------------------------------------

/// A hyper server of the application's own, with `/hello` and the truflux server at `/truflux`.
async fn hyper_app(server: &Server) -> SocketAddr {
    hyper_app_over(server, |stream| stream).await
}

/// A stream of the application's own type (as a TLS stream would be): hyper cannot hand the
/// `TcpStream` back after an upgrade.
struct Wrapped(TcpStream);

impl tokio::io::AsyncRead for Wrapped {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Wrapped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// [`hyper_app`] with each accepted stream passed through `wrap` before hyper serves it.
async fn hyper_app_over<S>(server: &Server, wrap: fn(TcpStream) -> S) -> SocketAddr
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let hello = truflux::http::service_fn(|_request: http::Request<hyper::body::Incoming>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
            Bytes::from_static(b"hello from the app"),
        )))
    });
    let bind = HttpBind::new(hello).mount("/truflux", server).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, remote) = listener.accept().await.unwrap();
            let bind = bind.clone();
            let local = stream.local_addr().unwrap();
            let service =
                hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectionAddrs { local, remote });
                    hyper::service::Service::call(&bind, request)
                });
            let stream = wrap(stream);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Sends a raw HTTP/1.1 request and returns the whole response text (the server closes).
async fn http_get(addr: SocketAddr, path: &str, extra_headers: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra_headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within("an HTTP response", stream.read_to_end(&mut response))
        .await
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn http_bind_serves_truflux_beside_the_apps_own_routes() {
    let server = Server::builder()
        .protocol(protocol::from_fn(|peer, message| async move {
            let _ = peer.send(message).await;
        }))
        .start()
        .await
        .unwrap();
    let addr = hyper_app(&server).await;

    let response = http_get(addr, "/hello", "").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hello from the app"), "{response}");

    let (protocol, mut rx) = collector();
    let client = Client::builder()
        .protocol(protocol)
        .connect_ws(&format!("ws://{addr}/truflux"))
        .await
        .unwrap();
    client.peer().send_raw(9, &b"through hyper"[..]).await.unwrap();
    assert_eq!(recv(&mut rx).await.payload, &b"through hyper"[..]);
    let peer = server.peers().pop().unwrap();
    assert!(peer.is_websocket());
    assert_eq!(
        peer.info().remote,
        client.peer().info().local,
        "addresses from the ConnectionAddrs extension"
    );

    // The app's routes still work while a truflux peer is connected.
    assert!(http_get(addr, "/hello", "").await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn websocket_peers_work_over_an_http_stream_that_is_not_a_plain_tcp_stream() {
    let server = Server::builder()
        .protocol(protocol::from_fn(|peer, message| async move {
            let _ = peer.send(message).await;
        }))
        .config(ServerConfig::default().connection(ConnectionConfig::default().max_payload(1 << 20)))
        .start()
        .await
        .unwrap();
    let addr = hyper_app_over(&server, Wrapped).await;
    let (protocol, mut rx) = collector();
    let client = Client::builder()
        .protocol(protocol)
        .config(truflux::ClientConfig::default().connection(ConnectionConfig::default().max_payload(1 << 20)))
        .connect_ws(&format!("ws://{addr}/truflux"))
        .await
        .unwrap();
    // Small frames are copied into one write, large ones go by reference: both ways echo.
    let large = Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    for payload in [Bytes::from_static(b"small"), large] {
        client.peer().send_raw(9, payload.clone()).await.unwrap();
        assert_eq!(recv(&mut rx).await.payload, payload);
    }
    assert_eq!(client.peer().close(Code::NORMAL, "done").await.code, Code::NORMAL);
}

#[tokio::test]
async fn a_plain_request_to_the_truflux_path_gets_426() {
    let server = Server::builder().start().await.unwrap();
    let addr = hyper_app(&server).await;
    let response = http_get(addr, "/truflux", "").await;
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("upgrade: websocket"),
        "{response}"
    );
    let wrong_version = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n";
    let response = http_get(addr, "/truflux", wrong_version).await;
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{response}"
    );
    let no_key = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
    assert!(http_get(addr, "/truflux", no_key)
        .await
        .starts_with("HTTP/1.1 400"));
    // The standalone listener answers other paths with 404.
    let events = Events::default();
    let standalone = relay_server(&events, ServerConfig::default()).await;
    let ws_addr: SocketAddr = standalone.ws_urls()[0]
        .trim_start_matches("ws://")
        .trim_end_matches("/truflux")
        .parse()
        .unwrap();
    assert!(http_get(ws_addr, "/elsewhere", "")
        .await
        .starts_with("HTTP/1.1 404"));
    assert!(http_get(ws_addr, "/truflux", "")
        .await
        .starts_with("HTTP/1.1 426"));
}

#[tokio::test]
async fn binding_a_second_server_to_the_same_path_fails() {
    let first = Server::builder().start().await.unwrap();
    let second = Server::builder().start().await.unwrap();
    let bind = HttpBind::new(NotFound).mount("/truflux", &first).unwrap();
    let error = bind
        .clone()
        .mount("/truflux", &second)
        .err()
        .expect("a clear error");
    assert!(
        matches!(&error, Error::Config(truflux::ConfigError::PathTaken(path)) if path == "/truflux"),
        "{error}"
    );
    assert!(bind.mount("/other", &second).is_ok(), "another path is fine");
    assert!(HttpBind::new(NotFound).mount("no-slash", &first).is_err());
}

// ---- hostile WebSocket peers ------------------------------------------------------------------

type RawWs = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A raw WebSocket client that has completed the truflux hello.
async fn raw_ws(url: &str) -> RawWs {
    let addr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    ws.send(WsMessage::Binary(frame_bytes(&Hello::current().to_frame())))
        .await
        .unwrap();
    match within("server hello", ws.next()).await {
        Some(Ok(WsMessage::Binary(bytes))) => assert_eq!(bytes[0], Kind::Hello as u8),
        other => panic!("expected the server hello, got {other:?}"),
    }
    ws
}

fn frame_bytes(frame: &Frame) -> Bytes {
    let mut out = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(&mut FrameCodec::new(u32::MAX), frame, &mut out).unwrap();
    out.freeze()
}

/// Reads until the WebSocket close frame and returns its code and reason.
async fn expect_ws_close(ws: &mut RawWs) -> (u16, String) {
    within("a close frame", async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(WsMessage::Close(None))) => panic!("close without a code"),
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("stream failed before the close frame: {error}"),
                None => panic!("stream ended without a close frame"),
            }
        }
    })
    .await
}

struct Bystander {
    client: Client,
    rx: mpsc::UnboundedReceiver<Message>,
    panics: usize,
}

impl Bystander {
    async fn join(server: &Server) -> Bystander {
        let panics = common::watch_panics();
        let (protocol, rx) = collector();
        let client = Client::connect(server.local_addrs()[0], protocol).await.unwrap();
        Bystander { client, rx, panics }
    }

    /// The server still relays between its remaining peers, and nothing panicked.
    async fn assert_healthy(&mut self, server: &Server) {
        let other = Client::builder().connect_ws(&server.ws_urls()[0]).await.unwrap();
        other.peer().send_raw(77, &b"ping"[..]).await.unwrap();
        assert_eq!(recv(&mut self.rx).await.payload, &b"ping"[..]);
        assert!(!self.client.peer().is_closed());
        common::assert_no_panics(self.panics);
    }
}

/// A relay server with default settings and a bystander on it, for a hostile peer to try.
async fn relay_with_bystander() -> (Events, Server, Bystander) {
    let events = Events::default();
    let server = relay_server(&events, ServerConfig::default()).await;
    let bystander = Bystander::join(&server).await;
    (events, server, bystander)
}

#[tokio::test]
async fn an_oversized_websocket_message_closes_with_message_too_big() {
    let events = Events::default();
    let config = ServerConfig::default().connection(ConnectionConfig::default().max_payload(1024));
    let server = relay_server(&events, config).await;
    let mut bystander = Bystander::join(&server).await;
    let mut ws = raw_ws(&server.ws_urls()[0]).await;
    let _ = ws
        .send(WsMessage::Binary(Bytes::from(vec![0x10u8; 1024 + 22])))
        .await;
    assert_eq!(expect_ws_close(&mut ws).await.0, Code::MESSAGE_TOO_BIG.0);
    assert_eq!(events.error_event().await.1, Code::MESSAGE_TOO_BIG);
    bystander.assert_healthy(&server).await;
}

#[tokio::test]
async fn a_text_message_closes_with_unsupported_data() {
    let (_events, server, mut bystander) = relay_with_bystander().await;
    let mut ws = raw_ws(&server.ws_urls()[0]).await;
    ws.send(WsMessage::text("hello?")).await.unwrap();
    let (code, reason) = expect_ws_close(&mut ws).await;
    assert_eq!(code, Code::UNSUPPORTED_DATA.0);
    assert!(reason.contains("text"), "{reason}");
    bystander.assert_healthy(&server).await;
}

#[tokio::test]
async fn a_frame_whose_length_disagrees_with_its_message_is_a_protocol_error() {
    let (_events, server, mut bystander) = relay_with_bystander().await;
    let mut ws = raw_ws(&server.ws_urls()[0]).await;
    let mut bytes = frame_bytes(&Frame::message(1, Bytes::from_static(b"four"))).to_vec();
    bytes.push(0); // one octet more than announced
    ws.send(WsMessage::Binary(Bytes::from(bytes))).await.unwrap();
    assert_eq!(expect_ws_close(&mut ws).await.0, Code::PROTOCOL_ERROR.0);
    bystander.assert_healthy(&server).await;
}

#[tokio::test]
async fn websocket_pings_are_answered() {
    let events = Events::default();
    let server = relay_server(&events, ServerConfig::default()).await;
    let mut ws = raw_ws(&server.ws_urls()[0]).await;
    ws.send(WsMessage::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    let pong = within("a pong", async {
        loop {
            if let Some(Ok(WsMessage::Pong(payload))) = ws.next().await {
                return payload;
            }
        }
    })
    .await;
    assert_eq!(pong, Bytes::from_static(b"are you there"));
}

#[tokio::test]
async fn abrupt_disconnect_mid_message_on_websocket() {
    let (events, server, mut bystander) = relay_with_bystander().await;
    // Upgrade by hand, exchange hellos, then send half a WebSocket frame and vanish: as on
    // TCP, a stream cut inside a frame is a protocol error.
    let mut ws = HandWs::open(&server).await;
    let half = [0x82, 0xFE, 0x10, 0x00, 0, 0, 0, 0, 1, 2, 3]; // 4096 announced, 3 sent
    ws.stream.write_all(&half).await.unwrap();
    drop(ws);
    let (peer, info) = events.disconnect().await;
    assert!(peer.is_websocket());
    assert_eq!(info.code, Code::PROTOCOL_ERROR, "{info}");
    bystander.assert_healthy(&server).await;
}

#[tokio::test]
async fn abrupt_disconnect_mid_message_on_tcp_beside_websocket_peers() {
    let (events, server, mut bystander) = relay_with_bystander().await;
    let mut raw = common::RawPeer::open(server.local_addrs()[0]).await;
    raw.write(&common::header(0x10, 1, 5000)).await;
    raw.write(&[1, 2, 3]).await;
    drop(raw);
    let (_, info) = events.disconnect().await;
    assert_eq!(info.code, Code::PROTOCOL_ERROR);
    bystander.assert_healthy(&server).await;
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_router_serves_truflux_beside_its_routes() {
    let events = Events::default();
    let server = Server::builder()
        .protocol(protocol::from_fn(|peer, message| async move {
            let _ = peer.send(message).await;
        }))
        .on_connect(events.connected())
        .start()
        .await
        .unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "axum here" }))
        .merge(truflux::http::axum::route("/truflux", &server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    let response = http_get(addr, "/", "").await;
    assert!(
        response.starts_with("HTTP/1.1 200") && response.ends_with("axum here"),
        "{response}"
    );
    assert!(http_get(addr, "/truflux", "").await.starts_with("HTTP/1.1 426"));

    let (protocol, mut rx) = collector();
    let client = Client::builder()
        .protocol(protocol)
        .connect_ws(&format!("ws://{addr}/truflux"))
        .await
        .unwrap();
    client.peer().send_raw(4, &b"via axum"[..]).await.unwrap();
    assert_eq!(recv(&mut rx).await.payload, &b"via axum"[..]);
    let peer = events.connected_peer().await;
    assert_eq!(
        peer.info().remote,
        client.peer().info().local,
        "remote address from axum's ConnectInfo"
    );
}

// ---- hostile framing, written octet by octet ---------------------------------------------------

/// A client frame masked with `key`, built by hand.
fn masked(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut out = vec![first, 0x80 | payload.len() as u8];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// A connection upgraded by hand that has sent the hello and read the server's.
struct HandWs {
    stream: TcpStream,
    buf: bytes::BytesMut,
    decoder: truflux::ws::codec::Decoder,
}

impl HandWs {
    async fn open(server: &Server) -> HandWs {
        let addr = server.ws_urls()[0]
            .trim_start_matches("ws://")
            .trim_end_matches("/truflux")
            .to_owned();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let upgrade = "GET /truflux HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        stream.write_all(upgrade.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        while !response.ends_with(b"\r\n\r\n") {
            response.push(stream.read_u8().await.unwrap());
        }
        assert!(response.starts_with(b"HTTP/1.1 101"));
        let hello = frame_bytes(&Hello::current().to_frame());
        stream
            .write_all(&masked(0x82, &hello, [1, 2, 3, 4]))
            .await
            .unwrap();
        let mut ws = HandWs {
            stream,
            buf: bytes::BytesMut::new(),
            decoder: truflux::ws::codec::Decoder::new(truflux::ws::Role::Client, 1 << 20),
        };
        match ws.next().await {
            Some(truflux::ws::codec::Incoming::Binary(bytes)) => assert_eq!(bytes[0], Kind::Hello as u8),
            other => panic!("expected the server hello, got {other:?}"),
        }
        ws
    }

    /// The next message from the server; `None` once the connection ended.
    async fn next(&mut self) -> Option<truflux::ws::codec::Incoming> {
        within("a message from the server", async {
            loop {
                if let Some(message) = self
                    .decoder
                    .decode(&mut self.buf)
                    .expect("the server frames well")
                {
                    return Some(message);
                }
                if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        })
        .await
    }

    async fn expect_close(&mut self) -> u16 {
        loop {
            match self.next().await {
                Some(truflux::ws::codec::Incoming::Close(Some((code, _)))) => return code,
                Some(_) => continue,
                None => panic!("ended without a close frame"),
            }
        }
    }
}

#[tokio::test]
async fn a_message_in_fragments_with_a_ping_between_them_is_one_frame() {
    let (_events, server, mut bystander) = relay_with_bystander().await;
    let mut ws = HandWs::open(&server).await;
    let frame = frame_bytes(&Frame::message(7, Bytes::from_static(b"in three pieces")));
    let mut wire = masked(0x02, &frame[..4], [9, 9, 9, 9]); // binary, not final
    wire.extend(masked(0x89, b"still there?", [5, 6, 7, 8])); // a ping in between
    wire.extend(masked(0x00, &frame[4..12], [1, 1, 1, 1])); // continuation
    wire.extend(masked(0x80, &frame[12..], [0, 7, 0, 7])); // final continuation
    ws.stream.write_all(&wire).await.unwrap();
    let relayed = recv(&mut bystander.rx).await;
    assert_eq!(
        (relayed.id, relayed.payload),
        (7, Bytes::from_static(b"in three pieces"))
    );
    assert_eq!(
        ws.next().await,
        Some(truflux::ws::codec::Incoming::Pong(Bytes::from_static(
            b"still there?"
        )))
    );
    bystander.assert_healthy(&server).await;
}

/// A WebSocket server on a runtime of its own, on one thread, whose handler blocks that thread
/// on message 1 until released: the connection's task cannot run meanwhile.
struct HeldServer {
    server: Server,
    hold: common::Hold,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl HeldServer {
    async fn start(config: ServerConfig) -> HeldServer {
        let (hold, holder) = common::hold();
        let (server, thread, stop) = common::server_on_own_thread(move || {
            Server::builder()
                .ws("127.0.0.1:0", "/truflux")
                .config(config)
                .protocol(protocol::from_fn(move |_peer, message: Message| {
                    if message.id == 1 {
                        holder.block();
                    }
                    std::future::ready(())
                }))
        })
        .await;
        HeldServer {
            server,
            hold,
            stop,
            thread,
        }
    }

    /// Sends message 1 from `ws`, with `after` in the same write (so that the server reads them
    /// together), and waits until its handler holds the server's thread.
    async fn hold(&mut self, ws: &mut HandWs, after: &[u8]) {
        let frame = frame_bytes(&Frame::message(1, Bytes::new()));
        let mut wire = masked(0x82, &frame, [1, 2, 3, 4]);
        wire.extend_from_slice(after);
        ws.stream.write_all(&wire).await.unwrap();
        self.hold.held().await;
    }

    fn finish(self) {
        self.hold.release();
        drop(self.server);
        let _ = self.stop.send(());
        self.thread.join().unwrap();
    }
}

/// The truflux frame a binary message carries: its id and payload.
fn binary_frame(message: Option<truflux::ws::codec::Incoming>) -> (u32, Bytes) {
    match message {
        Some(truflux::ws::codec::Incoming::Binary(bytes)) => {
            let frame = truflux::frame::decode_exact(bytes, u32::MAX).expect("one whole frame");
            (frame.id, frame.payload)
        }
        other => panic!("expected a binary message, got {other:?}"),
    }
}

/// A send from a task other than the connection's reaches a WebSocket peer while the
/// connection's task cannot run: a server's WebSocket over TCP is written through, as plain
/// TCP is.
#[tokio::test]
async fn a_send_from_another_task_reaches_a_websocket_peer_while_the_connection_task_cannot_run() {
    let mut held = HeldServer::start(ServerConfig::default()).await;
    let mut ws = HandWs::open(&held.server).await;
    held.hold(&mut ws, &[]).await;
    let peer = held.server.peers().pop().unwrap();
    peer.send_raw(2, Bytes::from_static(b"through")).await.unwrap();
    assert_eq!(binary_frame(ws.next().await), (2, Bytes::from_static(b"through")));
    assert!(
        !held.hold.returned(),
        "the message arrived only once the connection's task ran again"
    );
    drop(peer);
    held.finish();
}

/// A ping read while a message written through is only part sent (the peer does not read, and
/// the writer that finishes it cannot run yet) is answered after the whole message, never
/// inside it. The ping arrives with the message that holds the server, so the reader has it in
/// hand, ahead of the writer, the moment the thread is free.
#[tokio::test]
async fn a_ping_during_a_part_written_send_is_answered_after_the_message() {
    let big = 16 << 20;
    let config =
        ServerConfig::default().connection(ConnectionConfig::default().max_payload(big as u32 + 1024));
    let mut held = HeldServer::start(config).await;
    let mut ws = HandWs::open(&held.server).await;
    ws.decoder = truflux::ws::codec::Decoder::new(truflux::ws::Role::Client, 2 * big);
    held.hold(&mut ws, &masked(0x89, b"still there?", [5, 6, 7, 8]))
        .await;
    let peer = held.server.peers().pop().unwrap();
    // The socket takes a few MiB of it; the rest waits for the writer.
    let payload = Bytes::from((0..big).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    peer.send_raw(2, payload.clone()).await.unwrap();
    held.hold.release();
    let (id, received) = binary_frame(ws.next().await);
    assert!(id == 2 && received == payload, "the message arrives whole");
    assert_eq!(
        ws.next().await,
        Some(truflux::ws::codec::Incoming::Pong(Bytes::from_static(
            b"still there?"
        )))
    );
    drop(peer);
    held.finish();
}

/// A WebSocket client whose sends come from a task other than its connection's: they reach the
/// server while the client's runtime thread is stuck in a handler (written through, as on a
/// server), and sends from many tasks, small and large, arrive whole and in each sender's
/// order (a client's tails are masked once and kept as written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_writes_through_from_other_tasks() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::builder()
        .ws("127.0.0.1:0", "/truflux")
        .protocol(protocol::from_fn(move |_peer, message: Message| {
            let _ = tx.send(message);
            std::future::ready(())
        }))
        .start()
        .await
        .unwrap();
    let url = server.ws_urls()[0].clone();
    let (mut hold, holder) = common::hold();
    let (client_tx, client_rx) = tokio::sync::oneshot::channel();
    // The client on a runtime of its own, on one thread, which its handler blocks.
    let (thread, stop) = common::on_own_thread(move |stop| async move {
        let client = Client::builder()
            .protocol(protocol::from_fn(move |_peer, _message: Message| {
                holder.block();
                std::future::ready(())
            }))
            .connect_ws(&url)
            .await
            .unwrap();
        let _ = client_tx.send(client.clone());
        let _ = stop.await;
        client.peer().close(Code::NORMAL, "done").await;
    });
    let client = within("the client", client_rx).await.unwrap();
    server
        .peers()
        .pop()
        .unwrap()
        .send_raw(1, &b"hold"[..])
        .await
        .unwrap();
    hold.held().await;
    client.peer().send_raw(2, &b"through"[..]).await.unwrap();
    let first = recv(&mut rx).await;
    assert_eq!((first.id, &first.payload[..]), (2, &b"through"[..]));
    assert!(
        !hold.returned(),
        "the message went out only once the client's task ran again"
    );
    // The rest of a large write through is the client's writer's, on that thread.
    hold.release();

    const PER_TASK: u32 = 30;
    let payload = |task: u32, n: u32| {
        let len = if n % 3 == 0 { 300 * 1024 } else { 40 + n as usize };
        Bytes::from(vec![(task * 31 + n) as u8; len])
    };
    let senders: Vec<_> = (0..4u32)
        .map(|task| {
            let peer = client.peer().clone();
            tokio::spawn(async move {
                for n in 0..PER_TASK {
                    peer.send_raw(10 + task, payload(task, n)).await.unwrap();
                }
            })
        })
        .collect();
    let mut next = [0u32; 4];
    for _ in 0..4 * PER_TASK {
        let message = recv(&mut rx).await;
        let task = message.id - 10;
        let n = next[task as usize];
        assert!(message.payload == payload(task, n), "task {task} message {n}");
        next[task as usize] += 1;
    }
    for sender in senders {
        sender.await.unwrap();
    }
    drop(client);
    stop.send(()).unwrap();
    thread.join().unwrap();
}

#[tokio::test]
async fn framing_violations_close_with_protocol_error() {
    let (events, server, mut bystander) = relay_with_bystander().await;
    let frame = frame_bytes(&Frame::message(7, Bytes::from_static(b"x")));
    let mut unmasked = vec![0x82, frame.len() as u8];
    unmasked.extend_from_slice(&frame);
    let cases: [(&str, Vec<u8>); 5] = [
        ("unmasked client frame", unmasked),
        ("reserved bit", masked(0xc2, &frame, [1, 2, 3, 4])),
        ("reserved opcode", masked(0x83, &frame, [1, 2, 3, 4])),
        ("continuation without a start", masked(0x80, &frame, [1, 2, 3, 4])),
        (
            "close code 1005 on the wire",
            masked(0x88, &[0x03, 0xed], [1, 2, 3, 4]),
        ),
    ];
    for (what, wire) in cases {
        let mut ws = HandWs::open(&server).await;
        ws.stream.write_all(&wire).await.unwrap();
        assert_eq!(ws.expect_close().await, Code::PROTOCOL_ERROR.0, "{what}");
        assert_eq!(events.error_event().await.1, Code::PROTOCOL_ERROR, "{what}");
    }
    bystander.assert_healthy(&server).await;
}

/// A standalone WebSocket upgrade with extra headers: the handshake's outcome.
async fn upgrade_with(
    url: &str,
    headers: &[(&'static str, &str)],
) -> Result<RawWs, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let addr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(request, stream)
        .await
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn an_upgrade_from_an_origin_not_allowed_gets_403_and_one_without_an_origin_is_let_through() {
    let events = Events::default();
    let config = ServerConfig::default().allowed_origins(Some(vec!["http://chat.example".into()]));
    let server = relay_server(&events, config).await;
    let url = &server.ws_urls()[0];
    match upgrade_with(url, &[("origin", "http://evil.example")]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    upgrade_with(url, &[("origin", "http://CHAT.example")])
        .await
        .expect("an allowed origin");
    upgrade_with(url, &[])
        .await
        .expect("no origin: not a browser page");
}

#[tokio::test]
async fn the_validator_and_handlers_see_the_upgrade_request_without_its_token() {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<String>();
    let (auth_tx, connect_tx) = (seen_tx.clone(), seen_tx);
    let describe = |info: &truflux::PeerInfo| {
        let upgrade = info.upgrade.as_ref().expect("a WebSocket peer has its upgrade");
        format!(
            "room={:?} sid={:?} origin={:?} authorization={}",
            upgrade.query_param("room"),
            upgrade.cookie("sid"),
            upgrade.origin(),
            upgrade.headers.contains_key("authorization"),
        )
    };
    let server = Server::builder()
        .ws("127.0.0.1:0", "/truflux")
        .authenticate(move |request: truflux::auth::AuthRequest| {
            let _ = auth_tx.send(describe(&request.info));
            std::future::ready(Ok::<_, truflux::auth::Rejection>(()))
        })
        .on_connect(move |peer: truflux::Peer| {
            let _ = connect_tx.send(describe(&peer.info()));
            std::future::ready(())
        })
        .start()
        .await
        .unwrap();
    let url = format!("{}?room=caf%C3%A9", server.ws_urls()[0]);
    let mut ws = upgrade_with(
        &url,
        &[
            ("authorization", "Bearer secret-token"),
            ("cookie", "theme=dark; sid=42"),
            ("origin", "http://chat.example"),
        ],
    )
    .await
    .unwrap();
    ws.send(WsMessage::Binary(frame_bytes(&Hello::current().to_frame())))
        .await
        .unwrap();
    let expected =
        r#"room=Some("café") sid=Some("42") origin=Some("http://chat.example") authorization=false"#;
    assert_eq!(within("the validator", seen_rx.recv()).await.unwrap(), expected);
    assert_eq!(within("on_connect", seen_rx.recv()).await.unwrap(), expected);
    let tcp = Server::builder().tcp("127.0.0.1:0").start().await.unwrap();
    let client = Client::connect(tcp.local_addrs()[0], truflux::protocol::NoMessages)
        .await
        .unwrap();
    assert!(client.peer().info().upgrade.is_none(), "TCP peers have none");
}
