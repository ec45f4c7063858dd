//! The upload logic behind API v1, as plain functions over [`AppContext`]:
//! handlers in `api` only translate HTTP to these calls and back, so tests and
//! other front ends can call them directly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Access;
use crate::config::ChunkDigest;
use crate::context::AppContext;
use crate::error::ApiError;
use crate::hashing::HashState;
use crate::limits::content::{self, SNIFF_LEN};
use crate::limits::{idle_limited, BodyError};
use crate::storage::{StorageError, WriteError};
use crate::store::{
    ChunkMark, IdempotencyRecord, Insert, Lease, LeaseOf, StateStore, StoreError, Update,
};
use crate::upload::{ChunkSet, Failure, FileInfo, Status, UploadRecord, UploadView};

/// How long a lease lasts unless renewed. Holders renew it every third of
/// this while they work, so a holder that died (or lost the store) frees it
/// within this time, while a slow chunk or a long assembly keeps it.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// The running hash is persisted at least this often while catching up.
const CATCH_UP_STEP: u64 = 64 << 20;

/// The body of `POST /api/v1/uploads`. Unknown fields are ignored so that newer
/// clients keep working.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateRequest {
    pub filename: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub sha256: Option<String>,
    pub chunk_size: Option<u64>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The answer to a stored chunk.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChunkAnswer {
    pub index: u64,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub received_chunks: u64,
    pub chunk_count: u64,
    pub bytes_received: u64,
}

/// What `complete` ended with.
pub enum Completion {
    Completed(UploadView),
    /// Still assembling after the configured wait: poll `GET`.
    Assembling(UploadView),
}

pub fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    // A UUID is 36 characters; anything far longer is not worth parsing.
    if raw.len() > 64 {
        return Err(ApiError::InvalidRequest(
            "upload id is too long to be valid".into(),
        ));
    }
    Uuid::try_parse(raw).map_err(|_| {
        ApiError::InvalidRequest(format!(
            "{:?} is not a valid id; ids are UUIDs as returned by POST /api/v1/uploads",
            raw.chars().take(64).collect::<String>()
        ))
    })
}

pub fn parse_index(raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().map_err(|_| {
        ApiError::InvalidRequest(format!("chunk index {raw:?} is not a non-negative integer"))
    })
}

/// Checks an `Idempotency-Key` header and scopes it to the caller, so that
/// one caller's key never answers another with an upload (and a token) that
/// is not theirs. `caller` is `None` when authentication is off; otherwise it
/// is the caller's `kind:id` (see [`Access::bucket`]).
///
/// The scope is a digest of an unambiguous encoding of (caller, key): a
/// plain `"{caller}|{key}"` would let sub `acme` with key `bob|k2` land on the
/// entry of sub `acme|bob` with key `k2` (Auth0's subs contain `|`).
pub fn idempotency_key(
    raw: Option<String>,
    caller: Option<&str>,
) -> Result<Option<String>, ApiError> {
    use sha2::{Digest, Sha256};
    let Some(key) = raw else { return Ok(None) };
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::InvalidRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        ));
    }
    let scope = Sha256::digest(scope_encoding(caller, &key));
    Ok(Some(format!("v2:{}", hex::encode(scope))))
}

