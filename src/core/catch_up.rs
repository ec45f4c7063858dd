//! The running hash of an upload, extended in the background over chunks
//! as the gaps before them close, so that `complete` has little left to hash.

use uuid::Uuid;

use crate::blobs::ByteStore;
use crate::context::AppContext;
use crate::state::StateStore;
use crate::upload::{Status, UploadRecord};

/// The running hash is persisted at least this often while catching up.
const CATCH_UP_STEP: u64 = 64 << 20;

/// Whether the chunk after the hashed prefix has arrived, so the running hash
/// can move on by reading it back.
pub(super) fn needs_catch_up(rec: &UploadRecord) -> bool {
    if let Some(seq) = &rec.sequential {
        return rec.hash.len() < seq.offset;
    }
    let next = rec.hash_frontier();
    rec.hash.len() < rec.size && next < rec.chunk_count() && rec.received.contains(next)
}

/// After a write's range is recorded in `rec` (its running hash moved on in
/// the same store step when the range extended it): starts the catch-up if
/// what arrived after a gap can now be hashed.
pub(super) fn after_recorded(ctx: &AppContext, rec: &UploadRecord) {
    if needs_catch_up(rec) {
        spawn_catch_up(ctx, rec.id);
    }
}

/// Starts (or asks the running one to continue) the background task that
/// extends an upload's running hash over chunks that arrived out of order.
/// It overlaps hashing with the upload, so `complete` has little left to do.
pub fn spawn_catch_up(ctx: &AppContext, id: Uuid) {
    {
        let mut running = ctx.catching_up.lock().expect("catch-up map poisoned");
        if let Some(again) = running.get_mut(&id) {
            *again = true;
            return;
        }
        running.insert(id, false);
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = catch_up(&ctx, id).await {
                tracing::warn!(upload_id = %id, error = %e, "hash catch-up stopped; complete will finish it");
            }
            let mut running = ctx.catching_up.lock().expect("catch-up map poisoned");
            match running.get_mut(&id) {
                Some(again) if *again => *again = false,
                _ => {
                    running.remove(&id);
                    break;
                }
            }
        }
    });
}

/// Where the run of received chunks after the hashed prefix (`from`) ends,
/// up to a step.
fn received_run(rec: &UploadRecord, from: u64) -> u64 {
    let mut next = rec.hash_frontier();
    let mut until = from;
    while next < rec.chunk_count() && rec.received.contains(next) && until - from < CATCH_UP_STEP {
        until = rec.chunk_range(next).1;
        next += 1;
    }
    until
}

async fn catch_up(ctx: &AppContext, id: Uuid) -> anyhow::Result<()> {
    loop {
        let Some(rec) = ctx.store.get_upload(id).await? else {
            return Ok(());
        };
        if rec.status != Status::Uploading || !needs_catch_up(&rec) {
            return Ok(());
        }
        let from = rec.hash.len();
        let until = match &rec.sequential {
            // Written in order: everything before the offset, up to a step.
            Some(seq) => seq.offset.min(from + CATCH_UP_STEP),
            None => received_run(&rec, from),
        };
        let state = ctx.storage.hash_until(id, rec.hash.clone(), until).await?;
        // Someone else may have moved the hash on meanwhile; then reload and retry.
        ctx.store.advance_hash(id, from, state).await?;
    }
}
