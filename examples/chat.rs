//! The main job: a chat server with a web page, for browsers and terminal clients at once.
//!
//! ```sh
//! cargo run --release --example chat      # http://127.0.0.1:7879/ and TCP 127.0.0.1:7878
//! cargo run --release --example chat -- --tcp 127.0.0.1:9000 --http 127.0.0.1:9001 --key chat.key
//! cargo run --release --features prometheus --example chat -- --metrics   # and /metrics
//! cargo run --release --features tls --example chat -- --tls-cert cert.pem --tls-key key.pem
//! cargo run --release -p truflux-redis --example chat -- --redis redis://127.0.0.1:6379
//! ```
//!
//! With `--tls-cert` and `--tls-key` (PEM: the chain, leaf first, and its key) the page is
//! served over `https://`, the WebSocket endpoint is `wss://…/chat`, and the terminal
//! listener speaks TLS (`messenger client tls://HOST:PORT --ca CA.pem`). With `--redis URL`
//! (the build in `adapters/redis`, which includes this file) several chat servers sharing one
//! Redis are one chat: rooms, people and lines span them (docs/CLUSTER.md).
//!
//! The HTTP listener serves the page at `/` (HTML, CSS, script and the JavaScript client, all
//! inside this binary: nothing is fetched from elsewhere) and the WebSocket endpoint at
//! `/chat`; terminal clients (`examples/messenger.rs`) connect over TCP or to
//! `ws://…/chat`. Everyone meets in the same rooms: nicknames, rooms with who is in them,
//! joins and leaves, the last 50 lines of a room for whoever joins, files shared with a room,
//! and encryption of a connection with the server's key pinned. A shared file goes to the
//! server, which then offers it to each other member of the room: each accepts or declines
//! their own copy. The messages and limits are in `examples/support/chat.rs`.
//!
//! Clients reconnect by themselves; when the server no longer knows their session (it
//! restarted), they start a new one, join their rooms again, send what was typed meanwhile
//! and say "reconnected (messages may have been missed)".
//!
//! A WebSocket opened by a page of another site is refused (`403`): only the page's own origin
//! (and `localhost` for a loopback address) may connect, or the origins given with `--origin
//! URL` (repeatable, for the names and ports the page is reached by behind a proxy). A
//! wildcard address (`0.0.0.0`) without `--origin` lets any page connect, and says so.
//!
//! The server's long-term key is kept in `--key` (default `truflux-chat.key` in the system's
//! temporary directory) so that its fingerprint, printed at start, stays the same across
//! restarts: a page opened at the printed `#pin=` address, or a terminal client given
//! `--pin`, accepts only that server.
//!
//! Limits, and what happens at them:
//!
//! * nicknames 1–24 characters, room names 1–32 without spaces, lines up to 2000 characters,
//!   16 rooms per person: anything else is refused with a notice saying why;
//! * flood control (per connection, [`truflux::RateLimit`] under [`truflux::RatePolicy::Slow`]):
//!   10 messages a second with bursts of 30, and 4 MiB/s of traffic with bursts of 8 MiB. A
//!   person sending faster is slowed: the server stops reading their connection until their
//!   allowance refills, so their own client's queue fills and waits, while everyone else's
//!   messages are read and delivered as before. Nothing they sent is dropped;
//! * shared files up to 32 MiB each and 256 MiB held by the server at once; an offer nobody
//!   decides on is withdrawn after 10 minutes.
//!
//! Text from people (lines, nicknames, room and file names) is shown by the page as text,
//! never as markup.

#[path = "support/chat.rs"]
pub(crate) mod chat;
#[path = "support/logs.rs"]
mod logs;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::Full;
use truflux::http::{service_fn, HttpBind};
use truflux::Server;

const INDEX: &str = include_str!("chat/index.html");
const STYLE: &str = include_str!("chat/chat.css");
const SCRIPT: &str = include_str!("chat/chat.js");
const CLIENT: &str = include_str!("../clients/js/bundle/truflux.min.js");

/// The WebSocket endpoint's path on the HTTP listener.
const WS_PATH: &str = "/chat";

struct Options {
    tcp: String,
    http: String,
    key: std::path::PathBuf,
    metrics: bool,
    tls: Option<(String, String)>,
    redis: Option<String>,
    /// `--origin`, repeatable: the pages that may open the WebSocket.
    origins: Vec<String>,
}

/// An error in words, for `main` to print.
pub(crate) type Failure = Box<dyn std::error::Error>;