/// (caller, key) as bytes that no other pair encodes to: a tag for "no
/// caller", then each part prefixed with its length.
fn scope_encoding(caller: Option<&str>, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + caller.map_or(0, str::len) + 17);
    match caller {
        None => out.push(0),
        Some(caller) => {
            out.push(1);
            out.extend_from_slice(&(caller.len() as u64).to_be_bytes());
            out.extend_from_slice(caller.as_bytes());
        }
    }
    out.extend_from_slice(&(key.len() as u64).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// A create token's `max_uploads`: how many uploads it may start, counted in
/// the state store under the token's name until shortly after it expires.
#[derive(Debug, Clone)]
pub struct UseLimit {
    name: String,
    max: u64,
    until_ms: i64,
}

impl UseLimit {
    /// The limit `access` carries, if any.
    pub fn of(access: &Access) -> Option<UseLimit> {
        match access {
            Access::Create { claims, token_id } => claims.max_uploads.map(|max| UseLimit {
                name: token_id.clone(),
                max,
                // Past the token's own expiry plus leeway, the count can go.
                until_ms: (claims.exp as i64 + 300).saturating_mul(1000),
            }),
            _ => None,
        }
    }

    /// Takes one use, or refuses with 403 when all are taken. The use is
    /// given back unless [`TakenUse::keep`] is called: a create that fails,
    /// or whose request is cancelled half-way, leaves the count as it was.
    async fn take(&self, ctx: &AppContext) -> Result<TakenUse, ApiError> {
        let used = ctx
            .store
            .add_use(&self.name, 1, self.until_ms)
            .await
            .map_err(|e| store_error(ctx, e))?;
        if used > self.max {
            self.give_back(ctx).await;
            return Err(ApiError::Forbidden(format!(
                "this token may start at most {} upload(s) and has started them all; ask for a new token",
                self.max
            )));
        }
        Ok(TakenUse {
            ctx: ctx.clone(),
            limit: Some(self.clone()),
        })
    }

    /// Returns a use taken for a create that did not start an upload.
    async fn give_back(&self, ctx: &AppContext) {
        if let Err(e) = ctx.store.add_use(&self.name, -1, self.until_ms).await {
            tracing::warn!(error = %e, "a token use could not be given back");
        }
    }
}

/// A `max_uploads` use held by a create in progress; dropped unsettled (the
/// request was cancelled half-way), it is given back in the background.
struct TakenUse {
    ctx: AppContext,
    /// `None` once kept.
    limit: Option<UseLimit>,
}

impl TakenUse {
    /// The upload started: the use stays taken.
    fn keep(mut self) {
        self.limit = None;
    }

    /// The create failed: the use goes back now.
    async fn give_back(mut self) {
        if let Some(limit) = self.limit.take() {
            limit.give_back(&self.ctx).await;
        }
    }
}

impl Drop for TakenUse {
    fn drop(&mut self) {
        if let Some(limit) = self.limit.take() {
            let ctx = self.ctx.clone();
            tokio::spawn(async move { limit.give_back(&ctx).await });
        }
    }
}

/// Validates a create request and starts the upload. Returns the answer: the
/// new upload, or the first answer given for the same Idempotency-Key.
///
/// A `limit` (a create token's `max_uploads`) is charged only when an upload
/// is really started: not for a refused request, nor for a retry that gets
/// the first answer again.
pub async fn create(
    ctx: &AppContext,
    req: CreateRequest,
    idempotency_key: Option<String>,
    limit: Option<&UseLimit>,
) -> Result<serde_json::Value, ApiError> {
    let s = &ctx.settings;
    let request_digest = request_digest(&req);
    let filename = validate_filename(&req.filename)?;
    if req.size > s.max_file_size.0 {
        return Err(ApiError::FileTooLarge {
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
    let record = UploadRecord {
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
        idempotency_key: idempotency_key.clone(),
    };
    let Some(key) = idempotency_key else {
        return start(ctx, &record, None, limit).await;
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
            Ok(None) => start(ctx, &record, Some((&key, &request_digest)), limit).await,
            Err(e) => Err(store_error(ctx, e)),
        }
    };
    let result = guard.hold_while(work).await.and_then(|r| r);
    guard.release().await;
    result
}

/// Starts the upload `record`: takes a `max_uploads` use if there is a limit,
/// reserves its disk space and records it (with the idempotency entry).
async fn start(
    ctx: &AppContext,
    record: &UploadRecord,
    idempotency: Option<(&str, &str)>,
    limit: Option<&UseLimit>,
) -> Result<serde_json::Value, ApiError> {
    let answer =
        serde_json::to_value(UploadView::from(record)).map_err(|e| ApiError::Internal(e.into()))?;
    let taken = match limit {
        Some(limit) => Some(limit.take(ctx).await?),
        None => None,
    };
    let inserted = insert(ctx, record, &answer, idempotency).await;
    if let Some(taken) = taken {
        match inserted {
            Ok(Insert::Created) => taken.keep(),
            // Given back before answering, so the caller's next create counts right.
            _ => taken.give_back().await,
        }
    }
    match inserted? {
        Insert::Created => {
            ctx.metrics.upload_event("created");
            tracing::info!(upload_id = %record.id, size = record.size, chunk_size = record.chunk_size, "upload created");
            Ok(answer)
        }
        // Only without the key's lease (an older instance racing): still the first answer.
        Insert::Existing(first) => replay(&first, idempotency.map_or("", |(_, r)| r)),
    }
}

/// Takes the lease that lets one create request with this Idempotency-Key
/// proceed at a time, waiting a little for another holder to finish.
async fn hold_key(ctx: &AppContext, key: &str) -> Result<LeaseGuard, ApiError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut pause = Duration::from_millis(10);
    loop {
        let lease = ctx
            .store
            .try_lease(LeaseOf::Create(key.to_owned()), LEASE_TTL)
            .await
            .map_err(|e| store_error(ctx, e))?;
        if let Some(lease) = lease {
            return Ok(LeaseGuard::new(ctx, lease));
        }
        if Instant::now() >= deadline {
            return Err(ApiError::CreateInProgress);
        }
        tokio::time::sleep(pause).await;
        // Gentle on a shared Redis while a slow create holds the key.
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Identifies a create request's content, so that an Idempotency-Key reused
/// for another request is told apart from a retry.
fn request_digest(req: &CreateRequest) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(serde_json::to_vec(req).unwrap_or_default()))
}

/// The answer kept under an Idempotency-Key, for a retry of the same request;
/// another request with that key gets 422 rather than an upload of another
/// file (as the IETF Idempotency-Key draft advises).
fn replay(first: &IdempotencyRecord, request_digest: &str) -> Result<serde_json::Value, ApiError> {
    first
        .replay(request_digest)
        .cloned()
        .ok_or(ApiError::IdempotencyKeyReused)
}

/// Reserves the new upload's place on disk, then records it (with its
/// answer and the request's digest under the idempotency key). Leaves
/// nothing behind when it fails.
async fn insert(
    ctx: &AppContext,
    record: &UploadRecord,
    answer: &serde_json::Value,
    idempotency: Option<(&str, &str)>,
) -> Result<Insert, ApiError> {
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
        let _ = ctx.storage.remove_part(record.id).await;
    }
    inserted.map_err(|e| store_error(ctx, e))
}

fn validate_filename(name: &str) -> Result<String, ApiError> {
    if name.is_empty() || name.len() > 1024 {
        return Err(ApiError::InvalidRequest(
            "filename must be 1 to 1024 bytes long".into(),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(
            "filename must not contain control characters (NUL, CR, LF...)".into(),
        ));
    }
    Ok(name.to_string())
}

fn validate_content_type(ct: &str) -> Result<String, ApiError> {
    match ct.parse::<mime::Mime>() {
        // Parameters (charset...) are kept: downloads must say what was declared.
        Ok(m) if ct.len() <= 255 && !ct.chars().any(char::is_control) => Ok(m.to_string()),
        _ => Err(ApiError::InvalidRequest(format!(
            "content_type {:?} is not a media type such as video/mp4",
            ct.chars().take(100).collect::<String>()
        ))),
    }
}

fn validate_sha256(hex_digest: &str) -> Result<String, ApiError> {
    if hex_digest.len() == 64 && hex_digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex_digest.to_ascii_lowercase())
    } else {
        Err(ApiError::InvalidRequest(
            "sha256 must be 64 hexadecimal characters".into(),
        ))
    }
}

