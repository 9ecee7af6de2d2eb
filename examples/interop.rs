//! A truflux server (and a small client) for testing other clients against this implementation.
//!
//! ```sh
//! cargo run --example interop -- --tcp 127.0.0.1:0 --ws 127.0.0.1:0 \
//!     [--key FILE] [--token SECRET] [--files DIR] [--required] [--plain-resume] \
//!     [--resume-window-ms N] [--heartbeat-ms N] [--heartbeat-timeout-ms N] \
//!     [--tls-dir DIR --tls-tcp ADDR --wss ADDR]          # feature tls
//! cargo run --example interop -- client ADDR [--name NAME] [--token SECRET] [--pin HEX]
//! ```
//!
//! The server prints one JSON line when it is ready: `{"tcp":"…","ws":"ws://…/truflux",
//! "fingerprint":"…"}` (the fingerprint of `--key`, generated there if the file does not
//! exist; `null` without a key). With `--tls-dir`, it makes a test CA and a certificate for
//! `localhost` and `127.0.0.1` signed by it, writes `DIR/ca.pem`, `DIR/cert.pem` and
//! `DIR/key.pem`, listens for TLS over TCP on `--tls-tcp` and for `wss://` on `--wss`, and the
//! line adds `"tls":"…","wss":"wss://…/truflux","ca":"DIR/ca.pem"`. Its messages, all MessagePack by name unless said otherwise:
//!
//! | name | what the server does |
//! |---|---|
//! | `echo` (raw octets) | sends the same octets back as `echo` |
//! | `say` `{from, text}` | relays it to every other peer |
//! | `num` `{i, pad}` | checks that `i` counts up from 1 per session, for `stats` |
//! | `burst` `{n, size}` | sends `n` numbered `num` messages (each with `size` octets of pad) |
//! | request `stats` | replies `{received, errors, last}` about the `num`s it received |
//! | request `add` `{a, b}` | replies `a + b` |
//! | request `sleep` ms | replies the same number after that many milliseconds |
//! | `nothing` | registered without a handler: a message gets `UNIMPLEMENTED`, a request `NO_REPLY` |
//! | `ask` `{n}` | requests `double` `n` from the client, then sends `answer` `{ok, value, code}` |
//! | `send_file` `{path}` | offers that file; the outcome comes as `file_result` |
//! | `file_ctl` `{id, op}` | `pause`, `resume` or `cancel` the incoming transfer `id` |
//! | `toggle` `{own, peer}` | turns the server's direction on/off, asks the client to turn its own |
//! | request `state` | replies `{secure, peer_secure, resumable}` as the server sees them |
//! | `close_me` `{code, reason}` | the server closes the connection with that code |
//!
//! Every file the client offers is stored in `--files` (declined without it) and reported with
//! `file_result` `{dir: "in", id, name, ok, size, sha256, code}`.
//!
//! The client mode connects (TCP `host:port` or a `ws://` URL), prints `{"ready":true}`, sends
//! each line of its standard input as `say`, and prints each `say` it receives as a JSON line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use truflux::auth::{AuthRequest, Rejection};
use truflux::file::{FileReceive, FileSend};
use truflux::security::{Fingerprint, SecurityConfig, ServerKey};
use truflux::{Client, ClientConfig, Code, ConnectionConfig, Peer, Server, ServerConfig};
use truflux_msg::{Msg, RawMsg, Registry};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Say {
    from: String,
    text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Num {
    i: u64,
    #[serde(with = "serde_bytes", default)]
    pad: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Burst {
    n: u64,
    #[serde(default)]
    size: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stats {
    received: u64,
    errors: u64,
    last: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ask {
    n: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Answer {
    ok: bool,
    value: i64,
    code: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SendFile {
    path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileCtl {
    id: u32,
    op: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileResult {
    dir: String,
    id: u32,
    name: String,
    ok: bool,
    size: u64,
    sha256: String,
    code: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Toggle {
    #[serde(default)]
    own: Option<bool>,
    #[serde(default)]
    peer: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    secure: bool,
    peer_secure: bool,
    resumable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CloseMe {
    code: u16,
    #[serde(default)]
    reason: String,
}

const ECHO: RawMsg = Msg::named("echo");
const SAY: Msg<Say> = Msg::named("say");
const NUM: Msg<Num> = Msg::named("num");
const BURST: Msg<Burst> = Msg::named("burst");
const STATS: RawMsg = Msg::named("stats");
const STATS_REPLY: Msg<Stats> = Msg::named("stats");
const ADD: Msg<Add> = Msg::named("add");
const SUM: Msg<i64> = Msg::named("sum");
const SLEEP: Msg<u64> = Msg::named("sleep");
const NOTHING: RawMsg = Msg::named("nothing");
const ASK: Msg<Ask> = Msg::named("ask");
const DOUBLE: Msg<i64> = Msg::named("double");
const ANSWER: Msg<Answer> = Msg::named("answer");
const SEND_FILE: Msg<SendFile> = Msg::named("send_file");
const FILE_CTL: Msg<FileCtl> = Msg::named("file_ctl");
const FILE_RESULT: Msg<FileResult> = Msg::named("file_result");
const TOGGLE: Msg<Toggle> = Msg::named("toggle");
const STATE: RawMsg = Msg::named("state");
const STATE_REPLY: Msg<State> = Msg::named("state");
const CLOSE_ME: Msg<CloseMe> = Msg::named("close_me");

/// The numbered messages one session received, and the numbers it sent.
#[derive(Default)]
struct Counts {
    stats: Stats,
    sent: u64,
}

#[derive(Clone, Default)]
struct PeerCounts(Arc<Mutex<Counts>>);

fn counts(peer: &Peer) -> PeerCounts {
    if let Some(counts) = peer.session().get::<PeerCounts>() {
        return counts;
    }
    let counts = PeerCounts::default();
    peer.session().insert(counts.clone());
    counts
}

/// Transfers in progress, by peer and transfer id.
#[derive(Default)]
struct Transfers {
    incoming: HashMap<(u64, u32), Arc<FileReceive>>,
    outgoing: HashMap<(u64, u32), Arc<FileSend>>,
}

type Shared = Arc<Mutex<Transfers>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Options {
    tcp: Option<String>,
    ws: Option<String>,
    key: Option<PathBuf>,
    token: Option<String>,
    files: Option<PathBuf>,
    required: bool,
    plain_resume: bool,
    resume_window: Option<Duration>,
    heartbeat: Option<Duration>,
    heartbeat_timeout: Option<Duration>,
    name: String,
    pin: Option<String>,
    tls_dir: Option<PathBuf>,
    tls_tcp: Option<String>,
    wss: Option<String>,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        tcp: None,
        ws: None,
        key: None,
        token: None,
        files: None,
        required: false,
        plain_resume: false,
        resume_window: None,
        heartbeat: None,
        heartbeat_timeout: None,
        name: "rust".into(),
        pin: None,
        tls_dir: None,
        tls_tcp: None,
        wss: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        let ms = |v: String| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| e.to_string())
        };
        match flag.as_str() {
            "--tcp" => o.tcp = Some(value()?),
            "--ws" => o.ws = Some(value()?),
            "--key" => o.key = Some(value()?.into()),
            "--token" => o.token = Some(value()?),
            "--files" => o.files = Some(value()?.into()),
            "--required" => o.required = true,
            "--plain-resume" => o.plain_resume = true,
            "--resume-window-ms" => o.resume_window = Some(ms(value()?)?),
            "--heartbeat-ms" => o.heartbeat = Some(ms(value()?)?),
            "--heartbeat-timeout-ms" => o.heartbeat_timeout = Some(ms(value()?)?),
            "--name" => o.name = value()?,
            "--pin" => o.pin = Some(value()?),
            "--tls-dir" => o.tls_dir = Some(value()?.into()),
            "--tls-tcp" => o.tls_tcp = Some(value()?),
            "--wss" => o.wss = Some(value()?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(o)
}

fn registry(transfers: Shared) -> Registry {
    let ctl = transfers.clone();
    Registry::builder()
        .on(ECHO, |peer, payload: Bytes| async move {
            ECHO.send(&peer, &payload).await
        })
        .on(SAY, |peer, say: Say| async move {
            if let Some(server) = peer.server() {
                SAY.broadcast(&server, &say, &[peer.id()])?;
            }
            Ok::<_, truflux::Error>(())
        })
        .on(NUM, |peer, num: Num| async move {
            let counts = counts(&peer);
            let mut c = lock(&counts.0);
            if num.i != c.stats.last + 1 {
                c.stats.errors += 1;
            }
            c.stats.last = num.i;
            c.stats.received += 1;
        })
        .on(BURST, |peer, burst: Burst| async move {
            // Sent from a task of its own: a handler is cut short when its connection is
            // lost, and the numbers must go on across a resume.
            tokio::spawn(async move {
                let counts = counts(&peer);
                for _ in 0..burst.n {
                    let i = {
                        let mut c = lock(&counts.0);
                        c.sent += 1;
                        c.sent
                    };
                    let num = Num {
                        i,
                        pad: vec![0x5a; burst.size as usize],
                    };
                    if NUM.send(&peer, &num).await.is_err() {
                        return;
                    }
                }
            });
        })
        .on_request(STATS, STATS_REPLY, |peer, _: Bytes| async move {
            Ok(lock(&counts(&peer).0).stats.clone())
        })
        .on_request(
            ADD,
            SUM,
            |_, add: Add| async move { Ok(add.a.wrapping_add(add.b)) },
        )
        .on_request(SLEEP, SLEEP, |_, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
            Ok(ms)
        })
        .message(NOTHING)
        .on(ASK, |peer, ask: Ask| async move {
            // Handlers run in the connection's read loop: the reply can only be read while
            // the request waits elsewhere.
            tokio::spawn(async move {
                let answer = match DOUBLE.request(&peer, &ask.n, DOUBLE).await {
                    Ok(value) => Answer {
                        ok: true,
                        value,
                        code: 0,
                    },
                    Err(error) => Answer {
                        ok: false,
                        value: 0,
                        code: error.code().0,
                    },
                };
                let _ = ANSWER.send(&peer, &answer).await;
            });
        })
        .message(DOUBLE)
        .message(ANSWER)
        .on(SEND_FILE, move |peer, send: SendFile| {
            let transfers = transfers.clone();
            async move { send_file(peer, send.path, transfers).await }
        })
        .on(FILE_CTL, move |peer, c: FileCtl| {
            let ctl = ctl.clone();
            async move {
                let key = (peer.id().0, c.id);
                let t = lock(&ctl);
                if let Some(rx) = t.incoming.get(&key) {
                    match c.op.as_str() {
                        "pause" => rx.pause(),
                        "resume" => rx.resume(),
                        _ => rx.cancel(),
                    }
                } else if let Some(tx) = t.outgoing.get(&key) {
                    tx.cancel();
                }
            }
        })
        .message(FILE_RESULT)
        .on(TOGGLE, |peer, t: Toggle| async move {
            if let Some(on) = t.own {
                peer.set_own_security(on).await?;
            }
            if let Some(on) = t.peer {
                peer.set_peer_security(on).await?;
            }
            Ok::<_, truflux::Error>(())
        })
        .on_request(STATE, STATE_REPLY, |peer, _: Bytes| async move {
            Ok(State {
                secure: peer.is_secure(),
                peer_secure: peer.is_peer_secure(),
                resumable: peer.is_resumable(),
            })
        })
        .on(CLOSE_ME, |peer, c: CloseMe| async move {
            peer.close(Code(c.code), &c.reason).await;
        })
        .build()
        .expect("distinct names")
}

async fn send_file(peer: Peer, path: String, transfers: Shared) -> Result<(), truflux::Error> {
    let name = std::path::Path::new(&path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sending = Arc::new(peer.send_file(&path).await?);
    let key = (peer.id().0, sending.id());
    lock(&transfers).outgoing.insert(key, sending.clone());
    tokio::spawn(async move {
        let outcome = sending.finished().await;
        lock(&transfers).outgoing.remove(&key);
        let _ = FILE_RESULT
            .send(&peer, &file_result("out", key.1, name, outcome))
            .await;
    });
    Ok(())
}

fn file_result(
    dir: &str,
    id: u32,
    name: String,
    outcome: Result<(u64, [u8; 32]), truflux::FileError>,
) -> FileResult {
    let (ok, size, sha256, code) = match outcome {
        Ok((size, sha256)) => (true, size, hex(&sha256), 0),
        Err(error) => (false, 0, String::new(), error.code.0),
    };
    FileResult {
        dir: dir.into(),
        id,
        name,
        ok,
        size,
        sha256,
        code,
    }
}

async fn serve(o: Options) -> Result<(), Box<dyn std::error::Error>> {
    let transfers: Shared = Arc::default();
    let mut security = SecurityConfig::default().required(o.required);
    let mut fingerprint = None;
    if let Some(path) = &o.key {
        let key = ServerKey::load_or_generate(path)?;
        fingerprint = Some(key.fingerprint().to_string());
        security = security.server_key(key);
    }
    let mut connection = ConnectionConfig::default().security(security);
    if let Some(interval) = o.heartbeat {
        connection = connection.heartbeat_interval(Some(interval));
    }
    if let Some(timeout) = o.heartbeat_timeout {
        connection = connection.heartbeat_timeout(timeout);
    }
    let mut config = ServerConfig::default()
        .connection(connection)
        .plain_resume(o.plain_resume);
    if let Some(window) = o.resume_window {
        config = config.resume_window(window);
    }
    let mut builder = Server::builder()
        .config(config)
        .protocol(registry(transfers.clone()));
    if let Some(addr) = &o.tcp {
        builder = builder.tcp(addr.clone());
    }
    if let Some(addr) = &o.ws {
        builder = builder.ws(addr.clone(), "/truflux");
    }
    let ca = match &o.tls_dir {
        Some(dir) => {
            let (with_tls, ca) = tls::listen(builder, dir, &o)?;
            builder = with_tls;
            Some(ca)
        }
        None => None,
    };
    if let Some(token) = o.token.clone() {
        builder = builder.authenticate(move |request: AuthRequest| {
            let ok = truflux::auth::tokens_match(request.token.as_str(), &token);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(Rejection::from("unknown token"))
                }
            }
        });
    }
    let dir = o.files.clone();
    builder = builder.on_file(move |peer, offer| {
        let (dir, transfers, peer) = (dir.clone(), transfers.clone(), peer.clone());
        tokio::spawn(async move { receive_file(peer, offer, dir, transfers).await });
    });
    let server = builder.start().await?;
    // Listeners are numbered in the order they were given: TCP, then TLS; ws, then wss.
    let (addrs, urls) = (server.local_addrs(), server.ws_urls());
    let tcp = o.tcp.as_ref().map(|_| addrs[0].to_string());
    let ws = o.ws.as_ref().map(|_| urls[0].clone());
    let tls = o
        .tls_tcp
        .as_ref()
        .and_then(|_| addrs.last())
        .map(|a| a.to_string());
    let wss = o.wss.as_ref().and_then(|_| urls.last().cloned());
    let quoted = |v: Option<String>| v.map_or("null".to_string(), |v| format!("{v:?}"));
    let tls_fields = match ca {
        Some(ca) => format!(
            ",\"tls\":{},\"wss\":{},\"ca\":{}",
            quoted(tls),
            quoted(wss),
            quoted(Some(ca.display().to_string()))
        ),
        None => String::new(),
    };
    println!(
        "{{\"tcp\":{},\"ws\":{},\"fingerprint\":{}{tls_fields}}}",
        quoted(tcp),
        quoted(ws),
        quoted(fingerprint)
    );
    tokio::signal::ctrl_c().await?;
    server.close(Code::GOING_AWAY, "server shutting down").await;
    Ok(())
}

#[cfg(feature = "tls")]
#[path = "support/certs.rs"]
#[allow(dead_code)] // tests use the rest
mod certs;

/// `--tls-dir`: a test CA, a certificate for this machine, and the TLS listeners.
mod tls {
    use std::path::{Path, PathBuf};

    use truflux::ServerBuilder;

    /// Adds the TLS listeners; returns the path of the CA certificate clients should trust.
    #[cfg(feature = "tls")]
    pub fn listen(
        mut builder: ServerBuilder,
        dir: &Path,
        o: &super::Options,
    ) -> Result<(ServerBuilder, PathBuf), Box<dyn std::error::Error>> {
        let ca = super::certs::TestCa::new("truflux interop test CA")?;
        let leaf = ca.leaf(&["localhost", "127.0.0.1"])?;
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("ca.pem"), ca.pem())?;
        std::fs::write(dir.join("cert.pem"), &leaf.cert_pem)?;
        std::fs::write(dir.join("key.pem"), &leaf.key_pem)?;
        let config = truflux::tls::server_config_from_pem(dir.join("cert.pem"), dir.join("key.pem"))?;
        if let Some(addr) = &o.tls_tcp {
            builder = builder.tls(addr.clone(), config.clone());
        }
        if let Some(addr) = &o.wss {
            builder = builder.wss(addr.clone(), "/truflux", config);
        }
        Ok((builder, dir.join("ca.pem")))
    }

    #[cfg(not(feature = "tls"))]
    pub fn listen(
        _: ServerBuilder,
        _: &Path,
        _: &super::Options,
    ) -> Result<(ServerBuilder, PathBuf), Box<dyn std::error::Error>> {
        Err("--tls-dir needs the tls feature (cargo run --features tls --example interop)".into())
    }
}

async fn receive_file(peer: Peer, offer: truflux::file::FileOffer, dir: Option<PathBuf>, transfers: Shared) {
    let id = offer.id();
    let name = offer.name().to_owned();
    let Some(dir) = dir else {
        return offer.decline("this server stores no files");
    };
    let receiving = match offer.accept_into(dir).await {
        Ok(receiving) => Arc::new(receiving),
        Err(_) => return,
    };
    let key = (peer.id().0, id);
    lock(&transfers).incoming.insert(key, receiving.clone());
    let outcome = receiving.finished().await;
    lock(&transfers).incoming.remove(&key);
    let _ = FILE_RESULT
        .send(&peer, &file_result("in", id, name, outcome))
        .await;
}

async fn client(addr: String, o: Options) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::io::AsyncBufReadExt;

    let printing = Registry::builder()
        .on(SAY, |_, say: Say| async move {
            println!("{{\"from\":{:?},\"text\":{:?}}}", say.from, say.text);
        })
        .build()?;
    let mut security = SecurityConfig::default();
    if let Some(pin) = &o.pin {
        security = security.pin(pin.parse::<Fingerprint>()?);
    }
    let config = ClientConfig::default().connection(ConnectionConfig::default().security(security));
    let mut builder = Client::builder().protocol(printing).config(config);
    if let Some(token) = &o.token {
        builder = builder.token(token.clone());
    }
    let client = if addr.starts_with("ws://") {
        builder.connect_ws(&addr).await?
    } else {
        builder.connect(addr.as_str()).await?
    };
    println!("{{\"ready\":true}}");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            info = client.peer().closed() => {
                println!("{{\"closed\":{}}}", info.code.0);
                return Ok(());
            }
            line = lines.next_line() => match line? {
                None => break,
                Some(text) => SAY.send(&client, &Say { from: o.name.clone(), text }).await?,
            },
        }
    }
    client.peer().close(Code::NORMAL, "done").await;
    Ok(())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("client") => match (args.get(1), options(&args[2.min(args.len())..])) {
            (Some(addr), Ok(o)) => client(addr.clone(), o).await,
            (None, _) => Err("usage: interop client ADDR [--name NAME] [--token T] [--pin HEX]".into()),
            (_, Err(e)) => Err(e.into()),
        },
        _ => match options(&args) {
            Ok(o) => serve(o).await,
            Err(e) => Err(e.into()),
        },
    };
    if let Err(error) = result {
        eprintln!("interop: {error}");
        std::process::exit(1);
    }
}
