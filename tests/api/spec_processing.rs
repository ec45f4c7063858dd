//! Conformance battery for `PUT /api/v1/uploads/{id}/processing`, written
//! from docs/API.md and issue 11 alone: the documented validation, who may
//! report (the API key) and who may read (the upload token), states and
//! revisions, results of every JSON kind and size, and concurrent reports
//! each counted exactly once.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

fn path(id: &str) -> String {
    format!("/api/v1/uploads/{id}/processing")
}

/// A report with a raw body, as the API key when `auth` is on.
async fn put_raw(app: &TestApp, id: &str, body: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = app
        .request(Method::PUT, &path(id))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.unwrap()
}

async fn put(app: &TestApp, id: &str, body: &Value) -> reqwest::Response {
    put_raw(app, id, &body.to_string(), None).await
}

/// A completed upload of a few bytes on an app without authentication.
async fn completed(app: &TestApp, seed: u64) -> String {
    let done = app.upload_all(&test_data(3000, seed), 1024).await;
    done["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_documented_validation_answers_400_and_keeps_nothing() {
    bounded(async {
        let app = spawn_app().await;
        let id = completed(&app, 1).await;
        let bad = [
            "",
            "{",
            "[]",
            "\"queued\"",
            "null",
            "{}",
            r#"{"state": null}"#,
            r#"{"state": "done"}"#,
            r#"{"state": "QUEUED"}"#,
            r#"{"state": 1}"#,
            r#"{"state": "processing", "progress": -0.01}"#,
            r#"{"state": "processing", "progress": 1.0001}"#,
            r#"{"state": "processing", "progress": 1e400}"#,
            r#"{"state": "processing", "progress": "0.5"}"#,
            r#"{"state": "processing", "message": 7}"#,
            r#"{"state": "queued"} {"state": "queued"}"#,
        ];
        for body in bad {
            let answer =
                assert_error(put_raw(&app, &id, body, None).await, 400, "invalid_request").await;
            assert!(
                !answer["message"].as_str().unwrap().is_empty(),
                "{body}: {answer}"
            );
        }
        let long = "m".repeat(1001);
        let answer = assert_error(
            put(&app, &id, &json!({"state": "queued", "message": long})).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(
            answer["message"].as_str().unwrap().contains("message"),
            "names the field: {answer}"
        );
        // None of them was kept.
        let view = app.status_json(&id).await;
        assert!(view.get("processing").is_none(), "{view}");

        // The bounds themselves are fine: 0, 1, and 1000 characters (of
        // any width: characters, not bytes).
        for (progress, revision) in [(0.0, 1), (1.0, 2)] {
            let body = json!({"state": "processing", "progress": progress});
            let view = expect_json(put(&app, &id, &body).await, 200).await;
            assert_eq!(view["processing"]["progress"], progress, "{view}");
            assert_eq!(view["processing"]["revision"], revision, "{view}");
        }
        let wide = "é".repeat(500) + &"🎞".repeat(500);
        let body = json!({"state": "processing", "message": wide});
        let view = expect_json(put(&app, &id, &body).await, 200).await;
        assert_eq!(view["processing"]["message"], wide.as_str());

        // Unknown fields are ignored and named.
        let body = json!({"state": "queued", "eta": 30, "worker": {"id": 1}});
        let view = expect_json(put(&app, &id, &body).await, 200).await;
        assert_eq!(view["processing"]["state"], "queued", "{view}");
        let warnings = view["warnings"].to_string();
        assert!(
            warnings.contains("eta") && warnings.contains("worker"),
            "{view}"
        );
        assert!(view["processing"].get("eta").is_none(), "{view}");
    })
    .await;
}

#[tokio::test]
async fn only_the_api_key_reports_and_the_upload_token_reads() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let data = test_data(2000, 2);
        let created = app
            .request(Method::POST, "/api/v1/uploads")
            .bearer_auth(TEST_API_KEY)
            .json(&json!({"filename": "p.bin", "size": data.len(), "chunk_size": 1024}))
            .send()
            .await
            .unwrap();
        let created = expect_json(created, 201).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let token = created["upload_token"].as_str().unwrap().to_owned();
        for (i, chunk) in chunks_of(&data, 1024).into_iter().enumerate() {
            let r = app
                .request(Method::PUT, &chunk_url(&id, i))
                .bearer_auth(&token)
                .body(chunk)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let r = app
            .request(Method::POST, &format!("/api/v1/uploads/{id}/complete"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        expect_json(r, 200).await;
        let body = r#"{"state": "processing", "progress": 0.25}"#;

        assert_error(put_raw(&app, &id, body, None).await, 401, "unauthorized").await;
        assert_error(
            put_raw(&app, &id, body, Some("not-the-key-0123456789abcdef")).await,
            401,
            "unauthorized",
        )
        .await;
        assert_error(
            put_raw(&app, &id, body, Some(&token)).await,
            403,
            "forbidden",
        )
        .await;
        // An unauthenticated caller learns nothing, not even a 400 for a bad body.
        assert_error(put_raw(&app, &id, "{", None).await, 401, "unauthorized").await;

        let view = expect_json(put_raw(&app, &id, body, Some(TEST_API_KEY)).await, 200).await;
        assert_eq!(view["processing"]["revision"], 1, "{view}");

        // The upload token reads the report; no one else does.
        let read = app
            .request(Method::GET, &format!("/api/v1/uploads/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let read = expect_json(read, 200).await;
        assert_eq!(read["processing"]["state"], "processing", "{read}");
        assert_eq!(read["processing"]["progress"], 0.25, "{read}");
        let anonymous = app
            .request(Method::GET, &format!("/api/v1/uploads/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401);
    })
    .await;
}

#[tokio::test]
async fn every_state_is_taken_in_any_order_and_numbered() {
    bounded(async {
        let app = spawn_app().await;
        let id = completed(&app, 3).await;
        let states = [
            "queued",
            "processing",
            "completed",
            "failed",
            "processing",
            "queued",
        ];
        for (n, state) in states.iter().enumerate() {
            let view = expect_json(put(&app, &id, &json!({"state": state})).await, 200).await;
            let p = &view["processing"];
            assert_eq!(p["state"], *state, "{view}");
            assert_eq!(p["revision"], n as u64 + 1, "{view}");
            assert!(
                p.get("progress").is_none() || p["progress"].is_null(),
                "{p}"
            );
            assert_eq!(view["status"], "completed", "{view}");
            let again = app.status_json(&id).await;
            assert_eq!(again["processing"], view["processing"]);
        }
        // The file itself is untouched by reports.
        let bytes = app.download(&id).await.bytes().await.unwrap();
        assert_eq!(&bytes[..], &test_data(3000, 3)[..]);
    })
    .await;
}

#[tokio::test]
async fn results_of_any_json_kind_come_back_as_sent() {
    bounded(async {
        let app = spawn_app().await;
        let id = completed(&app, 4).await;
        let results = [
            json!(42),
            json!(-1.5),
            json!("a string: ünïcødé ✓ 中文"),
            json!([1, "two", {"three": [3]}, null]),
            json!(true),
            json!({"ключ": "значение", "emoji 🎉": ["🎞", "\u{0}"], "nested": {"a": {"b": {}}}}),
            json!([]),
            json!(""),
        ];
        for (n, result) in results.iter().enumerate() {
            let body = json!({"state": "completed", "result": result});
            let view = expect_json(put(&app, &id, &body).await, 200).await;
            assert_eq!(view["processing"]["result"], *result, "{view}");
            assert_eq!(view["processing"]["revision"], n as u64 + 1);
            assert_eq!(app.status_json(&id).await["processing"]["result"], *result);
        }
        // A null result is no result.
        let view = expect_json(
            put(&app, &id, &json!({"state": "completed", "result": null})).await,
            200,
        )
        .await;
        let result = view["processing"]
            .get("result")
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(result, Value::Null, "{view}");
    })
    .await;
}

#[tokio::test]
async fn a_result_near_the_json_limit_is_kept_and_one_over_it_is_a_clear_400() {
    bounded(async {
        let limit = 8 * 1024;
        let app = spawn_app_with(|s| s.limits.max_json_bytes = bytesize::ByteSize::b(limit)).await;
        let id = completed(&app, 5).await;
        let body_of = |filler: usize| {
            json!({"state": "completed", "result": {"blob": "ü".repeat(filler / 2)}}).to_string()
        };
        // The largest body within the limit.
        let mut filler = limit as usize;
        while body_of(filler).len() as u64 > limit {
            filler -= 2;
        }
        let body = body_of(filler);
        assert!(body.len() as u64 > limit - 4, "{}", body.len());
        let view = expect_json(put_raw(&app, &id, &body, None).await, 200).await;
        let sent: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(view["processing"]["result"], sent["result"]);
        assert_eq!(
            app.status_json(&id).await["processing"]["result"],
            sent["result"]
        );

        // One byte over: 400, and the last report stays.
        let over = body_of(filler + 2);
        assert!(over.len() as u64 > limit);
        let answer = assert_error(
            put_raw(&app, &id, &over, None).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(
            answer["message"].as_str().unwrap().contains("larger"),
            "{answer}"
        );
        // Sent without a Content-Length too (chunked): the same answer.
        let stream = futures::stream::iter(
            over.clone()
                .into_bytes()
                .chunks(1000)
                .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                .collect::<Vec<_>>(),
        );
        let chunked = app
            .request(Method::PUT, &path(&id))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap();
        assert_error(chunked, 400, "invalid_request").await;
        let view = app.status_json(&id).await;
        assert_eq!(view["processing"]["revision"], 1, "{view}");
        // Far over (a worker's mistake, megabytes): still a 400.
        let huge = body_of(4 * 1024 * 1024);
        assert_error(
            put_raw(&app, &id, &huge, None).await,
            400,
            "invalid_request",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn an_upload_without_a_file_gets_no_report() {
    bounded(async {
        let app = spawn_app().await;
        let body = json!({"state": "queued"});

        // Still uploading, then failed (digest mismatch).
        let data = test_data(2000, 6);
        let created = app
            .create(
                json!({"filename": "f.bin", "size": 2000, "chunk_size": 1024,
                           "sha256": sha256_hex(b"something else")}),
            )
            .await;
        let id = expect_json(created, 201).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_error(put(&app, &id, &body).await, 409, "upload_not_completed").await;
        app.send_chunks(&id, &data, 1024, 0..2).await;
        assert_error(app.complete(&id).await, 422, "digest_mismatch").await;
        assert_error(put(&app, &id, &body).await, 409, "upload_not_completed").await;

        // Aborted: gone.
        let created = app.create_for(&data, 1024).await;
        let aborted = created["id"].as_str().unwrap().to_owned();
        assert_eq!(app.abort(&aborted).await.status(), 204);
        let resp = put(&app, &aborted, &body).await;
        let status = resp.status().as_u16();
        assert!(status == 404 || status == 410, "aborted: {status}");
        assert_error(
            resp,
            status,
            if status == 404 {
                "upload_not_found"
            } else {
                "upload_aborted"
            },
        )
        .await;

        // Unknown, and not an id at all.
        let unknown = uuid::Uuid::new_v4().to_string();
        assert_error(put(&app, &unknown, &body).await, 404, "upload_not_found").await;
        let resp = put(&app, "not-an-id", &body).await;
        let status = resp.status().as_u16();
        assert!(status == 400 || status == 404, "bad id: {status}");
        let text = resp.text().await.unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_ok(), "{text}");

        // Completed, reported on, then its file deleted: no more reports.
        let id = completed(&app, 7).await;
        expect_json(put(&app, &id, &body).await, 200).await;
        assert_eq!(app.delete_file(&id, None).await.status(), 204);
        assert_error(put(&app, &id, &body).await, 404, "upload_not_found").await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_reports_are_each_counted_once() {
    bounded(async {
        let app = spawn_app().await;
        let id = completed(&app, 8).await;
        let reports = (0..20).map(|n| {
            let body = json!({"state": "processing", "progress": n as f64 / 20.0,
                              "message": format!("report {n}")});
            let app = &app;
            let id = &id;
            async move { expect_json(put(app, id, &body).await, 200).await }
        });
        let answers = futures::future::join_all(reports).await;
        let mut revisions: Vec<u64> = answers
            .iter()
            .map(|v| v["processing"]["revision"].as_u64().unwrap())
            .collect();
        revisions.sort_unstable();
        assert_eq!(revisions, (1..=20).collect::<Vec<u64>>());
        let last = app.status_json(&id).await;
        assert_eq!(last["processing"]["revision"], 20, "{last}");
        // The report kept is the one numbered 20.
        let twentieth = answers
            .iter()
            .find(|v| v["processing"]["revision"] == 20)
            .unwrap();
        assert_eq!(
            last["processing"]["message"],
            twentieth["processing"]["message"]
        );
    })
    .await;
}

#[tokio::test]
async fn a_file_past_its_retention_takes_no_more_reports() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(1500, 9);
        let created = app
            .create(json!({"filename": "r.bin", "size": 1500, "chunk_size": 1024, "retention": 60}))
            .await;
        let id = expect_json(created, 201).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.send_chunks(&id, &data, 1024, 0..2).await;
        expect_json(app.complete(&id).await, 200).await;
        expect_json(put(&app, &id, &json!({"state": "queued"})).await, 200).await;

        app.ctx.clock.advance(std::time::Duration::from_secs(61));
        // Gone for its clients before the janitor comes: gone for workers too.
        let resp = put(&app, &id, &json!({"state": "processing"})).await;
        let status = resp.status().as_u16();
        assert!(status == 404 || status == 410, "past retention: {status}");
        let text = resp.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        assert!(body["error"].is_string(), "{text}");
        tranche::janitor::sweep(&app.ctx).await.unwrap();
        let body = json!({"state": "completed"});
        assert_error(put(&app, &id, &body).await, 404, "upload_not_found").await;
    })
    .await;
}

#[tokio::test]
async fn tus_and_dedup_uploads_take_reports_and_other_methods_are_405() {
    bounded(async {
        let app = spawn_app().await;
        let tus = crate::tus_client::Tus::new(&app);
        let url = tus.upload(b"tus bytes", 4, None).await;
        let id = crate::tus_client::upload_id(&url);
        tus.completed_view(&id, std::time::Duration::from_secs(5))
            .await;
        let view = expect_json(
            put(&app, &id, &json!({"state": "processing", "progress": 0.5})).await,
            200,
        )
        .await;
        assert_eq!(view["processing"]["revision"], 1, "{view}");

        // A create answered from a stored file is completed at once: reportable.
        let data = test_data(2048, 10);
        let first = app
            .create(
                json!({"filename": "a.bin", "size": 2048, "chunk_size": 1024,
                           "sha256": sha256_hex(&data)}),
            )
            .await;
        let first = expect_json(first, 201).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.send_chunks(&first, &data, 1024, 0..2).await;
        expect_json(app.complete(&first).await, 200).await;
        let dedup = app
            .create(json!({"filename": "b.bin", "size": 2048, "sha256": sha256_hex(&data)}))
            .await;
        let dedup = expect_json(dedup, 201).await;
        assert_eq!(dedup["status"], "completed", "{dedup}");
        let dedup = dedup["id"].as_str().unwrap();
        let view = expect_json(
            put(&app, dedup, &json!({"state": "failed", "message": "x"})).await,
            200,
        )
        .await;
        assert_eq!(view["processing"]["state"], "failed", "{view}");
        // Each upload has its own report.
        assert!(app.status_json(&first).await.get("processing").is_none());

        for method in [Method::GET, Method::POST, Method::DELETE, Method::PATCH] {
            let resp = app
                .request(method.clone(), &path(dedup))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 405, "{method}");
            let text = resp.text().await.unwrap();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert!(body["error"].is_string(), "{method}: {text}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_file_deleted_once_downloaded_takes_no_more_reports() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(1500, 11);
        let created = app
            .create(
                json!({"filename": "once.bin", "size": 1500, "chunk_size": 1024,
                           "retention_after_download": true}),
            )
            .await;
        let id = expect_json(created, 201).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.send_chunks(&id, &data, 1024, 0..2).await;
        expect_json(app.complete(&id).await, 200).await;
        expect_json(put(&app, &id, &json!({"state": "queued"})).await, 200).await;
        let got = app.download(&id).await.bytes().await.unwrap();
        assert_eq!(&got[..], &data[..]);
        // Deleted once downloaded in full (at once or shortly after).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let resp = put(&app, &id, &json!({"state": "processing"})).await;
            if resp.status() != 200 {
                assert_error(resp, 404, "upload_not_found").await;
                break;
            }
            assert!(std::time::Instant::now() < deadline, "still reportable");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(app.download(&id).await.status(), 404);
    })
    .await;
}
