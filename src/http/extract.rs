//! What handlers take from a request before they run: the caller's rights
//! ([`Access`]) and the upload named by the path ([`UploadId`]). Credentials
//! come first: an anonymous caller gets 401 before anything of its request,
//! the path included, is validated.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use tracing_actix_web::RootSpan;
use uuid::Uuid;

use crate::context::AppContext;
use crate::core::Error;
use crate::guards::auth::Access;
use crate::http::error::ApiError;

impl FromRequest for Access {
    type Error = ApiError;
    type Future = Ready<Result<Access, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(access(req).map_err(ApiError::from))
    }
}

/// The caller's rights, worked out once per request: a handler taking both
/// [`Access`] and [`UploadId`] asks twice, and a token's signature is worth
/// checking once.
pub fn access(req: &HttpRequest) -> Result<Access, Error> {
    if let Some(access) = req.extensions().get::<Access>() {
        return Ok(access.clone());
    }
    let access = authenticate(req)?;
    req.extensions_mut().insert(access.clone());
    Ok(access)
}

fn authenticate(req: &HttpRequest) -> Result<Access, Error> {
    let Some(ctx) = req.app_data::<web::Data<AppContext>>() else {
        return Ok(Access::Open);
    };
    let header = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            Error::InvalidCredentials("the Authorization header is not valid ASCII".into())
        })?),
    };
    if header.is_none() {
        if let Some(token) = download_link_token(req) {
            return ctx.auth.authenticate_link(&token);
        }
    }
    ctx.auth.authenticate(header)
}

/// Was the request routed to `/api/v1/files/{id}`? Asked of the route that
/// matched, not of the raw path: a percent-encoded path (`/api/v1/%66iles/…`)
/// is routed by its decoded form and must get that route's rules.
fn is_file_route(req: &HttpRequest) -> bool {
    req.match_pattern().as_deref() == Some("/api/v1/files/{id}")
}

/// Was the request routed to `/api/v1/uploads/{id}/events` (the SSE stream)?
fn is_events_route(req: &HttpRequest) -> bool {
    req.match_pattern().as_deref() == Some("/api/v1/uploads/{id}/events")
}

/// A download link (`GET /api/v1/files/{id}?access_token=...`, RFC 6750 §2.3)
/// may carry its upload's token, since a browser following a link sends no
/// header: the self-hosted presigned GET URL. So may the SSE stream's URL,
/// since a browser's `EventSource` cannot send headers either. Nowhere else:
/// a token in a URL ends up in logs and histories.
fn download_link_token(req: &HttpRequest) -> Option<String> {
    let link = (req.method() == Method::GET || req.method() == Method::HEAD) && is_file_route(req);
    let stream = req.method() == Method::GET && is_events_route(req);
    if !(link || stream) {
        return None;
    }
    let query =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()?;
    query.get("access_token").cloned()
}

/// The upload (or file) named by the path's `{id}`, once the caller has shown
/// credentials that may reach it: the preamble every upload handler shares.
/// The id is recorded on the request's spans, so every log line names it.
#[derive(Debug, Clone, Copy)]
pub struct UploadId(pub Uuid);

impl std::ops::Deref for UploadId {
    type Target = Uuid;

    fn deref(&self) -> &Uuid {
        &self.0
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl FromRequest for UploadId {
    type Error = ApiError;
    type Future = Ready<Result<UploadId, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        ready(upload_id(req, payload))
    }
}

/// What a request with an id in its path does, for the rule it answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// `GET`/`HEAD /api/v1/files/{id}`.
    Download,
    /// `DELETE /api/v1/files/{id}`.
    DeleteFile,
    /// Anything under `/api/v1/uploads/{id}`.
    Upload,
}

fn purpose(req: &HttpRequest) -> Purpose {
    if !is_file_route(req) {
        Purpose::Upload
    } else if req.method() == Method::GET || req.method() == Method::HEAD {
        Purpose::Download
    } else {
        Purpose::DeleteFile
    }
}

fn upload_id(req: &HttpRequest, payload: &mut Payload) -> Result<UploadId, ApiError> {
    let access = access(req)?;
    let purpose = purpose(req);
    let ctx = req.app_data::<web::Data<AppContext>>();
    match ctx {
        Some(ctx) if purpose == Purpose::Download => ctx.auth.may_try_download(&access)?,
        _ => access.require_credentials()?,
    }
    let raw = req.match_info().get("id").unwrap_or_default();
    let id = parse_id(raw)?;
    if let Ok(root) = RootSpan::from_request(req, payload).into_inner() {
        root.record("upload_id", tracing::field::display(id));
    }
    match (ctx, purpose) {
        (Some(ctx), Purpose::Download) => ctx.auth.may_download(&access, id)?,
        (Some(ctx), Purpose::DeleteFile) => ctx.auth.may_delete_file(&access, id)?,
        _ => access.may_use(id)?,
    }
    Ok(UploadId(id))
}

pub fn parse_id(raw: &str) -> Result<Uuid, Error> {
    // A UUID is 36 characters; anything far longer is not worth parsing.
    if raw.len() > 64 {
        return Err(Error::InvalidRequest(
            "upload id is too long to be valid".into(),
        ));
    }
    Uuid::try_parse(raw).map_err(|_| {
        Error::InvalidRequest(format!(
            "{:?} is not a valid id; ids are UUIDs as returned by POST /api/v1/uploads",
            raw.chars().take(64).collect::<String>()
        ))
    })
}

pub fn parse_index(raw: &str) -> Result<u64, Error> {
    raw.parse::<u64>().map_err(|_| {
        Error::InvalidRequest(format!("chunk index {raw:?} is not a non-negative integer"))
    })
}
