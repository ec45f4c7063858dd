//! The upload record: what the server knows about one upload, how its bytes are
//! cut into chunks, and how it becomes the public view ([`UploadView`]).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::hashing::HashState;
use crate::wire::{FileView, UploadView};

pub use crate::wire::{Failure, Status};

/// The completed file. (Its URL is the front end's to build: records of
/// older versions that kept one still read, the field ignored.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub id: Uuid,
    pub size: u64,
    pub sha256: String,
    /// When the file's retention ends (Unix ms); `None`: kept until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// Everything the state store keeps about one upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: Uuid,
    pub filename: String,
    pub size: u64,
    pub content_type: String,
    /// The whole file's SHA-256 announced at create (lowercase hex), if any.
    pub expected_sha256: Option<String>,
    pub chunk_size: u64,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub status: Status,
    pub received: ChunkSet,
    pub bytes_received: u64,
    /// SHA-256 over the first `hash.len()` bytes of the file, which are always
    /// received: the contiguous prefix hashed so far.
    pub hash: HashState,
    /// Unix milliseconds.
    pub created_at: i64,
    pub expires_at: i64,
    pub file: Option<FileInfo>,
    pub failure: Option<Failure>,
    /// The `Idempotency-Key` the upload was created with, deleted along with it.
    pub idempotency_key: Option<String>,
    /// How long the completed file is kept (ms); `None`: until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    /// Set for an upload written in order from its start (a tus upload):
    /// its progress is a byte offset, not a set of chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<Sequential>,
    /// Whose upload it is (see `core::Caller`), for quotas and dedup;
    /// `None` in records of versions before them, which count for nobody.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The completed file is deleted once downloaded in full.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_after_download: bool,
    /// A worker's last report on the completed file
    /// (`PUT /api/v1/uploads/{id}/processing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<crate::wire::Processing>,
}

/// The progress of an upload written in order, byte by byte from its start:
/// tus's model. Its `received` chunk set stays empty; the offset says it all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequential {
    /// Bytes durably written and counted, from the start of the file.
    pub offset: u64,
    /// The length is not known yet (tus's `Upload-Defer-Length`): the record's
    /// `size` is 0 until a write sets it.
    #[serde(default)]
    pub length_deferred: bool,
    /// The metadata exactly as the client sent it (tus's `Upload-Metadata`),
    /// so that it is given back byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_metadata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concat: Option<Concat>,
    /// The create token that started the upload (its id), which may go on
    /// writing it: a tus client sends one credential for every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
    /// The longest the upload may become when its length is deferred (the
    /// creating token's `max_size`), so that writes cannot pass it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_cap: Option<u64>,
    /// tus's `Upload-Concat` of a final upload exactly as the client sent
    /// it, for HEAD to give back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_concat: Option<String>,
}

/// An upload's part in a concatenation (tus's `concatenation` extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concat {
    /// A piece, meant to be concatenated into a final upload; never a file of
    /// its own.
    Partial,
    /// The concatenation of these partial uploads, in order.
    Final(Vec<Uuid>),
}

impl UploadRecord {
    pub fn chunk_count(&self) -> u64 {
        chunk_count(self.size, self.chunk_size)
    }

    /// Byte range `[start, end)` of chunk `index`.
    pub fn chunk_range(&self, index: u64) -> (u64, u64) {
        let start = index * self.chunk_size;
        (start, (start + self.chunk_size).min(self.size))
    }

    /// Whether chunk `index` is received: counted, or (for a sequential
    /// upload) wholly before its offset.
    pub fn has_chunk(&self, index: u64) -> bool {
        match &self.sequential {
            None => self.received.contains(index),
            Some(_) if self.is_fully_received() => index < self.chunk_count(),
            Some(seq) => self.chunk_range(index).1 <= seq.offset,
        }
    }

    pub fn received_chunks(&self) -> u64 {
        match &self.sequential {
            None => self.received.count(),
            Some(_) => (0..self.chunk_count())
                .take_while(|&i| self.has_chunk(i))
                .count() as u64,
        }
    }

    pub fn missing_chunks(&self) -> Vec<u64> {
        (0..self.chunk_count())
            .filter(|&i| !self.has_chunk(i))
            .collect()
    }

    pub fn is_fully_received(&self) -> bool {
        match &self.sequential {
            None => self.received.count() == self.chunk_count(),
            Some(seq) => !seq.length_deferred && seq.offset == self.size,
        }
    }

    /// The first chunk that the running hash has not covered yet, if the hash
    /// stands exactly on a chunk boundary (it always does, see `store`).
    pub fn hash_frontier(&self) -> u64 {
        self.hash.len() / self.chunk_size.max(1)
    }

    /// How many bytes from the start of the file have arrived with no gap:
    /// where a client that sends the file in order (a tus client) goes on.
    pub fn received_offset(&self) -> u64 {
        if let Some(seq) = &self.sequential {
            return seq.offset;
        }
        (0..self.chunk_count())
            .find(|&i| !self.received.contains(i))
            .map_or(self.size, |i| self.chunk_range(i).0)
    }

