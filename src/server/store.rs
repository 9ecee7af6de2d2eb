//! Where a server keeps resumable sessions, by the SHA-256 of their resume tokens.
//!
//! The store never holds a token itself: a memory dump or a debug print of it reveals no
//! credential. This module owns the table and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use crate::connection::Peer;

/// What the store is keyed by: SHA-256 of a resume token.
pub(crate) type TokenHash = [u8; 32];

/// The key under which a resume token's session is kept.
pub(crate) fn token_hash(token: &[u8; 32]) -> TokenHash {
    Sha256::digest(token).into()
}

/// Where a server keeps resumable sessions. Cheap to clone; clones share the store. See
/// [`ServerBuilder::session_store`](crate::ServerBuilder::session_store).
#[derive(Clone, Default)]
pub struct SessionStore {
    sessions: Arc<Mutex<HashMap<TokenHash, Peer>>>,
}

impl SessionStore {
    /// An empty store.
    pub fn new() -> SessionStore {
        SessionStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TokenHash, Peer>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(&self, token: &[u8; 32], peer: Peer) {
        self.lock().insert(token_hash(token), peer);
    }

    pub(crate) fn get(&self, token: &[u8; 32]) -> Option<Peer> {
        self.lock().get(&token_hash(token)).cloned()
    }

    pub(crate) fn remove(&self, token: &[u8; 32]) {
        self.lock().remove(&token_hash(token));
    }

    /// How many sessions the store holds (connected or waiting to resume).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store holds no session.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("sessions", &self.len())
            .finish()
    }
}
