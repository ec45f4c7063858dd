//! The janitor: every `janitor_interval`, deletes uploads that expired (their
//! state, then their bytes), completed files whose retention ended (so a
//! file outlives its retention by at most one interval: the deletion lag,
//! which `tranche_file_deletion_lag_seconds` shows), and part files that no
//! upload refers to any more
//! (leftovers of a crash between creating the file and recording the upload),
//! starts again assemblies that died with their process, and forgets the use
//! counts of `max_uploads` tokens that expired.

use std::time::{Duration, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::blobs::ByteStore;
use crate::context::AppContext;
use crate::core;
use crate::state::StateStore;
use crate::upload::Status;

/// Uploads deleted per store query; a sweep repeats until none are left.
const BATCH: usize = 500;

/// What one sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub expired_uploads: u64,
    /// Completed files whose retention ended.
    pub expired_files: u64,
    pub tombstones: u64,
    pub orphans: u64,
    pub freed_bytes: u64,
    pub resumed_assemblies: u64,
    /// Use counts of `max_uploads` tokens that lapsed with their tokens.
    pub lapsed_uses: u64,
}

/// Sweeps every `interval` until `shutdown` is cancelled; with
/// `scrub_interval`, also scrubs every completed file that often, in a task
/// of its own so that a long scrub never delays a sweep (nor the deletion of
/// expired files).
pub async fn run(ctx: AppContext, interval: Duration, shutdown: CancellationToken) {
    let scrubber = ctx
        .settings
        .scrub_interval
        .map(|every| tokio::spawn(scrub_every(ctx.clone(), every, shutdown.clone())));
    sweep_every(&ctx, interval, &shutdown).await;
    if let Some(scrubber) = scrubber {
        let _ = scrubber.await;
    }
    tracing::debug!("janitor stopped");
}

/// The background scrub, at `scrub_bandwidth`: first one `every` after start.
async fn scrub_every(ctx: AppContext, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let bandwidth = Some(ctx.settings.scrub_bandwidth.0);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    result = core::scrub(&ctx, bandwidth) => if let Err(e) = result {
                        tracing::warn!(error = %e, "scrub failed; next interval");
                    },
                }
            }
        }
    }
}

async fn sweep_every(ctx: &AppContext, interval: Duration, shutdown: &CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let result = sweep(ctx).await;
                ctx.metrics.janitor_sweeps.inc();
                match result {
                    Ok(r) if r != SweepReport::default() => tracing::info!(
                        expired_uploads = r.expired_uploads, expired_files = r.expired_files,
                        tombstones = r.tombstones,
                        orphans = r.orphans, freed_bytes = r.freed_bytes,
                        resumed_assemblies = r.resumed_assemblies,
                        lapsed_uses = r.lapsed_uses, "janitor sweep"),
                    Ok(_) => tracing::debug!("janitor sweep: nothing to do"),
                    Err(e) => tracing::warn!(error = %e, "janitor sweep failed; will retry"),
                }
            }
        }
    }
}

/// One pass over expired uploads and orphaned part files, at the time
/// `ctx.clock` reads: a test that advances the clock and then sweeps sees
/// what a janitor would do that much later.
pub async fn sweep(ctx: &AppContext) -> anyhow::Result<SweepReport> {
    let mut report = SweepReport::default();
    let now = ctx.clock.now_ms();
    // The longest a file deleted in this sweep outlived its retention.
    let mut lag_ms = 0i64;
    loop {
        let ids = ctx.store.expired(now, BATCH).await?;
        let mut deleted_any = false;
        for id in &ids {
            // State first, conditionally: a chunk that refreshed the upload since
            // the listing keeps it alive, and its bytes with it.
            let Some(rec) = ctx.store.delete_expired(*id, now).await? else {
                continue;
            };
            deleted_any = true;
            core::record_gone(ctx, &rec).await;
            if rec.status == Status::Completed {
                let freed = ctx.storage.remove_file(*id).await?;
                report.freed_bytes += freed;
                report.expired_files += 1;
                let until = rec.file.as_ref().and_then(|f| f.expires_at);
                lag_ms = lag_ms.max(until.map_or(0, |t| now - t));
                core::file_deleted(ctx, &rec, core::Deletion::Retention, freed);
                ctx.metrics.janitor_freed_bytes.inc_by(freed);
                continue;
            }
            let freed = ctx.storage.remove(*id).await?;
            report.freed_bytes += freed;
            if rec.status == Status::Aborted {
                report.tombstones += 1;
            } else {
                report.expired_uploads += 1;
                ctx.metrics.upload_event("expired");
                ctx.metrics
                    .janitor_deleted
                    .with_label_values(&["upload"])
                    .inc();
                tracing::info!(upload_id = %id, freed_bytes = freed, "expired upload deleted");
            }
            ctx.metrics.janitor_freed_bytes.inc_by(freed);
        }
        if ids.len() < BATCH || !deleted_any {
            break;
        }
    }
    ctx.metrics
        .file_deletion_lag
        .set(lag_ms.max(0) as f64 / 1000.0);

    let grace = ctx.settings.orphan_grace;
    for part in ctx.storage.list_parts().await? {
        let rec = match part.upload {
            None => None,
            Some(id) => ctx.store.get_upload(id).await?,
        };
        // An assembly that died with its process (nobody holds its lease)
        // is started again here, so it finishes even if no client polls.
        if let Some(r) = rec.as_ref().filter(|r| r.status == Status::Assembling) {
            if core::resume_assembly(ctx, r.id).await {
                report.resumed_assemblies += 1;
            }
            continue;
        }
        let modified_ms = part
            .modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let age = Duration::from_millis(now.saturating_sub(modified_ms).max(0) as u64);
        if age < grace {
            continue;
        }
        let referenced = rec.is_some_and(|r| r.status == Status::Uploading);
        if referenced {
            continue;
        }
        let Some(freed) = ctx.storage.remove_orphan(&part).await? else {
            // Another sweep (another instance on the same data directory,
            // say) took it meanwhile: not ours to count.
            continue;
        };
        report.orphans += 1;
        report.freed_bytes += freed;
        ctx.metrics
            .janitor_deleted
            .with_label_values(&["orphan"])
            .inc();
        ctx.metrics.janitor_freed_bytes.inc_by(freed);
        tracing::info!(part = %part.name.to_string_lossy(), freed_bytes = freed, "orphaned part file removed");
    }
    // Housekeeping only: a store hiccup here is no reason to call the sweep failed.
    match ctx.store.purge_lapsed_uses(now).await {
        Ok(n) => report.lapsed_uses = n,
        Err(e) => tracing::warn!(error = %e, "lapsed token uses not purged; next sweep"),
    }
    Ok(report)
}
