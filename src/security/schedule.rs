//! The key schedule: HKDF-SHA-256 from the shared secret and the handshake transcript to
//! per-direction traffic secrets, the finished keys and the session's resume secret
//! (PROTOCOL.md §9.2).
//!
//! ```text
//! prk            = HKDF-Extract(salt = 32 zero octets, ikm = shared secret)
//! th             = SHA-256(T1)
//! secret(label)  = HKDF-Expand(prk, "truflux v2 " || label || th, 32)
//!   labels: "c2s", "s2c", "server finished", "client finished", "resumption"
//! server finished = HMAC-SHA-256(secret("server finished"), SHA-256(T2))
//! th2            = SHA-256(T2 || server finished)
//! client finished = HMAC-SHA-256(secret("client finished"), th2)
//! binder         = HMAC-SHA-256(resume secret, "truflux v2 binder" || th2)
//! from a traffic secret s:  expand(s, label, n) = HKDF-Expand(s, "truflux v2 " || label, n)
//!   "key", "iv", "iv key", "mac", "pht", and "next" (the secret after a rekey)
//! ```

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::SecurityError;

/// The label prefix of every derivation.
pub const PREFIX: &[u8] = b"truflux v2 ";
/// What a resume binder authenticates before the transcript hash.
const BINDER_LABEL: &[u8] = b"truflux v2 binder";

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
    /// The resume secret, if this is the first key exchange of a resumable session.
    pub resumption: Secret,
}

/// SHA-256 of `data`.
pub fn hash(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Derives the handshake secrets from the shared secret and the transcript hash.
pub fn derive(shared: &[u8], th: &[u8; 32]) -> HandshakeSecrets {
    let zero = [0u8; 32];
    let (_, hkdf) = Hkdf::<Sha256>::extract(Some(&zero), shared);
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
        resumption: secret(b"resumption"),
    }
}

/// The binder a resuming client presents: proof that it holds the session's resume secret,
/// bound to this connection's transcript.
pub fn binder(resumption: &[u8; 32], th2: &[u8; 32]) -> [u8; 32] {
    mac(resumption)
        .chain_update(BINDER_LABEL)
        .chain_update(th2)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks a binder in constant time.
pub fn verify_binder(resumption: &[u8; 32], th2: &[u8; 32], received: &[u8]) -> bool {
    mac(resumption)
        .chain_update(BINDER_LABEL)
        .chain_update(th2)
        .verify_slice(received)
        .is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::test_support::hex;

    #[test]
    fn sha256_fips180_abc() {
        assert_eq!(
            hash(b"abc").to_vec(),
            hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }

    #[test]
    fn hmac_sha256_rfc4231_case_2() {
        use hmac::{KeyInit, Mac};
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            mac.finalize().into_bytes().to_vec(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn hkdf_sha256_rfc5869_case_1() {
        let ikm = [0x0bu8; 22];
        let salt = hex("000102030405060708090a0b0c");
        let info = hex("f0f1f2f3f4f5f6f7f8f9");
        let (prk, hkdf) = hkdf::Hkdf::<sha2::Sha256>::extract(Some(&salt), &ikm);
        assert_eq!(
            prk.to_vec(),
            hex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        );
        let mut okm = [0u8; 42];
        hkdf.expand(&info, &mut okm).unwrap();
        assert_eq!(
            okm.to_vec(),
            hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
        );
    }

    #[test]
    fn a_binder_verifies_only_for_its_secret_and_transcript() {
        let (secret, th2) = ([3u8; 32], [4u8; 32]);
        let good = binder(&secret, &th2);
        assert!(verify_binder(&secret, &th2, &good));
        assert!(
            !verify_binder(&[5u8; 32], &th2, &good),
            "another session's secret"
        );
        assert!(!verify_binder(&secret, &[6u8; 32], &good), "another connection");
        assert!(!verify_binder(&secret, &th2, &good[..31]), "cut short");
    }
}