/// What a chunk request's `Content-Digest` asks of the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestCheck {
    /// A `Content-Digest` was sent: the answer carries the chunk's SHA-256,
    /// whatever algorithms the header named.
    pub requested: bool,
    /// Its `sha-256` member, which the body must match.
    pub sha256: Option<[u8; 32]>,
}

/// Parses an RFC 9530 `Content-Digest` header. Only `sha-256` is checked;
/// other algorithms are ignored, as RFC 9530 allows. As in any RFC 8941
/// dictionary, a member named twice counts with its last value. A malformed
/// `sha-256` member is an error.
pub fn parse_content_digest(header: &str) -> Result<DigestCheck, ApiError> {
    use base64::Engine;
    let bad = || {
        ApiError::InvalidRequest(
            "Content-Digest must look like sha-256=:<base64 of 32 bytes>:".into(),
        )
    };
    let mut check = DigestCheck {
        requested: true,
        sha256: None,
    };
    for member in header.split(',') {
        let Some((alg, value)) = member.trim().split_once('=') else {
            return Err(bad());
        };
        if !alg.trim().eq_ignore_ascii_case("sha-256") {
            continue;
        }
        let inner = value
            .trim()
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .ok_or_else(bad)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(inner)
            .map_err(|_| bad())?;
        check.sha256 = Some(bytes.try_into().map_err(|_| bad())?);
    }
    Ok(check)
}

