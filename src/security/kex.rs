//! Key exchange: ephemeral finite-field DH over RFC 7919 `ffdhe2048`, and ECDH over P-256.
//!
//! Peer public values are validated before any work of our own: for DH, `1 < Y < p − 1` and
//! the Legendre symbol `(Y/p) = 1` (`p` is a safe prime, so the quadratic residues are exactly
//! the prime-order subgroup; the symbol costs a gcd-like loop, where `Y^q` cost a 2048-bit
//! exponentiation); for P-256, the 65-octet uncompressed SEC1 encoding of a point on the curve.
//! The shared secret is checked not to be trivial. Exponents, shared secrets and their
//! big-integer copies are wiped when dropped.

use num_bigint_dig::{BigInt, BigUint};
use p256::elliptic_curve::sec1::ToSec1Point;
use zeroize::{Zeroize, Zeroizing};

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

/// Octets of an uncompressed P-256 point.
pub const P256_POINT_LEN: usize = 65;

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
                let x = Zeroizing::new(BigUint::from_bytes_be(&exponent));
                let public = BigUint::from(2u32).modpow(&x, &ffdhe2048_p());
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
                let x = Zeroizing::new(BigUint::from_bytes_be(exponent));
                let mut z = y.modpow(&x, &p);
                let trivial = z <= BigUint::from(1u32) || z == &p - 1u32;
                let shared = Zeroizing::new(fixed_len(&z));
                z.zeroize();
                if trivial {
                    return Err(SecurityError::Handshake("trivial DH shared secret"));
                }
                Ok(shared)
            }
            KeyShare::Ecdh(secret) => {
                let peer = validate_p256_public(peer_public)?;
                let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
        }
    }
}

/// Checks a peer's public value for `suite` without computing anything of our own: what a
/// server does before it spends work on an offer.
pub fn validate_public(suite: Suite, bytes: &[u8]) -> Result<(), SecurityError> {
    match suite {
        Suite::DhFfdhe2048Aes256CbcHmacSha256 => validate_dh_public(bytes, &ffdhe2048_p()).map(drop),
        Suite::EcdhP256Aes128Gcm => validate_p256_public(bytes).map(drop),
    }
}

/// Checks a P-256 public value: the 65-octet uncompressed encoding of a curve point.
pub fn validate_p256_public(bytes: &[u8]) -> Result<p256::PublicKey, SecurityError> {
    if bytes.len() != P256_POINT_LEN || bytes[0] != 0x04 {
        return Err(SecurityError::Handshake(
            "P-256 public key is not a 65-octet uncompressed point",
        ));
    }
    p256::PublicKey::from_sec1_bytes(bytes)
        .map_err(|_| SecurityError::Handshake("P-256 public key is not a valid curve point"))
}

/// Checks a DH public value: exactly 256 octets, `1 < Y < p − 1`, and `(Y/p) = 1`.
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
    let (y_int, p_int) = (BigInt::from(y.clone()), BigInt::from(p.clone()));
    if num_bigint_dig::algorithms::jacobi(&y_int, &p_int) != 1 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::test_support::hex;

    #[test]
    fn p256_ecdh_rfc5903_section_8_1() {
        let i = p256::SecretKey::from_slice(&hex(
            "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
        ))
        .unwrap();
        let gr = hex(
            "04D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63\
             56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB",
        );
        let share = KeyShare::Ecdh(i);
        let z = share.agree(&gr).unwrap();
        assert_eq!(
            z.to_vec(),
            hex("D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE")
        );
        // A point off the curve (last octet of y changed) is refused.
        let mut bad = gr.clone();
        bad[64] ^= 1;
        assert!(share.agree(&bad).is_err());
    }

    #[test]
    fn ffdhe2048_generator_has_prime_order_and_bad_values_are_refused() {
        use num_bigint_dig::BigUint;
        let p = ffdhe2048_p();
        assert_eq!(p.bits(), 2048);
        let q: BigUint = (&p - 1u32) >> 1usize;
        // 2 generates the subgroup of prime order q: a typo in p would break this.
        assert_eq!(BigUint::from(2u32).modpow(&q, &p), BigUint::from(1u32));
        let fixed = |v: &BigUint| {
            let b = v.to_bytes_be();
            let mut out = vec![0u8; 256 - b.len()];
            out.extend_from_slice(&b);
            out
        };
        for bad in [
            BigUint::from(0u32),
            BigUint::from(1u32),
            &p - 1u32,
            p.clone(),
            &p - 2u32,
        ] {
            // p − 2 = −2 is a quadratic non-residue: outside the subgroup.
            assert!(validate_dh_public(&fixed(&bad), &p).is_err(), "{bad:x} accepted");
        }
        assert!(
            validate_dh_public(&[1u8; 255], &p).is_err(),
            "short value accepted"
        );
        let (share, public) = KeyShare::generate(Suite::DhFfdhe2048Aes256CbcHmacSha256);
        let (other, other_public) = KeyShare::generate(Suite::DhFfdhe2048Aes256CbcHmacSha256);
        assert!(validate_dh_public(&public, &p).is_ok());
        assert_eq!(
            *share.agree(&other_public).unwrap(),
            *other.agree(&public).unwrap()
        );
    }

    #[test]
    fn only_uncompressed_p256_points_are_accepted() {
        let (_, public) = KeyShare::generate(Suite::EcdhP256Aes128Gcm);
        assert!(validate_p256_public(&public).is_ok());
        let point = p256::PublicKey::from_sec1_bytes(&public).unwrap();
        let compressed = point.to_sec1_point(true);
        assert_eq!(compressed.as_bytes().len(), 33);
        assert!(validate_p256_public(compressed.as_bytes()).is_err());
    }
}
