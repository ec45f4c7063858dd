//! The HTTP front ends: API v1's routes, tus 1.0's, and the service endpoints. Handlers
//! are thin: they take what [`extract`] checked (credentials, the upload id),
//! call [`crate::core`] and shape the answer; [`error`] is where every error
//! becomes an answer. Only this layer, startup and telemetry know actix.

pub mod conditional;
pub mod error;
pub mod extract;
pub mod forwarded;
pub mod framing;
pub mod service;
pub mod tus;
pub mod v1;

use v1::{admin, events, files, uploads, usage};

use actix_web::{web, HttpRequest, HttpResponse};

use crate::http::error::ApiError;

/// Routes and extractor settings; the tus routes under `tus_scope`, if any.
pub fn configure(cfg: &mut web::ServiceConfig, tus_scope: Option<&str>) {
    if let Some(scope) = tus_scope {
        tus::configure(cfg, scope);
    }
    cfg.app_data(
        web::PathConfig::default()
            .error_handler(|err, _req| ApiError::invalid(format!("invalid path: {err}")).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|err, _req| ApiError::invalid(format!("invalid query: {err}")).into()),
    )
    .service(
        web::scope("/api/v1")
            .service(
                web::resource(["", "/"])
                    .route(web::get().to(service::document))
                    .route(web::head().to(service::document))
                    .default_service(allowed_only("GET, HEAD")),
            )
            .service(
                web::resource("/openapi.json")
                    .route(web::get().to(service::openapi))
                    .default_service(allowed_only("GET")),
            )
            .service(
                web::resource("/uploads")
                    .route(web::post().to(uploads::create))
                    .default_service(allowed_only("POST")),
            )
            .service(
                web::resource("/uploads/{id}")
                    .route(web::get().to(uploads::status))
                    .route(web::head().to(uploads::status))
                    .route(web::delete().to(uploads::abort))
                    .default_service(allowed_only("GET, HEAD, DELETE")),
            )
            .service(
                web::resource("/uploads/{id}/events")
                    .route(web::get().to(events::events))
                    .default_service(allowed_only("GET")),
            )
            .service(
                web::resource("/uploads/{id}/chunks/{index}")
                    .route(web::put().to(uploads::put_chunk))
                    .route(web::post().to(uploads::put_chunk))
                    .default_service(allowed_only("PUT, POST")),
            )
            .service(
                web::resource("/uploads/{id}/processing")
                    .route(web::put().to(uploads::report_processing))
                    .default_service(allowed_only("PUT")),
            )
            .service(
                web::resource("/uploads/{id}/complete")
                    .route(web::post().to(uploads::complete))
                    .default_service(allowed_only("POST")),
            )
            .service(
                web::resource("/files/{id}")
                    .route(web::get().to(files::download))
                    .route(web::head().to(files::download))
                    .route(web::delete().to(files::delete))
                    .default_service(allowed_only("GET, HEAD, DELETE")),
            )
            .service(
                web::resource("/usage")
                    .route(web::get().to(usage::usage))
                    .route(web::head().to(usage::usage))
                    .default_service(allowed_only("GET, HEAD")),
            )
            .service(
                web::resource("/admin/scrub")
                    .route(web::post().to(admin::scrub))
                    .default_service(allowed_only("POST")),
            )
            .default_service(web::to(not_found)),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(service::healthz))
            .route(web::head().to(service::healthz))
            .default_service(allowed_only("GET, HEAD")),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(service::readyz))
            .route(web::head().to(service::readyz))
            .default_service(allowed_only("GET, HEAD")),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(service::metrics))
            .route(web::head().to(service::metrics))
            .default_service(allowed_only("GET, HEAD")),
    );
}

/// The address a request came from, for rate-limit buckets: the peer, or
/// the forwarded client when the peer is a trusted proxy.
pub fn client_ip(req: &HttpRequest) -> std::net::IpAddr {
    match req.app_data::<web::Data<crate::context::AppContext>>() {
        Some(ctx) => forwarded::client_ip(req, &ctx.settings.trusted_proxies),
        None => req
            .peer_addr()
            .map(|a| a.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
    }
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

/// A resource's answer to the methods it does not take: 405 with `Allow`
/// listing those it does (RFC 9110 §15.5.6).
pub(crate) fn allowed_only(allow: &'static str) -> actix_web::Route {
    web::to(move |req: HttpRequest| async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        })
    })
}
