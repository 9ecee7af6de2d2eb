//! A server's life: the application's handles, graceful shutdown, close for a restart, and
//! what dropping the last handle does.
//!
//! Every [`Server`] the application holds shares one [`Life`]; when the last is dropped the
//! server shuts down in the background, as [`Server::shutdown`] would. Handles the library
//! keeps for itself (the standalone WebSocket listener's) do not hold the life, so they never
//! keep a forgotten server running. This module owns stopping the listeners and closing the
//! peers; it must not touch a connection's rules.

use std::sync::{Arc, Mutex, Weak};

use tokio::task::JoinHandle;
use tracing::info;

use super::{Hub, Server};
use crate::connection::{self, Peer};
use crate::error::Code;

/// The application's hold on a server.
pub(crate) struct Life {
    hub: Weak<Hub>,
}

impl Life {
    pub(crate) fn new(hub: &Arc<Hub>) -> Arc<Life> {
        let life = Arc::new(Life {
            hub: Arc::downgrade(hub),
        });
        let _ = hub.life.set(Arc::downgrade(&life));
        life
    }
}

impl Drop for Life {
    fn drop(&mut self) {
        let Some(hub) = self.hub.upgrade() else { return };
        if hub.shutdown.is_cancelled() {
            return;
        }
        info!("the last server handle was dropped: shutting down");
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { hub.shut_down().await });
            }
            Err(_) => hub.stop_now(Code::GOING_AWAY, "server shutting down"),
        }
    }
}

/// The listener tasks, awaited when the server stops so that their ports are free after.
#[derive(Default)]
pub(crate) struct Listeners(Mutex<Vec<JoinHandle<()>>>);

impl Listeners {
    pub(crate) fn add(&self, task: JoinHandle<()>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(task);
    }

    async fn stopped(&self) {
        let tasks = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Hub {
    /// Stops accepting and leaves the cluster; returns once the listeners are closed.
    async fn stop_accepting(&self) {
        self.shutdown.cancel();
        self.listeners.stopped().await;
        self.adapter.shutdown().await;
    }

    fn live_peers(&self) -> Vec<Peer> {
        self.peers().values().cloned().collect()
    }

    /// [`Server::shutdown`].
    pub(crate) async fn shut_down(&self) {
        let first = !self.shutdown.is_cancelled();
        self.stop_accepting().await;
        let peers = self.live_peers();
        if first {
            info!(peers = peers.len(), "shutting down");
        }
        let reason = "server shutting down";
        let graceful =
            futures_util::future::join_all(peers.iter().map(|peer| peer.close(Code::GOING_AWAY, reason)));
        if tokio::time::timeout(self.config.shutdown_timeout, graceful)
            .await
            .is_err()
        {
            let left = self.live_peers();
            info!(peers = left.len(), "shutdown timeout: closing the rest at once");
            for peer in left {
                peer.close_now(Code::GOING_AWAY, reason);
            }
        }
    }

    /// Every peer closed at once, without waiting (no runtime to wait on).
    fn stop_now(&self, code: Code, reason: &str) {
        self.shutdown.cancel();
        for peer in self.live_peers() {
            peer.close_now(code, reason);
        }
    }
}

impl Server {
    /// Shuts the server down gracefully and returns when it is done.
    ///
    /// Stops accepting (every listener is closed when this returns), then closes every peer
    /// with `GOING_AWAY` (1001) after what is queued for it has been written, ending resumable
    /// sessions too, and waits for the peers' closes, at most
    /// [`ServerConfig::shutdown_timeout`](crate::ServerConfig::shutdown_timeout) (default
    /// 10 s); peers still open then are closed at once ([`Peer::close_now`]). Calling it again,
    /// or after [`Server::close`], closes whatever is left.
    ///
    /// Dropping the last handle the application holds does the same in the background.
    pub async fn shutdown(&self) {
        self.hub.shut_down().await;
    }

    /// Stops accepting, closes every peer gracefully with `code` and `reason` (queued frames are
    /// written first) and waits until all have ended.
    ///
    /// Resumable sessions survive a close with a code that does not end sessions (such as
    /// `GOING_AWAY`): their connections close, what is queued for them stays queued, and they
    /// wait in the [`SessionStore`](crate::SessionStore) for their clients to resume, on this
    /// server's successor if it shares the store. To end everything, use [`Server::shutdown`].
    pub async fn close(&self, code: Code, reason: &str) {
        self.hub.stop_accepting().await;
        let peers = self.hub.live_peers();
        futures_util::future::join_all(peers.iter().map(|peer| async move {
            if peer.is_resumable() && !connection::engine::ends_session(code) {
                peer.disconnect(code, reason).await;
            } else {
                peer.close(code, reason).await;
            }
        }))
        .await;
    }

    /// Stops accepting and closes every peer at once (see [`Peer::close_now`]). Does not wait.
    ///
    /// Resumable sessions are kept as with [`Server::close`].
    pub fn close_now(&self, code: Code, reason: &str) {
        self.hub.shutdown.cancel();
        for peer in self.hub.live_peers() {
            if peer.is_resumable() && !connection::engine::ends_session(code) {
                tokio::spawn(async move { peer.disconnect(code, "server closed").await });
            } else {
                peer.close_now(code, reason);
            }
        }
    }
}
