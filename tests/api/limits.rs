//! Limits a single client runs into: allowed content types and signatures,
//! the disk guard, rate limits, chunk requests in progress and stalled bodies.
//! Each ends in a JSON 4xx (or 507) and leaves the upload as it was.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const PNG_HEAD: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";
const ELF_HEAD: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0\x01\0\0\0";

/// `head` followed by filler up to `len` bytes.
fn file_starting_with(head: &[u8], len: usize) -> Vec<u8> {
    let mut v = head.to_vec();
    v.extend(test_data(len - head.len(), 3));
    v
}

#[tokio::test]
async fn only_allowed_content_types_may_be_declared() {
    bounded(async {
        let app = spawn_app_with(|s| {
            s.limits.allowed_content_types = vec!["video/*".into(), "image/png".into()];
        })
        .await;
        for ct in [Some("text/plain"), Some("image/jpeg"), None] {
            let mut body = json!({"filename": "f", "size": 10});
            if let Some(ct) = ct {
                body["content_type"] = ct.into();
            }
            let err = assert_error(app.create(body).await, 415, "unsupported_content_type").await;
            assert!(
                err["message"].as_str().unwrap().contains("video/*"),
                "{err}"
            );
        }
        for ct in ["video/mp4", "video/webm", "image/png"] {
            let r = app
                .create(json!({"filename": "f", "size": 10, "content_type": ct}))
                .await;
            assert_eq!(r.status(), 201, "{ct}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_first_chunk_that_contradicts_its_type_is_refused_and_not_counted() {
    bounded(async {
        let app = spawn_app_with(|s| {
            s.limits.allowed_content_types = vec!["image/*".into()];
        })
        .await;
        let good = file_starting_with(PNG_HEAD, 3000);
        let created = expect_json(
            app.create(json!({"filename": "pic.png", "size": good.len(), "content_type": "image/png", "chunk_size": 1024}))
                .await,
            201,
        )
        .await;
        let id = created["id"].as_str().unwrap();
        let evil = file_starting_with(ELF_HEAD, 1024);
        let err = assert_error(app.put_chunk(id, 0, evil).await, 415, "content_mismatch").await;
        assert_eq!(err["declared"], "image/png");
        let st = app.status_json(id).await;
        assert_eq!(st["received_chunks"], 0, "a refused chunk is not counted: {st}");
        // Chunks after the first are not sniffed; the real first chunk passes.
        let chunks = chunks_of(&good, 1024);
        app.send_chunks(id, &good, 1024, [2, 1, 0]).await;
        let done = expect_json(app.complete(id).await, 200).await;
        assert_eq!(done["status"], "completed");
        assert_eq!(app.download(id).await.bytes().await.unwrap().to_vec(), good);
        drop(chunks);
    })
    .await;
}

#[tokio::test]
async fn sniffing_is_off_without_a_type_allow_list_unless_asked() {
    bounded(async {
        // Default (auto): declared types are taken at their word.
        let app = spawn_app().await;
        let data = file_starting_with(ELF_HEAD, 2000);
        let created = expect_json(
            app.create(
                json!({"filename": "v.mp4", "size": data.len(), "content_type": "video/mp4"}),
            )
            .await,
            201,
        )
        .await;
        let id = created["id"].as_str().unwrap();
        assert_eq!(app.put_chunk(id, 0, data.clone()).await.status(), 200);

        let strict =
            spawn_app_with(|s| s.limits.sniff_content = tranche::config::SniffContent::Always)
                .await;
        let created = expect_json(
            strict
                .create(
                    json!({"filename": "v.mp4", "size": data.len(), "content_type": "video/mp4"}),
                )
                .await,
            201,
        )
        .await;
        let id = created["id"].as_str().unwrap();
        assert_error(strict.put_chunk(id, 0, data).await, 415, "content_mismatch").await;
    })
    .await;
}

#[tokio::test]
async fn the_disk_guard_counts_uploads_in_flight() {
    bounded(async {
        let app =
            spawn_app_with(|s| s.limits.max_pending_bytes = bytesize::ByteSize::b(10_000)).await;
        let first = expect_json(
            app.create(json!({"filename": "a", "size": 6000})).await,
            201,
        )
        .await;
        let err = assert_error(
            app.create(json!({"filename": "b", "size": 6000})).await,
            507,
            "insufficient_storage",
        )
        .await;
        assert!(err["message"].as_str().unwrap().contains("disk"), "{err}");
        // Aborting the first frees its share.
        assert_eq!(app.abort(first["id"].as_str().unwrap()).await.status(), 204);
        expect_json(
            app.create(json!({"filename": "b", "size": 6000})).await,
            201,
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_big_creates_cannot_all_pass_the_disk_guard() {
    bounded(async {
        let app =
            spawn_app_with(|s| s.limits.max_pending_bytes = bytesize::ByteSize::b(10_000)).await;
        let creates =
            (0..10).map(|i| app.create(json!({"filename": format!("f{i}"), "size": 3000})));
        let answers = futures::future::join_all(creates).await;
        let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
        assert_eq!(
            statuses.iter().filter(|&&s| s == 201).count(),
            3,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|&&s| s == 507).count(),
            7,
            "{statuses:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_disk_below_its_reserve_refuses_uploads_and_is_not_ready() {
    bounded(async {
        // A reserve larger than any disk: nothing fits.
        let app =
            spawn_app_with(|s| s.limits.reserve_free_bytes = bytesize::ByteSize::b(1 << 60)).await;
        assert_error(
            app.create(json!({"filename": "a", "size": 1})).await,
            507,
            "insufficient_storage",
        )
        .await;
        let r = app
            .request(reqwest::Method::GET, "/readyz")
            .send()
            .await
            .unwrap();
        let body = assert_error(r, 503, "not_ready").await;
        assert!(
            body["message"].as_str().unwrap().contains("low disk"),
            "{body}"
        );
    })
    .await;
}

#[tokio::test]
async fn creates_beyond_the_rate_get_429_with_retry_after() {
    bounded(async {
        let app = spawn_app_with(|s| {
            s.rate_limit.create_per_second = 0.5;
            s.rate_limit.create_burst = 3;
        })
        .await;
        for _ in 0..3 {
            assert_eq!(
                app.create(json!({"filename": "a", "size": 1}))
                    .await
                    .status(),
                201
            );
        }
        let r = app.create(json!({"filename": "a", "size": 1})).await;
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "Retry-After {retry}");
        let body = assert_error(r, 429, "rate_limited").await;
        assert!(body["retry_after"].as_u64().unwrap() >= 1);
        // Reads are not rate limited.
        assert_eq!(
            app.request(reqwest::Method::GET, "/healthz")
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    })
    .await;
}

#[tokio::test]
async fn chunk_requests_beyond_the_rate_get_429() {
    bounded(async {
        let app = spawn_app_with(|s| {
            s.rate_limit.chunk_per_second = 1.0;
            s.rate_limit.chunk_burst = 2;
        })
        .await;
        let data = test_data(4096, 1);
        let created = app.create_for(&data, 1024).await;
        let id = created["id"].as_str().unwrap();
        app.send_chunks(id, &data, 1024, [0, 1]).await;
        let chunks = chunks_of(&data, 1024);
        assert_error(
            app.put_chunk(id, 2, chunks[2].clone()).await,
            429,
            "rate_limited",
        )
        .await;
        let st = app.status_json(id).await;
        assert_eq!(st["missing_chunks"], json!([2, 3]));
    })
    .await;
}

#[tokio::test]
async fn rate_limit_buckets_are_shared_through_redis() {
    if crate::BACKEND != Backend::Redis {
        return;
    }
    bounded(async {
        let adjust = |s: &mut tranche::config::Settings| {
            s.rate_limit.create_per_second = 0.2;
            s.rate_limit.create_burst = 4;
        };
        let a = spawn_app_with(adjust).await;
        let store = a.redis.as_ref().unwrap().store_settings();
        let b = spawn_app_on(None, |s| {
            adjust(s);
            s.store = store;
        })
        .await;
        for app in [&a, &b, &a, &b] {
            assert_eq!(
                app.create(json!({"filename": "a", "size": 1}))
                    .await
                    .status(),
                201
            );
        }
        // Both instances drew from the same bucket of this client.
        assert_error(
            b.create(json!({"filename": "a", "size": 1})).await,
            429,
            "rate_limited",
        )
        .await;
        assert_error(
            a.create(json!({"filename": "a", "size": 1})).await,
            429,
            "rate_limited",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn too_many_parallel_chunk_requests_for_one_upload_get_429() {
    bounded(async {
        let app = spawn_app_with(|s| s.limits.max_chunk_requests_per_upload = 2).await;
        let data = test_data(4096, 2);
        let created = app.create_for(&data, 1024).await;
        let id = created["id"].as_str().unwrap().to_owned();
        // Two requests hold their slots by sending part of a body.
        let mut held = Vec::new();
        for i in 0..2 {
            let mut r = RawRequest::start(&app, "PUT", &chunk_url(&id, i), 1024).await;
            r.send(&data[..10]).await;
            held.push(r);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let chunks = chunks_of(&data, 1024);
        assert_error(
            app.put_chunk(&id, 2, chunks[2].clone()).await,
            429,
            "rate_limited",
        )
        .await;
        // Another upload is not affected.
        let other = app.create_for(&data, 1024).await;
        app.send_chunks(other["id"].as_str().unwrap(), &data, 1024, [0])
            .await;
        // Once the held requests end, their slots are free again.
        for r in held {
            r.hang_up(Duration::from_secs(5)).await;
        }
        let mut ok = false;
        for _ in 0..50 {
            if app.put_chunk(&id, 2, chunks[2].clone()).await.status() == 200 {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "slots were not given back");
    })
    .await;
}

#[tokio::test]
async fn a_stalled_chunk_body_is_dropped_with_408_and_not_counted() {
    bounded(async {
        let app = spawn_app_with(|s| s.limits.body_idle_timeout = Duration::from_secs(1)).await;
        let data = test_data(2048, 4);
        let created = app.create_for(&data, 1024).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let mut slow = RawRequest::start(&app, "PUT", &chunk_url(&id, 0), 1024).await;
        slow.send(&data[..1]).await;
        // Meanwhile the server serves others.
        app.send_chunks(&id, &data, 1024, [1]).await;
        let started = std::time::Instant::now();
        let (status, body) = slow.read_answer(Duration::from_secs(10)).await;
        assert_eq!(status, Some(408), "{body}");
        assert!(body.contains("request_timeout"), "{body}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let st = app.status_json(&id).await;
        assert_eq!(st["missing_chunks"], json!([0]), "{st}");
        app.send_chunks(&id, &data, 1024, [0]).await;
        assert_eq!(
            expect_json(app.complete(&id).await, 200).await["status"],
            "completed"
        );
    })
    .await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    bounded(async {
        let limited = |s: &mut tranche::config::Settings| {
            s.rate_limit.create_per_second = 0.2;
            s.rate_limit.create_burst = 2;
        };
        let create_from = |app: &TestApp, client: &'static str| {
            app.request(reqwest::Method::POST, "/api/v1/uploads")
                .header("x-forwarded-for", client)
                .json(&json!({"filename": "a", "size": 1}))
                .send()
        };
        let app = spawn_app_with(|s| {
            limited(s);
            s.trusted_proxies = ["127.0.0.1"].iter().collect();
        })
        .await;
        for _ in 0..2 {
            assert_eq!(
                create_from(&app, "203.0.113.7").await.unwrap().status(),
                201
            );
        }
        assert_error(
            create_from(&app, "203.0.113.7").await.unwrap(),
            429,
            "rate_limited",
        )
        .await;
        assert_eq!(
            create_from(&app, "198.51.100.9").await.unwrap().status(),
            201
        );

        // Without a trusted proxy the header is the client's word: ignored,
        // so a client cannot escape its bucket by inventing addresses.
        let app = spawn_app_with(limited).await;
        for client in ["203.0.113.7", "198.51.100.9"] {
            assert_eq!(create_from(&app, client).await.unwrap().status(), 201);
        }
        assert_error(
            create_from(&app, "192.0.2.1").await.unwrap(),
            429,
            "rate_limited",
        )
        .await;
    })
    .await;
}
