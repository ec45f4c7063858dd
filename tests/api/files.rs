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

/// Creates, sends and completes `data` with the create body's extra fields.
async fn upload_with(app: &TestApp, data: &[u8], extra: serde_json::Value) -> serde_json::Value {
    let mut body = json!({"filename": "r.bin", "size": data.len(), "chunk_size": 1024});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let created = expect_json(app.create(body).await, 201).await;
    let id = id_of(&created);
    app.send_chunks(&id, data, 1024, 0..chunks_of(data, 1024).len() as u64)
        .await;
    let done = expect_json(app.complete(&id).await, 200).await;
    assert_eq!(done["retention"], created["retention"]);
    done
}

#[tokio::test]
async fn a_file_past_its_retention_is_deleted_and_the_others_kept() {
    bounded(async {
        let app = spawn_app_with(|s| {
            s.retention = Some(std::time::Duration::from_secs(7200));
            s.janitor_interval = std::time::Duration::from_secs(3600);
        })
        .await;
        let data = test_data(2500, 41);
        let short = upload_with(&app, &data, json!({"retention": 60})).await;
        assert_eq!(short["retention"], 60);
        assert!(short["file"]["expires_at"].is_string(), "{short}");
        assert_eq!(short["expires_at"], short["file"]["expires_at"]);
        // No wish: the server's retention; a longer wish is capped by it.
        let default = upload_with(&app, &data, json!({})).await;
        assert_eq!(default["retention"], 7200);
        let long = upload_with(&app, &data, json!({"retention": 90000})).await;
        assert_eq!(long["retention"], 7200);
        let (short, default) = (id_of(&short), id_of(&default));

        app.ctx.clock.advance(std::time::Duration::from_secs(61));
        // Past its retention, it is gone even before the janitor comes.
        assert_error(app.download(&short).await, 404, "file_not_found").await;
        let report = tranche::janitor::sweep(&app.ctx).await.unwrap();
        assert_eq!(report.expired_files, 1, "{report:?}");
        assert!(!app.file_path(&short).exists(), "the bytes stayed");
        assert_error(app.status(&short).await, 404, "upload_not_found").await;
        let kept = app.download(&default).await;
        assert_eq!(kept.status(), 200);
        assert_eq!(&kept.bytes().await.unwrap()[..], &data[..]);

        app.ctx.clock.advance(std::time::Duration::from_secs(7200));
        let report = tranche::janitor::sweep(&app.ctx).await.unwrap();
        assert_eq!(report.expired_files, 2, "{report:?}");
        assert!(!app.file_path(&default).exists());
        let text = app.metrics_text().await;
        assert_eq!(
            metric_value(&text, "tranche_files_deleted_total", Some("retention")),
            Some(3.0),
            "{text}"
        );
        // Swept 61 s after its end: the lag the metric shows.
        let lag = metric_value(&text, "tranche_file_deletion_lag_seconds", None).unwrap();
        assert!((59.0..=70.0).contains(&lag), "{lag}");
    })
    .await
}

#[tokio::test]
async fn files_are_kept_until_deleted_by_default_and_bad_retentions_refused() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(1500, 42);
        let forever = upload_with(&app, &data, json!({})).await;
        assert!(forever.get("retention").is_none(), "{forever}");
        assert!(forever["file"].get("expires_at").is_none(), "{forever}");
        let short = id_of(&upload_with(&app, &data, json!({"retention": 30})).await);
        app.ctx
            .clock
            .advance(std::time::Duration::from_secs(365 * 24 * 3600));
        let report = tranche::janitor::sweep(&app.ctx).await.unwrap();
        assert_eq!(report.expired_files, 1, "{report:?}");
        assert_error(app.download(&short).await, 404, "file_not_found").await;
        assert_eq!(app.download(&id_of(&forever)).await.status(), 200);

        for bad in [
            json!(0),
            json!(-5),
            json!("7d"),
            json!(1.5),
            json!(u64::MAX),
        ] {
            let resp = app
                .create(json!({"filename": "b", "size": 10, "retention": bad}))
                .await;
            assert_error(resp, 400, "invalid_request").await;
        }
    })
    .await
}

#[tokio::test]
async fn a_create_tokens_max_retention_caps_its_files() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let token = test_tokens()
            .mint(&tranche::guards::auth::Claims {
                exp: tranche::guards::auth::token::unix_now() + 600,
                max_retention: Some(30),
                ..Default::default()
            })
            .unwrap();
        for (asked, got) in [(None, 30), (Some(100), 30), (Some(10), 10)] {
            let mut body = json!({"filename": "t", "size": 10});
            if let Some(asked) = asked {
                body["retention"] = json!(asked);
            }
            let resp = app
                .request(Method::POST, "/api/v1/uploads")
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(expect_json(resp, 201).await["retention"], got, "{asked:?}");
        }
    })
    .await
}

