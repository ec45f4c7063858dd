//! Every error a client can see, and the one place where each becomes an HTTP
//! answer: `{"error": "<stable code>", "message": "<what to do>"}` plus extra
//! fields where they help (`missing_chunks`, `expected`...).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Map, Value};

use crate::storage::StorageError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("no upload with id {0}")]
    UploadNotFound(String),
    #[error("no completed file with id {0}")]
    FileNotFound(String),
    #[error("no route for this method and path; see the API at /api/v1")]
    RouteNotFound,
    #[error("chunk {index} does not exist: this upload has chunks 0 to {last}")]
    ChunkOutOfRange { index: u64, last: u64 },
    #[error("chunk {index} is {expected} bytes long, but the body is {actual}")]
    ChunkTooShort {
        index: u64,
        expected: u64,
        actual: u64,
    },
    #[error("chunk {index} is {expected} bytes long; the body is longer")]
    ChunkTooLong { index: u64, expected: u64 },
    #[error("the body of chunk {index} was cut off after {received} of {expected} bytes; send the chunk again")]
    BodyIncomplete {
        index: u64,
        received: u64,
        expected: u64,
    },
    #[error("the {what}'s SHA-256 is {actual}, not {expected} as announced")]
    DigestMismatch {
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{} chunk(s) are missing; send them, then complete again", missing.len())]
    UploadIncomplete { missing: Vec<u64> },
    #[error("the file is {size} bytes ({}); this server accepts at most {max} ({})", bytesize::ByteSize(*size), bytesize::ByteSize(*max))]
    FileTooLarge { size: u64, max: u64 },
    #[error("not enough free disk space for {needed} bytes ({}); try later or ask the operator", bytesize::ByteSize(*needed))]
    InsufficientStorage { needed: u64 },
    #[error("upload {0} expired; start a new upload")]
    UploadExpired(String),
    #[error("upload {0} was aborted; start a new upload")]
    UploadAborted(String),
    #[error("upload {0} is already completed")]
    UploadCompleted(String),
    #[error("upload {0} is being assembled; poll GET /api/v1/uploads/{0}")]
    UploadAssembling(String),
    #[error("upload {id} failed: {message}")]
    UploadFailed {
        id: String,
        code: String,
        message: String,
    },
    #[error("chunk {index} is being written by another request; retry when it has finished")]
    ChunkInProgress { index: u64 },
    #[error("chunk {index} was already received with different bytes; if the file changed, abort this upload and start a new one")]
    ChunkConflict { index: u64 },
    #[error(
        "this Idempotency-Key was used for a different request; use a new key for a new upload"
    )]
    IdempotencyKeyReused,
    #[error("a create with this Idempotency-Key is still being answered; retry in a moment")]
    CreateInProgress,
    #[error("{method} is not allowed here; this resource takes {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    /// No credentials where some are needed.
    #[error("{0}")]
    Unauthorized(String),
    /// Credentials were sent but are not valid (unknown, expired, tampered).
    #[error("{0}")]
    InvalidCredentials(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("content type {content_type:?} is not accepted here; allowed: {allowed}")]
    UnsupportedContentType {
        content_type: String,
        allowed: String,
    },
    #[error("the file does not look like {declared} (its first bytes are {detected}); declare its real type")]
    ContentMismatch { declared: String, detected: String },
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    #[error("no bytes of chunk {index} arrived for {idle_secs} s; the request was dropped, send the chunk again")]
    BodyTimeout { index: u64, idle_secs: u64 },
    #[error("the file does not meet the request's If-Match or If-Unmodified-Since condition (it changed, or the tag is wrong); read its current ETag with HEAD")]
    PreconditionFailed,
    #[error("the range selects none of the file's {size} bytes; ask for a range that starts below {size}, or send no Range for the whole file")]
    RangeNotSatisfiable { size: u64 },
    #[error("the state store is unreachable; nothing was lost, retry shortly")]
    StoreUnavailable(#[source] StoreError),
    #[error("internal error; the server log has the details")]
    Internal(#[source] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::StoreUnavailable(e),
            StoreError::Corrupt(_) => ApiError::Internal(e.into()),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NoSpace { needed } => ApiError::InsufficientStorage { needed },
            other => ApiError::Internal(other.into()),
        }
    }
}

