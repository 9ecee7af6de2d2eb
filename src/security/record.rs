//! Record protection: sealing and opening whole frames with a direction's traffic secret.
//!
//! A protected frame keeps the 9-octet header, with the protected bit set, the id mapped by
//! [`Pht`] and the length of the *ciphertext*; a 12-octet tag follows (21 octets in all). The
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
        let mut pht_key = [0u8; 16];
        expand(&secret, "pht", &mut pht_key);
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
