//! API keys: full-access credentials for an application's backend. Only their
//! SHA-256 is kept, and a presented key is compared against every known hash in
//! constant time, so neither memory dumps nor response timing reveal a key.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The configured keys, as hashes.
#[derive(Clone, Default)]
pub struct ApiKeys {
    hashes: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.hashes.len())
    }
}

/// Shortest plain key accepted: anything shorter could be guessed.
pub const MIN_KEY_LEN: usize = 16;

impl ApiKeys {
    /// Reads keys from the config list and the optional file. An entry is
    /// either the key itself or `sha256:<64 hex>` of it.
    pub fn load(list: &[String], file: Option<&Path>) -> anyhow::Result<ApiKeys> {
        let mut entries: Vec<String> = list.to_vec();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read auth.api_keys_file {}: {e}", path.display())
            })?;
            entries.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or("").trim())
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        let mut hashes = Vec::with_capacity(entries.len());
        for entry in &entries {
            hashes.push(parse_entry(entry)?);
        }
        Ok(ApiKeys { hashes })
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The short id (first 8 hex digits of its hash) of a known key, for logs
    /// and rate-limit buckets; `None` for an unknown key.
    pub fn verify(&self, presented: &str) -> Option<String> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Look at every key whatever matches, so the time taken says nothing.
        let mut found = subtle::Choice::from(0);
        for known in &self.hashes {
            found |= known.ct_eq(&hash);
        }
        bool::from(found).then(|| hex::encode(&hash[..4]))
    }
}

/// The hash form of a key, as an operator would put it into the config.
pub fn hash_entry(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

fn parse_entry(entry: &str) -> anyhow::Result<[u8; 32]> {
    if let Some(hex_part) = entry.strip_prefix("sha256:") {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out)
            .map_err(|_| anyhow::anyhow!("an API key entry `sha256:...` needs 64 hex digits"))?;
        return Ok(out);
    }
    if entry.len() < MIN_KEY_LEN {
        anyhow::bail!(
            "an API key is shorter than {MIN_KEY_LEN} characters; generate one with `tranche token key`"
        );
    }
    Ok(Sha256::digest(entry.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_entries_verify_the_same_key() {
        let key = "k3y-for-the-backend-0123456789";
        let keys =
            ApiKeys::load(&["another-key-abcdefghijk".into(), hash_entry(key)], None).unwrap();
        assert!(keys.verify(key).is_some());
        assert!(keys.verify("another-key-abcdefghijk").is_some());
        assert!(keys.verify("k3y-for-the-backend-012345678").is_none());
        assert!(keys.verify("").is_none());
    }

    #[test]
    fn short_keys_and_bad_hashes_are_refused() {
        assert!(ApiKeys::load(&["short".into()], None).is_err());
        assert!(ApiKeys::load(&["sha256:abcd".into()], None).is_err());
    }
}
