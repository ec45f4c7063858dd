//! Writing bytes at an offset of an upload: the primitive under every front
//! end's write (a chunk of API v1 is a range at its index times the chunk
//! size; a tus PATCH a range at its `Upload-Offset`). What is written here
//! does not count until the caller records it in the state store.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use uuid::Uuid;

use crate::blobs::{ByteStore, StorageError, WriteError, WriteOptions, WrittenChunk};
use crate::context::AppContext;
use crate::core::lease::LeaseGuard;
use crate::core::live::{load_live, status_conflict};
use crate::core::Error;
use crate::guards::limits::content::{self, SNIFF_LEN};
use crate::guards::limits::BodyError;
use crate::upload::{Status, UploadRecord};

/// Writes `len` bytes of `body` at `offset` of upload `rec`, while `guard`'s
/// lease is held (renewed as the write goes on; losing it stops the write).
/// A range at offset 0 of a type with a known signature must start like one.
///
/// The outer error refuses the write (a signature mismatch, the lease lost,
/// the bytes gone); the inner one says how the body fell short of `len`
/// bytes, never [`WriteError::Storage`] but for a failing disk.
pub(super) async fn write_range<S>(
    ctx: &AppContext,
    rec: &UploadRecord,
    offset: u64,
    len: u64,
    body: S,
    opts: WriteOptions,
    guard: &LeaseGuard,
) -> Result<Result<WrittenChunk, WriteError>, Error>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    let id = rec.id;
    let (head, body) = if offset == 0 {
        check_signature(ctx, rec, len, body).await?
    } else {
        (Vec::new(), body)
    };
    // The bytes looked at are handed on to the write unchanged.
    let body = futures::stream::iter(head).chain(body);
    // A range that starts where the running hash ends (every write of an
    // upload sent in order) extends it from its own buffers, on the blocking
    // pool beside the disk writes: reading the bytes back later to hash them
    // would cost a copy, and the catch-up's store round trips, per range.
    // What it returns counts only once the range is recorded, in the store
    // step that counts it (`ChunkMark::hash`, `OffsetMark::hash`).
    // Ranges after a gap are hashed by the catch-up once the gap closes.
    let mut opts = opts;
    if rec.hash.len() == offset && len > 0 {
        opts.extend = Some(rec.hash.clone());
    }
    let write = ctx.storage.write_at(id, offset, len, body, opts);
    match guard.hold_while(write).await? {
        Err(WriteError::Storage(StorageError::PartMissing)) => Err(gone_meanwhile(ctx, id).await),
        other => Ok(other),
    }
}

/// The first bytes of an upload whose type has a known signature must
/// carry it. Returns the pieces read to look, and the rest of the body.
async fn check_signature<S>(
    ctx: &AppContext,
    rec: &UploadRecord,
    len: u64,
    mut body: S,
) -> Result<(Vec<Result<Bytes, BodyError>>, S), Error>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    let mut head = Vec::new();
    if !(ctx.settings.limits.sniffs() && content::sniffable(&rec.content_type)) {
        return Ok((head, body));
    }
    let mut seen = 0usize;
    while seen < SNIFF_LEN.min(len as usize) {
        match body.next().await {
            Some(Ok(bytes)) => {
                seen += bytes.len();
                head.push(Ok(bytes));
            }
            Some(Err(e)) => {
                head.push(Err(e));
                break;
            }
            None => break,
        }
    }
    let mut prefix = Vec::with_capacity(seen.min(SNIFF_LEN));
    for bytes in head.iter().flatten() {
        prefix.extend_from_slice(&bytes[..bytes.len().min(SNIFF_LEN - prefix.len())]);
        if prefix.len() == SNIFF_LEN {
            break;
        }
    }
    if !head.iter().any(|h| h.is_err()) {
        if let Err(e) = content::check_signature(&rec.content_type, &prefix) {
            tracing::info!(upload_id = %rec.id, declared = %rec.content_type, "start of file refused: signature mismatch");
            return Err(e);
        }
    }
    Ok((head, body))
}

/// The error for an upload whose part file vanished under a request.
pub(super) async fn gone_meanwhile(ctx: &AppContext, id: Uuid) -> Error {
    // Aborted or expired while we were at it: say so. Otherwise the bytes
    // were removed behind the server's back (by an operator, say), and the
    // upload cannot be finished.
    match load_live(ctx, id).await {
        Ok(rec) if rec.status == Status::Uploading => Error::Internal(anyhow::anyhow!(
            "the part file of upload {id} is missing from the data directory"
        )),
        Ok(rec) => status_conflict(&rec),
        Err(e) => e,
    }
}