/// Reads a record that must exist and be open for requests: 404 if unknown,
/// 410 if expired or aborted.
async fn load_live(ctx: &AppContext, id: Uuid) -> Result<UploadRecord, ApiError> {
    let rec = ctx
        .store
        .get_upload(id)
        .await
        .map_err(|e| store_error(ctx, e))?;
    check_live(id, rec, ctx.clock.now_ms())
}

fn check_live(id: Uuid, rec: Option<UploadRecord>, now_ms: i64) -> Result<UploadRecord, ApiError> {
    let rec = rec.ok_or_else(|| ApiError::UploadNotFound(id.to_string()))?;
    if rec.status == Status::Aborted {
        return Err(ApiError::UploadAborted(id.to_string()));
    }
    if rec.is_expired(now_ms) {
        return Err(ApiError::UploadExpired(id.to_string()));
    }
    Ok(rec)
}

/// The error for a request that needs status `uploading` on a record in another.
fn status_conflict(rec: &UploadRecord) -> ApiError {
    let id = rec.id.to_string();
    match rec.status {
        Status::Completed => ApiError::UploadCompleted(id),
        Status::Assembling => ApiError::UploadAssembling(id),
        Status::Aborted => ApiError::UploadAborted(id),
        Status::Failed => failed_error(rec),
        Status::Uploading => ApiError::UploadExpired(id),
    }
}

/// What a request that cannot act on a failed upload gets: 409 `upload_failed`
/// naming the cause.
fn failed_error(rec: &UploadRecord) -> ApiError {
    let failure = rec.failure.clone().unwrap_or(Failure {
        error: "upload_failed".into(),
        message: "the upload failed".into(),
        sha256: None,
    });
    ApiError::UploadFailed {
        id: rec.id.to_string(),
        code: failure.error,
        message: failure.message,
    }
}

/// What `complete` answers again for a failed upload: the very error the
/// failing `complete` gave, so that a retried call learns the same thing.
fn failed_completion(rec: &UploadRecord) -> ApiError {
    match &rec.failure {
        Some(Failure {
            error,
            sha256: Some(actual),
            ..
        }) if error == "digest_mismatch" => ApiError::DigestMismatch {
            what: "file",
            expected: rec.expected_sha256.clone().unwrap_or_default(),
            actual: actual.clone(),
        },
        _ => failed_error(rec),
    }
}

fn store_error(ctx: &AppContext, e: StoreError) -> ApiError {
    ctx.metrics.store_errors.inc();
    e.into()
}

pub async fn status(ctx: &AppContext, id: Uuid) -> Result<UploadView, ApiError> {
    let rec = load_live(ctx, id).await?;
    if rec.status == Status::Assembling {
        // A client polling after a 202 would wait forever for an assembly
        // that died with its process, so the poll itself starts it again.
        resume_assembly(ctx, id).await;
    }
    Ok(UploadView::from(&rec))
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

/// Receives chunk `index` of upload `id`: checks it against the record, streams
/// it to disk, and counts it once it is durable.
pub async fn put_chunk<S, E>(
    ctx: &AppContext,
    id: Uuid,
    index: u64,
    content_length: Option<u64>,
    digest: DigestCheck,
    body: S,
) -> Result<ChunkAnswer, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let stalled = Arc::new(AtomicBool::new(false));
    let idle_limit = ctx.settings.limits.body_idle_timeout;
    let body = idle_limited(body, idle_limit, stalled.clone());
    let result = put_chunk_with_lease(ctx, id, index, content_length, digest, body).await;
    match result {
        Err(ApiError::BodyIncomplete { index, .. }) if stalled.load(Ordering::Relaxed) => {
            tracing::info!(upload_id = %id, index, "chunk body stalled; request dropped");
            Err(ApiError::BodyTimeout {
                index,
                idle_secs: idle_limit.as_secs().max(1),
            })
        }
        other => other,
    }
}

