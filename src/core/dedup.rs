//! Dedup by SHA-256: a create that gives `sha256` and `size` equal to those
//! of a completed file its owner may share (`dedup`: the same owner's, or
//! anyone's with `global`) is answered at once with an upload already
//! completed, whose file is a hard link to those bytes. The state store's
//! index ([`LedgerStore::index_content`]) finds the file; it is only a hint,
//! checked against the file's record and bytes, and a stale entry falls back
//! to a normal upload.

use sha2::{Digest, Sha256};

use crate::blobs::{ByteStore, StorageError};
use crate::config::Dedup;
use crate::context::AppContext;
use crate::core::live::store_error;
use crate::core::usage::{self, Caller};
use crate::core::{Error, LEASE_TTL};
use crate::state::{
    ChunkMark, IdempotencyRecord, Insert, LeaseOf, LedgerStore, StateStore, Update, UsageKind,
};
use crate::upload::{FileInfo, Sequential, Status, UploadRecord};
use crate::wire::UploadView;

/// The index key of `owner`'s files with this content; the owner is hashed
/// so that no separator in a `sub` can make two owners share a key.
fn owner_key(owner: &str, sha256: &str, size: u64) -> String {
    let who = hex::encode(&Sha256::digest(owner.as_bytes())[..16]);
    format!("o:{who}:{sha256}:{size}")
}

fn global_key(sha256: &str, size: u64) -> String {
    format!("g:{sha256}:{size}")
}

/// Every key a completed record is indexed under: its owner's and the
/// global one (kept whatever `dedup` says, so that switching to `global`
/// finds files completed before).
fn keys_of(rec: &UploadRecord) -> Vec<String> {
    let Some(file) = &rec.file else {
        return Vec::new();
    };
    let mut keys = vec![global_key(&file.sha256, file.size)];
    if let Some(owner) = &rec.owner {
        keys.push(owner_key(owner, &file.sha256, file.size));
    }
    keys
}

/// A completed file now holds these bytes: indexed, so that the next
/// create of the same content can share it.
pub(super) async fn index(ctx: &AppContext, rec: &UploadRecord) {
    for key in keys_of(rec) {
        if let Err(e) = ctx.store.index_content(&key, rec.id).await {
            // A missed entry only misses a chance to share.
            tracing::warn!(upload_id = %rec.id, error = %e, "file not indexed for dedup");
        }
    }
}

/// A completed file went: its entries go, unless they name a newer file.
pub(super) async fn unindex(ctx: &AppContext, rec: &UploadRecord) {
    for key in keys_of(rec) {
        if let Err(e) = ctx.store.unindex_content(&key, rec.id).await {
            // A stale entry is checked and skipped by whoever finds it.
            tracing::warn!(upload_id = %rec.id, error = %e, "dedup entry not removed");
        }
    }
}

/// The completed file a create by `owner` of this content may share, if
/// any. Never an error: a store hiccup or a stale entry means a normal
/// upload.
pub(super) async fn source(
    ctx: &AppContext,
    owner: Option<&str>,
    sha256: &str,
    size: u64,
) -> Option<UploadRecord> {
    let key = match (ctx.settings.dedup, owner) {
        (Dedup::Off, _) | (Dedup::Owner, None) => return None,
        (Dedup::Owner, Some(owner)) => owner_key(owner, sha256, size),
        (Dedup::Global, _) => global_key(sha256, size),
    };
    let ids = match ctx.store.find_content(&key, CANDIDATES).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "dedup index unreadable; a normal upload");
            return None;
        }
    };
    for id in ids {
        let rec = ctx.store.get_upload(id).await.ok().flatten();
        let usable = rec.filter(|r| {
            r.status == Status::Completed
                && !r.file_expired(ctx.clock.now_ms())
                && r.file
                    .as_ref()
                    .is_some_and(|f| f.sha256 == sha256 && f.size == size)
                && (ctx.settings.dedup == Dedup::Global || r.owner.as_deref() == owner)
        });
        match usable {
            Some(rec) => return Some(rec),
            // Stale (its record went without its entry): not worth keeping.
            None => {
                let _ = ctx.store.unindex_content(&key, id).await;
            }
        }
    }
    None
}

/// Files of one content looked at per create: enough to step over a few
/// stale entries, few enough to bound the create's round trips.
const CANDIDATES: usize = 4;

/// `record` as a shared upload: one chunk (no byte is sent, so its size is
/// the file's), all of it received.
pub(super) fn shared(record: &UploadRecord) -> UploadRecord {
    UploadRecord {
        chunk_size: record.size.max(1),
        // A tus upload shared this way has all its bytes: its offset says so,
        // or its assembly would find it unfinished.
        sequential: record.sequential.clone().map(|seq| Sequential {
            offset: record.size,
            length_deferred: false,
            ..seq
        }),
        ..record.clone()
    }
}

