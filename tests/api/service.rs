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