async fn put_chunk_with_lease<S>(
    ctx: &AppContext,
    id: Uuid,
    index: u64,
    content_length: Option<u64>,
    digest: DigestCheck,
    body: S,
) -> Result<ChunkAnswer, ApiError>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    // The lease comes before reading the record: a request that held it before
    // us recorded its chunk before letting go, so the record read next says
    // truly whether the chunk is still missing, and counted bytes are never
    // written again.
    let (lease, rec) = ctx
        .store
        .lease_and_get(id, index, LEASE_TTL)
        .await
        .map_err(|e| store_error(ctx, e))?
        .ok_or(ApiError::ChunkInProgress { index })?;
    let mut guard = LeaseGuard::new(ctx, lease);
    let result = put_chunk_leased(
        ctx,
        rec,
        id,
        index,
        content_length,
        digest,
        body,
        &mut guard,
    )
    .await;
    // Released before answering, so that a client retrying at once is not told
    // that its own previous attempt is still in progress.
    guard.release().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn put_chunk_leased<S>(
    ctx: &AppContext,
    rec: Option<UploadRecord>,
    id: Uuid,
    index: u64,
    content_length: Option<u64>,
    digest: DigestCheck,
    body: S,
    guard: &mut LeaseGuard,
) -> Result<ChunkAnswer, ApiError>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    let rec = check_live(id, rec, ctx.clock.now_ms())?;
    if rec.status != Status::Uploading {
        return Err(status_conflict(&rec));
    }
    let count = rec.chunk_count();
    if index >= count {
        return Err(ApiError::ChunkOutOfRange {
            index,
            last: count - 1,
        });
    }
    let (start, end) = rec.chunk_range(index);
    let expected = end - start;
    match content_length {
        Some(n) if n > expected => return Err(ApiError::ChunkTooLong { index, expected }),
        Some(n) if n < expected => {
            return Err(ApiError::ChunkTooShort {
                index,
                expected,
                actual: n,
            })
        }
        _ => {}
    }
    let want_chunk_hash = digest.requested || ctx.settings.chunk_digest == ChunkDigest::Always;

    if rec.received.contains(index) {
        // Already stored: never rewrite counted bytes (a cut-off resend would
        // corrupt them). The resend must carry the same bytes: a client whose
        // file changed is told so rather than answered as if they were stored.
        guard.release().await;
        let resent = drain(body, index, expected).await?;
        check_digest(digest.sha256, Some(resent))?;
        let stored = match ctx.storage.hash_range(id, start, expected).await {
            Err(StorageError::PartMissing) => return Err(gone_meanwhile(ctx, id).await),
            other => other?,
        };
        if stored != resent {
            return Err(ApiError::ChunkConflict { index });
        }
        let chunk_sha = want_chunk_hash.then_some(stored);
        return Ok(chunk_answer(&rec, index, expected, chunk_sha));
    }

    // Chunk 0 of a type with a known signature must start like one; the
    // bytes looked at are handed on to the write unchanged.
    let mut body = body;
    let mut head = Vec::new();
    if index == 0 && ctx.settings.limits.sniffs() && content::sniffable(&rec.content_type) {
        let mut seen = 0usize;
        while seen < SNIFF_LEN.min(expected as usize) {
            match body.next().await {
                Some(Ok(bytes)) => {
                    seen += bytes.len();
                    head.push(Ok(bytes));
                }
                Some(Err(e)) => {
                    head.push(Err(e));
                    break;
                }
                None => break,
            }
        }
        let mut prefix = Vec::with_capacity(seen.min(SNIFF_LEN));
        for bytes in head.iter().flatten() {
            prefix.extend_from_slice(&bytes[..bytes.len().min(SNIFF_LEN - prefix.len())]);
            if prefix.len() == SNIFF_LEN {
                break;
            }
        }
        if !head.iter().any(|h| h.is_err()) {
            if let Err(e) = content::check_signature(&rec.content_type, &prefix) {
                tracing::info!(upload_id = %id, declared = %rec.content_type, "chunk 0 refused: signature mismatch");
                return Err(e);
            }
        }
    }
    let body = futures::stream::iter(head).chain(body);

    // The whole file's running hash is not computed here but by a background
    // task once the chunk is recorded (see `spawn_catch_up`): hashed inline,
    // SHA-256 (~1.1 GB/s on one core) set the pace of every chunk request;
    // in the background it overlaps with the next chunk's transfer.
    let started = Instant::now();
    let write = ctx
        .storage
        .write_chunk(id, start, expected, body, want_chunk_hash);
    let written = match guard.hold_while(write).await? {
        Ok(w) => w,
        Err(WriteError::TooLong { expected }) => {
            return Err(ApiError::ChunkTooLong { index, expected })
        }
        Err(WriteError::TooShort { received, expected }) => {
            return Err(ApiError::ChunkTooShort {
                index,
                expected,
                actual: received,
            })
        }
        Err(WriteError::Incomplete { received, expected }) => {
            return Err(ApiError::BodyIncomplete {
                index,
                received,
                expected,
            })
        }
        Err(WriteError::Storage(StorageError::PartMissing)) => {
            return Err(gone_meanwhile(ctx, id).await)
        }
        Err(WriteError::Storage(e)) => return Err(e.into()),
    };
    let chunk_sha = check_digest(digest.sha256, written.chunk_sha256)?;
    let now = ctx.clock.now_ms();
    let mark = ChunkMark {
        index,
        len: expected,
        now_ms: now,
        expires_at: now + ctx.settings.upload_ttl.as_millis() as i64,
    };
    let written_at = Instant::now();
    let lease = guard.disarm();
    let recorded = ctx.store.record_chunk_and_release(id, mark, &lease).await;
    tracing::debug!(
        write_ms = (written_at - started).as_secs_f64() * 1000.0,
        record_ms = written_at.elapsed().as_secs_f64() * 1000.0,
        "chunk written and recorded"
    );
    if recorded.is_err() {
        // The chunk is not acknowledged and the client will resend it; give
        // the lease back once the store answers again (else it lapses).
        drop(LeaseGuard::new(ctx, lease));
    }
    let rec = match recorded.map_err(|e| store_error(ctx, e))? {
        Update::Done(rec) => rec,
        Update::NotFound => return Err(ApiError::UploadNotFound(id.to_string())),
        Update::Rejected(rec) => return Err(status_conflict(&rec)),
    };
    ctx.metrics.chunks_received.inc();
    ctx.metrics.chunk_bytes_received.inc_by(expected);
    if needs_catch_up(&rec) {
        spawn_catch_up(ctx, id);
    }
    Ok(chunk_answer(&rec, index, expected, chunk_sha))
}

