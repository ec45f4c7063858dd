//! API v1 against its OpenAPI document: Schemathesis (pinned in
//! `tests/openapi/requirements.txt`; `.ci/run` installs it in `.venv`) reads
//! `/api/v1/openapi.json` from the real server, with authentication on and an
//! API key, and sends it what the document allows and what it does not, then
//! chains operations along the document's links (create → chunk → complete →
//! download). Any answer that is a 5xx or that the document does not describe
//! (status, content type, body, headers) fails the test. First on the embedded
//! store, then on a private redis-server.
//!
//! Without Schemathesis the test says how to install it and passes, unless
//! `CI` is set: there a missing Schemathesis fails it. `SCHEMATHESIS=path`
//! runs another installation.

/// The state store of `spawn_app_with`; each run below names its store itself.
pub const BACKEND: helpers::Backend = helpers::Backend::Embedded;

#[path = "api/helpers.rs"]
mod helpers;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use helpers::*;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};

/// The checks of issue 14: no 5xx, and every status, content type, body and
/// header as the document says.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance";

/// Test cases per operation and phase, and the seed: the same run each time,
/// about half a minute per store on two cores. `SCHEMATHESIS_MAX_EXAMPLES`
/// and `SCHEMATHESIS_SEED` change them, for a longer hunt by hand.
const MAX_EXAMPLES: &str = "200";
const SEED: &str = "14";

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Upper bound on one Schemathesis run; it is killed after that.
const RUN_LIMIT: Duration = Duration::from_secs(240);

fn schemathesis() -> Option<PathBuf> {
    let path = std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/schemathesis")
        });
    if path.is_file() {
        return Some(path);
    }
    let hint = "python3 -m venv .venv && .venv/bin/pip install -r tests/openapi/requirements.txt \
                (as .ci/run does), or set SCHEMATHESIS";
    if std::env::var_os("CI").is_some() {
        panic!("Schemathesis is missing at {}: {hint}", path.display());
    }
    eprintln!(
        "SKIPPED: no Schemathesis at {}, so API v1 was not fuzzed against docs/openapi.yaml; {hint}",
        path.display()
    );
    None
}

#[tokio::test]
async fn schemathesis_finds_nothing_on_either_store() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    fuzz(&schemathesis, None).await;
    fuzz(&schemathesis, Some(RedisServer::start().await)).await;
}

/// Runs Schemathesis against a server on `redis` (or the embedded store).
async fn fuzz(schemathesis: &std::path::Path, redis: Option<RedisServer>) {
    let store = if redis.is_some() { "redis" } else { "embedded" };
    let mut app = spawn_app_on(redis, |s| {
        s.auth.enabled = true;
        s.auth.api_keys = vec![TEST_API_KEY.into()];
        s.auth.jwt_secret = Some(TEST_JWT_SECRET.into());
        // Generated sizes are mostly small, but not all: keep the uploads
        // that are accepted (and their preallocated part files) small.
        s.max_file_size = bytesize::ByteSize::mib(4);
        s.limits.max_pending_bytes = bytesize::ByteSize::mib(512);
    })
    .await;
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {TEST_API_KEY}")).unwrap(),
    );
    app.client = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let ids = seed_uploads(&app).await;

    // Random ids reach nothing; these uploads in each state let the
    // generated requests reach the code behind the id (ranges and
    // preconditions of downloads, chunks of an open upload...).
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("schemathesis.toml");
    let values: Vec<String> = ids.iter().map(|id| format!("{id:?}")).collect();
    std::fs::write(
        &config,
        format!(
            "[dictionaries.ids]\nvalues = [{}]\n\n[parameters]\n\"path.id\" = {{ dictionary = \"ids\", probability = 0.5 }}\n",
            values.join(", ")
        ),
    )
    .unwrap();

    let started = Instant::now();
    let child = tokio::process::Command::new(schemathesis)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(app.url("/api/v1/openapi.json"))
        .args(["--checks", &CHECKS.replace(' ', "")])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--header", &format!("Authorization: Bearer {TEST_API_KEY}")])
        .arg("--max-examples")
        .arg(setting("SCHEMATHESIS_MAX_EXAMPLES", MAX_EXAMPLES))
        .arg("--seed")
        .arg(setting("SCHEMATHESIS_SEED", SEED))
        // One worker: Python 3.11's parser is not safe to call from several
        // threads (a SystemError about AST recursion depth), and this
        // machine has two cores for the server and the fuzzer together.
        .args(["--workers", "1", "--request-timeout", "30"])
        // A live event stream does not end while its upload may change: each
        // request would wait out the timeout. tests/api/sse.rs checks it.
        .args(["--exclude-operation-id", "streamUploadEvents"])
        .args(["--generation-database", "none", "--no-color"])
        // Reports and caches land in the temp dir, not the repository.
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start schemathesis");
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis on the {store} store ran past {RUN_LIMIT:?}"))
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout
        .lines()
        .last()
        .unwrap_or_default()
        .trim_matches(['=', ' ']);
    eprintln!(
        "schemathesis on the {store} store: {summary} ({:.0?})",
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "Schemathesis found answers that break docs/openapi.yaml on the {store} store \
         (or could not run):\n{stdout}\n{stderr}"
    );
    app.stop().await;
}

/// Uploads in each state the API knows: a completed file, a completed empty
/// file, one still uploading (chunk 0 of 3 received) and an aborted one.
async fn seed_uploads(app: &TestApp) -> Vec<String> {
    let data = test_data(3000, 14);
    let done = app.upload_all(&data, 1024).await;
    let empty = app.upload_all(&[], 1024).await;

    let open = app.create_for(&data, 1024).await;
    let open_id = open["id"].as_str().unwrap().to_string();
    let chunk = app.put_chunk(&open_id, 0, data[..1024].to_vec()).await;
    assert_eq!(chunk.status(), 200);

    let aborted = app
        .create(json!({"filename": "aborted.bin", "size": 10}))
        .await;
    assert_eq!(aborted.status(), 201);
    let aborted: Value = aborted.json().await.unwrap();
    let aborted_id = aborted["id"].as_str().unwrap().to_string();
    assert_eq!(app.abort(&aborted_id).await.status(), 204);

    vec![
        done["id"].as_str().unwrap().to_string(),
        empty["id"].as_str().unwrap().to_string(),
        open_id,
        aborted_id,
    ]
}

/// The document is open (no credentials needed with authentication on, and
/// a wrong one does not matter), JSON, and what `tranche openapi` prints.
#[tokio::test]
async fn the_server_serves_what_the_binary_prints() {
    let app = spawn_with_auth(|_| {}).await;
    for auth in [None, Some("Bearer not-a-key")] {
        let mut req = app.request(reqwest::Method::GET, "/api/v1/openapi.json");
        if let Some(auth) = auth {
            req = req.header(AUTHORIZATION, auth);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/json"
        );
        let served: Value = resp.json().await.unwrap();
        assert_eq!(served["openapi"], "3.1.0");
        assert!(served["paths"]["/api/v1/uploads"]["post"].is_object());

        let printed = std::process::Command::new(env!("CARGO_BIN_EXE_tranche"))
            .arg("openapi")
            .output()
            .unwrap();
        assert!(printed.status.success());
        let printed: Value = serde_json::from_slice(&printed.stdout).unwrap();
        assert_eq!(printed, served);
    }
    let yaml = std::process::Command::new(env!("CARGO_BIN_EXE_tranche"))
        .args(["openapi", "--yaml"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(yaml.stdout).unwrap(),
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).unwrap()
    );
}
