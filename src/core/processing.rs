//! A worker's reports on a completed file: `queued`, `processing` (with
//! progress), `completed` (with a result) or `failed` (with a message). The
//! last one is kept in the upload's record, so the upload object shows it
//! and the SSE stream follows it: the job-status flow of an upload, then a
//! worker, then a status the client watches, with no second service.
//!
//! Reports are last-write-wins: a worker that reprocesses a file (events
//! come at least once) simply reports again. The store numbers them
//! (`revision`) in the same step that keeps them, so that watchers can tell
//! a new report from one they have seen.

use uuid::Uuid;

use super::live::{check_live, store_error};
use super::Error;
use crate::context::AppContext;
use crate::state::{LedgerStore, Update};
use crate::upload::UploadRecord;
use crate::wire::{Processing, ProcessingReport};

/// The longest `message` kept, in characters: a line for a person, not a log.
pub const MAX_MESSAGE_CHARS: usize = 1000;

/// Keeps `report` as upload `id`'s processing state and returns the record
/// with it. The upload must be completed (its file is what is processed).
pub async fn report_processing(
    ctx: &AppContext,
    id: Uuid,
    report: ProcessingReport,
) -> Result<UploadRecord, Error> {
    check(&report)?;
    let processing = Processing {
        state: report.state,
        progress: report.progress,
        message: report.message,
        result: report.result,
        updated_at: crate::events::rfc3339_ms(ctx.clock.now_ms()),
        // The store counts.
        revision: 0,
    };
    let update = ctx
        .store
        .set_processing(id, processing)
        .await
        .map_err(|e| store_error(ctx, e))?;
    match update {
        // A file past its retention is gone (downloads say so before the
        // janitor comes): a report on it is one on a deleted file.
        Update::Done(rec) if rec.file_expired(ctx.clock.now_ms()) => {
            Err(Error::UploadNotFound(id.to_string()))
        }
        Update::Done(rec) => {
            super::notify(ctx, id);
            Ok(rec)
        }
        Update::NotFound => Err(Error::UploadNotFound(id.to_string())),
        Update::Rejected(rec) => {
            // Gone (aborted, expired) before anything else.
            let rec = check_live(id, Some(rec), ctx.clock.now_ms())?;
            Err(Error::NotCompleted {
                id: id.to_string(),
                status: rec.status.as_str(),
            })
        }
    }
}

/// Checks what a worker reported: a progress between 0 and 1, a message of
/// a reasonable length. (The body's size bounds the result.)
fn check(report: &ProcessingReport) -> Result<(), Error> {
    if let Some(p) = report.progress {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::InvalidRequest(format!(
                "progress must be between 0 and 1 (a fraction), not {p}"
            )));
        }
    }
    if let Some(m) = &report.message {
        if m.chars().count() > MAX_MESSAGE_CHARS {
            return Err(Error::InvalidRequest(format!(
                "message must be at most {MAX_MESSAGE_CHARS} characters; put details in result"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ProcessingState;

    fn report(progress: Option<f64>, message: Option<String>) -> ProcessingReport {
        ProcessingReport {
            state: ProcessingState::Processing,
            progress,
            message,
            result: None,
        }
    }

    #[test]
    fn progress_is_a_fraction() {
        assert!(check(&report(Some(0.0), None)).is_ok());
        assert!(check(&report(Some(1.0), None)).is_ok());
        assert!(check(&report(Some(1.5), None)).is_err());
        assert!(check(&report(Some(-0.1), None)).is_err());
    }

    #[test]
    fn messages_are_bounded() {
        assert!(check(&report(None, Some("é".repeat(MAX_MESSAGE_CHARS)))).is_ok());
        assert!(check(&report(None, Some("x".repeat(MAX_MESSAGE_CHARS + 1)))).is_err());
    }
}
