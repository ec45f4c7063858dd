//! The one place where an error becomes an API v1 answer: its status, its
//! JSON body `{"error": "<stable code>", "message": "<what to do>"}` plus
//! extra fields where they help (`missing_chunks`, `expected`...), and the
//! headers that go with it (`Retry-After`, `WWW-Authenticate`, `Allow`...).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Map, Value};

use crate::blobs::StorageError;
use crate::core::Error;
use crate::state::StoreError;

/// An answer of API v1 that is not a success: an error of the upload's life,
/// or one that only HTTP knows (routes, methods, conditional and range
/// requests).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Core(#[from] Error),
    #[error("no route for this method and path; see the API at /api/v1")]
    RouteNotFound,
    #[error("{method} is not allowed here; this resource takes {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("the file does not meet the request's If-Match or If-Unmodified-Since condition (it changed, or the tag is wrong); read its current ETag with HEAD")]
    PreconditionFailed,
    #[error("this server speaks tus 1.0.0; send Tus-Resumable: 1.0.0")]
    TusVersion,
    #[error("the range selects none of the file's {size} bytes; ask for a range that starts below {size}, or send no Range for the whole file")]
    RangeNotSatisfiable { size: u64 },
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Error::from(e).into()
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        Error::from(e).into()
    }
}

impl ApiError {
    /// A request the server cannot read: 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        Error::InvalidRequest(message.into()).into()
    }

    /// The stable, snake_case code clients switch on.
    pub fn code(&self) -> &str {
        match self {
            ApiError::Core(e) => e.code(),
            ApiError::RouteNotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PreconditionFailed => "precondition_failed",
            ApiError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            ApiError::TusVersion => "tus_version_unsupported",
        }
    }

    /// The message, with API v1's routes where a person needs one.
    fn message(&self) -> String {
        match self {
            ApiError::Core(Error::UploadAssembling(id)) => {
                format!("upload {id} is being assembled; poll GET /api/v1/uploads/{id}")
            }
            other => other.to_string(),
        }
    }

    fn extra(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let core = match self {
            ApiError::RangeNotSatisfiable { size } => {
                m.insert("size".into(), json!(size));
                return m;
            }
            ApiError::Core(e) => e,
            _ => return m,
        };
        match core {
            Error::UploadIncomplete { missing } => {
                m.insert("missing_chunks".into(), json!(missing));
            }
            Error::ChunkTooShort { expected, .. }
            | Error::ChunkTooLong { expected, .. }
            | Error::BodyIncomplete { expected, .. } => {
                m.insert("expected_size".into(), json!(expected));
            }
            Error::DigestMismatch {
                expected, actual, ..
            }
            | Error::ChecksumMismatch {
                expected, actual, ..
            } => {
                m.insert("expected".into(), json!(expected));
                m.insert("actual".into(), json!(actual));
            }
            Error::OffsetMismatch { expected, .. } => {
                m.insert("offset".into(), json!(expected));
            }
            Error::UploadFailed { code, .. } => {
                m.insert("cause".into(), json!(code));
            }
            Error::QuotaExceeded {
                quota,
                usage,
                limit,
                ..
            } => {
                m.insert("quota".into(), json!(quota));
                m.insert("usage".into(), json!(usage));
                m.insert("limit".into(), json!(limit));
            }
            Error::RateLimited { retry_after, .. } => {
                m.insert("retry_after".into(), json!(retry_after_secs(*retry_after)));
            }
            Error::ContentMismatch { declared, detected } => {
                m.insert("declared".into(), json!(declared));
                m.insert("detected".into(), json!(detected));
            }
            _ => {}
        }
        m
    }
}

/// The status API v1 answers an error of the upload's life with.
fn core_status(e: &Error) -> StatusCode {
    match e {
        Error::InvalidRequest(_)
        | Error::ChunkOutOfRange { .. }
        | Error::ChunkTooShort { .. }
        | Error::BodyIncomplete { .. } => StatusCode::BAD_REQUEST,
        Error::Unauthorized(_) | Error::InvalidCredentials(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::UnsupportedContentType { .. } | Error::ContentMismatch { .. } => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        Error::UploadNotFound(_) | Error::FileNotFound(_) => StatusCode::NOT_FOUND,
        Error::UploadIncomplete { .. }
        | Error::UploadCompleted(_)
        | Error::UploadAssembling(_)
        | Error::NotCompleted { .. }
        | Error::UploadFailed { .. }
        | Error::ChunkInProgress { .. }
        | Error::CreateInProgress
        | Error::ChunkConflict { .. }
        | Error::OffsetMismatch { .. }
        | Error::NotChunked(_)
        | Error::NotSequential(_) => StatusCode::CONFLICT,
        Error::UploadLocked(_) => StatusCode::LOCKED,
        // tus's own status for a checksum mismatch (its checksum extension).
        Error::ChecksumMismatch { .. } => {
            StatusCode::from_u16(460).expect("460 is a valid status code")
        }
        Error::UploadExpired(_) | Error::UploadAborted(_) => StatusCode::GONE,
        Error::FileTooLarge { .. } | Error::ChunkTooLong { .. } | Error::BeyondLength { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        Error::DigestMismatch { .. } | Error::IdempotencyKeyReused => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Error::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::InsufficientStorage { .. } | Error::QuotaExceeded { .. } => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Core(e) => core_status(e),
            ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::TusVersion => StatusCode::PRECONDITION_FAILED,
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
        body.insert("message".into(), json!(self.message()));
        let mut resp = HttpResponse::build(status);
        match self {
            ApiError::MethodNotAllowed { allow, .. } => {
                resp.insert_header((header::ALLOW, *allow));
            }
            ApiError::TusVersion => {
                resp.insert_header(("Tus-Version", "1.0.0"));
            }
            ApiError::RangeNotSatisfiable { size } => {
                // RFC 9110 §15.5.17: the length a client can build a valid range on.
                resp.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
            }
            ApiError::Core(e) => core_headers(e, &mut resp),
            _ => {}
        }
        resp.json(Value::Object(body))
    }
}

/// The headers that go with an error of the upload's life.
fn core_headers(e: &Error, resp: &mut actix_web::HttpResponseBuilder) {
    match e {
        Error::StoreUnavailable(_) => {
            resp.insert_header((header::RETRY_AFTER, "2"));
        }
        Error::ChunkInProgress { .. } | Error::CreateInProgress | Error::UploadLocked(_) => {
            resp.insert_header((header::RETRY_AFTER, "1"));
        }
        Error::RateLimited { retry_after, .. } => {
            resp.insert_header((
                header::RETRY_AFTER,
                retry_after_secs(*retry_after).to_string(),
            ));
        }
        // RFC 6750 §3: no error code when no credentials came, else why they failed.
        Error::Unauthorized(_) => {
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"tranche\""));
        }
        Error::InvalidCredentials(_) => {
            resp.insert_header((
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"tranche\", error=\"invalid_token\"",
            ));
        }
        Error::BodyTimeout { .. } => {
            // The rest of a stalled body will not be read; the connection goes.
            resp.insert_header((header::CONNECTION, "close"));
        }
        _ => {}
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
