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

/// A digest of the bytes of one write, asked for by its request: API v1's
/// `Content-Digest` (SHA-256), tus's `Upload-Checksum` (SHA-1, SHA-256, MD5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Md5,
}

impl Algorithm {
    pub const ALL: [Algorithm; 3] = [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Md5];

    /// The name tus gives it (lowercase, as its registry does).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Md5 => "md5",
        }
    }

    pub fn parse(name: &str) -> Option<Algorithm> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    pub fn hasher(self) -> Hasher {
        use sha2::Digest;
        match self {
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Md5 => Hasher::Md5(md5::Md5::new()),
        }
    }
}

/// A running digest of one of the [`Algorithm`]s.
#[derive(Clone)]
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Md5(md5::Md5),
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        match self {
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Md5(h) => h.update(bytes),
        }
    }

    pub fn finalize(self) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn every_algorithm_gives_its_known_digest() {
        let hex_of = |a: Algorithm| {
            let mut h = a.hasher();
            h.update(b"ab");
            h.update(b"c");
            hex::encode(h.finalize())
        };
        assert_eq!(hex_of(Algorithm::Md5), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex_of(Algorithm::Sha1),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex_of(Algorithm::Sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Algorithm::parse("SHA1"), Some(Algorithm::Sha1));
        assert_eq!(Algorithm::parse("crc32"), None);
    }

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
