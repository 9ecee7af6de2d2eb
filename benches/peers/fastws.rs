//! fastwebsockets as a WebSocket peer, the documented way: the server upgrades a hyper
//! HTTP/1.1 connection (`fastwebsockets::upgrade`), the client does the handshake through hyper
//! (`fastwebsockets::handshake::client`), and both read whole messages through a
//! `FragmentCollector`, with the crate's defaults otherwise.

use std::future::Future;

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// A client connection.
pub type Conn = FragmentCollector<TokioIo<hyper::upgrade::Upgraded>>;

/// The echo server: every binary or text message is sent back as it came.
pub async fn spawn_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(upgrade);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    port
}

async fn upgrade(mut request: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, upgraded) = fastwebsockets::upgrade::upgrade(&mut request)?;
    tokio::spawn(async move {
        let Ok(ws) = upgraded.await else {
            return;
        };
        let mut ws = FragmentCollector::new(ws);
        while let Ok(frame) = ws.read_frame().await {
            let echo = matches!(frame.opcode, OpCode::Binary | OpCode::Text);
            if frame.opcode == OpCode::Close || (echo && ws.write_frame(frame).await.is_err()) {
                return;
            }
        }
    });
    Ok(response)
}

/// Runs hyper's background tasks (the client connection) on tokio.
struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}

/// Connects to the server at `addr` (host:port).
pub async fn connect(addr: &str) -> Conn {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let request = Request::builder()
        .method("GET")
        .uri(format!("http://{addr}/"))
        .header("Host", addr)
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "upgrade")
        .header("Sec-WebSocket-Key", fastwebsockets::handshake::generate_key())
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let (ws, _) = fastwebsockets::handshake::client(&SpawnExecutor, request, stream)
        .await
        .expect("fastwebsockets handshake");
    FragmentCollector::new(ws)
}

/// Sends `payload` as one binary message and waits for its echo.
pub async fn roundtrip(ws: &mut Conn, payload: &Bytes) {
    ws.write_frame(Frame::binary(Payload::Borrowed(payload)))
        .await
        .expect("send");
    loop {
        let frame = ws.read_frame().await.expect("echo");
        if frame.opcode == OpCode::Binary {
            assert_eq!(frame.payload.len(), payload.len());
            return;
        }
    }
}
