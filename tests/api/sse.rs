//! `GET /api/v1/uploads/{id}/events`: an upload's life as Server-Sent
//! Events, read as a browser's `EventSource` would (a small parser over the
//! raw bytes below): the current state first, then progress, completion or
//! failure, and a worker's processing reports; resuming with
//! `Last-Event-ID`; credentials, the query token included; heartbeats; the
//! end of a stream (204 after it); tus uploads; the server stopping.
//! Several instances sharing Redis: `sse_redis`.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;
use crate::sse_client::*;

async fn open(app: &TestApp, id: &str, last_event_id: Option<&str>) -> Sse {
    Sse::of(open_at(&app.address, id, None, last_event_id).await)
}

fn id_of(upload: &Value) -> String {
    upload["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_stream_shows_progress_as_chunks_arrive_then_the_completion() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3000, 1);
        let upload = app.create_for(&data, 1024).await;
        let id = id_of(&upload);
        let resp = open_at(&app.address, &id, None, None).await;
        // For nginx, which passes each event on at once, then drops it.
        assert_eq!(resp.headers()["x-accel-buffering"], "no");
        let mut sse = Sse::of(resp);
        // First the state as it stands.
        let first = sse.expect("upload.progress").await.json();
        assert_eq!(first["bytes_received"], 0);
        assert_eq!(first["status"], "uploading");
        assert_eq!(first, app.status_json(&id).await, "the upload object");
        for (i, chunk) in chunks_of(&data, 1024).into_iter().enumerate() {
            assert_eq!(app.put_chunk(&id, i as u64, chunk).await.status(), 200);
            let progress = sse.expect("upload.progress").await.json();
            assert_eq!(progress["received_chunks"], i as u64 + 1, "{progress}");
            assert_eq!(progress["bytes_received"], (1024 * (i + 1)).min(3000));
        }
        assert_eq!(app.complete(&id).await.status(), 200);
        let done = sse.expect("upload.completed").await.json();
        assert_eq!(done["status"], "completed");
        assert_eq!(done["file"]["sha256"], sha256_hex(&data));
        assert_eq!(done["file"]["url"], format!("/api/v1/files/{id}"));
        // A completed upload's worker may still report: the stream stays.
        let quiet = tokio::time::timeout(Duration::from_millis(1500), sse.next_event()).await;
        assert!(quiet.is_err(), "nothing more was due: {quiet:?}");
    })
    .await;
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_gets_only_what_it_missed() {
    bounded(async {
        let app = spawn_app_with(|s| s.events.sse_heartbeat = Duration::from_millis(200)).await;
        let data = test_data(3000, 2);
        let upload = app.create_for(&data, 1024).await;
        let id = id_of(&upload);
        let chunks = chunks_of(&data, 1024);
        assert_eq!(app.put_chunk(&id, 0, chunks[0].clone()).await.status(), 200);
        let mut sse = open(&app, &id, None).await;
        let seen = sse.expect("upload.progress").await;
        assert_eq!(seen.json()["bytes_received"], 1024);
        drop(sse);
        // Reconnecting at once: nothing changed, nothing is sent again.
        let mut sse = open(&app, &id, seen.id.as_deref()).await;
        let beat = sse.next_within(EVENT_WAIT).await.unwrap();
        assert!(beat.comment.is_some(), "sent again: {beat:?}");
        drop(sse);
        // Disconnected meanwhile: the rest arrives and the upload completes.
        for (i, chunk) in chunks.iter().enumerate().skip(1) {
            assert_eq!(
                app.put_chunk(&id, i as u64, chunk.clone()).await.status(),
                200
            );
        }
        assert_eq!(app.complete(&id).await.status(), 200);
        let mut sse = open(&app, &id, seen.id.as_deref()).await;
        // One completion; the progress in between is not worth sending.
        let done = sse.expect("upload.completed").await;
        assert_eq!(done.json()["bytes_received"], 3000);
        let beat = sse.next_within(EVENT_WAIT).await.unwrap();
        assert!(beat.comment.is_some(), "{beat:?}");
        // An id that is not the server's counts as none: the whole state.
        let mut sse = open(&app, &id, Some("not-an-id")).await;
        sse.expect("upload.completed").await;
    })
    .await;
}

