//! Events, end to end: a real webhook receiver on a loopback port (down,
//! then up), signatures checked as a receiver would; the event of a
//! completion that was not yet delivered when the server was killed with
//! SIGKILL arrives after the restart; a Redis stream read with a consumer
//! group; a tus upload tells the same events as one of API v1; on Redis,
//! two instances send each event once, and a Redis restart (AOF) loses none.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::Client;
use serde_json::{json, Value};
use sha2::Sha256;
use tranche::config::{StreamSettings, WebhookSettings};

use crate::helpers::*;

const KEY: &[u8] = b"a webhook key of 32 bytes, test.";

fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(KEY)
    )
}

/// What the receiver got: (webhook-id, the event JSON), in arrival order.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver on `port` that checks each signature as the
/// Standard Webhooks spec tells receivers to, and answers 204 (or 400 to
/// a bad signature, which the test then sees as a missing event).
fn start_receiver(port: u16) -> (Received, actix_web::dev::ServerHandle) {
    let received: Received = Arc::default();
    let data = web::Data::new(received.clone());
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).route(
            "/hook",
            web::post().to(
                |req: HttpRequest, body: String, got: web::Data<Received>| async move {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let (id, ts) = (header("webhook-id"), header("webhook-timestamp"));
                    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
                    mac.update(format!("{id}.{ts}.{body}").as_bytes());
                    let expected = format!(
                        "v1,{}",
                        base64::engine::general_purpose::STANDARD
                            .encode(mac.finalize().into_bytes())
                    );
                    let fresh = ts.parse::<i64>().is_ok_and(|t| {
                        (t - time::OffsetDateTime::now_utc().unix_timestamp()).abs() < 300
                    });
                    if !fresh
                        || !header("webhook-signature")
                            .split(' ')
                            .any(|s| s == expected)
                    {
                        return HttpResponse::BadRequest().finish();
                    }
                    let event: Value = serde_json::from_str(&body).unwrap();
                    got.lock().unwrap().push((id, event));
                    HttpResponse::NoContent().finish()
                },
            ),
        )
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", port))
    .expect("bind the receiver's port")
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (received, handle)
}

fn webhook(port: u16) -> WebhookSettings {
    WebhookSettings {
        url: format!("http://127.0.0.1:{port}/hook"),
        secret: secret(),
        events: Vec::new(),
        timeout: Duration::from_secs(5),
        retry_for: Duration::from_secs(3600),
    }
}

/// Waits (bounded) until `received` holds `n` events, and returns them.
async fn wait_for(received: &Received, n: usize) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = received.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} events arrived: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each id once, and the events of the upload in their order.
fn by_type(events: &[(String, Value)], upload: &str) -> HashMap<String, Value> {
    let mut ids: Vec<&String> = events.iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        events.len(),
        "an event arrived twice: {events:?}"
    );
    let mine: Vec<&Value> = events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e["upload_id"] == upload)
        .collect();
    let seqs: Vec<u64> = mine.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "out of order"
    );
    for (id, e) in events {
        assert_eq!(e["id"], *id, "webhook-id is the event's id");
    }
    mine.into_iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e.clone()))
        .collect()
}

