//! Hostile input: whatever a client sends, it gets a JSON 4xx with a stable
//! code, never a 5xx, nothing outside the data directory is touched, and the
//! server keeps serving everyone else meanwhile.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// A 4xx with a JSON `{error, message}` body; returns the code.
async fn assert_client_error(resp: reqwest::Response, what: &str) -> String {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    assert!(
        (400..500).contains(&status),
        "{what}: expected a 4xx, got {status}: {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{what}: answer is not JSON: {text}"));
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {text}"
    );
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no code: {text}"))
        .to_owned()
}

/// The server still takes a whole upload.
async fn still_serving(app: &TestApp) {
    let data = test_data(3000, 9);
    let done = app.upload_all(&data, 1024).await;
    assert_eq!(done["status"], "completed");
}

#[tokio::test]
async fn bad_ids_and_traversal_attempts() {
    bounded(async {
        let app = spawn_app().await;
        let long = "a".repeat(10_000);
        let paths = [
            "/api/v1/uploads/..%2F..%2Fetc%2Fpasswd".to_string(),
            "/api/v1/uploads/../../etc/passwd".to_string(),
            "/api/v1/files/..%2F..%2Fetc%2Fpasswd".to_string(),
            "/api/v1/files/%2e%2e/%2e%2e/etc/passwd".to_string(),
            format!("/api/v1/uploads/{long}"),
            format!("/api/v1/files/{long}"),
            "/api/v1/uploads/00000000-0000-0000-0000-000000000000%00".to_string(),
            "/api/v1/uploads/%ff%fe".to_string(),
        ];
        for p in &paths {
            for m in [Method::GET, Method::DELETE] {
                let r = app.request(m.clone(), p).send().await.unwrap();
                assert_client_error(r, &format!("{m} {p}")).await;
            }
        }
        for idx in ["-1", "1.5", "99999999999999999999999", "0x10", "%00"] {
            let id = app.create_for(b"abc", 1024).await["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let r = app.put_chunk(&id, 0, vec![]).await;
            drop(r);
            let r = app
                .request(Method::PUT, &format!("/api/v1/uploads/{id}/chunks/{idx}"))
                .body("abc")
                .send()
                .await
                .unwrap();
            assert_client_error(r, &format!("chunk index {idx}")).await;
        }
        still_serving(&app).await;
    })
    .await;
}

#[tokio::test]
async fn control_characters_in_names_and_metadata() {
    bounded(async {
        let app = spawn_app().await;
        for name in ["a\0b", "evil\r\nSet-Cookie: x=1", "tab\there", "\u{7f}"] {
            let code = assert_client_error(app.create(json!({"filename": name, "size": 3})).await, name).await;
            assert_eq!(code, "invalid_request");
        }
        // A name with path separators is only a name: kept for the download,
        // never used as a path.
        let data = b"xyz".to_vec();
        let created = expect_json(app.create(json!({"filename": "../../etc/passwd", "size": 3, "metadata": {"k\u{0}": "v\r\nw"}})).await, 201).await;
        let id = created["id"].as_str().unwrap();
        assert_eq!(app.put_chunk(id, 0, data.clone()).await.status(), 200);
        expect_json(app.complete(id).await, 200).await;
        let r = app.download(id).await;
        let cd = r.headers()["content-disposition"].to_str().unwrap().to_owned();
        assert!(!cd.contains('/') && !cd.contains("\r") && !cd.contains("\n"), "{cd}");
        assert_eq!(r.bytes().await.unwrap().to_vec(), data);
        assert!(!app.data_dir.join("../../etc/passwd").exists() || std::path::Path::new("/etc/passwd").exists());
        let st = app.status_json(id).await;
        assert_eq!(st["metadata"]["k\u{0}"], "v\r\nw", "metadata is data, returned as given: {st}");
    })
    .await;
}

#[tokio::test]
async fn bad_sizes_and_bodies() {
    bounded(async {
        let app = spawn_app().await;
        let bodies: Vec<(String, &str)> = vec![
            (r#"{"filename":"a","size":-1}"#.into(), "negative size"),
            (r#"{"filename":"a","size":1e30}"#.into(), "float size"),
            (r#"{"filename":"a","size":1.5}"#.into(), "fractional size"),
            (r#"{"filename":"a","size":"12"}"#.into(), "string size"),
            (
                r#"{"filename":"a","size":18446744073709551616}"#.into(),
                "size beyond u64",
            ),
            (
                r#"{"filename":"a","size":18446744073709551615}"#.into(),
                "u64::MAX size",
            ),
            (r#"{"filename":"a"}"#.into(), "no size"),
            (r#"{"size":3}"#.into(), "no filename"),
            (
                r#"{"filename":"a","size":3,"chunk_size":-1}"#.into(),
                "negative chunk size",
            ),
            (
                r#"{"filename":"a","size":3,"sha256":"zz"}"#.into(),
                "bad sha256",
            ),
            (
                r#"{"filename":"a","size":3,"content_type":"no type"}"#.into(),
                "bad content type",
            ),
            (r#"[1,2,3]"#.into(), "array body"),
            ("".into(), "empty body"),
            ("{".into(), "truncated JSON"),
            (
                format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
                "deeply nested JSON",
            ),
            (
                format!(
                    r#"{{"filename":"a","size":3,"metadata":{}1{}}}"#,
                    r#"{"a":"#.repeat(5000),
                    "}".repeat(5000)
                ),
                "deeply nested metadata",
            ),
            (
                format!(
                    r#"{{"filename":"a","size":3,"metadata":{{"x":"{}"}}}}"#,
                    "y".repeat(10 << 20)
                ),
                "10 MB JSON",
            ),
        ];
        for (body, what) in bodies {
            let r = app
                .request(Method::POST, "/api/v1/uploads")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_client_error(r, what).await;
        }
        let mut invalid_utf8 = br#"{"filename":""#.to_vec();
        invalid_utf8.extend([0xff, 0xfe, 0xc3]);
        invalid_utf8.extend(br#"","size":3}"#);
        let r = app
            .request(Method::POST, "/api/v1/uploads")
            .body(invalid_utf8)
            .send()
            .await
            .unwrap();
        assert_client_error(r, "invalid UTF-8").await;
        let created = app.create_for(b"abc", 1024).await;
        let id = created["id"].as_str().unwrap();
        for digest in [
            "sha-256=:not base64!:",
            "sha-256=",
            "sha-256=:YWJj:",
            "sha-256=:YWJj",
        ] {
            let r = app
                .put_chunk_with_digest(id, 0, b"abc".to_vec(), digest)
                .await;
            assert_client_error(r, &format!("Content-Digest {digest:?}")).await;
        }
        still_serving(&app).await;
    })
    .await;
}

#[tokio::test]
async fn a_thousand_idle_connections_do_not_starve_others() {
    bounded_for(Duration::from_secs(60), async {
        let app = spawn_app_with(|s| s.limits.header_timeout = Duration::from_secs(2)).await;
        // Each sends half a request head and then nothing (slow headers).
        let mut conns = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
                .await
                .expect("connect");
            s.write_all(b"POST /api/v1/uploads HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            conns.push(s);
        }
        still_serving(&app).await;
        // The server drops them once the head timeout has passed: wait for
        // each to end (its socket's own event, not a fixed sleep), up to a bound.
        let within = Duration::from_secs(10);
        let ends = conns.into_iter().map(|mut s| async move {
            let mut buf = [0u8; 512];
            tokio::time::timeout(within, s.read(&mut buf)).await.is_ok()
        });
        let closed = futures::future::join_all(ends)
            .await
            .into_iter()
            .filter(|&ended| ended)
            .count();
        assert!(
            closed >= 990,
            "only {closed} of 1000 stalled connections were dropped"
        );
        still_serving(&app).await;
    })
    .await;
}

#[tokio::test]
async fn a_slow_loris_body_on_a_chunk_is_dropped() {
    bounded(async {
        let app = spawn_app_with(|s| s.limits.body_idle_timeout = Duration::from_secs(1)).await;
        let id = app.create_for(&test_data(2048, 1), 1024).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // One byte, then nothing for longer than the idle limit: the server
        // answers as soon as the limit has passed (waited for up to 5 s).
        let mut r = RawRequest::start(&app, "PUT", &chunk_url(&id, 0), 1024).await;
        r.send(b"a").await;
        let (status, body) = r.read_answer(Duration::from_secs(5)).await;
        assert_eq!(status, Some(408), "{body}");
        still_serving(&app).await;
    })
    .await;
}
