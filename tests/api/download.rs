//! `GET` / `HEAD /api/v1/files/{id}`: the completed file with its headers,
//! and ranges.

use base64::Engine;
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

/// Uploads `data` under `filename` / `content_type` and completes it.
async fn publish(app: &TestApp, data: &[u8], filename: &str, content_type: &str) -> String {
    let created = expect_json(
        app.create(json!({"filename": filename, "size": data.len(), "content_type": content_type, "chunk_size": 1024}))
            .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let n = data.len().div_ceil(1024) as u64;
    app.send_chunks(&id, data, 1024, 0..n).await;
    assert_eq!(
        expect_json(app.complete(&id).await, 200).await["status"],
        "completed"
    );
    id
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header; headers: {:?}", resp.headers()))
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn download_sends_the_file_with_its_headers() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(5000, 71);
        let id = publish(&app, &data, "leçon 1 – vidéo.mp4", "video/mp4").await;

        let resp = app.download(&id).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-length"), "5000");
        assert_eq!(header(&resp, "content-type"), "video/mp4");
        let disposition = header(&resp, "content-disposition");
        assert!(disposition.starts_with("attachment"), "{disposition}");
        assert!(
            disposition.contains("filename*=UTF-8''le%C3%A7on%201%20%E2%80%93%20vid%C3%A9o.mp4"),
            "{disposition}"
        );
        assert!(!header(&resp, "etag").is_empty());
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(hex::decode(sha256_hex(&data)).unwrap());
        assert_eq!(header(&resp, "repr-digest"), format!("sha-256=:{b64}:"));
        assert_eq!(header(&resp, "digest"), format!("sha-256={b64}"));
        let body = resp.bytes().await.unwrap();
        assert_eq!(&body[..], &data[..]);
    })
    .await
}

#[tokio::test]
async fn download_filename_cannot_smuggle_paths_or_quotes() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(100, 72);
        let id = publish(&app, &data, "../../etc/\"passwd\".txt", "text/plain").await;
        let resp = app.download(&id).await;
        assert_eq!(resp.status(), 200);
        let disposition = header(&resp, "content-disposition");
        assert!(!disposition.contains('/'), "{disposition}");
        assert!(!disposition.contains("\\\""), "{disposition}");
        assert_eq!(disposition.matches('"').count() % 2, 0, "{disposition}");
    })
    .await
}

#[tokio::test]
async fn download_keeps_the_content_type_declared_at_create() {
    bounded(async {
        let app = spawn_app().await;
        // A charset other than UTF-8: announcing the wrong one garbles the text.
        let data = b"le\xe7on\n".to_vec();
        let id = publish(&app, &data, "latin1.txt", "text/plain; charset=iso-8859-1").await;
        let resp = app.download(&id).await;
        assert_eq!(resp.status(), 200);
        let content_type = header(&resp, "content-type")
            .replace(' ', "")
            .to_ascii_lowercase();
        assert_eq!(content_type, "text/plain;charset=iso-8859-1");
    })
    .await
}

#[tokio::test]
async fn download_honours_a_byte_range_with_206() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(5000, 73);
        let id = publish(&app, &data, "r.bin", "application/octet-stream").await;
        let resp = app
            .request(Method::GET, &format!("/api/v1/files/{id}"))
            .header("range", "bytes=10-99")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206);
        assert_eq!(header(&resp, "content-range"), "bytes 10-99/5000");
        assert_eq!(header(&resp, "content-length"), "90");
        let body = resp.bytes().await.unwrap();
        assert_eq!(&body[..], &data[10..100]);
    })
    .await
}

#[tokio::test]
async fn download_answers_head_with_the_length_and_no_body() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3000, 74);
        let id = publish(&app, &data, "h.bin", "application/octet-stream").await;
        let resp = app
            .request(Method::HEAD, &format!("/api/v1/files/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-length"), "3000");
        assert!(resp.headers().contains_key("etag"));
        assert!(resp.bytes().await.unwrap().is_empty());
    })
    .await
}

#[tokio::test]
async fn download_of_an_unknown_or_unfinished_upload_answers_404() {
    bounded(async {
        let app = spawn_app().await;
        let unknown = uuid::Uuid::new_v4().to_string();
        assert_error(app.download(&unknown).await, 404, "file_not_found").await;

        let data = test_data(3000, 75);
        let id = app.create_for(&data, 1024).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_error(app.download(&id).await, 404, "file_not_found").await;
        // Even with every chunk there, it is no file until completed.
        app.send_chunks(&id, &data, 1024, 0..3).await;
        assert_error(app.download(&id).await, 404, "file_not_found").await;
    })
    .await
}
