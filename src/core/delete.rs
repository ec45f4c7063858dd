//! Deleting a completed file: its record, then its bytes, at once. A request
//! deletes one ([`delete_file`]); the janitor deletes those whose retention
//! ended. Either way [`file_deleted`] is where the deletion is told.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use uuid::Uuid;

use crate::blobs::{ByteStore, ByteStream};
use crate::context::AppContext;
use crate::core::files::read_file;
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
    /// It was downloaded in full (`retention_after_download`).
    Download,
}

impl Deletion {
    pub fn label(self) -> &'static str {
        match self {
            Deletion::Request => "request",
            Deletion::Retention => "retention",
            Deletion::Download => "download",
        }
    }
}

/// Deletes completed file `id`: the record goes first, atomically, so that
/// no request finds a record whose bytes are going; then the bytes. Deleting
/// a file that is gone already is fine (and removes any bytes an earlier,
/// interrupted delete left). An upload that is not completed is no file:
/// `FileNotFound`, as a download of it gets.
pub async fn delete_file(ctx: &AppContext, id: Uuid) -> Result<(), Error> {
    delete_because(ctx, id, Deletion::Request).await
}

/// [`delete_file`], told as `why`.
async fn delete_because(ctx: &AppContext, id: Uuid, why: Deletion) -> Result<(), Error> {
    let update = ctx
        .store
        .delete_file(id)
        .await
        .map_err(|e| store_error(ctx, e))?;
    match update {
        Update::Done(rec) => {
            usage::record_gone(ctx, &rec).await;
            let freed = remove_bytes(ctx, id).await?;
            file_deleted(ctx, &rec, why, freed);
            Ok(())
        }
        // No record: no upload can be publishing under this id, so bytes
        // found here are what an interrupted delete left.
        Update::NotFound => remove_bytes(ctx, id).await.map(|_| ()),
        Update::Rejected(_) => Err(Error::FileNotFound(id.to_string())),
    }
}

/// The whole of completed file `id` (`len` bytes), which is deleted once
/// its last byte has been read out (`retention_after_download`): a stream
/// dropped before its end (the client went away, an error) deletes nothing.
pub async fn read_file_then_delete(
    ctx: &AppContext,
    id: Uuid,
    len: u64,
) -> Result<ByteStream, Error> {
    use futures::StreamExt;
    let body = read_file(ctx, id, 0, len).await?;
    let seen = Arc::new(AtomicU64::new(0));
    let counting = seen.clone();
    let body = body.inspect(move |piece| {
        if let Ok(bytes) = piece {
            counting.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
    });
    let ctx = ctx.clone();
    let after = futures::stream::once(async move {
        if seen.load(Ordering::Relaxed) == len {
            // On its own task: the response is over, whatever the deletion takes.
            tokio::spawn(async move {
                if let Err(e) = delete_because(&ctx, id, Deletion::Download).await {
                    tracing::warn!(upload_id = %id, error = %e, "file downloaded but not deleted");
                }
            });
        }
        None
    })
    .filter_map(|nothing: Option<std::io::Result<bytes::Bytes>>| async move { nothing });
    Ok(Box::pin(body.chain(after)))
}

async fn remove_bytes(ctx: &AppContext, id: Uuid) -> Result<u64, Error> {
    ctx.storage.remove_file(id).await.map_err(|e| {
        Error::Internal(anyhow::Error::new(e).context("removing a deleted file's bytes"))
    })
}

/// A completed file was deleted (its record and bytes are gone): counted and
/// logged. (Its `file.deleted` event was written by the store, in the step
/// that removed the record.)
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
