//! A SHA-256 whose state can be saved and resumed.
//!
//! The whole-file digest is built incrementally: as chunks arrive, the state over
//! the contiguous received prefix is advanced and persisted in the state store
//! with the chunk record. `complete` then only has to hash what arrived out of
//! order instead of reading the whole file again. `sha2::Sha256` cannot export
//! its state, so this wraps the crate's public compression function and does the
//! (tiny) padding step itself; the tests check it against `sha2::Sha256`.

use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::{typenum::U64, GenericArray};

const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// A resumable SHA-256 computation: the compression state, the number of bytes
/// fed so far and the bytes of a block not yet full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashState {
    h: [u32; 8],
    /// Bytes fed so far, including those waiting in `tail`.
    len: u64,
    /// Fewer than 64 bytes that do not yet make a block.
    #[serde(with = "hex::serde")]
    tail: Vec<u8>,
}

impl Default for HashState {
    fn default() -> Self {
        HashState {
            h: IV,
            len: 0,
            tail: Vec::new(),
        }
    }
}

impl HashState {
    /// How many bytes of the input this state covers.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.tail.is_empty() {
            let take = (64 - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.tail.len() < 64 {
                return;
            }
            sha2::compress256(&mut self.h, as_blocks(&self.tail));
            self.tail.clear();
        }
        let whole = data.len() / 64 * 64;
        if whole > 0 {
            sha2::compress256(&mut self.h, as_blocks(&data[..whole]));
        }
        self.tail.extend_from_slice(&data[whole..]);
    }

    /// Pads and returns the digest; the state itself is left as it was so that
    /// it can still be persisted or extended.
    pub fn finalize(&self) -> [u8; 32] {
        let mut h = self.h;
        let mut last = self.tail.clone();
        last.push(0x80);
        while last.len() % 64 != 56 {
            last.push(0);
        }
        last.extend_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        sha2::compress256(&mut h, as_blocks(&last));
        let mut out = [0u8; 32];
        for (i, word) in h.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// Views whole 64-byte blocks without copying them: this is the hot path of
/// every upload, and copying each block first would cost about a tenth of the
/// hashing time again.
fn as_blocks(data: &[u8]) -> &[GenericArray<u8, U64>] {
    assert_eq!(data.len() % 64, 0);
    // SAFETY: `GenericArray<u8, U64>` is `repr(transparent)` over `[u8; 64]`
    // (alignment 1, no padding), and the length is a whole number of blocks.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast(), data.len() / 64) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn empty_input() {
        assert_eq!(
            hex::encode(HashState::default().finalize()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    proptest! {
        #[test]
        fn matches_sha2_for_any_split(data in proptest::collection::vec(any::<u8>(), 0..600),
                                      cuts in proptest::collection::vec(0usize..600, 0..6)) {
            let mut state = HashState::default();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort();
            let mut start = 0;
            for c in cuts {
                state.update(&data[start..c]);
                // Persisting and restoring the state mid-way must not change the result.
                state = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
                start = c;
            }
            state.update(&data[start..]);
            prop_assert_eq!(state.len(), data.len() as u64);
            prop_assert_eq!(state.finalize().to_vec(), Sha256::digest(&data).to_vec());
        }
    }
}