/// The answer a shared upload gets: the upload as it is once completed.
fn completed_view(record: &UploadRecord, now: i64) -> Result<serde_json::Value, Error> {
    let mut done = record.clone();
    done.status = Status::Completed;
    done.received.insert(0);
    done.bytes_received = record.size;
    done.file = Some(file_of(record, now));
    if let Some(until) = done.file.as_ref().and_then(|f| f.expires_at) {
        done.expires_at = until;
    }
    // The file's URL is the front end's to fill in.
    let view = UploadView::of(&done, |_| String::new());
    serde_json::to_value(view).map_err(|e| Error::Internal(e.into()))
}

fn file_of(record: &UploadRecord, now: i64) -> FileInfo {
    FileInfo {
        id: record.id,
        size: record.size,
        sha256: record.expected_sha256.clone().unwrap_or_default(),
        // Retention counts from completion, which is now.
        expires_at: record.retention_ms.map(|r| now + r),
    }
}

/// Starts `record` (made by [`shared`]) as a copy of `source`'s file: links
/// the bytes, charges them as stored, records the upload (with its
/// idempotency entry: `(key, request digest)`) and takes it through its
/// transitions to `completed`, so both stores keep their indexes as for any
/// upload. `Ok(None)`: the source's bytes are gone; the caller starts a
/// normal upload instead.
pub(super) async fn start_shared(
    ctx: &AppContext,
    caller: &Caller,
    record: &UploadRecord,
    source: &UploadRecord,
    idempotency: Option<(&str, &str)>,
) -> Result<Option<(Insert, serde_json::Value)>, Error> {
    match ctx.storage.link_file(source.id, record.id).await {
        Ok(()) => {}
        Err(StorageError::FileMissing) => {
            tracing::warn!(upload_id = %source.id, "dedup: the indexed file's bytes are gone");
            unindex(ctx, source).await;
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    let now = ctx.clock.now_ms();
    let recorded = async {
        usage::charge(ctx, caller, record.id, UsageKind::Stored, record.size).await?;
        let answer = completed_view(record, now)?;
        let entry = idempotency.map(|(key, request)| {
            (
                key,
                IdempotencyRecord::new(record.id, request, answer.clone()),
            )
        });
        let inserted = ctx
            .store
            .insert_upload(record, entry.as_ref().map(|(k, e)| (*k, e)))
            .await
            .map_err(|e| store_error(ctx, e))?;
        Ok::<_, Error>((inserted, answer))
    };
    let (inserted, answer) = match recorded.await {
        Ok(done @ (Insert::Created, _)) => done,
        // A racing retry with the same key won, or the store failed: this
        // upload was never recorded.
        other => {
            let _ = ctx.storage.remove_file(record.id).await;
            usage::release(ctx, record).await;
            return other.map(Some);
        }
    };
    complete_shared(ctx, record, now).await?;
    ctx.metrics.upload_event("deduplicated");
    tracing::info!(upload_id = %record.id, source = %source.id, size = record.size,
        "upload answered from a stored file");
    Ok(Some((inserted, answer)))
}

/// Takes a freshly recorded shared upload (one chunk, its whole size) to
/// `completed`, under its completion lease as any assembly.
async fn complete_shared(ctx: &AppContext, record: &UploadRecord, now: i64) -> Result<(), Error> {
    let id = record.id;
    let lease = ctx
        .store
        .try_lease(LeaseOf::Complete(id), LEASE_TTL)
        .await
        .map_err(|e| store_error(ctx, e))?;
    let mark = ChunkMark {
        index: 0,
        len: record.size,
        now_ms: now,
        expires_at: record.expires_at,
        hash: None,
    };
    let steps = async {
        ctx.store.record_chunk(id, mark).await?;
        ctx.store.begin_assembly(id).await?;
        let keep = now + ctx.settings.upload_ttl.as_millis() as i64;
        ctx.store
            .finish_assembly(id, Ok(file_of(record, now)), keep)
            .await
    };
    let done = steps.await;
    if let Some(lease) = lease {
        let _ = ctx.store.release(&lease).await;
    }
    match done.map_err(|e| store_error(ctx, e))? {
        Update::Done(rec) => {
            index(ctx, &rec).await;
            Ok(())
        }
        other => Err(Error::Internal(anyhow::anyhow!(
            "a shared upload did not complete: {other:?}"
        ))),
    }
}