/// The error for an upload whose part file vanished under a request.
async fn gone_meanwhile(ctx: &AppContext, id: Uuid) -> ApiError {
    // Aborted or expired while we were at it: say so. Otherwise the bytes
    // were removed behind the server's back (by an operator, say), and the
    // upload cannot be finished.
    match load_live(ctx, id).await {
        Ok(rec) if rec.status == Status::Uploading => ApiError::Internal(anyhow::anyhow!(
            "the part file of upload {id} is missing from the data directory"
        )),
        Ok(rec) => status_conflict(&rec),
        Err(e) => e,
    }
}

fn chunk_answer(rec: &UploadRecord, index: u64, size: u64, sha: Option<[u8; 32]>) -> ChunkAnswer {
    ChunkAnswer {
        index,
        size,
        sha256: sha.map(hex::encode),
        received_chunks: rec.received.count(),
        chunk_count: rec.chunk_count(),
        bytes_received: rec.bytes_received,
    }
}

fn check_digest(
    announced: Option<[u8; 32]>,
    actual: Option<[u8; 32]>,
) -> Result<Option<[u8; 32]>, ApiError> {
    if let (Some(want), Some(got)) = (announced, actual) {
        if want != got {
            return Err(ApiError::DigestMismatch {
                what: "chunk",
                expected: hex::encode(want),
                actual: hex::encode(got),
            });
        }
    }
    Ok(actual)
}

/// Reads a resent chunk's body without storing it, checking its length, and
/// returns its SHA-256.
async fn drain<S, E>(mut body: S, index: u64, expected: u64) -> Result<[u8; 32], ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    use futures::StreamExt;
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(item) = body.next().await {
        let bytes = item.map_err(|_| ApiError::BodyIncomplete {
            index,
            received,
            expected,
        })?;
        received += bytes.len() as u64;
        if received > expected {
            return Err(ApiError::ChunkTooLong { index, expected });
        }
        hasher.update(&bytes);
    }
    if received < expected {
        return Err(ApiError::ChunkTooShort {
            index,
            expected,
            actual: received,
        });
    }
    Ok(hasher.finalize().into())
}

/// Holds a lease: [`LeaseGuard::release`] gives it back; if the holder is
/// dropped first (a cancelled request), the lease is given back in the
/// background.
struct LeaseGuard {
    ctx: AppContext,
    lease: Option<Lease>,
}

impl LeaseGuard {
    fn new(ctx: &AppContext, lease: Lease) -> Self {
        LeaseGuard {
            ctx: ctx.clone(),
            lease: Some(lease),
        }
    }

