//! HTTP routes of API v1 and the service endpoints. Handlers are thin: they
//! parse the request, ask [`crate::auth::Access`], call [`crate::uploads`] and
//! shape the answer.

pub mod files;
pub mod service;
pub mod uploads;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::ApiError;

/// Routes and extractor settings; `json_limit` caps JSON bodies (bytes).
pub fn configure(cfg: &mut web::ServiceConfig, json_limit: usize) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(json_limit)
            // Any content type: `curl -d '{...}'` sends form-urlencoded by default.
            .content_type_required(false)
            .error_handler(move |err, _req| {
                let msg = match &err {
                    actix_web::error::JsonPayloadError::OverflowKnownLength { .. }
                    | actix_web::error::JsonPayloadError::Overflow { .. } => {
                        format!("JSON body larger than {json_limit} bytes")
                    }
                    other => format!("invalid JSON body: {other}"),
                };
                ApiError::InvalidRequest(msg).into()
            }),
    )
    .app_data(
        web::PathConfig::default().error_handler(|err, _req| {
            ApiError::InvalidRequest(format!("invalid path: {err}")).into()
        }),
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
                web::resource("/uploads/{id}/chunks/{index}")
                    .route(web::put().to(uploads::put_chunk))
                    .route(web::post().to(uploads::put_chunk))
                    .default_service(allowed_only("PUT, POST")),
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
                    .default_service(allowed_only("GET, HEAD")),
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
        Some(ctx) => crate::forwarded::client_ip(req, &ctx.settings.trusted_proxies),
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
fn allowed_only(allow: &'static str) -> actix_web::Route {
    web::to(move |req: HttpRequest| async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        })
    })
}
