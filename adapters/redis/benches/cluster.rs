//! The cluster's cost: a broadcast to 1,000 and 10,000 peers spread over two nodes with the
//! Redis adapter against the same peers on one server alone and on one node with the adapter
//! (time until the last peer has it, median of several rounds), and messages per second from
//! one node to another through Redis. Clients run in the orchestrator's process, each server
//! in its own: on 2 cores they share the CPU, so the figures compare setups, not machines.
//!
//! ```sh
//! cargo bench -p truflux-redis --bench cluster            # about 10 s once built
//! cargo bench -p truflux-redis --bench cluster -- --quick # 1,000 peers only, fewer rounds
//! ```
//!
//! The binary re-executes itself: `--serve URL|alone` runs one server and prints its port, then
//! runs until its standard input closes. The orchestrator starts its own `redis-server` on a
//! free loopback port, the servers, and every client (in its own process), and prints Markdown
//! tables. Needs `redis-server` on PATH (`scripts/ensure-redis.sh`).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;
use truflux::{protocol, Client, ClientConfig, ConnectionConfig, Message, Server, ServerConfig};
use truflux_redis::{RedisAdapter, RedisConfig};

/// Ask the server to broadcast this message to everyone but the sender.
const FAN_OUT: u32 = 1;
/// Ask the server to broadcast this many 64-octet messages (a big-endian u32) to everyone but
/// the sender.
const BURST: u32 = 2;
/// Upper bound of one measurement.
const PATIENCE: Duration = Duration::from_secs(60);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--serve") {
        let target = args.get(at + 1).cloned().unwrap_or_else(|| "alone".into());
        return serve(&target);
    }
    // `cargo bench` passes `--bench`; nothing else is asked of this harness.
    let quick = args.iter().any(|a| a == "--quick");
    raise_nofile(if quick { 1_100 } else { 10_100 });
    let started = Instant::now();
    let redis = RedisServer::start();
    let version = redis_version();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let sizes: &[usize] = if quick { &[1_000] } else { &[1_000, 10_000] };
    println!("truflux-redis cluster benchmark, {version}, {} cores\n", cores());
    println!("| peers | one server alone | one node with the adapter | two nodes over Redis | two / alone |");
    println!("|---:|---:|---:|---:|---:|");
    for &peers in sizes {
        let rounds = if peers >= 10_000 { 9 } else { 21 };
        let rounds = if quick { 5 } else { rounds };
        let alone = runtime.block_on(fan_out(&["alone".to_owned()], peers, rounds));
        let single = runtime.block_on(fan_out(&[redis.url()], peers, rounds));
        let pair = runtime.block_on(fan_out(&[redis.url(), redis.url()], peers, rounds));
        println!(
            "| {peers} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2}× |",
            alone * 1e3,
            single * 1e3,
            pair * 1e3,
            pair / alone
        );
    }
    let count = if quick { 20_000 } else { 100_000 };
    let rate = runtime.block_on(throughput(&redis.url(), count, if quick { 2 } else { 3 }));
    println!("\n| through Redis, node to node | messages/s (64 B, median) |");
    println!("|---|---:|");
    println!("| {count} broadcasts, one receiver on the other node | {rate:.0} |");
    println!("\nmedians; time until the last peer has the broadcast, from the trigger's send");
    println!("whole run: {:.1} s", started.elapsed().as_secs_f64());
}

/// One server: with the Redis adapter at `target`, or alone. Prints `PORT n`.
fn serve(target: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let config = ServerConfig::default().connection(ConnectionConfig::default().outbound_queue(1 << 16));
        let adapter = match target {
            "alone" => None,
            url => Some(
                RedisAdapter::builder(url)
                    .config(RedisConfig::default().max_held(1 << 16))
                    .connect()
                    .await
                    .expect("redis"),
            ),
        };
        let handler_adapter = adapter.clone();
        let mut builder = Server::builder()
            .tcp("127.0.0.1:0")
            .config(config)
            .protocol(protocol::from_fn(move |peer, message: Message| {
                let adapter = handler_adapter.clone();
                async move { on_message(peer, message, adapter).await }
            }));
        if let Some(adapter) = adapter {
            builder = builder.adapter(adapter);
        }
        let server = builder.start().await.expect("server");
        println!("PORT {}", server.local_addrs()[0].port());
        // Until the orchestrator closes our standard input.
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
        server.close(truflux::Code::GOING_AWAY, "done").await;
    });
}

async fn on_message(peer: truflux::Peer, message: Message, adapter: Option<RedisAdapter>) {
    let Some(server) = peer.server() else { return };
    match message.id {
        FAN_OUT => {
            let _ = server.broadcast(message, &[peer.id()]);
        }
        BURST if message.payload.len() == 4 => {
            let count = u32::from_be_bytes([
                message.payload[0],
                message.payload[1],
                message.payload[2],
                message.payload[3],
            ]);
            let payload = Bytes::from_static(&[7u8; 64]);
            for i in 0..count {
                let _ = server.broadcast_raw(1, payload.clone(), &[peer.id()]);
                // Backpressure: wait for Redis rather than reach the adapter's bound.
                if let Some(adapter) = adapter.as_ref().filter(|_| i % 4096 == 4095) {
                    if adapter.stats().held > 8192 {
                        adapter.flushed().await;
                    }
                }
            }
        }
        _ => {}
    }
}

