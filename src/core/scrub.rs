//! The integrity scrub: every completed file is read back and hashed, at a
//! bounded rate, and compared with the SHA-256 recorded at completion. It
//! walks the byte store ([`ByteStore::list_files`]) and looks each file up in
//! the state store, so it also finds files that no record names (orphans).
//! Then it walks the completed records ([`LedgerStore::completed_ids`]),
//! so it also finds records whose bytes are gone (missing).
//! It reports and counts; it changes nothing.

use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::blobs::{ByteStore, StorageError};
use crate::context::AppContext;
use crate::core::live::store_error;
use crate::core::Error;
use crate::state::{LedgerStore, StateStore};
use crate::upload::Status;
use crate::wire::{ScrubMismatch, ScrubReport};

/// Re-hashes every completed file, reading at most `bytes_per_second` (none:
/// as fast as the disk goes). One scrub runs at a time; a second waits.
pub async fn scrub(ctx: &AppContext, bytes_per_second: Option<u64>) -> Result<ScrubReport, Error> {
    let _one_at_a_time = ctx.scrubbing.lock().await;
    let mut report = ScrubReport::default();
    let mut pace = Pace::new(bytes_per_second);
    let ids = ctx.storage.list_files().await.map_err(|e| {
        Error::Internal(anyhow::Error::new(e).context("listing the completed files"))
    })?;
    let on_disk: std::collections::HashSet<Uuid> = ids.iter().copied().collect();
    for id in ids {
        let rec = ctx
            .store
            .get_upload(id)
            .await
            .map_err(|e| store_error(ctx, e))?;
        let Some(rec) = rec else {
            ctx.metrics.scrub_orphans.inc();
            tracing::warn!(upload_id = %id, "scrub: a file that no record names (orphan)");
            report.orphans.push(id);
            continue;
        };
        // Assembling: being published right now; nothing recorded to compare.
        let Some(file) = rec.file.filter(|_| rec.status == Status::Completed) else {
            continue;
        };
        let Some(actual) = hash(ctx, id, &mut pace).await? else {
            continue; // deleted while we looked
        };
        report.files += 1;
        report.bytes += actual.1;
        ctx.metrics.scrub_files.inc();
        if actual.0 != file.sha256 {
            ctx.metrics.scrub_mismatches.inc();
            tracing::error!(upload_id = %id, expected = %file.sha256, actual = %actual.0,
                "scrub: the file's bytes no longer match its SHA-256");
            report.mismatches.push(ScrubMismatch {
                id,
                expected: file.sha256,
                actual: actual.0,
            });
        }
    }
    report.missing = missing(ctx, &on_disk).await?;
    tracing::info!(
        files = report.files,
        missing = report.missing.len(),
        bytes = report.bytes,
        mismatches = report.mismatches.len(),
        orphans = report.orphans.len(),
        "scrub done"
    );
    Ok(report)
}

/// Completed records whose file was not on disk when the walk began, and
/// still is not (a file published or deleted meanwhile is not missing).
async fn missing(
    ctx: &AppContext,
    on_disk: &std::collections::HashSet<Uuid>,
) -> Result<Vec<Uuid>, Error> {
    let completed = ctx
        .store
        .completed_ids()
        .await
        .map_err(|e| store_error(ctx, e))?;
    let mut missing = Vec::new();
    for id in completed.into_iter().filter(|id| !on_disk.contains(id)) {
        match ctx.storage.file_meta(id).await {
            Err(StorageError::FileMissing) => {}
            Ok(_) => continue,
            Err(e) => return Err(e.into()),
        }
        let still = ctx
            .store
            .get_upload(id)
            .await
            .map_err(|e| store_error(ctx, e))?
            .is_some_and(|r| r.status == Status::Completed);
        if still {
            ctx.metrics.scrub_missing.inc();
            tracing::error!(upload_id = %id, "scrub: a completed file's bytes are missing");
            missing.push(id);
        }
    }
    Ok(missing)
}

/// The hex SHA-256 and length of completed file `id`; `None` if it is gone.
/// The pieces are small (64 KiB), so hashing each between two reads keeps
/// the runtime's threads free.
async fn hash(ctx: &AppContext, id: Uuid, pace: &mut Pace) -> Result<Option<(String, u64)>, Error> {
    let failed = |e: std::io::Error| {
        Error::Internal(anyhow::Error::new(e).context(format!("scrub: reading file {id}")))
    };
    let len = match ctx.storage.file_meta(id).await {
        Ok(meta) => meta.len,
        Err(StorageError::FileMissing) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut stream = match ctx.storage.read_file(id, 0, len).await {
        Ok(s) => s,
        Err(StorageError::FileMissing) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut hasher = Sha256::new();
    let mut read = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(failed)?;
        hasher.update(&piece);
        read += piece.len() as u64;
        pace.took(piece.len() as u64).await;
    }
    Ok(Some((hex::encode(hasher.finalize()), read)))
}

/// Token pacing: after `n` bytes in all, at least `n / rate` seconds have
/// passed since the start (a scrub is background work: the disk is the
/// uploads' first).
struct Pace {
    per_second: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pace {
    fn new(per_second: Option<u64>) -> Pace {
        Pace {
            per_second: per_second.filter(|&r| r > 0),
            started: Instant::now(),
            bytes: 0,
        }
    }

    async fn took(&mut self, n: u64) {
        self.bytes += n;
        let Some(rate) = self.per_second else { return };
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}
