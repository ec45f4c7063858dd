//! `GET /api/v1/usage`: what owners store and have pending, against their
//! quotas. An API key sees every owner; a token its own.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::context::AppContext;
use crate::core;
use crate::guards::auth::Access;
use crate::http::error::ApiError;

#[tracing::instrument(skip_all)]
pub async fn usage(ctx: web::Data<AppContext>, access: Access) -> Result<HttpResponse, ApiError> {
    let report = core::usage_report(&ctx, &access).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(report))
}
