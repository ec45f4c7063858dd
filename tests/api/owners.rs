//! What owners share and keep, with authentication on: dedup by SHA-256
//! (a second upload of stored content completes at once, on a hard link,
//! within one owner unless `dedup = "global"`), per-owner quotas (507 at
//! create, freed when files go), `GET /api/v1/usage`, and
//! `retention_after_download`.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};
use tranche::config::Dedup;
use tranche::guards::auth::Claims;

use crate::helpers::*;

/// A create token for `sub`, with optional quota claims.
fn token_for(sub: &str, max_stored: Option<u64>, max_pending: Option<u64>) -> String {
    test_tokens()
        .mint(&Claims {
            exp: tranche::guards::auth::token::unix_now() + 600,
            sub: Some(sub.into()),
            max_stored_bytes: max_stored,
            max_pending_bytes: max_pending,
            ..Claims::default()
        })
        .unwrap()
}

async fn create_with(app: &TestApp, credential: &str, body: Value) -> Response {
    app.request(Method::POST, "/api/v1/uploads")
        .bearer_auth(credential)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn body_for(data: &[u8]) -> Value {
    json!({"filename": "same.bin", "size": data.len(), "chunk_size": 4096,
           "sha256": sha256_hex(data)})
}

/// Sends every chunk of an upload just created and completes it, with its
/// upload token; returns the completed upload.
async fn finish(app: &TestApp, created: &Value, data: &[u8]) -> Value {
    let id = created["id"].as_str().unwrap();
    let token = created["upload_token"].as_str().unwrap();
    let cs = created["chunk_size"].as_u64().unwrap() as usize;
    for (i, chunk) in chunks_of(data, cs).into_iter().enumerate() {
        let r = app
            .request(Method::PUT, &chunk_url(id, i))
            .bearer_auth(token)
            .body(chunk)
            .send()
            .await
            .unwrap();
        expect_json(r, 200).await;
    }
    let done = app
        .request(Method::POST, &format!("/api/v1/uploads/{id}/complete"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    expect_json(done, 200).await
}

/// Creates (with `sha256`) and, unless answered completed, uploads `data`.
async fn store(app: &TestApp, credential: &str, data: &[u8]) -> Value {
    let created = expect_json(create_with(app, credential, body_for(data)).await, 201).await;
    if created["status"] == "completed" {
        return created;
    }
    finish(app, &created, data).await
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

async fn download_as(app: &TestApp, id: &str, credential: &str) -> Response {
    app.request(Method::GET, &format!("/api/v1/files/{id}"))
        .bearer_auth(credential)
        .send()
        .await
        .unwrap()
}

async fn usage_as(app: &TestApp, credential: Option<&str>) -> Response {
    let mut req = app.request(Method::GET, "/api/v1/usage");
    if let Some(c) = credential {
        req = req.bearer_auth(c);
    }
    req.send().await.unwrap()
}

/// `owner`'s row of a usage answer: (stored, pending).
fn row(usage: &Value, owner: &str) -> Option<(u64, u64)> {
    usage["owners"].as_array().unwrap().iter().find_map(|o| {
        (o["owner"] == owner).then(|| {
            (
                o["stored_bytes"].as_u64().unwrap(),
                o["pending_bytes"].as_u64().unwrap(),
            )
        })
    })
}

#[tokio::test]
async fn a_second_upload_of_the_same_content_completes_at_once() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let alice = token_for("alice", None, None);
        let data = test_data(10_000, 61);
        let first = store(&app, &alice, &data).await;
        assert_eq!(first["status"], "completed");

        let second = create_with(&app, &alice, body_for(&data)).await;
        let second = expect_json(second, 201).await;
        assert_eq!(second["status"], "completed", "{second}");
        assert_ne!(second["id"], first["id"], "an upload of its own");
        assert_eq!(second["file"]["id"], second["id"]);
        assert_eq!(second["file"]["sha256"], sha256_hex(&data));
        assert_eq!(second["file"]["size"], 10_000);
        assert_eq!(second["missing_chunks"], json!([]));
        assert_eq!(second["bytes_received"], 10_000);
        assert!(second["file"]["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/v1/files/{}", id_of(&second))));
        let (a, b) = (id_of(&first), id_of(&second));
        // One inode, two names: shared, not copied.
        let (ma, mb) = (
            std::fs::metadata(app.file_path(&a)).unwrap(),
            std::fs::metadata(app.file_path(&b)).unwrap(),
        );
        assert_eq!(ma.ino(), mb.ino());
        assert_eq!(ma.nlink(), 2);
        assert!(!app.part_path(&b).exists(), "no bytes to send, no part");
        // Its own token reads it; GET says the same.
        let token = second["upload_token"].as_str().unwrap();
        let got = download_as(&app, &b, token).await;
        assert_eq!(got.status(), 200);
        assert_eq!(&got.bytes().await.unwrap()[..], &data[..]);
        let status = app
            .request(Method::GET, &format!("/api/v1/uploads/{b}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = expect_json(status, 200).await;
        assert_eq!(status["status"], "completed");
        assert_eq!(status["file"]["id"], b.as_str());
        let text = app.metrics_text().await;
        assert_eq!(
            metric_value(&text, "tranche_uploads_total", Some("deduplicated")),
            Some(1.0),
            "{text}"
        );
        // Another size (or no sha256) is another file.
        let other = test_data(9_999, 61);
        let third = expect_json(create_with(&app, &alice, body_for(&other)).await, 201).await;
        assert_eq!(third["status"], "uploading");
    })
    .await
}

#[tokio::test]
async fn deleting_either_copy_keeps_the_other() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let alice = token_for("alice", None, None);
        let data = test_data(9_000, 62);
        let original = id_of(&store(&app, &alice, &data).await);
        let shared = || async {
            let created = create_with(&app, &alice, body_for(&data)).await;
            let created = expect_json(created, 201).await;
            assert_eq!(
                created["status"], "completed",
                "shared at create: {created}"
            );
            id_of(&created)
        };
        let copy = shared().await;
        let third = shared().await;

        // The original goes: both copies stay whole.
        assert_eq!(
            app.delete_file(&original, Some(TEST_API_KEY))
                .await
                .status(),
            204
        );
        assert_error(
            download_as(&app, &original, TEST_API_KEY).await,
            404,
            "file_not_found",
        )
        .await;
        for id in [&copy, &third] {
            let got = download_as(&app, id, TEST_API_KEY).await;
            assert_eq!(got.status(), 200);
            assert_eq!(&got.bytes().await.unwrap()[..], &data[..]);
        }
        // A copy goes: the other stays, and is still found for the next create.
        assert_eq!(
            app.delete_file(&copy, Some(TEST_API_KEY)).await.status(),
            204
        );
        let got = download_as(&app, &third, TEST_API_KEY).await;
        assert_eq!(&got.bytes().await.unwrap()[..], &data[..]);
        let fourth = shared().await;
        // The last names go: nothing is left on disk.
        for id in [third, fourth] {
            assert_eq!(app.delete_file(&id, Some(TEST_API_KEY)).await.status(), 204);
            assert!(!app.file_path(&id).exists());
        }
        let fifth = expect_json(create_with(&app, &alice, body_for(&data)).await, 201).await;
        assert_eq!(fifth["status"], "uploading", "no copy left to share");
    })
    .await
}

