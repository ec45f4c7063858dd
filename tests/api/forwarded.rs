//! Forwarded headers (`X-Forwarded-Proto`/`-Host`/`-Port`) shape `Location`
//! and `file.url` only from a trusted proxy; from anyone else they are
//! ignored, so a client cannot make the server hand out links to another host.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

const SPOOF: [(&str, &str); 4] = [
    ("x-forwarded-for", "203.0.113.9"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "uploads.example.com"),
    ("x-forwarded-port", "443"),
];

/// Creates, uploads and completes a small file with `headers` on every
/// request; returns the create's `Location`, the completion and the status.
async fn upload_with(app: &TestApp, headers: &[(&str, &str)]) -> (String, Value, Value) {
    let data = test_data(3000, 71);
    let with = |mut rb: reqwest::RequestBuilder| {
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb
    };
    let resp = with(app.request(Method::POST, "/api/v1/uploads"))
        .json(&json!({"filename": "f.bin", "size": data.len(), "chunk_size": 1024}))
        .send()
        .await
        .unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let created = expect_json(resp, 201).await;
    let id = created["id"].as_str().unwrap().to_owned();
    app.send_chunks(&id, &data, 1024, 0..3).await;
    let path = format!("/api/v1/uploads/{id}");
    let done = expect_json(
        with(app.request(Method::POST, &format!("{path}/complete")))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let status = expect_json(
        with(app.request(Method::GET, &path)).send().await.unwrap(),
        200,
    )
    .await;
    (location, done, status)
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_change_no_url() {
    bounded(async {
        for trusted in [vec![], vec!["10.0.0.0/8", "::1"]] {
            let app = spawn_app_with(|s| s.trusted_proxies = trusted.iter().collect()).await;
            let (location, done, status) = upload_with(&app, &SPOOF).await;
            let id = done["id"].as_str().unwrap();
            assert_eq!(location, format!("/api/v1/uploads/{id}"), "{trusted:?}");
            assert_eq!(done["file"]["url"], format!("/api/v1/files/{id}"));
            assert_eq!(status["file"]["url"], format!("/api/v1/files/{id}"));
        }
    })
    .await
}

#[tokio::test]
async fn a_trusted_proxys_headers_make_urls_absolute() {
    bounded(async {
        let app = spawn_app_with(|s| s.trusted_proxies = ["127.0.0.1"].iter().collect()).await;
        let (location, done, status) = upload_with(&app, &SPOOF).await;
        let id = done["id"].as_str().unwrap();
        assert_eq!(
            location,
            format!("https://uploads.example.com/api/v1/uploads/{id}")
        );
        let url = format!("https://uploads.example.com/api/v1/files/{id}");
        assert_eq!(done["file"]["url"], url);
        assert_eq!(status["file"]["url"], url);
        // The same upload asked for without a proxy's headers: relative again.
        let plain = app.status_json(id).await;
        assert_eq!(plain["file"]["url"], format!("/api/v1/files/{id}"));
        // A proxy on another port, no Host override.
        let other = expect_json(
            app.request(Method::GET, &format!("/api/v1/uploads/{id}"))
                .header("x-forwarded-proto", "http")
                .header("x-forwarded-host", "10.1.2.3")
                .header("x-forwarded-port", "8080")
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(
            other["file"]["url"],
            format!("http://10.1.2.3:8080/api/v1/files/{id}")
        );
    })
    .await
}

#[tokio::test]
async fn public_url_wins_over_forwarded_headers() {
    bounded(async {
        let app = spawn_app_with(|s| {
            s.trusted_proxies = ["127.0.0.1"].iter().collect();
            s.public_url = Some("https://files.example.org/".into());
        })
        .await;
        let (location, done, _) = upload_with(&app, &SPOOF).await;
        let id = done["id"].as_str().unwrap();
        assert_eq!(
            location,
            format!("https://files.example.org/api/v1/uploads/{id}")
        );
        assert_eq!(
            done["file"]["url"],
            format!("https://files.example.org/api/v1/files/{id}")
        );
    })
    .await
}
