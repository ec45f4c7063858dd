//! Conformance battery for `GET /api/v1/uploads/{id}/events`, written from
//! docs/API.md ("Live progress") and issue 11: a whole life on one stream
//! (progress, completion, reports, the end), the data being the upload
//! object, `Last-Event-ID` (only what was missed, the last report only,
//! 204 after the end, ids the server never sent), the query token, errors
//! as JSON, and the hooks' outcomes as a watcher sees them.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tranche::config::{HookEndpoint, OnError};

use crate::helpers::*;
use crate::sse_client::*;

fn with_query_token(app: &TestApp, id: &str, token: &str) -> String {
    format!("{}?access_token={token}", app.url(&events_path(id)))
}

async fn report(app: &TestApp, id: &str, body: Value) {
    let resp = app
        .request(Method::PUT, &format!("/api/v1/uploads/{id}/processing"))
        .bearer_auth(TEST_API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
}

async fn report_open(app: &TestApp, id: &str, body: Value) {
    let resp = app
        .request(Method::PUT, &format!("/api/v1/uploads/{id}/processing"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
}

#[tokio::test]
async fn one_stream_follows_a_whole_life_and_its_data_is_the_upload_object() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let data = test_data(4096, 21);
        let created = app
            .request(Method::POST, "/api/v1/uploads")
            .bearer_auth(TEST_API_KEY)
            .json(
                &json!({"filename": "life.bin", "size": 4096, "chunk_size": 1024,
                           "sha256": sha256_hex(&data)}),
            )
            .send()
            .await
            .unwrap();
        let created = expect_json(created, 201).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let token = created["upload_token"].as_str().unwrap().to_owned();
        let status = || async {
            let resp = app
                .request(Method::GET, &format!("/api/v1/uploads/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            expect_json(resp, 200).await
        };

        let resp = reqwest::get(with_query_token(&app, &id, &token))
            .await
            .unwrap();
        let mut sse = Sse::of(resp);
        let first = sse.expect("upload.progress").await;
        assert_eq!(first.json(), status().await, "the upload object on connect");
        let first_id = first.id.clone().unwrap();

        let mut last_bytes = 0;
        for (i, chunk) in chunks_of(&data, 1024).into_iter().enumerate() {
            let resp = app
                .request(Method::PUT, &chunk_url(&id, i))
                .bearer_auth(&token)
                .body(chunk)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let progress = sse.expect("upload.progress").await.json();
            let bytes = progress["bytes_received"].as_u64().unwrap();
            assert!(bytes > last_bytes, "progress moves forward: {progress}");
            last_bytes = bytes;
        }
        assert_eq!(last_bytes, 4096);
        let done = app
            .request(Method::POST, &format!("/api/v1/uploads/{id}/complete"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        expect_json(done, 200).await;
        let completed = sse.expect("upload.completed").await;
        assert_eq!(completed.json()["file"]["sha256"], sha256_hex(&data));
        assert_eq!(completed.json(), status().await);

        report(&app, &id, json!({"state": "queued"})).await;
        let queued = sse.expect("upload.processing").await.json();
        assert_eq!(queued["processing"]["state"], "queued", "{queued}");
        assert_eq!(queued["processing"]["revision"], 1, "{queued}");
        let result = json!({"pages": 3, "title": "Ünïcode ✓"});
        report(
            &app,
            &id,
            json!({"state": "completed", "progress": 1, "result": result}),
        )
        .await;
        let last = sse.expect("upload.processing").await;
        assert_eq!(last.json()["processing"]["result"], result);
        assert_eq!(last.json(), status().await, "the upload object at the end");
        sse.expect_end().await;

        // Reconnecting after the end: 204, which stops EventSource.
        let url = with_query_token(&app, &id, &token);
        let again = reqwest::Client::new()
            .get(&url)
            .header("Last-Event-ID", last.id.clone().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 204);
        // From the first id: what was missed, the completion and the last
        // report (not each one), then the end.
        let resp = reqwest::Client::new()
            .get(&url)
            .header("Last-Event-ID", &first_id)
            .send()
            .await
            .unwrap();
        let mut sse = Sse::of(resp);
        let missed = sse.next_event().await.expect("what was missed");
        if missed.name() == "upload.progress" {
            // The bytes that came after the first id, at most once.
            assert_eq!(missed.json()["bytes_received"], 4096, "{missed:?}");
            sse.expect("upload.completed").await;
        } else {
            assert_eq!(missed.name(), "upload.completed", "{missed:?}");
        }
        let report = sse.expect("upload.processing").await.json();
        assert_eq!(report["processing"]["revision"], 2, "{report}");
        sse.expect_end().await;
    })
    .await;
}

#[tokio::test]
async fn ids_the_server_never_sent_count_as_none() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(2048, 22);
        let created = app.create_for(&data, 1024).await;
        let id = created["id"].as_str().unwrap().to_owned();
        app.send_chunks(&id, &data, 1024, 0..1).await;
        let current = app.status_json(&id).await;
        for last in [
            "",
            " ",
            "garbage",
            "a.b.c.d.e",
            "uploading.-1.0",
            "uploading.18446744073709551616.0",
            "uploading.99999999999999999999999999.99999999999999999999",
            "completed.x.y",
            "processing..",
            "ünïcode.✓.0",
            "...",
        ] {
            let resp = open_at(&app.address, &id, None, Some(last)).await;
            assert_eq!(resp.status(), 200, "Last-Event-ID {last:?}");
            let mut sse = Sse::of(resp);
            let first = sse.expect("upload.progress").await.json();
            assert_eq!(first, current, "Last-Event-ID {last:?}");
        }
        // An id the server sent for another upload tells nothing of this one.
        let other = app.create_for(&data, 1024).await;
        let other = other["id"].as_str().unwrap();
        let mut sse = Sse::of(open_at(&app.address, other, None, None).await);
        let other_id = sse.expect("upload.progress").await.id.unwrap();
        let resp = open_at(&app.address, &id, None, Some(&other_id)).await;
        let mut sse = Sse::of(resp);
        let first = sse.expect("upload.progress").await.json();
        assert_eq!(first["bytes_received"], 1024, "{first}");
    })
    .await;
}

#[tokio::test]
async fn errors_are_json_and_the_query_token_is_for_this_route_only() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let created = app
            .request(Method::POST, "/api/v1/uploads")
            .bearer_auth(TEST_API_KEY)
            .json(&json!({"filename": "q.bin", "size": 10}))
            .send()
            .await
            .unwrap();
        let created = expect_json(created, 201).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let token = created["upload_token"].as_str().unwrap().to_owned();

        for bad in ["", "garbage", "Bearer%20x", TEST_API_KEY] {
            let resp = reqwest::get(with_query_token(&app, &id, bad))
                .await
                .unwrap();
            assert_error(resp, 401, "unauthorized").await;
        }
        let unknown = uuid::Uuid::new_v4().to_string();
        let resp = open_at(&app.address, &unknown, Some(TEST_API_KEY), None).await;
        assert_error(resp, 404, "upload_not_found").await;
        let resp = open_at(&app.address, "not-an-id", Some(TEST_API_KEY), None).await;
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
        // The query token neither downloads a file that is not there yet
        // as someone else, nor reports processing.
        let report = reqwest::Client::new()
            .put(format!(
                "{}?access_token={token}",
                app.url(&format!("/api/v1/uploads/{id}/processing"))
            ))
            .json(&json!({"state": "queued"}))
            .send()
            .await
            .unwrap();
        assert_error(report, 401, "unauthorized").await;
        // A header credential and a query token: the stream opens with either.
        let both = reqwest::Client::new()
            .get(with_query_token(&app, &id, &token))
            .bearer_auth(TEST_API_KEY)
            .send()
            .await
            .unwrap();
        Sse::of(both).expect("upload.progress").await;
    })
    .await;
}