impl ApiError {
    /// The stable, snake_case code clients switch on.
    pub fn code(&self) -> &str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::UploadNotFound(_) => "upload_not_found",
            ApiError::FileNotFound(_) => "file_not_found",
            ApiError::RouteNotFound => "not_found",
            ApiError::ChunkOutOfRange { .. } => "chunk_out_of_range",
            ApiError::ChunkTooShort { .. } | ApiError::ChunkTooLong { .. } => "chunk_size_mismatch",
            ApiError::BodyIncomplete { .. } => "body_incomplete",
            ApiError::DigestMismatch { .. } => "digest_mismatch",
            ApiError::UploadIncomplete { .. } => "upload_incomplete",
            ApiError::FileTooLarge { .. } => "file_too_large",
            ApiError::InsufficientStorage { .. } => "insufficient_storage",
            ApiError::UploadExpired(_) => "upload_expired",
            ApiError::UploadAborted(_) => "upload_aborted",
            ApiError::UploadCompleted(_) => "upload_completed",
            ApiError::UploadAssembling(_) => "upload_assembling",
            ApiError::UploadFailed { .. } => "upload_failed",
            ApiError::ChunkInProgress { .. } => "chunk_in_progress",
            ApiError::ChunkConflict { .. } => "chunk_conflict",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::CreateInProgress => "create_in_progress",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Unauthorized(_) | ApiError::InvalidCredentials(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::UnsupportedContentType { .. } => "unsupported_content_type",
            ApiError::ContentMismatch { .. } => "content_mismatch",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::BodyTimeout { .. } => "request_timeout",
            ApiError::PreconditionFailed => "precondition_failed",
            ApiError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn extra(&self) -> Map<String, Value> {
        let mut m = Map::new();
        match self {
            ApiError::UploadIncomplete { missing } => {
                m.insert("missing_chunks".into(), json!(missing));
            }
            ApiError::ChunkTooShort { expected, .. }
            | ApiError::ChunkTooLong { expected, .. }
            | ApiError::BodyIncomplete { expected, .. } => {
                m.insert("expected_size".into(), json!(expected));
            }
            ApiError::DigestMismatch {
                expected, actual, ..
            } => {
                m.insert("expected".into(), json!(expected));
                m.insert("actual".into(), json!(actual));
            }
            ApiError::UploadFailed { code, .. } => {
                m.insert("cause".into(), json!(code));
            }
            ApiError::RateLimited { retry_after, .. } => {
                m.insert("retry_after".into(), json!(retry_after_secs(*retry_after)));
            }
            ApiError::RangeNotSatisfiable { size } => {
                m.insert("size".into(), json!(size));
            }
            ApiError::ContentMismatch { declared, detected } => {
                m.insert("declared".into(), json!(declared));
                m.insert("detected".into(), json!(detected));
            }
            _ => {}
        }
        m
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_)
            | ApiError::ChunkOutOfRange { .. }
            | ApiError::ChunkTooShort { .. }
            | ApiError::BodyIncomplete { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) | ApiError::InvalidCredentials(_) => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UnsupportedContentType { .. } | ApiError::ContentMismatch { .. } => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UploadNotFound(_) | ApiError::FileNotFound(_) | ApiError::RouteNotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::UploadIncomplete { .. }
            | ApiError::UploadCompleted(_)
            | ApiError::UploadAssembling(_)
            | ApiError::UploadFailed { .. }
            | ApiError::ChunkInProgress { .. }
            | ApiError::CreateInProgress
            | ApiError::ChunkConflict { .. } => StatusCode::CONFLICT,
            ApiError::UploadExpired(_) | ApiError::UploadAborted(_) => StatusCode::GONE,
            ApiError::FileTooLarge { .. } | ApiError::ChunkTooLong { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::DigestMismatch { .. } | ApiError::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            // Keep the whole cause chain for the operator; the client gets the
            // short message above.
            tracing::error!(error = ?anyhow_chain(self), code = self.code(), "request failed");
        }
        let mut body = self.extra();
        body.insert("error".into(), json!(self.code()));
        body.insert("message".into(), json!(self.to_string()));
        let mut resp = HttpResponse::build(status);
        if matches!(self, ApiError::StoreUnavailable(_)) {
            resp.insert_header((header::RETRY_AFTER, "2"));
        }
        if matches!(
            self,
            ApiError::ChunkInProgress { .. } | ApiError::CreateInProgress
        ) {
            resp.insert_header((header::RETRY_AFTER, "1"));
        }
        if let ApiError::RateLimited { retry_after, .. } = self {
            resp.insert_header((
                header::RETRY_AFTER,
                retry_after_secs(*retry_after).to_string(),
            ));
        }
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            resp.insert_header((header::ALLOW, *allow));
        }
        // RFC 6750 §3: no error code when no credentials came, else why they failed.
        match self {
            ApiError::Unauthorized(_) => {
                resp.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"tranche\""));
            }
            ApiError::InvalidCredentials(_) => {
                resp.insert_header((
                    header::WWW_AUTHENTICATE,
                    "Bearer realm=\"tranche\", error=\"invalid_token\"",
                ));
            }
            _ => {}
        }
        if let ApiError::RangeNotSatisfiable { size } = self {
            // RFC 9110 §15.5.17: the length a client can build a valid range on.
            resp.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
        }
        if matches!(self, ApiError::BodyTimeout { .. }) {
            // The rest of a stalled body will not be read; the connection goes.
            resp.insert_header((header::CONNECTION, "close"));
        }
        resp.json(Value::Object(body))
    }
}

/// Retry-After is whole seconds; never tell a client to retry at once.
fn retry_after_secs(d: std::time::Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
