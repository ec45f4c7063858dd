//! Starting an upload: the create request is checked against the settings,
//! then the upload's disk space is reserved and its record stored (with its
//! Idempotency-Key entry, when the request has one).

use crate::blobs::ByteStore;
use crate::context::AppContext;
use crate::core::idempotency::{hold_key, replay, request_digest};
use crate::core::live::store_error;
use crate::core::quota::UseLimit;
use crate::core::usage::{self, Caller};
use crate::core::{dedup, hooks, Error};
use crate::guards::limits::content;
use crate::hashing::HashState;
use crate::state::{IdempotencyRecord, Insert, StateStore, UsageKind};
use crate::upload::{ChunkSet, Sequential, Status, UploadRecord};
use crate::wire::{CreateRequest, UploadView};
use std::time::Duration;
use uuid::Uuid;

/// The longest retention a create may ask for: a hundred years, beyond
/// which "until deleted" (no `retention`) says it better.
const MAX_RETENTION_SECS: u64 = 100 * 365 * 24 * 3600;

/// Validates a create request and starts the upload. Returns the answer: the
/// new upload, or the first answer given for the same Idempotency-Key.
///
/// A `limit` (a create token's `max_uploads`) is charged only when an upload
/// is really started: not for a refused request, nor for a retry that gets
/// the first answer again. `max_retention` (a create token's) caps how long
/// the file is kept, as the server's `retention` does.
pub async fn create(
    ctx: &AppContext,
    req: CreateRequest,
    idempotency_key: Option<String>,
    limit: Option<&UseLimit>,
    max_retention: Option<Duration>,
) -> Result<UploadView, Error> {
    let nobody = Caller::default();
    create_as(ctx, req, idempotency_key, limit, max_retention, &nobody).await
}

/// [`create`] for `caller`: its owner's quotas hold, and a create that
/// gives `sha256` may be answered from a stored file ([`dedup`]).
pub async fn create_as(
    ctx: &AppContext,
    req: CreateRequest,
    idempotency_key: Option<String>,
    limit: Option<&UseLimit>,
    max_retention: Option<Duration>,
    caller: &Caller,
) -> Result<UploadView, Error> {
    let answer = create_answer(ctx, req, idempotency_key, limit, max_retention, caller).await?;
    serde_json::from_value(answer).map_err(|e| Error::Internal(e.into()))
}

/// The answer to a create as it is kept under its Idempotency-Key.
async fn create_answer(
    ctx: &AppContext,
    req: CreateRequest,
    idempotency_key: Option<String>,
    limit: Option<&UseLimit>,
    max_retention: Option<Duration>,
    caller: &Caller,
) -> Result<serde_json::Value, Error> {
    let request_digest = request_digest(&req);
    let mut record = new_record(ctx, req, max_retention, caller)?;
    record.idempotency_key = idempotency_key.clone();
    let Some(key) = idempotency_key else {
        return start(ctx, &mut record, None, limit, caller).await;
    };
    // One request per key at a time (across instances, with Redis): a retry
    // racing its first attempt waits for it and gets its answer, instead of
    // finding a `max_uploads` use already taken, say.
    let mut guard = hold_key(ctx, &key).await?;
    // Renewed while it lasts: a create queued behind others at the disk
    // guard may take longer than one lease.
    let work = async {
        match ctx.store.idempotency_record(&key).await {
            Ok(Some(first)) => replay(&first, &request_digest),
            Ok(None) => {
                // Asked only for a request the key has not answered yet: a
                // retry gets the first answer without asking again.
                let mut record = record;
                let idempotency = Some((key.as_str(), request_digest.as_str()));
                start(ctx, &mut record, idempotency, limit, caller).await
            }
            Err(e) => Err(store_error(ctx, e)),
        }
    };
    let result = guard.hold_while(work).await.and_then(|r| r);
    guard.release().await;
    result
}

