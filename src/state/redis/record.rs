//! A record as the Redis store keeps it (a hash of fields beside the JSON
//! written at create, and the chunk bitmap), read back into an
//! [`UploadRecord`], and the scripts' answers as [`Update`]s.

use std::collections::HashMap;

use uuid::Uuid;

use super::{corrupt, RedisStore, KEY_GRACE_MS};
use crate::hashing::HashState;
use crate::state::{ChunkMark, Lease, OffsetMark, StoreError, Update};
use crate::upload::{ChunkSet, UploadRecord};
use crate::wire::Processing;

/// Rebuilds a record from its meta hash and bitmap.
pub(super) fn decode(
    fields: HashMap<String, Vec<u8>>,
    bitmap: Option<Vec<u8>>,
) -> Result<Option<UploadRecord>, StoreError> {
    let Some(rec) = fields.get("rec") else {
        return Ok(None);
    };
    let mut rec: UploadRecord = serde_json::from_slice(rec).map_err(corrupt)?;
    let text = |name: &str| -> Result<&str, StoreError> {
        let raw = fields
            .get(name)
            .ok_or_else(|| corrupt(format!("field {name} missing")))?;
        std::str::from_utf8(raw).map_err(corrupt)
    };
    let number = |name: &str| -> Result<i64, StoreError> { text(name)?.parse().map_err(corrupt) };
    rec.status = serde_json::from_value(serde_json::Value::String(text("status")?.to_owned()))
        .map_err(corrupt)?;
    rec.bytes_received = number("bytes")? as u64;
    rec.expires_at = number("expires")?;
    rec.hash = serde_json::from_str(text("hash")?).map_err(corrupt)?;
    if let Some(file) = fields.get("file") {
        rec.file = Some(serde_json::from_slice(file).map_err(corrupt)?);
    }
    if let Some(failure) = fields.get("failure") {
        rec.failure = Some(serde_json::from_slice(failure).map_err(corrupt)?);
    }
    if let Some(processing) = fields.get("processing") {
        let mut processing: Processing = serde_json::from_slice(processing).map_err(corrupt)?;
        processing.revision = number("proc_rev")? as u64;
        rec.processing = Some(processing);
    }
    rec.received = ChunkSet::from_msb_first(&bitmap.unwrap_or_default());
    if let Some(seq) = rec.sequential.as_mut() {
        seq.offset = number("seq_offset")? as u64;
        match text("seq_size")? {
            "" => seq.length_deferred = true,
            size => {
                rec.size = size.parse().map_err(corrupt)?;
                seq.length_deferred = false;
            }
        }
    }
    Ok(Some(rec))
}

/// A sequential upload's offset and (unless deferred, '') length, kept as
/// fields of their own where the scripts can move and compare them.
pub(super) fn sequential_fields(rec: &UploadRecord) -> Vec<(&'static str, String)> {
    let Some(seq) = &rec.sequential else {
        return Vec::new();
    };
    let size = if seq.length_deferred {
        String::new()
    } else {
        rec.size.to_string()
    };
    vec![("seq_offset", seq.offset.to_string()), ("seq_size", size)]
}

pub(super) fn record_outcome(
    code: i64,
    fields: HashMap<String, Vec<u8>>,
    bitmap: Option<Vec<u8>>,
) -> Result<Update, StoreError> {
    Ok(outcome(code, decode(fields, bitmap)?))
}

/// A script's answer (0: no upload, 1: done, 2: rejected) with the record as
/// it stands after it.
pub(super) fn outcome(code: i64, rec: Option<UploadRecord>) -> Update {
    match (code, rec) {
        (_, None) | (0, _) => Update::NotFound,
        (1, Some(rec)) => Update::Done(rec),
        (_, Some(rec)) => Update::Rejected(rec),
    }
}

/// A meta hash as read with HGETALL.
pub(super) type Fields = HashMap<String, Vec<u8>>;
pub(super) type RecordReply = (i64, Fields, Option<Vec<u8>>);

impl RedisStore {
    /// One round trip: count the chunk, bump the index, read the record back,
    /// and give the chunk's lease back.
    pub(super) async fn record_pipeline(
        &self,
        id: Uuid,
        mark: &ChunkMark,
        lease: Option<&Lease>,
    ) -> Result<RecordReply, StoreError> {
        let (from, to, state) = hash_args(&mark.hash)?;
        self.query(|| {
            let mut p = redis::pipe();
            self.scripts.record_chunk.add(
                &mut p,
                &[&self.meta(id), &self.chunks(id)],
                &[
                    &mark.index,
                    &mark.len,
                    &mark.now_ms,
                    &mark.expires_at,
                    &KEY_GRACE_MS,
                    &from,
                    &to,
                    &state,
                ],
            );
            self.add_bump_and_read(&mut p, id, mark.expires_at);
            if let Some(lease) = lease {
                self.scripts
                    .release
                    .add(&mut p, &[&self.lease_key(&lease.of)], &[&lease.token]);
                p.ignore();
            }
            p
        })
        .await
    }
}

impl RedisStore {
    /// One round trip: move a sequential upload's offset, bump the index,
    /// read the record back.
    pub(super) async fn offset_pipeline(
        &self,
        id: Uuid,
        mark: &OffsetMark,
    ) -> Result<RecordReply, StoreError> {
        let length = mark.length.map(|l| l.to_string()).unwrap_or_default();
        let (from, to, state) = hash_args(&mark.hash)?;
        self.query(|| {
            let mut p = redis::pipe();
            self.scripts.advance_offset.add(
                &mut p,
                &[&self.meta(id)],
                &[
                    &mark.from,
                    &mark.to,
                    &length,
                    &mark.now_ms,
                    &mark.expires_at,
                    &KEY_GRACE_MS,
                    &from,
                    &to,
                    &state,
                ],
            );
            self.add_bump_and_read(&mut p, id, mark.expires_at);
            p
        })
        .await
    }
}

impl RedisStore {
    /// Adds moving the upload's place in the expiry index to `expires_at`
    /// (XX: never re-adding one that left it, completed) and the read of
    /// the record after the change.
    fn add_bump_and_read(&self, p: &mut redis::Pipeline, id: Uuid, expires_at: i64) {
        p.cmd("ZADD")
            .arg(self.index())
            .arg("XX")
            .arg("GT")
            .arg(expires_at)
            .arg(id.to_string())
            .ignore();
        self.add_read(p, id);
    }
}

/// A mark's running hash as the scripts take it: the length it moves from,
/// the length it moves to, the state; all '' without one.
fn hash_args(hash: &Option<(u64, HashState)>) -> Result<(String, String, String), StoreError> {
    Ok(match hash {
        Some((from, to)) => (
            from.to_string(),
            to.len().to_string(),
            serde_json::to_string(to).map_err(corrupt)?,
        ),
        None => Default::default(),
    })
}
