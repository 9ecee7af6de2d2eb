//! What the cluster tests share: a real `redis-server` on a free loopback port that a test
//! kills and restarts, truflux nodes with the Redis adapter (in the test's runtime, or in a
//! runtime of their own that a test can kill), clients that record what they receive, and
//! waits with a deadline.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use truflux::{protocol, Client, ConnectionConfig, Message, Peer, Presence, Server, ServerConfig};
use truflux_redis::{ClusterEvent, RedisAdapter, RedisConfig};

/// Upper bound of any wait: a hung test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `condition` until it holds; panics past the deadline.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A `redis-server` process of the test's own, on 127.0.0.1.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    persistent: bool,
}

impl Redis {
    /// Redis without persistence: a restart starts empty.
    pub async fn start() -> Redis {
        Redis::launch(false).await
    }

    /// Redis with an append-only file synced on every write: a restart brings everything back.
    pub async fn start_persistent() -> Redis {
        Redis::launch(true).await
    }

    async fn launch(persistent: bool) -> Redis {
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("truflux-redis-test-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("a directory for redis-server");
            let mut redis = Redis {
                port,
                child: None,
                dir,
                persistent,
            };
            if redis.spawn().await {
                return redis;
            }
        }
        panic!("redis-server did not start on a free port (5 tries)");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the process; false if it exited (the port was taken meanwhile).
    async fn spawn(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (not on PATH): the cluster tests need a real one. \
                 Install it with scripts/ensure-redis.sh (Debian's redis-server package)."
            ),
            Err(error) => panic!("cannot start redis-server: {error}"),
        };
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if ping(self.port).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "redis-server on port {} did not answer PING within 10 s",
            self.port
        );
    }

    /// Kills the process (SIGKILL: no shutdown, no final save) and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Sends one command as Redis's default user; the first line of the answer.
    pub async fn command(&self, args: &[&str]) -> String {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("redis-server accepts");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("the command is sent");
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n") {
            let n = within("an answer", stream.read(&mut byte))
                .await
                .expect("an answer");
            assert_eq!(n, 1, "redis-server closed the connection");
            answer.push(byte[0]);
        }
        String::from_utf8_lossy(&answer).trim_end().to_owned()
    }

    /// Starts it again on the same port (empty, or from its append-only file).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        assert!(
            self.spawn().await,
            "redis-server could not start again on {}",
            self.port
        );
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

async fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    matches!(stream.read(&mut answer).await, Ok(n) if answer[..n].starts_with(b"+PONG"))
}

/// A TCP relay to a Redis on loopback that a test can cut (every connection through it is
/// dropped and new ones are refused until it is restored) or mute (commands reach Redis, its
/// answers are thrown away), while Redis itself stays up.
pub struct Proxy {
    pub port: u16,
    /// Whether connections pass, and the relays running.
    state: Arc<Mutex<(bool, Vec<tokio::task::JoinHandle<()>>)>>,
    muted: Arc<AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

/// Relays one connection; Redis's answers are dropped while `muted` is set.
async fn relay(inbound: TcpStream, redis_port: u16, muted: Arc<AtomicBool>) {
    let Ok(outbound) = TcpStream::connect(("127.0.0.1", redis_port)).await else {
        return;
    };
    let (mut from_client, mut to_client) = inbound.into_split();
    let (mut from_redis, mut to_redis) = outbound.into_split();
    let commands = tokio::io::copy(&mut from_client, &mut to_redis);
    let answers = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match from_redis.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) if !muted.load(Ordering::SeqCst) => {
                    if to_client.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = commands => {}
        () = answers => {}
    }
}

