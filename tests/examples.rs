//! The programs of `examples/`, run for real against tranche (in-process,
//! authentication on, events to a webhook and a Redis stream) and a private
//! redis-server: `webhook_receiver.py` records each verified event once and
//! refuses forged, stale or tampered ones; `worker.py` checks a completed
//! file's SHA-256 and reports it through the processing status a client
//! sees, acknowledges a resent event without redoing it, reports `failed`
//! for a file that rotted on disk, and an entry whose consumer could not
//! reach tranche and then died is claimed and finished by another worker.
//!
//! Needs `redis-server` and redis-py in `.venv` (`examples/requirements.txt`;
//! `bash .ci/run` installs it). Without redis-py the tests say how to
//! install it and pass, unless `CI` is set: there they fail.

/// The state store of the apps here (the stream's Redis is its own).
pub const BACKEND: helpers::Backend = helpers::Backend::Embedded;

#[path = "api/helpers.rs"]
mod helpers;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use helpers::*;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::Client;
use serde_json::Value;
use sha2::Sha256;
use tranche::config::{Settings, StreamSettings, WebhookSettings};

const STREAM: &str = "tranche:events";
const GROUP: &str = "workers";
const KEY: &[u8] = b"the examples' webhook key, 32 b.";
/// How long anything here may take to happen (an event to arrive, a worker
/// to report): far more than it needs, short enough to fail a hung run.
const WITHIN: Duration = Duration::from_secs(30);
/// One test, all of it.
const TEST_LIMIT: Duration = Duration::from_secs(120);

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// `.venv/bin/python` when redis-py imports there; `None` (after saying so)
/// off CI when it does not.
fn python() -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let imports = |p: &Path| {
        Command::new(p)
            .args(["-c", "import redis"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.is_file() && imports(&python) {
        return Some(python);
    }
    let hint = "python3 -m venv .venv && .venv/bin/pip install -r tests/openapi/requirements.txt \
                -r tests/tus/requirements.txt -r examples/requirements.txt (as .ci/run does)";
    if std::env::var_os("CI").is_some() {
        panic!("redis-py is missing from {}: {hint}", python.display());
    }
    eprintln!("SKIPPED: no redis-py in .venv, so the examples were not run; {hint}");
    None
}

fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(KEY)
    )
}

/// A Python program of `examples/`, its stdout and stderr in `log`, killed
/// (SIGKILL) and reaped when dropped.
struct Program {
    child: Child,
    log: PathBuf,
}

