//! tus 1.0.0 (<https://tus.io/protocols/resumable-upload>), a second front
//! end over the same core as API v1: a tus upload is an upload like any
//! other (one record, one part file, one janitor; readable at
//! `/api/v1/uploads/{id}`, downloadable at `/api/v1/files/{id}`), written
//! in order at its offset ([`core::append`]). Extensions: creation,
//! creation-with-upload, creation-defer-length, expiration, checksum,
//! termination, concatenation.
//!
//! Errors are API v1's JSON (`http::error`), with tus's statuses: 409 for a
//! wrong offset, 423 while another request writes, 460 for a checksum
//! mismatch, 412 for an unsupported `Tus-Resumable`.

mod headers;

use actix_web::http::{header, Method};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use crate::context::AppContext;
use crate::core::{self, Append, Error};
use crate::guards::auth::Access;
use crate::guards::rate::Bucket;
use crate::http::error::ApiError;
use crate::http::extract::access;
use crate::http::{allowed_only, client_ip, forwarded};
use crate::upload::{Concat, Sequential, Status, UploadRecord};
use crate::wire::CreateRequest;
use headers::ConcatHeader;

const VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,expiration,checksum,termination,concatenation";
/// The media type of a body of bytes to write at an offset.
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// The tus routes under `scope` (`[tus] path` without its trailing slash).
pub fn configure(cfg: &mut web::ServiceConfig, scope: &str) {
    cfg.service(
        web::scope(scope)
            // On every answer, errors included (tus 1.0.0, "Tus-Resumable").
            .wrap(DefaultHeaders::new().add(("Tus-Resumable", VERSION)))
            .service(
                web::resource(["", "/"])
                    .route(web::method(Method::OPTIONS).to(options))
                    .route(web::post().to(create))
                    .default_service(allowed_only("OPTIONS, POST")),
            )
            .service(
                web::resource("/{id}")
                    .route(web::method(Method::OPTIONS).to(options))
                    .route(web::head().to(head))
                    .route(web::method(Method::PATCH).to(patch))
                    .route(web::delete().to(terminate))
                    .route(web::post().to(overridden))
                    .default_service(allowed_only("OPTIONS, HEAD, PATCH, DELETE")),
            )
            .default_service(web::to(crate::http::not_found)),
    );
}

/// What the server supports; needs neither `Tus-Resumable` nor credentials.
async fn options(ctx: web::Data<AppContext>) -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header(("Tus-Version", VERSION))
        .insert_header(("Tus-Extension", EXTENSIONS))
        .insert_header(("Tus-Max-Size", ctx.settings.max_file_size.0.to_string()))
        .insert_header(("Tus-Checksum-Algorithm", headers::algorithms()))
        .finish()
}

/// Every request but OPTIONS names the protocol version it speaks.
fn check_version(req: &HttpRequest) -> Result<(), ApiError> {
    match req.headers().get("Tus-Resumable") {
        Some(v) if v.as_bytes() == VERSION.as_bytes() => Ok(()),
        _ => Err(ApiError::TusVersion),
    }
}

/// A POST standing in for another method (`X-HTTP-Method-Override`), for
/// clients behind proxies that only pass GET and POST.
async fn overridden(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let method = headers::text(&req, "X-HTTP-Method-Override")?.unwrap_or("POST");
    match method.to_ascii_uppercase().as_str() {
        "PATCH" => patch(ctx, req, path, body).await,
        "DELETE" => terminate(ctx, req, path).await,
        "HEAD" => head(ctx, req, path).await,
        _ => Err(ApiError::MethodNotAllowed {
            method: method.to_owned(),
            allow: "OPTIONS, HEAD, PATCH, DELETE",
        }),
    }
}

