//! The test harness: spawns the real server in-process on port 0 with a fresh
//! data directory, and wraps each endpoint in a method.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Client, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tranche::config::Settings;
use tranche::context::AppContext;
use tranche::startup::Application;

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: Client,
    pub ctx: AppContext,
    pub data_dir: PathBuf,
    handle: actix_web::dev::ServerHandle,
    /// Kept so the directory lives as long as the app.
    _dir: Option<TempDir>,
}

/// Settings for a test: a temp data dir, port 0, small chunk bounds so that
/// tests can use small files, quiet logs unless `TEST_LOG` is set.
pub fn test_settings(data_dir: &std::path::Path) -> Settings {
    let mut s = Settings::default();
    s.bind = "127.0.0.1:0".into();
    s.data_dir = data_dir.to_path_buf();
    s.min_chunk_size = bytesize::ByteSize::b(1024);
    s.chunk_size = bytesize::ByteSize::kib(64);
    s.workers = 2;
    s.serve_static = false;
    s.shutdown_timeout = Duration::from_secs(1);
    s
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns an app after letting the test adjust its settings.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(dir.path());
    adjust(&mut settings);
    spawn_with_settings(settings, Some(dir)).await
}

pub async fn spawn_with_settings(settings: Settings, dir: Option<TempDir>) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        tranche::telemetry::init(&settings.log);
    }
    let data_dir = settings.data_dir.clone();
    let app = Application::build(settings).await.expect("app builds");
    let port = app.port();
    let ctx = app.context().clone();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
        ctx,
        data_dir,
        handle,
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }

    pub async fn create(&self, body: Value) -> Response {
        self.client
            .post(self.url("/api/v1/uploads"))
            .json(&body)
            .send()
            .await
            .expect("create request")
    }

    /// Creates an upload for `data` with the given chunk size and returns its JSON.
    pub async fn create_for(&self, data: &[u8], chunk_size: u64) -> Value {
        let resp = self
            .create(json!({"filename": "test.bin", "size": data.len(), "chunk_size": chunk_size}))
            .await;
        assert_eq!(resp.status(), 201, "create failed: {:?}", resp.text().await);
        resp.json().await.unwrap()
    }

    pub async fn put_chunk(&self, id: &str, index: u64, body: Vec<u8>) -> Response {
        self.client
            .put(self.url(&format!("/api/v1/uploads/{id}/chunks/{index}")))
            .body(body)
            .send()
            .await
            .expect("chunk request")
    }

    pub async fn status(&self, id: &str) -> Response {
        self.client
            .get(self.url(&format!("/api/v1/uploads/{id}")))
            .send()
            .await
            .expect("status request")
    }

    pub async fn complete(&self, id: &str) -> Response {
        self.client
            .post(self.url(&format!("/api/v1/uploads/{id}/complete")))
            .send()
            .await
            .expect("complete request")
    }

    pub async fn abort(&self, id: &str) -> Response {
        self.client
            .delete(self.url(&format!("/api/v1/uploads/{id}")))
            .send()
            .await
            .expect("abort request")
    }

    pub async fn download(&self, id: &str) -> Response {
        self.client
            .get(self.url(&format!("/api/v1/files/{id}")))
            .send()
            .await
            .expect("download request")
    }

    /// Sends every chunk of `data` in order and completes; returns the completion JSON.
    pub async fn upload_all(&self, data: &[u8], chunk_size: u64) -> Value {
        let created = self.create_for(data, chunk_size).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let cs = created["chunk_size"].as_u64().unwrap() as usize;
        for (i, chunk) in chunks_of(data, cs).into_iter().enumerate() {
            let r = self.put_chunk(&id, i as u64, chunk).await;
            assert_eq!(r.status(), 200, "chunk {i}: {:?}", r.text().await);
        }
        let r = self.complete(&id).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

/// The chunks of `data` at `chunk_size`; a zero-byte file has one empty chunk.
pub fn chunks_of(data: &[u8], chunk_size: usize) -> Vec<Vec<u8>> {
    if data.is_empty() {
        return vec![Vec::new()];
    }
    data.chunks(chunk_size).map(<[u8]>::to_vec).collect()
}

/// Deterministic pseudo-random bytes (a test's data must be reproducible).
pub fn test_data(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