/// How a build with a cluster adapter joins a server to the cluster at `url` (the
/// `truflux-redis` build of this example); `None` in this one.
pub(crate) type Cluster =
    fn(String, chat::ChatServer) -> Pin<Box<dyn Future<Output = Result<chat::ChatServer, Failure>>>>;

fn options() -> Result<Options, String> {
    let mut options = Options {
        tcp: "127.0.0.1:7878".into(),
        http: "127.0.0.1:7879".into(),
        key: std::env::temp_dir().join("truflux-chat.key"),
        metrics: false,
        tls: None,
        redis: None,
        origins: Vec::new(),
    };
    let (mut cert, mut key) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--tcp" => options.tcp = value()?,
            "--http" => options.http = value()?,
            "--key" => options.key = value()?.into(),
            "--metrics" => options.metrics = true,
            "--tls-cert" => cert = Some(value()?),
            "--tls-key" => key = Some(value()?),
            "--redis" => options.redis = Some(value()?),
            "--origin" => options.origins.push(value()?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    options.tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    Ok(options)
}

/// The page and its files; every other path is `404`.
fn page(path: &str) -> http::Response<Full<Bytes>> {
    let (kind, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX),
        "/chat.css" => ("text/css; charset=utf-8", STYLE),
        "/chat.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/truflux.min.js" => ("text/javascript; charset=utf-8", CLIENT),
        _ => ("text/plain; charset=utf-8", "not found\n"),
    };
    let mut response = http::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    if body == "not found\n" {
        *response.status_mut() = http::StatusCode::NOT_FOUND;
    }
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(kind));
    // Defence in depth: the page runs only its own scripts, whatever text people send.
    let policy = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'";
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(policy),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// The Prometheus exporter with `--metrics` (feature `prometheus`), installed before the
/// server starts: a server registers its meters when it starts.
#[cfg(feature = "prometheus")]
type Metrics = Option<truflux::prometheus::Prometheus>;
#[cfg(not(feature = "prometheus"))]
type Metrics = Option<std::convert::Infallible>;

fn metrics(wanted: bool) -> Result<Metrics, truflux::Error> {
    #[cfg(feature = "prometheus")]
    {
        if wanted {
            return Ok(Some(truflux::prometheus::Prometheus::install()?));
        }
    }
    #[cfg(not(feature = "prometheus"))]
    {
        if wanted {
            eprintln!("--metrics needs the Prometheus exporter: build with --features prometheus");
        }
    }
    Ok(None)
}

/// Serves the page, the WebSocket endpoint and the Prometheus scrape (if any) on `listener`.
fn serve_http(
    server: &Server,
    listener: tokio::net::TcpListener,
    metrics: &Metrics,
    tls: &Tls,
) -> Result<(), truflux::Error> {
    let site = service_fn(|request: http::Request<hyper::body::Incoming>| async move {
        Ok::<_, Infallible>(page(request.uri().path()))
    });
    let bind = HttpBind::new(site).mount(WS_PATH, server)?;
    #[cfg(feature = "prometheus")]
    let bind = match metrics {
        Some(prometheus) => bind.metrics("/metrics", prometheus),
        None => bind,
    };
    let _ = metrics;
    match tls {
        None => tokio::spawn(bind.serve(listener)),
        #[cfg(feature = "tls")]
        Some(config) => tokio::spawn(bind.serve_tls(listener, config.clone())),
        #[cfg(not(feature = "tls"))]
        Some(never) => match *never {},
    };
    Ok(())
}

/// The TLS config with `--tls-cert` and `--tls-key` (feature `tls`).
#[cfg(feature = "tls")]
type Tls = Option<std::sync::Arc<truflux::tls::rustls::ServerConfig>>;
#[cfg(not(feature = "tls"))]
type Tls = Option<Infallible>;

fn tls(files: &Option<(String, String)>) -> Result<Tls, Failure> {
    let Some((cert, key)) = files else {
        return Ok(None);
    };
    #[cfg(feature = "tls")]
    return Ok(Some(truflux::tls::server_config_from_pem(cert, key)?));
    #[cfg(not(feature = "tls"))]
    {
        let _ = (cert, key);
        Err("--tls-cert and --tls-key need TLS: build with --features tls".into())
    }
}

