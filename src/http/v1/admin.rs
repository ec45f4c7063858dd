//! `/api/v1/admin/...`: the operator's endpoints, for an API key only (or
//! anyone with authentication off). `POST /api/v1/admin/scrub` runs the
//! integrity scrub in the server, which holds the state store: with the
//! embedded store no second process could open it.

use actix_web::{web, HttpResponse};

use crate::context::AppContext;
use crate::core;
use crate::guards::auth::Access;
use crate::http::error::ApiError;

#[derive(Debug, serde::Deserialize)]
pub struct ScrubParams {
    /// Bytes per second to read at most; 0: unlimited. Default: the
    /// server's `scrub_bandwidth`.
    bandwidth: Option<u64>,
}

/// Re-hashes every completed file and answers what it found (200 whatever
/// it found; `mismatches` and `orphans` say it). Takes as long as the files
/// take to read at the bandwidth; one scrub runs at a time.
#[tracing::instrument(skip_all)]
pub async fn scrub(
    ctx: web::Data<AppContext>,
    access: Access,
    params: web::Query<ScrubParams>,
) -> Result<HttpResponse, ApiError> {
    ctx.auth.may_administer(&access)?;
    let bandwidth = params.bandwidth.unwrap_or(ctx.settings.scrub_bandwidth.0);
    let report = core::scrub(&ctx, Some(bandwidth)).await?;
    Ok(HttpResponse::Ok().json(report))
}
