//! Writing at a sequential upload's offset (a tus PATCH): the bytes go on
//! from where the upload stands, one writer at a time, through the same
//! write path as a chunk. Bytes that arrived before a body was cut off are
//! kept and counted, so that the client resumes from the byte where it
//! stopped. The write that reaches the upload's length finishes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use uuid::Uuid;

use crate::blobs::{ByteStore, WriteError, WriteOptions};
use crate::context::AppContext;
use crate::core::catch_up::after_recorded;
use crate::core::complete::{complete, Completion};
use crate::core::lease::LeaseGuard;
use crate::core::live::{check_live, status_conflict, store_error};
use crate::core::write::write_range;
use crate::core::{Error, APPEND_LEASE_TTL};
use crate::guards::limits::{idle_limited, BodyError};
use crate::hashing::{Algorithm, HashState};
use crate::state::{LeaseOf, OffsetMark, StateStore, Update};
use crate::upload::{Concat, Sequential, Status, UploadRecord};

/// One write at an offset, as its request describes it.
#[derive(Debug, Clone, Default)]
pub struct Append {
    /// Where the client believes the upload stands; it must.
    pub offset: u64,
    /// The body's length, when the request says it.
    pub content_length: Option<u64>,
    /// The upload's length, when the request sets it (it was deferred) or
    /// repeats it.
    pub length: Option<u64>,
    /// A digest the bytes must have to count (tus's `Upload-Checksum`).
    pub checksum: Option<(Algorithm, Vec<u8>)>,
}

/// Writes `body` at upload `id`'s offset and counts it. Returns the record
/// after the write: its new offset, and when the write reached the length,
/// the completed upload (or one still assembling).
pub async fn append<S, E>(
    ctx: &AppContext,
    id: Uuid,
    req: Append,
    body: S,
) -> Result<UploadRecord, Error>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let stalled = Arc::new(AtomicBool::new(false));
    let idle_limit = ctx.settings.limits.body_idle_timeout;
    let body = idle_limited(body, idle_limit, stalled.clone());
    let mut guard = hold_append(ctx, id).await?;
    let result = append_leased(ctx, id, req, body, &mut guard).await;
    // Released before answering: the client's next write must not find it taken.
    guard.release().await;
    let rec = match result {
        Err(Error::BodyIncomplete { index, .. }) if stalled.load(Ordering::Relaxed) => {
            return Err(Error::BodyTimeout {
                index,
                idle_secs: idle_limit.as_secs().max(1),
            })
        }
        other => other?,
    };
    settle(ctx, rec).await
}

/// Finishes a sequential upload that has every byte (a file of 0 bytes has
/// them all at creation: tus clients send no PATCH for it); returns others
/// as they are.
pub async fn settle(ctx: &AppContext, rec: UploadRecord) -> Result<UploadRecord, Error> {
    if rec.status == Status::Uploading && rec.is_fully_received() && !is_partial(&rec) {
        return finish(ctx, rec.id).await;
    }
    Ok(rec)
}

/// Takes the one lease that lets a request write upload `id` at its offset;
/// 423 while another holds it.
pub(super) async fn hold_append(ctx: &AppContext, id: Uuid) -> Result<LeaseGuard, Error> {
    let lease = ctx
        .store
        .try_lease(LeaseOf::Append(id), APPEND_LEASE_TTL)
        .await
        .map_err(|e| store_error(ctx, e))?
        .ok_or_else(|| Error::UploadLocked(id.to_string()))?;
    Ok(LeaseGuard::new(ctx, lease))
}

async fn append_leased<S>(
    ctx: &AppContext,
    id: Uuid,
    req: Append,
    body: S,
    guard: &mut LeaseGuard,
) -> Result<UploadRecord, Error>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    let rec = ctx
        .store
        .get_upload(id)
        .await
        .map_err(|e| store_error(ctx, e))?;
    let rec = check_live(id, rec, ctx.clock.now_ms())?;
    if let Some(done) = at_the_end(&rec, &req)? {
        return Ok(done);
    }
    let seq = writable(&rec)?;
    // The most the upload may become: the server's limit, and the creating
    // token's when the length was not known at create.
    let max_file = seq.length_cap.map_or(ctx.settings.max_file_size.0, |cap| {
        cap.min(ctx.settings.max_file_size.0)
    });
    // The length this write is held to: the upload's, or the one it sets.
    let length = match (req.length, seq.length_deferred) {
        (Some(length), true) if length > max_file => {
            return Err(Error::FileTooLarge {
                size: length,
                max: max_file,
            })
        }
        (Some(length), true) if length < seq.offset => {
            return Err(Error::InvalidRequest(format!(
                "the length {length} is shorter than the {} bytes already written",
                seq.offset
            )))
        }
        (Some(length), false) if length != rec.size => {
            return Err(Error::InvalidRequest(format!(
                "the upload's length is {}; it cannot change",
                rec.size
            )))
        }
        (Some(length), _) => Some(length),
        (None, true) => None,
        (None, false) => Some(rec.size),
    };
    if req.offset != seq.offset {
        return Err(Error::OffsetMismatch {
            expected: seq.offset,
            actual: req.offset,
        });
    }
    let room = length.unwrap_or(max_file) - seq.offset;
    let too_long = || match length {
        Some(length) => Error::BeyondLength { length },
        None => Error::FileTooLarge {
            size: seq.offset + req.content_length.unwrap_or(room + 1),
            max: max_file,
        },
    };
    if req.content_length.is_some_and(|n| n > room) {
        return Err(too_long());
    }
    if seq.length_deferred {
        // No room was reserved for an upload without a length: check there
        // is some, and reserve the rest once the length is known.
        let needed = match req.length {
            Some(length) => length - seq.offset,
            None => req.content_length.unwrap_or(0),
        };
        ctx.disk_guard.check_room(&ctx.storage, needed).await?;
        if let Some(length) = req.length {
            ctx.storage.grow(id, length).await?;
        }
    }
    let opts = WriteOptions {
        digest: req.checksum.as_ref().map(|(alg, _)| *alg),
        at_most: req.content_length.is_none(),
        // Bytes under a checksum count only whole: a cut-off body's cannot
        // be checked.
        keep_partial: req.checksum.is_none(),
        extend: None,
    };
    let len = req.content_length.unwrap_or(room);
    let keep_partial = opts.keep_partial;
    let written = write_range(ctx, &rec, seq.offset, len, body, opts, guard).await?;
    let (written, cut, extended) = match written {
        Ok(w) => {
            if let (Some((alg, want)), Some(got)) = (&req.checksum, &w.digest) {
                if want != got {
                    return Err(checksum_mismatch(*alg, want, got));
                }
            }
            (w.len, None, w.extended)
        }
        Err(WriteError::Incomplete { received, expected }) if keep_partial => {
            (received, Some((received, expected)), None)
        }
        Err(WriteError::Incomplete { received, expected }) => {
            return Err(incomplete(received, expected))
        }
        Err(WriteError::TooLong { .. }) => return Err(too_long()),
        Err(WriteError::TooShort { received, expected }) => {
            return Err(incomplete(received, expected))
        }
        Err(WriteError::Storage(e)) => return Err(e.into()),
    };
    let rec = record(ctx, id, seq.offset, written, req.length, extended, guard).await?;
    after_recorded(ctx, &rec);
    if let Some((received, expected)) = cut {
        tracing::info!(upload_id = %id, kept = received, "body cut off; the bytes that arrived were kept");
        return Err(incomplete(received, expected));
    }
    Ok(rec)
}