#[tokio::test]
async fn idle_streams_send_heartbeats() {
    bounded(async {
        let app = spawn_app_with(|s| s.events.sse_heartbeat = Duration::from_millis(300)).await;
        let upload = app.create_for(&test_data(2000, 3), 1024).await;
        let mut sse = open(&app, &id_of(&upload), None).await;
        sse.expect("upload.progress").await;
        let started = std::time::Instant::now();
        for _ in 0..3 {
            let beat = sse.next_within(Duration::from_secs(2)).await.unwrap();
            assert_eq!(beat.comment.as_deref(), Some("heartbeat"), "{beat:?}");
            assert!(beat.event.is_none() && beat.data.is_empty());
        }
        assert!(
            started.elapsed() >= Duration::from_millis(800),
            "heartbeats came faster than sse_heartbeat: {:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn an_ended_upload_ends_its_stream_and_a_reconnect_after_the_end_gets_204() {
    bounded(async {
        let app = spawn_app().await;
        let upload = app.create_for(&test_data(2000, 4), 1024).await;
        let id = id_of(&upload);
        let mut sse = open(&app, &id, None).await;
        sse.expect("upload.progress").await;
        assert_eq!(app.abort(&id).await.status(), 204);
        let aborted = sse.expect("upload.aborted").await;
        assert_eq!(aborted.json()["status"], "aborted");
        sse.expect_end().await;
        // EventSource reconnects with the last id: told there is no more.
        let again = open_at(&app.address, &id, None, aborted.id.as_deref()).await;
        assert_eq!(again.status(), StatusCode::NO_CONTENT);
        // A new follower of the aborted upload gets its end, then the end.
        let mut sse = open(&app, &id, None).await;
        sse.expect("upload.aborted").await;
        sse.expect_end().await;
        // A failed upload ends its stream too.
        let data = test_data(2000, 5);
        let wrong = app
            .create(serde_json::json!({
                "filename": "f.bin", "size": 2000, "chunk_size": 1024,
                "sha256": sha256_hex(b"something else"),
            }))
            .await;
        let failing = id_of(&wrong.json::<Value>().await.unwrap());
        app.send_chunks(&failing, &data, 1024, 0..2).await;
        let mut sse = open(&app, &failing, None).await;
        sse.expect("upload.progress").await;
        assert_eq!(app.complete(&failing).await.status(), 422);
        let failed = sse.expect("upload.failed").await.json();
        assert_eq!(failed["error"]["error"], "digest_mismatch", "{failed}");
        sse.expect_end().await;
    })
    .await;
}

#[tokio::test]
async fn an_unknown_upload_is_404_and_a_bad_id_400_as_for_its_status() {
    bounded(async {
        let app = spawn_app().await;
        let unknown = uuid::Uuid::new_v4().to_string();
        let resp = open_at(&app.address, &unknown, None, None).await;
        assert_error(resp, 404, "upload_not_found").await;
        let resp = open_at(&app.address, "not-a-uuid", None, None).await;
        assert_error(resp, 400, "invalid_request").await;
        let post = app
            .client
            .post(app.url(&events_path(&unknown)))
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 405);
        assert_eq!(post.headers()["allow"], "GET");
    })
    .await;
}

#[tokio::test]
async fn the_stream_takes_the_status_routes_credentials_and_the_query_token_only_here() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let create = |name: &str| {
            app.client
                .post(app.url("/api/v1/uploads"))
                .bearer_auth(TEST_API_KEY)
                .json(&serde_json::json!({"filename": name, "size": 2000, "chunk_size": 1024}))
                .send()
        };
        let mine: Value = create("a.bin").await.unwrap().json().await.unwrap();
        let other: Value = create("b.bin").await.unwrap().json().await.unwrap();
        let id = id_of(&mine);
        let token = mine["upload_token"].as_str().expect("an upload token");
        let other_token = other["upload_token"].as_str().unwrap();
        // The API key and the upload's token, in the header.
        for credential in [TEST_API_KEY, token] {
            let resp = open_at(&app.address, &id, Some(credential), None).await;
            Sse::of(resp).expect("upload.progress").await;
        }
        // The upload's token in the query, as an EventSource sends it.
        let url = format!("{}?access_token={token}", app.url(&events_path(&id)));
        let resp = reqwest::get(&url).await.unwrap();
        let first = Sse::of(resp).expect("upload.progress").await.json();
        assert_eq!(first["id"], id.as_str());
        // Another upload's token: refused, as for the status.
        let resp = open_at(&app.address, &id, Some(other_token), None).await;
        assert_error(resp, 403, "forbidden").await;
        let url = format!("{}?access_token={other_token}", app.url(&events_path(&id)));
        assert_error(reqwest::get(&url).await.unwrap(), 403, "forbidden").await;
        // No credentials; an API key is no link credential.
        assert_error(
            open_at(&app.address, &id, None, None).await,
            401,
            "unauthorized",
        )
        .await;
        let url = format!("{}?access_token={TEST_API_KEY}", app.url(&events_path(&id)));
        assert_error(reqwest::get(&url).await.unwrap(), 401, "unauthorized").await;
        // The query token opens nothing else of the upload's.
        let status = format!(
            "{}?access_token={token}",
            app.url(&format!("/api/v1/uploads/{id}"))
        );
        assert_error(reqwest::get(&status).await.unwrap(), 401, "unauthorized").await;
        let chunk = reqwest::Client::new()
            .put(format!(
                "{}?access_token={token}",
                app.url(&chunk_url(&id, 0))
            ))
            .body(vec![0u8; 1024])
            .send()
            .await
            .unwrap();
        assert_error(chunk, 401, "unauthorized").await;
    })
    .await;
}