#[tokio::test]
async fn dedup_stays_within_an_owner_by_default() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let data = test_data(5_000, 63);
        store(&app, &token_for("alice", None, None), &data).await;
        let bob = token_for("bob", None, None);
        let theirs = expect_json(create_with(&app, &bob, body_for(&data)).await, 201).await;
        assert_eq!(
            theirs["status"], "uploading",
            "bob must not learn alice's file exists"
        );
        // An API key is an owner of its own too.
        let keyed = expect_json(create_with(&app, TEST_API_KEY, body_for(&data)).await, 201).await;
        assert_eq!(keyed["status"], "uploading");
    })
    .await
}

#[tokio::test]
async fn dedup_global_crosses_owners_and_off_never_shares() {
    bounded(async {
        let data = test_data(5_000, 64);
        let global = spawn_with_auth(|s| s.dedup = Dedup::Global).await;
        store(&global, &token_for("alice", None, None), &data).await;
        let bob = expect_json(
            create_with(&global, &token_for("bob", None, None), body_for(&data)).await,
            201,
        )
        .await;
        assert_eq!(bob["status"], "completed");

        let off = spawn_with_auth(|s| s.dedup = Dedup::Off).await;
        let alice = token_for("alice", None, None);
        store(&off, &alice, &data).await;
        let again = expect_json(create_with(&off, &alice, body_for(&data)).await, 201).await;
        assert_eq!(again["status"], "uploading");
    })
    .await
}

