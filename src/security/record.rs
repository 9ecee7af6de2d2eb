//! Record protection: sealing and opening whole frames with a direction's traffic secret.
//!
//! A protected frame keeps the 9-octet header, with the protected bit set, the id mapped by
//! `Pht` and the length of the *ciphertext*; a 12-octet tag follows (21 octets in all). The
//! sequence number is implicit: both sides count the records of a direction from 0 under each
//! key, so a replayed, reordered, dropped or injected record fails to verify.
//!
//! * `ecdh-p256-aes128gcm`: AES-128-GCM, key = expand(s, "key", 16), nonce = expand(s, "iv", 12)
//!   XOR the sequence number (big-endian, in the last 8 octets); additional data = the 9 header
//!   octets; tag = the 96-bit GCM tag.
//! * `dh-ffdhe2048-aes256cbc-hmacsha256`: AES-256-CBC with PKCS#7 padding, key = expand(s,
//!   "key", 32), IV = AES-256 under expand(s, "iv key", 32) of the sequence number as a 128-bit
//!   big-endian block; tag = the first 12 octets of HMAC-SHA-256 under expand(s, "mac", 32) of
//!   sequence number (8 octets) ‖ the 9 header octets ‖ ciphertext (encrypt-then-MAC). The MAC
//!   is verified before anything is decrypted.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, KeyInit, KeyIvInit};
use aes::{Aes128, Aes256};
use aes_gcm::aead::consts::U12;
use aes_gcm::{AeadInOut, AesGcm};
use bytes::{Bytes, BytesMut};
use hmac::Mac;
use zeroize::Zeroizing;

use super::pht::Pht;
use super::schedule::{expand, mac, next_secret, Secret};
use super::{SecurityError, Suite};
use crate::frame::{Frame, HEADER_LEN, PROTECTED_BIT, TAG_LEN};

type Aes128Gcm96 = AesGcm<Aes128, U12, U12>;

enum Cipher {
    Gcm {
        aead: Box<Aes128Gcm96>,
        iv: [u8; 12],
    },
    Cbc {
        key: Zeroizing<[u8; 32]>,
        iv_cipher: Box<Aes256>,
        mac_key: Zeroizing<[u8; 32]>,
    },
}

/// One direction's record keys and sequence number.
struct Keys {
    suite: Suite,
    secret: Secret,
    cipher: Cipher,
    pht: Pht,
    seq: u64,
}

impl Keys {
    fn new(suite: Suite, secret: Secret) -> Keys {
        let cipher = match suite {
            Suite::EcdhP256Aes128Gcm => {
                let mut key = Zeroizing::new([0u8; 16]);
                let mut iv = [0u8; 12];
                expand(&secret, "key", key.as_mut());
                expand(&secret, "iv", &mut iv);
                Cipher::Gcm {
                    aead: Box::new(Aes128Gcm96::new((&*key).into())),
                    iv,
                }
            }
            Suite::DhFfdhe2048Aes256CbcHmacSha256 => {
                let mut key = Zeroizing::new([0u8; 32]);
                let mut iv_key = Zeroizing::new([0u8; 32]);
                let mut mac_key = Zeroizing::new([0u8; 32]);
                expand(&secret, "key", key.as_mut());
                expand(&secret, "iv key", iv_key.as_mut());
                expand(&secret, "mac", mac_key.as_mut());
                Cipher::Cbc {
                    key,
                    iv_cipher: Box::new(Aes256::new((&*iv_key).into())),
                    mac_key,
                }
            }
        };
        let mut pht_key = Zeroizing::new([0u8; 16]);
        expand(&secret, "pht", pht_key.as_mut());
        Keys {
            suite,
            secret,
            cipher,
            pht: Pht::new(&pht_key),
            seq: 0,
        }
    }

    fn next(&self) -> Keys {
        Keys::new(self.suite, next_secret(&self.secret))
    }

    fn gcm_nonce(iv: &[u8; 12], seq: u64) -> [u8; 12] {
        let mut nonce = *iv;
        for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }

    fn cbc_iv(iv_cipher: &Aes256, seq: u64) -> [u8; 16] {
        let mut block = [0u8; 16];
        block[8..].copy_from_slice(&seq.to_be_bytes());
        let mut block = block.into();
        iv_cipher.encrypt_block(&mut block);
        block.into()
    }