#[tokio::test]
async fn a_tus_uploads_progress_is_on_the_stream_too() {
    bounded(async {
        let app = spawn_app().await;
        let tus = crate::tus_client::Tus::new(&app);
        let data = test_data(3000, 6);
        let url = tus.create(data.len() as u64, None).await;
        let id = crate::tus_client::upload_id(&url);
        let mut sse = open(&app, &id, None).await;
        assert_eq!(
            sse.expect("upload.progress").await.json()["bytes_received"],
            0
        );
        assert_eq!(tus.patch_ok(&url, 0, &data[..1000]).await, 1000);
        let progress = sse.expect("upload.progress").await.json();
        assert_eq!(progress["bytes_received"], 1000);
        assert_eq!(tus.patch_ok(&url, 1000, &data[1000..]).await, 3000);
        // The last byte completes a tus upload: progress may be folded in.
        let mut last = sse.next_event().await.unwrap();
        if last.name() == "upload.progress" {
            assert_eq!(last.json()["bytes_received"], 3000);
            last = sse.next_event().await.unwrap();
        }
        assert_eq!(last.name(), "upload.completed", "{last:?}");
        assert_eq!(last.json()["file"]["sha256"], sha256_hex(&data));
    })
    .await;
}

#[tokio::test]
async fn stopping_the_server_ends_open_streams_at_once() {
    bounded(async {
        let app = spawn_app_with(|s| s.shutdown_timeout = Duration::from_secs(30)).await;
        let upload = app.create_for(&test_data(2000, 7), 1024).await;
        let mut sse = open(&app, &id_of(&upload), None).await;
        sse.expect("upload.progress").await;
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), app.stop())
            .await
            .expect("the stop did not wait for the stream");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        sse.expect_end().await;
    })
    .await;
}

/// A worker's report, as the worker sends it (authentication is off here).
async fn report(app: &TestApp, id: &str, body: Value) {
    let resp = app
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/uploads/{id}/processing"),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
}

#[tokio::test]
async fn a_workers_reports_follow_the_completion_and_the_last_one_ends_the_stream() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3000, 8);
        let done = app.upload_all(&data, 1024).await;
        let id = id_of(&done);
        let mut sse = open(&app, &id, None).await;
        sse.expect("upload.completed").await;
        report(&app, &id, serde_json::json!({"state": "queued"})).await;
        let queued = sse.expect("upload.processing").await;
        assert_eq!(queued.json()["processing"]["state"], "queued");
        assert_eq!(queued.json()["processing"]["revision"], 1);
        let half = serde_json::json!({"state": "processing", "progress": 0.5});
        report(&app, &id, half).await;
        let half = sse.expect("upload.processing").await.json();
        assert_eq!(half["processing"]["progress"], 0.5);
        let result = serde_json::json!({"thumbnail": "/t/1.jpg"});
        let body = serde_json::json!({"state": "completed", "result": result});
        report(&app, &id, body).await;
        let last = sse.expect("upload.processing").await;
        assert_eq!(last.json()["processing"]["result"], result);
        assert_eq!(last.json(), app.status_json(&id).await);
        sse.expect_end().await;
        // Reconnecting after the last report: nothing more will come.
        let again = open_at(&app.address, &id, None, last.id.as_deref()).await;
        assert_eq!(again.status(), StatusCode::NO_CONTENT);
        // One who saw only `queued` gets the last report (not each one
        // missed: a report replaces the one before), then the end.
        let mut sse = open(&app, &id, queued.id.as_deref()).await;
        let caught_up = sse.expect("upload.processing").await.json();
        assert_eq!(caught_up["processing"]["state"], "completed");
        sse.expect_end().await;
        // A first connection gets the completion, then the report.
        let mut sse = open(&app, &id, None).await;
        sse.expect("upload.completed").await;
        sse.expect("upload.processing").await;
        sse.expect_end().await;
    })
    .await;
}

