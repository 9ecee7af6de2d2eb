//! The server's metrics through the Prometheus exporter, scraped over HTTP from a binding that
//! also serves WebSocket peers. One test: the recorder is global to the process.
#![cfg(feature = "prometheus")]

mod common;

use common::{within, Events};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use truflux::http::{HttpBind, NotFound};
use truflux::prometheus::Prometheus;
use truflux::{protocol, Client, Code, Error, Server};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within("the scrape", stream.read_to_end(&mut response))
        .await
        .unwrap();
    String::from_utf8(response).unwrap()
}

/// The value of the sample line that starts with `series` (name and labels).
fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
}

#[tokio::test]
async fn the_scrape_counts_connections_messages_broadcasts_and_refusals() {
    let prometheus = Prometheus::install().unwrap();
    let events = Events::default();
    let server = Server::builder()
        .tcp("127.0.0.1:0")
        .protocol(protocol::from_fn(|peer, message| async move {
            if let Some(server) = peer.server() {
                let _ = server.broadcast(message, &[]);
            }
        }))
        .authenticate(|request: truflux::auth::AuthRequest| {
            std::future::ready(match request.token.as_str() {
                "ok" => Ok(()),
                _ => Err(truflux::auth::Rejection::from("no")),
            })
        })
        .on_disconnect(events.disconnected())
        .start()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let bind = HttpBind::new(NotFound)
        .mount("/chat", &server)
        .unwrap()
        .metrics("/metrics", &prometheus);
    tokio::spawn(bind.serve(listener));

    let tcp = Client::builder()
        .token("ok")
        .connect(server.local_addrs()[0])
        .await
        .unwrap();
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let ws = Client::builder()
        .token("ok")
        .protocol(protocol::from_fn(move |_, message| {
            let _ = got_tx.send(message);
            std::future::ready(())
        }))
        .connect_ws(&format!("ws://{http}/chat"))
        .await
        .unwrap();
    let refused = Client::builder()
        .token("bad")
        .connect(server.local_addrs()[0])
        .await;
    assert!(matches!(refused, Err(Error::Unauthorized(_))), "{refused:?}");
    for _ in 0..3 {
        tcp.peer().send_raw(1, &b"hello"[..]).await.unwrap();
    }
    for _ in 0..3 {
        within("a broadcast", got.recv()).await.unwrap();
    }

    let text = scrape(http).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(value(&text, r#"truflux_connections{transport="tcp"}"#), 1.0);
    assert_eq!(value(&text, r#"truflux_connections{transport="websocket"}"#), 1.0);
    assert!(value(&text, "truflux_messages_received_total") >= 3.0);
    assert!(
        value(&text, "truflux_messages_sent_total") >= 6.0,
        "3 broadcasts to 2 peers"
    );
    assert!(value(&text, "truflux_bytes_received_total") > 0.0);
    assert_eq!(value(&text, "truflux_broadcast_fanout_seconds_count"), 3.0);
    let auth = format!(
        r#"truflux_auth_failures_total{{code="{}"}}"#,
        Code::UNAUTHORIZED.name()
    );
    assert_eq!(value(&text, &auth), 1.0);

    drop(ws);
    events.disconnect().await;
    let text = scrape(http).await;
    assert_eq!(value(&text, r#"truflux_connections{transport="websocket"}"#), 0.0);
}
