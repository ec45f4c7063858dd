//! Completed files, as the download front end needs them.

use uuid::Uuid;

use crate::blobs::{ByteStore, ByteStream, FileMeta, StorageError};
use crate::context::AppContext;
use crate::core::live::store_error;
use crate::core::Error;
use crate::state::StateStore;
use crate::upload::{Status, UploadRecord};

/// The completed file's record and its bytes' length and modification time;
/// `FileNotFound` for an upload that is not completed or whose bytes are gone.
pub async fn completed_file(ctx: &AppContext, id: Uuid) -> Result<(UploadRecord, FileMeta), Error> {
    let rec = ctx
        .store
        .get_upload(id)
        .await
        .map_err(|e| store_error(ctx, e))?
        // A file past its retention is gone, even before the janitor comes.
        .filter(|r| r.status == Status::Completed && !r.file_expired(ctx.clock.now_ms()))
        .ok_or_else(|| Error::FileNotFound(id.to_string()))?;
    let meta = ctx
        .storage
        .file_meta(id)
        .await
        .map_err(|e| missing(id, e))?;
    Ok((rec, meta))
}

/// `count` bytes of completed file `id` from `start`.
pub async fn read_file(
    ctx: &AppContext,
    id: Uuid,
    start: u64,
    count: u64,
) -> Result<ByteStream, Error> {
    ctx.storage
        .read_file(id, start, count)
        .await
        .map_err(|e| missing(id, e))
}

fn missing(id: Uuid, e: StorageError) -> Error {
    match e {
        StorageError::FileMissing => Error::FileNotFound(id.to_string()),
        other => Error::Internal(anyhow::Error::new(other).context("reading a completed file")),
    }
}
