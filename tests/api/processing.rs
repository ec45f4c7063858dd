//! `PUT /api/v1/uploads/{id}/processing`: a worker's reports on a completed
//! file, kept in the record and shown in the upload object.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

fn processing_path(id: &str) -> String {
    format!("/api/v1/uploads/{id}/processing")
}

async fn report(app: &TestApp, id: &str, body: Value, key: Option<&str>) -> reqwest::Response {
    let mut req = app.request(Method::PUT, &processing_path(id)).json(&body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn reports_are_kept_numbered_and_shown_in_the_upload_object() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(20_000, 71);
        let done = app.upload_all(&data, 8192).await;
        let id = done["id"].as_str().unwrap();
        assert!(done.get("processing").is_none(), "no report yet: {done}");

        let queued = expect_json(
            report(&app, id, json!({"state": "queued"}), None).await,
            200,
        )
        .await;
        assert_eq!(queued["processing"]["state"], "queued");
        assert_eq!(queued["processing"]["revision"], 1);
        assert!(queued["processing"]["updated_at"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
        assert_eq!(queued["status"], "completed");

        let half = json!({"state": "processing", "progress": 0.5, "message": "transcoding"});
        let half = expect_json(report(&app, id, half, None).await, 200).await;
        assert_eq!(half["processing"]["revision"], 2);
        assert_eq!(half["processing"]["progress"], 0.5);
        assert_eq!(half["processing"]["message"], "transcoding");

        let result = json!({"thumbnail": "/thumbs/1.jpg", "pages": [1, 2], "empty": {}});
        let body = json!({"state": "completed", "progress": 1.0, "result": result});
        expect_json(report(&app, id, body, None).await, 200).await;
        let status = app.status_json(id).await;
        let p = &status["processing"];
        assert_eq!(p["state"], "completed");
        assert_eq!(p["revision"], 3);
        // The worker's result comes back as it was sent (an empty object stays one).
        assert_eq!(p["result"], result);
        assert!(
            p.get("message").is_none(),
            "each report replaces the last: {p}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_unfinished_or_unknown_upload_has_no_processing() {
    bounded(async {
        let app = spawn_app().await;
        let created = app.create_for(&test_data(10_000, 72), 8192).await;
        let id = created["id"].as_str().unwrap();
        let body = json!({"state": "queued"});
        let answer = assert_error(
            report(&app, id, body.clone(), None).await,
            409,
            "upload_not_completed",
        )
        .await;
        assert!(
            answer["message"].as_str().unwrap().contains("uploading"),
            "{answer}"
        );

        let unknown = uuid::Uuid::new_v4().to_string();
        assert_error(
            report(&app, &unknown, body.clone(), None).await,
            404,
            "upload_not_found",
        )
        .await;

        assert_eq!(app.abort(id).await.status(), 204);
        assert_error(report(&app, id, body, None).await, 410, "upload_aborted").await;
    })
    .await;
}

#[tokio::test]
async fn malformed_reports_get_clear_errors() {
    bounded(async {
        let app = spawn_app().await;
        let done = app.upload_all(&test_data(5_000, 73), 8192).await;
        let id = done["id"].as_str().unwrap();
        for body in [
            json!({"state": "done"}),
            json!({"progress": 0.5}),
            json!({"state": "processing", "progress": 1.5}),
            json!({"state": "processing", "progress": -0.25}),
            json!({"state": "failed", "message": "x".repeat(1001)}),
        ] {
            let answer = assert_error(
                report(&app, id, body.clone(), None).await,
                400,
                "invalid_request",
            )
            .await;
            assert!(
                !answer["message"].as_str().unwrap().is_empty(),
                "{body}: {answer}"
            );
        }
        let not_json = app
            .request(Method::PUT, &processing_path(id))
            .header("content-type", "text/plain")
            .body("queued")
            .send()
            .await
            .unwrap();
        assert_error(not_json, 415, "unsupported_content_type").await;
        let other_method = app
            .request(Method::POST, &processing_path(id))
            .send()
            .await
            .unwrap();
        assert_eq!(other_method.status(), 405);
        // Unknown fields are named, not silently dropped.
        let typo = json!({"state": "queued", "progres": 0.1});
        let answer = expect_json(report(&app, id, typo, None).await, 200).await;
        assert!(
            answer["warnings"][0].as_str().unwrap().contains("progres"),
            "{answer}"
        );
        assert_eq!(app.status_json(id).await["processing"]["revision"], 1);
    })
    .await;
}

#[tokio::test]
async fn only_the_api_key_reports_processing() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let data = test_data(6_000, 74);
        let created = app
            .request(Method::POST, "/api/v1/uploads")
            .bearer_auth(TEST_API_KEY)
            .json(&json!({"filename": "p.bin", "size": data.len()}))
            .send()
            .await
            .unwrap();
        let created = expect_json(created, 201).await;
        let id = created["id"].as_str().unwrap();
        let token = created["upload_token"].as_str().unwrap();
        let put = app
            .request(Method::PUT, &chunk_url(id, 0))
            .bearer_auth(token)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        expect_json(put, 200).await;
        let done = app
            .request(Method::POST, &format!("/api/v1/uploads/{id}/complete"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        expect_json(done, 200).await;

        let body = json!({"state": "processing"});
        assert_error(
            report(&app, id, body.clone(), None).await,
            401,
            "unauthorized",
        )
        .await;
        // The browser holding the upload token watches; it does not report.
        assert_error(
            report(&app, id, body.clone(), Some(token)).await,
            403,
            "forbidden",
        )
        .await;
        let ok = expect_json(report(&app, id, body, Some(TEST_API_KEY)).await, 200).await;
        assert_eq!(ok["processing"]["state"], "processing");
        // And the upload token sees the report.
        let seen = app
            .request(Method::GET, &format!("/api/v1/uploads/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            expect_json(seen, 200).await["processing"]["state"],
            "processing"
        );
    })
    .await;
}
