//! A full disk is an outage tranche walks out of by itself, on both stores:
//! the data directory is a small tmpfs that another "process" fills mid-upload.
//! Uploads admitted before it filled still finish (their part files are
//! preallocated; the embedded store gets the state reserve's room), new
//! creates get 507, and once space returns writes go on with no restart and
//! every file keeps its SHA-256. Also: no state reserve at all, where the
//! embedded store must still recover once space returns.
//!
//! Mounting a tmpfs needs root, which CI has (`.ci/run` runs as root). Off
//! CI, without root, the tests say so and pass without running.

#[path = "api/helpers.rs"]
mod helpers;

/// The in-process helpers' default backend (each test picks its own here).
pub const BACKEND: helpers::Backend = helpers::Backend::Embedded;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Response;
use serde_json::{json, Value};

use helpers::*;

const MIB: usize = 1 << 20;

/// A tmpfs of its own, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` when this machine will not mount one (not root, off CI).
    fn mount(mib: usize) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("temp dir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(Tmpfs { dir });
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to mount a tmpfs for the disk-full tests"
        );
        eprintln!("disk_full: cannot mount a tmpfs here (not root?); skipping");
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem of `dir` to the last byte with a file of its own.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    for block in [MIB, 64 << 10, 4 << 10, 512, 1] {
        let buf = vec![0xAAu8; block];
        while file.write_all(&buf).is_ok() {}
    }
    let _ = file.sync_all();
    path
}

/// Sends a request until it is not a 503 (the store reopening), within 20 s.
async fn through_outage<F, Fut>(what: &str, mut send: F) -> Response
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = send().await;
        if resp.status() != 503 || Instant::now() > deadline {
            return resp;
        }
        let body = resp.text().await.unwrap_or_default();
        assert!(body.contains("store_unavailable"), "{what}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(app: &TestApp, size: usize, chunk: usize) -> Response {
    app.create(json!({"filename": "f.bin", "size": size, "chunk_size": chunk}))
        .await
}

/// Sends chunks `indexes` of `data`, each through any store outage.
async fn send(app: &TestApp, id: &str, data: &[u8], chunk: usize, indexes: std::ops::Range<u64>) {
    let chunks = chunks_of(data, chunk);
    for i in indexes {
        let resp = through_outage(&format!("chunk {i}"), || {
            app.put_chunk(id, i, chunks[i as usize].clone())
        })
        .await;
        assert_eq!(resp.status(), 200, "chunk {i}: {:?}", resp.text().await);
    }
}

async fn complete(app: &TestApp, id: &str, data: &[u8]) {
    let resp = through_outage("complete", || app.complete(id)).await;
    let done = expect_json(resp, 200).await;
    assert_eq!(done["file"]["sha256"], sha256_hex(data));
}

/// A completed file, on a connection of its own: the pooled ones carried
/// refused requests whose bodies the server did not read, and a connection
/// it closes after such an answer must not be the one a download picks up.
async fn fetch(app: &TestApp, id: &str) -> bytes::Bytes {
    let resp = reqwest::Client::new()
        .get(app.url(&format!("/api/v1/files/{id}")))
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status(), 200);
    resp.bytes().await.expect("the whole file")
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_value(&text, name, None).unwrap_or(0.0)
}

