//! `/api/v1/uploads...`: create, status, chunks, complete, abort, and the
//! processing reports of workers.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use tracing_actix_web::RootSpan;
use uuid::Uuid;

use crate::context::AppContext;
use crate::core::{self, Completion, DigestCheck, Error};
use crate::guards::auth::Access;
use crate::guards::rate::Bucket;
use crate::http::error::ApiError;
use crate::http::extract::{parse_index, UploadId};
use crate::http::{client_ip, forwarded};
use crate::upload::UploadRecord;
use crate::wire::{CreateRequest, ProcessingReport, UploadView};

#[tracing::instrument(skip_all, fields(upload_id))]
pub async fn create(
    ctx: web::Data<AppContext>,
    access: Access,
    root: RootSpan,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Credentials before anything of the request is looked at: an anonymous
    // caller learns nothing from a validation error.
    access.require_credentials()?;
    let (body, ignored) =
        read_json::<CreateRequest>(&req, body, ctx.settings.limits.max_json_bytes.0).await?;
    let caller = access.bucket(client_ip(&req));
    ctx.rate_limiter.check(Bucket::Create, &caller).await?;
    let content_type = match body.content_type.as_deref() {
        None | Some("") => "application/octet-stream",
        Some(ct) => ct,
    };
    access.may_create(body.size, content_type)?;
    let scope = ctx.auth.enabled().then_some(caller.as_str());
    let idempotency_key = core::idempotency_key(single_header(&req, "idempotency-key")?, scope)?;
    let limit = core::UseLimit::of(&access);
    let caller = core::Caller::of(&access, &ctx.settings);
    let mut answer = core::create_as(
        &ctx,
        body,
        idempotency_key,
        limit.as_ref(),
        access.max_retention(),
        &caller,
    )
    .await?;
    if let Some(file) = answer.file.as_mut() {
        // Answered from a stored file (dedup): completed already.
        file.url = file_url(&req, &ctx, file.id);
    }
    answer.upload_token = ctx.auth.upload_token(answer.id, &access)?;
    // Accepted for forward compatibility, but a typo (`sha_256`) must not
    // quietly turn a check off: say what was not understood.
    answer.warnings = unknown_fields(&ignored);
    let id = answer.id.to_string();
    tracing::Span::current().record("upload_id", id.as_str());
    root.record("upload_id", id.as_str());
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, upload_location(&req, &ctx, &id)))
        .json(answer))
}

/// What an answer's `warnings` say of fields the server did not know.
fn unknown_fields(ignored: &[String]) -> Vec<String> {
    ignored
        .iter()
        .map(|field| format!("unknown field {field:?} was ignored"))
        .collect()
}

/// Reads a request's JSON body (no `Content-Type`, `application/json` or
/// any `+json` type) of at most `limit` bytes. Returns it with the names of
/// the fields it carried that this server does not know.
async fn read_json<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: u64,
) -> Result<(T, Vec<String>), ApiError> {
    use futures::StreamExt;
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let is_json = ct
            .to_str()
            .ok()
            .and_then(|ct| ct.parse::<mime::Mime>().ok())
            .is_some_and(|m| {
                m.type_() == mime::APPLICATION
                    && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
            });
        if !is_json {
            return Err(ApiError::from(Error::UnsupportedContentType {
                content_type: String::from_utf8_lossy(ct.as_bytes())
                    .chars()
                    .take(100)
                    .collect(),
                allowed: "application/json (with curl: -H 'Content-Type: application/json')".into(),
            }));
        }
    }
    let too_large = || ApiError::invalid(format!("JSON body larger than {limit} bytes"));
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(piece) = payload.next().await {
        let piece = piece.map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
        if (body.len() + piece.len()) as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&piece);
    }
    let mut ignored = Vec::new();
    let invalid = |e: serde_json::Error| ApiError::invalid(format!("invalid JSON body: {e}"));
    let mut json = serde_json::Deserializer::from_slice(&body);
    let parsed = serde_ignored::deserialize(&mut json, |path| ignored.push(path.to_string()))
        .map_err(invalid)?;
    // One JSON document and nothing after it, as `serde_json::from_slice`
    // (and so `web::Json`) insists: trailing bytes are a malformed body.
    json.end().map_err(invalid)?;
    Ok((parsed, ignored))
}

#[tracing::instrument(skip_all, fields(upload_id = %id))]
pub async fn status(
    ctx: web::Data<AppContext>,
    id: UploadId,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let rec = core::status(&ctx, *id).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view(&rec, &req, &ctx)))
}

