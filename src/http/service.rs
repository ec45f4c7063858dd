//! `/healthz`, `/readyz`, `/metrics`: for load balancers and monitoring; and
//! `GET /api/v1`, the service document clients read before they start, and
//! `GET /api/v1/openapi.json`, the API's OpenAPI document.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::blobs::ByteStore;
use crate::context::AppContext;
use crate::guards::auth::Access;
use crate::http::error::ApiError;
use crate::state::{StateStore, Store};

/// Below this much free space (or `limits.reserve_free_bytes`, if more) the
/// node reports itself not ready.
const MIN_FREE_BYTES: u64 = 64 << 20;

/// The process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /api/v1`: what this server is and what it takes, for clients to
/// check before they hash or send anything (the CLI's first request, the
/// page's limits). Open, like `/healthz`; a credential sent along is checked
/// (an invalid one gets the usual 401), and `auth.credential` says what it is.
pub async fn document(ctx: web::Data<AppContext>, access: Access) -> HttpResponse {
    let s = &ctx.settings;
    let credential = match access {
        Access::Open => "not_needed",
        Access::Anonymous => "none",
        Access::Admin { .. } => "api_key",
        Access::Upload { .. } => "upload_token",
        Access::Create { .. } => "create_token",
    };
    HttpResponse::Ok().json(json!({
        "service": "tranche",
        "api": "v1",
        "version": env!("CARGO_PKG_VERSION"),
        "limits": {
            "chunk_size": s.chunk_size.0,
            "min_chunk_size": s.min_chunk_size.0,
            "max_chunk_size": s.max_chunk_size.0,
            "max_chunk_count": crate::config::MAX_CHUNKS,
            "max_file_size": s.max_file_size.0,
        },
        "auth": { "required": ctx.auth.enabled(), "credential": credential },
    }))
}

/// `GET /api/v1/openapi.json`: the OpenAPI document of API v1. Open, like
/// the service document, whatever credentials come along: it describes the
/// API, not anyone's data.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(mime::APPLICATION_JSON)
        .body(crate::openapi::json())
}

/// Ready to take uploads: the state store answers, the data directory takes
/// writes and has free space.
pub async fn readyz(ctx: web::Data<AppContext>) -> HttpResponse {
    let mut problems = Vec::new();
    let store = match ctx.store.ping().await {
        Ok(()) => "ok".to_string(),
        Err(e) => {
            problems.push(format!("state store: {e}"));
            "unavailable".to_string()
        }
    };
    let writable = match ctx.storage.check_writable().await {
        Ok(()) => "ok".to_string(),
        Err(e) => {
            problems.push(format!("data directory not writable: {e}"));
            "not_writable".to_string()
        }
    };
    let free = ctx.storage.free_space().unwrap_or(0);
    let min_free = MIN_FREE_BYTES.max(ctx.disk_guard.reserve());
    if free < min_free {
        problems.push(format!(
            "low disk: only {free} bytes free in the data directory (needs {min_free})"
        ));
    }
    let mut checks = json!({"store": store, "data_dir": writable, "free_bytes": free});
    if let Store::Embedded(embedded) = &ctx.store {
        let health = embedded.health();
        checks["store_reopens"] = health.reopened.into();
        if !health.open {
            problems.push(
                "state store: the database could not be opened again after an I/O error yet; \
                 writes wait for it (free disk space, then it opens by itself)"
                    .into(),
            );
        }
    }
    if ctx.disk_guard.state_reserve_released().await {
        checks["state_reserve"] = "released".into();
        problems.push(
            "the disk filled: the state reserve is given up so that admitted uploads can finish; \
             new uploads are refused until there is room for it again"
                .into(),
        );
    }
    if problems.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ready", "checks": checks}))
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(json!({
                "error": "not_ready",
                "message": problems.join("; "),
                "checks": checks,
            }))
    }
}

pub async fn metrics(ctx: web::Data<AppContext>, access: Access) -> Result<HttpResponse, ApiError> {
    ctx.auth.may_read_metrics(&access)?;
    if let Ok(free) = ctx.storage.free_space() {
        ctx.metrics.free_disk_bytes.set(free as i64);
    }
    if let Store::Embedded(embedded) = &ctx.store {
        ctx.metrics
            .store_reopens
            .set(embedded.health().reopened as i64);
    }
    ctx.metrics
        .state_reserve_released
        .set(i64::from(ctx.disk_guard.state_reserve_released().await));
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(ctx.metrics.render()))
}