/// A write to an upload that has all its bytes already: none may pass its
/// end (413), an empty one at its end is a no-op (tus's HEAD-less resume).
fn at_the_end(rec: &UploadRecord, req: &Append) -> Result<Option<UploadRecord>, Error> {
    let whole = matches!(rec.status, Status::Completed | Status::Assembling);
    let Some(seq) = rec.sequential.as_ref().filter(|_| whole) else {
        return Ok(None);
    };
    if let Some(Concat::Final(_)) = seq.concat {
        return Ok(None);
    }
    if req.offset != rec.size {
        return Err(Error::OffsetMismatch {
            expected: rec.size,
            actual: req.offset,
        });
    }
    match req.content_length {
        Some(0) => Ok(Some(rec.clone())),
        _ => Err(Error::BeyondLength { length: rec.size }),
    }
}

/// The upload's progress, if it may be written at its offset.
fn writable(rec: &UploadRecord) -> Result<&Sequential, Error> {
    let Some(seq) = rec.sequential.as_ref() else {
        return Err(Error::NotSequential(rec.id.to_string()));
    };
    if let Some(Concat::Final(_)) = seq.concat {
        return Err(Error::Forbidden(
            "a final upload is made of its partial uploads; it takes no bytes of its own".into(),
        ));
    }
    if rec.status != Status::Uploading {
        return Err(status_conflict(rec));
    }
    Ok(seq)
}

/// Counts `written` bytes from `from` (and the length, if the write set it).
async fn record(
    ctx: &AppContext,
    id: Uuid,
    from: u64,
    written: u64,
    length: Option<u64>,
    extended: Option<HashState>,
    guard: &LeaseGuard,
) -> Result<UploadRecord, Error> {
    let now = ctx.clock.now_ms();
    let mark = OffsetMark {
        from,
        to: from + written,
        length,
        now_ms: now,
        expires_at: now + ctx.settings.upload_ttl.as_millis() as i64,
        // The running hash, extended over the bytes as they were written,
        // moves on in the step that counts them.
        hash: extended.filter(|h| h.len() > from).map(|h| (from, h)),
    };
    let update = guard.hold_while(ctx.store.advance_offset(id, mark)).await?;
    let rec = match update.map_err(|e| store_error(ctx, e))? {
        Update::Done(rec) => rec,
        Update::NotFound => return Err(Error::UploadNotFound(id.to_string())),
        Update::Rejected(rec) => return Err(status_conflict(&rec)),
    };
    crate::core::notify(ctx, id);
    ctx.metrics.chunk_bytes_received.inc_by(written);
    Ok(rec)
}

/// Assembles an upload whose last byte arrived, waiting for it as a
/// complete request does.
pub(super) async fn finish(ctx: &AppContext, id: Uuid) -> Result<UploadRecord, Error> {
    match complete(ctx, id).await? {
        Completion::Completed(rec) | Completion::Assembling(rec) => Ok(rec),
    }
}

fn is_partial(rec: &UploadRecord) -> bool {
    rec.sequential
        .as_ref()
        .is_some_and(|s| s.concat == Some(Concat::Partial))
}

fn incomplete(received: u64, expected: u64) -> Error {
    // A write at an offset has no chunk index; 0 stands for "this write".
    Error::BodyIncomplete {
        index: 0,
        received,
        expected,
    }
}

fn checksum_mismatch(alg: Algorithm, want: &[u8], got: &[u8]) -> Error {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    Error::ChecksumMismatch {
        algorithm: alg.name(),
        expected: b64.encode(want),
        actual: b64.encode(got),
    }
}