impl Program {
    fn start(python: &Path, script: &str, args: &[String], log: PathBuf) -> Program {
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(python);
        cmd.arg(examples_dir().join(script))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // The programs take these from the environment; only the flags count.
        for name in [
            "TRANCHE_API_KEY",
            "TRANCHE_URL",
            "REDIS_URL",
            "WEBHOOK_SECRET",
        ] {
            cmd.env_remove(name);
        }
        Program {
            child: cmd.spawn().expect("start python"),
            log,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill -{name} failed");
    }

    async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {limit:?}; its output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until its output contains `text`.
    async fn says(&mut self, text: &str) {
        let deadline = Instant::now() + WITHIN;
        while !self.output().contains(text) {
            assert!(
                self.running() && Instant::now() < deadline,
                "never said {text:?}; its output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `webhook_receiver.py` on a free port, once it accepts connections.
async fn start_receiver(python: &Path, dir: &Path) -> (Program, u16, PathBuf) {
    let port = free_port();
    let out = dir.join("events.jsonl");
    let args = [
        "--port".to_string(),
        port.to_string(),
        "--secret".into(),
        secret(),
        "--out".into(),
        out.to_string_lossy().into_owned(),
    ];
    let mut receiver = Program::start(
        python,
        "webhook_receiver.py",
        &args,
        dir.join("receiver.log"),
    );
    receiver.says("listening on").await;
    (receiver, port, out)
}

/// `worker.py` against `app` and `redis` as consumer `consumer`, with more
/// flags after.
fn start_worker(
    python: &Path,
    dir: &Path,
    tranche_url: &str,
    redis: &RedisServer,
    consumer: &str,
    more: &[&str],
) -> Program {
    let mut args: Vec<String> = [
        "--redis-url",
        &redis.url(),
        "--tranche-url",
        tranche_url,
        "--api-key",
        TEST_API_KEY,
        "--stream",
        STREAM,
        "--group",
        GROUP,
        "--consumer",
        consumer,
        "--block",
        "200",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(more.iter().map(|s| s.to_string()));
    Program::start(
        python,
        "worker.py",
        &args,
        dir.join(format!("worker-{consumer}.log")),
    )
}

/// A tranche with authentication on whose events go to `redis`'s stream
/// (and to a webhook on `hook_port`), its client sending the API key.
async fn spawn_tranche(redis: &RedisServer, hook_port: Option<u16>) -> TestApp {
    let url = redis.url();
    let mut app = spawn_with_auth(|s: &mut Settings| {
        s.events.streams = vec![StreamSettings {
            redis_url: url,
            stream: STREAM.into(),
            maxlen: 1000,
            events: Vec::new(),
            retry_for: Duration::from_secs(600),
        }];
        if let Some(port) = hook_port {
            s.events.webhooks = vec![WebhookSettings {
                url: format!("http://127.0.0.1:{port}/hooks/tranche"),
                secret: secret(),
                events: Vec::new(),
                timeout: Duration::from_secs(5),
                retry_for: Duration::from_secs(600),
            }];
        }
    })
    .await;
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {TEST_API_KEY}")).unwrap(),
    );
    app.client = Client::builder()
        .default_headers(headers)
        .timeout(WITHIN)
        .build()
        .unwrap();
    app
}

/// Uploads `data` (API v1, 64 KiB chunks); returns the upload's id.
async fn upload(app: &TestApp, data: &[u8]) -> String {
    let done = app.upload_all(data, 64 * 1024).await;
    assert_eq!(done["status"], "completed", "{done}");
    done["id"].as_str().unwrap().to_owned()
}

/// The accepted events in the receiver's file: (webhook_id, event).
fn recorded(out: &Path) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("a JSON line");
            (
                v["webhook_id"].as_str().unwrap().to_owned(),
                v["event"].clone(),
            )
        })
        .collect()
}

/// Waits until the receiver recorded an event of `kind` for `upload`.
async fn wait_recorded(out: &Path, upload: &str, kind: &str) -> Vec<(String, Value)> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let got = recorded(out);
        if got
            .iter()
            .any(|(_, e)| e["upload_id"] == upload && e["type"] == kind)
        {
            return got;
        }
        assert!(Instant::now() < deadline, "no {kind} recorded: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the upload object shows the processing `state`; returns it.
async fn wait_processing(app: &TestApp, id: &str, state: &str, worker: &Program) -> Value {
    let deadline = Instant::now() + WITHIN;
    loop {
        let view = app.status_json(id).await;
        if view["processing"]["state"] == state {
            return view["processing"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "processing never {state}: {view}; the worker's output:\n{}",
            worker.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The group's pending entries: (entry id, consumer).
async fn pending(conn: &mut redis::aio::MultiplexedConnection) -> Vec<(String, String)> {
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(100)
        .query_async(conn)
        .await
        .expect("XPENDING");
    rows.into_iter().map(|(id, c, _, _)| (id, c)).collect()
}

/// Waits until no entry is pending in the group.
async fn wait_none_pending(conn: &mut redis::aio::MultiplexedConnection) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let left = pending(conn).await;
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still pending: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until tranche put the upload's `upload.completed` on the stream;
/// returns its entry id.
async fn wait_on_stream(conn: &mut redis::aio::MultiplexedConnection, upload: &str) -> String {
    let deadline = Instant::now() + WITHIN;
    loop {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg("-")
            .arg("+")
            .query_async(conn)
            .await
            .expect("XRANGE");
        let completed = entries.iter().find(|(_, fields)| {
            fields.contains(&("type".into(), "upload.completed".into()))
                && fields.contains(&("upload_id".into(), upload.into()))
        });
        if let Some((entry, _)) = completed {
            return entry.clone();
        }
        assert!(Instant::now() < deadline, "not on the stream: {entries:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Standard Webhooks signature of `body` with `key`.
fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

async fn post_hook(port: u16, id: &str, timestamp: i64, signature: &str, body: &str) -> u16 {
    Client::new()
        .post(format!("http://127.0.0.1:{port}/hooks/tranche"))
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .timeout(WITHIN)
        .send()
        .await
        .expect("the receiver answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_whole_loop_upload_webhook_worker_processing_status() {
    let Some(python) = python() else { return };
    bounded_for(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let redis = RedisServer::start().await;
        let mut conn = redis.connection().await;
        let (_receiver, hook_port, out) = start_receiver(&python, dir.path()).await;
        let app = spawn_tranche(&redis, Some(hook_port)).await;
        let mut worker = start_worker(&python, dir.path(), &app.address, &redis, "w1", &[]);

        let data = test_data(300 * 1024, 11);
        let id = upload(&app, &data).await;

        // The receiver: both events, verified (only those are recorded),
        // each id once.
        let got = wait_recorded(&out, &id, "upload.completed").await;
        let ids: HashSet<&String> = got.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), got.len(), "an id recorded twice: {got:?}");
        for (hook_id, event) in &got {
            assert_eq!(event["id"], hook_id.as_str());
        }
        let of_kind = |kind: &str| {
            got.iter()
                .filter(|(_, e)| e["upload_id"] == id.as_str() && e["type"] == kind)
                .count()
        };
        assert_eq!(of_kind("upload.created"), 1, "{got:?}");
        assert_eq!(of_kind("upload.completed"), 1, "{got:?}");
        let (hook_id, completed) = got
            .iter()
            .find(|(_, e)| e["type"] == "upload.completed")
            .unwrap();
        assert_eq!(completed["data"]["file"]["sha256"], sha256_hex(&data));

        // Forged, stale, and a genuine resend.
        let body = serde_json::to_string(completed).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let forged = sign(
            b"not the key, but 32 bytes long!!",
            "evt-forged",
            now,
            &body,
        );
        assert_eq!(
            post_hook(hook_port, "evt-forged", now, &forged, &body).await,
            401
        );
        let stale = sign(KEY, "evt-stale", now - 600, &body);
        assert_eq!(
            post_hook(hook_port, "evt-stale", now - 600, &stale, &body).await,
            401
        );
        let again = sign(KEY, hook_id, now, &body);
        assert_eq!(post_hook(hook_port, hook_id, now, &again, &body).await, 200);
        let tampered = sign(KEY, "evt-new", now, &body);
        let status = post_hook(
            hook_port,
            "evt-new",
            now,
            &tampered,
            &body.replace('0', "1"),
        )
        .await;
        assert_eq!(status, 401, "a body changed after signing");
        assert_eq!(recorded(&out).len(), got.len(), "{:?}", recorded(&out));
        // Several signatures (while a key is rotated): one valid is enough.
        let rotated = format!(
            "{} {}",
            sign(
                b"an older key, also 32 bytes long",
                "evt-rotated",
                now,
                &body
            ),
            sign(KEY, "evt-rotated", now, &body)
        );
        assert_eq!(
            post_hook(hook_port, "evt-rotated", now, &rotated, &body).await,
            204
        );
        let after = recorded(&out);
        assert_eq!(after.len(), got.len() + 1, "{after:?}");
        assert_eq!(after.last().unwrap().0, "evt-rotated");

        // The worker: the client sees the processing status, its result is
        // the file's SHA-256, and nothing is left pending.
        let processing = wait_processing(&app, &id, "completed", &worker).await;
        assert_eq!(processing["result"]["sha256"], sha256_hex(&data));
        assert_eq!(processing["result"]["bytes"], data.len());
        assert!(
            processing["revision"].as_u64().unwrap() >= 3,
            "{processing}"
        );
        wait_none_pending(&mut conn).await;

        // The same event on the stream again, as tranche sends it after a
        // crash between sending and forgetting it: acknowledged, not redone.
        let entry = wait_on_stream(&mut conn, &id).await;
        let fields: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg(&entry)
            .arg(&entry)
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut xadd = redis::cmd("XADD");
        xadd.arg(STREAM).arg("*");
        for (name, value) in &fields[0].1 {
            xadd.arg(name).arg(value);
        }
        let resent: String = xadd.query_async(&mut conn).await.unwrap();
        worker.says(&format!("duplicate entry={resent}")).await;
        wait_none_pending(&mut conn).await;
        let now = app.status_json(&id).await;
        assert_eq!(now["processing"]["revision"], processing["revision"]);

        worker.signal("TERM");
        let status = worker.exit_within(Duration::from_secs(10)).await;
        assert!(status.success(), "{status}: {}", worker.output());
    })
    .await
}

#[tokio::test]
async fn a_worker_reports_failed_for_a_file_that_does_not_match_its_sha256() {
    let Some(python) = python() else { return };
    bounded_for(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let redis = RedisServer::start().await;
        let mut conn = redis.connection().await;
        let app = spawn_tranche(&redis, None).await;
        let data = test_data(200 * 1024, 12);
        let id = upload(&app, &data).await;
        wait_on_stream(&mut conn, &id).await;

        // The stored file rots: one byte flipped on disk, after tranche
        // checked it.
        let path = app.file_path(&id);
        let mut rotten = std::fs::read(&path).expect("the stored file");
        assert_eq!(rotten, data);
        rotten[1000] ^= 0x40;
        std::fs::write(&path, &rotten).unwrap();

        let mut worker = start_worker(&python, dir.path(), &app.address, &redis, "w1", &["--once"]);
        let status = worker.exit_within(WITHIN).await;
        assert!(status.success(), "{status}: {}", worker.output());
        let processing = wait_processing(&app, &id, "failed", &worker).await;
        let message = processing["message"].as_str().unwrap_or_default();
        assert!(message.contains("sha256"), "{processing}");
        assert_eq!(processing["result"]["sha256"], sha256_hex(&rotten));
        assert_ne!(processing["result"]["sha256"], sha256_hex(&data));
        // A mismatch is an outcome, not an error to retry: acknowledged.
        wait_none_pending(&mut conn).await;
    })
    .await
}

#[tokio::test]
async fn an_entry_whose_worker_was_killed_is_claimed_and_finished_by_another() {
    let Some(python) = python() else { return };
    bounded_for(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let redis = RedisServer::start().await;
        let mut conn = redis.connection().await;
        let app = spawn_tranche(&redis, None).await;
        let data = test_data(200 * 1024, 13);
        let id = upload(&app, &data).await;
        let entry = wait_on_stream(&mut conn, &id).await;

        // The first worker talks to a "tranche" that accepts connections and
        // never answers: its requests time out, the entry stays pending with
        // it (no crash), and then it dies holding it.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_url = format!("http://{}", silent.local_addr().unwrap());
        let mut doomed = start_worker(
            &python,
            dir.path(),
            &silent_url,
            &redis,
            "doomed",
            &["--http-timeout", "0.5"],
        );
        doomed.says("retry_later").await;
        assert!(doomed.running(), "{}", doomed.output());
        assert_eq!(
            pending(&mut conn).await,
            vec![(entry, "doomed".to_string())]
        );
        doomed.child.kill().unwrap();
        doomed.child.wait().unwrap();
        assert!(app.status_json(&id).await.get("processing").is_none());

        let mut rescuer = start_worker(
            &python,
            dir.path(),
            &app.address,
            &redis,
            "rescuer",
            &["--claim-idle", "300", "--max-events", "1"],
        );
        let status = rescuer.exit_within(WITHIN).await;
        assert!(status.success(), "{status}: {}", rescuer.output());
        let processing = wait_processing(&app, &id, "completed", &rescuer).await;
        assert_eq!(processing["result"]["sha256"], sha256_hex(&data));
        wait_none_pending(&mut conn).await;
    })
    .await
}
