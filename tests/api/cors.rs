//! Cross-origin access (`[cors]`) for an uploader embedded in another app's
//! page, and how the uploader's own files are served (types, caching).
//! tests/browser/ checks the same from inside Chromium.

use reqwest::{Method, Response};
use serde_json::json;

use crate::helpers::*;

const APP: &str = "https://app.example.com";

async fn app_allowing(origins: &[&str]) -> TestApp {
    let origins: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
    spawn_app_with(|s| s.cors.allowed_origins = origins).await
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_ascii_lowercase())
}

async fn preflight(app: &TestApp, origin: &str, method: &str, headers: &str) -> Response {
    app.request(Method::OPTIONS, "/api/v1/uploads/x/chunks/0")
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header("Access-Control-Request-Headers", headers)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_allows_what_the_uploader_sends() {
    bounded(async {
        let app = app_allowing(&[APP, "http://localhost:3000"]).await;
        let resp = preflight(
            &app,
            APP,
            "PUT",
            "content-digest, authorization, content-type",
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "access-control-allow-origin").as_deref(),
            Some(APP)
        );
        let methods = header(&resp, "access-control-allow-methods").unwrap();
        for m in ["get", "head", "post", "put", "delete"] {
            assert!(methods.contains(m), "{m} missing from {methods}");
        }
        let allowed = header(&resp, "access-control-allow-headers").unwrap();
        for h in [
            "content-digest",
            "authorization",
            "content-type",
            "idempotency-key",
        ] {
            assert!(allowed.contains(h), "{h} missing from {allowed}");
        }
        assert_eq!(
            header(&resp, "access-control-max-age").as_deref(),
            Some("3600")
        );
        assert!(header(&resp, "vary").unwrap().contains("origin"));
    })
    .await
}

#[tokio::test]
async fn answers_to_an_allowed_origin_expose_the_headers_a_client_reads() {
    bounded(async {
        let app = app_allowing(&[APP]).await;
        let resp = app
            .request(Method::POST, "/api/v1/uploads")
            .header("Origin", APP)
            .json(&json!({"filename": "a.bin", "size": 10}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        assert_eq!(
            header(&resp, "access-control-allow-origin").as_deref(),
            Some(APP)
        );
        let exposed = header(&resp, "access-control-expose-headers").unwrap();
        for h in [
            "location",
            "retry-after",
            "etag",
            "content-disposition",
            "repr-digest",
        ] {
            assert!(exposed.contains(h), "{h} missing from {exposed}");
        }
        // An error answer carries them too, or the page could not read its JSON.
        let resp = app
            .request(Method::GET, "/api/v1/uploads/not-an-id")
            .header("Origin", APP)
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&resp, "access-control-allow-origin").as_deref(),
            Some(APP)
        );
        assert_error(resp, 400, "invalid_request").await;
    })
    .await
}

#[tokio::test]
async fn another_origin_gets_no_cors_headers_and_a_json_refusal() {
    bounded(async {
        let app = app_allowing(&[APP]).await;
        let resp = preflight(&app, "https://evil.example", "PUT", "content-type").await;
        assert_eq!(header(&resp, "access-control-allow-origin"), None);
        assert_error(resp, 400, "cors_rejected").await;
        // A plain request still gets its answer (curl sends Origin too); the
        // browser, seeing no CORS header, keeps it from the page.
        let resp = app
            .request(Method::GET, "/healthz")
            .header("Origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "access-control-allow-origin"), None);
    })
    .await
}

#[tokio::test]
async fn without_allowed_origins_there_is_no_cors_at_all() {
    bounded(async {
        let app = spawn_app().await;
        let resp = preflight(&app, APP, "PUT", "content-type").await;
        assert_eq!(header(&resp, "access-control-allow-origin"), None);
        let resp = app
            .request(Method::GET, "/healthz")
            .header("Origin", APP)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "access-control-allow-origin"), None);
    })
    .await
}

#[tokio::test]
async fn a_wildcard_allows_every_origin() {
    bounded(async {
        let app = app_allowing(&["*"]).await;
        let resp = preflight(&app, "https://anywhere.example", "POST", "content-type").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "access-control-allow-origin").as_deref(),
            Some("*")
        );
    })
    .await
}

#[tokio::test]
async fn the_uploader_files_are_served_with_their_types_and_revalidated() {
    bounded(async {
        let static_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
        let app = spawn_app_with(|s| {
            s.serve_static = true;
            s.static_dir = static_dir;
        })
        .await;
        for (path, mime) in [
            ("/", "text/html; charset=utf-8"),
            ("/tranche-upload.js", "text/javascript"),
            ("/tranche-core.js", "text/javascript"),
            ("/tranche.css", "text/css"),
        ] {
            let resp = app.request(Method::GET, path).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            let content_type = header(&resp, "content-type").unwrap();
            assert!(content_type.starts_with(mime), "{path}: {content_type}");
            assert_eq!(
                header(&resp, "cache-control").as_deref(),
                Some("no-cache"),
                "{path}"
            );
            assert_eq!(
                header(&resp, "x-content-type-options").as_deref(),
                Some("nosniff")
            );
            // no-cache means "ask first": the ETag makes asking cheap.
            let etag = resp.headers().get("etag").expect("ETag").clone();
            let again = app
                .request(Method::GET, path)
                .header("If-None-Match", etag)
                .send()
                .await
                .unwrap();
            assert_eq!(again.status(), 304, "{path}");
        }
        let resp = app
            .request(Method::GET, "/no-such-file.js")
            .send()
            .await
            .unwrap();
        assert_error(resp, 404, "not_found").await;
    })
    .await
}

#[tokio::test]
async fn an_event_source_reconnecting_from_another_origin_may_send_last_event_id() {
    bounded(async {
        let app = app_allowing(&[APP]).await;
        let resp = app
            .request(Method::OPTIONS, "/api/v1/uploads/x/events")
            .header("Origin", APP)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "last-event-id")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let allowed = header(&resp, "access-control-allow-headers").unwrap();
        assert!(allowed.contains("last-event-id"), "{allowed}");
    })
    .await
}