#[tokio::test]
async fn a_webhook_receiver_that_was_down_gets_each_event_once_signed() {
    bounded(async {
        let port = free_port();
        let app = spawn_app_with(|s| {
            s.events.progress_interval = Duration::ZERO;
            s.events.webhooks = vec![webhook(port)];
        })
        .await;
        let data = test_data(3000, 7);
        let view = app.upload_all(&data, 1024).await;
        let id = view["id"].as_str().unwrap().to_owned();

        // The receiver is down: deliveries fail and are retried.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = app.metrics_text().await;
            let failed = metric_value(&text, "tranche_events_failed_attempts_total", None);
            if failed.is_some_and(|n| n >= 1.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no failed delivery seen:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (received, handle) = start_receiver(port);
        let events = wait_for(&received, 2).await;
        let events = by_type(&events, &id);
        let created = &events["upload.created"];
        assert_eq!(created["data"]["upload"]["filename"], view["filename"]);
        assert_eq!(created["data"]["upload"]["status"], "uploading");
        let completed = &events["upload.completed"];
        let file = &completed["data"]["file"];
        assert_eq!(file["sha256"], sha256_hex(&data));
        assert_eq!(file["size"], data.len());
        assert_eq!(file["url"], view["file"]["url"]);
        assert_eq!(completed["data"]["upload"]["status"], "completed");

        // Deleting the file tells it too, and nothing arrives twice.
        assert_eq!(app.delete_file(&id, None).await.status(), 204);
        let events = wait_for(&received, 3).await;
        let events = by_type(&events, &id);
        assert_eq!(events["file.deleted"]["seq"], 3);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(received.lock().unwrap().len(), 3, "nothing more");
        let text = app.metrics_text().await;
        assert_eq!(
            metric_value(&text, "tranche_events_outbox_backlog", None),
            Some(0.0)
        );
        handle.stop(false).await;
    })
    .await
}

#[tokio::test]
async fn an_abort_and_a_failure_are_told_with_their_reason_and_filters_apply() {
    bounded(async {
        let (port, other) = (free_port(), free_port());
        let (received, handle) = start_receiver(port);
        let (completions, other_handle) = start_receiver(other);
        let app = spawn_app_with(|s| {
            let mut only_completed = webhook(other);
            only_completed.events = vec!["upload.completed".into()];
            s.events.progress_interval = Duration::ZERO;
            s.events.webhooks = vec![webhook(port), only_completed];
        })
        .await;
        let aborted = app.create_for(&test_data(2000, 1), 1024).await;
        let aborted = aborted["id"].as_str().unwrap().to_owned();
        assert_eq!(app.abort(&aborted).await.status(), 204);
        // A wrong announced SHA-256 fails the upload at completion.
        let data = test_data(1500, 2);
        let created = expect_json(
            app.create(
                json!({"filename": "f.bin", "size": data.len(), "chunk_size": 1024,
                "sha256": sha256_hex(b"something else")}),
            )
            .await,
            201,
        )
        .await;
        let failed = created["id"].as_str().unwrap().to_owned();
        for (i, chunk) in chunks_of(&data, 1024).into_iter().enumerate() {
            assert_eq!(app.put_chunk(&failed, i as u64, chunk).await.status(), 200);
        }
        assert!(app.complete(&failed).await.status().is_client_error());
        let events = wait_for(&received, 4).await;
        assert!(by_type(&events, &aborted).contains_key("upload.aborted"));
        let failure = &by_type(&events, &failed)["upload.failed"];
        assert_eq!(failure["data"]["reason"]["error"], "digest_mismatch");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(completions.lock().unwrap().is_empty(), "filtered out");
        handle.stop(false).await;
        other_handle.stop(false).await;
    })
    .await
}

#[tokio::test]
async fn a_completion_not_yet_delivered_at_sigkill_is_delivered_after_restart() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let client = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let redis = match crate::BACKEND {
            Backend::Embedded => None,
            Backend::Redis => Some(RedisServer::start().await),
        };
        let port = free_port();
        let config = format!(
            "[events]\npoll_interval = \"50ms\"\nprogress_interval = \"0s\"\n[[events.webhooks]]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{}\"\n",
            secret()
        );
        let mut server =
            ServerProcess::start_with(dir.path(), &data_dir, redis.as_ref(), &client, &config, None)
                .await;
        let data = test_data(2500, 9);
        let created = expect_json(
            client
                .post(server.url("/api/v1/uploads"))
                .json(&json!({"filename": "k.bin", "size": data.len(), "chunk_size": 1024}))
                .send()
                .await
                .unwrap(),
            201,
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        for (i, chunk) in chunks_of(&data, 1024).into_iter().enumerate() {
            let resp = client
                .put(server.url(&chunk_url(&id, i)))
                .body(chunk)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
        let done = client
            .post(server.url(&format!("/api/v1/uploads/{id}/complete")))
            .send()
            .await
            .unwrap();
        assert_eq!(expect_json(done, 200).await["status"], "completed");
        // The receiver is down: the completion is in the outbox only.
        server.kill();

        let (received, handle) = start_receiver(port);
        let _server =
            ServerProcess::start_with(dir.path(), &data_dir, redis.as_ref(), &client, &config, None)
                .await;
        let events = wait_for(&received, 2).await;
        let events = by_type(&events, &id);
        assert_eq!(events["upload.completed"]["data"]["file"]["sha256"], sha256_hex(&data));
        assert_eq!(events["upload.created"]["seq"], 1);
        handle.stop(false).await;
    })
    .await
}