    fn cbc_tag(mac_key: &[u8; 32], seq: u64, header: &[u8], ciphertext: &[u8]) -> hmac::Hmac<sha2::Sha256> {
        mac(mac_key)
            .chain_update(seq.to_be_bytes())
            .chain_update(header)
            .chain_update(ciphertext)
    }
}

/// The payload's octets to encrypt or decrypt in place: its own memory when no other handle
/// shares it (a frame just read, a message sent once), a copy otherwise (a broadcast payload,
/// a frame kept for a resume), made with `room` octets to spare for padding.
fn in_place(payload: Bytes, room: usize) -> BytesMut {
    payload.try_into_mut().unwrap_or_else(|shared| {
        let mut copy = BytesMut::with_capacity(shared.len() + room);
        copy.extend_from_slice(&shared);
        copy
    })
}

fn header(kind_octet: u8, id: u32, len: usize) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0] = kind_octet;
    out[1..5].copy_from_slice(&id.to_be_bytes());
    out[5..].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    out
}

/// Seals the frames of the direction we send.
pub struct Sealer {
    keys: Keys,
}

impl Sealer {
    /// Keys for `suite` from a traffic secret, sequence number 0.
    pub fn new(suite: Suite, secret: Secret) -> Sealer {
        Sealer {
            keys: Keys::new(suite, secret),
        }
    }

    /// The sealer of the next key generation (after a `REKEY` record), sequence number 0.
    pub fn next(&self) -> Sealer {
        Sealer {
            keys: self.keys.next(),
        }
    }

    /// Records sealed under the current key.
    pub fn sequence(&self) -> u64 {
        self.keys.seq
    }

    /// Seals one frame: maps its id, encrypts its payload, authenticates header and payload.
    pub fn seal(&mut self, frame: Frame) -> Result<Frame, SecurityError> {
        let keys = &mut self.keys;
        let seq = keys.seq;
        keys.seq += 1;
        let kind_octet = PROTECTED_BIT | frame.kind as u8;
        let id = keys.pht.map(frame.id);
        let (tag, payload) = match &keys.cipher {
            Cipher::Gcm { aead, iv } => {
                let mut buf = in_place(frame.payload, 0);
                let aad = header(kind_octet, id, buf.len());
                let nonce = Keys::gcm_nonce(iv, seq);
                // Fails only beyond GCM's 64 GiB message limit, far above any frame.
                let tag = aead
                    .encrypt_inout_detached(&nonce.into(), &aad, buf.as_mut().into())
                    .map_err(|_| SecurityError::BadRecord("payload too long to seal"))?;
                let mut out = [0u8; TAG_LEN];
                out.copy_from_slice(&tag);
                (out, buf.freeze())
            }
            Cipher::Cbc {
                key,
                iv_cipher,
                mac_key,
            } => {
                let len = frame.payload.len();
                let padded = (len / 16 + 1) * 16;
                let mut buf = in_place(frame.payload, padded - len);
                buf.resize(padded, 0);
                let iv = Keys::cbc_iv(iv_cipher, seq);
                let encryptor = cbc::Encryptor::<Aes256>::new((&**key).into(), &iv.into());
                encryptor
                    .encrypt_padded::<Pkcs7>(&mut buf, len)
                    .map_err(|_| SecurityError::BadRecord("no room for padding"))?;
                let aad = header(kind_octet, id, padded);
                let full = Keys::cbc_tag(mac_key, seq, &aad, &buf).finalize().into_bytes();
                let mut out = [0u8; TAG_LEN];
                out.copy_from_slice(&full[..TAG_LEN]);
                (out, buf.freeze())
            }
        };
        Ok(Frame {
            kind: frame.kind,
            id,
            tag: Some(tag),
            payload,
        })
    }
}

/// Opens the frames of the direction we receive.
pub struct Opener {
    keys: Keys,
}

impl Opener {
    /// Keys for `suite` from a traffic secret, sequence number 0.
    pub fn new(suite: Suite, secret: Secret) -> Opener {
        Opener {
            keys: Keys::new(suite, secret),
        }
    }

