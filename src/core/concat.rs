//! Concatenation (tus's `concatenation` extension): partial uploads, each
//! written on its own (in parallel, say), then a final upload made of them
//! in order. The final upload is an upload like any other: its bytes are
//! copied from the partials into its part file once, then it is assembled
//! (hashed and published) as any upload is. The partials are left to expire.

use std::time::Duration;

use uuid::Uuid;

use crate::blobs::ByteStore;
use crate::context::AppContext;
use crate::core::append::{finish, hold_append};
use crate::core::create::create_sequential;
use crate::core::live::{load_live, status_conflict, store_error};
use crate::core::quota::UseLimit;
use crate::core::usage::Caller;
use crate::core::Error;
use crate::state::{OffsetMark, StateStore, Update};
use crate::upload::{Concat, Sequential, Status, UploadRecord};
use crate::wire::CreateRequest;

/// Starts the final upload of `parts` (partial uploads, every byte of each
/// received) and assembles it. `req` carries the final's name, type and
/// metadata; its size is the partials' sum.
pub async fn concatenate(
    ctx: &AppContext,
    parts: Vec<Uuid>,
    mut req: CreateRequest,
    mut sequential: Sequential,
    limit: Option<&UseLimit>,
    max_retention: Option<Duration>,
    caller: &Caller,
) -> Result<UploadRecord, Error> {
    if parts.is_empty() {
        return Err(Error::InvalidRequest(
            "a final upload needs at least one partial upload".into(),
        ));
    }
    let mut sizes = Vec::with_capacity(parts.len());
    for &part in &parts {
        sizes.push(complete_partial(ctx, part).await?.size);
    }
    req.size = sizes.iter().sum();
    sequential.length_deferred = false;
    sequential.offset = 0;
    sequential.concat = Some(Concat::Final(parts.clone()));
    let rec = create_sequential(ctx, req, sequential, limit, max_retention, caller).await?;
    let id = rec.id;
    let mut guard = hold_append(ctx, id).await?;
    let copied = guard.hold_while(copy_parts(ctx, id, &parts, &sizes)).await;
    guard.release().await;
    if let Err(e) = copied.and_then(|r| r) {
        // Nothing of a final upload that could not be made is kept.
        let _ = crate::core::abort(ctx, id).await;
        return Err(e);
    }
    finish(ctx, id).await
}

/// A partial upload whose bytes have all arrived.
async fn complete_partial(ctx: &AppContext, id: Uuid) -> Result<UploadRecord, Error> {
    let rec = load_live(ctx, id).await?;
    let partial = rec
        .sequential
        .as_ref()
        .is_some_and(|s| s.concat == Some(Concat::Partial));
    if !partial {
        return Err(Error::InvalidRequest(format!(
            "upload {id} is not a partial upload (created with Upload-Concat: partial)"
        )));
    }
    if rec.status != Status::Uploading {
        return Err(status_conflict(&rec));
    }
    if !rec.is_fully_received() {
        return Err(Error::InvalidRequest(format!(
            "partial upload {id} has {} of its bytes; send the rest before concatenating",
            rec.received_offset()
        )));
    }
    Ok(rec)
}

/// Copies the partials' bytes into the final upload, in order, then counts
/// them all at once.
async fn copy_parts(
    ctx: &AppContext,
    id: Uuid,
    parts: &[Uuid],
    sizes: &[u64],
) -> Result<(), Error> {
    let mut at = 0;
    for (&part, &len) in parts.iter().zip(sizes) {
        ctx.storage.copy_part(part, id, at, len).await?;
        at += len;
    }
    let now = ctx.clock.now_ms();
    let mark = OffsetMark {
        from: 0,
        to: at,
        length: None,
        now_ms: now,
        expires_at: now + ctx.settings.upload_ttl.as_millis() as i64,
        hash: None,
    };
    match ctx
        .store
        .advance_offset(id, mark)
        .await
        .map_err(|e| store_error(ctx, e))?
    {
        Update::Done(_) => {
            crate::core::notify(ctx, id);
            Ok(())
        }
        Update::NotFound => Err(Error::UploadNotFound(id.to_string())),
        Update::Rejected(rec) => Err(status_conflict(&rec)),
    }
}