#[tokio::test]
async fn a_redis_stream_feeds_a_consumer_group() {
    bounded(async {
        let redis = RedisServer::start().await;
        let mut conn = redis.connection().await;
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("uploads")
            .arg("workers")
            .arg("$")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await
            .unwrap();
        let url = redis.url();
        let app = spawn_app_with(|s| {
            s.events.streams = vec![StreamSettings {
                redis_url: url,
                stream: "uploads".into(),
                maxlen: 1000,
                events: vec!["upload.completed".into()],
                retry_for: Duration::from_secs(60),
            }]
        })
        .await;
        let data = test_data(2048, 3);
        let view = app.upload_all(&data, 1024).await;
        let id = view["id"].as_str().unwrap();

        type Entries = Vec<(String, Vec<(String, Vec<(String, String)>)>)>;
        let deadline = Instant::now() + Duration::from_secs(20);
        let entries = loop {
            let read: Option<Entries> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("workers")
                .arg("w1")
                .arg("COUNT")
                .arg(10)
                .arg("BLOCK")
                .arg(500)
                .arg("STREAMS")
                .arg("uploads")
                .arg(">")
                .query_async(&mut conn)
                .await
                .unwrap();
            if let Some(streams) = read.filter(|s| !s.is_empty()) {
                break streams[0].1.clone();
            }
            assert!(Instant::now() < deadline, "nothing on the stream");
        };
        assert_eq!(entries.len(), 1, "only upload.completed passes the filter");
        let (entry_id, fields) = &entries[0];
        let fields: HashMap<String, String> = fields.iter().cloned().collect();
        assert_eq!(fields["type"], "upload.completed");
        assert_eq!(fields["upload_id"], id);
        let event: Value = serde_json::from_str(&fields["event"]).unwrap();
        assert_eq!(event["id"], fields["id"]);
        assert_eq!(event["data"]["file"]["sha256"], sha256_hex(&data));
        let acked: i64 = redis::cmd("XACK")
            .arg("uploads")
            .arg("workers")
            .arg(entry_id)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(acked, 1);
    })
    .await
}

#[tokio::test]
async fn a_tus_upload_and_its_termination_tell_the_same_events() {
    bounded(async {
        let port = free_port();
        let (received, handle) = start_receiver(port);
        let app = spawn_app_with(|s| {
            s.events.progress_interval = Duration::ZERO;
            s.events.webhooks = vec![webhook(port)];
        })
        .await;
        let data = test_data(3000, 11);
        let tus = |req: reqwest::RequestBuilder| req.header("tus-resumable", "1.0.0");
        let create = |len: usize| {
            tus(app.client.post(app.url("/files/")))
                .header("upload-length", len)
                .header("upload-metadata", "filename dHVzLmJpbg==")
                .send()
        };
        let created = create(data.len()).await.unwrap();
        assert_eq!(created.status(), 201);
        // Relative without public_url or trusted proxies.
        let absolute = |l: &reqwest::Response| app.url(l.headers()["location"].to_str().unwrap());
        let location = absolute(&created);
        let resp = tus(app.client.patch(&location))
            .header("upload-offset", 0)
            .header("content-type", "application/offset+octet-stream")
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
        let id = location.rsplit('/').next().unwrap().to_owned();
        // Another, terminated (tus's DELETE).
        let other = create(10).await.unwrap();
        let other = absolute(&other);
        let gone = tus(app.client.delete(&other)).send().await.unwrap();
        assert_eq!(gone.status(), 204);
        let other = other.rsplit('/').next().unwrap().to_owned();

        let events = wait_for(&received, 4).await;
        let mine = by_type(&events, &id);
        let file = &mine["upload.completed"]["data"]["file"];
        assert_eq!(file["filename"], "tus.bin");
        assert_eq!(file["sha256"], sha256_hex(&data));
        assert!(mine.contains_key("upload.created"));
        assert!(by_type(&events, &other).contains_key("upload.aborted"));
        handle.stop(false).await;
    })
    .await
}

