//! The rules every verb shares: which records are still open for requests,
//! and the error a record in another state gives.

use uuid::Uuid;

use crate::context::AppContext;
use crate::core::{hooks, Error};
use crate::state::{StateStore, StoreError};
use crate::upload::{Failure, Status, UploadRecord};

/// Reads a record that must exist and be open for requests: 404 if unknown,
/// 410 if expired or aborted.
pub(super) async fn load_live(ctx: &AppContext, id: Uuid) -> Result<UploadRecord, Error> {
    let rec = ctx
        .store
        .get_upload(id)
        .await
        .map_err(|e| store_error(ctx, e))?;
    check_live(id, rec, ctx.clock.now_ms())
}

pub(super) fn check_live(
    id: Uuid,
    rec: Option<UploadRecord>,
    now_ms: i64,
) -> Result<UploadRecord, Error> {
    let rec = rec.ok_or_else(|| Error::UploadNotFound(id.to_string()))?;
    if rec.status == Status::Aborted {
        return Err(Error::UploadAborted(id.to_string()));
    }
    if rec.is_expired(now_ms) {
        return Err(Error::UploadExpired(id.to_string()));
    }
    Ok(rec)
}

/// The error for a request that needs status `uploading` on a record in another.
pub(super) fn status_conflict(rec: &UploadRecord) -> Error {
    let id = rec.id.to_string();
    match rec.status {
        Status::Completed => Error::UploadCompleted(id),
        Status::Assembling => Error::UploadAssembling(id),
        Status::Aborted => Error::UploadAborted(id),
        Status::Failed => failed_error(rec),
        Status::Uploading => Error::UploadExpired(id),
    }
}

/// What a request that cannot act on a failed upload gets: 409 `upload_failed`
/// naming the cause.
pub(super) fn failed_error(rec: &UploadRecord) -> Error {
    let failure = rec.failure.clone().unwrap_or(Failure {
        error: "upload_failed".into(),
        message: "the upload failed".into(),
        sha256: None,
    });
    Error::UploadFailed {
        id: rec.id.to_string(),
        code: failure.error,
        message: failure.message,
    }
}

/// What `complete` answers again for a failed upload: the very error the
/// failing `complete` gave, so that a retried call learns the same thing.
pub(super) fn failed_completion(rec: &UploadRecord) -> Error {
    match &rec.failure {
        Some(Failure {
            error,
            sha256: Some(actual),
            ..
        }) if error == "digest_mismatch" => Error::DigestMismatch {
            what: "file",
            expected: rec.expected_sha256.clone().unwrap_or_default(),
            actual: actual.clone(),
        },
        Some(Failure { error, message, .. }) if error == hooks::REJECTED => {
            hooks::rejected_at_finish(message)
        }
        _ => failed_error(rec),
    }
}

pub(super) fn store_error(ctx: &AppContext, e: StoreError) -> Error {
    ctx.metrics.store_errors.inc();
    e.into()
}
