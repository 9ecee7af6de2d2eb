//! The benchmark harness: truflux against the floor (raw tokio TCP with a 4-byte length prefix)
//! and the peers (tokio-tungstenite, fastwebsockets, Node's `ws` when Node is installed), in
//! one run, server and client in separate processes on single-threaded runtimes, with `-mt`
//! rows on 2-worker multi-threaded runtimes and, with feature `tls`, TLS rows against a TLS
//! floor (tokio-rustls with the same length prefix).
//!
//! ```sh
//! cargo bench --bench truflux                     # full run (several minutes)
//! cargo bench --bench truflux -- --quick          # smoke run, under a minute
//! cargo bench --bench truflux -- --cpus different # server on CPU 0, client on CPU 1
//! cargo bench --bench truflux -- --only roundtrip # or: scale, broadcast, memory
//! cargo bench --bench truflux --features tls -- --only roundtrip   # with the TLS rows
//! ```
//!
//! The binary re-executes itself: `--serve IMPL` runs one server and prints its port;
//! `--client …` runs one measurement and prints one result line. The orchestrator (no flags)
//! starts them pinned with `taskset`, interleaves the implementations round by round, and prints
//! Markdown tables of medians.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use truflux::frame::Frame;
use truflux::security::record::{Opener, Sealer};
use truflux::security::{SecurityConfig, Suite};
use truflux::{protocol, Client, ClientConfig, ConnectionConfig, Server, ServerConfig};

#[path = "peers/fastws.rs"]
mod fastws;
#[cfg(feature = "tls")]
#[path = "peers/tls.rs"]
mod tls;