#[tokio::test]
async fn an_upload_that_expires_ends_its_stream_with_upload_expired() {
    bounded(async {
        let app = spawn_app_with(|s| s.upload_ttl = Duration::from_secs(60)).await;
        let data = test_data(2000, 9);
        let upload = app.create_for(&data, 1024).await;
        let id = id_of(&upload);
        app.send_chunks(&id, &data, 1024, [0]).await;
        let mut sse = open(&app, &id, None).await;
        let seen = sse.expect("upload.progress").await;
        // Past the TTL: the stream's next read of the record sees it expired.
        app.ctx.clock.advance(Duration::from_secs(61));
        let expired = sse.expect("upload.expired").await;
        assert_eq!(expired.json()["bytes_received"], 1024);
        sse.expect_end().await;
        // Swept by the janitor meanwhile: a follower who saw it alive is
        // told nothing more (404, as for its status)...
        tranche::janitor::sweep(&app.ctx).await.expect("sweep");
        let gone = open_at(&app.address, &id, None, seen.id.as_deref()).await;
        assert_error(gone, 404, "upload_not_found").await;
        // ...and one who saw the end, 204.
        let ended = open_at(&app.address, &id, None, expired.id.as_deref()).await;
        assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    })
    .await;
}

#[tokio::test]
async fn a_burst_of_chunks_makes_a_few_progress_events_not_one_each() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(64 * 1024, 10);
        let upload = app.create_for(&data, 1024).await;
        let id = id_of(&upload);
        let mut sse = open(&app, &id, None).await;
        sse.expect("upload.progress").await;
        let started = std::time::Instant::now();
        // Four at a time: the per-upload limit of chunk requests in flight.
        let answers: Vec<_> = futures::stream::iter(chunks_of(&data, 1024).into_iter().enumerate())
            .map(|(i, chunk)| app.put_chunk(&id, i as u64, chunk))
            .buffer_unordered(4)
            .collect()
            .await;
        for answer in answers {
            assert_eq!(answer.status(), 200);
        }
        assert_eq!(app.complete(&id).await.status(), 200);
        let mut progress = 0;
        let mut last_bytes = 0;
        loop {
            let event = sse.next_event().await.unwrap();
            let bytes = event.json()["bytes_received"].as_u64().unwrap();
            assert!(bytes >= last_bytes, "progress went backwards: {event:?}");
            last_bytes = bytes;
            match event.name() {
                "upload.progress" => progress += 1,
                "upload.completed" => break,
                other => panic!("unexpected {other}"),
            }
        }
        // At most one read of the record per 250 ms, each one event at most.
        let bound = started.elapsed().as_millis() / 250 + 2;
        assert!(
            progress <= bound,
            "{progress} progress events for 64 chunks in {:?}",
            started.elapsed()
        );
        assert_eq!(last_bytes, data.len() as u64);
    })
    .await;
}

#[tokio::test]
async fn a_follower_waiting_on_a_dead_assembly_gets_it_resumed_and_sees_the_completion() {
    use tranche::state::{StateStore, Update};
    bounded(async {
        let app = spawn_app_with(|s| s.janitor_interval = Duration::from_secs(3600)).await;
        let data = test_data(3000, 11);
        let upload = app.create_for(&data, 1024).await;
        let id = id_of(&upload);
        app.send_chunks(&id, &data, 1024, 0..3).await;
        // What a crash after a 202 leaves: `assembling`, and nobody on it.
        let uuid = uuid::Uuid::parse_str(&id).unwrap();
        let begun = app.ctx.store.begin_assembly(uuid).await.unwrap();
        assert!(matches!(begun, Update::Done(_)));
        // Only the stream asks about it (no status poll, no janitor run).
        let mut sse = open(&app, &id, None).await;
        let first = sse.next_event().await.unwrap();
        if first.name() == "upload.progress" {
            assert_eq!(first.json()["status"], "assembling");
            sse.expect("upload.completed").await;
        } else {
            assert_eq!(first.name(), "upload.completed", "{first:?}");
        }
        assert_eq!(
            app.status_json(&id).await["file"]["sha256"],
            sha256_hex(&data)
        );
    })
    .await;
}
