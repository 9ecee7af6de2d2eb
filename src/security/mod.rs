//! In-band security: suites, the key exchange, record protection, id mapping, key rotation.
//!
//! This module owns everything cryptographic: the handshake messages and their state machine
//! (`handshake`), the key exchange ([`kex`]), the HKDF key schedule ([`schedule`]), record
//! protection of whole frames ([`record`]) and the keyed Pseudo-Hadamard id mapping ([`pht`]).
//! All of it is pure: no IO, no tasks. The connection drives it: the read loop feeds incoming
//! security frames to the handshake and opens protected frames; the write loop seals outgoing
//! frames in queue order. It must not touch sockets, queues or registries.
//!
//! The normative description is `docs/PROTOCOL.md` §9 and the threat model `docs/SECURITY.md`.

pub(crate) mod handshake;
pub mod kex;
pub mod pht;
pub mod record;
pub mod schedule;

use std::time::Duration;

use bytes::Bytes;

use crate::Code;

/// A security suite: a key exchange and a record protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Suite {
    /// `dh-ffdhe2048-aes256cbc-hmacsha256` (id 1): finite-field Diffie-Hellman over the RFC 7919
    /// `ffdhe2048` group, AES-256-CBC with HMAC-SHA-256 (encrypt-then-MAC, tag truncated to 96
    /// bits).
    DhFfdhe2048Aes256CbcHmacSha256,
    /// `ecdh-p256-aes128gcm` (id 2): ECDH over NIST P-256, AES-128-GCM with a 96-bit tag.
    EcdhP256Aes128Gcm,
}

impl Suite {
    /// Every suite, in the default priority order.
    pub const ALL: [Suite; 2] = [Suite::DhFfdhe2048Aes256CbcHmacSha256, Suite::EcdhP256Aes128Gcm];

    /// The suite's name.
    pub const fn name(self) -> &'static str {
        match self {
            Suite::DhFfdhe2048Aes256CbcHmacSha256 => "dh-ffdhe2048-aes256cbc-hmacsha256",
            Suite::EcdhP256Aes128Gcm => "ecdh-p256-aes128gcm",
        }
    }

    /// The suite's id on the wire.
    pub const fn id(self) -> u8 {
        match self {
            Suite::DhFfdhe2048Aes256CbcHmacSha256 => 1,
            Suite::EcdhP256Aes128Gcm => 2,
        }
    }

    /// The suite with this wire id.
    pub const fn from_id(id: u8) -> Option<Suite> {
        match id {
            1 => Some(Suite::DhFfdhe2048Aes256CbcHmacSha256),
            2 => Some(Suite::EcdhP256Aes128Gcm),
            _ => None,
        }
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// When a direction's keys are replaced by the next ones (the sender decides; the receiver
/// follows an authenticated `REKEY` record). Whichever limit comes first triggers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RekeyPolicy {
    /// After this many payload octets sealed under one key. Default 1 GiB.
    pub bytes: u64,
    /// After this many records sealed under one key. Default 2²⁴; never more than 2³² whatever
    /// the setting, so sequence numbers stay far from wrapping.
    pub records: u64,
    /// After this long under one key (checked when a record is sealed). Default 1 hour.
    pub interval: Option<Duration>,
}

impl Default for RekeyPolicy {
    fn default() -> Self {
        RekeyPolicy {
            bytes: 1 << 30,
            records: 1 << 24,
            interval: Some(Duration::from_secs(3600)),
        }
    }
}

crate::config::setters!(RekeyPolicy {
    /// Sets [`RekeyPolicy::bytes`].
    bytes: u64,
    /// Sets [`RekeyPolicy::records`].
    records: u64,
    /// Sets [`RekeyPolicy::interval`].
    interval: Option<Duration>,
});

/// Security settings of one side of a connection.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SecurityConfig {
    /// Suites this side accepts, best first. A server picks the first of its list that the
    /// client offers; a client offers its list in this order. Default: both, DH first.
    pub suites: Vec<Suite>,
    /// An optional pre-shared key (for example the connection's bearer token) mixed into the key
    /// derivation: a man in the middle who does not know it fails the handshake. Both sides must
    /// use the same value. Default none.
    pub psk: Option<Bytes>,
    /// Server: every peer must be secure. The server starts the handshake and asks for both
    /// directions at connect; a plain message from a peer whose direction is not yet secure is
    /// refused with an error frame `SECURITY_REQUIRED`; no common suite closes the connection
    /// with `SECURITY_REQUIRED` (4021). Client: `connect` completes the handshake and turns both
    /// directions on before it returns. Default `false`.
    pub required: bool,
    /// When keys rotate. Default [`RekeyPolicy::default`].
    pub rekey: RekeyPolicy,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            suites: Suite::ALL.to_vec(),
            psk: None,
            required: false,
            rekey: RekeyPolicy::default(),
        }
    }
}

impl SecurityConfig {
    /// Sets [`SecurityConfig::suites`].
    #[must_use]
    pub fn suites(mut self, suites: impl Into<Vec<Suite>>) -> Self {
        self.suites = suites.into();
        self
    }

    /// Sets [`SecurityConfig::psk`].
    #[must_use]
    pub fn psk(mut self, psk: impl Into<Bytes>) -> Self {
        self.psk = Some(psk.into());
        self
    }
}

crate::config::setters!(SecurityConfig {
    /// Sets [`SecurityConfig::required`].
    required: bool,
    /// Sets [`SecurityConfig::rekey`].
    rekey: RekeyPolicy,
});

/// What the security layer reports to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecurityEvent {
    /// The key exchange completed and both sides confirmed the keys.
    Handshaked {
        /// The negotiated suite.
        suite: Suite,
    },
    /// The key exchange could not complete without ending the connection (no common suite);
    /// the connection goes on in plain mode.
    FailSecure {
        /// The std code.
        code: Code,
        /// Why.
        reason: String,
    },
    /// The peer switched what it sends to us: `true` once its records are protected, `false`
    /// after its authenticated "security off".
    PeerSecure(bool),
}

/// A failure of the security layer. Every variant but [`SecurityError::NoCommonSuite`] ends the
/// connection with its code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// The two sides share no suite.
    #[error("no common security suite")]
    NoCommonSuite,
    /// The handshake failed: a malformed or unexpected message, an invalid public value, or a
    /// finished MAC that does not verify (a tampered transcript, a downgrade, a wrong PSK).
    #[error("handshake failed: {0}")]
    Handshake(&'static str),
    /// A protected record did not verify: tampered, replayed, reordered, truncated or injected.
    #[error("bad record: {0}")]
    BadRecord(&'static str),
    /// A plain frame arrived in a direction that is secure.
    #[error("plain frame in a secure direction")]
    UnexpectedPlaintext,
    /// The connection requires security and the peer's message was not protected, or no suite
    /// could be agreed.
    #[error("security is required: {0}")]
    Required(&'static str),
}

impl SecurityError {
    /// The std code for this failure.
    pub fn code(&self) -> Code {
        match self {
            SecurityError::NoCommonSuite => Code::NO_COMMON_SUITE,
            SecurityError::Handshake(_) => Code::HANDSHAKE_FAILED,
            SecurityError::BadRecord(_) => Code::BAD_RECORD,
            SecurityError::UnexpectedPlaintext => Code::UNEXPECTED_PLAINTEXT,
            SecurityError::Required(_) => Code::SECURITY_REQUIRED,
        }
    }
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn random(buf: &mut [u8]) {
    // The OS source failing leaves no safe way on: no key may come from anything weaker.
    if let Err(error) = getrandom::fill(buf) {
        panic!("operating system random source failed: {error}");
    }
}
