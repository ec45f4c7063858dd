//! The tus 1.0 endpoint (`/files/`) with real third-party tus clients, each
//! on both state stores, against this build's `tranche` binary:
//!
//! - tus-js-client (npm) in Node: many PATCHes, abort and resume from the
//!   stored fingerprint, a deferred length, parallel parts joined by
//!   concatenation, tranche killed with SIGKILL mid-PATCH and restarted,
//!   bearer tokens (`tests/tus/node/tus-js-client.test.js`);
//! - the published browser bundles in headless Chromium: tus-js-client's
//!   `dist/tus.min.js` (same origin and through CORS) and Uppy's
//!   `dist/uppy.min.js` with Dashboard and Tus: upload, pause/resume, a tab
//!   closed mid-upload and resumed in a new one (`tests/tus/node/browser.test.js`);
//! - tus-js-client left at its defaults through the shipped
//!   `nginx/tranche.conf` (`tests/tus/node/nginx.test.js`);
//! - tuspy (PyPI) from `.venv`: small chunks, sha1 `Upload-Checksum`, resume
//!   from its URL store, its aiohttp uploader (`tests/tus/python/`).
//!
//! Every upload ends with the server's SHA-256 (API v1) and the download
//! compared with the file's. The node and python files start tranche (and a
//! private redis-server per server under `TUS_TEST_STORE=redis`)
//! themselves; this file picks the store, bounds each run's time and kills
//! its whole process group when it overruns.
//!
//! Needs node, npm, Debian's `chromium`, `redis-server` and `nginx`, and
//! tuspy in `.venv` (`bash .ci/run` installs all of it); runs `npm ci
//! --prefix tests/tus` (tus-js-client, uppy, playwright-core) itself when
//! needed. Without tuspy in `.venv` its tests say how to install it and pass,
//! unless `CI` is set: there they fail.
//!
//! By hand, in `tests/tus` after a `cargo build`:
//! `TUS_TEST_STORE=redis node --test node/browser.test.js`, or
//! `../../.venv/bin/python -m unittest discover -v -s python`
//! (`TUS_TRANCHE_BIN` names another binary than `target/debug/tranche`,
//! `TEST_LOG=1` shows the server's log).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const HINT: &str = "`bash .ci/run` installs what the tus client tests need";

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tus")
}

#[derive(Clone, Copy, Debug)]
enum Store {
    Embedded,
    Redis,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Embedded => "embedded",
            Store::Redis => "redis",
        }
    }
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Says what to install instead of failing somewhere inside node or python.
fn check_common(store: Store) {
    if let Store::Redis = store {
        assert!(
            runs("redis-server", "--version"),
            "redis-server is not on PATH: apt-get install redis-server ({HINT})"
        );
    }
}

/// node, and `tests/tus/node_modules` from the committed package-lock.json.
fn check_node() {
    assert!(
        runs("node", "--version"),
        "node is not on PATH: apt-get install nodejs npm ({HINT})"
    );
    // One `npm ci` at a time: the tests of this file run in parallel.
    static NPM: Mutex<()> = Mutex::new(());
    let _guard = NPM.lock().unwrap_or_else(|e| e.into_inner());
    let modules = suite_dir().join("node_modules");
    let installed = ["tus-js-client", "uppy", "playwright-core"]
        .iter()
        .all(|m| modules.join(m).join("package.json").is_file());
    if !installed {
        let npm = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(suite_dir())
            .status();
        assert!(
            npm.is_ok_and(|s| s.success()),
            "`npm ci --prefix tests/tus` failed ({HINT})"
        );
    }
}

fn check_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: apt-get install chromium, or set CHROMIUM ({HINT})"
    );
}

fn check_nginx() {
    assert!(
        runs("nginx", "-v") || Path::new("/usr/sbin/nginx").exists(),
        "nginx not found: apt-get install nginx ({HINT})"
    );
}