#[tokio::test]
async fn a_refused_or_aborted_upload_ends_its_stream_and_heartbeats_keep_an_idle_one() {
    bounded(async {
        let hook_port = free_port();
        let app = spawn_app_with(|s| {
            s.events.sse_heartbeat = Duration::from_millis(300);
            // Nothing listens there: pre_finish fails, closed.
            s.hooks.pre_finish = Some(HookEndpoint {
                url: format!("http://127.0.0.1:{hook_port}/pre-finish"),
                timeout: Duration::from_millis(500),
                on_error: OnError::Deny,
                secret: None,
            });
        })
        .await;
        let data = test_data(2048, 23);
        let created = app.create_for(&data, 1024).await;
        let id = created["id"].as_str().unwrap().to_owned();
        app.send_chunks(&id, &data, 1024, 0..2).await;
        let mut sse = Sse::of(open_at(&app.address, &id, None, None).await);
        sse.expect("upload.progress").await;
        assert_error(app.complete(&id).await, 503, "hook_unavailable").await;
        // Assembling, waiting on the hook: the stream stays, with heartbeats.
        let started = Instant::now();
        let mut heartbeats = 0;
        while started.elapsed() < Duration::from_millis(1500) {
            let message = sse.next_within(Duration::from_secs(2)).await.unwrap();
            match &message.comment {
                Some(comment) => {
                    assert_eq!(comment, "heartbeat");
                    heartbeats += 1;
                }
                // A progress while assembling is allowed; an end is not.
                None => assert_eq!(message.name(), "upload.progress", "{message:?}"),
            }
        }
        assert!(heartbeats >= 2, "{heartbeats} heartbeats in 1.5 s");

        // Aborted: the stream says so and ends; a reconnect with its id is 204.
        let other = app.create_for(&data, 1024).await;
        let other = other["id"].as_str().unwrap().to_owned();
        let mut sse = Sse::of(open_at(&app.address, &other, None, None).await);
        sse.expect("upload.progress").await;
        assert_eq!(app.abort(&other).await.status(), 204);
        let aborted = sse.expect("upload.aborted").await;
        sse.expect_end().await;
        let again = open_at(&app.address, &other, None, aborted.id.as_deref()).await;
        let status = again.status().as_u16();
        assert!(status == 204 || status == 404 || status == 410, "{status}");
    })
    .await;
}

