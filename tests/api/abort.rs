//! `DELETE /api/v1/uploads/{id}`: the upload and its bytes go at once.

use serde_json::Value;

use crate::helpers::*;

/// After an abort, a request may learn "gone" (410 upload_aborted) or "unknown"
/// (404 upload_not_found); either way with the matching code.
async fn assert_gone(resp: reqwest::Response, what: &str) -> Value {
    match resp.status().as_u16() {
        410 => assert_error(resp, 410, "upload_aborted").await,
        404 => assert_error(resp, 404, "upload_not_found").await,
        other => panic!(
            "{what} after abort answered {other}: {:?}",
            resp.text().await
        ),
    }
}

#[tokio::test]
async fn abort_answers_204_and_removes_the_bytes_and_the_upload() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3 * 1024, 61);
        let id = app.create_for(&data, 1024).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.send_chunks(&id, &data, 1024, [0, 1]).await;
        let part = app.part_path(&id);
        assert!(
            part.exists(),
            "the test expects the part file at {}",
            part.display()
        );

        let resp = app.abort(&id).await;
        assert_eq!(resp.status(), 204);
        assert!(resp.bytes().await.unwrap().is_empty(), "204 has no body");
        assert!(!part.exists(), "part file still at {}", part.display());

        let chunks = chunks_of(&data, 1024);
        assert_gone(app.put_chunk(&id, 2, chunks[2].clone()).await, "chunk PUT").await;
        assert_gone(
            app.put_chunk(&id, 0, chunks[0].clone()).await,
            "resent chunk PUT",
        )
        .await;
        assert_gone(app.complete(&id).await, "complete").await;
        assert_gone(app.status(&id).await, "GET").await;
        // A chunk sent after the abort must not bring the bytes back.
        assert!(!part.exists(), "part file recreated at {}", part.display());
        assert_error(app.download(&id).await, 404, "file_not_found").await;
    })
    .await
}

#[tokio::test]
async fn abort_of_an_upload_without_chunks_answers_204() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(2048, 62);
        let id = app.create_for(&data, 1024).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(app.abort(&id).await.status(), 204);
        assert!(!app.part_path(&id).exists());
        assert_gone(app.status(&id).await, "GET").await;
    })
    .await
}
