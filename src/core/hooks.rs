//! What the application's blocking hooks ([`crate::hooks`]) decide in an
//! upload's life: `pre_create` before a create stores anything (it may
//! refuse, or set the filename, content type and metadata), `pre_finish`
//! in the assembly, once the SHA-256 is verified and before the file is
//! published (a refusal fails the upload; a hook that fails closed leaves
//! it assembling, to be completed by a later call).

use base64::Engine;
use serde_json::Value;

use crate::context::AppContext;
use crate::core::create::{validate_content_type, validate_filename};
use crate::core::usage::Caller;
use crate::core::Error;
use crate::guards::limits::content;
use crate::hooks::{Answer, Denial, Overrides};
use crate::upload::{Failure, UploadRecord};

/// The `error` of a failure a `pre_finish` refusal left.
pub(super) const REJECTED: &str = "upload_rejected";

/// The status a refused completion answers with: as a digest mismatch's,
/// the bytes arrived but are not a file the server keeps. The
/// application's own status is not kept with the failure, and a retried
/// `complete` must answer as the first did.
pub(super) const REJECTED_AT_FINISH: u16 = 422;

/// Asks `pre_create` about the upload `record` is to start, and applies
/// what it set (checked as a create's own fields are).
pub(super) async fn pre_create(
    ctx: &AppContext,
    record: &mut UploadRecord,
    caller: &Caller,
) -> Result<(), Error> {
    match ctx.hooks.pre_create(record, &caller.identity).await {
        Answer::Allow(set) => apply(ctx, record, set),
        Answer::Deny(denial) => {
            tracing::info!(upload_id = %record.id, reason = ?denial.reason,
                message = %denial.message, "create refused by the pre_create hook");
            Err(rejected(denial))
        }
        Answer::Unavailable => Err(Error::HookUnavailable {
            hook: "pre_create",
            message: "the application's pre_create check did not answer; nothing was \
                      stored, retry shortly (or ask the operator to check the hook)"
                .into(),
        }),
    }
}

/// Asks `pre_finish` about `rec`, whose bytes hash to `sha256`: `None` to
/// go on, or the failure a refusal leaves.
pub(super) async fn pre_finish(
    ctx: &AppContext,
    rec: &UploadRecord,
    sha256: &str,
) -> Result<Option<Failure>, Error> {
    match ctx.hooks.pre_finish(rec, sha256).await {
        Answer::Allow(_) => Ok(None),
        Answer::Deny(denial) => Ok(Some(Failure {
            error: REJECTED.into(),
            message: denial.message,
            sha256: Some(sha256.to_owned()),
        })),
        Answer::Unavailable => Err(Error::HookUnavailable {
            hook: "pre_finish",
            message: format!(
                "the application's pre_finish check did not answer; upload {} is kept with \
                 all its bytes and finishes once it does: complete it again shortly (tus: \
                 ask its offset with HEAD)",
                rec.id
            ),
        }),
    }
}

/// The error a refused completion answers with, first and on every retry.
pub(super) fn rejected_at_finish(message: &str) -> Error {
    Error::UploadRejected {
        status: Some(REJECTED_AT_FINISH),
        reason: None,
        message: message.to_owned(),
    }
}

fn rejected(denial: Denial) -> Error {
    Error::UploadRejected {
        status: denial.status,
        reason: denial.reason,
        message: denial.message,
    }
}

fn apply(ctx: &AppContext, record: &mut UploadRecord, set: Overrides) -> Result<(), Error> {
    if !set.any() {
        return Ok(());
    }
    // The application's mistake, but the client is the one told: say whose.
    let bad = |e: Error| Error::InvalidRequest(format!("the pre_create hook's answer: {e}"));
    if let Some(problem) = set.invalid {
        return Err(bad(Error::InvalidRequest(problem)));
    }
    if let Some(filename) = &set.filename {
        record.filename = validate_filename(filename).map_err(bad)?;
    }
    if let Some(ct) = &set.content_type {
        let ct = validate_content_type(ct).map_err(bad)?;
        content::check_allowed(&ctx.settings.limits.allowed_content_types, &ct).map_err(bad)?;
        record.content_type = ct;
    }
    if let Some(metadata) = set.metadata {
        record.metadata = metadata;
    }
    if record.sequential.is_some() {
        // tus's HEAD answers `Upload-Metadata` as stored: it says what the
        // upload now is, not what the client first sent.
        let raw = tus_metadata(record_fields(record));
        if let Some(seq) = record.sequential.as_mut() {
            seq.raw_metadata = Some(raw);
        }
    }
    Ok(())
}

/// The pairs a tus upload's `Upload-Metadata` gives: its name, type,
/// SHA-256 and metadata.
fn record_fields(record: &UploadRecord) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("filename".to_owned(), record.filename.clone()),
        ("filetype".to_owned(), record.content_type.clone()),
    ];
    if let Some(sha256) = &record.expected_sha256 {
        pairs.push(("sha256".into(), sha256.clone()));
    }
    for (key, value) in &record.metadata {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        pairs.push((key.clone(), text));
    }
    pairs
}

/// tus's `Upload-Metadata`: `key base64(value)` pairs, comma-separated.
/// Keys it cannot carry (empty, spaces, commas, non-ASCII) are left out.
fn tus_metadata(pairs: Vec<(String, String)>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    pairs
        .into_iter()
        .filter(|(key, _)| {
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic() && b != b',')
        })
        .map(|(key, value)| match value.is_empty() {
            true => key,
            false => format!("{key} {}", b64.encode(value)),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tus_metadata_is_encoded_as_tus_decodes_it() {
        let pairs = vec![
            ("filename".to_owned(), "report.pdf".to_owned()),
            ("empty".to_owned(), String::new()),
            ("bad key".to_owned(), "x".to_owned()),
            ("bad,key".to_owned(), "x".to_owned()),
            ("clé".to_owned(), "x".to_owned()),
        ];
        assert_eq!(tus_metadata(pairs), "filename cmVwb3J0LnBkZg==,empty");
    }
}
