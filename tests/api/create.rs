//! `POST /api/v1/uploads`: the create answer, chunk size negotiation,
//! idempotency and input validation.

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::helpers::*;

fn parse_time(v: &Value) -> OffsetDateTime {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
}

#[tokio::test]
async fn create_answers_201_with_location_and_every_documented_field() {
    bounded(async {
        let app = spawn_app().await;
        let before = OffsetDateTime::now_utc();
        let resp = app
            .create(json!({
                "filename": "lecture-01.mp4", "size": 300_000,
                "content_type": "video/mp4", "chunk_size": 65536,
                "metadata": {"course": "101"}
            }))
            .await;
        assert_eq!(resp.status(), 201);
        let location = resp
            .headers()
            .get("location")
            .expect("Location header")
            .to_str()
            .unwrap()
            .to_owned();
        let body = expect_json(resp, 201).await;

        let id = body["id"].as_str().expect("id is a string");
        uuid::Uuid::parse_str(id).expect("id is a UUID");
        assert_eq!(location, format!("/api/v1/uploads/{id}"));
        assert_eq!(body["filename"], "lecture-01.mp4");
        assert_eq!(body["size"], 300_000);
        assert_eq!(body["content_type"], "video/mp4");
        assert_eq!(body["chunk_size"], 65536);
        // ceil(300000 / 65536) = 5, the last one short.
        assert_eq!(body["chunk_count"], 5);
        assert_eq!(body["status"], "uploading");
        assert_eq!(body["received_chunks"], 0);
        assert_eq!(body["bytes_received"], 0);
        assert_eq!(body["missing_chunks"], json!([0, 1, 2, 3, 4]));
        // Authentication is off: no token to hand out.
        assert!(
            body.get("upload_token").is_none_or(Value::is_null),
            "{body}"
        );

        let created = parse_time(&body["created_at"]);
        let expires = parse_time(&body["expires_at"]);
        // Whole seconds on the wire, so allow one second of truncation.
        assert!(
            created >= before - time::Duration::seconds(1),
            "{created} before {before}"
        );
        assert!(created <= OffsetDateTime::now_utc() + time::Duration::seconds(1));
        let ttl = expires - created;
        let want = time::Duration::seconds(app.ctx.settings.upload_ttl.as_secs() as i64);
        assert!(
            (ttl - want).abs() <= time::Duration::seconds(1),
            "expires_at - created_at = {ttl}, upload_ttl = {want}"
        );

        // GET gives the same object.
        let view = app.status_json(id).await;
        for field in [
            "id",
            "filename",
            "size",
            "content_type",
            "chunk_size",
            "chunk_count",
            "status",
        ] {
            assert_eq!(view[field], body[field], "field {field}");
        }
    })
    .await
}

#[tokio::test]
async fn create_without_content_type_or_chunk_size_uses_defaults() {
    bounded(async {
        let app = spawn_app().await;
        let body = expect_json(
            app.create(json!({"filename": "a.bin", "size": 200_000}))
                .await,
            201,
        )
        .await;
        assert_eq!(body["chunk_size"], app.ctx.settings.chunk_size.0);
        assert_eq!(
            body["chunk_count"],
            200_000u64.div_ceil(app.ctx.settings.chunk_size.0)
        );
        assert!(body["content_type"].is_string(), "{body}");
    })
    .await
}

#[tokio::test]
async fn chunk_size_wish_is_clamped_to_the_configured_bounds() {
    bounded(async {
        let app = spawn_app_with(|s| s.max_chunk_size = bytesize::ByteSize::kib(256)).await;
        let size = 1_000_000u64;
        let wishes = [
            (0u64, 1024u64),
            (1, 1024),
            (1 << 30, 256 * 1024),
            (4096, 4096),
        ];
        for (wish, got) in wishes {
            let body = expect_json(
                app.create(json!({"filename": "c.bin", "size": size, "chunk_size": wish}))
                    .await,
                201,
            )
            .await;
            assert_eq!(body["chunk_size"], got, "wish {wish}");
            assert_eq!(body["chunk_count"], size.div_ceil(got), "wish {wish}");
            let missing = body["missing_chunks"].as_array().unwrap();
            assert_eq!(missing.len() as u64, size.div_ceil(got));
        }
    })
    .await
}

#[tokio::test]
async fn zero_byte_file_has_one_empty_chunk_and_downloads_empty() {
    bounded(async {
        let app = spawn_app().await;
        let body = expect_json(
            app.create(json!({"filename": "empty.txt", "size": 0}))
                .await,
            201,
        )
        .await;
        assert_eq!(body["chunk_count"], 1);
        assert_eq!(body["missing_chunks"], json!([0]));
        let id = body["id"].as_str().unwrap();

        let chunk = expect_json(app.put_chunk(id, 0, Vec::new()).await, 200).await;
        assert_eq!(chunk["index"], 0);
        assert_eq!(chunk["size"], 0);
        assert_eq!(chunk["received_chunks"], 1);

        let done = expect_json(app.complete(id).await, 200).await;
        assert_eq!(done["status"], "completed");
        assert_eq!(done["file"]["size"], 0);
        assert_eq!(done["file"]["sha256"], sha256_hex(b""));

        let resp = app.download(id).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-length"], "0");
        assert!(resp.bytes().await.unwrap().is_empty());
    })
    .await
}

