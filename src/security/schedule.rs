//! The key schedule: HKDF-SHA-256 from the shared secret, the optional pre-shared key and the
//! handshake transcript to per-direction traffic secrets and the finished keys.
//!
//! ```text
//! prk            = HKDF-Extract(salt = PSK or 32 zero octets, ikm = shared secret)
//! th             = SHA-256(transcript)
//! secret(label)  = HKDF-Expand(prk, "truflux v1 " || label || th, 32)
//!   labels: "c2s", "s2c", "server finished", "client finished"
//! server finished = HMAC-SHA-256(secret("server finished"), th)
//! th2            = SHA-256(transcript || server finished)
//! client finished = HMAC-SHA-256(secret("client finished"), th2)
//! from a traffic secret s:  expand(s, label, n) = HKDF-Expand(s, "truflux v1 " || label, n)
//!   "key", "iv", "iv key", "mac", "pht", and "next" (the secret after a rekey)
//! ```

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::SecurityError;

/// The label prefix of every derivation.
pub const PREFIX: &[u8] = b"truflux v1 ";

/// A 32-octet secret, wiped when dropped.
pub type Secret = Zeroizing<[u8; 32]>;

/// What the handshake derives.
pub struct HandshakeSecrets {
    /// Client → server traffic secret.
    pub c2s: Secret,
    /// Server → client traffic secret.
    pub s2c: Secret,
    /// Key of the server's finished MAC.
    pub server_finished: Secret,
    /// Key of the client's finished MAC.
    pub client_finished: Secret,
}

/// SHA-256 of `data`.
pub fn hash(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Derives the handshake secrets from the shared secret, the PSK and the transcript hash.
pub fn derive(shared: &[u8], psk: Option<&[u8]>, th: &[u8; 32]) -> HandshakeSecrets {
    let zero = [0u8; 32];
    let (_, hkdf) = Hkdf::<Sha256>::extract(Some(psk.unwrap_or(&zero)), shared);
    let secret = |label: &[u8]| {
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 octets is far below HKDF-SHA-256's limit of 8160: cannot fail.
        let _ = hkdf.expand_multi_info(&[PREFIX, label, th], out.as_mut());
        out
    };
    HandshakeSecrets {
        c2s: secret(b"c2s"),
        s2c: secret(b"s2c"),
        server_finished: secret(b"server finished"),
        client_finished: secret(b"client finished"),
    }
}

/// HKDF-Expand from a traffic secret.
pub fn expand(secret: &[u8; 32], label: &str, out: &mut [u8]) {
    // A 32-octet PRK is valid and the outputs are short: neither call can fail.
    if let Ok(hkdf) = Hkdf::<Sha256>::from_prk(secret) {
        let _ = hkdf.expand_multi_info(&[PREFIX, label.as_bytes()], out);
    }
}

/// The traffic secret that follows `secret` after a rekey.
pub fn next_secret(secret: &[u8; 32]) -> Secret {
    let mut next = Zeroizing::new([0u8; 32]);
    expand(secret, "next", next.as_mut());
    next
}

/// A finished MAC: HMAC-SHA-256 of the transcript hash.
pub fn finished(key: &[u8; 32], th: &[u8; 32]) -> [u8; 32] {
    mac(key).chain_update(th).finalize().into_bytes().into()
}

/// Checks a received finished MAC in constant time.
pub fn verify_finished(key: &[u8; 32], th: &[u8; 32], received: &[u8]) -> Result<(), SecurityError> {
    mac(key)
        .chain_update(th)
        .verify_slice(received)
        .map_err(|_| SecurityError::Handshake("finished MAC does not verify"))
}

/// HMAC-SHA-256 keyed with a 32-octet key.
pub fn mac(key: &[u8; 32]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length: cannot fail.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}