/// `truflux-wire` is the truflux TCP server with a client that speaks the wire format inline by
/// hand (like the floor's client): its distance from the floor is the server's share.
/// `truflux-gcm` / `truflux-cbc` are truflux over TCP with both directions secure under
/// `ecdh-p256-aes128gcm` / `dh-ffdhe2048-aes256cbc-hmacsha256`. A name ending in `-mt` runs
/// its server and client on 2-worker multi-threaded runtimes.
const IMPLS: &[&str] = &[
    "raw-tcp",
    "raw-tcp-steps",
    "tungstenite",
    "fastwebsockets",
    "node-ws",
    "truflux-wire",
    "truflux-tcp",
    "truflux-ws",
    "truflux-gcm",
    "truflux-cbc",
    "raw-tcp-mt",
    "truflux-tcp-mt",
    "truflux-ws-mt",
];
/// The TLS rows (feature `tls`): the TLS floor and truflux over TLS over TCP.
#[cfg(feature = "tls")]
const TLS_IMPLS: &[&str] = &["raw-tls", "truflux-tls"];
#[cfg(not(feature = "tls"))]
const TLS_IMPLS: &[&str] = &[];
const CASES: &[(usize, usize)] = &[
    (64, 10_000),
    (16 * 1024, 5_000),
    (128 * 1024, 1_000),
    (1024 * 1024, 100),
    (10 * 1024 * 1024, 10),
];
/// Room for the largest case plus headers.
const MAX_PAYLOAD: u32 = 11 * 1024 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(imp) = flag("--serve") {
        let (imp, mt) = runtime_kind(&imp);
        return runtime(mt).block_on(serve(&imp));
    }
    if let Some(mode) = flag("--client") {
        let (imp, mt) = runtime_kind(&flag("--impl").expect("--impl"));
        let port: u16 = flag("--port").and_then(|p| p.parse().ok()).expect("--port");
        let size: usize = flag("--size").and_then(|s| s.parse().ok()).unwrap_or(64);
        let count: usize = flag("--count").and_then(|s| s.parse().ok()).unwrap_or(100);
        let line = if mode == "roundtrip" {
            // In a task, as an application's client code would run: under `block_on`, each
            // wake of the blocked-on future costs tokio's current-thread scheduler a driver
            // poll (an extra `epoll_wait`), which charges a client whose connection runs in a
            // task of its own (truflux) and not one that does all its IO inline (the baselines).
            runtime(mt).block_on(async move {
                tokio::spawn(async move { roundtrip_client(&imp, port, size, count).await })
                    .await
                    .expect("client task")
            })
        } else {
            runtime(mt).block_on(client(&mode, &imp, port, size, count, mt))
        };
        println!("{line}");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let cpus = flag("--cpus").unwrap_or_else(|| "same".into());
    let only = flag("--only");
    let rounds: usize = flag("--rounds")
        .and_then(|r| r.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let plan = Plan { quick, cpus, rounds };
    println!(
        "# truflux benchmarks ({} mode, cpus: {}, {} round(s))\n",
        if quick { "quick" } else { "full" },
        plan.cpus,
        rounds
    );
    println!(
        "machine: {} CPU(s), {}; open-files limit {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        nofile_limit()
    );
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    #[cfg(feature = "tls")]
    let cert_dir = run("roundtrip").then(tls::make_certs);
    if run("roundtrip") {
        roundtrips(&plan);
    }
    if run("scale") {
        scale(&plan);
    }
    if run("broadcast") {
        broadcast(&plan);
    }
    if run("memory") {
        memory(&plan);
    }
    if run("handshake") {
        handshakes(&plan);
        kex_rates(&plan, flag("--baseline"));
    }
    if run("file") {
        file_throughput(&plan);
    }
    #[cfg(feature = "tls")]
    if let Some(dir) = cert_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn file_throughput(plan: &Plan) {
    let mib = if plan.quick { 128 } else { 1024 };
    println!("## File throughput ({mib} MiB file, written to disk, SHA-256 checked, median of 3)\n");
    println!("| transport | seconds | MB/s |");
    println!("|---|---:|---:|");
    for imp in ["truflux-files-tcp", "truflux-files-ws"] {
        let server = ServerProcess::start(plan, imp);
        let mut times = run_client(plan, "file", imp, server.port, mib, 3);
        let secs = median(&mut times);
        println!(
            "| {} | {secs:.2} | {:.0} |",
            if imp.ends_with("ws") { "WebSocket" } else { "TCP" },
            (mib << 20) as f64 / secs / 1e6
        );
    }
    println!();
}

fn suite_of(imp: &str) -> Option<Suite> {
    match imp {
        "truflux-gcm" => Some(Suite::EcdhP256Aes128Gcm),
        "truflux-cbc" => Some(Suite::DhFfdhe2048Aes256CbcHmacSha256),
        _ => None,
    }
}

/// Seconds one process spends sealing and opening `count` messages of `size` octets in both
/// directions (what a secure round trip adds to the floor, done by the two processes). Like a
/// connection, it seals a payload it shares (a copy) and opens a record it owns (in place).
fn crypto_seconds(suite: Suite, size: usize, count: usize) -> f64 {
    let secret = zeroize::Zeroizing::new([7u8; 32]);
    let mut sealer = Sealer::new(suite, secret.clone());
    let mut opener = Opener::new(suite, secret);
    let frame = Frame::message(1, Bytes::from(vec![0x3cu8; size]));
    let start = Instant::now();
    for _ in 0..count * 2 {
        let sealed = sealer.seal(frame.clone()).expect("seal");
        std::hint::black_box(opener.open(sealed).expect("open"));
    }
    start.elapsed().as_secs_f64()
}

fn handshakes(plan: &Plan) {
    let n = if plan.quick { 5 } else { 30 };
    println!("## Handshake time per suite (connect + key exchange + key confirmation, {n} times)\n");
    println!("| suite | ms (median) |");
    println!("|---|---:|");
    for imp in ["truflux-gcm", "truflux-cbc"] {
        let server = ServerProcess::start(plan, imp);
        let mut times = run_client(plan, "handshake", imp, server.port, 0, n);
        println!(
            "| {} | {:.2} |",
            suite_of(imp).map_or("?", |s| s.name()),
            median(&mut times)
        );
    }
    println!();
}

/// How long each flood runs.
const FLOOD_MS: usize = 3000;

/// Key exchanges the server completes per second on one core (the server on CPU 0, the
/// flooding client on CPU 1), and a bystander's echo latency meanwhile, for this build and, with
/// `--baseline PATH` (the benchmark binary of an earlier build), for that one too.
fn kex_rates(plan: &Plan, baseline: Option<String>) {
    let flood_ms = if plan.quick { 1000 } else { FLOOD_MS };
    println!("## Key exchanges under a flood (64 connections sending canned offers, {flood_ms} ms)\n");
    println!("| server | suite | key exchanges / s (one core) | bystander echo p50 µs | p99 µs |");
    println!("|---|---|---:|---:|---:|");
    let mut servers = vec![("this build", None)];
    if let Some(path) = baseline {
        servers.push(("baseline", Some(path)));
    }
    for (label, bin) in servers {
        let baseline = bin.is_some();
        let idle = flood_round(plan, bin.as_deref(), None, flood_ms, baseline);
        println!("| {label} | none (idle) | | {:.1} | {:.1} |", idle.1, idle.2);
        for suite in [Suite::EcdhP256Aes128Gcm, Suite::DhFfdhe2048Aes256CbcHmacSha256] {
            let (rate, p50, p99) = flood_round(plan, bin.as_deref(), Some(suite), flood_ms, baseline);
            println!("| {label} | {} | {rate:.0} | {p50:.1} | {p99:.1} |", suite.name());
        }
    }
    println!();
}

/// One flood (or none) against a fresh server: its rate, and the bystander's p50 and p99.
fn flood_round(
    plan: &Plan,
    bin: Option<&str>,
    suite: Option<Suite>,
    flood_ms: usize,
    v1: bool,
) -> (f64, f64, f64) {
    let server = ServerProcess::start_from(plan, bin, "truflux-tcp");
    let port = server.port.to_string();
    let client_args = |mode: &str, size: String, count: usize| -> Vec<String> {
        [
            "--client",
            mode,
            "--impl",
            "truflux-tcp",
            "--port",
            &port,
            "--size",
            &size,
            "--count",
            &count.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let version = if v1 { "1" } else { "2" };
    let flood = suite.map(|suite| {
        command(
            Some("1"),
            &client_args("kexflood", suite.id().to_string(), flood_ms),
        )
        .env("TRUFLUX_BENCH_VERSION", version)
        .stdout(Stdio::piped())
        .spawn()
        .expect("flood client")
    });
    let bystander = command(Some("1"), &client_args("bystander", "64".into(), flood_ms))
        .env("TRUFLUX_BENCH_VERSION", version)
        .output()
        .expect("bystander");
    let numbers = |text: &[u8]| -> Vec<f64> {
        String::from_utf8_lossy(text)
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(f64::NAN))
            .collect()
    };
    let latency = numbers(&bystander.stdout);
    let rate = flood
        .map(|child| numbers(&child.wait_with_output().expect("flood ends").stdout))
        .and_then(|v| v.first().copied())
        .unwrap_or(f64::NAN);
    (
        rate,
        latency.first().copied().unwrap_or(f64::NAN),
        latency.get(1).copied().unwrap_or(f64::NAN),
    )
}

/// The wire client's hello: this build's version, or version 1 against a baseline server.
fn wire_hello() -> truflux::frame::control::Hello {
    let mut hello = truflux::frame::control::Hello::current();
    if std::env::var("TRUFLUX_BENCH_VERSION").as_deref() == Ok("1") {
        hello.version = 1;
    }
    hello
}

/// 64 connections in a loop, each sending a canned offer for suite `suite_id` (nothing
/// computed here) and waiting for the server's reply, for `ms` milliseconds; prints replies per
/// second.
async fn kex_flood(port: u16, suite_id: u8, ms: usize) -> String {
    let deadline = Instant::now() + Duration::from_millis(ms as u64);
    let done = Arc::new(AtomicUsize::new(0));
    let offer = canned_offer(suite_id);
    let v1 = wire_hello().version == 1;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (done, offer) = (done.clone(), offer.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if one_kex(port, &offer, v1).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    format!("{}", done.load(Ordering::Relaxed) as f64 / (ms as f64 / 1000.0))
}

/// The octets of a canned offer: `KEX_INIT` with one fixed public value of the suite.
fn canned_offer(suite_id: u8) -> Vec<u8> {
    let public = if suite_id == 2 {
        use p256::elliptic_curve::sec1::ToSec1Point;
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).expect("a scalar");
        secret.public_key().to_sec1_point(false).as_bytes().to_vec()
    } else {
        // 4 = 2², a quadratic residue: valid, so the server does its whole share of work.
        let mut four = vec![0u8; 256];
        four[255] = 4;
        four
    };
    let mut payload = vec![9u8; 32];
    payload.extend_from_slice(&[1, suite_id]);
    payload.extend_from_slice(&(public.len() as u16).to_be_bytes());
    payload.extend_from_slice(&public);
    let frame = Frame {
        kind: truflux::frame::Kind::Security,
        id: 1,
        tag: None,
        payload: Bytes::from(payload),
    };
    let mut out = bytes::BytesMut::new();
    frame.put_header(&mut out);
    out.extend_from_slice(&frame.payload);
    out.to_vec()
}

/// One canned key exchange: true when the server's reply (`KEX_REPLY`) arrived.
async fn one_kex(port: u16, offer: &[u8], v1: bool) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut hello = wire_hello();
    if !v1 {
        hello.extensions.push((4, Bytes::new()));
    }
    let frame = hello.to_frame();
    let mut out = bytes::BytesMut::new();
    frame.put_header(&mut out);
    out.extend_from_slice(&frame.payload);
    let mut buf = Vec::new();
    if v1 {
        // Version 1 takes an offer only after the hellos.
        if stream.write_all(&out).await.is_err() || try_read_frame(&mut stream, &mut buf).await.is_none() {
            return false;
        }
        out.clear();
    }
    out.extend_from_slice(offer);
    if stream.write_all(&out).await.is_err() {
        return false;
    }
    while let Some(header) = try_read_frame(&mut stream, &mut buf).await {
        match (
            header[0] & 0x7f,
            u32::from_be_bytes([header[1], header[2], header[3], header[4]]),
        ) {
            (0x06, 2) => return true,
            (0x02, _) => return false,
            _ => {}
        }
    }
    false
}

/// Reads one plain frame into `buf`; its header, or `None` when the stream ended.
async fn try_read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<[u8; 9]> {
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
    buf.resize(len.min(1 << 20), 0);
    stream.read_exact(buf).await.ok()?;
    Some(header)
}

/// Echo round trips of 64 octets over the wire client for `ms` milliseconds, one at a time;
/// prints p50 and p99 in µs.
async fn bystander(port: u16, ms: usize) -> String {
    let mut conn = connect("truflux-wire", port).await;
    let payload = Bytes::from(vec![0x42u8; 64]);
    let deadline = Instant::now() + Duration::from_millis(ms as u64);
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let t = Instant::now();
        conn.roundtrip(&payload).await;
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    format!("{} {}", pick(0.5), pick(0.99))
}

/// A current-thread runtime, or with `mt` a multi-threaded one of 2 workers.
fn runtime(mt: bool) -> tokio::runtime::Runtime {
    let mut builder = if mt {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2);
        builder
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().expect("runtime")
}

/// An implementation's name without its `-mt`, and whether it had one.
fn runtime_kind(imp: &str) -> (String, bool) {
    (imp.replacen("-mt", "", 1), imp.contains("-mt"))
}

/// The floor an implementation is compared with: the raw floor on the same kind of runtime,
/// or the TLS floor.
fn floor_of(imp: &str) -> &'static str {
    if imp.contains("-mt") {
        "raw-tcp-mt"
    } else if imp.ends_with("-tls") {
        "raw-tls"
    } else {
        "raw-tcp"
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

struct Plan {
    quick: bool,
    cpus: String,
    rounds: usize,
}

impl Plan {
    fn server_cpu(&self) -> Option<&'static str> {
        match self.cpus.as_str() {
            "same" | "different" => Some("0"),
            _ => None,
        }
    }

    fn client_cpu(&self) -> Option<&'static str> {
        match self.cpus.as_str() {
            "same" => Some("0"),
            "different" => Some("1"),
            _ => None,
        }
    }
}

/// This binary, pinned to `cpu` with `taskset`.
fn command(cpu: Option<&str>, args: &[String]) -> Command {
    let exe = std::env::current_exe().expect("current exe");
    let mut command = match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpu]).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    command.args(args);
    command
}