#[tokio::test]
async fn instances_sharing_redis_send_each_event_once() {
    if crate::BACKEND != Backend::Redis {
        return; // one process owns an embedded store
    }
    bounded(async {
        let redis = RedisServer::start().await;
        let port = free_port();
        let (received, handle) = start_receiver(port);
        let share = |s: &mut tranche::config::Settings| {
            s.store = redis.store_settings();
            s.events.progress_interval = Duration::ZERO;
            s.events.webhooks = vec![webhook(port)];
            s.events.poll_interval = Duration::from_millis(20);
        };
        let (a, b) = (spawn_app_with(share).await, spawn_app_with(share).await);
        let mut ids = Vec::new();
        for i in 0..4 {
            let app = if i % 2 == 0 { &a } else { &b };
            let view = app.upload_all(&test_data(1500, i), 1024).await;
            ids.push(view["id"].as_str().unwrap().to_owned());
        }
        let events = wait_for(&received, 8).await;
        for id in &ids {
            let mine = by_type(&events, id);
            assert!(mine.contains_key("upload.completed"), "{mine:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let events = received.lock().unwrap().clone();
        assert_eq!(events.len(), 8, "sent by both instances: {events:?}");
        handle.stop(false).await;
    })
    .await
}

#[tokio::test]
async fn progress_is_told_coalesced_not_per_chunk() {
    bounded(async {
        let port = free_port();
        let (received, handle) = start_receiver(port);
        let app = spawn_app_with(|s| {
            s.events.progress_interval = Duration::from_secs(3600);
            s.events.webhooks = vec![webhook(port)];
        })
        .await;
        let view = app.upload_all(&test_data(4000, 5), 1024).await;
        let id = view["id"].as_str().unwrap().to_owned();
        let events = wait_for(&received, 3).await;
        let mine = by_type(&events, &id);
        let progress = &mine["upload.progress"];
        assert_eq!(progress["seq"], 2);
        assert_eq!(progress["data"]["upload"]["bytes_received"], 1024);
        assert_eq!(mine["upload.completed"]["seq"], 3);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            received.lock().unwrap().len(),
            3,
            "one progress for 4 chunks"
        );
        handle.stop(false).await;
    })
    .await
}

#[tokio::test]
async fn a_redis_restart_loses_no_event() {
    if crate::BACKEND != Backend::Redis {
        return;
    }
    bounded(async {
        // As production should run it for events: every write in the AOF.
        let aof_dir = tempfile::tempdir().unwrap();
        let redis = RedisServer::start_with(&[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            aof_dir.path().to_str().unwrap(),
        ])
        .await;
        let port = free_port();
        let mut app = spawn_app_on(Some(redis), |s| {
            s.events.progress_interval = Duration::ZERO;
            s.events.webhooks = vec![webhook(port)];
        })
        .await;
        // The receiver is down: the events wait in the outbox, in Redis.
        let data = test_data(2000, 13);
        let view = app.upload_all(&data, 1024).await;
        let id = view["id"].as_str().unwrap().to_owned();
        let redis = app.redis.as_mut().unwrap();
        redis.stop();
        redis.start_again().await;
        let (received, handle) = start_receiver(port);
        let events = wait_for(&received, 2).await;
        let events = by_type(&events, &id);
        assert_eq!(
            events["upload.completed"]["data"]["file"]["sha256"],
            sha256_hex(&data)
        );
        handle.stop(false).await;
    })
    .await
}

#[tokio::test]
async fn a_completion_names_the_sub_of_the_token_that_created_the_upload() {
    use tranche::guards::auth::token::{unix_now, Claims};
    bounded(async {
        let port = free_port();
        let (received, handle) = start_receiver(port);
        let app = spawn_with_auth(|s| {
            let mut completed = webhook(port);
            completed.events = vec!["upload.completed".into()];
            s.events.webhooks = vec![completed];
        })
        .await;
        let upload = |credential: String, seed: u64| {
            let app = &app;
            async move {
                let data = test_data(3000, seed);
                let created = app
                    .request(reqwest::Method::POST, "/api/v1/uploads")
                    .bearer_auth(&credential)
                    .json(&json!({"filename": "s.bin", "size": data.len()}))
                    .send()
                    .await
                    .unwrap();
                let created = expect_json(created, 201).await;
                let id = created["id"].as_str().unwrap().to_owned();
                let token = created["upload_token"].as_str().unwrap().to_owned();
                let put = app
                    .request(reqwest::Method::PUT, &chunk_url(&id, 0))
                    .bearer_auth(&token)
                    .body(data)
                    .send()
                    .await
                    .unwrap();
                expect_json(put, 200).await;
                let done = app
                    .request(
                        reqwest::Method::POST,
                        &format!("/api/v1/uploads/{id}/complete"),
                    )
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                expect_json(done, 200).await;
                id
            }
        };
        let alice = test_tokens()
            .mint(&Claims {
                exp: unix_now() + 600,
                sub: Some("auth0|alice".into()),
                ..Claims::default()
            })
            .unwrap();
        let by_alice = upload(alice, 81).await;
        let by_backend = upload(TEST_API_KEY.to_owned(), 82).await;
        let events = wait_for(&received, 2).await;
        // Filtered to completions: each upload's one event (its seq is not 1).
        let completion = |id: &str| {
            let mine: Vec<&Value> = events
                .iter()
                .map(|(_, e)| e)
                .filter(|e| e["upload_id"] == id && e["type"] == "upload.completed")
                .collect();
            assert_eq!(mine.len(), 1, "{events:?}");
            mine[0].clone()
        };
        let alice_done = completion(&by_alice);
        assert_eq!(alice_done["data"]["upload"]["sub"], "auth0|alice");
        let backend_done = completion(&by_backend);
        assert!(
            backend_done["data"]["upload"].get("sub").is_none(),
            "an API key is no token sub: {backend_done}"
        );
        handle.stop(false).await;
    })
    .await
}