    /// Runs `work` while renewing the lease in the background; fails with 409
    /// if the lease was lost (the holder stalled past its TTL and another
    /// request took over), so that two writers never go on together.
    async fn hold_while<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, ApiError> {
        let lease = self.lease.as_ref().expect("the lease is held");
        let renew = async {
            loop {
                tokio::time::sleep(LEASE_TTL / 3).await;
                match self.ctx.store.renew(lease, LEASE_TTL).await {
                    Ok(true) => {}
                    // The store is unreachable: keep working; recording the
                    // result will fail too if it stays so.
                    Err(e) => tracing::warn!(error = %e, "could not renew lease"),
                    Ok(false) => return,
                }
            }
        };
        tokio::select! {
            out = work => Ok(out),
            () = renew => {
                tracing::warn!(lease = %lease.of, "lease lost; stopping");
                Err(match &lease.of {
                    LeaseOf::Chunk { index, .. } => ApiError::ChunkInProgress { index: *index },
                    LeaseOf::Create(_) => ApiError::CreateInProgress,
                    LeaseOf::Complete(upload) => ApiError::UploadAssembling(upload.to_string()),
                })
            }
        }
    }

    /// Takes the lease out, for a store call that releases it itself.
    fn disarm(&mut self) -> Lease {
        self.lease.take().expect("the lease is held")
    }

    async fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            if let Err(e) = self.ctx.store.release(&lease).await {
                tracing::warn!(error = %e, lease = %lease.of, "could not release lease; it will lapse");
            }
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            let store = self.ctx.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.release(&lease).await {
                    tracing::warn!(error = %e, lease = %lease.of, "could not release lease; it will lapse");
                }
            });
        }
    }
}

