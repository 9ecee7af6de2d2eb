//! TLS (feature `tls`): TLS over TCP and `wss://` on the server and the client, certificates
//! made by the test; certificate problems as typed errors that end a reconnecting client;
//! TLS with in-band security on top; sessions resumed over TLS losing nothing.
#![cfg(feature = "tls")]

mod common;

#[path = "../examples/support/certs.rs"]
#[allow(dead_code)]
mod certs;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use certs::TestCa;
use common::{assert_no_panics, watch_panics, within, Events};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use truflux::security::SecurityConfig;
use truflux::tls::{rustls, TlsError};
use truflux::{
    protocol, Client, ClientConfig, Code, ConnectionConfig, Error, Message, Reconnect, Server, ServerConfig,
};

/// A CA, a good certificate for localhost and 127.0.0.1, and a client config trusting the CA.
struct Pki {
    ca: TestCa,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn pki() -> Pki {
    let ca = TestCa::new("truflux test CA").expect("ca");
    let server = ca
        .leaf(&["localhost", "127.0.0.1"])
        .expect("leaf")
        .server_config()
        .expect("server config");
    let client = truflux::tls::client_config(ca.roots()).expect("client config");
    Pki { ca, server, client }
}

/// Echoes every message back to its sender.
async fn echo_server(
    config: Arc<rustls::ServerConfig>,
    server_config: ServerConfig,
    events: &Events,
) -> Server {
    Server::builder()
        .tls("127.0.0.1:0", config.clone())
        .wss("127.0.0.1:0", "/t", config)
        .config(server_config)
        .protocol(protocol::from_fn(|peer, message| async move {
            let _ = peer.send(message).await;
        }))
        .on_connect(events.connected())
        .start()
        .await
        .expect("server")
}

/// A client protocol that forwards every message to a channel.
fn collector() -> (impl truflux::Protocol, mpsc::UnboundedReceiver<Message>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let protocol = protocol::from_fn(move |_peer, message| {
        let _ = tx.send(message);
        std::future::ready(())
    });
    (protocol, rx)
}

fn message(text: &'static str) -> Message {
    Message {
        id: 7,
        payload: Bytes::from_static(text.as_bytes()),
    }
}

fn wss_url(server: &Server) -> String {
    let url = server.ws_urls()[0].clone();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    url.replace("127.0.0.1", "localhost")
}

#[tokio::test]
async fn tls_over_tcp_and_wss_carry_messages_and_say_so_in_peer_info() {
    let panics = watch_panics();
    let pki = pki();
    let events = Events::default();
    let server = echo_server(pki.server.clone(), ServerConfig::default(), &events).await;
    for via in ["tls", "wss"] {
        let (protocol, mut rx) = collector();
        let builder = Client::builder().tls(pki.client.clone()).protocol(protocol);
        let client = match via {
            "tls" => builder.connect_tls(server.local_addrs()[0], "localhost").await,
            _ => builder.connect_ws(&wss_url(&server)).await,
        }
        .expect(via);
        let server_side = events.connected_peer().await;
        assert!(server_side.info().tls && client.peer().info().tls, "{via}");
        client.peer().send(message("over tls")).await.expect("send");
        let echoed = within("the echo", rx.recv()).await.expect("open");
        assert_eq!(echoed.payload, Bytes::from_static(b"over tls"), "{via}");
        client.peer().close(Code::NORMAL, "done").await;
    }
    assert_no_panics(panics);
}

#[tokio::test]
async fn large_frames_over_tls_arrive_without_waiting_for_the_next_write() {
    let panics = watch_panics();
    let pki = pki();
    let events = Events::default();
    let big = || ConnectionConfig::default().max_payload(16 << 20);
    let server = echo_server(
        pki.server.clone(),
        ServerConfig::default().connection(big()),
        &events,
    )
    .await;
    let (protocol, mut rx) = collector();
    let client = Client::builder()
        .tls(pki.client.clone())
        .config(ClientConfig::default().connection(big()))
        .protocol(protocol)
        .connect_tls(server.local_addrs()[0], "localhost")
        .await
        .expect("connect");
    // Records the socket could not take at once used to wait in the TLS session until the
    // next frame (a heartbeat, 25 s later) pushed them out.
    let payload = Bytes::from(vec![0x5a; 10 << 20]);
    for _ in 0..6 {
        let message = Message {
            id: 9,
            payload: payload.clone(),
        };
        client.peer().send(message).await.expect("send");
        let echoed = within("a 10 MiB echo", rx.recv()).await.expect("open");
        assert_eq!(echoed.payload.len(), payload.len());
    }
    assert_no_panics(panics);
}

#[tokio::test]
async fn untrusted_wrong_name_and_expired_certificates_are_each_their_own_error() {
    let panics = watch_panics();
    let pki = pki();
    let stranger = TestCa::new("someone else's CA").expect("ca");
    let cases = [
        (
            "untrusted",
            stranger.leaf(&["localhost"]),
            TlsError::UntrustedCertificate,
        ),
        (
            "wrong name",
            pki.ca.leaf(&["elsewhere.example"]),
            TlsError::WrongName,
        ),
        ("expired", pki.ca.expired_leaf(&["localhost"]), TlsError::Expired),
    ];
    for (what, leaf, expected) in cases {
        let config = leaf.expect("leaf").server_config().expect("config");
        let server = echo_server(config, ServerConfig::default(), &Events::default()).await;
        let tls = Client::builder()
            .tls(pki.client.clone())
            .connect_tls(server.local_addrs()[0], "localhost")
            .await;
        let wss = Client::builder()
            .tls(pki.client.clone())
            .connect_ws(&wss_url(&server))
            .await;
        for (via, result) in [("tls", tls), ("wss", wss)] {
            match result {
                Err(Error::Tls(error)) => {
                    assert_eq!(error, expected, "{what} over {via}");
                    assert_eq!(Error::Tls(error).code(), Code::UNTRUSTED_SERVER);
                }
                other => panic!("{what} over {via}: {:?}", other.map(|_| ())),
            }
        }
    }
    assert_no_panics(panics);
}

#[tokio::test]
async fn a_client_without_a_tls_config_or_with_a_bad_name_says_so() {
    // With `tls-webpki-roots`, no config means Mozilla's roots.
    if cfg!(not(feature = "tls-webpki-roots")) {
        let refused = Client::builder().connect_tls("127.0.0.1:9", "localhost").await;
        assert!(
            matches!(refused, Err(Error::Config(_))),
            "{:?}",
            refused.map(|_| ())
        );
    }
    let refused = Client::builder()
        .tls(pki().client)
        .connect_tls("127.0.0.1:9", "not a name!")
        .await;
    assert!(
        matches!(refused, Err(Error::Config(_))),
        "{:?}",
        refused.map(|_| ())
    );
}

#[tokio::test]
async fn in_band_security_runs_on_top_of_tls() {
    let panics = watch_panics();
    let pki = pki();
    let events = Events::default();
    let required = || ConnectionConfig::default().security(SecurityConfig::default().required(true));
    let server = echo_server(
        pki.server.clone(),
        ServerConfig::default().connection(required()),
        &events,
    )
    .await;
    let (protocol, mut rx) = collector();
    let client = Client::builder()
        .tls(pki.client.clone())
        .config(ClientConfig::default().connection(required()))
        .protocol(protocol)
        .connect_tls(server.local_addrs()[0], "localhost")
        .await
        .expect("connect");
    let server_side = events.connected_peer().await;
    client.peer().send(message("twice sealed")).await.expect("send");
    let echoed = within("the echo", rx.recv()).await.expect("open");
    assert_eq!(echoed.payload, Bytes::from_static(b"twice sealed"));
    // The echo crossed both directions, so both are settled by now.
    assert!(client.peer().is_secure() && client.peer().is_peer_secure());
    assert!(server_side.is_secure() && server_side.is_peer_secure() && server_side.info().tls);
    assert_no_panics(panics);
}

fn reconnecting() -> ClientConfig {
    ClientConfig::default().reconnect(Some(
        Reconnect::default()
            .initial_delay(Duration::from_millis(5))
            .max_delay(Duration::from_millis(50))
            .max_attempts(None),
    ))
}

#[tokio::test]
async fn sessions_resume_over_tls_and_lose_nothing() {
    let panics = watch_panics();
    const ROUNDS: u32 = 4;
    let pki = pki();
    let (tx, mut received) = mpsc::unbounded_channel();
    let server = Server::builder()
        .tls("127.0.0.1:0", pki.server.clone())
        .protocol(protocol::from_fn(move |_peer, message: Message| {
            let _ = tx.send(u32::from_be_bytes(
                message.payload[..4].try_into().expect("4 octets"),
            ));
            std::future::ready(())
        }))
        .start()
        .await
        .expect("server");
    let relay = Relay::start(server.local_addrs()[0]).await;
    let (reconnected_tx, mut reconnected) = mpsc::unbounded_channel();
    let client = Client::builder()
        .tls(pki.client.clone())
        .config(reconnecting())
        .on_reconnect(move |_peer, _attempts| {
            let _ = reconnected_tx.send(());
        })
        .connect_tls(relay.addr, "localhost")
        .await
        .expect("connect");
    // Each round queues 100 messages and cuts at once, while some are still in flight.
    for round in 0..ROUNDS {
        for number in round * 100..(round + 1) * 100 {
            let payload = Bytes::copy_from_slice(&number.to_be_bytes());
            client
                .peer()
                .send(Message { id: 1, payload })
                .await
                .expect("send");
        }
        relay.cut();
        within("the resume", reconnected.recv()).await.expect("open");
    }
    for expected in 0..ROUNDS * 100 {
        let number = within("the next message", received.recv()).await.expect("open");
        assert_eq!(number, expected, "in order, once each");
    }
    assert_eq!(relay.accepted(), ROUNDS as usize + 1);
    assert!(received.try_recv().is_err(), "nothing twice");
    assert_no_panics(panics);
}

#[tokio::test]
async fn a_plain_session_resumes_over_tls_without_plain_resume_and_not_in_the_clear() {
    let panics = watch_panics();
    let pki = pki();
    let plain = || {
        ConnectionConfig::default()
            .security(SecurityConfig::default().opening(truflux::security::Opening::Plain))
    };
    let (tx, mut received) = mpsc::unbounded_channel();
    let server = Server::builder()
        .tls("127.0.0.1:0", pki.server.clone())
        .tcp("127.0.0.1:0")
        .protocol(protocol::from_fn(move |_peer, message: Message| {
            let _ = tx.send(message.payload);
            std::future::ready(())
        }))
        .start()
        .await
        .expect("server");
    let addrs = server.local_addrs(); // in the order the listeners were given
    let (tls_addr, tcp_addr) = (addrs[0], addrs[1]);
    for (via, addr) in [("tls", tls_addr), ("tcp", tcp_addr)] {
        let relay = Relay::start(addr).await;
        let (lost_tx, mut lost) = mpsc::unbounded_channel();
        let builder = Client::builder()
            .tls(pki.client.clone())
            .config(reconnecting().connection(plain()))
            .on_disconnect(move |_info| {
                let _ = lost_tx.send(());
            });
        let client = match via {
            "tls" => builder.connect_tls(relay.addr, "localhost").await,
            _ => builder.connect(relay.addr).await,
        }
        .expect(via);
        assert!(!client.peer().is_secure(), "{via}: no in-band keys");
        relay.cut();
        within("the loss", lost.recv()).await.expect("open");
        if via == "tls" {
            client.peer().send(message("after the cut")).await.expect("send");
            let payload = within("the resumed message", received.recv())
                .await
                .expect("open");
            assert_eq!(payload, Bytes::from_static(b"after the cut"));
        } else {
            let info = within("the refused resume", client.peer().closed()).await;
            assert_eq!(info.code, Code::RESUME_FAILED, "in the clear: {info:?}");
        }
    }
    assert_no_panics(panics);
}

#[tokio::test]
async fn a_reconnecting_client_gives_up_on_a_bad_certificate_instead_of_retrying() {
    let panics = watch_panics();
    let pki = pki();
    let good = echo_server(pki.server.clone(), ServerConfig::default(), &Events::default()).await;
    let stranger = TestCa::new("someone else's CA").expect("ca");
    let impostor_config = stranger
        .leaf(&["localhost"])
        .expect("leaf")
        .server_config()
        .expect("config");
    let impostor = echo_server(impostor_config, ServerConfig::default(), &Events::default()).await;
    let relay = Relay::start(good.local_addrs()[0]).await;
    let client = Client::builder()
        .tls(pki.client.clone())
        .config(reconnecting())
        .connect_tls(relay.addr, "localhost")
        .await
        .expect("connect");
    relay.retarget(impostor.local_addrs()[0]);
    relay.cut();
    let info = within("the client gives up", client.peer().closed()).await;
    assert_eq!(info.code, Code::UNTRUSTED_SERVER, "{info:?}");
    assert_eq!(relay.accepted(), 2, "one try at the impostor, no loop");
    assert_no_panics(panics);
}

/// A loopback TCP relay (TLS passes through it end to end) that can cut every connection
/// and forward new ones elsewhere.
struct Relay {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    cuts: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay");
        let relay = Relay {
            addr: listener.local_addr().expect("addr"),
            target: Arc::new(Mutex::new(target)),
            cuts: watch::channel(0).0,
            accepted: Arc::new(AtomicUsize::new(0)),
        };
        let (target, cuts, accepted) = (relay.target.clone(), relay.cuts.clone(), relay.accepted.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let to = *target.lock().expect("target");
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        relay
    }

    fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    fn retarget(&self, to: SocketAddr) {
        *self.target.lock().expect("target") = to;
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// An echo server with no listener of its own, mounted at `/t` of a binding.
async fn mounted_echo(events: &Events) -> (Server, truflux::http::HttpBind<truflux::http::NotFound>) {
    let server = Server::builder()
        .protocol(protocol::from_fn(|peer, message| async move {
            let _ = peer.send(message).await;
        }))
        .on_connect(events.connected())
        .start()
        .await
        .expect("server");
    let bind = truflux::http::HttpBind::new(truflux::http::NotFound)
        .mount("/t", &server)
        .expect("mount");
    (server, bind)
}

/// A client of `wss://localhost:PORT/t` gets `text` echoed; the server saw a TLS peer.
async fn wss_echo(pki: &Pki, port: u16, events: &Events, text: &'static str) {
    let (protocol, mut rx) = collector();
    let client = Client::builder()
        .tls(pki.client.clone())
        .protocol(protocol)
        .connect_ws(&format!("wss://localhost:{port}/t"))
        .await
        .expect("connect");
    assert!(events.connected_peer().await.info().tls);
    client.peer().send(message(text)).await.expect("send");
    let echoed = within("the echo", rx.recv()).await.expect("open");
    assert_eq!(echoed.payload, Bytes::from_static(text.as_bytes()));
}

#[tokio::test]
async fn an_http_binding_served_over_tls_takes_wss_peers() {
    let panics = watch_panics();
    let pki = pki();
    let events = Events::default();
    let (_server, bind) = mounted_echo(&events).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(bind.serve_tls(listener, pki.server.clone()));
    wss_echo(&pki, port, &events, "mounted").await;
    assert_no_panics(panics);
}

#[tokio::test]
async fn an_application_s_own_tls_in_front_of_an_http_binding_carries_wss_peers() {
    let panics = watch_panics();
    let pki = pki();
    let events = Events::default();
    let (_server, bind) = mounted_echo(&events).await;
    let mut app_config = rustls::ServerConfig::clone(&pki.server);
    app_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(app_config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let port = listener.local_addr().expect("addr").port();
    // The application terminates TLS itself and says so with the OverTls extension.
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, bind) = (acceptor.clone(), bind.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(truflux::http::OverTls);
                        hyper::service::Service::call(&bind, request)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    wss_echo(&pki, port, &events, "behind the app's TLS").await;
    assert_no_panics(panics);
}