#[tokio::test]
async fn a_stale_dedup_entry_falls_back_to_a_normal_upload() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let alice = token_for("alice", None, None);
        let data = test_data(6_000, 65);
        let first = id_of(&store(&app, &alice, &data).await);
        // The bytes vanish behind the server's back.
        std::fs::remove_file(app.file_path(&first)).unwrap();
        let created = expect_json(create_with(&app, &alice, body_for(&data)).await, 201).await;
        assert_eq!(created["status"], "uploading");
        let done = finish(&app, &created, &data).await;
        assert_eq!(done["status"], "completed");
        // And a record that went with its entry left behind is skipped too.
        let second = id_of(&done);
        use tranche::state::StateStore;
        app.ctx
            .store
            .delete_file(uuid::Uuid::parse_str(&second).unwrap())
            .await
            .unwrap();
        let third = expect_json(create_with(&app, &alice, body_for(&data)).await, 201).await;
        assert_eq!(third["status"], "uploading");
    })
    .await
}

#[tokio::test]
async fn a_retried_shared_create_gets_its_first_answer() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let alice = token_for("alice", None, None);
        let data = test_data(4_000, 66);
        store(&app, &alice, &data).await;
        let send = || {
            app.request(Method::POST, "/api/v1/uploads")
                .bearer_auth(&alice)
                .header("Idempotency-Key", "shared-1")
                .json(&body_for(&data))
                .send()
        };
        let a = expect_json(send().await.unwrap(), 201).await;
        let b = expect_json(send().await.unwrap(), 201).await;
        assert_eq!(a["status"], "completed");
        assert_eq!(a["id"], b["id"]);
        assert_eq!(b["status"], "completed");
        let files = std::fs::read_dir(app.data_dir.join("files"))
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .count();
        assert_eq!(files, 2, "one original, one shared copy");
    })
    .await
}

#[tokio::test]
async fn a_stored_quota_refuses_at_create_and_frees_after_a_delete() {
    bounded(async {
        let app =
            spawn_with_auth(|s| s.quota.max_stored_bytes = bytesize::ByteSize::b(10_000)).await;
        let alice = token_for("alice", None, None);
        let first = store(&app, &alice, &test_data(6_000, 67)).await;
        let big = json!({"filename": "big.bin", "size": 5_000});
        let refused = create_with(&app, &alice, big.clone()).await;
        let body = assert_error(refused, 507, "quota_exceeded").await;
        assert_eq!(body["quota"], "max_stored_bytes");
        assert_eq!(body["usage"], 6_000);
        assert_eq!(body["limit"], 10_000);
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("max_stored_bytes") && message.contains("10000"),
            "{message}"
        );
        let parts = std::fs::read_dir(app.data_dir.join("uploads"))
            .unwrap()
            .count();
        assert_eq!(parts, 0, "refused before any byte or part");
        // A shared copy is stored bytes too.
        let copy = create_with(&app, &alice, body_for(&test_data(6_000, 67))).await;
        assert_error(copy, 507, "quota_exceeded").await;
        // Another owner has a quota of its own.
        let bob = token_for("bob", None, None);
        expect_json(create_with(&app, &bob, big.clone()).await, 201).await;

        assert_eq!(
            app.delete_file(&id_of(&first), Some(TEST_API_KEY))
                .await
                .status(),
            204
        );
        expect_json(create_with(&app, &alice, big).await, 201).await;
    })
    .await
}

