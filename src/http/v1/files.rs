//! `/api/v1/files/{id}`: downloads of completed files, and their deletion. [`conditional`]
//! decides between 200, 206, 304, 412 and 416; this handler reads the file and
//! writes the answer, streaming the bytes so that memory stays bounded.

use actix_web::body::SizedStream;
use actix_web::http::header::{
    self, Charset, ContentDisposition, DispositionParam, DispositionType, EntityTag, ExtendedValue,
    HeaderValue,
};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use base64::Engine;
use bytes::Bytes;

use crate::context::AppContext;
use crate::core;
use crate::http::conditional::{self, Answer, Validators};
use crate::http::error::ApiError;
use crate::http::extract::UploadId;
use crate::upload::UploadRecord;

#[tracing::instrument(skip_all, fields(upload_id = %id))]
pub async fn download(
    ctx: web::Data<AppContext>,
    id: UploadId,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = *id;
    let (rec, meta) = core::completed_file(&ctx, id).await?;
    let modified = meta.modified.and_then(conditional::http_time);
    let validators = Validators {
        len: meta.len,
        etag: etag(&rec, meta.len, modified),
        last_modified: modified,
    };
    let private = ctx.auth.downloads_are_private();
    let len = validators.len;

    let (mut resp, start, count) =
        match conditional::decide(req.method(), req.headers(), &validators) {
            Answer::PreconditionFailed => return Err(ApiError::PreconditionFailed),
            Answer::RangeNotSatisfiable => return Err(ApiError::RangeNotSatisfiable { size: len }),
            Answer::NotModified => {
                // RFC 9110 §15.4.5: a 304 carries the validators and caching
                // headers a 200 would, and nothing about the content.
                let mut resp = HttpResponse::NotModified();
                validator_headers(&mut resp, &validators, private);
                return Ok(resp.finish());
            }
            Answer::Full => (HttpResponse::Ok(), 0, len),
            Answer::Partial { start, end } => {
                let mut resp = HttpResponse::PartialContent();
                resp.insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")));
                (resp, start, end - start + 1)
            }
        };
    validator_headers(&mut resp, &validators, private);
    // Exactly as declared at create (no charset added): a wrong charset
    // garbles text. Create only accepts valid media types, so the fallback
    // is for records from before that check.
    resp.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_str(&rec.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    ));
    resp.insert_header(content_disposition(&rec.filename));
    // The type is the uploader's word, served from tranche's own origin: a
    // browser must not guess a more dangerous one (say HTML) from the bytes.
    resp.insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    digest_headers(&mut resp, &rec);

    if req.method() == actix_web::http::Method::HEAD {
        // The length a GET would send, but no read of the file: actix would
        // read a real body to the end only to throw it away.
        let nothing = futures::stream::empty::<Result<Bytes, std::io::Error>>();
        return Ok(resp.body(SizedStream::new(count, nothing)));
    }
    let whole = start == 0 && count == len && req.headers().get(header::RANGE).is_none();
    let body = if rec.delete_after_download && whole {
        // Handed over in full, the file has served its purpose.
        core::read_file_then_delete(&ctx, id, len).await?
    } else {
        core::read_file(&ctx, id, start, count).await?
    };
    Ok(resp.body(SizedStream::new(count, body)))
}

/// `DELETE /api/v1/files/{id}`: the file's bytes and record go at once;
/// 204, also when it was gone already.
#[tracing::instrument(skip_all, fields(upload_id = %id))]
pub async fn delete(ctx: web::Data<AppContext>, id: UploadId) -> Result<HttpResponse, ApiError> {
    core::delete_file(&ctx, *id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A strong tag from the file's SHA-256: it changes exactly when the bytes
/// do, and is the same on every instance serving the same data directory
/// (an mtime or inode based tag is neither). Records without a file digest
/// fall back to length and modification time.
fn etag(rec: &UploadRecord, len: u64, modified: Option<std::time::SystemTime>) -> EntityTag {
    match &rec.file {
        Some(file) => EntityTag::new_strong(file.sha256.clone()),
        None => {
            let secs = modified
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            EntityTag::new_strong(format!("{len:x}-{secs:x}"))
        }
    }
}

/// ETag, Last-Modified, Accept-Ranges and Cache-Control: what 200, 206 and
/// 304 answers share.
fn validator_headers(resp: &mut HttpResponseBuilder, v: &Validators, private: bool) {
    resp.insert_header(header::ETag(v.etag.clone()));
    if let Some(modified) = v.last_modified {
        resp.insert_header(header::LastModified(modified.into()));
    }
    resp.insert_header((header::ACCEPT_RANGES, "bytes"));
    if private {
        // Fetched with credentials: no shared cache may hand it to others.
        resp.insert_header((header::CACHE_CONTROL, "private"));
    }
}

/// RFC 9530 Repr-Digest, plus the older RFC 3230 Digest that some clients
/// read. Both describe the whole file, so they are right on a 206 too.
fn digest_headers(resp: &mut HttpResponseBuilder, rec: &UploadRecord) {
    let Some(raw) = rec.file.as_ref().and_then(|f| hex::decode(&f.sha256).ok()) else {
        return;
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    resp.insert_header(("repr-digest", format!("sha-256=:{b64}:")));
    resp.insert_header(("digest", format!("sha-256={b64}")));
}

/// Unicode's explicit directional formatting characters (and marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<name>`,
/// made safe as RFC 6266 Appendix D advises: path separators and control
/// characters become `_`, so that no client can be led to write outside its
/// download folder; a name of dots alone (`.`, `..`) becomes underscores;
/// bidi controls, which can make `evil\u{202e}gpj.exe` read as `evilexe.jpg`,
/// are dropped; and the ASCII fallback has no `%`, which some clients would
/// decode.
pub fn content_disposition(filename: &str) -> ContentDisposition {
    let mut safe: String = filename
        .chars()
        .filter(|c| !is_bidi_control(*c))
        .map(|c| {
            if c.is_control() || c == '/' || c == '\\' {
                '_'
            } else {
                c
            }
        })
        .collect();
    if safe.chars().all(|c| c == '.') {
        safe = "_".repeat(safe.len().max(1));
    }
    let ascii: String = safe
        .chars()
        .map(|c| {
            if c.is_ascii() && c != '"' && c != '%' {
                c
            } else {
                '_'
            }
        })
        .collect();
    ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters: vec![
            DispositionParam::Filename(ascii),
            DispositionParam::FilenameExt(ExtendedValue {
                charset: Charset::Ext("UTF-8".into()),
                language_tag: None,
                value: safe.into_bytes(),
            }),
        ],
    }
}
