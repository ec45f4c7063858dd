//! The test harness: spawns the real server in-process on port 0 with a fresh
//! data directory, and wraps each endpoint in a method. The state backend is
//! the one the test crate names at its root (`crate::BACKEND`): the same
//! battery runs against the embedded store (`tests/api/main.rs`) and against a
//! private redis-server per app (`tests/api_redis.rs`).

// Each test crate uses a different part of the harness.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tranche::clock::Clock;
use tranche::config::{Settings, StoreSettings};
use tranche::context::AppContext;
use tranche::startup::Application;

/// Which state store the battery runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Redis,
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: Client,
    /// The app's context; `ctx.clock` is adjustable: a test moves it forward
    /// to make time pass (expiry), then runs `tranche::janitor::sweep`.
    pub ctx: AppContext,
    pub data_dir: PathBuf,
    /// The app's private Redis, with the Redis backend; killed with the app.
    pub redis: Option<RedisServer>,
    handle: actix_web::dev::ServerHandle,
    /// Kept so the directory lives as long as the app.
    _dir: Option<TempDir>,
}

/// Settings for a test: a temp data dir, port 0, small chunk bounds so that
/// tests can use small files, quiet logs unless `TEST_LOG` is set.
pub fn test_settings(data_dir: &std::path::Path) -> Settings {
    Settings {
        bind: "127.0.0.1:0".into(),
        data_dir: data_dir.to_path_buf(),
        min_chunk_size: bytesize::ByteSize::b(1024),
        chunk_size: bytesize::ByteSize::kib(64),
        workers: 2,
        serve_static: false,
        shutdown_timeout: Duration::from_secs(1),
        // The tests' files are small; they should not fail on a machine
        // whose disk is nearly full but for the production reserve.
        limits: tranche::config::LimitSettings {
            reserve_free_bytes: bytesize::ByteSize::mib(1),
            state_reserve: bytesize::ByteSize::mib(1),
            ..Default::default()
        },
        ..Settings::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns an app after letting the test adjust its settings. With the Redis
/// backend, the app gets a redis-server of its own.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let redis = match crate::BACKEND {
        Backend::Embedded => None,
        Backend::Redis => Some(RedisServer::start().await),
    };
    spawn_app_on(redis, adjust).await
}

/// The API key and token secret of test servers with authentication on.
pub const TEST_API_KEY: &str = "backend-key-for-tests-0123456789";
pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret!";

/// Spawns an app with authentication on: [`TEST_API_KEY`], and tokens signed
/// with [`TEST_JWT_SECRET`].
pub async fn spawn_with_auth(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.auth.enabled = true;
        s.auth.api_keys = vec![TEST_API_KEY.into()];
        s.auth.jwt_secret = Some(TEST_JWT_SECRET.into());
        adjust(s);
    })
    .await
}

/// Mints and checks tokens as the apps of [`spawn_with_auth`] do.
pub fn test_tokens() -> tranche::guards::auth::Tokens {
    tranche::guards::auth::Tokens::new(TEST_JWT_SECRET.as_bytes(), Duration::from_secs(5)).unwrap()
}

/// Spawns an app on the given Redis (or on the embedded store with `None`),
/// for tests that need a Redis started their own way (with persistence, say).
pub async fn spawn_app_on(
    redis: Option<RedisServer>,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(dir.path());
    if let Some(redis) = &redis {
        settings.store = redis.store_settings();
    }
    adjust(&mut settings);
    spawn_app_parts(settings, Some(dir), redis).await
}

/// Spawns an app with exactly these settings (store included).
pub async fn spawn_with_settings(settings: Settings, dir: Option<TempDir>) -> TestApp {
    spawn_app_parts(settings, dir, None).await
}

async fn spawn_app_parts(
    settings: Settings,
    dir: Option<TempDir>,
    redis: Option<RedisServer>,
) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        tranche::telemetry::init(&settings.log);
    }
    let data_dir = settings.data_dir.clone();
    // Reads like the system clock until a test advances it.
    let app = Application::build_with_clock(settings, Clock::adjustable())
        .await
        .expect("app builds");
    let port = app.port();
    let ctx = app.context().clone();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        ctx,
        data_dir,
        redis,
        handle,
        _dir: dir,
    }
}

/// A free loopback port (free when asked; a server that then fails to bind it
/// is started again on another).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// A private redis-server child process on a loopback port: no RDB snapshots,
/// no AOF unless asked, killed (SIGKILL) and reaped when dropped. It can be
/// stopped and started again on the same port with the same arguments (and so
/// the same `--dir`): with `--appendonly yes --appendfsync always` its data
/// survives.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    /// Working directory when the caller gave no `--dir`.
    _scratch: Option<TempDir>,
}

impl RedisServer {
    /// How long a redis-server may take to answer PING after it starts
    /// (an AOF of a test is tiny to load).
    const READY_WITHIN: Duration = Duration::from_secs(10);

