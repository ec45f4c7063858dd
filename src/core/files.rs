//! Completed files, as the download front end needs them.

use uuid::Uuid;

use crate::context::AppContext;
use crate::core::live::store_error;
use crate::core::Error;
use crate::store::StateStore;
use crate::upload::{Status, UploadRecord};

/// The completed file's record, for downloads.
pub async fn completed_file(
    ctx: &AppContext,
    id: Uuid,
) -> Result<(UploadRecord, std::path::PathBuf), Error> {
    let rec = ctx
        .store
        .get_upload(id)
        .await
        .map_err(|e| store_error(ctx, e))?
        .filter(|r| r.status == Status::Completed)
        .ok_or_else(|| Error::FileNotFound(id.to_string()))?;
    Ok((rec, ctx.storage.file_path(id)))
}
