//! A loopback TCP relay in front of a server, for tests of lost connections: it cuts every
//! connection passing through it, cuts each after a number of octets, or freezes them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Octets forwarded per read, each way.
const BUFFER: usize = 64 * 1024;

/// A loopback TCP relay in front of a server: it can cut every connection passing through it,
/// cut each after a random number of octets, or freeze them (stop forwarding, keep them open).
pub struct Relay {
    pub addr: SocketAddr,
    state: Arc<RelayState>,
}

struct RelayState {
    target: SocketAddr,
    /// Incremented to cut every current connection.
    cuts: watch::Sender<u64>,
    frozen: watch::Sender<bool>,
    /// When set, each connection is cut after a random octet count in this range, at most
    /// `random_cuts` times in all.
    random: Mutex<Option<(Rng, std::ops::Range<u64>, usize)>>,
    accepted: AtomicUsize,
}

/// The relay's seed: `fixed`, or mixed with `TRUFLUX_SEED` to explore other cut points
/// (`TRUFLUX_SEED=7 cargo test --test lifecycle`).
pub fn seed(fixed: u64) -> u64 {
    let extra: u64 = std::env::var("TRUFLUX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (fixed ^ extra.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1
}

/// xorshift64*: a small deterministic generator, so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
        let addr = listener.local_addr().expect("relay addr");
        let state = Arc::new(RelayState {
            target,
            cuts: watch::channel(0).0,
            frozen: watch::channel(false).0,
            random: Mutex::new(None),
            accepted: AtomicUsize::new(0),
        });
        let relay_state = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                relay_state.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(pump(relay_state.clone(), client));
            }
        });
        Relay { addr, state }
    }

    pub fn cut(&self) {
        self.state.cuts.send_modify(|n| *n += 1);
    }

    pub fn freeze(&self) {
        self.state.frozen.send_replace(true);
    }

    /// Forwards again, on the connections it froze too.
    pub fn thaw(&self) {
        self.state.frozen.send_replace(false);
    }

    pub fn cut_randomly(&self, seed: u64, octets: std::ops::Range<u64>, times: usize) {
        *self.state.random.lock().unwrap() = Some((Rng(seed), octets, times));
    }

    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

/// Forwards one connection both ways until either side ends or the relay cuts it.
async fn pump(state: Arc<RelayState>, mut client: TcpStream) {
    let Ok(mut server) = TcpStream::connect(state.target).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let budget = state
        .random
        .lock()
        .unwrap()
        .as_mut()
        .and_then(|(rng, range, times)| {
            (*times > 0).then(|| {
                *times -= 1;
                range.start + rng.next() % (range.end - range.start)
            })
        });
    let mut cuts = state.cuts.subscribe();
    cuts.mark_unchanged();
    let mut frozen = state.frozen.subscribe();
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let mut up = vec![0u8; BUFFER];
    let mut down = vec![0u8; BUFFER];
    let mut forwarded = 0u64;
    loop {
        if *frozen.borrow_and_update() {
            // Frozen: hold both sockets open, forward nothing, until cut or thawed.
            tokio::select! {
                _ = cuts.changed() => return,
                _ = frozen.changed() => continue,
            }
        }
        let limit = budget.map_or(BUFFER, |budget| {
            (budget.saturating_sub(forwarded)).clamp(1, BUFFER as u64) as usize
        });
        tokio::select! {
            _ = cuts.changed() => return,
            _ = frozen.changed() => continue,
            read = client_read.read(&mut up[..limit]) => match read {
                Ok(n) if n > 0 => {
                    if server_write.write_all(&up[..n]).await.is_err() { return; }
                    forwarded += n as u64;
                }
                _ => return,
            },
            read = server_read.read(&mut down[..limit]) => match read {
                Ok(n) if n > 0 => {
                    if client_write.write_all(&down[..n]).await.is_err() { return; }
                    forwarded += n as u64;
                }
                _ => return,
            },
        }
        if budget.is_some_and(|budget| forwarded >= budget) {
            return;
        }
    }
}