/// Whether the chunk after the hashed prefix has arrived, so the running hash
/// can move on by reading it back.
fn needs_catch_up(rec: &UploadRecord) -> bool {
    let next = rec.hash_frontier();
    rec.hash.len() < rec.size && next < rec.chunk_count() && rec.received.contains(next)
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

async fn catch_up(ctx: &AppContext, id: Uuid) -> anyhow::Result<()> {
    loop {
        let Some(rec) = ctx.store.get_upload(id).await? else {
            return Ok(());
        };
        if rec.status != Status::Uploading || !needs_catch_up(&rec) {
            return Ok(());
        }
        // Hash the run of received chunks after the prefix, up to a step.
        let mut next = rec.hash_frontier();
        let from = rec.hash.len();
        let mut until = from;
        while next < rec.chunk_count()
            && rec.received.contains(next)
            && until - from < CATCH_UP_STEP
        {
            until = rec.chunk_range(next).1;
            next += 1;
        }
        let state = ctx.storage.hash_until(id, rec.hash.clone(), until).await?;
        // Someone else may have moved the hash on meanwhile; then reload and retry.
        ctx.store.advance_hash(id, from, state).await?;
    }
}

/// Finishes an upload: checks that every chunk is there, then assembles it
/// (under a lease, so only one request does) and waits for the result up to
/// `complete_wait`.
pub async fn complete(ctx: &AppContext, id: Uuid) -> Result<Completion, ApiError> {
    let deadline = Instant::now() + ctx.settings.complete_wait;
    loop {
        let rec = load_live(ctx, id).await?;
        match rec.status {
            Status::Completed => return Ok(Completion::Completed(UploadView::from(&rec))),
            Status::Failed => return Err(failed_completion(&rec)),
            Status::Aborted => return Err(ApiError::UploadAborted(id.to_string())),
            Status::Uploading if !rec.is_fully_received() => {
                return Err(ApiError::UploadIncomplete {
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
                    .map_err(|e| ApiError::Internal(e.into()))?
                    .map(|rec| Completion::Completed(UploadView::from(&rec))),
                Err(_) => Ok(Completion::Assembling(UploadView::from(
                    &load_live(ctx, id).await?,
                ))),
            };
        }
        // Another request is assembling: wait for its outcome, like it does.
        if Instant::now() >= deadline {
            return Ok(Completion::Assembling(UploadView::from(&rec)));
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
) -> tokio::task::JoinHandle<Result<UploadRecord, ApiError>> {
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
async fn assemble(ctx: &AppContext, id: Uuid) -> Result<UploadRecord, ApiError> {
    let started = Instant::now();
    let rec = match ctx
        .store
        .begin_assembly(id)
        .await
        .map_err(|e| store_error(ctx, e))?
    {
        Update::Done(rec) => rec,
        Update::NotFound => return Err(ApiError::UploadNotFound(id.to_string())),
        Update::Rejected(rec) if rec.status == Status::Completed => return Ok(rec),
        Update::Rejected(rec) if rec.status == Status::Uploading => {
            return Err(ApiError::UploadIncomplete {
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
        _ => {
            ctx.storage.publish(id).await?;
            Ok(FileInfo {
                id,
                size: rec.size,
                sha256: sha256.clone(),
                url: file_url(ctx, id),
            })
        }
    };
    let failed = outcome.is_err();
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
        Update::Done(rec) => rec,
        Update::NotFound => return Err(ApiError::UploadNotFound(id.to_string())),
        Update::Rejected(rec) => return Err(status_conflict(&rec)),
    };
    ctx.metrics
        .assembly_duration
        .observe(started.elapsed().as_secs_f64());
    if failed {
        ctx.metrics.upload_event("failed");
        let _ = ctx.storage.remove_part(id).await;
        tracing::warn!(upload_id = %id, %sha256, "upload failed: digest mismatch");
        return Err(ApiError::DigestMismatch {
            what: "file",
            expected: rec.expected_sha256.clone().unwrap_or_default(),
            actual: sha256,
        });
    }
    ctx.metrics.upload_event("completed");
    tracing::info!(upload_id = %id, size = rec.size, %sha256, elapsed_ms = started.elapsed().as_millis() as u64, "upload completed");
    Ok(rec)
}

pub fn file_url(ctx: &AppContext, id: Uuid) -> String {
    let base = ctx
        .settings
        .public_url
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    format!("{base}/api/v1/files/{id}")
}

/// Aborts an upload: its bytes go at once, a tombstone stays for one TTL so
/// that later requests get 410 instead of 404. Aborting twice is fine.
pub async fn abort(ctx: &AppContext, id: Uuid) -> Result<(), ApiError> {
    let tombstone_until = ctx.clock.now_ms() + ctx.settings.upload_ttl.as_millis() as i64;
    match ctx
        .store
        .abort(id, tombstone_until)
        .await
        .map_err(|e| store_error(ctx, e))?
    {
        Update::NotFound => return Err(ApiError::UploadNotFound(id.to_string())),
        Update::Rejected(rec) => return Err(status_conflict(&rec)),
        Update::Done(_) => {}
    }
    ctx.storage
        .remove_part(id)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    ctx.metrics.upload_event("aborted");
    tracing::info!(upload_id = %id, "upload aborted");
    Ok(())
}

/// The completed file's record, for downloads.
pub async fn completed_file(
    ctx: &AppContext,
    id: Uuid,
) -> Result<(UploadRecord, std::path::PathBuf), ApiError> {
    let rec = ctx
        .store
        .get_upload(id)
        .await
        .map_err(|e| store_error(ctx, e))?
        .filter(|r| r.status == Status::Completed)
        .ok_or_else(|| ApiError::FileNotFound(id.to_string()))?;
    Ok((rec, ctx.storage.file_path(id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_separator_in_the_caller_cannot_reach_another_callers_key() {
        let a = idempotency_key(Some("k2".into()), Some("sub:acme|bob")).unwrap();
        let b = idempotency_key(Some("bob|k2".into()), Some("sub:acme")).unwrap();
        assert_ne!(a, b);
        let c = idempotency_key(Some("b:k".into()), Some("sub:a")).unwrap();
        let d = idempotency_key(Some("k".into()), Some("sub:a:b")).unwrap();
        assert_ne!(c, d);
        // With auth off there is no caller, and that is a scope of its own.
        let open = idempotency_key(Some("sub:a|k".into()), None).unwrap();
        let e = idempotency_key(Some("k".into()), Some("sub:a")).unwrap();
        assert_ne!(open, e);
        assert_eq!(
            a,
            idempotency_key(Some("k2".into()), Some("sub:acme|bob")).unwrap(),
            "the same caller and key always name the same entry"
        );
    }

    proptest! {
        #[test]
        fn distinct_caller_key_pairs_never_share_a_scope(
            c1 in proptest::option::of("[a-z|:]{0,6}"),
            k1 in "[a-z|:]{1,6}",
            c2 in proptest::option::of("[a-z|:]{0,6}"),
            k2 in "[a-z|:]{1,6}",
        ) {
            let same = c1 == c2 && k1 == k2;
            let e1 = scope_encoding(c1.as_deref(), &k1);
            let e2 = scope_encoding(c2.as_deref(), &k2);
            prop_assert_eq!(e1 == e2, same);
            let s1 = idempotency_key(Some(k1), c1.as_deref()).unwrap();
            let s2 = idempotency_key(Some(k2), c2.as_deref()).unwrap();
            prop_assert_eq!(s1 == s2, same);
        }
    }
}
