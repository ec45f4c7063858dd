//! Completed files' lifecycle: deletion by request (and who may), retention
//! and its expiry by the janitor, and the integrity scrub.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

fn id_of(view: &serde_json::Value) -> String {
    view["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_deleted_file_is_gone_and_deleting_it_again_is_fine() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3000, 21);
        let gone = id_of(&app.upload_all(&data, 1024).await);
        let kept = id_of(&app.upload_all(&data, 1024).await);
        assert!(app.file_path(&gone).exists());

        let resp = app.delete_file(&gone, None).await;
        assert_eq!(resp.status(), 204);
        assert!(resp.bytes().await.unwrap().is_empty());
        assert!(!app.file_path(&gone).exists(), "the bytes stayed");
        assert_error(app.download(&gone).await, 404, "file_not_found").await;
        assert_error(app.status(&gone).await, 404, "upload_not_found").await;
        // Twice is fine, and so is an id that never was.
        assert_eq!(app.delete_file(&gone, None).await.status(), 204);
        let never = uuid::Uuid::new_v4().to_string();
        assert_eq!(app.delete_file(&never, None).await.status(), 204);

        let other = app.download(&kept).await;
        assert_eq!(other.status(), 200);
        assert_eq!(&other.bytes().await.unwrap()[..], &data[..]);
        let text = app.metrics_text().await;
        assert_eq!(
            metric_value(&text, "tranche_files_deleted_total", Some("request")),
            Some(1.0),
            "{text}"
        );
    })
    .await
}

#[tokio::test]
async fn an_upload_in_progress_is_no_file_to_delete() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3000, 22);
        let id = id_of(&app.create_for(&data, 1024).await);
        app.send_chunks(&id, &data, 1024, [0]).await;
        assert_error(app.delete_file(&id, None).await, 404, "file_not_found").await;
        assert_eq!(app.status_json(&id).await["received_chunks"], 1);
        assert!(app.part_path(&id).exists());
        assert_error(
            app.request(Method::DELETE, "/api/v1/files/not-an-id")
                .send()
                .await
                .unwrap(),
            400,
            "invalid_request",
        )
        .await;
    })
    .await
}

/// Uploads `data` in one chunk with the API key; returns (id, upload_token).
async fn keyed_file(app: &TestApp, data: &[u8]) -> (String, String) {
    let created = app
        .request(Method::POST, "/api/v1/uploads")
        .bearer_auth(TEST_API_KEY)
        .json(&json!({"filename": "f.bin", "size": data.len(), "chunk_size": 4096}))
        .send()
        .await
        .unwrap();
    let created = expect_json(created, 201).await;
    let id = id_of(&created);
    let token = created["upload_token"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        (Method::PUT, chunk_url(&id, 0), data.to_vec()),
        (
            Method::POST,
            format!("/api/v1/uploads/{id}/complete"),
            Vec::new(),
        ),
    ] {
        let resp = app
            .request(method, &path)
            .bearer_auth(&token)
            .body(body)
            .send()
            .await
            .unwrap();
        expect_json(resp, 200).await;
    }
    (id, token)
}

#[tokio::test]
async fn deleting_needs_an_api_key_or_the_owner_when_allowed() {
    bounded(async {
        let app = spawn_with_auth(|s| {
            s.auth.owner_may_delete = true;
            // Public downloads open GET, never DELETE.
            s.auth.public_downloads = true;
        })
        .await;
        let data = test_data(2000, 23);
        let (mine, my_token) = keyed_file(&app, &data).await;
        let (theirs, _) = keyed_file(&app, &data).await;

        assert_error(app.delete_file(&mine, None).await, 401, "unauthorized").await;
        assert_error(
            app.delete_file(&theirs, Some(&my_token)).await,
            403,
            "forbidden",
        )
        .await;
        assert_eq!(app.download(&mine).await.status(), 200);

        assert_eq!(app.delete_file(&mine, Some(&my_token)).await.status(), 204);
        assert_error(app.download(&mine).await, 404, "file_not_found").await;
        assert_eq!(app.delete_file(&mine, Some(&my_token)).await.status(), 204);
        assert_eq!(
            app.delete_file(&theirs, Some(TEST_API_KEY)).await.status(),
            204
        );
        assert_error(app.download(&theirs).await, 404, "file_not_found").await;
    })
    .await
}

#[tokio::test]
async fn without_owner_may_delete_an_upload_token_cannot_delete() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let data = test_data(2000, 24);
        let (id, token) = keyed_file(&app, &data).await;
        assert_error(app.delete_file(&id, Some(&token)).await, 403, "forbidden").await;
        let resp = app
            .request(Method::GET, &format!("/api/v1/files/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    })
    .await
}