/// `.venv/bin/python` when tuspy is importable there; `None` (after saying
/// so) off CI when it is not.
fn tuspy_python() -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if python.is_file() && runs_python(&python) {
        return Some(python);
    }
    let hint = "python3 -m venv .venv && .venv/bin/pip install -r tests/openapi/requirements.txt \
                -r tests/tus/requirements.txt (as .ci/run does)";
    if std::env::var_os("CI").is_some() {
        panic!("tuspy is missing from {}: {hint}", python.display());
    }
    eprintln!("SKIPPED: no tuspy in .venv, so tuspy was not run against the tus endpoint; {hint}");
    None
}

fn runs_python(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import tusclient"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `command` in `tests/tus` on `store` with its output streaming to the
/// terminal, and kills its whole process group (node or python, Chromium,
/// tranche, redis-server, nginx) if it overruns `limit`.
fn run_bounded(mut command: Command, what: &str, store: Store, limit: Duration) {
    let mut child = command
        .current_dir(suite_dir())
        // Not TRANCHE_*: the server under test would read it as a setting.
        .env("TUS_TRANCHE_BIN", env!("CARGO_BIN_EXE_tranche"))
        .env("TUS_TEST_STORE", store.name())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the client run") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!(
                "{what} on the {} store did not finish within {limit:?}",
                store.name()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        // A run that failed may leave what it started (a tranche, a
        // redis-server) behind in the group. While any member is alive the
        // group's id cannot be handed to another process, so this reaches
        // only them.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .stderr(Stdio::null())
            .status();
    }
    assert!(
        status.success(),
        "{what} on the {} store failed ({status}); its output is above",
        store.name()
    );
}

fn node_test(file: &str, store: Store, limit: Duration) {
    let mut node = Command::new("node");
    node.args(["--test", "--test-reporter=spec", file]);
    run_bounded(node, &format!("node --test {file}"), store, limit);
}

fn tus_js_client_in_node(store: Store) {
    check_common(store);
    check_node();
    node_test(
        "node/tus-js-client.test.js",
        store,
        Duration::from_secs(180),
    );
}

/// One Chromium suite at a time: on two cores, two browsers uploading at once
/// would turn the timing of pause and close into a coin toss.
static CHROMIUM: Mutex<()> = Mutex::new(());

fn clients_in_chromium(store: Store) {
    check_common(store);
    check_node();
    check_chromium();
    let _guard = CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
    node_test("node/browser.test.js", store, Duration::from_secs(240));
}

fn through_nginx(store: Store) {
    check_common(store);
    check_node();
    check_nginx();
    node_test("node/nginx.test.js", store, Duration::from_secs(120));
}

fn tuspy(store: Store) {
    check_common(store);
    let Some(python) = tuspy_python() else {
        return;
    };
    let mut unittest = Command::new(python);
    // tuspy leaves its file handles to the garbage collector; the warnings
    // about that would bury the test names.
    unittest.args([
        "-W",
        "ignore::ResourceWarning",
        "-m",
        "unittest",
        "discover",
        "-v",
        "-s",
        "python",
        "-p",
        "test_*.py",
    ]);
    run_bounded(unittest, "tuspy", store, Duration::from_secs(180));
}

#[test]
fn tus_js_client_in_node_on_the_embedded_store() {
    tus_js_client_in_node(Store::Embedded);
}

#[test]
fn tus_js_client_in_node_on_redis() {
    tus_js_client_in_node(Store::Redis);
}

#[test]
fn tus_js_client_and_uppy_in_chromium_on_the_embedded_store() {
    clients_in_chromium(Store::Embedded);
}

#[test]
fn tus_js_client_and_uppy_in_chromium_on_redis() {
    clients_in_chromium(Store::Redis);
}

#[test]
fn tus_js_client_through_the_shipped_nginx_config_on_the_embedded_store() {
    through_nginx(Store::Embedded);
}

#[test]
fn tus_js_client_through_the_shipped_nginx_config_on_redis() {
    through_nginx(Store::Redis);
}

#[test]
fn tuspy_on_the_embedded_store() {
    tuspy(Store::Embedded);
}

#[test]
fn tuspy_on_redis() {
    tuspy(Store::Redis);
}
