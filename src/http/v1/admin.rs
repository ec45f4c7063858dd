//! `/api/v1/admin/...`: the operator's endpoints, for an API key only (or
//! anyone with authentication off). `POST /api/v1/admin/scrub` runs the
//! integrity scrub in the server, which holds the state store: with the
//! embedded store no second process could open it.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::context::AppContext;
use crate::core;
use crate::guards::auth::Access;
use crate::http::error::ApiError;

/// The lowest bandwidth a scrub may be asked for: slower, a few small files
/// would hold the request (and the one scrub slot) for hours.
const MIN_BANDWIDTH: u64 = 64 * 1024;

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
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // Credentials before the query is read: an anonymous caller learns
    // nothing from a validation error.
    ctx.auth.may_administer(&access)?;
    let params = web::Query::<ScrubParams>::from_query(req.query_string()).map_err(|_| {
        ApiError::invalid("bandwidth must be a whole number of bytes per second (0: no limit)")
    })?;
    let bandwidth = params.bandwidth.unwrap_or(ctx.settings.scrub_bandwidth.0);
    if bandwidth != 0 && bandwidth < MIN_BANDWIDTH {
        return Err(ApiError::invalid(format!(
            "bandwidth must be 0 (no limit) or at least {MIN_BANDWIDTH} bytes per second"
        )));
    }
    let report = core::scrub(&ctx, Some(bandwidth)).await?;
    Ok(HttpResponse::Ok().json(report))
}
