//! The keyed Pseudo-Hadamard id mapping: a bijection of the 31-bit message id space.
//!
//! This is obfuscation of the message type, not security: the record's authentication and
//! encryption protect the frame; the mapping only hides which id a record carries from someone
//! who watches the headers. An id `x` is split into `a` (high 16 bits) and `b` (low 15 bits);
//! each of four rounds adds round keys, applies the Pseudo-Hadamard transform
//! `a ← a + b (mod 2¹⁶)`, `b ← b + a (mod 2¹⁵)` (together `a' = a + b`, `b' = a + 2b`), and
//! rotates the 31 bits left by 7. Every step is invertible, so the whole map is a bijection.

use crate::frame::MAX_ID;

const ROUNDS: usize = 4;
const ROTATE: u32 = 7;

/// A keyed bijection of `0 ..= 2³¹ − 1`. Its round keys are wiped when it is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pht {
    keys: [(u16, u16); ROUNDS],
}

impl Drop for Pht {
    fn drop(&mut self) {
        for (a, b) in &mut self.keys {
            zeroize::Zeroize::zeroize(a);
            zeroize::Zeroize::zeroize(b);
        }
    }
}

impl Pht {
    /// The mapping for a 16-octet key: round `r` adds the big-endian `u16`s at octets `4r` and
    /// `4r + 2` to `a` and (mod 2¹⁵) to `b`.
    pub fn new(key: &[u8; 16]) -> Pht {
        let mut keys = [(0u16, 0u16); ROUNDS];
        for (r, pair) in keys.iter_mut().enumerate() {
            let at = 4 * r;
            *pair = (
                u16::from_be_bytes([key[at], key[at + 1]]),
                u16::from_be_bytes([key[at + 2], key[at + 3]]) & 0x7fff,
            );
        }
        Pht { keys }
    }

    /// Maps an id (at most 2³¹ − 1) to its wire form.
    pub fn map(&self, id: u32) -> u32 {
        let mut x = id & MAX_ID;
        for &(ka, kb) in &self.keys {
            let (mut a, mut b) = ((x >> 15) as u16, (x & 0x7fff) as u16);
            a = a.wrapping_add(ka);
            b = (b + kb) & 0x7fff;
            a = a.wrapping_add(b);
            b = (b + (a & 0x7fff)) & 0x7fff;
            x = rotate_left((u32::from(a) << 15) | u32::from(b));
        }
        x
    }

    /// The inverse of [`Pht::map`].
    pub fn unmap(&self, wire: u32) -> u32 {
        let mut x = wire & MAX_ID;
        for &(ka, kb) in self.keys.iter().rev() {
            x = rotate_right(x);
            let (mut a, mut b) = ((x >> 15) as u16, (x & 0x7fff) as u16);
            b = b.wrapping_sub(a & 0x7fff) & 0x7fff;
            a = a.wrapping_sub(b);
            b = b.wrapping_sub(kb) & 0x7fff;
            a = a.wrapping_sub(ka);
            x = (u32::from(a) << 15) | u32::from(b);
        }
        x
    }
}

fn rotate_left(x: u32) -> u32 {
    ((x << ROTATE) | (x >> (31 - ROTATE))) & MAX_ID
}

fn rotate_right(x: u32) -> u32 {
    ((x >> ROTATE) | (x << (31 - ROTATE))) & MAX_ID
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zero_key_maps_7_as_protocol_md_says() {
        assert_eq!(Pht::new(&[0u8; 16]).map(7), 0x4013600c);
    }

    #[test]
    fn pht_is_a_bijection_over_the_whole_31_bit_range() {
        let pht = Pht::new(&[
            0x5a, 0x13, 0xc4, 0x09, 0xff, 0x00, 0x71, 0x2e, 0x88, 0x41, 0x3b, 0xd0, 0x06, 0x99, 0xe7, 0x52,
        ]);
        // unmap ∘ map = identity on the whole finite domain, so map is injective, hence bijective;
        // map never leaves the domain. Split over two threads.
        let halves: Vec<_> = (0..2u32)
            .map(|half| {
                let pht = pht.clone();
                std::thread::spawn(move || {
                    let (start, end) = (half << 30, (half << 30) | ((1 << 30) - 1));
                    for id in start..=end {
                        let mapped = pht.map(id);
                        if mapped > MAX_ID || pht.unmap(mapped) != id {
                            return Err(id);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for half in halves {
            assert_eq!(half.join().unwrap(), Ok(()));
        }
    }

    #[test]
    fn the_same_id_maps_differently_in_different_sessions() {
        // Two sessions' traffic secrets differ, and so do their mappings.
        use crate::frame::Frame;
        use crate::security::record::Sealer;
        use crate::security::Suite;
        use bytes::Bytes;
        let mut a = Sealer::new(Suite::EcdhP256Aes128Gcm, zeroize::Zeroizing::new([1u8; 32]));
        let mut b = Sealer::new(Suite::EcdhP256Aes128Gcm, zeroize::Zeroizing::new([2u8; 32]));
        let differing = (0..100u32)
            .filter(|&id| {
                a.seal(Frame::message(id, Bytes::new())).unwrap().id
                    != b.seal(Frame::message(id, Bytes::new())).unwrap().id
            })
            .count();
        assert!(differing >= 99, "only {differing} of 100 ids map differently");
    }
}