#[tokio::test]
async fn idempotency_key_returns_the_first_answer_and_creates_nothing_more() {
    bounded(async {
        let app = spawn_app().await;
        let create = |key: &'static str| {
            app.request(reqwest::Method::POST, "/api/v1/uploads")
                .header("idempotency-key", key)
                .json(&json!({"filename": "same.bin", "size": 5000, "chunk_size": 1024}))
                .send()
        };
        let first = create("key-1").await.unwrap();
        assert_eq!(first.status(), 201);
        let first = first.json::<Value>().await.unwrap();
        let again = create("key-1").await.unwrap();
        assert!(again.status().is_success(), "{}", again.status());
        let again = again.json::<Value>().await.unwrap();
        assert_eq!(again["id"], first["id"]);
        assert_eq!(again, first, "a retried create must get the first answer");

        // Two retries racing must still agree on one upload.
        let (a, b) = tokio::join!(create("key-2"), create("key-2"));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.status().is_success() && b.status().is_success());
        let (a, b) = (
            a.json::<Value>().await.unwrap(),
            b.json::<Value>().await.unwrap(),
        );
        assert_eq!(a["id"], b["id"]);
        assert_ne!(
            a["id"], first["id"],
            "a different key is a different upload"
        );

        // The same key for another file is a client's mistake, not a retry.
        let reused = app
            .request(reqwest::Method::POST, "/api/v1/uploads")
            .header("idempotency-key", "key-1")
            .json(&json!({"filename": "other.bin", "size": 99}))
            .send()
            .await
            .unwrap();
        assert_error(reused, 422, "idempotency_key_reused").await;

        // A key names one request: sent twice, the header is refused plainly.
        let twice = app
            .request(reqwest::Method::POST, "/api/v1/uploads")
            .header("idempotency-key", "key-1")
            .header("idempotency-key", "key-1")
            .json(&json!({"filename": "same.bin", "size": 5000, "chunk_size": 1024}))
            .send()
            .await
            .unwrap();
        let body = assert_error(twice, 400, "invalid_request").await;
        assert!(body["message"].as_str().unwrap().contains("once"), "{body}");

        // Exactly two uploads exist: one per key.
        let parts = std::fs::read_dir(app.data_dir.join("uploads"))
            .unwrap()
            .count();
        assert_eq!(parts, 2, "one part file per distinct key");
    })
    .await
}

/// Sends a raw create body and expects 400 invalid_request.
async fn assert_rejected(app: &TestApp, body: &str, why: &str) {
    let resp = app
        .request(reqwest::Method::POST, "/api/v1/uploads")
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 400, "{why}: body {body} answered {status}: {text}");
    let err: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{why}: not JSON: {text}"));
    assert_eq!(err["error"], "invalid_request", "{why}: {err}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{why}: {err}"
    );
}

#[tokio::test]
async fn bad_create_requests_answer_400_invalid_request() {
    bounded(async {
        let app = spawn_app().await;
        let cases: &[(&str, &str)] = &[
            (r#"{"filename": "a.bin", "size": "#, "malformed JSON"),
            ("not json at all", "not JSON"),
            (r#"{"size": 100}"#, "missing filename"),
            (r#"{"filename": "a.bin"}"#, "missing size"),
            (r#"{"filename": "a.bin", "size": -1}"#, "negative size"),
            (r#"{"filename": "a.bin", "size": 1.5}"#, "non-integer size"),
            (r#"{"filename": "a.bin", "size": "100"}"#, "size as a string"),
            (r#"{"filename": "", "size": 100}"#, "empty filename"),
            (r#"{"filename": 7, "size": 100}"#, "filename not a string"),
            (r#"{"filename": "a.bin", "size": 100, "sha256": "abc"}"#, "short sha256"),
            (
                r#"{"filename": "a.bin", "size": 100, "sha256": "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"}"#,
                "non-hex sha256",
            ),
            (r#"{"filename": "a.bin", "size": 100, "content_type": "not a type"}"#, "content_type garbage"),
            (r#"{"filename": "a.bin", "size": 100, "content_type": "video"}"#, "content_type without subtype"),
            (r#"{"filename": "a\u0000b.bin", "size": 100}"#, "filename with NUL"),
            (r#"{"filename": "a\rb.bin", "size": 100}"#, "filename with CR"),
            (r#"{"filename": "a\nb.bin", "size": 100}"#, "filename with LF"),
            (r#"{"filename": "a.bin", "size": 100} x"#, "trailing garbage"),
            (
                r#"{"filename": "a.bin", "size": 100}{"filename": "b.bin", "size": 1}"#,
                "two JSON documents",
            ),
        ];
        for (body, why) in cases {
            assert_rejected(&app, body, why).await;
        }
        // None of them may have left an upload behind.
        let parts = std::fs::read_dir(app.data_dir.join("uploads")).unwrap().count();
        assert_eq!(parts, 0);
    })
    .await
}

#[tokio::test]
async fn size_above_max_file_size_answers_413_file_too_large() {
    bounded(async {
        let app = spawn_app_with(|s| s.max_file_size = bytesize::ByteSize::kib(100)).await;
        let resp = app
            .create(json!({"filename": "big.bin", "size": 100 * 1024 + 1}))
            .await;
        assert_error(resp, 413, "file_too_large").await;
        // The limit itself is allowed.
        let resp = app
            .create(json!({"filename": "ok.bin", "size": 100 * 1024}))
            .await;
        assert_eq!(resp.status(), 201);
    })
    .await
}