/// Flips one bit of the byte at `at` of a file on disk.
fn flip_byte(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

async fn scrub_as(app: &TestApp, credential: Option<&str>, query: &str) -> reqwest::Response {
    let mut req = app.request(Method::POST, &format!("/api/v1/admin/scrub{query}"));
    if let Some(c) = credential {
        req = req.bearer_auth(c);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn scrub_catches_a_flipped_byte_and_an_orphan() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let data = test_data(4000, 51);
        let (good, token) = keyed_file(&app, &data).await;
        let (bad, _) = keyed_file(&app, &data).await;

        // Only an API key may scrub.
        assert_error(scrub_as(&app, None, "").await, 401, "unauthorized").await;
        assert_error(scrub_as(&app, Some(&token), "").await, 403, "forbidden").await;
        let clean = expect_json(scrub_as(&app, Some(TEST_API_KEY), "").await, 200).await;
        assert_eq!(clean["files"], 2, "{clean}");
        assert_eq!(clean["bytes"], 8000, "{clean}");
        assert_eq!(clean["mismatches"], json!([]), "{clean}");
        assert_eq!(clean["orphans"], json!([]), "{clean}");
        assert_eq!(clean["missing"], json!([]), "{clean}");

        flip_byte(&app.file_path(&bad), 3210);
        let orphan = uuid::Uuid::new_v4().to_string();
        let orphan_path = app.file_path(&orphan);
        std::fs::create_dir_all(orphan_path.parent().unwrap()).unwrap();
        std::fs::write(&orphan_path, b"no record names me").unwrap();

        let found = expect_json(
            scrub_as(&app, Some(TEST_API_KEY), "?bandwidth=1000000").await,
            200,
        )
        .await;
        assert_eq!(found["files"], 2, "{found}");
        let mismatches = found["mismatches"].as_array().unwrap();
        assert_eq!(mismatches.len(), 1, "{found}");
        assert_eq!(mismatches[0]["id"], bad.as_str());
        assert_eq!(mismatches[0]["expected"], sha256_hex(&data).as_str());
        assert_ne!(mismatches[0]["actual"], sha256_hex(&data).as_str());
        assert_eq!(found["orphans"], json!([orphan]), "{found}");
        // Reported, not changed: the good file is served as before.
        assert_eq!(
            app.request(Method::GET, &format!("/api/v1/files/{good}"))
                .bearer_auth(TEST_API_KEY)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let text = app.metrics_text().await;
        assert_eq!(
            metric_value(&text, "tranche_scrub_files_total", None),
            Some(4.0)
        );
        assert_eq!(
            metric_value(&text, "tranche_scrub_mismatches_total", None),
            Some(1.0)
        );
        assert_eq!(
            metric_value(&text, "tranche_scrub_orphans_total", None),
            Some(1.0)
        );
        assert_error(
            scrub_as(&app, Some(TEST_API_KEY), "?bandwidth=fast").await,
            400,
            "invalid_request",
        )
        .await;
    })
    .await
}

#[tokio::test]
async fn the_scrub_keeps_to_its_bandwidth() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(64 * 1024, 52);
        app.upload_all(&data, 16 * 1024).await;
        let started = std::time::Instant::now();
        // 64 KiB at 128 KiB/s: about half a second, not at once.
        let report = tranche::core::scrub(&app.ctx, Some(128 * 1024))
            .await
            .unwrap();
        assert_eq!(report.files, 1);
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
    })
    .await
}

#[tokio::test]
async fn scrub_reports_a_completed_file_whose_bytes_are_missing() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let data = test_data(3000, 53);
        let (kept, _) = keyed_file(&app, &data).await;
        let (lost, _) = keyed_file(&app, &data).await;
        // An upload in progress has no file yet: not missing.
        let pending = app
            .request(Method::POST, "/api/v1/uploads")
            .bearer_auth(TEST_API_KEY)
            .json(&json!({"filename": "p.bin", "size": 10}))
            .send()
            .await
            .unwrap();
        expect_json(pending, 201).await;
        std::fs::remove_file(app.file_path(&lost)).unwrap();

        let found = expect_json(scrub_as(&app, Some(TEST_API_KEY), "").await, 200).await;
        assert_eq!(found["missing"], json!([lost]), "{found}");
        assert_eq!(found["files"], 1, "{found}");
        assert_eq!(found["mismatches"], json!([]), "{found}");
        assert_eq!(found["orphans"], json!([]), "{found}");
        let text = app.metrics_text().await;
        assert_eq!(
            metric_value(&text, "tranche_scrub_missing_total", None),
            Some(1.0)
        );
        // Deleted as a file, it is missing no more.
        assert_eq!(
            app.delete_file(&lost, Some(TEST_API_KEY)).await.status(),
            204
        );
        let found = expect_json(scrub_as(&app, Some(TEST_API_KEY), "").await, 200).await;
        assert_eq!(found["missing"], json!([]), "{found}");
        assert_eq!(found["files"], 1, "{found}");
        assert!(app.file_path(&kept).exists());
    })
    .await
}
