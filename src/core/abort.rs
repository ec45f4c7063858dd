//! Aborting an upload: its bytes go at once; a tombstone answers for it
//! until its TTL ends.

use uuid::Uuid;

use crate::blobs::ByteStore;
use crate::context::AppContext;
use crate::core::live::{status_conflict, store_error};
use crate::core::{usage, Error};
use crate::state::{StateStore, Update};

/// Aborts an upload: its bytes go at once, a tombstone stays for one TTL so
/// that later requests get 410 instead of 404. Aborting twice is fine.
pub async fn abort(ctx: &AppContext, id: Uuid) -> Result<(), Error> {
    let tombstone_until = ctx.clock.now_ms() + ctx.settings.upload_ttl.as_millis() as i64;
    match ctx
        .store
        .abort(id, tombstone_until)
        .await
        .map_err(|e| store_error(ctx, e))?
    {
        Update::NotFound => return Err(Error::UploadNotFound(id.to_string())),
        Update::Rejected(rec) => return Err(status_conflict(&rec)),
        // Counted for nobody once aborted (twice is fine: the ledger knows).
        Update::Done(rec) => {
            crate::core::notify(ctx, id);
            usage::release(ctx, &rec).await
        }
    }
    ctx.storage
        .remove(id)
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    ctx.metrics.upload_event("aborted");
    tracing::info!(upload_id = %id, "upload aborted");
    Ok(())
}
