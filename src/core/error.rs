//! What can go wrong in an upload's life, in words any front end can pass
//! on: each error has a stable snake_case code and a message a person can act
//! on. Which status a protocol answers with is the front end's business
//! (`http::error` for API v1).

use crate::blobs::StorageError;
use crate::state::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("no upload with id {0}")]
    UploadNotFound(String),
    #[error("no completed file with id {0}")]
    FileNotFound(String),
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
    #[error("upload {0} is being assembled; poll its status until it is completed")]
    UploadAssembling(String),
    #[error("upload {id} failed: {message}")]
    UploadFailed {
        id: String,
        code: String,
        message: String,
    },
    #[error("chunk {index} is being written by another request; retry when it has finished")]
    ChunkInProgress { index: u64 },
    #[error("upload {0} is being written by another request; retry when it has finished")]
    UploadLocked(String),
    #[error("the upload stands at offset {expected}, not {actual}; ask for its offset (HEAD) and resume from there")]
    OffsetMismatch { expected: u64, actual: u64 },
    #[error(
        "these bytes would pass the upload's length of {length} bytes; nothing of them was kept"
    )]
    BeyondLength { length: u64 },
    #[error("the {algorithm} checksum of the bytes is {actual}, not {expected} as announced; nothing of them was kept, send them again")]
    ChecksumMismatch {
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    #[error("upload {0} is written at an offset, in order (tus), not in chunks")]
    NotChunked(String),
    #[error("upload {0} takes chunks (API v1), not writes at an offset")]
    NotSequential(String),
    #[error("chunk {index} was already received with different bytes; if the file changed, abort this upload and start a new one")]
    ChunkConflict { index: u64 },
    #[error(
        "this Idempotency-Key was used for a different request; use a new key for a new upload"
    )]
    IdempotencyKeyReused,
    #[error("a create with this Idempotency-Key is still being answered; retry in a moment")]
    CreateInProgress,
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
    /// A request that needs a completed upload (a processing report).
    #[error("upload {id} is {status}, not completed; report processing once it is")]
    NotCompleted { id: String, status: &'static str },
    #[error("the state store is unreachable; nothing was lost, retry shortly")]
    StoreUnavailable(#[source] StoreError),
    #[error("internal error; the server log has the details")]
    Internal(#[source] anyhow::Error),
    /// A create whose bytes would pass one of its owner's quotas.
    #[error("{message}")]
    QuotaExceeded {
        /// `max_stored_bytes` or `max_pending_bytes`.
        quota: &'static str,
        /// The bytes counted against it before this upload.
        usage: u64,
        limit: u64,
        message: String,
    },
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Error::StoreUnavailable(e),
            StoreError::Corrupt(_) => Error::Internal(e.into()),
        }
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NoSpace { needed } => Error::InsufficientStorage { needed },
            other => Error::Internal(other.into()),
        }
    }
}

impl Error {
    /// The stable, snake_case code clients switch on.
    pub fn code(&self) -> &str {
        match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::UploadNotFound(_) => "upload_not_found",
            Error::FileNotFound(_) => "file_not_found",
            Error::ChunkOutOfRange { .. } => "chunk_out_of_range",
            Error::ChunkTooShort { .. } | Error::ChunkTooLong { .. } => "chunk_size_mismatch",
            Error::BodyIncomplete { .. } => "body_incomplete",
            Error::DigestMismatch { .. } => "digest_mismatch",
            Error::UploadIncomplete { .. } => "upload_incomplete",
            Error::FileTooLarge { .. } => "file_too_large",
            Error::InsufficientStorage { .. } => "insufficient_storage",
            Error::UploadExpired(_) => "upload_expired",
            Error::UploadAborted(_) => "upload_aborted",
            Error::UploadCompleted(_) => "upload_completed",
            Error::UploadAssembling(_) => "upload_assembling",
            Error::NotCompleted { .. } => "upload_not_completed",
            Error::UploadFailed { .. } => "upload_failed",
            Error::ChunkInProgress { .. } => "chunk_in_progress",
            Error::ChunkConflict { .. } => "chunk_conflict",
            Error::UploadLocked(_) => "upload_locked",
            Error::OffsetMismatch { .. } => "offset_mismatch",
            Error::BeyondLength { .. } => "beyond_length",
            Error::ChecksumMismatch { .. } => "checksum_mismatch",
            Error::NotChunked(_) | Error::NotSequential(_) => "wrong_protocol",
            Error::IdempotencyKeyReused => "idempotency_key_reused",
            Error::CreateInProgress => "create_in_progress",
            Error::Unauthorized(_) | Error::InvalidCredentials(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::UnsupportedContentType { .. } => "unsupported_content_type",
            Error::ContentMismatch { .. } => "content_mismatch",
            Error::RateLimited { .. } => "rate_limited",
            Error::BodyTimeout { .. } => "request_timeout",
            Error::StoreUnavailable(_) => "store_unavailable",
            Error::Internal(_) => "internal_error",
            Error::QuotaExceeded { .. } => "quota_exceeded",
        }
    }
}