#[tokio::test]
async fn a_pending_quota_counts_unfinished_uploads_until_they_go() {
    bounded(async {
        let app = spawn_with_auth(|s| {
            s.quota.max_pending_bytes = bytesize::ByteSize::b(5_000);
            s.upload_ttl = Duration::from_secs(60);
        })
        .await;
        let alice = token_for("alice", None, None);
        let three = json!({"filename": "a.bin", "size": 3_000});
        let first = expect_json(create_with(&app, &alice, three.clone()).await, 201).await;
        let body = assert_error(
            create_with(&app, &alice, three.clone()).await,
            507,
            "quota_exceeded",
        )
        .await;
        assert_eq!(body["quota"], "max_pending_bytes");
        assert_eq!(body["usage"], 3_000);
        // Aborted: freed.
        let abort = app
            .request(
                Method::DELETE,
                &format!("/api/v1/uploads/{}", id_of(&first)),
            )
            .bearer_auth(TEST_API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(abort.status(), 204);
        let second = expect_json(create_with(&app, &alice, three.clone()).await, 201).await;
        // Completed: stored, no longer pending.
        finish(&app, &second, &test_data(3_000, 68)).await;
        let third = expect_json(create_with(&app, &alice, three.clone()).await, 201).await;
        // Expired: freed by the janitor.
        assert_error(
            create_with(&app, &alice, three.clone()).await,
            507,
            "quota_exceeded",
        )
        .await;
        app.ctx.clock.advance(Duration::from_secs(61));
        tranche::janitor::sweep(&app.ctx).await.unwrap();
        let gone = app
            .request(Method::GET, &format!("/api/v1/uploads/{}", id_of(&third)))
            .bearer_auth(TEST_API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 404, "expired and swept");
        expect_json(create_with(&app, &alice, three.clone()).await, 201).await;
        let usage = expect_json(usage_as(&app, Some(&alice)).await, 200).await;
        assert_eq!(row(&usage, "sub:alice"), Some((3_000, 3_000)), "{usage}");
        // A token's claim lowers the server's quota, never raises it.
        let lower = token_for("carol", None, Some(1_000));
        let body = assert_error(
            create_with(&app, &lower, three.clone()).await,
            507,
            "quota_exceeded",
        )
        .await;
        assert_eq!(body["limit"], 1_000);
        let higher = token_for("dave", None, Some(1_000_000));
        expect_json(create_with(&app, &higher, three.clone()).await, 201).await;
        let body = assert_error(
            create_with(&app, &higher, three).await,
            507,
            "quota_exceeded",
        )
        .await;
        assert_eq!(body["limit"], 5_000);
    })
    .await
}

#[tokio::test]
async fn usage_shows_every_owner_to_an_api_key_and_its_own_to_a_token() {
    bounded(async {
        let app =
            spawn_with_auth(|s| s.quota.max_stored_bytes = bytesize::ByteSize::b(1_000_000)).await;
        let alice = token_for("alice", Some(50_000), None);
        let bob = token_for("bob", None, None);
        store(&app, &alice, &test_data(4_000, 69)).await;
        expect_json(
            create_with(&app, &bob, json!({"filename": "b", "size": 2_500})).await,
            201,
        )
        .await;

        assert_error(usage_as(&app, None).await, 401, "unauthorized").await;
        let all = expect_json(usage_as(&app, Some(TEST_API_KEY)).await, 200).await;
        assert_eq!(row(&all, "sub:alice"), Some((4_000, 0)), "{all}");
        assert_eq!(row(&all, "sub:bob"), Some((0, 2_500)), "{all}");
        let mine = expect_json(usage_as(&app, Some(&alice)).await, 200).await;
        assert_eq!(mine["owners"].as_array().unwrap().len(), 1, "{mine}");
        assert_eq!(row(&mine, "sub:alice"), Some((4_000, 0)));
        assert_eq!(mine["owners"][0]["max_stored_bytes"], 50_000);
        // An owner with nothing yet sees zeros.
        let carol = expect_json(
            usage_as(&app, Some(&token_for("carol", None, None))).await,
            200,
        )
        .await;
        assert_eq!(row(&carol, "sub:carol"), Some((0, 0)));
    })
    .await
}

#[tokio::test]
async fn a_file_kept_until_downloaded_goes_after_one_full_download() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let data = test_data(20_000, 70);
        let mut body = body_for(&data);
        body["retention_after_download"] = json!("1");
        let created = expect_json(create_with(&app, TEST_API_KEY, body).await, 201).await;
        assert_eq!(created["retention_after_download"], true);
        let done = finish(&app, &created, &data).await;
        assert_eq!(done["retention_after_download"], true);
        let id = id_of(&done);
        let path = format!("/api/v1/files/{id}");
        // HEAD and a range do not count.
        let head = app
            .request(Method::HEAD, &path)
            .bearer_auth(TEST_API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200);
        let part = app
            .request(Method::GET, &path)
            .bearer_auth(TEST_API_KEY)
            .header("Range", "bytes=0-99")
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(part.bytes().await.unwrap().len(), 100);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(app.file_path(&id).exists());
        // The whole body: then it goes.
        let full = download_as(&app, &id, TEST_API_KEY).await;
        assert_eq!(full.status(), 200);
        assert_eq!(&full.bytes().await.unwrap()[..], &data[..]);
        // The deletion runs on its own task once the body is out; it is
        // told (counted) last.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let deleted = || async {
            let text = app.metrics_text().await;
            metric_value(&text, "tranche_files_deleted_total", Some("download")) == Some(1.0)
        };
        while !deleted().await {
            assert!(
                std::time::Instant::now() < deadline,
                "not deleted after a full download"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!app.file_path(&id).exists());
        assert_error(
            download_as(&app, &id, TEST_API_KEY).await,
            404,
            "file_not_found",
        )
        .await;
        // Spelled as JSON or as forms and scripts write it; anything else is a mistake.
        for (flag, kept) in [
            (json!(true), true),
            (json!(0), false),
            (json!("false"), false),
        ] {
            let mut body = json!({"filename": "f", "size": 1});
            body["retention_after_download"] = flag;
            let created = expect_json(create_with(&app, TEST_API_KEY, body).await, 201).await;
            assert_eq!(
                created["retention_after_download"]
                    .as_bool()
                    .unwrap_or(false),
                kept
            );
        }
        let mut body = json!({"filename": "f", "size": 1});
        body["retention_after_download"] = json!("maybe");
        assert_error(
            create_with(&app, TEST_API_KEY, body).await,
            400,
            "invalid_request",
        )
        .await;
        // Without it, a download keeps the file.
        let kept = id_of(&store(&app, TEST_API_KEY, &test_data(1_000, 71)).await);
        assert_eq!(download_as(&app, &kept, TEST_API_KEY).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(app.file_path(&kept).exists());
    })
    .await
}

#[tokio::test]
async fn the_server_setting_deletes_every_file_after_its_download() {
    bounded(async {
        let app = spawn_with_auth(|s| s.retention_after_download = true).await;
        let data = test_data(3_000, 72);
        let id = id_of(&store(&app, TEST_API_KEY, &data).await);
        let full = download_as(&app, &id, TEST_API_KEY).await;
        assert_eq!(&full.bytes().await.unwrap()[..], &data[..]);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while app.file_path(&id).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "not deleted after a full download"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}