    /// Whether the completed file's retention has ended at `now_ms`.
    pub fn file_expired(&self, now_ms: i64) -> bool {
        self.file
            .as_ref()
            .and_then(|f| f.expires_at)
            .is_some_and(|at| at <= now_ms)
    }

    pub fn is_expired(&self, now_ms: i64) -> bool {
        matches!(self.status, Status::Uploading | Status::Failed) && self.expires_at <= now_ms
    }
}

/// `chunk_count = ceil(size / chunk_size)`; a zero-byte file has one empty chunk.
pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
    size.div_ceil(chunk_size).max(1)
}

/// The set of received chunk indexes, as a bitmap (at most `MAX_CHUNKS` bits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSet(#[serde(with = "hex::serde")] Vec<u8>);

impl ChunkSet {
    pub fn contains(&self, index: u64) -> bool {
        let (byte, bit) = ((index / 8) as usize, index % 8);
        self.0.get(byte).is_some_and(|b| b & (1 << bit) != 0)
    }

    /// Adds `index`; returns false when it was already there.
    pub fn insert(&mut self, index: u64) -> bool {
        let (byte, bit) = ((index / 8) as usize, index % 8);
        if self.0.len() <= byte {
            self.0.resize(byte + 1, 0);
        }
        let was = self.0[byte] & (1 << bit) != 0;
        self.0[byte] |= 1 << bit;
        !was
    }

    pub fn count(&self) -> u64 {
        self.0.iter().map(|b| b.count_ones() as u64).sum()
    }

    /// From a Redis bitmap, whose bit 0 is the most significant bit of byte 0
    /// (`SETBIT` order).
    pub fn from_msb_first(bytes: &[u8]) -> Self {
        ChunkSet(bytes.iter().map(|b| b.reverse_bits()).collect())
    }
}

impl UploadView {
    /// The public view of a record; `file_url` names the completed file's
    /// URL as the front end that answers serves it.
    pub fn of(r: &UploadRecord, file_url: impl FnOnce(Uuid) -> String) -> Self {
        UploadView {
            id: r.id,
            filename: r.filename.clone(),
            size: r.size,
            content_type: r.content_type.clone(),
            chunk_size: r.chunk_size,
            chunk_count: r.chunk_count(),
            status: r.status,
            received_chunks: r.received_chunks(),
            bytes_received: r.bytes_received,
            missing_chunks: r.missing_chunks(),
            sha256: r.expected_sha256.clone(),
            metadata: r.metadata.clone(),
            retention: r.retention_ms.map(|ms| (ms / 1000) as u64),
            created_at: rfc3339(r.created_at),
            expires_at: rfc3339(r.expires_at),
            file: r.file.as_ref().map(|f| FileView {
                id: f.id,
                size: f.size,
                sha256: f.sha256.clone(),
                url: file_url(f.id),
                expires_at: f.expires_at.map(rfc3339),
            }),
            error: r.failure.clone(),
            upload_token: None,
            warnings: Vec::new(),
            retention_after_download: r.delete_after_download,
            processing: r.processing.clone(),
        }
    }
}

/// RFC 3339 in UTC with whole seconds, e.g. `2026-11-22T10:00:00Z`.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_math() {
        assert_eq!(chunk_count(0, 8), 1);
        assert_eq!(chunk_count(8, 8), 1);
        assert_eq!(chunk_count(9, 8), 2);
        assert_eq!(chunk_count(20971520, 8388608), 3);
    }

    #[test]
    fn the_received_offset_ends_at_the_first_gap() {
        let mut rec: UploadRecord = serde_json::from_value(serde_json::json!({
            "id": Uuid::nil(), "filename": "f", "size": 20, "content_type": "x/y",
            "expected_sha256": null, "chunk_size": 8, "metadata": {},
            "status": "uploading", "received": "", "bytes_received": 0,
            "hash": HashState::default(), "created_at": 0, "expires_at": 0,
            "file": null, "failure": null, "idempotency_key": null
        }))
        .unwrap();
        assert_eq!(rec.received_offset(), 0);
        rec.received.insert(1);
        assert_eq!(
            rec.received_offset(),
            0,
            "a chunk after a gap does not count"
        );
        rec.received.insert(0);
        assert_eq!(rec.received_offset(), 16);
        rec.received.insert(2);
        assert_eq!(
            rec.received_offset(),
            20,
            "the short last chunk ends the file"
        );
    }

    #[test]
    fn chunk_set() {
        let mut s = ChunkSet::default();
        assert!(s.insert(9));
        assert!(!s.insert(9));
        assert!(s.contains(9) && !s.contains(8) && !s.contains(1000));
        assert_eq!(s.count(), 1);
    }

    #[test]
    fn time_format() {
        assert_eq!(rfc3339(1_795_341_600_000), "2026-11-22T10:00:00Z");
    }
}