/// Creation (with an upload, a deferred length, or a concatenation).
async fn create(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    check_version(&req)?;
    let access = access(&req)?;
    access.require_credentials()?;
    ctx.rate_limiter
        .check(Bucket::Create, &access.bucket(client_ip(&req)))
        .await?;
    let concat = headers::text(&req, "Upload-Concat")?
        .map(headers::concat)
        .transpose()?;
    let length = headers::number(&req, "Upload-Length")?;
    let deferred = match headers::text(&req, "Upload-Defer-Length")? {
        None => false,
        Some("1") => true,
        Some(_) => return Err(ApiError::invalid("Upload-Defer-Length must be 1")),
    };
    let raw_metadata = headers::text(&req, "Upload-Metadata")?.map(str::to_owned);
    let (mut request, content_type) = create_request(raw_metadata.as_deref())?;
    let sequential = Sequential {
        raw_metadata,
        creator: access.create_token_id().map(str::to_owned),
        ..Sequential::default()
    };
    let limit = core::UseLimit::of(&access);
    let max_retention = access.max_retention();
    let caller = core::Caller::of(&access, &ctx.settings);
    if let Some(ConcatHeader::Final(urls)) = concat {
        let parts = urls
            .iter()
            .map(|url| headers::upload_of(url, ctx.settings.tus.scope()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut size = 0u64;
        for &part in &parts {
            let rec = core::status(&ctx, part).await?;
            let creator = rec.sequential.as_ref().and_then(|s| s.creator.as_deref());
            access.may_use_sequential(part, creator)?;
            size = size.saturating_add(rec.size);
        }
        access.may_create(size, &content_type)?;
        let sequential = Sequential {
            raw_concat: headers::text(&req, "Upload-Concat")?.map(str::to_owned),
            ..sequential
        };
        let rec = core::concatenate(
            &ctx,
            parts,
            request,
            sequential,
            limit.as_ref(),
            max_retention,
            &caller,
        )
        .await?;
        return Ok(created(&ctx, &req, &rec).finish());
    }
    let sequential = Sequential {
        length_deferred: deferred,
        concat: (concat == Some(ConcatHeader::Partial)).then_some(Concat::Partial),
        // A token's size limit, checked now for a known length, must hold
        // for one learnt later.
        length_cap: access.max_size().filter(|_| deferred),
        ..sequential
    };
    match (length, deferred) {
        (Some(length), false) => request.size = length,
        (None, true) => {}
        (Some(_), true) => {
            return Err(ApiError::invalid(
                "send Upload-Length or Upload-Defer-Length: 1, not both",
            ))
        }
        (None, false) => {
            return Err(ApiError::invalid(
                "Upload-Length (or Upload-Defer-Length: 1) is required",
            ))
        }
    }
    access.may_create(request.size, &content_type)?;
    let rec = core::create_sequential(
        &ctx,
        request,
        sequential,
        limit.as_ref(),
        max_retention,
        &caller,
    )
    .await?;
    tracing::info!(upload_id = %rec.id, "tus upload created");
    // creation-with-upload: the first bytes may come with the create.
    let with_bytes = is_offset_stream(&req)?;
    if !with_bytes {
        let rec = core::settle(&ctx, rec).await?;
        return Ok(created(&ctx, &req, &rec).finish());
    }
    let rec = write(&ctx, &req, rec.id, 0, body).await?;
    Ok(created(&ctx, &req, &rec)
        .insert_header(("Upload-Offset", offset(&rec).to_string()))
        .finish())
}

/// The create request a tus creation amounts to: its metadata's file name
/// and type (under Uppy's and the clients' keys) and the other keys as
/// metadata. Returns it with the content type, for the caller's rights.
fn create_request(raw: Option<&str>) -> Result<(CreateRequest, String), ApiError> {
    let pairs = raw.map(headers::metadata).transpose()?.unwrap_or_default();
    let mut filename = None;
    let mut content_type = None;
    let mut sha256 = None;
    let mut metadata = serde_json::Map::new();
    for (key, value) in pairs {
        let value = String::from_utf8_lossy(&value).into_owned();
        match key.as_str() {
            "filename" | "name" if filename.is_none() => filename = Some(value),
            "filetype" | "type" if content_type.is_none() => content_type = Some(value),
            // The whole file's SHA-256, checked at completion as API v1's is.
            "sha256" => sha256 = Some(value),
            _ => {
                metadata.insert(key, serde_json::Value::String(value));
            }
        }
    }
    // A tus client cannot be asked to fix a type it took from the browser:
    // one that is not a media type is kept in the metadata, not refused.
    let content_type = match content_type {
        Some(ct) if ct.parse::<mime::Mime>().is_ok() => ct,
        Some(ct) => {
            metadata.insert("filetype".into(), serde_json::Value::String(ct));
            "application/octet-stream".into()
        }
        None => "application/octet-stream".into(),
    };
    let request = CreateRequest {
        filename: filename
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| "upload".into()),
        size: 0,
        content_type: Some(content_type.clone()),
        sha256,
        chunk_size: None,
        metadata: Some(metadata),
        retention: None,
        retention_after_download: None,
    };
    Ok((request, content_type))
}

/// The 201 of a creation: where the upload lives, and until when.
fn created(
    ctx: &AppContext,
    req: &HttpRequest,
    rec: &UploadRecord,
) -> actix_web::HttpResponseBuilder {
    let origin = forwarded::external_origin(req, &ctx.settings);
    let location = format!("{}/{}", ctx.settings.tus.scope(), rec.id);
    let mut resp = HttpResponse::Created();
    resp.insert_header((
        header::LOCATION,
        forwarded::absolute(origin.as_deref(), &location),
    ));
    expires(&mut resp, rec);
    resp
}

/// Where an upload stands.
async fn head(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    check_version(&req)?;
    let (id, rec) = authorized(&ctx, &req, &path).await?;
    let mut resp = HttpResponse::Ok();
    resp.insert_header((header::CACHE_CONTROL, "no-store"));
    let seq = rec.sequential.as_ref();
    if seq.is_some_and(|s| s.length_deferred) {
        resp.insert_header(("Upload-Defer-Length", "1"));
    } else {
        resp.insert_header(("Upload-Length", rec.size.to_string()));
    }
    resp.insert_header(("Upload-Offset", offset(&rec).to_string()));
    if let Some(raw) = seq.and_then(|s| s.raw_metadata.as_deref()) {
        resp.insert_header(("Upload-Metadata", raw));
    }
    match seq.and_then(|s| s.concat.as_ref()) {
        Some(Concat::Partial) => {
            resp.insert_header(("Upload-Concat", "partial"));
        }
        Some(Concat::Final(parts)) => {
            // As the client sent it (the spec's "value as received").
            let value = seq.and_then(|s| s.raw_concat.clone()).unwrap_or_else(|| {
                let scope = ctx.settings.tus.scope();
                let urls: Vec<String> = parts.iter().map(|p| format!("{scope}/{p}")).collect();
                format!("final;{}", urls.join(" "))
            });
            resp.insert_header(("Upload-Concat", value));
        }
        None => {}
    }
    expires(&mut resp, &rec);
    tracing::debug!(upload_id = %id, "tus head");
    Ok(resp.finish())
}

/// Bytes at the upload's offset.
async fn patch(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    check_version(&req)?;
    if !is_offset_stream(&req)? {
        return Err(Error::UnsupportedContentType {
            content_type: headers::text(&req, "Content-Type")?
                .unwrap_or_default()
                .chars()
                .take(100)
                .collect(),
            allowed: OFFSET_OCTET_STREAM.into(),
        }
        .into());
    }
    let (id, _) = authorized(&ctx, &req, &path).await?;
    let at = headers::number(&req, "Upload-Offset")?
        .ok_or_else(|| ApiError::invalid("Upload-Offset is required"))?;
    let rec = write(&ctx, &req, id, at, body).await?;
    let mut resp = HttpResponse::NoContent();
    resp.insert_header(("Upload-Offset", offset(&rec).to_string()));
    expires(&mut resp, &rec);
    Ok(resp.finish())
}

/// The write of a PATCH (or of a creation with an upload) at `at`.
async fn write(
    ctx: &AppContext,
    req: &HttpRequest,
    id: Uuid,
    at: u64,
    body: web::Payload,
) -> Result<UploadRecord, ApiError> {
    let access = access(req)?;
    ctx.rate_limiter
        .check(Bucket::Chunk, &access.bucket(client_ip(req)))
        .await?;
    let _slot = ctx.chunk_slots.try_take(id)?;
    let checksum = headers::text(req, "Upload-Checksum")?
        .map(headers::checksum)
        .transpose()?;
    let content_length = match headers::number(req, "Content-Length")? {
        // HTTP/1.1 without a length or a chunked coding: no body at all.
        None if req.version() < actix_web::http::Version::HTTP_2
            && !req.headers().contains_key(header::TRANSFER_ENCODING) =>
        {
            Some(0)
        }
        other => other,
    };
    let append = Append {
        offset: at,
        content_length,
        length: headers::number(req, "Upload-Length")?,
        checksum,
    };
    if let (Some(length), Access::Create { .. }) = (append.length, &access) {
        // A deferred length is held to the token's size limit once known.
        access.may_create(length, "application/octet-stream")?;
    }
    let started = std::time::Instant::now();
    let in_flight = ctx.metrics.chunk_in_flight();
    let rec = core::append(ctx, id, append, body).await;
    drop(in_flight);
    ctx.metrics
        .chunk_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(rec?)
}

/// Termination: an unfinished upload is aborted (later requests get 410),
/// a completed one's file deleted (404 afterwards).
async fn terminate(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    check_version(&req)?;
    let (id, rec) = authorized(&ctx, &req, &path).await?;
    if rec.status == Status::Completed {
        let creator = rec.sequential.as_ref().and_then(|s| s.creator.as_deref());
        ctx.auth
            .may_delete_sequential_file(&access(&req)?, id, creator)?;
        core::delete_file(&ctx, id).await?;
    } else {
        core::abort(&ctx, id).await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// The upload a request names, if the caller may use it: credentials first,
/// then the id (not one: 404), then the record and the caller's rights on it.
async fn authorized(
    ctx: &AppContext,
    req: &HttpRequest,
    path: &str,
) -> Result<(Uuid, UploadRecord), ApiError> {
    let access = access(req)?;
    access.require_credentials()?;
    let id = Uuid::try_parse(path)
        .map_err(|_| Error::UploadNotFound(path.chars().take(64).collect()))?;
    let rec = core::status(ctx, id).await?;
    let creator = rec.sequential.as_ref().and_then(|s| s.creator.as_deref());
    access.may_use_sequential(id, creator)?;
    Ok((id, rec))
}

fn is_offset_stream(req: &HttpRequest) -> Result<bool, ApiError> {
    Ok(headers::text(req, "Content-Type")?.is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
    }))
}

/// The offset tus reports: every byte, once the upload is whole.
fn offset(rec: &UploadRecord) -> u64 {
    match rec.status {
        Status::Assembling | Status::Completed => rec.size,
        _ => rec.received_offset(),
    }
}

/// `Upload-Expires` (expiration extension), while the upload is unfinished.
fn expires(resp: &mut actix_web::HttpResponseBuilder, rec: &UploadRecord) {
    if rec.status == Status::Uploading {
        let at =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(rec.expires_at.max(0) as u64);
        resp.insert_header(("Upload-Expires", httpdate::fmt_http_date(at)));
    }
}
