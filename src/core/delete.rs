//! Deleting a completed file: its record, then its bytes, at once. A request
//! deletes one ([`delete_file`]); the janitor deletes those whose retention
//! ended. Either way [`file_deleted`] is where the deletion is told.

use uuid::Uuid;

use crate::blobs::ByteStore;
use crate::context::AppContext;
use crate::core::live::store_error;
use crate::core::{usage, Error};
use crate::state::{StateStore, Update};
use crate::upload::UploadRecord;

/// Why a file went: the `reason` label of `tranche_files_deleted_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// `DELETE /api/v1/files/{id}` (or `tranche files delete`).
    Request,
    /// Its retention ended (the janitor).
    Retention,
}

impl Deletion {
    pub fn label(self) -> &'static str {
        match self {
            Deletion::Request => "request",
            Deletion::Retention => "retention",
        }
    }
}

/// Deletes completed file `id`: the record goes first, atomically, so that
/// no request finds a record whose bytes are going; then the bytes. Deleting
/// a file that is gone already is fine (and removes any bytes an earlier,
/// interrupted delete left). An upload that is not completed is no file:
/// `FileNotFound`, as a download of it gets.
pub async fn delete_file(ctx: &AppContext, id: Uuid) -> Result<(), Error> {
    let update = ctx
        .store
        .delete_file(id)
        .await
        .map_err(|e| store_error(ctx, e))?;
    match update {
        Update::Done(rec) => {
            usage::record_gone(ctx, &rec).await;
            let freed = remove_bytes(ctx, id).await?;
            file_deleted(ctx, &rec, Deletion::Request, freed);
            Ok(())
        }
        // No record: no upload can be publishing under this id, so bytes
        // found here are what an interrupted delete left.
        Update::NotFound => remove_bytes(ctx, id).await.map(|_| ()),
        Update::Rejected(_) => Err(Error::FileNotFound(id.to_string())),
    }
}

async fn remove_bytes(ctx: &AppContext, id: Uuid) -> Result<u64, Error> {
    ctx.storage.remove_file(id).await.map_err(|e| {
        Error::Internal(anyhow::Error::new(e).context("removing a deleted file's bytes"))
    })
}

/// A completed file was deleted (its record and bytes are gone): counted,
/// logged, and the one place where the `file.deleted` event is to be
/// emitted once tranche has events.
pub fn file_deleted(ctx: &AppContext, rec: &UploadRecord, why: Deletion, freed_bytes: u64) {
    ctx.metrics
        .files_deleted
        .with_label_values(&[why.label()])
        .inc();
    tracing::info!(
        upload_id = %rec.id,
        reason = why.label(),
        freed_bytes,
        "file deleted"
    );
}