/// Median seconds until every one of `peers` clients, spread over servers for `targets`, has a
/// broadcast made by the first server.
async fn fan_out(targets: &[String], peers: usize, rounds: usize) -> f64 {
    let servers: Vec<ServerProcess> = targets.iter().map(|t| ServerProcess::start(t)).collect();
    let received = Arc::new(AtomicUsize::new(0));
    let all = Arc::new(Notify::new());
    let mut clients = Vec::with_capacity(peers);
    for chunk in 0..peers.div_ceil(100) {
        let mut batch = tokio::task::JoinSet::new();
        for i in chunk * 100..((chunk + 1) * 100).min(peers) {
            let port = servers[i % servers.len()].port;
            batch.spawn(counting_client(port, received.clone(), all.clone(), peers));
        }
        clients.extend(batch.join_all().await);
    }
    let trigger = counting_client(
        servers[0].port,
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Notify::new()),
        0,
    )
    .await;
    // Each node's clients are connected; wait until the cluster knows them all.
    settle(&trigger, &received, &all, peers).await;
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        received.store(0, Ordering::SeqCst);
        let notified = all.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let start = Instant::now();
        trigger
            .peer()
            .send_raw(FAN_OUT, Bytes::from_static(&[1u8; 64]))
            .await
            .expect("trigger");
        tokio::time::timeout(PATIENCE, notified)
            .await
            .expect("every peer has it");
        times.push(start.elapsed().as_secs_f64());
    }
    drop(clients);
    drop(servers);
    median(times)
}

/// Rounds until a broadcast reaches every peer once (the nodes have registered with each
/// other and every reader is running).
async fn settle(trigger: &Client, received: &Arc<AtomicUsize>, all: &Arc<Notify>, peers: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        received.store(0, Ordering::SeqCst);
        let notified = all.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        trigger
            .peer()
            .send_raw(FAN_OUT, Bytes::from_static(&[0u8; 8]))
            .await
            .expect("trigger");
        if tokio::time::timeout(Duration::from_secs(2), notified)
            .await
            .is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {peers} peers reached",
            received.load(Ordering::SeqCst)
        );
    }
}

/// Median messages per second from the first node's broadcasts to one client on the second.
async fn throughput(url: &str, count: u32, rounds: usize) -> f64 {
    let servers = [ServerProcess::start(url), ServerProcess::start(url)];
    let received = Arc::new(AtomicUsize::new(0));
    let all = Arc::new(Notify::new());
    let receiver = counting_client(servers[1].port, received.clone(), all.clone(), count as usize).await;
    let trigger = counting_client(
        servers[0].port,
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Notify::new()),
        0,
    )
    .await;
    let probe = Arc::new(AtomicUsize::new(0));
    let probe_all = Arc::new(Notify::new());
    let _probe_client = counting_client(servers[1].port, probe.clone(), probe_all.clone(), 1).await;
    settle(&trigger, &probe, &probe_all, 1).await;
    let mut rates = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        received.store(0, Ordering::SeqCst);
        let notified = all.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let start = Instant::now();
        trigger
            .peer()
            .send_raw(BURST, Bytes::copy_from_slice(&count.to_be_bytes()))
            .await
            .expect("trigger");
        tokio::time::timeout(PATIENCE, notified)
            .await
            .expect("every message arrives");
        rates.push(f64::from(count) / start.elapsed().as_secs_f64());
    }
    drop(receiver);
    median(rates)
}

/// A client that counts the messages it receives and wakes `all` at the `target`th.
async fn counting_client(port: u16, received: Arc<AtomicUsize>, all: Arc<Notify>, target: usize) -> Client {
    let config = ClientConfig::default().connect_timeout(Duration::from_secs(60));
    Client::builder()
        .config(config)
        .protocol(protocol::from_fn(move |_peer, _message| {
            if received.fetch_add(1, Ordering::SeqCst) + 1 == target {
                all.notify_one();
            }
            std::future::ready(())
        }))
        .connect(("127.0.0.1", port))
        .await
        .expect("connect")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct ServerProcess {
    child: Child,
    port: u16,
}

impl ServerProcess {
    fn start(target: &str) -> ServerProcess {
        let mut child = Command::new(std::env::current_exe().expect("this binary"))
            .args(["--serve", target])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a server");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the server's port");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .expect("PORT n");
        ServerProcess { child, port }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server could not start ({e}): run scripts/ensure-redis.sh"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        RedisServer { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            v.split_whitespace()
                .find(|w| w.starts_with("v="))
                .map(|v| format!("Redis {}", &v[2..]))
        })
        .unwrap_or_else(|| "Redis ?".into())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Raises the soft open-files limit to the hard one: 10,000 clients need more than the
/// common default of 1,024 (the servers inherit it).
fn raise_nofile(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) };
    assert!(
        now.rlim_cur >= needed,
        "open-files limit {} is below {needed}: raise it (ulimit -n)",
        now.rlim_cur
    );
}
