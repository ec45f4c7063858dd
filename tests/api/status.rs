//! `GET` / `HEAD /api/v1/uploads/{id}`: where an upload stands.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn status_lists_missing_chunks_ascending_and_counts_bytes() {
    bounded(async {
        let app = spawn_app().await;
        // Six chunks, the last one 100 bytes.
        let data = test_data(5 * 1024 + 100, 41);
        let created = app.create_for(&data, 1024).await;
        let id = created["id"].as_str().unwrap();
        assert_eq!(created["chunk_count"], 6);

        app.send_chunks(id, &data, 1024, [5, 3, 1]).await;
        let view = app.status_json(id).await;
        assert_eq!(view["status"], "uploading");
        assert_eq!(view["missing_chunks"], json!([0, 2, 4]));
        assert_eq!(view["received_chunks"], 3);
        assert_eq!(view["bytes_received"], 1024 + 1024 + 100);
        assert_eq!(view["chunk_count"], 6);
        assert_eq!(view["size"], data.len() as u64);

        app.send_chunks(id, &data, 1024, [4, 0]).await;
        let view = app.status_json(id).await;
        assert_eq!(view["missing_chunks"], json!([2]));
        assert_eq!(view["bytes_received"], 4 * 1024 + 100);
    })
    .await
}

#[tokio::test]
async fn status_answers_head_without_a_body() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3000, 42);
        let id = app.create_for(&data, 1024).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let resp = app
            .request(Method::HEAD, &format!("/api/v1/uploads/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.bytes().await.unwrap().is_empty());

        let unknown = uuid::Uuid::new_v4();
        let resp = app
            .request(Method::HEAD, &format!("/api/v1/uploads/{unknown}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
    })
    .await
}

#[tokio::test]
async fn completed_upload_status_carries_the_file() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(5000, 43);
        let done = app.upload_all(&data, 1024).await;
        let id = done["id"].as_str().unwrap();
        let view = app.status_json(id).await;
        assert_eq!(view["status"], "completed");
        assert_eq!(view["missing_chunks"], json!([]));
        assert_eq!(view["file"]["id"], id);
        assert_eq!(view["file"]["size"], 5000);
        assert_eq!(view["file"]["sha256"], sha256_hex(&data));
        let url = view["file"]["url"].as_str().expect("file.url");
        assert!(url.ends_with(&format!("/api/v1/files/{id}")), "{url}");
    })
    .await
}