/// Starts an upload written in order from its start (a tus upload) for
/// `caller`: the same checks, limits, quotas and record as [`create_as`],
/// its progress an offset. With `sequential.length_deferred`, `req.size` is
/// ignored (0 until a write sets the length). Returns the upload as stored:
/// one answered from a stored file ([`dedup`]) is completed already.
pub async fn create_sequential(
    ctx: &AppContext,
    mut req: CreateRequest,
    sequential: Sequential,
    limit: Option<&UseLimit>,
    max_retention: Option<Duration>,
    caller: &Caller,
) -> Result<UploadRecord, Error> {
    let deferred = sequential.length_deferred;
    if deferred {
        req.size = 0;
    }
    let mut record = new_record(ctx, req, max_retention, caller)?;
    if deferred {
        // Chunks only describe the upload in views; sized for the largest
        // file it may become, they stay within the chunk count's bound.
        record.chunk_size = ctx
            .settings
            .chunk_size_for(ctx.settings.max_file_size.0, None);
    }
    record.sequential = Some(sequential);
    start(ctx, &mut record, None, limit, caller).await?;
    if record.expected_sha256.is_none() {
        return Ok(record);
    }
    crate::core::live::load_live(ctx, record.id).await
}

/// A new upload's record, from a create request checked against the settings.
fn new_record(
    ctx: &AppContext,
    req: CreateRequest,
    max_retention: Option<Duration>,
    caller: &Caller,
) -> Result<UploadRecord, Error> {
    let s = &ctx.settings;
    let retention = retention(req.retention, s.retention, max_retention)?;
    let filename = validate_filename(&req.filename)?;
    if req.size > s.max_file_size.0 {
        return Err(Error::FileTooLarge {
            size: req.size,
            max: s.max_file_size.0,
        });
    }
    let content_type = match req.content_type.as_deref() {
        None | Some("") => "application/octet-stream".to_string(),
        Some(ct) => validate_content_type(ct)?,
    };
    content::check_allowed(&s.limits.allowed_content_types, &content_type)?;
    let expected_sha256 = req.sha256.as_deref().map(validate_sha256).transpose()?;
    let now = ctx.clock.now_ms();
    Ok(UploadRecord {
        id: Uuid::new_v4(),
        filename,
        size: req.size,
        content_type,
        expected_sha256,
        chunk_size: s.chunk_size_for(req.size, req.chunk_size),
        metadata: req.metadata.unwrap_or_default(),
        status: Status::Uploading,
        received: ChunkSet::default(),
        bytes_received: 0,
        hash: HashState::default(),
        created_at: now,
        expires_at: now + s.upload_ttl.as_millis() as i64,
        file: None,
        failure: None,
        idempotency_key: None,
        retention_ms: retention.map(|r| r.as_millis() as i64),
        sequential: None,
        owner: caller.owner.clone(),
        delete_after_download: req
            .retention_after_download
            .unwrap_or(s.retention_after_download),
        processing: None,
    })
}

/// Starts the upload `record`: asks the application's `pre_create` hook
/// (which may change it), takes a `max_uploads` use if there is a limit,
/// then shares a stored file with the same content if it may ([`dedup`]),
/// or else charges its owner's pending quota, reserves its disk space and
/// records it (with the idempotency entry).
async fn start(
    ctx: &AppContext,
    record: &mut UploadRecord,
    idempotency: Option<(&str, &str)>,
    limit: Option<&UseLimit>,
    caller: &Caller,
) -> Result<serde_json::Value, Error> {
    hooks::pre_create(ctx, record, caller).await?;
    let record = &*record;
    let taken = match limit {
        Some(limit) => Some(limit.take(ctx).await?),
        None => None,
    };
    let source = match &record.expected_sha256 {
        Some(sha256) => dedup::source(ctx, caller.owner.as_deref(), sha256, record.size).await,
        None => None,
    };
    let shared = match &source {
        Some(source) => {
            let shared = dedup::shared(record);
            dedup::start_shared(ctx, caller, &shared, source, idempotency).await
        }
        None => Ok(None),
    };
    let inserted = match shared {
        Ok(Some((inserted, answer))) => Ok((inserted, answer)),
        Ok(None) => start_new(ctx, record, idempotency, caller).await,
        Err(e) => Err(e),
    };
    if let Some(taken) = taken {
        match inserted {
            Ok((Insert::Created, _)) => taken.keep(),
            // Given back before answering, so the caller's next create counts right.
            _ => taken.give_back().await,
        }
    }
    match inserted? {
        (Insert::Created, answer) => {
            ctx.metrics.upload_event("created");
            tracing::info!(upload_id = %record.id, size = record.size, chunk_size = record.chunk_size, "upload created");
            Ok(answer)
        }
        // Only without the key's lease (an older instance racing): still the first answer.
        (Insert::Existing(first), _) => replay(&first, idempotency.map_or("", |(_, r)| r)),
    }
}

