//! `/api/v1/files/{id}`: downloads of completed files, with Range support.

use actix_files::NamedFile;
use actix_web::http::header::{
    self, Charset, ContentDisposition, DispositionParam, DispositionType, ExtendedValue,
    HeaderValue,
};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;

use tracing_actix_web::RootSpan;

use crate::auth::Access;
use crate::context::AppContext;
use crate::error::ApiError;
use crate::uploads;

#[tracing::instrument(skip_all, fields(upload_id = %path))]
pub async fn download(
    ctx: web::Data<AppContext>,
    access: Access,
    root: RootSpan,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = uploads::parse_id(&path)?;
    root.record("upload_id", tracing::field::display(id));
    ctx.auth.may_download(&access, id)?;
    let (rec, file_path) = uploads::completed_file(&ctx, id).await?;
    let file = NamedFile::open_async(&file_path)
        .await
        .map_err(|_| ApiError::FileNotFound(id.to_string()))?;
    let content_type = rec
        .content_type
        .parse()
        .unwrap_or(mime::APPLICATION_OCTET_STREAM);
    let mut resp = file
        .set_content_type(content_type)
        .set_content_disposition(content_disposition(&rec.filename))
        .into_response(&req);
    if let Some(file) = &rec.file {
        // RFC 9530 Repr-Digest, plus the older RFC 3230 Digest that some clients read.
        if let Ok(raw) = hex::decode(&file.sha256) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
            let headers = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("sha-256=:{b64}:")) {
                headers.insert(header::HeaderName::from_static("repr-digest"), v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("sha-256={b64}")) {
                headers.insert(header::HeaderName::from_static("digest"), v);
            }
        }
    }
    Ok(resp)
}

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<name>`, with
/// path separators and control characters replaced so that no client can be
/// led to write outside its download folder.
pub fn content_disposition(filename: &str) -> ContentDisposition {
    let safe: String = filename
        .chars()
        .map(|c| {
            if c.is_control() || c == '/' || c == '\\' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let ascii: String = safe
        .chars()
        .map(|c| if c.is_ascii() && c != '"' { c } else { '_' })
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