    /// Moves to the next key generation (after an authenticated `REKEY` record).
    pub fn advance(&mut self) {
        self.keys = self.keys.next();
    }

    /// Verifies and decrypts one protected frame; the id comes back unmapped.
    pub fn open(&mut self, frame: Frame) -> Result<Frame, SecurityError> {
        let tag = frame
            .tag
            .ok_or(SecurityError::BadRecord("frame is not protected"))?;
        let keys = &mut self.keys;
        let seq = keys.seq;
        let aad = header(PROTECTED_BIT | frame.kind as u8, frame.id, frame.payload.len());
        let payload = match &keys.cipher {
            Cipher::Gcm { aead, iv } => {
                let mut buf = in_place(frame.payload, 0);
                let nonce = Keys::gcm_nonce(iv, seq);
                aead.decrypt_inout_detached(&nonce.into(), &aad, buf.as_mut().into(), &tag.into())
                    .map_err(|_| SecurityError::BadRecord("authentication failed"))?;
                buf.freeze()
            }
            Cipher::Cbc {
                key,
                iv_cipher,
                mac_key,
            } => {
                Keys::cbc_tag(mac_key, seq, &aad, &frame.payload)
                    .verify_truncated_left(&tag)
                    .map_err(|_| SecurityError::BadRecord("authentication failed"))?;
                if frame.payload.is_empty() || frame.payload.len() % 16 != 0 {
                    return Err(SecurityError::BadRecord("ciphertext is not whole blocks"));
                }
                let mut buf = in_place(frame.payload, 0);
                let iv = Keys::cbc_iv(iv_cipher, seq);
                let decryptor = cbc::Decryptor::<Aes256>::new((&**key).into(), &iv.into());
                let len = decryptor
                    .decrypt_padded::<Pkcs7>(&mut buf)
                    .map_err(|_| SecurityError::BadRecord("bad padding"))?
                    .len();
                buf.truncate(len);
                buf.freeze()
            }
        };
        keys.seq += 1;
        Ok(Frame {
            kind: frame.kind,
            id: keys.pht.unmap(frame.id),
            tag: None,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameCodec, Kind};
    use crate::security::test_support::hex;
    use tokio_util::codec::Encoder;

    #[test]
    fn aes256_cbc_sp800_38a_f25() {
        use aes::cipher::block_padding::NoPadding;
        use aes::cipher::{BlockModeEncrypt, KeyIvInit};
        let key = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
        let iv = hex("000102030405060708090a0b0c0d0e0f");
        let mut buf = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        let key: [u8; 32] = key.try_into().unwrap();
        let iv: [u8; 16] = iv.try_into().unwrap();
        let encryptor = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into());
        let len = buf.len();
        encryptor.encrypt_padded::<NoPadding>(&mut buf, len).unwrap();
        assert_eq!(
            buf,
            hex("f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d")
        );
    }

    #[test]
    fn aes128_gcm_test_case_2_with_a_96_bit_tag() {
        use aes_gcm::aead::consts::U12;
        use aes_gcm::{AeadInOut, AesGcm, KeyInit};
        // McGrew & Viega, GCM test case 2: zero key, zero IV, one zero block. A 96-bit tag is the
        // first 12 octets of the 128-bit tag ab6e47d42cec13bdf53a67b21257bddf.
        let aead = AesGcm::<aes::Aes128, U12, U12>::new(&[0u8; 16].into());
        let mut buf = [0u8; 16];
        let tag = aead
            .encrypt_inout_detached(&[0u8; 12].into(), &[], (&mut buf[..]).into())
            .unwrap();
        assert_eq!(buf.to_vec(), hex("0388dace60b6a392f328c2b971b2fe78"));
        assert_eq!(tag.to_vec(), hex("ab6e47d42cec13bdf53a67b2"));
    }

    fn fixed_secret() -> Secret {
        let mut secret = [0u8; 32];
        for (i, b) in secret.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        zeroize::Zeroizing::new(secret)
    }

    fn sealed_vector(name: &str) -> Vec<u8> {
        crate::security::test_support::vector("sealed-vector", name)
    }

    fn wire(frame: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        FrameCodec::default().encode(frame, &mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn sealed_records_match_protocol_md_byte_for_byte() {
        for (suite, name) in [
            (Suite::EcdhP256Aes128Gcm, "gcm"),
            (Suite::DhFfdhe2048Aes256CbcHmacSha256, "cbc"),
        ] {
            let mut sealer = Sealer::new(suite, fixed_secret());
            let mut opener = Opener::new(suite, fixed_secret());
            for seq in 0..2u32 {
                let frame = Frame::message(7, Bytes::from_static(b"hi"));
                let sealed = sealer.seal(frame.clone()).unwrap();
                assert_eq!(
                    wire(&sealed),
                    sealed_vector(&format!("{name}-seq{seq}")),
                    "{name} record {seq}"
                );
                assert_eq!(opener.open(sealed).unwrap(), frame);
            }
        }
        let mapped = Sealer::new(Suite::EcdhP256Aes128Gcm, fixed_secret())
            .seal(Frame::message(7, Bytes::new()))
            .unwrap()
            .id;
        let line = format!("The id 7 maps to 0x{mapped:08x} under this secret.");
        let spec = crate::security::test_support::protocol_md();
        assert!(spec.contains(&line), "PROTOCOL.md must say: {line}");
    }

    #[test]
    fn sealing_and_opening_never_change_bytes_another_handle_shares() {
        for suite in Suite::ALL {
            let original = vec![0x5au8; 1000];
            let payload = Bytes::from(original.clone());
            let mut sealer = Sealer::new(suite, fixed_secret());
            let sealed = sealer.seal(Frame::message(1, payload.clone())).unwrap();
            assert_eq!(payload, original, "{suite}: the sender's copy stays plain");
            assert_ne!(
                sealed.payload[..16],
                original[..16],
                "{suite}: the record is encrypted"
            );

            let ciphertext = sealed.payload.to_vec();
            let kept = sealed.payload.clone();
            let opened = Opener::new(suite, fixed_secret()).open(sealed).unwrap();
            assert_eq!(opened.payload, original, "{suite}: opens to the plaintext");
            assert_eq!(kept, ciphertext, "{suite}: another holder still sees the record");

            // Nothing else holds these: sealed and opened in their own memory, still correct.
            let mut sealer = Sealer::new(suite, fixed_secret());
            let sealed = sealer
                .seal(Frame::message(1, Bytes::from(original.clone())))
                .unwrap();
            assert_eq!(
                sealed.payload, ciphertext,
                "{suite}: in place seals the same record"
            );
            let opened = Opener::new(suite, fixed_secret()).open(sealed).unwrap();
            assert_eq!(
                opened.payload, original,
                "{suite}: in place opens the same plaintext"
            );
        }
    }

    #[test]
    fn records_are_bound_to_their_sequence_header_and_key() {
        for suite in Suite::ALL {
            let mut sealer = Sealer::new(suite, fixed_secret());
            let first = sealer
                .seal(Frame::message(1, Bytes::from_static(b"first")))
                .unwrap();
            let second = sealer
                .seal(Frame::message(1, Bytes::from_static(b"second")))
                .unwrap();
            // Out of order: the second record under the first sequence number.
            assert!(
                Opener::new(suite, fixed_secret()).open(second).is_err(),
                "{suite}: reorder"
            );
            // A changed header (the id) breaks the tag.
            let mut moved = first.clone();
            moved.id ^= 1;
            assert!(
                Opener::new(suite, fixed_secret()).open(moved).is_err(),
                "{suite}: header"
            );
            // Another kind with the same bytes.
            let mut rekinded = first.clone();
            rekinded.kind = Kind::Error;
            assert!(
                Opener::new(suite, fixed_secret()).open(rekinded).is_err(),
                "{suite}: kind"
            );
            // Another key.
            let other = zeroize::Zeroizing::new([9u8; 32]);
            assert!(
                Opener::new(suite, other).open(first.clone()).is_err(),
                "{suite}: key"
            );
            // After a rekey both sides move on together.
            let mut sealer = Sealer::new(suite, fixed_secret()).next();
            let mut opener = Opener::new(suite, fixed_secret());
            opener.advance();
            assert!(
                opener
                    .open(sealer.seal(Frame::message(3, Bytes::new())).unwrap())
                    .is_ok(),
                "{suite}: rekey"
            );
        }
    }
}
