//! What only the Redis backend has to survive: several tranche processes
//! sharing one store and one data directory, the store going away and coming
//! back while the server keeps running, a tranche process killed while it
//! holds a chunk's lease, and the janitor cleaning Redis itself.
//!
//! Included only by `tests/api_redis.rs`. Every test is bounded in time.

use std::time::Duration;

use redis::AsyncCommands;
use reqwest::{Client, Method, Response};
use serde_json::{json, Value};

use crate::helpers::*;

/// Bound of each test here: they wait out reconnects and restarts.
const FAULT_TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

async fn metrics_of(client: &Client, server: &ServerProcess) -> String {
    let resp = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// The keys Redis holds for one upload (its hash tag is its id).
async fn upload_keys(conn: &mut redis::aio::MultiplexedConnection, id: &str) -> Vec<String> {
    let mut keys: Vec<String> = conn.keys(format!("tranche:{{{id}}}*")).await.unwrap();
    keys.sort();
    keys
}

/// Asserts the answer of a request made while Redis is down: 503
/// `store_unavailable` with a `Retry-After`.
async fn assert_store_unavailable(resp: Response, what: &str) {
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let status = resp.status().as_u16();
    assert_eq!(status, 503, "{what}: expected 503 while Redis is down");
    assert!(
        retry_after
            .as_deref()
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "{what}: 503 without a Retry-After in seconds: {retry_after:?}"
    );
    assert_error(resp, 503, "store_unavailable").await;
}

/// a) Two tranche processes on one Redis and one data directory: the chunks
/// of each upload go alternately to both, then both are asked to complete at
/// once. Both answer 200 with the same file, it is assembled exactly once, and
/// either serves it.
#[tokio::test]
async fn two_processes_share_uploads_and_racing_completes_assemble_once() {
    bounded_for(FAULT_TEST_TIMEOUT, async {
        let redis = RedisServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let client = client();
        let a = ServerProcess::start(dir.path(), &data_dir, Some(&redis), &client).await;
        let b = ServerProcess::start(dir.path(), &data_dir, Some(&redis), &client).await;
        let servers = [&a, &b];
        let cs = 4096;
        let rounds = 3;

        for round in 0..rounds {
            let data = test_data(12 * cs + 100 + round, 201 + round as u64);
            let chunks = chunks_of(&data, cs);
            let n = chunks.len();
            let created = expect_json(
                client
                    .post(servers[round % 2].url("/api/v1/uploads"))
                    .json(&json!({"filename": "shared.bin", "size": data.len(),
                                  "chunk_size": cs, "sha256": sha256_hex(&data)}))
                    .send()
                    .await
                    .unwrap(),
                201,
            )
            .await;
            let id = created["id"].as_str().unwrap().to_owned();

            // The other process knows the upload at once.
            let view = expect_json(
                client
                    .get(servers[(round + 1) % 2].url(&format!("/api/v1/uploads/{id}")))
                    .send()
                    .await
                    .unwrap(),
                200,
            )
            .await;
            assert_eq!(view["chunk_count"], n);
            assert_eq!(view["received_chunks"], 0);

            // First half in order (the running hash moves on in both
            // processes), second half backwards (the catch-up hasher of
            // either process has work); each answer counts both processes'
            // chunks.
            let order: Vec<usize> = (0..n / 2).chain((n / 2..n).rev()).collect();
            for (k, &i) in order.iter().enumerate() {
                let server = servers[k % 2];
                let answer = expect_json(
                    client
                        .put(server.url(&chunk_url(&id, i)))
                        .body(chunks[i].clone())
                        .send()
                        .await
                        .unwrap(),
                    200,
                )
                .await;
                assert_eq!(
                    answer["received_chunks"],
                    k + 1,
                    "chunk {i} on {}",
                    server.base
                );
            }
            for server in servers {
                let view = expect_json(
                    client
                        .get(server.url(&format!("/api/v1/uploads/{id}")))
                        .send()
                        .await
                        .unwrap(),
                    200,
                )
                .await;
                assert_eq!(view["missing_chunks"], json!([]), "{}", server.base);
                assert_eq!(view["bytes_received"], data.len());
            }

            let complete = |server: &ServerProcess| {
                client
                    .post(server.url(&format!("/api/v1/uploads/{id}/complete")))
                    .send()
            };
            let (ra, rb) = tokio::join!(complete(&a), complete(&b));
            let (va, vb) = (
                expect_json(ra.unwrap(), 200).await,
                expect_json(rb.unwrap(), 200).await,
            );
            for v in [&va, &vb] {
                assert_eq!(v["status"], "completed", "{v}");
                assert_eq!(v["file"]["sha256"], sha256_hex(&data), "{v}");
                assert_eq!(v["file"]["size"], data.len());
            }
            assert_eq!(va["file"], vb["file"]);

            for server in servers {
                let body = client
                    .get(server.url(&format!("/api/v1/files/{id}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(body.status(), 200, "download from {}", server.base);
                assert_eq!(
                    sha256_hex(&body.bytes().await.unwrap()),
                    sha256_hex(&data),
                    "download from {}",
                    server.base
                );
            }
        }

        // Every upload completed at least once above, so a total of one per
        // upload over both processes means exactly one assembly each.
        let (ma, mb) = (metrics_of(&client, &a).await, metrics_of(&client, &b).await);
        let completed = |m: &str| {
            metric_value(m, "tranche_uploads_total", Some("\"completed\"")).unwrap_or(0.0)
        };
        assert_eq!(
            completed(&ma) + completed(&mb),
            rounds as f64,
            "assemblies: a {}, b {}",
            completed(&ma),
            completed(&mb)
        );
        let assemblies = |m: &str| {
            metric_value(m, "tranche_assembly_duration_seconds_count", None).unwrap_or(0.0)
        };
        assert_eq!(assemblies(&ma) + assemblies(&mb), rounds as f64);
        let chunks_counted =
            |m: &str| metric_value(m, "tranche_chunks_received_total", None).unwrap_or(0.0);
        let per_round: usize = (0..rounds).map(|r| (12 * cs + 100 + r).div_ceil(cs)).sum();
        assert_eq!(chunks_counted(&ma) + chunks_counted(&mb), per_round as f64);
    })
    .await
}

/// b) Redis dies (SIGKILL) in the middle of an upload while tranche keeps
/// running: every request that needs the store answers 503
/// `store_unavailable` with `Retry-After`, and `/readyz` says not ready. Redis
/// comes back on the same port with its AOF (appendfsync always), and tranche
/// picks up by itself: the upload holds exactly the acknowledged chunks, the
/// rest is sent, the file is right.
#[tokio::test]
async fn redis_outage_answers_503_and_the_upload_resumes_when_it_returns() {
    bounded_for(FAULT_TEST_TIMEOUT, async {
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
        let mut app = spawn_app_on(Some(redis), |s| {
            s.janitor_interval = Duration::from_secs(3600);
        })
        .await;
        let cs = 1024;
        let data = test_data(7 * cs + 500, 301);
        let chunks = chunks_of(&data, cs);
        assert_eq!(chunks.len(), 8);
        let created = expect_json(
            app.create(json!({"filename": "outage.bin", "size": data.len(),
                              "chunk_size": cs, "sha256": sha256_hex(&data)}))
                .await,
            201,
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        let acked = [0u64, 1, 2, 5];
        app.send_chunks(&id, &data, cs, acked).await;

        app.redis.as_mut().unwrap().stop();

        // All at once: while Redis refuses connections, each request waits
        // for the client's reconnect attempts (a few seconds) before its 503.
        let parts_before = std::fs::read_dir(app.data_dir.join("uploads"))
            .unwrap()
            .count();
        let gap_started = std::time::Instant::now();
        let (put, status, complete, abort, create, ready) = tokio::join!(
            app.put_chunk(&id, 3, chunks[3].clone()),
            app.status(&id),
            app.complete(&id),
            app.abort(&id),
            app.create(json!({"filename": "x.bin", "size": 10})),
            app.request(Method::GET, "/readyz").send(),
        );
        let gap_answered = gap_started.elapsed();
        assert!(
            gap_answered < Duration::from_secs(10),
            "requests took {gap_answered:?} to fail while Redis was down"
        );
        assert_store_unavailable(put, "chunk PUT").await;
        assert_store_unavailable(status, "GET status").await;
        assert_store_unavailable(complete, "complete").await;
        assert_store_unavailable(abort, "abort").await;
        assert_store_unavailable(create, "create").await;
        let parts_after = std::fs::read_dir(app.data_dir.join("uploads"))
            .unwrap()
            .count();
        assert_eq!(
            parts_before, parts_after,
            "a failed create left a part file"
        );
        let ready = ready.unwrap();
        assert_eq!(ready.status(), 503);
        assert!(ready.headers().contains_key("retry-after"));
        let body: Value = ready.json().await.unwrap();
        assert_eq!(body["checks"]["store"], "unavailable", "{body}");

        app.redis.as_mut().unwrap().start_again().await;

        // The client reconnects in the background: the first requests after
        // Redis returns may still fail, within a bound.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let view = loop {
            let resp = app.status(&id).await;
            if resp.status() == 200 {
                break resp.json::<Value>().await.unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "tranche did not reach Redis again within 10 s: {} {:?}",
                resp.status(),
                resp.text().await
            );
            assert_store_unavailable(resp, "GET status while reconnecting").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(view["status"], "uploading", "{view}");
        assert_eq!(view["missing_chunks"], json!([3, 4, 6, 7]), "{view}");
        assert_eq!(view["received_chunks"], acked.len());
        let acked_bytes: usize = acked.iter().map(|&i| chunks[i as usize].len()).sum();
        assert_eq!(view["bytes_received"], acked_bytes);

        app.send_chunks(&id, &data, cs, [3, 4, 6, 7]).await;
        let done = expect_json(app.complete(&id).await, 200).await;
        assert_eq!(done["file"]["sha256"], sha256_hex(&data), "{done}");
        let body = app.download(&id).await;
        assert_eq!(body.status(), 200);
        assert_eq!(sha256_hex(&body.bytes().await.unwrap()), sha256_hex(&data));

        // And the node says it is ready again.
        let ready = app.request(Method::GET, "/readyz").send().await.unwrap();
        let status = ready.status();
        let text = ready.text().await.unwrap();
        assert_eq!(status, 200, "/readyz after Redis returned: {text}");
    })
    .await
}

/// c) tranche is killed with SIGKILL mid-upload, while a chunk's body is
/// half-way through, on Redis. Started again: the acknowledged chunks are
/// there, the interrupted one is not counted, its stale lease lapses by itself
/// within the lease TTL (fast-forwarded here), and the upload finishes with the
/// right file.
#[tokio::test]
async fn sigkill_mid_chunk_on_redis_resumes_after_restart() {
    bounded_for(FAULT_TEST_TIMEOUT, async {
        let redis = RedisServer::start().await;
        let mut conn = redis.connection().await;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let client = client();
        let cs = 4096;
        let data = test_data(9 * cs + 77, 401);
        let chunks = chunks_of(&data, cs);
        assert_eq!(chunks.len(), 10);

        let mut server = ServerProcess::start(dir.path(), &data_dir, Some(&redis), &client).await;
        let created = expect_json(
            client
                .post(server.url("/api/v1/uploads"))
                .json(&json!({"filename": "k.bin", "size": data.len(),
                              "chunk_size": cs, "sha256": sha256_hex(&data)}))
                .send()
                .await
                .unwrap(),
            201,
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        let acked = [0usize, 1, 2, 6, 9];
        for &i in &acked {
            let r = client
                .put(server.url(&chunk_url(&id, i)))
                .body(chunks[i].clone())
                .send()
                .await
                .unwrap();
            expect_json(r, 200).await;
        }

        // Chunk 3 half sent: the server holds its lease and waits for the rest.
        let addr = server.base.trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        {
            use tokio::io::AsyncWriteExt;
            let head = format!(
                "PUT {} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
                chunk_url(&id, 3),
                chunks[3].len()
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(&chunks[3][..cs / 2]).await.unwrap();
            stream.flush().await.unwrap();
        }
        let lease_key = format!("tranche:{{{id}}}:lease:chunk:3");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !conn.exists::<_, bool>(&lease_key).await.unwrap() {
            assert!(
                std::time::Instant::now() < deadline,
                "the half-sent chunk never took its lease"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.kill();
        drop(stream);

        let server = ServerProcess::start(dir.path(), &data_dir, Some(&redis), &client).await;
        let view = expect_json(
            client
                .get(server.url(&format!("/api/v1/uploads/{id}")))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        let missing: Vec<usize> = (0..10).filter(|i| !acked.contains(i)).collect();
        assert_eq!(view["status"], "uploading");
        assert_eq!(view["missing_chunks"], json!(missing));
        assert_eq!(view["received_chunks"], acked.len());
        let acked_bytes: usize = acked.iter().map(|&i| chunks[i].len()).sum();
        assert_eq!(view["bytes_received"], acked_bytes);

        // The dead holder's lease still guards chunk 3, but only for the
        // lease TTL: it lapses by itself. Fast-forward that lapse.
        let pttl: i64 = conn.pttl(&lease_key).await.unwrap();
        if pttl != -2 {
            assert!(
                pttl > 0 && pttl <= 30_000,
                "a dead holder's lease must lapse within the lease TTL, PTTL {pttl}"
            );
            let r = client
                .put(server.url(&chunk_url(&id, 3)))
                .body(chunks[3].clone())
                .send()
                .await
                .unwrap();
            if r.status() == 409 {
                assert!(r.headers().contains_key("retry-after"));
                assert_error(r, 409, "chunk_in_progress").await;
            } else {
                expect_json(r, 200).await;
            }
            let _: () = conn.pexpire(&lease_key, 1).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        for &i in &missing {
            let r = client
                .put(server.url(&chunk_url(&id, i)))
                .body(chunks[i].clone())
                .send()
                .await
                .unwrap();
            expect_json(r, 200).await;
        }
        let done = expect_json(
            client
                .post(server.url(&format!("/api/v1/uploads/{id}/complete")))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(done["file"]["sha256"], sha256_hex(&data), "{done}");
        let body = client
            .get(server.url(&format!("/api/v1/files/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(body.status(), 200);
        assert_eq!(sha256_hex(&body.bytes().await.unwrap()), sha256_hex(&data));
        // No lease outlives its request.
        let left: Vec<String> = conn
            .keys(format!("tranche:{{{id}}}:lease:*"))
            .await
            .unwrap();
        assert_eq!(left, Vec::<String>::new());
    })
    .await
}

/// d) The janitor on Redis: an expired upload's part file, record, bitmap,
/// index entry and idempotency key go; a live upload and a completed file
/// stay, with their keys (the completed one without a TTL).
#[tokio::test]
async fn janitor_on_redis_removes_the_expired_uploads_keys_and_keeps_the_rest() {
    bounded_for(FAULT_TEST_TIMEOUT, async {
        let app = spawn_app_with(|s| {
            s.upload_ttl = Duration::from_secs(60);
            s.janitor_interval = Duration::from_secs(3600);
        })
        .await;
        let mut conn = app.redis.as_ref().expect("a Redis app").connection().await;
        let data = test_data(3 * 1024, 501);

        let idem = "janitor-redis-key-1";
        let resp = app
            .request(Method::POST, "/api/v1/uploads")
            .header("Idempotency-Key", idem)
            .json(&json!({"filename": "e.bin", "size": data.len(), "chunk_size": 1024}))
            .send()
            .await
            .unwrap();
        let expired = expect_json(resp, 201).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.send_chunks(&expired, &data, 1024, [0]).await;
        assert_eq!(
            upload_keys(&mut conn, &expired).await,
            vec![
                format!("tranche:{{{expired}}}:chunks"),
                format!("tranche:{{{expired}}}:meta")
            ]
        );
        // Stored under its caller-scoped name (no caller: auth is off).
        let scoped = tranche::core::idempotency_key(Some(idem.into()), None)
            .unwrap()
            .unwrap();
        let idem_key = format!("tranche:idem:{scoped}");
        assert!(conn.exists::<_, bool>(&idem_key).await.unwrap());

        let kept = app.upload_all(&data, 1024).await["id"]
            .as_str()
            .unwrap()
            .to_owned();

        // Past the TTL by tranche's clock; Redis's own TTLs (a day later) do
        // not fire: the sweep is what deletes.
        app.ctx.clock.advance(Duration::from_secs(61));
        let live = app.create_for(&data, 1024).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.send_chunks(&live, &data, 1024, [1]).await;
        assert!(app.part_path(&expired).exists());

        let report = tranche::janitor::sweep(&app.ctx).await.expect("sweep");
        assert_eq!(report.expired_uploads, 1, "{report:?}");

        // The expired upload: bytes, state and every key gone.
        assert!(!app.part_path(&expired).exists(), "expired part file kept");
        use tranche::state::StateStore;
        let uuid = uuid::Uuid::parse_str(&expired).unwrap();
        assert!(
            app.ctx.store.get_upload(uuid).await.unwrap().is_none(),
            "expired upload's state kept"
        );
        assert_error(app.status(&expired).await, 404, "upload_not_found").await;
        assert_eq!(upload_keys(&mut conn, &expired).await, Vec::<String>::new());
        let score: Option<f64> = conn.zscore("tranche:expiry", &expired).await.unwrap();
        assert_eq!(score, None, "expired upload still in the expiry index");
        assert!(
            !conn.exists::<_, bool>(&idem_key).await.unwrap(),
            "idempotency key of the expired upload kept"
        );

        // The live upload: untouched, its keys expire by themselves later.
        assert!(app.part_path(&live).exists(), "live part file deleted");
        let view = app.status_json(&live).await;
        assert_eq!(view["missing_chunks"], json!([0, 2]));
        let meta_ttl: i64 = conn.pttl(format!("tranche:{{{live}}}:meta")).await.unwrap();
        assert!(
            meta_ttl > 0,
            "a live upload's record has a TTL, got {meta_ttl}"
        );
        let score: Option<f64> = conn.zscore("tranche:expiry", &live).await.unwrap();
        assert!(score.is_some(), "live upload left the expiry index");

        // The completed file: kept, its record without a TTL, out of the index.
        let body = app.download(&kept).await;
        assert_eq!(body.status(), 200);
        assert_eq!(&body.bytes().await.unwrap()[..], &data[..]);
        for key in upload_keys(&mut conn, &kept).await {
            let ttl: i64 = conn.pttl(&key).await.unwrap();
            assert_eq!(ttl, -1, "{key} of a completed upload has a TTL");
        }
        assert!(upload_keys(&mut conn, &kept).await.len() >= 2);
        let score: Option<f64> = conn.zscore("tranche:expiry", &kept).await.unwrap();
        assert_eq!(score, None, "completed upload still in the expiry index");
    })
    .await
}

#[tokio::test]
async fn startup_waits_for_a_redis_that_comes_up_late() {
    bounded(async {
        let mut redis = RedisServer::start().await;
        redis.stop();
        let dir = tempfile::tempdir().unwrap();
        let mut settings = test_settings(dir.path());
        settings.store = redis.store_settings();
        let build = tokio::spawn(tranche::startup::Application::build(settings));
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert!(!build.is_finished(), "start-up gave up on Redis at once");
        redis.start_again().await;
        let app = build.await.unwrap().expect("starts once Redis is up");
        assert!(app.port() > 0);
    })
    .await
}

/// tus PATCHes racing at one offset from two processes sharing Redis: the
/// offset lease lives in Redis, so exactly one writes and the others get
/// 409 (offset moved) or 423 (being written); the bytes are the winner's,
/// never a mix, never doubled.
#[tokio::test]
async fn racing_tus_patches_on_two_processes_let_exactly_one_write() {
    bounded_for(FAULT_TEST_TIMEOUT, async {
        let redis = RedisServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let client = client();
        let a = ServerProcess::start(dir.path(), &data_dir, Some(&redis), &client).await;
        let b = ServerProcess::start(dir.path(), &data_dir, Some(&redis), &client).await;
        let servers = [&a, &b];
        let piece = 2 * 1024 * 1024;
        let tail = test_data(1000, 9);
        let created = client
            .post(a.url("/files/"))
            .header("tus-resumable", "1.0.0")
            .header("upload-length", piece + tail.len())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let path = created.headers()["location"].to_str().unwrap().to_owned();
        let id = path.rsplit('/').next().unwrap().to_owned();
        let patch = |server: &ServerProcess, offset: usize, body: Vec<u8>| {
            client
                .patch(server.url(&path))
                .header("tus-resumable", "1.0.0")
                .header("upload-offset", offset)
                .header("content-type", "application/offset+octet-stream")
                .body(body)
                .send()
        };
        let bodies: Vec<Vec<u8>> = (0..6).map(|n| test_data(piece, 300 + n)).collect();
        let racing = bodies
            .iter()
            .enumerate()
            .map(|(n, body)| patch(servers[n % 2], 0, body.clone()));
        let answers = futures::future::join_all(racing).await;
        let statuses: Vec<u16> = answers
            .iter()
            .map(|r| r.as_ref().unwrap().status().as_u16())
            .collect();
        let winners: Vec<usize> = (0..6).filter(|&n| statuses[n] == 204).collect();
        assert_eq!(winners.len(), 1, "exactly one PATCH writes: {statuses:?}");
        assert!(
            statuses.iter().all(|s| [204, 409, 423].contains(s)),
            "{statuses:?}"
        );
        let head = client
            .head(b.url(&path))
            .header("tus-resumable", "1.0.0")
            .send()
            .await
            .unwrap();
        assert_eq!(head.headers()["upload-offset"], piece.to_string().as_str());
        let done = patch(&b, piece, tail.clone()).await.unwrap();
        assert_eq!(done.status(), 204);
        let mut expected = bodies[winners[0]].clone();
        expected.extend_from_slice(&tail);
        let view = expect_json(
            client
                .get(a.url(&format!("/api/v1/uploads/{id}")))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(view["status"], "completed");
        assert_eq!(view["file"]["sha256"], sha256_hex(&expected));
    })
    .await;
}
