//! Key exchange: ephemeral finite-field DH over RFC 7919 `ffdhe2048`, and ECDH over P-256.
//!
//! Peer public values are validated before use: for DH, `1 < Y < p − 1` and `Y^q = 1 (mod p)`
//! (the prime-order subgroup, `q = (p − 1) / 2`); for P-256, a valid SEC1 encoding of a point on
//! the curve that is not the identity. The shared secret is checked not to be trivial.

use num_bigint_dig::BigUint;
use p256::elliptic_curve::sec1::ToSec1Point;
use zeroize::Zeroizing;

use super::{random, SecurityError, Suite};

/// The RFC 7919 `ffdhe2048` prime (Appendix A.1), generator 2.
pub const FFDHE2048_P: &str = "\
FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695\
A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A\
D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935\
984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A\
BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4\
AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61\
9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005\
C58EF1837D1683B2C6F34A26C1B2EFFA886B423861285C97FFFFFFFFFFFFFFFF";

/// Octets of a DH public value and shared secret (the length of `p`).
pub const DH_LEN: usize = 256;
/// Octets of a DH private exponent: 256 bits, twice the group's ~103-bit strength and more.
const DH_EXPONENT_LEN: usize = 32;

/// `p` of `ffdhe2048`.
pub fn ffdhe2048_p() -> BigUint {
    // A fixed, valid hex constant: parsing cannot fail.
    BigUint::parse_bytes(FFDHE2048_P.as_bytes(), 16).unwrap_or_default()
}

/// An ephemeral private key for one suite's key exchange.
pub enum KeyShare {
    /// A DH private exponent.
    Dh(Zeroizing<Vec<u8>>),
    /// A P-256 private scalar.
    Ecdh(p256::SecretKey),
}

impl KeyShare {
    /// A fresh private key for `suite` and its public value, as sent on the wire (DH: 256
    /// octets big-endian; P-256: the 65-octet uncompressed SEC1 point).
    pub fn generate(suite: Suite) -> (KeyShare, Vec<u8>) {
        match suite {
            Suite::DhFfdhe2048Aes256CbcHmacSha256 => {
                let mut exponent = Zeroizing::new(vec![0u8; DH_EXPONENT_LEN]);
                random(&mut exponent);
                let public = BigUint::from(2u32).modpow(&BigUint::from_bytes_be(&exponent), &ffdhe2048_p());
                (KeyShare::Dh(exponent), fixed_len(&public))
            }
            Suite::EcdhP256Aes128Gcm => loop {
                let mut bytes = Zeroizing::new([0u8; 32]);
                random(bytes.as_mut());
                // Rejects zero and values above the group order; retry (probability ~2^-32).
                if let Ok(secret) = p256::SecretKey::from_slice(bytes.as_ref()) {
                    let public = secret.public_key().to_sec1_point(false).as_bytes().to_vec();
                    return (KeyShare::Ecdh(secret), public);
                }
            },
        }
    }

    /// The shared secret with the peer's public value, after validating it.
    pub fn agree(&self, peer_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, SecurityError> {
        match self {
            KeyShare::Dh(exponent) => {
                let p = ffdhe2048_p();
                let y = validate_dh_public(peer_public, &p)?;
                let z = y.modpow(&BigUint::from_bytes_be(exponent), &p);
                if z <= BigUint::from(1u32) || z == &p - 1u32 {
                    return Err(SecurityError::Handshake("trivial DH shared secret"));
                }
                Ok(Zeroizing::new(fixed_len(&z)))
            }
            KeyShare::Ecdh(secret) => {
                let peer = p256::PublicKey::from_sec1_bytes(peer_public)
                    .map_err(|_| SecurityError::Handshake("P-256 public key is not a valid curve point"))?;
                let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
        }
    }
}

/// Checks a DH public value: exactly 256 octets, `1 < Y < p − 1`, and `Y^q = 1 (mod p)`.
pub fn validate_dh_public(bytes: &[u8], p: &BigUint) -> Result<BigUint, SecurityError> {
    if bytes.len() != DH_LEN {
        return Err(SecurityError::Handshake("DH public value is not 256 octets"));
    }
    let y = BigUint::from_bytes_be(bytes);
    let one = BigUint::from(1u32);
    let p_minus_one = p - 1u32;
    if y <= one || y >= p_minus_one {
        return Err(SecurityError::Handshake("DH public value out of range"));
    }
    let q: BigUint = &p_minus_one >> 1usize;
    if y.modpow(&q, p) != one {
        return Err(SecurityError::Handshake(
            "DH public value outside the prime-order subgroup",
        ));
    }
    Ok(y)
}

/// Big-endian, left-padded with zeros to the length of `p`.
fn fixed_len(value: &BigUint) -> Vec<u8> {
    let bytes = value.to_bytes_be();
    let mut out = vec![0u8; DH_LEN.saturating_sub(bytes.len())];
    out.extend_from_slice(&bytes);
    out
}