    pub async fn start() -> RedisServer {
        Self::start_with(&[]).await
    }

    /// Starts with extra arguments after the defaults (later ones win in
    /// Redis), e.g. `["--appendonly", "yes", "--appendfsync", "always",
    /// "--dir", path]`.
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        let scratch = if extra.contains(&"--dir") {
            None
        } else {
            Some(tempfile::tempdir().expect("temp dir for redis"))
        };
        let mut args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(dir) = &scratch {
            args.push("--dir".into());
            args.push(dir.path().to_string_lossy().into_owned());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = RedisServer {
            child: None,
            port: 0,
            args,
            _scratch: scratch,
        };
        // Another process may take the free port before redis-server binds it.
        for attempt in 1..=5 {
            server.port = free_port();
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(e) if attempt < 5 => eprintln!("redis-server did not start ({e}); retrying"),
                Err(e) => panic!("redis-server did not start: {e}"),
            }
        }
        unreachable!()
    }

    /// Starts it again after [`RedisServer::stop`], on the same port with the
    /// same arguments.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is still running");
        if let Err(e) = self.spawn_and_wait().await {
            panic!(
                "redis-server did not start again on port {}: {e}",
                self.port
            );
        }
    }

    /// Kills it with SIGKILL (no chance to save anything that is not already
    /// in its AOF) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The store settings of an app on this Redis.
    pub fn store_settings(&self) -> StoreSettings {
        StoreSettings::Redis {
            url: self.url(),
            key_prefix: "tranche:".into(),
        }
    }

    /// A connection of the test's own, to look at the keys.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis")
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("redis-server not found: apt-get install redis-server")
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Self::READY_WITHIN;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("exited at start: {status}"));
            }
            if ping(self.port).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("no PONG within {:?}", Self::READY_WITHIN));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a Redis on `port` answers PING with PONG (not LOADING, not an error).
async fn ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await?;
        Ok::<bool, std::io::Error>(buf[..n].starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Ok(true))
    )
}

/// A `tranche serve` child process (the real binary), killed with SIGKILL and
/// reaped when dropped so that a failing test leaves none behind.
pub struct ServerProcess {
    child: Child,
    pub base: String,
}

impl ServerProcess {
    /// Starts `tranche serve` on a free port, from `dir` as working directory
    /// (so that no `./config.toml` of the repository applies), on the state
    /// store `redis` names (the embedded one with `None`), and waits until
    /// `/healthz` answers.
    pub async fn start(
        dir: &Path,
        data_dir: &Path,
        redis: Option<&RedisServer>,
        client: &Client,
    ) -> ServerProcess {
        Self::start_with(dir, data_dir, redis, client, "", None).await
    }