/// The Node peer (`benches/peers/node-ws.mjs`) with `args`, pinned to `cpu`.
fn node_command(cpu: Option<&str>, args: &[String]) -> Command {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers/node-ws.mjs");
    let mut command = match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpu, "node"]);
            command
        }
        None => Command::new("node"),
    };
    command.arg(script).args(args);
    command
}

/// Why the Node peer cannot run here, if it cannot: no `node`, or no `ws` package.
fn node_ws_missing() -> Option<&'static str> {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|out| out.status.success()) {
        return Some("node-ws skipped: Node is not installed");
    }
    let ws = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/js/node_modules/ws/package.json"
    );
    if !std::path::Path::new(ws).exists() {
        return Some("node-ws skipped: no ws package (run `cd clients/js && npm ci`)");
    }
    None
}

/// `imps` less the Node peer when it cannot run (with a note saying so).
fn available(imps: &[&'static str]) -> Vec<&'static str> {
    let missing = imps.contains(&"node-ws").then(node_ws_missing).flatten();
    if let Some(note) = missing {
        println!("({note})\n");
    }
    imps.iter()
        .copied()
        .filter(|imp| *imp != "node-ws" || missing.is_none())
        .collect()
}

/// The soft open-files limit: the 10,000-peer broadcast needs more than 10,000 per process.
fn nofile_limit() -> String {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| l.split_whitespace().nth(3).unwrap_or("?").to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

struct ServerProcess {
    child: Child,
    port: u16,
}

impl ServerProcess {
    fn start(plan: &Plan, imp: &str) -> ServerProcess {
        ServerProcess::start_from(plan, None, imp)
    }

    /// A server of this binary, or of another build's benchmark binary at `bin`.
    fn start_from(plan: &Plan, bin: Option<&str>, imp: &str) -> ServerProcess {
        let args = ["--serve".to_string(), imp.to_string()];
        let mut command = match bin {
            None if imp == "node-ws" => node_command(plan.server_cpu(), &["serve".to_string()]),
            Some(bin) => {
                let mut command = Command::new("taskset");
                command
                    .args(["-c", plan.server_cpu().unwrap_or("0")])
                    .arg(bin)
                    .args(&args);
                command
            }
            None => command(plan.server_cpu(), &args),
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start server");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("port line");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .expect("PORT n");
        ServerProcess { child, port }
    }

    fn rss_kib(&self) -> u64 {
        // taskset execs the server: the child's pid is the server's.
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_client(plan: &Plan, mode: &str, imp: &str, port: u16, size: usize, count: usize) -> Vec<f64> {
    let args: Vec<String> = [
        "--client",
        mode,
        "--impl",
        imp,
        "--port",
        &port.to_string(),
        "--size",
        &size.to_string(),
        "--count",
        &count.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut command = if imp == "node-ws" {
        let node_args = [
            mode.to_string(),
            port.to_string(),
            size.to_string(),
            count.to_string(),
        ];
        node_command(plan.client_cpu(), &node_args)
    } else {
        command(plan.client_cpu(), &args)
    };
    let output = command.stderr(Stdio::inherit()).output().expect("client runs");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .map(|v| v.parse().unwrap_or(f64::NAN))
        .collect()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

// ---- round trips ------------------------------------------------------------------------------

fn roundtrips(plan: &Plan) {
    println!("## Round trips (a client sends a binary message and waits for its echo)\n");
    let mut imps = available(IMPLS);
    imps.extend_from_slice(TLS_IMPLS);
    let servers: Vec<ServerProcess> = imps.iter().map(|imp| ServerProcess::start(plan, imp)).collect();
    // results[case][impl] = (seconds per round, p50 µs, p99 µs)
    let mut results = vec![vec![Vec::<[f64; 3]>::new(); imps.len()]; CASES.len()];
    for _ in 0..plan.rounds {
        for (c, &(size, count)) in CASES.iter().enumerate() {
            let count = if plan.quick { (count / 10).max(3) } else { count };
            for (i, imp) in imps.iter().enumerate() {
                let r = run_client(plan, "roundtrip", imp, servers[i].port, size, count);
                if r.len() == 3 && r.iter().all(|v| v.is_finite()) {
                    results[c][i].push([r[0], r[1], r[2]]);
                } else {
                    eprintln!("{imp} {size}x{count}: client failed");
                }
            }
        }
    }
    let groups = [
        ("current-thread runtimes", "raw-tcp"),
        ("2-worker multi-threaded runtimes", "raw-tcp-mt"),
        ("TLS over TCP, current-thread runtimes", "raw-tls"),
    ];
    for (title, floor) in groups {
        let rows: Vec<usize> = (0..imps.len()).filter(|&i| floor_of(imps[i]) == floor).collect();
        if !rows.is_empty() {
            println!("#### {title}\n");
            roundtrip_table(plan, &imps, &results, &rows);
        }
    }
}

/// The table of the implementations `rows` (indices into `imps`), the group's floor first.
fn roundtrip_table(plan: &Plan, imps: &[&str], results: &[Vec<Vec<[f64; 3]>>], rows: &[usize]) {
    println!("| case | implementation | seconds | MB/s | p50 µs | p99 µs | × floor | × (floor + crypto) |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (c, &(size, count)) in CASES.iter().enumerate() {
        let count = if plan.quick { (count / 10).max(3) } else { count };
        let stat = |i: usize, k: usize| median(&mut results[c][i].iter().map(|r| r[k]).collect::<Vec<_>>());
        let floor = imps
            .iter()
            .position(|imp| *imp == floor_of(imps[rows[0]]))
            .map_or(f64::NAN, |f| stat(f, 0));
        for &i in rows {
            let imp = imps[i];
            let (secs, p50, p99) = (stat(i, 0), stat(i, 1), stat(i, 2));
            let mbps = (size * count) as f64 / secs / 1e6;
            let with_crypto = suite_of(imp).map_or(String::new(), |suite| {
                format!("{:.3}", secs / (floor + crypto_seconds(suite, size, count)))
            });
            println!(
                "| {count} × {} | {imp} | {secs:.4} | {mbps:.1} | {p50:.1} | {p99:.1} | {:.3} | {with_crypto} |",
                human(size),
                secs / floor
            );
        }
    }
    println!();
}

fn human(size: usize) -> String {
    match size {
        s if s >= 1024 * 1024 => format!("{} MiB", s / (1024 * 1024)),
        s if s >= 1024 => format!("{} KiB", s / 1024),
        s => format!("{s} B"),
    }
}

// ---- 1000 connections ---------------------------------------------------------------------

fn scale(plan: &Plan) {
    let conns = if plan.quick { 200 } else { 1000 };
    println!("## {conns} concurrent connections × 100 round trips of 64 B\n");
    let imps = available(&[
        "raw-tcp",
        "raw-tcp-steps",
        "tungstenite",
        "fastwebsockets",
        "node-ws",
        "truflux-tcp",
        "truflux-ws",
        "raw-tcp-mt",
        "truflux-tcp-mt",
        "truflux-ws-mt",
    ]);
    let servers: Vec<ServerProcess> = imps.iter().map(|imp| ServerProcess::start(plan, imp)).collect();
    let mut rates = vec![Vec::new(); imps.len()];
    for _ in 0..plan.rounds {
        for (i, imp) in imps.iter().enumerate() {
            let r = run_client(plan, "scale", imp, servers[i].port, 64, conns);
            if let Some(&rate) = r.first() {
                rates[i].push(rate);
            }
        }
    }
    println!("| implementation | round trips / s | × raw TCP (same runtime kind) |");
    println!("|---|---:|---:|");
    let rates: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
    for (i, imp) in imps.iter().enumerate() {
        let floor = imps
            .iter()
            .position(|f| *f == floor_of(imp))
            .map_or(f64::NAN, |f| rates[f]);
        println!("| {imp} | {:.0} | {:.3} |", rates[i], rates[i] / floor);
    }
    println!();
}

// ---- broadcast -------------------------------------------------------------------------------

fn broadcast(plan: &Plan) {
    println!("## Broadcast of one 64 B message (time until the last peer has it)\n");
    println!("| peers | transport | ms (median) | × raw TCP (same runtime kind) |");
    println!("|---:|---|---:|---:|");
    let sizes: &[usize] = if plan.quick { &[1000] } else { &[1000, 10_000] };
    for &peers in sizes {
        let mut floor = f64::NAN;
        for imp in [
            "raw-tcp",
            "truflux-wire",
            "truflux-tcp",
            "truflux-ws",
            "raw-tcp-mt",
            "truflux-tcp-mt",
            "truflux-ws-mt",
        ] {
            let server = ServerProcess::start(plan, &format!("{imp}-broadcast"));
            let mut times = run_client(plan, "broadcast", imp, server.port, plan.rounds.max(3), peers);
            let ms = median(&mut times);
            if imp.starts_with("raw-tcp") {
                floor = ms;
            }
            println!("| {peers} | {imp} | {ms:.2} | {:.3} |", ms / floor);
        }
    }
    println!();
}

// ---- idle memory --------------------------------------------------------------------------

fn memory(plan: &Plan) {
    let peers = if plan.quick { 500 } else { 2000 };
    println!("## Memory per idle connection (server RSS delta / {peers} peers)\n");
    println!("| transport | KiB per peer |");
    println!("|---|---:|");
    for imp in ["truflux-tcp", "truflux-ws", "tungstenite", "raw-tcp"] {
        let server = ServerProcess::start(plan, imp);
        let before = server.rss_kib();
        let args: Vec<String> = [
            "--client",
            "idle",
            "--impl",
            imp,
            "--port",
            &server.port.to_string(),
            "--count",
            &peers.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut child = command(plan.client_cpu(), &args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("idle client");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        std::thread::sleep(Duration::from_millis(300));
        let after = server.rss_kib();
        let _ = child.stdin.take().map(|mut s| s.write_all(b"done\n"));
        let _ = child.kill();
        let _ = child.wait();
        println!(
            "| {imp} | {:.1} |",
            after.saturating_sub(before) as f64 / peers as f64
        );
    }
    println!();
}

// ---- servers ----------------------------------------------------------------------------------

async fn serve(imp: &str) {
    let port = match imp {
        "raw-tcp" => spawn_raw_server(false).await,
        "raw-tcp-steps" => spawn_raw_server(true).await,
        #[cfg(feature = "tls")]
        "raw-tls" => tls::spawn_floor_server().await,
        "fastwebsockets" => fastws::spawn_server().await,
        "raw-tcp-broadcast" => spawn_raw_broadcast_server().await,
        "tungstenite" => spawn_tungstenite_server().await,
        imp if imp.starts_with("truflux-") => spawn_truflux_server(imp).await,
        other => panic!("unknown implementation {other}"),
    };
    println!("PORT {port}");
    std::io::stdout().flush().expect("flush");
    // Serve until the orchestrator closes our stdin.
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while stdin.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {}
}

/// Reads one length-prefixed message into `buf`; `false` at end of stream or on error.
async fn read_prefixed<R: tokio::io::AsyncRead + Unpin>(read: &mut R, buf: &mut Vec<u8>) -> bool {
    let Ok(len) = read.read_u32().await else {
        return false;
    };
    buf.resize(len as usize, 0);
    read.read_exact(buf).await.is_ok()
}

/// Reads one length-prefixed message into `buf` as truflux's reader does: one read of at most
/// [`step`] octets (prefix included), then reads into room that grows by [`step`] or doubles,
/// never past the message. Returns the length of the message with its prefix, which is the
/// start of `buf` (`buf` only grows: no fill per message); `None` at end of stream or on error.
/// For one message in flight at a time (an echo's): octets read past the message are not kept.
async fn read_in_steps<R: tokio::io::AsyncRead + Unpin>(read: &mut R, buf: &mut Vec<u8>) -> Option<usize> {
    let step = step();
    if buf.len() < step {
        // Zeroed memory from the allocator: an idle connection touches only what it reads.
        *buf = vec![0; step];
    }
    let mut filled = 0;
    while filled < 4 {
        match read.read(&mut buf[filled..step]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => filled += n,
        }
    }
    let total = 4 + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    while filled < total {
        let room = total.min(filled + step.max(filled));
        if buf.len() < room {
            buf.resize(room, 0);
        }
        match read.read(&mut buf[filled..room]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => filled += n,
        }
    }
    Some(total)
}

/// truflux's first read and growth step (64 KiB), or `TRUFLUX_BENCH_STEP` octets (read once).
fn step() -> usize {
    static STEP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *STEP.get_or_init(|| {
        std::env::var("TRUFLUX_BENCH_STEP")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(64 * 1024)
    })
}

/// The floor's server; with `steps`, it reads a message in steps (see [`read_in_steps`]).
async fn spawn_raw_server(steps: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                // The floor: one reused buffer, and the prefix and payload written together
                // by a vectored write without copying.
                let mut buf = Vec::new();
                loop {
                    if steps {
                        // The message read is the echo, prefix and all.
                        match read_in_steps(&mut stream, &mut buf).await {
                            Some(total) if stream.write_all(&buf[..total]).await.is_ok() => continue,
                            _ => return,
                        }
                    }
                    if !read_prefixed(&mut stream, &mut buf).await {
                        return;
                    }
                    let len = buf.len() as u32;
                    let prefix = len.to_be_bytes();
                    if stream
                        .write_all_buf(&mut Buf::chain(&prefix[..], &buf[..]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// The broadcast floor: every length-prefixed message from any peer is written to every peer
/// from the one task that read it, with non-blocking writes (no task per peer, no queue).
async fn spawn_raw_broadcast_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let peers: Arc<std::sync::Mutex<Vec<tokio::net::tcp::OwnedWriteHalf>>> = Arc::default();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let (mut read, write) = stream.into_split();
            peers.lock().expect("peers").push(write);
            let peers = peers.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    if !read_prefixed(&mut read, &mut buf).await {
                        return;
                    }
                    let len = buf.len() as u32;
                    let mut framed = len.to_be_bytes().to_vec();
                    framed.extend_from_slice(&buf);
                    for peer in peers.lock().expect("peers").iter() {
                        // 68 octets always fit an idle peer's socket buffer.
                        let _ = peer.try_write(&framed);
                    }
                }
            });
        }
    });
    port
}

async fn spawn_tungstenite_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_binary() && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Keeps `server` running for the life of the process; returns the port it listens on.
fn serve_forever(server: Server, ws: bool) -> u16 {
    let port = if ws {
        let url = &server.ws_urls()[0];
        url.trim_start_matches("ws://127.0.0.1:")
            .trim_end_matches("/bench")
            .parse()
            .expect("port")
    } else {
        server.local_addrs()[0].port()
    };
    // The orchestrator ends the process; the server need not be closed.
    std::mem::forget(server);
    port
}

fn connection_config(imp: &str) -> ConnectionConfig {
    let config = ConnectionConfig::default().max_payload(MAX_PAYLOAD);
    if let Some(suite) = suite_of(imp) {
        // Both sides secure from connect; keys never rotate inside a measurement.
        let rekey = truflux::security::RekeyPolicy::default()
            .bytes(u64::MAX)
            .records(u64::MAX)
            .interval(None);
        return config.security(
            SecurityConfig::default()
                .suites([suite])
                .required(true)
                .rekey(rekey),
        );
    }
    config
}

async fn spawn_truflux_server(imp: &str) -> u16 {
    let config = ServerConfig::default().connection(connection_config(imp));
    if imp.starts_with("truflux-files") {
        // Accepts every file into a scratch folder and deletes it once verified.
        let dir = std::env::temp_dir().join(format!("truflux-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let builder = Server::builder().config(config).on_file(move |_peer, offer| {
            let dir = dir.clone();
            tokio::spawn(async move {
                let path = dir.join(format!("{}.bin", offer.id()));
                if let Ok(receiving) = offer.accept(&path).await {
                    let _ = receiving.finished().await;
                    let _ = std::fs::remove_file(&path);
                }
            });
        });
        let builder = if imp.ends_with("ws") {
            builder.ws("127.0.0.1:0", "/bench")
        } else {
            builder.tcp("127.0.0.1:0")
        };
        let server = builder.start().await.expect("server starts");
        return serve_forever(server, imp.ends_with("ws"));
    }
    let builder = Server::builder().config(config);
    let builder = match imp {
        imp if imp.starts_with("truflux-ws") => builder.ws("127.0.0.1:0", "/bench"),
        #[cfg(feature = "tls")]
        "truflux-tls" => builder.tls("127.0.0.1:0", tls::server_config()),
        _ => builder.tcp("127.0.0.1:0"),
    };
    let server = if imp.ends_with("broadcast") {
        // Any message from a peer triggers a broadcast of it to every peer.
        builder
            .protocol(protocol::from_fn(|peer, message| async move {
                if let Some(server) = peer.server() {
                    let _ = server.broadcast(message, &[]);
                }
            }))
            .start()
            .await
    } else {
        builder
            .protocol(protocol::from_fn(|peer, message| async move {
                let _ = peer.send(message).await;
            }))
            .start()
            .await
    }
    .expect("server starts");
    serve_forever(server, imp.starts_with("truflux-ws"))
}

// ---- clients -----------------------------------------------------------------------------------

/// One connection that can do a round trip.
enum Conn {
    Raw(TcpStream, Vec<u8>),
    /// The floor's client reading as truflux's does ([`read_in_steps`]).
    Steps(TcpStream, Vec<u8>),
    #[cfg(feature = "tls")]
    RawTls(Box<tls::FloorStream>, Vec<u8>),
    Ws(Box<tokio_tungstenite::WebSocketStream<TcpStream>>),
    Fast(Box<fastws::Conn>),
    Truflux(Client, tokio::sync::mpsc::UnboundedReceiver<truflux::Message>),
    /// truflux's TCP wire format spoken inline by hand: the server's cost without the client's.
    Wire(TcpStream, Vec<u8>),
}

async fn connect(imp: &str, port: u16) -> Conn {
    let addr = format!("127.0.0.1:{port}");
    match imp {
        "raw-tcp" | "raw-tcp-steps" => {
            let stream = TcpStream::connect(&addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            if imp == "raw-tcp" {
                Conn::Raw(stream, Vec::new())
            } else {
                Conn::Steps(stream, Vec::new())
            }
        }
        #[cfg(feature = "tls")]
        "raw-tls" => Conn::RawTls(Box::new(tls::connect_floor(&addr).await), Vec::new()),
        "fastwebsockets" => Conn::Fast(Box::new(fastws::connect(&addr).await)),
        "tungstenite" => {
            let stream = TcpStream::connect(&addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
                .await
                .expect("ws");
            Conn::Ws(Box::new(ws))
        }
        "truflux-tcp" | "truflux-ws" | "truflux-gcm" | "truflux-cbc" | "truflux-tls" => {
            connect_truflux(imp, &addr).await
        }
        "truflux-wire" => {
            let mut stream = TcpStream::connect(&addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let hello = wire_hello().to_frame();
            let mut out = bytes::BytesMut::new();
            hello.put_header(&mut out);
            out.extend_from_slice(&hello.payload);
            stream.write_all(&out).await.expect("hello");
            let mut buf = Vec::new();
            read_wire_frame(&mut stream, &mut buf).await;
            Conn::Wire(stream, buf)
        }
        other => panic!("unknown implementation {other}"),
    }
}

/// A truflux client of implementation `imp` connected to `addr`, its messages in a channel.
async fn connect_truflux(imp: &str, addr: &str) -> Conn {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let config = ClientConfig::default().connection(connection_config(imp));
    let builder = Client::builder()
        .config(config)
        .protocol(protocol::from_fn(move |_peer, message| {
            let _ = tx.send(message);
            std::future::ready(())
        }));
    let client = match imp {
        "truflux-ws" => builder.connect_ws(&format!("ws://{addr}/bench")).await,
        #[cfg(feature = "tls")]
        "truflux-tls" => {
            builder
                .tls(tls::client_config())
                .connect_tls(addr, tls::SERVER_NAME)
                .await
        }
        _ => builder.connect(addr).await,
    }
    .expect("truflux connect");
    if suite_of(imp).is_some() {
        // `required` secured our direction in connect; wait for the server's too.
        while !client.peer().is_peer_secure() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Conn::Truflux(client, rx)
}

/// One round trip of the floor's shape over any stream: the prefix and payload in one vectored
/// write, then the echo's prefix and payload read into `buf`.
async fn prefixed_roundtrip<S>(stream: &mut S, buf: &mut Vec<u8>, payload: &Bytes)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let prefix = (payload.len() as u32).to_be_bytes();
    stream
        .write_all_buf(&mut Buf::chain(&prefix[..], &payload[..]))
        .await
        .expect("write");
    stream.flush().await.expect("flush");
    assert!(read_prefixed(stream, buf).await, "echo");
}

/// Reads one truflux frame (plain header) into `buf`.
async fn read_wire_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).await.expect("header");
    let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
    buf.resize(len, 0);
    stream.read_exact(buf).await.expect("payload");
}

impl Conn {
    async fn roundtrip(&mut self, payload: &Bytes) {
        match self {
            Conn::Raw(stream, buf) => prefixed_roundtrip(stream, buf, payload).await,
            #[cfg(feature = "tls")]
            Conn::RawTls(stream, buf) => prefixed_roundtrip(&mut **stream, buf, payload).await,
            Conn::Steps(stream, buf) => {
                let prefix = (payload.len() as u32).to_be_bytes();
                stream
                    .write_all_buf(&mut Buf::chain(&prefix[..], &payload[..]))
                    .await
                    .expect("write");
                let total = read_in_steps(stream, buf).await.expect("echo");
                assert_eq!(total, payload.len() + 4);
            }
            Conn::Fast(ws) => fastws::roundtrip(ws, payload).await,
            Conn::Ws(ws) => {
                ws.send(WsMessage::Binary(payload.clone())).await.expect("send");
                loop {
                    match ws.next().await.expect("open").expect("message") {
                        WsMessage::Binary(echo) => {
                            assert_eq!(echo.len(), payload.len());
                            break;
                        }
                        _ => continue,
                    }
                }
            }
            Conn::Wire(stream, buf) => {
                let mut header = [0x10u8, 0, 0, 0, 1, 0, 0, 0, 0];
                header[5..9].copy_from_slice(&(payload.len() as u32).to_be_bytes());
                stream
                    .write_all_buf(&mut Buf::chain(&header[..], &payload[..]))
                    .await
                    .expect("write");
                read_wire_frame(stream, buf).await;
                assert_eq!(buf.len(), payload.len());
            }
            Conn::Truflux(client, rx) => {
                client.peer().send_raw(1, payload.clone()).await.expect("send");
                let echo = rx.recv().await.expect("echo");
                assert_eq!(echo.payload.remaining(), payload.len());
            }
        }
    }
}

/// `count` round trips of `size` octets: total seconds, p50 and p99 latency in µs.
async fn roundtrip_client(imp: &str, port: u16, size: usize, count: usize) -> String {
    let mut conn = connect(imp, port).await;
    let payload = Bytes::from(vec![0xa5u8; size]);
    for _ in 0..count.min(10) {
        conn.roundtrip(&payload).await; // warm up
    }
    let mut latencies = Vec::with_capacity(count);
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        conn.roundtrip(&payload).await;
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let total = start.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    format!("{total} {} {}", pick(0.5), pick(0.99))
}

/// `count` connections doing 100 round trips of `size` octets each, all at once: round trips
/// per second. Each connection's loop is a task: local ones, or with `mt` tasks spread over the
/// workers.
async fn scale_client(imp: &str, port: u16, size: usize, count: usize, mt: bool) -> String {
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        conns.push(connect(imp, port).await);
    }
    let payload = Bytes::from(vec![0x5au8; size]);
    let local = tokio::task::LocalSet::new();
    let start = Instant::now();
    local
        .run_until(async {
            let tasks: Vec<_> = conns
                .into_iter()
                .map(|mut conn| {
                    let payload = payload.clone();
                    let work = async move {
                        for _ in 0..100 {
                            conn.roundtrip(&payload).await;
                        }
                    };
                    if mt {
                        tokio::spawn(work)
                    } else {
                        tokio::task::spawn_local(work)
                    }
                })
                .collect();
            for task in tasks {
                task.await.expect("task");
            }
        })
        .await;
    format!("{}", (count * 100) as f64 / start.elapsed().as_secs_f64())
}

/// Broadcast against the raw floor: `count` plain peers, the first one's message (`reps`
/// times) reaches all; prints each repetition's milliseconds.
async fn broadcast_raw_client(port: u16, reps: usize, count: usize) -> String {
    let received = Arc::new(AtomicUsize::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    // Every write half is kept: dropping one would shut its peer's write direction.
    let mut writers = Vec::with_capacity(count);
    for _ in 0..count {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (mut read, write) = stream.into_split();
        writers.push(write);
        let (received, notify, target) = (received.clone(), notify.clone(), count);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                if !read_prefixed(&mut read, &mut buf).await {
                    return;
                }
                if received.fetch_add(1, Ordering::SeqCst) + 1 == target {
                    notify.notify_one();
                }
            }
        });
    }
    let mut framed = 64u32.to_be_bytes().to_vec();
    framed.extend_from_slice(&[7u8; 64]);
    time_broadcasts(&mut writers, &framed, &received, &notify, reps).await
}

/// Broadcast against a truflux server with clients that speak the wire format inline by hand
/// (as the floor's clients read): the server's share of the truflux rows. `count` peers, the
/// first one's message (`reps` times) reaches all; prints each repetition's milliseconds.
async fn broadcast_wire_client(port: u16, reps: usize, count: usize) -> String {
    let received = Arc::new(AtomicUsize::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    // Every write half is kept: dropping one would shut its peer's write direction.
    let mut writers = Vec::with_capacity(count);
    let hello = wire_hello().to_frame();
    let mut hello_wire = bytes::BytesMut::new();
    hello.put_header(&mut hello_wire);
    hello_wire.extend_from_slice(&hello.payload);
    for _ in 0..count {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.write_all(&hello_wire).await.expect("hello");
        let mut buf = Vec::new();
        read_wire_frame(&mut stream, &mut buf).await;
        let (mut read, write) = stream.into_split();
        writers.push(write);
        let (received, notify, target) = (received.clone(), notify.clone(), count);
        tokio::spawn(async move {
            let mut header = [0u8; 9];
            loop {
                if read.read_exact(&mut header).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
                buf.resize(len, 0);
                if read.read_exact(&mut buf).await.is_err() {
                    return;
                }
                if header[0] == 0x10 && received.fetch_add(1, Ordering::SeqCst) + 1 == target {
                    notify.notify_one();
                }
            }
        });
    }
    let mut framed = vec![0x10u8, 0, 0, 0, 1, 0, 0, 0, 64];
    framed.extend_from_slice(&[7u8; 64]);
    time_broadcasts(&mut writers, &framed, &received, &notify, reps).await
}

/// The first peer writes `framed` `reps` times; each time, the milliseconds until every peer's
/// reader counted it (`received`, which wakes `notify` at the last one).
async fn time_broadcasts(
    writers: &mut [tokio::net::tcp::OwnedWriteHalf],
    framed: &[u8],
    received: &AtomicUsize,
    notify: &tokio::sync::Notify,
    reps: usize,
) -> String {
    let trigger = writers.first_mut().expect("at least one peer");
    let mut times = Vec::new();
    for _ in 0..reps {
        received.store(0, Ordering::SeqCst);
        let start = Instant::now();
        trigger.write_all(framed).await.expect("trigger");
        notify.notified().await;
        times.push(format!("{:.3}", start.elapsed().as_secs_f64() * 1e3));
    }
    times.join(" ")
}

/// Broadcast against a truflux server: `count` truflux clients over `imp`'s transport, the
/// first one's message (`reps` times) reaches all; prints each repetition's milliseconds.
async fn broadcast_truflux_client(imp: &str, port: u16, reps: usize, count: usize) -> String {
    let received = Arc::new(AtomicUsize::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let (received, notify, target) = (received.clone(), notify.clone(), count);
        let config = ClientConfig::default().connect_timeout(Duration::from_secs(60));
        let builder = Client::builder()
            .config(config)
            .protocol(protocol::from_fn(move |_peer, _message| {
                if received.fetch_add(1, Ordering::SeqCst) + 1 == target {
                    notify.notify_one();
                }
                std::future::ready(())
            }));
        let client = if imp == "truflux-ws" {
            builder.connect_ws(&format!("ws://127.0.0.1:{port}/bench")).await
        } else {
            builder.connect(("127.0.0.1", port)).await
        };
        clients.push(client.expect("connect"));
    }
    let mut times = Vec::new();
    for _ in 0..reps {
        received.store(0, Ordering::SeqCst);
        let start = Instant::now();
        clients[0]
            .peer()
            .send_raw(1, Bytes::from_static(&[7u8; 64]))
            .await
            .expect("trigger");
        notify.notified().await;
        times.push(format!("{:.3}", start.elapsed().as_secs_f64() * 1e3));
    }
    times.join(" ")
}

async fn client(mode: &str, imp: &str, port: u16, size: usize, count: usize, mt: bool) -> String {
    match mode {
        "roundtrip" => roundtrip_client(imp, port, size, count).await,
        "scale" => scale_client(imp, port, size, count, mt).await,
        // `size` carries the number of repetitions here.
        "broadcast" if imp == "raw-tcp" => broadcast_raw_client(port, size, count).await,
        "broadcast" if imp == "truflux-wire" => broadcast_wire_client(port, size, count).await,
        "broadcast" => broadcast_truflux_client(imp, port, size, count).await,
        "file" => {
            // `size` is the file size in MiB, `count` the repetitions.
            let path = std::env::temp_dir().join(format!("truflux-bench-src-{}.bin", std::process::id()));
            {
                use std::io::Write;
                let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("source file"));
                let block: Vec<u8> = (0..1024 * 1024u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                    .collect();
                for _ in 0..size {
                    file.write_all(&block).expect("write source");
                }
            }
            let builder = Client::builder();
            let client = if imp.ends_with("ws") {
                builder.connect_ws(&format!("ws://127.0.0.1:{port}/bench")).await
            } else {
                builder.connect(("127.0.0.1", port)).await
            }
            .expect("connect");
            let mut times = Vec::new();
            for _ in 0..count {
                let start = Instant::now();
                let sending = client.peer().send_file(&path).await.expect("offer");
                sending.finished().await.expect("transfer");
                times.push(format!("{:.3}", start.elapsed().as_secs_f64()));
            }
            let _ = std::fs::remove_file(&path);
            times.join(" ")
        }
        "kexflood" => kex_flood(port, size as u8, count).await,
        "bystander" => bystander(port, count).await,
        "handshake" => {
            let mut times = Vec::new();
            for _ in 0..count {
                let start = Instant::now();
                let conn = connect(imp, port).await;
                times.push(format!("{:.3}", start.elapsed().as_secs_f64() * 1e3));
                drop(conn);
            }
            times.join(" ")
        }
        "idle" => {
            let mut conns = Vec::with_capacity(count);
            for _ in 0..count {
                conns.push(connect(imp, port).await);
            }
            println!("READY");
            std::io::stdout().flush().expect("flush");
            let mut line = String::new();
            let _ = tokio::io::AsyncBufReadExt::read_line(
                &mut tokio::io::BufReader::new(tokio::io::stdin()),
                &mut line,
            )
            .await;
            drop(conns);
            String::new()
        }
        other => panic!("unknown client mode {other}"),
    }
}