/// Starts `record` as an upload whose bytes are to come: its owner's
/// pending bytes first (refused before the disk is even asked), then its
/// place on disk and its record.
async fn start_new(
    ctx: &AppContext,
    record: &UploadRecord,
    idempotency: Option<(&str, &str)>,
    caller: &Caller,
) -> Result<(Insert, serde_json::Value), Error> {
    // A new upload has no file yet, so no file URL to name.
    let view = UploadView::of(record, |_| String::new());
    let answer = serde_json::to_value(view).map_err(|e| Error::Internal(e.into()))?;
    usage::charge(ctx, caller, record.id, UsageKind::Pending, record.size).await?;
    let inserted = insert(ctx, record, &answer, idempotency).await;
    if !matches!(inserted, Ok(Insert::Created)) {
        usage::release(ctx, record).await;
    }
    Ok((inserted?, answer))
}

/// Reserves the new upload's place on disk, then records it (with its
/// answer and the request's digest under the idempotency key). Leaves
/// nothing behind when it fails.
async fn insert(
    ctx: &AppContext,
    record: &UploadRecord,
    answer: &serde_json::Value,
    idempotency: Option<(&str, &str)>,
) -> Result<Insert, Error> {
    // The bytes' place first: if the disk is full we say so before any state exists.
    ctx.disk_guard
        .admit(&ctx.storage, record.id, record.size)
        .await?;
    let entry = idempotency.map(|(key, request)| {
        (
            key,
            IdempotencyRecord::new(record.id, request, answer.clone()),
        )
    });
    let inserted = ctx
        .store
        .insert_upload(record, entry.as_ref().map(|(k, e)| (*k, e)))
        .await;
    if !matches!(inserted, Ok(Insert::Created)) {
        // A racing retry with the same key won, or the store failed.
        let _ = ctx.storage.remove(record.id).await;
    }
    inserted.map_err(|e| store_error(ctx, e))
}

/// How long the file of a create is kept: the shortest of what it asks
/// (`retention`, seconds), the server's `retention` and the caller's cap;
/// `None` when none of them says: until deleted.
fn retention(
    asked_secs: Option<u64>,
    server: Option<Duration>,
    cap: Option<Duration>,
) -> Result<Option<Duration>, Error> {
    let asked = match asked_secs {
        Some(0) | Some(MAX_RETENTION_SECS..) => {
            return Err(Error::InvalidRequest(format!(
                "retention must be a number of seconds from 1 to {MAX_RETENTION_SECS}; \
                 leave it out to keep the file as long as the server does"
            )))
        }
        other => other.map(Duration::from_secs),
    };
    Ok([asked, server, cap].into_iter().flatten().min())
}

pub(super) fn validate_filename(name: &str) -> Result<String, Error> {
    if name.is_empty() || name.len() > 1024 {
        return Err(Error::InvalidRequest(
            "filename must be 1 to 1024 bytes long".into(),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::InvalidRequest(
            "filename must not contain control characters (NUL, CR, LF...)".into(),
        ));
    }
    Ok(name.to_string())
}

pub(super) fn validate_content_type(ct: &str) -> Result<String, Error> {
    match ct.parse::<mime::Mime>() {
        // Parameters (charset...) are kept: downloads must say what was declared.
        Ok(m) if ct.len() <= 255 && !ct.chars().any(char::is_control) => Ok(m.to_string()),
        _ => Err(Error::InvalidRequest(format!(
            "content_type {:?} is not a media type such as video/mp4",
            ct.chars().take(100).collect::<String>()
        ))),
    }
}

fn validate_sha256(hex_digest: &str) -> Result<String, Error> {
    if hex_digest.len() == 64 && hex_digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex_digest.to_ascii_lowercase())
    } else {
        Err(Error::InvalidRequest(
            "sha256 must be 64 hexadecimal characters".into(),
        ))
    }
}
