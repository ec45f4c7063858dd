//! The transitions' rules, shared by every backend so that they cannot drift
//! apart: each takes the current record and either changes it or says no.

use super::*;
use crate::upload::Status;
use crate::wire::Processing;

pub fn record_chunk(rec: &mut UploadRecord, mark: &ChunkMark) -> bool {
    if rec.status != Status::Uploading || rec.is_expired(mark.now_ms) {
        return false;
    }
    if rec.received.insert(mark.index) {
        rec.bytes_received += mark.len;
    }
    rec.expires_at = rec.expires_at.max(mark.expires_at);
    if let Some((from, to)) = &mark.hash {
        advance_hash(rec, *from, to);
    }
    true
}

pub fn advance_offset(rec: &mut UploadRecord, mark: &OffsetMark) -> bool {
    if rec.status != Status::Uploading || rec.is_expired(mark.now_ms) {
        return false;
    }
    let Some(seq) = rec.sequential.as_mut() else {
        return false;
    };
    if seq.offset != mark.from || mark.to < mark.from {
        return false;
    }
    let size = match (mark.length, seq.length_deferred) {
        (Some(length), true) => length,
        (Some(length), false) if length != rec.size => return false,
        (_, true) => u64::MAX,
        (_, false) => rec.size,
    };
    if mark.to > size {
        return false;
    }
    if let Some(length) = mark.length {
        rec.size = length;
        seq.length_deferred = false;
    }
    seq.offset = mark.to;
    rec.bytes_received = mark.to;
    rec.expires_at = rec.expires_at.max(mark.expires_at);
    if let Some((from, to)) = &mark.hash {
        advance_hash(rec, *from, to);
    }
    true
}

pub fn advance_hash(rec: &mut UploadRecord, from_len: u64, to: &HashState) -> bool {
    let limit = rec.sequential.as_ref().map_or(rec.size, |seq| seq.offset);
    if rec.hash.len() != from_len || to.len() <= from_len || to.len() > limit {
        return false;
    }
    rec.hash = to.clone();
    true
}

pub fn begin_assembly(rec: &mut UploadRecord) -> bool {
    match rec.status {
        Status::Assembling => true,
        Status::Uploading if rec.is_fully_received() => {
            rec.status = Status::Assembling;
            true
        }
        _ => false,
    }
}

pub fn finish_assembly(
    rec: &mut UploadRecord,
    outcome: &Result<FileInfo, Failure>,
    keep_until: i64,
) -> bool {
    if rec.status != Status::Assembling {
        return false;
    }
    match outcome {
        Ok(file) => {
            rec.status = Status::Completed;
            rec.file = Some(file.clone());
            // A file with a retention stays in the expiry index, by its end.
            if let Some(until) = file.expires_at {
                rec.expires_at = until;
            }
        }
        Err(failure) => {
            rec.status = Status::Failed;
            rec.failure = Some(failure.clone());
            rec.expires_at = rec.expires_at.max(keep_until);
        }
    }
    true
}

pub fn abort(rec: &mut UploadRecord, tombstone_until: i64) -> bool {
    // An assembly in progress may be renaming the file into place right now.
    if matches!(rec.status, Status::Completed | Status::Assembling) {
        return false;
    }
    rec.status = Status::Aborted;
    rec.expires_at = tombstone_until;
    true
}

/// Keeps a worker's report on a completed upload, numbered one past the
/// last one.
pub fn report_processing(rec: &mut UploadRecord, report: &Processing) -> bool {
    if rec.status != Status::Completed {
        return false;
    }
    let revision = rec.processing.as_ref().map_or(0, |p| p.revision) + 1;
    rec.processing = Some(Processing {
        revision,
        ..report.clone()
    });
    true
}

/// Whether a request may delete this record as a file.
pub fn file_deletable(rec: &UploadRecord) -> bool {
    rec.status == Status::Completed
}

/// Whether the janitor may delete this record at `now_ms`: an unfinished
/// upload (or its tombstone) past its expiry, or a completed file past its
/// retention. A completed file without a retention is kept.
pub fn deletable(rec: &UploadRecord, now_ms: i64) -> bool {
    match rec.status {
        Status::Uploading | Status::Failed | Status::Aborted => rec.expires_at <= now_ms,
        Status::Completed => rec.file_expired(now_ms),
        Status::Assembling => false,
    }
}

/// Whether the record belongs in the expiry index: every record but a
/// completed file kept until deleted.
pub fn expires(rec: &UploadRecord) -> bool {
    rec.status != Status::Completed || rec.file.as_ref().is_some_and(|f| f.expires_at.is_some())
}

/// One take from a token bucket as GCRA (the generic cell rate
/// algorithm): the bucket is its "theoretical arrival time" `tat` (µs; a
/// bucket never drawn from has none), which each request pushes one
/// interval further; a request may go while `tat` runs no more than the
/// burst tolerance ahead of now. Returns the new `tat` to keep, or the µs
/// to wait (and the bucket is left alone). Redis runs the same rule as
/// Lua (`RATE_LIMIT` in `redis.rs`).
pub fn take_token(tat: Option<i64>, now_us: i64, rate: Rate) -> Result<i64, i64> {
    let tat = tat.unwrap_or(now_us).max(now_us);
    let allow_at = tat - rate.tolerance_us();
    if allow_at > now_us {
        return Err(allow_at - now_us);
    }
    Ok(tat + rate.interval_us())
}
