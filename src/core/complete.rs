//! Finishing an upload: every chunk there, the SHA-256 finished and checked,
//! the file published. One assembly at a time per upload (a lease); one that
//! died with its process is resumed by a poll or by the janitor.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::blobs::ByteStore;
use crate::context::AppContext;
use crate::core::lease::LeaseGuard;
use crate::core::live::{failed_completion, load_live, status_conflict, store_error};
use crate::core::{dedup, hooks, usage, Error, LEASE_TTL};
use crate::state::{Lease, LeaseOf, StateStore, Update};
use crate::upload::{Failure, FileInfo, Status, UploadRecord};

/// What `complete` ended with.
pub enum Completion {
    Completed(UploadRecord),
    /// Still assembling after the configured wait: poll `GET`.
    Assembling(UploadRecord),
}

pub async fn status(ctx: &AppContext, id: Uuid) -> Result<UploadRecord, Error> {
    let rec = load_live(ctx, id).await?;
    if rec.status == Status::Assembling {
        // A client polling after a 202 would wait forever for an assembly
        // that died with its process, so the poll itself starts it again.
        resume_assembly(ctx, id).await;
    }
    Ok(rec)
}

/// Starts again the assembly of an upload left `assembling`, if nobody holds
/// its completion lease (the assembly died with its process). Called by a
/// client's poll and by the janitor. Returns whether it started one.
pub async fn resume_assembly(ctx: &AppContext, id: Uuid) -> bool {
    match ctx.store.try_lease(LeaseOf::Complete(id), LEASE_TTL).await {
        Ok(Some(lease)) => {
            tracing::info!(upload_id = %id, "resuming an interrupted assembly");
            drop(spawn_assembly(ctx, id, lease));
            true
        }
        _ => false,
    }
}

/// Finishes an upload: checks that every chunk is there, then assembles it
/// (under a lease, so only one request does) and waits for the result up to
/// `complete_wait`.
pub async fn complete(ctx: &AppContext, id: Uuid) -> Result<Completion, Error> {
    let deadline = Instant::now() + ctx.settings.complete_wait;
    loop {
        let rec = load_live(ctx, id).await?;
        match rec.status {
            Status::Completed => return Ok(Completion::Completed(rec)),
            Status::Failed => return Err(failed_completion(&rec)),
            Status::Aborted => return Err(Error::UploadAborted(id.to_string())),
            Status::Uploading if !rec.is_fully_received() => {
                return Err(Error::UploadIncomplete {
                    missing: rec.missing_chunks(),
                })
            }
            Status::Uploading | Status::Assembling => {}
        }
        let lease = ctx
            .store
            .try_lease(LeaseOf::Complete(id), LEASE_TTL)
            .await
            .map_err(|e| store_error(ctx, e))?;
        if let Some(lease) = lease {
            let task = spawn_assembly(ctx, id, lease);
            let wait = deadline.saturating_duration_since(Instant::now());
            return match tokio::time::timeout(wait, task).await {
                Ok(joined) => joined
                    .map_err(|e| Error::Internal(e.into()))?
                    .map(Completion::Completed),
                Err(_) => Ok(Completion::Assembling(load_live(ctx, id).await?)),
            };
        }
        // Another request is assembling: wait for its outcome, like it does.
        if Instant::now() >= deadline {
            return Ok(Completion::Assembling(rec));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs an assembly on its own task, so that it goes on (and keeps its lease)
/// when the request that started it answers 202 or its client leaves.
fn spawn_assembly(
    ctx: &AppContext,
    id: Uuid,
    lease: Lease,
) -> tokio::task::JoinHandle<Result<UploadRecord, Error>> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut guard = LeaseGuard::new(&ctx, lease);
        let result = guard.hold_while(assemble(&ctx, id)).await.and_then(|r| r);
        guard.release().await;
        result
    })
}

/// Assembles a fully received upload: finishes the running hash, compares it
/// with the announced one, and publishes the file. Call only under the
/// upload's completion lease.
async fn assemble(ctx: &AppContext, id: Uuid) -> Result<UploadRecord, Error> {
    let started = Instant::now();
    let rec = match ctx
        .store
        .begin_assembly(id)
        .await
        .map_err(|e| store_error(ctx, e))?
    {
        Update::Done(rec) => {
            crate::core::notify(ctx, id);
            rec
        }
        Update::NotFound => return Err(Error::UploadNotFound(id.to_string())),
        Update::Rejected(rec) if rec.status == Status::Completed => return Ok(rec),
        Update::Rejected(rec) if rec.status == Status::Uploading => {
            return Err(Error::UploadIncomplete {
                missing: rec.missing_chunks(),
            })
        }
        Update::Rejected(rec) => return Err(status_conflict(&rec)),
    };
    let hashed = ctx
        .storage
        .hash_until(id, rec.hash.clone(), rec.size)
        .await?;
    let sha256 = hex::encode(hashed.finalize());
    let outcome = match &rec.expected_sha256 {
        Some(expected) if *expected != sha256 => Err(Failure {
            error: "digest_mismatch".into(),
            message: format!(
                "the file's SHA-256 is {sha256}, not {expected} as announced at create"
            ),
            sha256: Some(sha256.clone()),
        }),
        // The application's say comes last: it sees a verified file. A
        // hook that fails closed returns here, the upload left assembling
        // for a later `complete` (or poll, or janitor) to finish.
        _ => match hooks::pre_finish(ctx, &rec, &sha256).await? {
            Some(refused) => Err(refused),
            None => {
                ctx.storage.publish(id).await?;
                Ok(FileInfo {
                    id,
                    size: rec.size,
                    sha256: sha256.clone(),
                    // Retention counts from completion: the file's life.
                    expires_at: rec.retention_ms.map(|r| ctx.clock.now_ms() + r),
                })
            }
        },
    };
    let failed = outcome.is_err();
    // The owner's usage first: a crash before the record's transition leaves
    // the upload assembling, and the assembly that resumes it settles again,
    // which the ledger counts once. (After it, nothing would.)
    if failed {
        usage::release(ctx, &rec).await;
    } else {
        usage::settle(ctx, &rec).await;
    }
    let done = ctx
        .store
        .finish_assembly(
            id,
            outcome,
            ctx.clock.now_ms() + ctx.settings.upload_ttl.as_millis() as i64,
        )
        .await
        .map_err(|e| store_error(ctx, e))?;
    let rec = match done {
        Update::Done(rec) => {
            crate::core::notify(ctx, id);
            rec
        }
        Update::NotFound => return Err(Error::UploadNotFound(id.to_string())),
        Update::Rejected(rec) => return Err(status_conflict(&rec)),
    };
    ctx.metrics
        .assembly_duration
        .observe(started.elapsed().as_secs_f64());
    if failed {
        ctx.metrics.upload_event("failed");
        let _ = ctx.storage.remove(id).await;
        let cause = rec.failure.as_ref().map_or("", |f| f.error.as_str());
        tracing::warn!(upload_id = %id, %sha256, cause, "upload failed");
        return Err(failed_completion(&rec));
    }
    dedup::index(ctx, &rec).await;
    ctx.metrics.upload_event("completed");
    tracing::info!(upload_id = %id, size = rec.size, %sha256, elapsed_ms = started.elapsed().as_millis() as u64, "upload completed");
    Ok(rec)
}