/// The pages that may open the chat's WebSocket (a page of another site could otherwise chat
/// in its visitor's name): those given with `--origin`, else the page's own origin (and
/// `localhost` for a loopback address). `None`, any, for a wildcard address without
/// `--origin`: the names it is reached by are unknown.
fn origins(options: &Options, http: std::net::SocketAddr, tls: bool) -> Option<Vec<String>> {
    if !options.origins.is_empty() {
        return Some(options.origins.clone());
    }
    if http.ip().is_unspecified() {
        return None;
    }
    let scheme = if tls { "https" } else { "http" };
    let mut origins = vec![format!("{scheme}://{http}")];
    if http.ip().is_loopback() {
        origins.push(format!("{scheme}://localhost:{}", http.port()));
    }
    Some(origins)
}

/// The server: TCP (TLS over TCP with `--tls-cert`), and the cluster with `--redis`.
async fn start(
    options: &Options,
    key: truflux::security::ServerKey,
    tls: &Tls,
    origins: Option<Vec<String>>,
    cluster: Option<Cluster>,
) -> Result<Server, Failure> {
    let builder = match tls {
        None => Server::builder().tcp(&options.tcp),
        #[cfg(feature = "tls")]
        Some(config) => Server::builder().tls(&options.tcp, config.clone()),
        #[cfg(not(feature = "tls"))]
        Some(never) => match *never {},
    };
    let mut chat = chat::ChatServer::new(builder, Some(key), origins);
    if let Some(url) = &options.redis {
        let Some(join) = cluster else {
            return Err("--redis needs the cluster build: cargo run --release -p truflux-redis --example chat -- --redis URL".into());
        };
        chat = join(url.clone(), chat).await?;
    }
    Ok(chat.start().await?)
}

fn print_addresses(server: &Server, http: std::net::SocketAddr, pin: &str, metrics: bool, tls: bool) {
    let tcp = server.local_addrs()[0];
    let (web, ws, terminal) = match tls {
        false => ("http", "ws", format!("{tcp}")),
        true => ("https", "wss", format!("tls://{tcp} --ca CA.pem")),
    };
    println!("truflux chat");
    println!("  open in a browser:   {web}://{http}/#pin={pin}");
    println!("                  or:  {web}://{http}/  (the server's key not pinned)");
    println!("  terminal client:     cargo run --example messenger -- client {terminal} --pin {pin}");
    println!("        over WebSocket: cargo run --example messenger -- client {ws}://{http}{WS_PATH}");
    println!("  server key pin: {pin}");
    if metrics {
        println!("  metrics:             {web}://{http}/metrics");
    }
}

#[tokio::main]
#[allow(dead_code)] // the cluster build has a main of its own
async fn main() {
    main_with(None).await
}

/// Runs the chat server (joining the cluster with `--redis` when `cluster` is given) and
/// prints errors in words (a `main` returning `Err` would print its debug form).
pub(crate) async fn main_with(cluster: Option<Cluster>) {
    if let Err(error) = run(cluster).await {
        eprintln!("chat: {error}");
        std::process::exit(1);
    }
}

async fn run(cluster: Option<Cluster>) -> Result<(), Failure> {
    logs::init("info");
    let options = match options() {
        Ok(options) => options,
        Err(problem) => {
            if !problem.is_empty() {
                eprintln!("{problem}");
            }
            eprintln!(
                "usage: chat [--tcp ADDR] [--http ADDR] [--key PATH] [--metrics] \
                 [--tls-cert FILE --tls-key FILE] [--redis URL] [--origin URL]..."
            );
            std::process::exit(2);
        }
    };
    let key = truflux::security::ServerKey::load_or_generate(&options.key)
        .map_err(|e| format!("the server key {}: {e}", options.key.display()))?;
    let pin = key.fingerprint().to_string();
    let listener = tokio::net::TcpListener::bind(&options.http)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", options.http))?;
    let http = listener.local_addr()?;
    let metrics = metrics(options.metrics)?;
    let tls = tls(&options.tls)?;
    let origins = origins(&options, http, tls.is_some());
    let shown = origins
        .as_ref()
        .map_or("any (a wildcard address: pass --origin)".into(), |o| o.join(" "));
    let server = start(&options, key, &tls, origins, cluster).await?;
    serve_http(&server, listener, &metrics, &tls)?;
    print_addresses(&server, http, &pin, metrics.is_some(), tls.is_some());
    println!("  pages that may connect: {shown}");
    println!("stop with Ctrl-C");
    tokio::signal::ctrl_c().await?;
    println!("shutting down: {} peer(s) connected", server.num_connections());
    server
        .close(truflux::Code::GOING_AWAY, "server shutting down")
        .await;
    Ok(())
}