#[tracing::instrument(skip_all, fields(upload_id = %id, chunk = %path.1))]
pub async fn put_chunk(
    ctx: web::Data<AppContext>,
    access: Access,
    id: UploadId,
    root: RootSpan,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let index = parse_index(&path.1)?;
    root.record("chunk", index);
    ctx.rate_limiter
        .check(Bucket::Chunk, &access.bucket(client_ip(&req)))
        .await?;
    let _slot = ctx.chunk_slots.try_take(*id)?;
    let content_length = match req.headers().get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::invalid("Content-Length is not a number"))?,
        ),
    };
    let digest = match header_str(&req, "content-digest")? {
        Some(h) => parse_content_digest(&h)?,
        None => DigestCheck::default(),
    };
    let in_flight = ctx.metrics.chunk_in_flight();
    let result = core::put_chunk(&ctx, *id, index, content_length, digest, body).await;
    drop(in_flight);
    ctx.metrics
        .chunk_duration
        .observe(started.elapsed().as_secs_f64());
    let answer = result?;
    root.record("bytes", answer.size);
    Ok(HttpResponse::Ok().json(answer))
}

#[tracing::instrument(skip_all, fields(upload_id = %id))]
pub async fn complete(
    ctx: web::Data<AppContext>,
    id: UploadId,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    Ok(match core::complete(&ctx, *id).await? {
        Completion::Completed(rec) => HttpResponse::Ok().json(view(&rec, &req, &ctx)),
        Completion::Assembling(rec) => HttpResponse::Accepted()
            .insert_header((header::LOCATION, upload_location(&req, &ctx, &*id)))
            .insert_header((header::RETRY_AFTER, "1"))
            .json(view(&rec, &req, &ctx)),
    })
}

/// `PUT /api/v1/uploads/{id}/processing`: a worker (API key) reports on
/// the completed file; answers the upload object with the report.
#[tracing::instrument(skip_all, fields(upload_id = %id))]
pub async fn report_processing(
    ctx: web::Data<AppContext>,
    access: Access,
    id: UploadId,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Clients watch processing; only the application's workers report it.
    ctx.auth.may_administer(&access)?;
    let (report, ignored) =
        read_json::<ProcessingReport>(&req, body, ctx.settings.limits.max_json_bytes.0).await?;
    let rec = core::report_processing(&ctx, *id, report).await?;
    let mut answer = view(&rec, &req, &ctx);
    answer.warnings = unknown_fields(&ignored);
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(answer))
}

#[tracing::instrument(skip_all, fields(upload_id = %id))]
pub async fn abort(ctx: web::Data<AppContext>, id: UploadId) -> Result<HttpResponse, ApiError> {
    core::abort(&ctx, *id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The upload's URL: absolute when the client's origin is known (`public_url`,
/// or a trusted proxy's forwarded headers), else relative.
fn upload_location(req: &HttpRequest, ctx: &AppContext, id: &dyn std::fmt::Display) -> String {
    let origin = forwarded::external_origin(req, &ctx.settings);
    forwarded::absolute(origin.as_deref(), &format!("/api/v1/uploads/{id}"))
}

/// A completed file's URL: absolute when the client's origin is known.
fn file_url(req: &HttpRequest, ctx: &AppContext, id: Uuid) -> String {
    let origin = forwarded::external_origin(req, &ctx.settings);
    file_url_at(origin.as_deref(), id)
}

fn file_url_at(origin: Option<&str>, id: Uuid) -> String {
    forwarded::absolute(origin, &format!("/api/v1/files/{id}"))
}

/// The upload object, with `file.url` absolute when the client's origin is
/// known (`public_url`, or a trusted proxy's forwarded headers).
fn view(rec: &UploadRecord, req: &HttpRequest, ctx: &AppContext) -> UploadView {
    let origin = forwarded::external_origin(req, &ctx.settings);
    view_at(rec, origin.as_deref())
}

/// The upload object for a client at `origin` (see [`view`]).
pub(super) fn view_at(rec: &UploadRecord, origin: Option<&str>) -> UploadView {
    UploadView::of(rec, |id| file_url_at(origin, id))
}

/// A header as text; a header that is not visible ASCII is a client error.
/// A header that names one value (not a list): sent twice is a mistake.
fn single_header(req: &HttpRequest, name: &str) -> Result<Option<String>, ApiError> {
    if req.headers().get_all(name).nth(1).is_some() {
        return Err(ApiError::invalid(format!(
            "send {name} once; it names a single value"
        )));
    }
    header_str(req, name)
}

pub fn header_str(req: &HttpRequest, name: &str) -> Result<Option<String>, ApiError> {
    let mut lines = Vec::new();
    for v in req.headers().get_all(name) {
        let line = v
            .to_str()
            .map_err(|_| ApiError::invalid(format!("header {name} is not valid ASCII")))?;
        lines.push(line.trim());
    }
    // A header sent on several lines is one comma-separated list (RFC 9110 §5.3).
    Ok((!lines.is_empty()).then(|| lines.join(", ")))
}

/// Parses an RFC 9530 `Content-Digest` header. Only `sha-256` is checked;
/// other algorithms are ignored, as RFC 9530 allows. As in any RFC 8941
/// dictionary, a member named twice counts with its last value. A malformed
/// `sha-256` member is an error.
pub fn parse_content_digest(header: &str) -> Result<DigestCheck, Error> {
    use base64::Engine;
    let bad = || {
        Error::InvalidRequest("Content-Digest must look like sha-256=:<base64 of 32 bytes>:".into())
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