impl Proxy {
    pub async fn start(redis_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        let state = Arc::new(Mutex::new((true, Vec::new())));
        let muted = Arc::new(AtomicBool::new(false));
        let (relays, mute) = (state.clone(), muted.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut state = relays.lock().unwrap();
                if !state.0 {
                    continue; // Refused: dropped at once.
                }
                state
                    .1
                    .push(tokio::spawn(relay(inbound, redis_port, mute.clone())));
            }
        });
        Proxy {
            port,
            state,
            muted,
            accept,
        }
    }

    /// Redis's answers are thrown away (or, with `false`, passed on again).
    pub fn mute(&self, muted: bool) {
        self.muted.store(muted, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Drops every connection through the relay and refuses new ones.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 = false;
        for relay in state.1.drain(..) {
            relay.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.state.lock().unwrap().0 = true;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Settings that make a test's timers short: heartbeats every 100 ms, gone after 500 ms.
pub fn fast() -> RedisConfig {
    RedisConfig::default()
        .heartbeat_interval(Duration::from_millis(100))
        .node_ttl(Duration::from_millis(500))
        .reconnect_min(Duration::from_millis(20))
        .reconnect_max(Duration::from_millis(200))
        .query_timeout(Duration::from_secs(3))
}

/// A server with the Redis adapter, what its application saw, and its new peers.
pub struct Node {
    pub server: Server,
    pub adapter: RedisAdapter,
    pub events: Arc<Mutex<Vec<ClusterEvent>>>,
    pub presence: Arc<Mutex<Vec<Presence>>>,
    peers: tokio::sync::Mutex<mpsc::UnboundedReceiver<Peer>>,
}

impl Node {
    pub async fn start(url: &str, config: RedisConfig) -> Node {
        Node::start_with(url, config, ServerConfig::default()).await
    }

    pub async fn start_with(url: &str, config: RedisConfig, server_config: ServerConfig) -> Node {
        let events = Arc::new(Mutex::new(Vec::new()));
        let log = events.clone();
        let adapter = RedisAdapter::builder(url)
            .config(config)
            .on_event(move |event| log.lock().unwrap().push(event.clone()))
            .connect()
            .await
            .expect("the adapter connects");
        let presence = Arc::new(Mutex::new(Vec::new()));
        let seen = presence.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let server = Server::builder()
            .tcp("127.0.0.1:0")
            .config(server_config)
            .on_connect(move |peer| {
                let _ = tx.send(peer);
                std::future::ready(())
            })
            .on_presence(move |change| seen.lock().unwrap().push(change.clone()))
            .adapter(adapter.clone())
            .start()
            .await
            .expect("the server starts");
        Node {
            server,
            adapter,
            events,
            presence,
            peers: tokio::sync::Mutex::new(rx),
        }
    }

    /// Connects a client; its messages arrive in the member's log.
    pub async fn member(&self) -> Member {
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        let client = Client::connect(
            self.server.local_addrs()[0],
            protocol::from_fn(move |_peer, message: Message| {
                seen.lock().unwrap().push(message.payload);
                std::future::ready(())
            }),
        )
        .await
        .expect("the client connects");
        let peer = within("the server's peer", async {
            self.peers.lock().await.recv().await
        })
        .await
        .expect("peer channel open");
        Member { client, peer, log }
    }

    pub fn events(&self) -> Vec<ClusterEvent> {
        self.events.lock().unwrap().clone()
    }

    pub fn saw(&self, matches: impl Fn(&ClusterEvent) -> bool) -> bool {
        self.events.lock().unwrap().iter().any(matches)
    }

    pub fn presence(&self) -> Vec<Presence> {
        self.presence.lock().unwrap().clone()
    }
}

/// A client, its peer on the server, and every payload it received, in order.
pub struct Member {
    pub client: Client,
    pub peer: Peer,
    pub log: Arc<Mutex<Vec<Bytes>>>,
}

impl Member {
    pub fn received(&self) -> Vec<Bytes> {
        self.log.lock().unwrap().clone()
    }

    pub fn texts(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    /// Waits until the last payload received is `marker`; everything before it, in order.
    pub async fn until(&self, marker: &str) -> Vec<String> {
        eventually(&format!("{marker:?} to arrive"), || async {
            self.texts().iter().any(|t| t == marker)
        })
        .await;
        self.texts()
    }
}

/// A node in a runtime of its own: killing that runtime ends every task of the node at once
/// (no graceful shutdown, no leaving the cluster), as if its process died.
pub struct Detached {
    pub node: Option<Node>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Detached {
    pub async fn start(url: &str, config: RedisConfig) -> Detached {
        let url = url.to_owned();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime");
            let node = runtime.block_on(Node::start(&url, config));
            let _ = tx.send((runtime, node));
        });
        let (runtime, node) = within("the detached node", rx).await.expect("the node starts");
        Detached {
            node: Some(node),
            runtime: Some(runtime),
        }
    }

    /// Connects a client from the test's runtime to the node.
    pub async fn member(&self) -> Member {
        self.node.as_ref().expect("alive").member().await
    }

    /// Kills the node: its runtime stops with every task in it.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        self.kill();
        // The node's handles refer to the dead runtime; forget them there.
        if let Some(node) = self.node.take() {
            std::mem::forget(node);
        }
    }
}

/// Server settings with room for bursts: tests send faster than clients read.
pub fn roomy() -> ServerConfig {
    ServerConfig::default().connection(ConnectionConfig::default().outbound_queue(8192))
}
