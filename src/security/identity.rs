//! Server authentication without TLS: the server's long-term ECDSA P-256 key, its fingerprint,
//! and how a client decides whom to trust.
//!
//! This module owns the key's generation, storage and signatures over a handshake transcript
//! hash (PROTOCOL.md §9.1), and the fingerprint format. It must not touch the handshake's state
//! or IO beyond reading and writing the key file it is asked to.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{random, SecurityError};

/// What a server signs: this label, then the transcript hash.
const SIGNATURE_LABEL: &[u8] = b"truflux v2 server signature";
/// Octets of an uncompressed P-256 public key.
pub(crate) const PUBLIC_KEY_LEN: usize = 65;
/// Octets of an `r ‖ s` signature.
pub(crate) const SIGNATURE_LEN: usize = 64;

/// A server's long-term signing key. Cheap to clone (shared); its secret never prints and is
/// wiped when the last clone goes.
#[derive(Clone)]
pub struct ServerKey {
    key: Arc<SigningKey>,
}

impl ServerKey {
    /// A fresh random key.
    pub fn generate() -> ServerKey {
        loop {
            let mut bytes = Zeroizing::new([0u8; 32]);
            random(bytes.as_mut());
            // Rejects zero and values above the group order; retry (probability ~2^-32).
            if let Ok(key) = SigningKey::from_slice(bytes.as_ref()) {
                return ServerKey { key: Arc::new(key) };
            }
        }
    }

    /// The key whose 32-octet secret scalar is `secret` (big-endian).
    pub fn from_secret(secret: &[u8]) -> Result<ServerKey, SecurityError> {
        SigningKey::from_slice(secret)
            .map(|key| ServerKey { key: Arc::new(key) })
            .map_err(|_| SecurityError::Handshake("not a valid P-256 secret key"))
    }

    /// Reads a key saved by [`ServerKey::save`]: the secret scalar as 64 hex digits.
    pub fn load(path: impl AsRef<Path>) -> std::io::Result<ServerKey> {
        let text = Zeroizing::new(std::fs::read_to_string(path)?);
        let secret = Zeroizing::new(
            decode_hex::<32>(text.trim())
                .ok_or_else(|| invalid("the key file does not hold 64 hex digits"))?,
        );
        ServerKey::from_secret(secret.as_ref()).map_err(|e| invalid(&e.to_string()))
    }

    /// Writes the secret scalar as 64 hex digits to a new file readable by its owner only
    /// (on Unix). Refuses to overwrite an existing file.
    pub fn save(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        let secret = Zeroizing::new(self.key.to_bytes());
        let text = Zeroizing::new(hex(secret.as_ref()));
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    }

    /// Loads the key at `path`, or generates one and saves it there when the file does not
    /// exist.
    pub fn load_or_generate(path: impl AsRef<Path>) -> std::io::Result<ServerKey> {
        let path = path.as_ref();
        match ServerKey::load(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = ServerKey::generate();
                key.save(path)?;
                Ok(key)
            }
            other => other,
        }
    }

    /// The 65-octet uncompressed public key.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let point = self.key.verifying_key().to_sec1_point(false);
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out.copy_from_slice(point.as_bytes());
        out
    }

    /// The fingerprint clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.public_key())
    }

    /// Signs a transcript hash (PROTOCOL.md §9.1).
    pub(crate) fn sign(&self, th: &[u8; 32]) -> [u8; SIGNATURE_LEN] {
        let signature: Signature = self.key.sign(&signed(th));
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(&signature.to_bytes());
        out
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

fn signed(th: &[u8; 32]) -> Vec<u8> {
    let mut data = Vec::with_capacity(SIGNATURE_LABEL.len() + th.len());
    data.extend_from_slice(SIGNATURE_LABEL);
    data.extend_from_slice(th);
    data
}

/// Checks a server's signature over a transcript hash with its 65-octet public key.
pub(crate) fn verify(public: &[u8], th: &[u8; 32], signature: &[u8]) -> Result<(), SecurityError> {
    if public.len() != PUBLIC_KEY_LEN || public.first() != Some(&0x04) {
        return Err(SecurityError::UntrustedServer(
            "the server key is not an uncompressed P-256 point",
        ));
    }
    let key = VerifyingKey::from_sec1_bytes(public)
        .map_err(|_| SecurityError::UntrustedServer("the server key is not a valid P-256 point"))?;
    let signature = Signature::from_slice(signature)
        .map_err(|_| SecurityError::UntrustedServer("the server signature is malformed"))?;
    key.verify(&signed(th), &signature)
        .map_err(|_| SecurityError::UntrustedServer("the server signature does not verify"))
}

/// SHA-256 of a server's public key: what clients pin. Displayed and parsed as 64 lowercase hex
/// digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a 65-octet public key.
    pub fn of(public_key: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(public_key).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = SecurityError;

    /// 64 hex digits; `:` separators and surrounding spaces are ignored.
    fn from_str(text: &str) -> Result<Fingerprint, SecurityError> {
        let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
        decode_hex::<32>(&digits)
            .map(Fingerprint)
            .ok_or(SecurityError::Handshake("a fingerprint is 64 hex digits"))
    }
}

/// Whom a client trusts to be the server (PROTOCOL.md §9.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trust {
    /// Nobody in particular: the exchange is anonymous, and a man in the middle present from
    /// the start is not detected. The default.
    #[default]
    Anonymous,
    /// Only a server whose key has one of these fingerprints; any other closes with
    /// `UNTRUSTED_SERVER`.
    Pinned(Vec<Fingerprint>),
    /// The key the first connection sees is pinned for every later connection of this client
    /// (its reconnections). The first connection itself is not authenticated: read the key with
    /// [`Peer::server_key`](crate::Peer::server_key) and pin it next time.
    FirstUse,
}

impl Trust {
    /// Pins one fingerprint.
    pub fn pinned(fingerprint: Fingerprint) -> Trust {
        Trust::Pinned(vec![fingerprint])
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in text.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_transcript_and_key() {
        let key = ServerKey::generate();
        let th = [7u8; 32];
        let signature = key.sign(&th);
        verify(&key.public_key(), &th, &signature).unwrap();
        assert!(verify(&key.public_key(), &[8u8; 32], &signature).is_err());
        let other = ServerKey::generate();
        assert!(verify(&other.public_key(), &th, &signature).is_err());
        let compressed = key.key.verifying_key().to_sec1_point(true);
        assert!(verify(compressed.as_bytes(), &th, &signature).is_err());
    }

    #[test]
    fn fingerprints_print_and_parse_as_hex() {
        let key = ServerKey::generate();
        let text = key.fingerprint().to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), key.fingerprint());
        assert!("xyz".parse::<Fingerprint>().is_err());
        assert!(!format!("{key:?}").contains(&hex(key.key.to_bytes().as_ref())));
    }

    #[test]
    fn a_saved_key_loads_back_and_is_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("truflux-key-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let key = ServerKey::load_or_generate(&dir).unwrap();
        assert_eq!(ServerKey::load(&dir).unwrap().fingerprint(), key.fingerprint());
        assert!(key.save(&dir).is_err(), "an existing key file stays");
        std::fs::remove_file(&dir).unwrap();
    }
}
