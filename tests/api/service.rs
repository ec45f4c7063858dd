//! `/healthz`, `/readyz`, `/metrics`, and what unknown routes answer.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn healthz_answers_200() {
    bounded(async {
        let app = spawn_app().await;
        let resp = app.request(Method::GET, "/healthz").send().await.unwrap();
        assert_eq!(resp.status(), 200);
    })
    .await
}

#[tokio::test]
async fn readyz_answers_200_with_json() {
    bounded(async {
        let app = spawn_app().await;
        let resp = app.request(Method::GET, "/readyz").send().await.unwrap();
        let body: Value = expect_json(resp, 200).await;
        assert!(body.is_object(), "{body}");
    })
    .await
}

#[tokio::test]
async fn metrics_count_uploads_and_chunks() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3 * 1024, 91);
        app.upload_all(&data, 1024).await;
        let resp = app.request(Method::GET, "/metrics").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("tranche_uploads_total"), "{text}");
        assert!(text.contains("tranche_chunks_received_total"), "{text}");
        assert_eq!(
            metric_value(&text, "tranche_chunks_received_total", None),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            metric_value(&text, "tranche_uploads_total", Some("\"completed\"")),
            Some(1.0),
            "{text}"
        );
        // Series that have seen no event yet are there, at 0, for alerts.
        for labels in ["\"failed\"", "\"aborted\"", "\"expired\""] {
            let value = metric_value(&text, "tranche_uploads_total", Some(labels));
            assert_eq!(value, Some(0.0), "{labels}: {text}");
        }
        for labels in ["\"upload\"", "\"orphan\""] {
            let value = metric_value(&text, "tranche_janitor_deleted_total", Some(labels));
            assert_eq!(value, Some(0.0), "{labels}: {text}");
        }
    })
    .await
}

#[tokio::test]
async fn unknown_routes_answer_404_json() {
    bounded(async {
        let app = spawn_app().await;
        for path in [
            "/nope",
            "/api/v1/nope",
            "/api/v2/uploads",
            "/api/v1/uploads/x/y/z",
        ] {
            let resp = app.request(Method::GET, path).send().await.unwrap();
            let status = resp.status().as_u16();
            assert_eq!(status, 404, "{path}");
            let body: Value = resp
                .json()
                .await
                .unwrap_or_else(|e| panic!("{path}: not JSON: {e}"));
            assert!(
                body["error"].is_string() && body["message"].is_string(),
                "{path}: {body}"
            );
        }
    })
    .await
}

/// Service endpoints answer HEAD like GET (load balancers probe with it), and
/// a method a resource does not take gets a JSON 405 with `Allow`.
#[tokio::test]
async fn head_probes_and_wrong_methods_answer_as_http_says() {
    bounded(async {
        let app = spawn_app().await;
        for path in ["/healthz", "/readyz", "/metrics"] {
            let resp = app.request(Method::HEAD, path).send().await.unwrap();
            assert_eq!(resp.status(), 200, "HEAD {path}");
            assert!(resp.bytes().await.unwrap().is_empty(), "HEAD {path}");
        }
        let id = "0b9d5c0e-6c1e-4b8e-9a4f-3d2f1c0b7a61";
        let cases = [
            (Method::POST, "/healthz".to_string(), "GET, HEAD"),
            (Method::DELETE, "/metrics".to_string(), "GET, HEAD"),
            (Method::PATCH, "/api/v1/uploads".to_string(), "POST"),
            (
                Method::PUT,
                format!("/api/v1/uploads/{id}"),
                "GET, HEAD, DELETE",
            ),
            (Method::GET, chunk_url(id, 0), "PUT, POST"),
            (
                Method::GET,
                format!("/api/v1/uploads/{id}/complete"),
                "POST",
            ),
            (
                Method::PUT,
                format!("/api/v1/files/{id}"),
                "GET, HEAD, DELETE",
            ),
        ];
        for (method, path, allow) in cases {
            let resp = app.request(method.clone(), &path).send().await.unwrap();
            let got = resp
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(got.as_deref(), Some(allow), "{method} {path}");
            assert_error(resp, 405, "method_not_allowed").await;
        }
    })
    .await
}
