//! Receiving a chunk: checked against the record, streamed to its place in
//! the part file, and counted once durable. A resend of a stored chunk is
//! compared, never rewritten.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::Stream;
use uuid::Uuid;

use crate::blobs::{ByteStore, StorageError, WriteError, WriteOptions};
use crate::config::ChunkDigest;
use crate::context::AppContext;
use crate::core::catch_up::after_recorded;
use crate::core::lease::LeaseGuard;
use crate::core::live::{check_live, status_conflict, store_error};
use crate::core::write::{gone_meanwhile, write_range};
use crate::core::{Error, LEASE_TTL};
use crate::guards::limits::{idle_limited, BodyError};
use crate::hashing::Algorithm;
use crate::state::{ChunkMark, StateStore, Update};
use crate::upload::{Status, UploadRecord};
use crate::wire::ChunkAnswer;

/// What a chunk request's `Content-Digest` asks of the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestCheck {
    /// A `Content-Digest` was sent: the answer carries the chunk's SHA-256,
    /// whatever algorithms the header named.
    pub requested: bool,
    /// Its `sha-256` member, which the body must match.
    pub sha256: Option<[u8; 32]>,
}

/// Receives chunk `index` of upload `id`: checks it against the record, streams
/// it to disk, and counts it once it is durable.
pub async fn put_chunk<S, E>(
    ctx: &AppContext,
    id: Uuid,
    index: u64,
    content_length: Option<u64>,
    digest: DigestCheck,
    body: S,
) -> Result<ChunkAnswer, Error>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let stalled = Arc::new(AtomicBool::new(false));
    let idle_limit = ctx.settings.limits.body_idle_timeout;
    let body = idle_limited(body, idle_limit, stalled.clone());
    let result = put_chunk_with_lease(ctx, id, index, content_length, digest, body).await;
    match result {
        Err(Error::BodyIncomplete { index, .. }) if stalled.load(Ordering::Relaxed) => {
            tracing::info!(upload_id = %id, index, "chunk body stalled; request dropped");
            Err(Error::BodyTimeout {
                index,
                idle_secs: idle_limit.as_secs().max(1),
            })
        }
        other => other,
    }
}