#[tokio::test]
async fn processing_failed_ends_the_stream_and_a_deleted_file_ends_it_quietly() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(1500, 24);
        let done = app.upload_all(&data, 1024).await;
        let id = done["id"].as_str().unwrap().to_owned();
        let mut sse = Sse::of(open_at(&app.address, &id, None, None).await);
        sse.expect("upload.completed").await;
        report_open(&app, &id, json!({"state": "processing", "progress": 0.5})).await;
        let half = sse.expect("upload.processing").await.json();
        assert_eq!(half["processing"]["progress"], 0.5, "{half}");
        report_open(
            &app,
            &id,
            json!({"state": "failed", "message": "corrupt PDF"}),
        )
        .await;
        let failed = sse.expect("upload.processing").await;
        assert_eq!(failed.json()["processing"]["message"], "corrupt PDF");
        sse.expect_end().await;
        let again = open_at(&app.address, &id, None, failed.id.as_deref()).await;
        assert_eq!(again.status(), 204);
        // A worker reporting again (events come at least once) reopens it.
        report_open(&app, &id, json!({"state": "processing"})).await;
        let resp = open_at(&app.address, &id, None, failed.id.as_deref()).await;
        let mut sse = Sse::of(resp);
        let redo = sse.expect("upload.processing").await.json();
        assert_eq!(redo["processing"]["revision"], 3, "{redo}");

        // Its file deleted, the stream ends without an event.
        assert_eq!(app.delete_file(&id, None).await.status(), 204);
        sse.expect_end().await;
    })
    .await;
}

#[tokio::test]
async fn a_pre_finish_refusal_reaches_the_watcher_as_upload_failed() {
    bounded(async {
        let application = crate::spec_hooks::Application::start();
        application.answer("/pre-finish", 403, r#"{"message": "quarantined"}"#);
        let app = spawn_app_with(|s| {
            s.hooks.pre_finish = Some(application.hook("/pre-finish", OnError::Deny));
        })
        .await;
        let data = test_data(2048, 25);
        let created = app.create_for(&data, 1024).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let mut sse = Sse::of(open_at(&app.address, &id, None, None).await);
        sse.expect("upload.progress").await;
        app.send_chunks(&id, &data, 1024, 0..2).await;
        assert_error(app.complete(&id).await, 422, "upload_rejected").await;
        let failed = loop {
            let message = sse
                .next_event()
                .await
                .expect("upload.failed before the end");
            if message.name() != "upload.progress" {
                break message;
            }
        };
        assert_eq!(failed.name(), "upload.failed", "{failed:?}");
        let view = failed.json();
        assert_eq!(view["status"], "failed", "{view}");
        assert_eq!(view["error"]["error"], "upload_rejected", "{view}");
        assert_eq!(view["error"]["message"], "quarantined", "{view}");
        sse.expect_end().await;
        let again = open_at(&app.address, &id, None, failed.id.as_deref()).await;
        assert_eq!(again.status(), 204);
        application.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_create_token_that_made_the_upload_may_watch_it_and_no_other() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let mint = |sub: &str| {
            test_tokens()
                .mint(&tranche::guards::auth::Claims {
                    exp: tranche::guards::auth::token::unix_now() + 600,
                    sub: Some(sub.into()),
                    ..Default::default()
                })
                .unwrap()
        };
        let (alice, bob) = (mint("alice"), mint("bob"));
        let created = app
            .request(Method::POST, "/api/v1/uploads")
            .bearer_auth(&alice)
            .json(&json!({"filename": "w.bin", "size": 10}))
            .send()
            .await
            .unwrap();
        let id = expect_json(created, 201).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let status = app
            .request(Method::GET, &format!("/api/v1/uploads/{id}"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        // Whatever the status route says for the creator, the stream says too.
        let resp = open_at(&app.address, &id, Some(&alice), None).await;
        assert_eq!(resp.status().as_u16(), status);
        if status == 200 {
            Sse::of(resp).expect("upload.progress").await;
        }
        let status = app
            .request(Method::GET, &format!("/api/v1/uploads/{id}"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 403);
        let resp = open_at(&app.address, &id, Some(&bob), None).await;
        assert_error(resp, 403, "forbidden").await;
    })
    .await;
}
