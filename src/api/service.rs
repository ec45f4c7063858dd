//! `/healthz`, `/readyz`, `/metrics`: for load balancers and monitoring.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::context::AppContext;
use crate::store::StateStore;

/// Below this much free space the node reports itself not ready.
const MIN_FREE_BYTES: u64 = 64 << 20;

/// The process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
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
    let free = ctx.storage.available_space().unwrap_or(0);
    if free < MIN_FREE_BYTES {
        problems.push(format!("only {free} bytes free in the data directory"));
    }
    let checks = json!({"store": store, "data_dir": writable, "free_bytes": free});
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

pub async fn metrics(ctx: web::Data<AppContext>) -> HttpResponse {
    if let Ok(free) = ctx.storage.available_space() {
        ctx.metrics.free_disk_bytes.set(free as i64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(ctx.metrics.render())
}