async fn put_chunk_with_lease<S>(
    ctx: &AppContext,
    id: Uuid,
    index: u64,
    content_length: Option<u64>,
    digest: DigestCheck,
    body: S,
) -> Result<ChunkAnswer, Error>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    // The lease comes before reading the record: a request that held it before
    // us recorded its chunk before letting go, so the record read next says
    // truly whether the chunk is still missing, and counted bytes are never
    // written again.
    let (lease, rec) = ctx
        .store
        .lease_and_get(id, index, LEASE_TTL)
        .await
        .map_err(|e| store_error(ctx, e))?
        .ok_or(Error::ChunkInProgress { index })?;
    let mut guard = LeaseGuard::new(ctx, lease);
    let result = put_chunk_leased(
        ctx,
        rec,
        id,
        index,
        content_length,
        digest,
        body,
        &mut guard,
    )
    .await;
    // Released before answering, so that a client retrying at once is not told
    // that its own previous attempt is still in progress.
    guard.release().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn put_chunk_leased<S>(
    ctx: &AppContext,
    rec: Option<UploadRecord>,
    id: Uuid,
    index: u64,
    content_length: Option<u64>,
    digest: DigestCheck,
    body: S,
    guard: &mut LeaseGuard,
) -> Result<ChunkAnswer, Error>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    let rec = check_live(id, rec, ctx.clock.now_ms())?;
    if rec.status != Status::Uploading {
        return Err(status_conflict(&rec));
    }
    let count = rec.chunk_count();
    if index >= count {
        return Err(Error::ChunkOutOfRange {
            index,
            last: count - 1,
        });
    }
    let (start, end) = rec.chunk_range(index);
    let expected = end - start;
    match content_length {
        Some(n) if n > expected => return Err(Error::ChunkTooLong { index, expected }),
        Some(n) if n < expected => {
            return Err(Error::ChunkTooShort {
                index,
                expected,
                actual: n,
            })
        }
        _ => {}
    }
    let want_chunk_hash = digest.requested || ctx.settings.chunk_digest == ChunkDigest::Always;

    if rec.sequential.is_some() {
        return Err(Error::NotChunked(id.to_string()));
    }
    if rec.received.contains(index) {
        // Already stored: never rewrite counted bytes (a cut-off resend would
        // corrupt them). The resend must carry the same bytes: a client whose
        // file changed is told so rather than answered as if they were stored.
        guard.release().await;
        let resent = drain(body, index, expected).await?;
        check_digest(digest.sha256, Some(resent))?;
        let stored = match ctx.storage.hash_range(id, start, expected).await {
            Err(StorageError::PartMissing) => return Err(gone_meanwhile(ctx, id).await),
            other => other?,
        };
        if stored != resent {
            return Err(Error::ChunkConflict { index });
        }
        let chunk_sha = want_chunk_hash.then_some(stored);
        return Ok(chunk_answer(&rec, index, expected, chunk_sha));
    }

    let opts = WriteOptions {
        digest: want_chunk_hash.then_some(Algorithm::Sha256),
        ..WriteOptions::default()
    };
    let started = Instant::now();
    let written = match write_range(ctx, &rec, start, expected, body, opts, guard).await? {
        Ok(w) => w,
        Err(WriteError::TooLong { expected }) => {
            return Err(Error::ChunkTooLong { index, expected })
        }
        Err(WriteError::TooShort { received, expected }) => {
            return Err(Error::ChunkTooShort {
                index,
                expected,
                actual: received,
            })
        }
        Err(WriteError::Incomplete { received, expected }) => {
            return Err(Error::BodyIncomplete {
                index,
                received,
                expected,
            })
        }
        Err(WriteError::Storage(e)) => return Err(e.into()),
    };
    let sha256 = written.digest.and_then(|d| <[u8; 32]>::try_from(d).ok());
    let chunk_sha = check_digest(digest.sha256, sha256)?;
    let now = ctx.clock.now_ms();
    // The running hash, extended over this chunk as it was written, moves
    // on in the very step that counts the chunk: no round trip of its own.
    let hash = written.extended.filter(|h| h.len() > start);
    let mark = ChunkMark {
        index,
        len: expected,
        now_ms: now,
        expires_at: now + ctx.settings.upload_ttl.as_millis() as i64,
        hash: hash.map(|h| (start, h)),
    };
    let written_at = Instant::now();
    let lease = guard.disarm();
    let recorded = ctx.store.record_chunk_and_release(id, mark, &lease).await;
    tracing::debug!(
        write_ms = (written_at - started).as_secs_f64() * 1000.0,
        record_ms = written_at.elapsed().as_secs_f64() * 1000.0,
        "chunk written and recorded"
    );
    if recorded.is_err() {
        // The chunk is not acknowledged and the client will resend it; give
        // the lease back once the store answers again (else it lapses).
        drop(LeaseGuard::new(ctx, lease));
    }
    let rec = match recorded.map_err(|e| store_error(ctx, e))? {
        Update::Done(rec) => rec,
        Update::NotFound => return Err(Error::UploadNotFound(id.to_string())),
        Update::Rejected(rec) => return Err(status_conflict(&rec)),
    };
    crate::core::notify(ctx, id);
    ctx.metrics.chunks_received.inc();
    ctx.metrics.chunk_bytes_received.inc_by(expected);
    after_recorded(ctx, &rec);
    Ok(chunk_answer(&rec, index, expected, chunk_sha))
}

fn chunk_answer(rec: &UploadRecord, index: u64, size: u64, sha: Option<[u8; 32]>) -> ChunkAnswer {
    ChunkAnswer {
        index,
        size,
        sha256: sha.map(hex::encode),
        received_chunks: rec.received.count(),
        chunk_count: rec.chunk_count(),
        bytes_received: rec.bytes_received,
    }
}

fn check_digest(
    announced: Option<[u8; 32]>,
    actual: Option<[u8; 32]>,
) -> Result<Option<[u8; 32]>, Error> {
    if let (Some(want), Some(got)) = (announced, actual) {
        if want != got {
            return Err(Error::DigestMismatch {
                what: "chunk",
                expected: hex::encode(want),
                actual: hex::encode(got),
            });
        }
    }
    Ok(actual)
}

/// Reads a resent chunk's body without storing it, checking its length, and
/// returns its SHA-256.
async fn drain<S, E>(mut body: S, index: u64, expected: u64) -> Result<[u8; 32], Error>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    use futures::StreamExt;
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(item) = body.next().await {
        let bytes = item.map_err(|_| Error::BodyIncomplete {
            index,
            received,
            expected,
        })?;
        received += bytes.len() as u64;
        if received > expected {
            return Err(Error::ChunkTooLong { index, expected });
        }
        hasher.update(&bytes);
    }
    if received < expected {
        return Err(Error::ChunkTooShort {
            index,
            expected,
            actual: received,
        });
    }
    Ok(hasher.finalize().into())
}