/// The whole episode on one store: fill the disk mid-upload, finish the
/// admitted upload while it stays full, refuse a new one, free the space,
/// and carry on.
async fn a_full_disk_episode(redis: Option<RedisServer>) {
    // Room for the two files and /readyz's 64 MiB of free space once the filler goes.
    let Some(tmpfs) = Tmpfs::mount(160) else {
        return;
    };
    let embedded = redis.is_none();
    let app = spawn_app_on(redis, |s| {
        s.data_dir = tmpfs.path().to_path_buf();
        s.limits.reserve_free_bytes = bytesize::ByteSize::mib(4);
        s.limits.state_reserve = bytesize::ByteSize::mib(8);
        s.max_chunk_size = bytesize::ByteSize::mib(8);
    })
    .await;
    let chunk = 4 * MIB;
    let a = test_data(40 * MIB, 1501);
    let created = expect_json(create(&app, a.len(), chunk).await, 201).await;
    let id_a = created["id"].as_str().unwrap().to_owned();
    send(&app, &id_a, &a, chunk, 0..1).await;

    let filler = fill(tmpfs.path());
    // Admitted before the disk filled: it finishes while the disk stays full.
    send(&app, &id_a, &a, chunk, 1..10).await;
    complete(&app, &id_a, &a).await;
    // A new upload does not fit: 507 before any byte, and not ready.
    let refused = create(&app, MIB, MIB).await;
    assert_error(refused, 507, "insufficient_storage").await;
    let ready = app
        .request(reqwest::Method::GET, "/readyz")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    if embedded {
        assert_eq!(metric(&app, "tranche_state_reserve_released").await, 1.0);
        // The commit that found the disk full had the store opened again.
        assert!(metric(&app, "tranche_state_store_reopens").await >= 1.0);
    }

    // Space returns: writes go on without a restart.
    std::fs::remove_file(&filler).unwrap();
    let b = test_data(3 * MIB, 1502);
    // On a connection of its own, as `fetch` explains: the pooled ones
    // carried refused requests.
    let fresh = reqwest::Client::new();
    let created = through_outage("create", || async {
        fresh
            .post(app.url("/api/v1/uploads"))
            .json(&json!({"filename": "f.bin", "size": b.len(), "chunk_size": MIB}))
            .send()
            .await
            .expect("create request")
    })
    .await;
    let id_b = expect_json(created, 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    send(&app, &id_b, &b, MIB, 0..3).await;
    complete(&app, &id_b, &b).await;
    let ready = app
        .request(reqwest::Method::GET, "/readyz")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{:?}", ready.text().await);
    if embedded {
        assert_eq!(metric(&app, "tranche_state_reserve_released").await, 0.0);
        assert!(
            tmpfs.path().join(".state-reserve").exists(),
            "laid down again"
        );
    }

    // Nothing was corrupted.
    for (id, data) in [(&id_a, &a), (&id_b, &b)] {
        assert_eq!(sha256_hex(&fetch(&app, id).await), sha256_hex(data));
    }
    app.stop().await;
}

#[tokio::test]
async fn the_embedded_store_walks_out_of_a_full_disk() {
    bounded_for(Duration::from_secs(120), a_full_disk_episode(None)).await;
}

#[tokio::test]
async fn the_redis_store_walks_out_of_a_full_disk() {
    bounded_for(
        Duration::from_secs(120),
        a_full_disk_episode(Some(RedisServer::start().await)),
    )
    .await;
}

/// No state reserve: while the disk is full the embedded store may refuse
/// writes (503, nothing acknowledged), and once space returns it takes them
/// again without a restart.
#[tokio::test]
async fn without_a_reserve_the_embedded_store_recovers_once_space_returns() {
    bounded_for(Duration::from_secs(120), async {
        let Some(tmpfs) = Tmpfs::mount(64) else {
            return;
        };
        let app = spawn_app_on(None, |s| {
            s.data_dir = tmpfs.path().to_path_buf();
            s.limits.reserve_free_bytes = bytesize::ByteSize::mib(2);
            s.limits.state_reserve = bytesize::ByteSize::b(0);
        })
        .await;
        let chunk = 256 << 10;
        let data = test_data(8 * MIB, 1503);
        let created = expect_json(create(&app, data.len(), chunk).await, 201).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let chunks = chunks_of(&data, chunk);
        let filler = fill(tmpfs.path());
        // Chunks go on while the store finds room; the first it refuses is
        // not acknowledged, and stays refused while the disk is full.
        let mut refused = None;
        for (i, body) in chunks.iter().enumerate() {
            let resp = app.put_chunk(&id, i as u64, body.clone()).await;
            match resp.status().as_u16() {
                200 => {}
                503 => {
                    refused = Some(i);
                    break;
                }
                other => panic!("chunk {i}: {other} {:?}", resp.text().await),
            }
        }
        let status: Value = app.status_json(&id).await;
        assert!(
            status["missing_chunks"]
                .as_array()
                .unwrap()
                .contains(&json!(refused)),
            "a refused chunk is not counted: {status}"
        );
        // redb grows its file at the first commit after the disk filled, so
        // this is where the store refuses, and what this test is about.
        let refused = refused.expect("the store refused a chunk on the full disk");
        std::fs::remove_file(&filler).unwrap();
        let start = refused as u64;
        send(&app, &id, &data, chunk, start..chunks.len() as u64).await;
        complete(&app, &id, &data).await;
        assert_eq!(sha256_hex(&fetch(&app, &id).await), sha256_hex(&data));
        app.stop().await;
    })
    .await;
}

/// A tus upload whose length is not known at creation has no room reserved:
/// a PATCH that meets the full disk gets 507 and counts none of its bytes,
/// and once space returns the client resumes from the same offset.
#[tokio::test]
async fn a_deferred_length_tus_upload_meets_a_full_disk_with_507_then_resumes() {
    bounded_for(Duration::from_secs(120), async {
        let Some(tmpfs) = Tmpfs::mount(64) else {
            return;
        };
        let app = spawn_app_on(None, |s| {
            s.data_dir = tmpfs.path().to_path_buf();
            s.limits.reserve_free_bytes = bytesize::ByteSize::mib(2);
            s.limits.state_reserve = bytesize::ByteSize::mib(4);
        })
        .await;
        let data = test_data(3 * MIB, 1504);
        let tus = |method: reqwest::Method, path: &str| {
            app.request(method, path).header("tus-resumable", "1.0.0")
        };
        let created = tus(reqwest::Method::POST, "/files/")
            .header("upload-defer-length", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let path = created.headers()["location"].to_str().unwrap().to_owned();
        let patch = |offset: usize, end: usize, length: Option<usize>| {
            let mut req = tus(reqwest::Method::PATCH, &path)
                .header("upload-offset", offset)
                .header("content-type", "application/offset+octet-stream");
            if let Some(length) = length {
                req = req.header("upload-length", length);
            }
            req.body(data[offset..end].to_vec()).send()
        };
        assert_eq!(patch(0, MIB, None).await.unwrap().status(), 204);

        let filler = fill(tmpfs.path());
        let refused = patch(MIB, 3 * MIB, None).await.unwrap();
        assert_error(refused, 507, "insufficient_storage").await;
        let head = through_outage("head", || async {
            tus(reqwest::Method::HEAD, &path).send().await.unwrap()
        })
        .await;
        assert_eq!(head.headers()["upload-offset"], MIB.to_string().as_str());

        std::fs::remove_file(&filler).unwrap();
        let resumed = through_outage("patch", || async {
            patch(MIB, 3 * MIB, Some(3 * MIB)).await.unwrap()
        })
        .await;
        assert_eq!(resumed.status(), 204);
        let id = path.rsplit('/').next().unwrap();
        assert_eq!(sha256_hex(&fetch(&app, id).await), sha256_hex(&data));
        app.stop().await;
    })
    .await;
}
