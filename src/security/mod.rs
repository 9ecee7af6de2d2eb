//! In-band security: suites, the key exchange, server keys, record protection, id mapping, key
//! rotation.
//!
//! This module owns everything cryptographic: the key exchange's messages and state machine
//! (`handshake`), the ephemeral key exchange (`kex`), the server's long-term key and whom
//! a client trusts (`identity`), the HKDF key schedule (`schedule`), record protection of
//! whole frames (`record`) and the keyed Pseudo-Hadamard id mapping (`pht`). All of it is
//! pure: no IO, no tasks, no clock. The connection engine applies the rules of which frames are
//! protected; this module must not touch sockets, queues or registries.
//!
//! The normative description is `docs/PROTOCOL.md` §9 and the threat model `docs/SECURITY.md`.

pub(crate) mod handshake;
pub(crate) mod identity;
pub(crate) mod kex;
pub(crate) mod pht;
#[doc(hidden)]
pub mod record;
pub(crate) mod schedule;

use std::time::Duration;

pub use identity::{Fingerprint, ServerKey, Trust};

use crate::error::Code;

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
    /// Every suite, in the default priority order: ECDH first (faster, constant-time, and the
    /// one browsers can do with WebCrypto).
    pub const ALL: [Suite; 2] = [Suite::EcdhP256Aes128Gcm, Suite::DhFfdhe2048Aes256CbcHmacSha256];

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

crate::setters::setters!(RekeyPolicy {
    /// Sets [`RekeyPolicy::bytes`].
    bytes: u64,
    /// Sets [`RekeyPolicy::records`].
    records: u64,
    /// Sets [`RekeyPolicy::interval`].
    interval: Option<Duration>,
});

/// When a client exchanges keys: during the opening, so that its credentials travel
/// protected (PROTOCOL.md §4.1), or only when security is first turned on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Opening {
    /// Keys at connect when the connection carries something worth protecting: a bearer
    /// token, a resumable session, required security, or trust in a server key. The default.
    #[default]
    Auto,
    /// Keys at every connect.
    Keyed,
    /// Never at connect: the opening, token and resume token included, travels in the clear.
    /// Keys are exchanged later if security is turned on.
    Plain,
}

/// Security settings of one side of a connection.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SecurityConfig {
    /// Suites this side accepts, best first. A server picks the first of its list that the
    /// client offers; a client offers its list in this order. Default: both, ECDH first.
    /// Empty: this side never exchanges keys.
    pub suites: Vec<Suite>,
    /// Server: its long-term key, which signs every key exchange so that clients can pin it.
    /// Default none (clients can only make anonymous exchanges).
    pub server_key: Option<ServerKey>,
    /// Client: whom it trusts to be the server. Default [`Trust::Anonymous`].
    pub trust: Trust,
    /// Client: when keys are exchanged. Default [`Opening::Auto`].
    pub opening: Opening,
    /// Both directions must be secure. A client exchanges keys while connecting and both
    /// directions are secure before `connect` returns; a server refuses plain openings with
    /// `SECURITY_REQUIRED` (4021). Neither side turns its direction off, a peer's plain
    /// application frame or `SEC_OFF` closes the connection with `SECURITY_REQUIRED`, and a
    /// peer's request to turn ours off is refused. Default `false`.
    pub required: bool,
    /// When a key exchange this side asked for fails for want of a common suite, go on in
    /// plain (reported as [`SecurityEvent::FailSecure`]) instead of closing with
    /// `SECURITY_REQUIRED`. An attacker on the path can cause this fallback at will, so it is
    /// off by default; never with `required`.
    pub fallback_plain: bool,
    /// When keys rotate. Default [`RekeyPolicy::default`].
    pub rekey: RekeyPolicy,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            suites: Suite::ALL.to_vec(),
            server_key: None,
            trust: Trust::Anonymous,
            opening: Opening::Auto,
            required: false,
            fallback_plain: false,
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

    /// Sets [`SecurityConfig::server_key`].
    #[must_use]
    pub fn server_key(mut self, key: ServerKey) -> Self {
        self.server_key = Some(key);
        self
    }

    /// Trusts only the server whose key has this fingerprint ([`Trust::Pinned`]).
    #[must_use]
    pub fn pin(mut self, fingerprint: Fingerprint) -> Self {
        self.trust = match self.trust {
            Trust::Pinned(mut pins) => {
                pins.push(fingerprint);
                Trust::Pinned(pins)
            }
            _ => Trust::pinned(fingerprint),
        };
        self
    }

    /// Whether this side can exchange keys at all.
    pub(crate) fn can_exchange(&self) -> bool {
        !self.suites.is_empty()
    }
}

crate::setters::setters!(SecurityConfig {
    /// Sets [`SecurityConfig::trust`].
    trust: Trust,
    /// Sets [`SecurityConfig::opening`].
    opening: Opening,
    /// Sets [`SecurityConfig::required`].
    required: bool,
    /// Sets [`SecurityConfig::fallback_plain`].
    fallback_plain: bool,
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
    /// What this side sends switched: `true` once its `SEC_ON` went to the transport (every
    /// later frame is protected), `false` once its `SEC_OFF` did. Reported for every change,
    /// whether the application or the peer's request asked for it.
    OwnSecure(bool),
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
    /// Security is required and could not be had: no common suite without a configured
    /// fallback, a plain frame or `SEC_OFF` from a peer that must be secure.
    #[error("security is required: {0}")]
    Required(&'static str),
    /// The server's key is missing, not pinned, or its signature does not verify.
    #[error("untrusted server: {0}")]
    UntrustedServer(&'static str),
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
            SecurityError::UntrustedServer(_) => Code::UNTRUSTED_SERVER,
        }
    }
}

/// `N` octets from the operating system's random source.
pub(crate) fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    random(&mut out);
    out
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn random(buf: &mut [u8]) {
    // The OS source failing leaves no safe way on: no key may come from anything weaker.
    if let Err(error) = getrandom::fill(buf) {
        panic!("operating system random source failed: {error}");
    }
}

/// What the security modules' tests share: hex, and the vectors of PROTOCOL.md.
#[cfg(test)]
pub(crate) mod test_support {
    /// The octets of a hex text; anything but hex digits is skipped.
    pub(crate) fn hex(text: &str) -> Vec<u8> {
        let text: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// PROTOCOL.md's text.
    pub(crate) fn protocol_md() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md"))
            .expect("PROTOCOL.md")
    }

    /// `<!-- MARKER: NAME -->` and the fenced hex that follows it in PROTOCOL.md.
    pub(crate) fn vector(marker: &str, name: &str) -> Vec<u8> {
        let spec = protocol_md();
        let tag = format!("<!-- {marker}: {name} -->");
        let at = spec
            .find(&tag)
            .unwrap_or_else(|| panic!("{tag} missing from PROTOCOL.md"));
        let rest = &spec[at..];
        let start = rest.find("```").expect("a fence");
        let body = &rest[start + rest[start..].find('\n').expect("a line") + 1..];
        let body = &body[..body.find("```").expect("the closing fence")];
        hex(&body
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .collect::<String>())
    }
}