    /// [`ServerProcess::start`] with extra lines for its `config.toml` and,
    /// with `log`, its info-level log (stderr) written to that file.
    pub async fn start_with(
        dir: &Path,
        data_dir: &Path,
        redis: Option<&RedisServer>,
        client: &Client,
        extra_config: &str,
        log: Option<&Path>,
    ) -> ServerProcess {
        let port = free_port();
        let config = dir.join("config.toml");
        // Small chunks allowed, no static files, quiet logs.
        std::fs::write(
            &config,
            format!("min_chunk_size = 1024\nserve_static = false\nworkers = 2\n{extra_config}\n"),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tranche"));
        cmd.current_dir(dir)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", if log.is_some() { "info" } else { "warn" })
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(log) = log {
            cmd.stderr(std::fs::File::create(log).expect("log file"));
        }
        // Settings from the environment running the tests must not leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRANCHE_") {
                cmd.env_remove(key);
            }
        }
        if let Some(redis) = redis {
            cmd.env("TRANCHE_STORE__TYPE", "redis")
                .env("TRANCHE_STORE__URL", redis.url());
        }
        let mut server = ServerProcess {
            child: cmd.spawn().expect("start tranche"),
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("tranche exited at start: {status}");
            }
            let up = client.get(format!("{}/healthz", server.base)).send().await;
            if up.is_ok_and(|r| r.status() == 200) {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "tranche did not answer /healthz in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL (std's kill on Unix): no chance to flush anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn stop(&self) {
        // As a signal does: live event streams end rather than hold the stop.
        self.ctx.stopping.cancel();
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

/// Upper bound on any single test, so that a hung server fails the test
/// instead of stalling the whole battery.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a test body under [`TEST_TIMEOUT`].
pub async fn bounded<F: std::future::Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test exceeded its time bound")
}

/// Runs a test body under a bound of its own (fault tests wait out reconnects).
pub async fn bounded_for<F: std::future::Future>(limit: Duration, body: F) -> F::Output {
    tokio::time::timeout(limit, body)
        .await
        .unwrap_or_else(|_| panic!("test exceeded its time bound of {limit:?}"))
}

/// Asserts that `resp` is an API error: the given status, a JSON body with the
/// stable `error` code and a non-empty `message`. Returns the body for further
/// checks (extra fields such as `missing_chunks`).
pub async fn assert_error(resp: Response, status: u16, code: &str) -> Value {
    let got = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(got, status, "expected {status} {code}, got {got}: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "error answer must be JSON, got content-type {content_type:?}: {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    assert_eq!(body["error"], code, "wrong error code: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
    body
}

/// Asserts a 2xx-or-other status and returns the JSON body, with the body in
/// the failure message.
pub async fn expect_json(resp: Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(got, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

/// The value of an unlabelled sample in Prometheus text, or the sum over a
/// metric's label sets (those containing `labels` when given); `None` if the
/// metric is absent.
pub fn metric_value(text: &str, name: &str, labels: Option<&str>) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, rest) = key.split_once('{').unwrap_or((key, ""));
        if metric != name || labels.is_some_and(|l| !rest.contains(l)) {
            continue;
        }
        *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
    }
    found
}

/// `Content-Digest` value (RFC 9530) for `data`.
pub fn content_digest(data: &[u8]) -> String {
    use base64::Engine;
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
    )
}

pub fn chunk_url(id: &str, index: impl std::fmt::Display) -> String {
    format!("/api/v1/uploads/{id}/chunks/{index}")
}

impl TestApp {
    /// A request to `path` with any method, for the cases the endpoint methods
    /// above do not cover (extra headers, odd paths).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn put_chunk_with_digest(
        &self,
        id: &str,
        index: u64,
        body: Vec<u8>,
        digest: &str,
    ) -> Response {
        self.request(reqwest::Method::PUT, &chunk_url(id, index))
            .header("content-digest", digest)
            .body(body)
            .send()
            .await
            .expect("chunk request")
    }

    /// Where the server keeps the bytes of an upload in progress (see the
    /// layout in `src/blobs/local.rs`).
    pub fn part_path(&self, id: &str) -> PathBuf {
        let id = uuid::Uuid::parse_str(id).expect("a UUID");
        self.data_dir
            .join("uploads")
            .join(format!("{}.part", id.simple()))
    }

    /// Where the server keeps a completed file (see `src/blobs/local.rs`).
    pub fn file_path(&self, id: &str) -> PathBuf {
        let hex = uuid::Uuid::parse_str(id)
            .expect("a UUID")
            .simple()
            .to_string();
        self.data_dir
            .join("files")
            .join(&hex[0..2])
            .join(&hex[2..4])
            .join(hex)
    }

    /// `DELETE /api/v1/files/{id}`, with a bearer credential when given.
    pub async fn delete_file(&self, id: &str, credential: Option<&str>) -> Response {
        let mut req = self.request(reqwest::Method::DELETE, &format!("/api/v1/files/{id}"));
        if let Some(c) = credential {
            req = req.bearer_auth(c);
        }
        req.send().await.expect("delete request")
    }

    /// `GET /metrics` as text.
    pub async fn metrics_text(&self) -> String {
        self.request(reqwest::Method::GET, "/metrics")
            .bearer_auth(TEST_API_KEY)
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .unwrap()
    }

    /// Sends the chunks `indexes` of `data` one after another, asserting 200.
    pub async fn send_chunks(
        &self,
        id: &str,
        data: &[u8],
        chunk_size: usize,
        indexes: impl IntoIterator<Item = u64>,
    ) {
        let chunks = chunks_of(data, chunk_size);
        for i in indexes {
            let r = self.put_chunk(id, i, chunks[i as usize].clone()).await;
            assert_eq!(r.status(), 200, "chunk {i}: {:?}", r.text().await);
        }
    }

    pub async fn status_json(&self, id: &str) -> Value {
        expect_json(self.status(id).await, 200).await
    }
}

/// A hand-written HTTP/1.1 request over a plain socket, for what reqwest will
/// not do: announce a length and then stall or hang up mid-body.
pub struct RawRequest {
    stream: tokio::net::TcpStream,
}

impl RawRequest {
    /// Connects and sends the request head announcing `content_length` bytes.
    pub async fn start(
        app: &TestApp,
        method: &str,
        path: &str,
        content_length: usize,
    ) -> RawRequest {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
            .await
            .expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {content_length}\r\nConnection: close\r\n\r\n",
            app.port
        );
        stream.write_all(head.as_bytes()).await.expect("send head");
        RawRequest { stream }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("send body");
        self.stream.flush().await.expect("flush");
    }

    /// Reads the answer until the server closes the connection. Returns the
    /// status (None if the server closed without answering) and the body.
    pub async fn read_answer(mut self, within: Duration) -> (Option<u16>, String) {
        use tokio::io::AsyncReadExt;
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(within, self.stream.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok());
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// Half-closes the connection: the server sees the body end early.
    pub async fn hang_up(mut self, within: Duration) -> (Option<u16>, String) {
        use tokio::io::AsyncWriteExt;
        let _ = self.stream.shutdown().await;
        self.read_answer(within).await
    }
}
