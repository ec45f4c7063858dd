//! The `tranche upload`, `status` and `download` commands: the real binary,
//! run as a child process against an in-process server on a loopback port.
//! Interrupted runs are really interrupted (SIGKILL, SIGINT) and then run
//! again, as a person would.

/// The state store of the servers in this test crate.
pub const BACKEND: helpers::Backend = helpers::Backend::Embedded;

#[path = "api/helpers.rs"]
mod helpers;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use helpers::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Upper bound on one run of the binary: every run here moves a few MiB.
const RUN_TIMEOUT: Duration = Duration::from_secs(25);

/// What a finished run printed and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The binary with `args`, none of the user's `TRANCHE_*` settings, output
/// captured, killed if the test drops it.
fn command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tranche"));
    cmd.args(args)
        .env_remove("TRANCHE_SERVER")
        .env_remove("TRANCHE_TOKEN")
        .env_remove("TRANCHE_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn finish(child: tokio::process::Child) -> Run {
    let out = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .expect("tranche did not finish in time")
        .expect("tranche runs");
    Run {
        // A signal's death shows as no code; 128 + signal, as a shell says.
        code: out.status.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&out.status).unwrap_or(0)
        }),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn tranche(args: &[&str]) -> Run {
    finish(command(args).spawn().expect("spawn tranche")).await
}

/// `tranche upload FILE --server ... --state-dir ... EXTRA...`.
fn upload_args<'a>(
    app: &'a TestApp,
    file: &'a Path,
    state: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "upload",
        file.to_str().unwrap(),
        "--server",
        &app.address,
        "--state-dir",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}

/// A file of `len` deterministic bytes in `dir`.
fn write_file(dir: &Path, name: &str, len: usize, seed: u64) -> (std::path::PathBuf, Vec<u8>) {
    let data = test_data(len, seed);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

async fn fetch(app: &TestApp, url: &str) -> Vec<u8> {
    let resp = app.client.get(url).send().await.expect("download");
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.bytes().await.unwrap().to_vec()
}

fn state_files(state: &Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(state) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The API key and token secret of the servers with authentication on.
const KEY: &str = TEST_API_KEY;
const SECRET: &str = TEST_JWT_SECRET;

/// Waits until the server has counted at least `at_least` chunks.
async fn until_chunks_received(app: &TestApp, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.ctx.metrics.chunks_received.get() < at_least {
        assert!(Instant::now() < deadline, "the upload did not start");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) to the process `pid` with the
/// shell's own `kill`: present wherever `sh` is.
fn send_signal(pid: u32, signal: &str) {
    let kill = std::process::Command::new("sh")
        .args(["-c", &format!("kill -{signal} {pid}")])
        .status()
        .expect("kill runs");
    assert!(kill.success(), "kill -{signal} {pid}");
}

/// Waits until the server has some of the upload's chunks, then freezes the
/// client (SIGSTOP) so that the test, not the scheduler, decides what
/// happens next; checks that chunks were still missing at that point.
/// `before` is the server's chunk count when the client started.
async fn freeze_mid_upload(app: &TestApp, pid: u32, before: u64, total_chunks: u64) {
    until_chunks_received(app, before + 5).await;
    send_signal(pid, "STOP");
    let received = app.ctx.metrics.chunks_received.get() - before;
    assert!(
        received < total_chunks,
        "the client sent all {total_chunks} chunks before it could be stopped"
    );
}

/// Waits until no chunk request is being received, so that the byte counter
/// no longer moves.
async fn until_quiet(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.ctx.metrics.chunks_in_flight.get() > 0 {
        assert!(Instant::now() < deadline, "a chunk request never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_multi_chunk_upload_prints_the_url_and_sha256() {
    bounded(async {
        let app = spawn_app().await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (file, data) = write_file(dir.path(), "lecture.mp4", 300 * 1024 + 17, 1);

        let run = tranche(&upload_args(
            &app,
            &file,
            &state,
            &["--chunk-size", "32KiB", "--parallel", "3", "--json"],
        ))
        .await;
        assert_eq!(run.code, 0, "{run}");
        let report = run.json();
        let done = &report["files"][0];
        assert_eq!(done["sha256"], sha256_hex(&data), "{run}");
        assert_eq!(done["size"], data.len() as u64);
        assert_eq!(done["chunk_size"], 32 * 1024);
        assert_eq!(done["chunk_count"], 10);
        assert_eq!(done["chunks_sent"], 10);
        assert_eq!(done["bytes_sent"], data.len() as u64);
        assert_eq!(done["resumed"], false);
        let url = done["url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("{}/api/v1/files/", app.address)),
            "{url}"
        );
        assert_eq!(fetch(&app, url).await, data);
        // The content type was guessed from the extension.
        let id = done["upload_id"].as_str().unwrap();
        assert_eq!(app.status_json(id).await["content_type"], "video/mp4");
        assert!(
            state_files(&state).is_empty(),
            "a finished upload leaves no state"
        );

        // The same for a person: the URL and the SHA-256 on stdout.
        let run = tranche(&upload_args(
            &app,
            &file,
            &state,
            &["--chunk-size", "32KiB"],
        ))
        .await;
        assert_eq!(run.code, 0, "{run}");
        assert!(
            run.stdout
                .contains(&format!("{}/api/v1/files/", app.address)),
            "{run}"
        );
        assert!(run.stdout.contains(&sha256_hex(&data)), "{run}");
    })
    .await
}

#[tokio::test]
async fn several_files_and_an_empty_one() {
    bounded(async {
        let app = spawn_app().await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (a, a_data) = write_file(dir.path(), "a.bin", 70_000, 2);
        let (empty, _) = write_file(dir.path(), "empty.txt", 0, 3);
        let run = tranche(&[
            "upload",
            a.to_str().unwrap(),
            empty.to_str().unwrap(),
            "--server",
            &app.address,
            "--state-dir",
            state.to_str().unwrap(),
            "--json",
        ])
        .await;
        assert_eq!(run.code, 0, "{run}");
        let files = run.json()["files"].as_array().unwrap().clone();
        assert_eq!(files.len(), 2, "{run}");
        assert_eq!(fetch(&app, files[0]["url"].as_str().unwrap()).await, a_data);
        assert_eq!(files[1]["sha256"], sha256_hex(b""));
        assert!(fetch(&app, files[1]["url"].as_str().unwrap())
            .await
            .is_empty());
    })
    .await
}

/// Sizes for the resume tests: enough small chunks that the run can be
/// interrupted with many still to send.
/// 512 chunks sent one or two at a time: the test has time to stop the client
/// after the first few, however loaded the machine.
const RESUME_SIZE: usize = 8 * 1024 * 1024;
const RESUME_CHUNK: &str = "16KiB";
const RESUME_CHUNKS: u64 = (RESUME_SIZE / (16 * 1024)) as u64;

/// Interrupts an upload once the server has some but not all of its chunks,
/// then runs the same command again: the file arrives whole, and the second
/// run sends exactly what the first one did not.
async fn interrupted_upload_resumes(signal: &str) {
    // No fsync per chunk: the test is about the client, and fast.
    let app = spawn_app_with(|s| s.durability = tranche::config::Durability::Relaxed).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (file, data) = write_file(dir.path(), "big.iso", RESUME_SIZE, 4);
    let args = upload_args(
        &app,
        &file,
        &state,
        &["--chunk-size", RESUME_CHUNK, "--parallel", "1", "--json"],
    );

    let child = command(&args).spawn().expect("spawn tranche");
    let pid = child.id().expect("pid");
    freeze_mid_upload(&app, pid, 0, RESUME_CHUNKS).await;
    send_signal(pid, signal);
    // A stopped process does not act on SIGINT until it runs again.
    send_signal(pid, "CONT");
    let first = finish(child).await;
    until_quiet(&app).await;
    let sent_first = app.ctx.metrics.chunk_bytes_received.get();
    assert!(
        sent_first > 0 && sent_first < data.len() as u64,
        "the first run sent {sent_first} of {} bytes",
        data.len()
    );
    let saved = state_files(&state);
    assert_eq!(
        saved.len(),
        1,
        "the interrupted run keeps its state: {first}"
    );

    let second = tranche(&args).await;
    assert_eq!(second.code, 0, "{second}");
    let done = &second.json()["files"][0];
    assert_eq!(done["resumed"], true, "{second}");
    assert_eq!(done["sha256"], sha256_hex(&data));
    let sent_second = done["bytes_sent"].as_u64().unwrap();
    assert_eq!(
        sent_first + sent_second,
        data.len() as u64,
        "the second run sends exactly the missing chunks"
    );
    assert_eq!(
        app.ctx.metrics.chunk_bytes_received.get(),
        data.len() as u64
    );
    assert_eq!(fetch(&app, done["url"].as_str().unwrap()).await, data);
    assert!(state_files(&state).is_empty());
    eprintln!(
        "resume after SIG{signal}: first run {sent_first} bytes, second run {sent_second} of {}",
        data.len()
    );
    if signal == "INT" {
        assert_eq!(first.code, 130, "Ctrl-C exits with 130: {first}");
        assert!(first.stderr.contains("resume"), "{first}");
        // --json keeps its promise of one document, interrupted or not.
        assert_eq!(first.json()["interrupted"], true, "{first}");
        assert_eq!(first.json()["files"], serde_json::json!([]), "{first}");
        // ... and says where the file stands and how to go on.
        let report = first.json();
        let unfinished = &report["unfinished"][0];
        assert_eq!(unfinished["upload_id"], done["upload_id"], "{first}");
        assert_eq!(unfinished["size"], RESUME_SIZE as u64, "{first}");
        let acked = unfinished["bytes_acknowledged"].as_u64().unwrap();
        // One chunk at a time: the server may have stored one more chunk than
        // it could acknowledge before the interruption.
        assert!(
            acked <= sent_first && sent_first - acked <= 16 * 1024,
            "acknowledged {acked}, the server received {sent_first}: {first}"
        );
        let command = unfinished["resume_command"].as_str().unwrap();
        assert_eq!(report["resume_command"], command, "{first}");
        let expected: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_tranche"))
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        assert_eq!(shell_words(command), expected, "{command}");
    }
}

/// The words a POSIX shell makes of `line` (via `sh`, which the test
/// assumes anyway for `kill`).
fn shell_words(line: &str) -> Vec<String> {
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("for w in {line}; do printf '%s\\0' \"$w\"; done"),
        ])
        .output()
        .expect("sh runs");
    String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn an_upload_killed_mid_way_resumes_with_only_the_missing_chunks() {
    bounded(interrupted_upload_resumes("KILL")).await
}

#[tokio::test]
async fn ctrl_c_keeps_the_state_and_exits_130() {
    bounded(interrupted_upload_resumes("INT")).await
}

#[tokio::test]
async fn a_refused_upload_shows_the_servers_error_and_exits_3() {
    bounded(async {
        let app = spawn_app_with(|s| s.max_file_size = bytesize::ByteSize::kib(100)).await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (file, _) = write_file(dir.path(), "too-big.bin", 200 * 1024, 5);

        let run = tranche(&upload_args(&app, &file, &state, &[])).await;
        assert_eq!(run.code, 3, "{run}");
        assert!(run.stderr.contains("413 file_too_large"), "{run}");
        assert!(run.stderr.contains("too-big.bin"), "{run}");
        // Sizes in bytes, and in binary units beside them.
        assert!(
            run.stderr.contains("204800 bytes (200.0 KiB)")
                && run.stderr.contains("102400 (100.0 KiB)"),
            "{run}"
        );

        let run = tranche(&upload_args(&app, &file, &state, &["--json"])).await;
        assert_eq!(run.code, 3, "{run}");
        let error = &run.json()["files"][0]["error"];
        assert_eq!(error["code"], "file_too_large");
        assert_eq!(error["exit_code"], 3);
        assert!(state_files(&state).is_empty());
    })
    .await
}

#[tokio::test]
async fn local_problems_exit_1_and_an_unreachable_server_4() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let missing = dir.path().join("missing.bin");
        let run = tranche(&[
            "upload",
            missing.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .await;
        assert_eq!(run.code, 1, "{run}");
        assert!(run.stderr.contains("missing.bin"), "{run}");

        let (file, _) = write_file(dir.path(), "f.bin", 1000, 6);
        let nobody = format!("http://127.0.0.1:{}", free_port());
        let started = Instant::now();
        let run = tranche(&[
            "upload",
            file.to_str().unwrap(),
            "--server",
            &nobody,
            "--state-dir",
            state.to_str().unwrap(),
            "--retries",
            "2",
        ])
        .await;
        assert_eq!(run.code, 4, "{run}");
        assert!(run.stderr.contains("cannot reach the server"), "{run}");
        // The server's address, not the URL of whichever request found it gone.
        assert!(run.stderr.contains(&nobody), "{run}");
        assert!(!run.stderr.contains("/api/v1"), "{run}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "gives up after its retries"
        );

        let run = tranche(&["status", "x", "--server", "ftp://example"]).await;
        assert_eq!(run.code, 1, "{run}");
    })
    .await
}

#[tokio::test]
async fn an_upload_waits_for_a_server_that_comes_up() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (file, data) = write_file(dir.path(), "late.bin", 100_000, 7);
        let port = free_port();
        let server = format!("http://127.0.0.1:{port}");
        let child = command(&[
            "upload",
            file.to_str().unwrap(),
            "--server",
            &server,
            "--state-dir",
            state.to_str().unwrap(),
            "--json",
        ])
        .spawn()
        .expect("spawn tranche");
        // The first attempts find nobody and back off.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let app = spawn_app_with(|s| s.bind = format!("127.0.0.1:{port}")).await;
        let run = finish(child).await;
        assert_eq!(run.code, 0, "{run}");
        let done = &run.json()["files"][0];
        assert_eq!(fetch(&app, done["url"].as_str().unwrap()).await, data);
    })
    .await
}

#[tokio::test]
async fn download_writes_the_file_and_resumes_a_partial_one() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(200_000, 8);
        let done = app.upload_all(&data, 64 * 1024).await;
        let id = done["id"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("copy.bin");
        let out_s = out.to_str().unwrap();
        let args = [
            "download",
            id,
            "-o",
            out_s,
            "--server",
            &app.address,
            "--json",
        ];
        let download = || tranche(&args);

        let run = download().await;
        assert_eq!(run.code, 0, "{run}");
        assert_eq!(std::fs::read(&out).unwrap(), data);
        let report = run.json();
        assert_eq!(report["verified"], true, "{run}");
        assert_eq!(report["resumed"], false);
        assert_eq!(report["bytes_received"], data.len() as u64);

        // A partial download (`PATH.part`): only the rest is asked for
        // (Range) and received, then it takes its name.
        let part = dir.path().join("copy.bin.part");
        std::fs::remove_file(&out).unwrap();
        std::fs::write(&part, &data[..77_777]).unwrap();
        let run = download().await;
        assert!(!part.exists(), "{run}");
        assert_eq!(run.code, 0, "{run}");
        assert_eq!(std::fs::read(&out).unwrap(), data);
        let report = run.json();
        assert_eq!(report["resumed"], true);
        assert_eq!(report["bytes_received"], (data.len() - 77_777) as u64);
        assert_eq!(report["sha256"], sha256_hex(&data));

        // A whole file already there: nothing to receive, still verified.
        let run = download().await;
        assert_eq!(run.code, 0, "{run}");
        assert_eq!(run.json()["bytes_received"], 0);
        assert_eq!(run.json()["verified"], true);

        // Another file of that name is neither appended to nor replaced.
        std::fs::write(&out, b"my own notes").unwrap();
        let run = download().await;
        assert_eq!(run.code, 1, "{run}");
        assert!(run.stdout.contains("already exists"), "{run}");
        assert_eq!(std::fs::read(&out).unwrap(), b"my own notes");
        std::fs::remove_file(&out).unwrap();

        // A link where the partial download would go is not followed.
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, b"not yours").unwrap();
        std::os::unix::fs::symlink(&victim, &part).unwrap();
        let run = download().await;
        assert_eq!(run.code, 1, "{run}");
        assert!(run.stdout.contains("not a regular file"), "{run}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"not yours");
        std::fs::remove_file(&part).unwrap();

        // A partial download that is not this file's start fails the check
        // and is removed, so that running again starts clean.
        let mut wrong = data[..50_000].to_vec();
        wrong[10] ^= 0xff;
        std::fs::write(&part, &wrong).unwrap();
        let run = tranche(&["download", id, "-o", out_s, "--server", &app.address]).await;
        assert_eq!(run.code, 5, "{run}");
        assert!(run.stderr.contains("verification failed"), "{run}");
        assert!(!part.exists() && !out.exists(), "{run}");
        let run = download().await;
        assert_eq!(run.code, 0, "{run}");
        assert_eq!(std::fs::read(&out).unwrap(), data);
        std::fs::remove_file(&out).unwrap();

        // An unknown id leaves no file behind.
        let run = tranche(&[
            "download",
            &uuid::Uuid::new_v4().to_string(),
            "-o",
            out_s,
            "--server",
            &app.address,
        ])
        .await;
        assert_eq!(run.code, 3, "{run}");
        assert!(run.stderr.contains("404"), "{run}");
        assert!(!part.exists() && !out.exists(), "{run}");
    })
    .await
}

#[tokio::test]
async fn status_shows_an_upload_in_progress_and_a_completed_one() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(5 * 1024, 9);
        let created = app.create_for(&data, 1024).await;
        let id = created["id"].as_str().unwrap().to_owned();
        app.send_chunks(&id, &data, 1024, [0, 1, 3]).await;

        let run = tranche(&["status", &id, "--server", &app.address]).await;
        assert_eq!(run.code, 0, "{run}");
        assert!(run.stdout.contains("uploading"), "{run}");
        assert!(run.stdout.contains("3 of 5 received"), "{run}");
        assert!(run.stdout.contains("missing   2, 4"), "{run}");

        let run = tranche(&["status", &id, "--server", &app.address, "--json"]).await;
        assert_eq!(run.code, 0, "{run}");
        let view = run.json();
        assert_eq!(view["id"], id.as_str());
        assert_eq!(view["missing_chunks"], serde_json::json!([2, 4]));

        app.send_chunks(&id, &data, 1024, [2, 4]).await;
        assert_eq!(app.complete(&id).await.status(), 200);
        let run = tranche(&["status", &id, "--server", &app.address]).await;
        assert!(run.stdout.contains("completed"), "{run}");
        assert!(run.stdout.contains(&sha256_hex(&data)), "{run}");
        assert!(
            run.stdout
                .contains(&format!("{}/api/v1/files/{id}", app.address)),
            "{run}"
        );

        let run = tranche(&[
            "status",
            &uuid::Uuid::new_v4().to_string(),
            "--server",
            &app.address,
        ])
        .await;
        assert_eq!(run.code, 3, "{run}");
        assert!(run.stderr.contains("upload_not_found"), "{run}");

        // A typed id stays one path segment: it cannot reach another endpoint.
        let run = tranche(&["status", "../../../metrics", "--server", &app.address]).await;
        assert_eq!(run.code, 3, "{run}");
        assert!(run.stderr.contains("invalid_request"), "{run}");
    })
    .await
}

/// Redis (the state store) dies mid-upload and comes back: the server answers
/// 503 `store_unavailable` with `Retry-After` meanwhile, and the client waits
/// as told and retries until the upload is done, in the same run.
#[tokio::test]
async fn an_upload_rides_out_a_state_store_outage() {
    bounded_for(Duration::from_secs(60), async {
        let aof_dir = tempfile::tempdir().unwrap();
        // Its AOF keeps the acknowledged chunks across the outage.
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
            s.durability = tranche::config::Durability::Relaxed
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (file, data) = write_file(dir.path(), "outage.bin", RESUME_SIZE, 10);
        let args = upload_args(
            &app,
            &file,
            &state,
            &["--chunk-size", RESUME_CHUNK, "--parallel", "2", "--json"],
        );
        let mut child = command(&args).spawn().expect("spawn tranche");
        let pid = child.id().expect("pid");
        freeze_mid_upload(&app, pid, 0, RESUME_CHUNKS).await;
        app.redis.as_mut().unwrap().stop();
        send_signal(pid, "CONT");

        // Redis stays away until the client has met the outage.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut stderr = String::new();
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                stderr += &line;
                stderr.push('\n');
                if line.contains("503 store_unavailable") {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the client never reported the outage:\n{stderr}"));
        app.redis.as_mut().unwrap().start_again().await;

        let rest = tokio::spawn(async move {
            let mut rest = String::new();
            while let Some(line) = lines.next_line().await.unwrap() {
                rest += &line;
                rest.push('\n');
            }
            rest
        });
        let mut run = finish(child).await;
        run.stderr = stderr + &rest.await.unwrap();
        assert_eq!(run.code, 0, "{run}");
        assert!(run.stderr.contains("503 store_unavailable"), "{run}");
        assert!(run.stderr.contains("retrying in"), "{run}");
        let done = &run.json()["files"][0];
        assert_eq!(done["sha256"], sha256_hex(&data));
        assert_eq!(fetch(&app, done["url"].as_str().unwrap()).await, data);
    })
    .await
}

/// A server that answers `complete` with 202 (assembly still running) is
/// polled until the upload is completed.
#[tokio::test]
async fn a_202_from_complete_is_polled_until_the_file_is_there() {
    bounded(async {
        let app = spawn_app_with(|s| s.complete_wait = Duration::ZERO).await;
        // This server does answer 202.
        let probe = test_data(3000, 11);
        let created = app.create_for(&probe, 1024).await;
        let id = created["id"].as_str().unwrap().to_owned();
        app.send_chunks(&id, &probe, 1024, 0..3).await;
        assert_eq!(app.complete(&id).await.status(), 202);

        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (file, data) = write_file(dir.path(), "slow.bin", 100_000, 12);
        let run = tranche(&upload_args(&app, &file, &state, &["--json"])).await;
        assert_eq!(run.code, 0, "{run}");
        let done = &run.json()["files"][0];
        assert_eq!(done["sha256"], sha256_hex(&data));
        assert_eq!(fetch(&app, done["url"].as_str().unwrap()).await, data);
    })
    .await
}

#[tokio::test]
async fn with_authentication_a_create_token_is_enough_to_upload() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (file, data) = write_file(dir.path(), "talk.mp4", 100 * 1024 + 5, 11);

        // No credentials: the server's 401 and exit 3.
        let run = tranche(&upload_args(
            &app,
            &file,
            &state,
            &["--chunk-size", "32KiB"],
        ))
        .await;
        assert_eq!(run.code, 3, "{run}");
        assert!(run.stderr.contains("unauthorized"), "{run}");

        // A create token, as a backend would mint it: the client creates the
        // upload with it and sends the chunks with the answer's upload_token
        // (the create token itself may not touch uploads).
        let tokens =
            tranche::guards::auth::Tokens::new(SECRET.as_bytes(), Duration::from_secs(5)).unwrap();
        let create_token = tokens
            .mint(&tranche::guards::auth::Claims {
                exp: tranche::guards::auth::token::unix_now() + 600,
                max_size: Some(1 << 20),
                content_types: Some(vec!["video/*".into()]),
                ..Default::default()
            })
            .unwrap();
        let run = tranche(&upload_args(
            &app,
            &file,
            &state,
            &["--chunk-size", "32KiB", "--token", &create_token, "--json"],
        ))
        .await;
        assert_eq!(run.code, 0, "{run}");
        let id = run.json()["files"][0]["upload_id"]
            .as_str()
            .unwrap()
            .to_owned();

        let out = dir.path().join("copy.mp4");
        let run = tranche(&[
            "download",
            &id,
            "-o",
            out.to_str().unwrap(),
            "--server",
            &app.address,
            "--token",
            KEY,
        ])
        .await;
        assert_eq!(run.code, 0, "{run}");
        assert_eq!(std::fs::read(&out).unwrap(), data);
    })
    .await
}

/// The client always sends the file's SHA-256 at create, so a file its
/// owner stored already completes at once, and says so.
#[tokio::test]
async fn a_file_stored_already_is_not_sent_again() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (file, data) = write_file(dir.path(), "talk.mp4", 100 * 1024 + 5, 12);
        let tokens =
            tranche::guards::auth::Tokens::new(SECRET.as_bytes(), Duration::from_secs(5)).unwrap();
        let create_token = tokens
            .mint(&tranche::guards::auth::Claims {
                exp: tranche::guards::auth::token::unix_now() + 600,
                sub: Some("alice".into()),
                ..Default::default()
            })
            .unwrap();
        let args = ["--chunk-size", "32KiB", "--token", &create_token, "--json"];
        let first = tranche(&upload_args(&app, &file, &state, &args)).await;
        assert_eq!(first.code, 0, "{first}");
        assert_eq!(first.json()["files"][0]["already_stored"], false);
        assert_eq!(first.json()["files"][0]["chunks_sent"], 4);

        let second = tranche(&upload_args(&app, &file, &state, &args)).await;
        assert_eq!(second.code, 0, "{second}");
        let done = &second.json()["files"][0];
        assert_eq!(done["already_stored"], true, "{second}");
        assert_eq!(done["chunks_sent"], 0);
        assert_eq!(done["bytes_sent"], 0);
        assert_eq!(done["sha256"], sha256_hex(&data));
        assert_ne!(done["upload_id"], first.json()["files"][0]["upload_id"]);
        let url = done["url"].as_str().unwrap();
        let got = app.client.get(url).bearer_auth(KEY).send().await.unwrap();
        assert_eq!(&got.bytes().await.unwrap()[..], &data[..]);

        let person = tranche(&upload_args(&app, &file, &state, &args[..4])).await;
        assert_eq!(person.code, 0, "{person}");
        assert!(person.stdout.contains("already stored"), "{person}");
    })
    .await
}

/// The upload token a killed run saved has expired by the time the command is
/// run again: with an API key the run still resumes the same upload; with
/// only a create token (which cannot touch uploads) it starts a new one.
#[tokio::test]
async fn an_expired_upload_token_resumes_with_a_key_or_starts_afresh() {
    bounded_for(Duration::from_secs(60), async {
        let app = spawn_with_auth(|s| s.durability = tranche::config::Durability::Relaxed).await;
        let tokens = tranche::guards::auth::Tokens::new(SECRET.as_bytes(), Duration::ZERO).unwrap();
        let now = tranche::guards::auth::token::unix_now();
        let create_token = tokens
            .mint(&tranche::guards::auth::Claims {
                exp: now + 600,
                ..Default::default()
            })
            .unwrap();

        for (n, credential, resumes) in [(1, KEY, true), (2, create_token.as_str(), false)] {
            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().join("state");
            let (file, data) = write_file(dir.path(), "take.mov", RESUME_SIZE, 20 + n);
            let args = upload_args(
                &app,
                &file,
                &state,
                &["--chunk-size", RESUME_CHUNK, "--parallel", "1", "--json"],
            );
            let mut first_args = args.clone();
            first_args.extend(["--token", credential]);
            let child = command(&first_args).spawn().expect("spawn tranche");
            let pid = child.id().expect("pid");
            let before = app.ctx.metrics.chunks_received.get();
            freeze_mid_upload(&app, pid, before, RESUME_CHUNKS).await;
            send_signal(pid, "KILL");
            finish(child).await;

            // What the killed run saved, with its upload token now expired.
            let saved = state_files(&state);
            assert_eq!(saved.len(), 1);
            let mut resume: Value =
                serde_json::from_slice(&std::fs::read(&saved[0]).unwrap()).unwrap();
            let first_id = resume["upload_id"].as_str().unwrap().to_owned();
            let expired = tokens
                .mint(&tranche::guards::auth::Claims {
                    exp: now - 60,
                    upload_id: Some(first_id.parse().unwrap()),
                    ..Default::default()
                })
                .unwrap();
            resume["upload_token"] = expired.into();
            std::fs::write(&saved[0], resume.to_string()).unwrap();

            let mut again = args.clone();
            again.extend(["--token", credential]);
            let run = tranche(&again).await;
            assert_eq!(run.code, 0, "{run}");
            let done = &run.json()["files"][0];
            assert_eq!(done["sha256"], sha256_hex(&data), "{run}");
            assert_eq!(done["resumed"], resumes, "{run}");
            assert_eq!(done["upload_id"] == first_id.as_str(), resumes, "{run}");
            let sent = done["bytes_sent"].as_u64().unwrap();
            if resumes {
                assert!(sent < data.len() as u64, "{run}");
            } else {
                assert_eq!(sent, data.len() as u64, "{run}");
            }
            assert!(state_files(&state).is_empty());
        }
    })
    .await
}

/// Problems found before any file is hashed or any upload started: a state
/// directory that cannot be written (exit 1), a credential the server
/// refuses (exit 3). The server is left with no upload.
#[tokio::test]
async fn an_unusable_state_dir_or_credential_stops_before_any_upload() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        let (file, _) = write_file(dir.path(), "f.bin", 100_000, 12);
        let not_a_dir = dir.path().join("state");
        std::fs::write(&not_a_dir, b"a file where the state dir should be").unwrap();
        let run = tranche(&upload_args(&app, &file, &not_a_dir, &["--token", KEY])).await;
        assert_eq!(run.code, 1, "{run}");
        assert!(run.stderr.contains("resume state"), "{run}");

        let state = dir.path().join("state2");
        let run = tranche(&upload_args(&app, &file, &state, &["--token", "wrong"])).await;
        assert_eq!(run.code, 3, "{run}");
        assert!(run.stderr.contains("unauthorized"), "{run}");

        let created = app
            .ctx
            .metrics
            .uploads
            .with_label_values(&["created"])
            .get();
        assert_eq!(created, 0, "no upload was started");
    })
    .await
}

/// A proxy in front of `target` that records the requests it passes on and
/// adds `warnings` to the create answer, as a server does for a field it
/// ignored. Returns its base URL and the record ("METHOD path").
async fn warning_proxy(target: &str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (target, record) = (target.to_owned(), seen.clone());
    let server = HttpServer::new(move || {
        let (target, record) = (target.clone(), record.clone());
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let (target, record) = (target.clone(), record.clone());
            async move {
                record
                    .lock()
                    .unwrap()
                    .push(format!("{} {}", req.method(), req.path()));
                let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
                let mut forward =
                    reqwest::Client::new().request(method, format!("{target}{}", req.uri()));
                for (name, value) in req.headers() {
                    if name != "host" {
                        forward = forward.header(name.as_str(), value.as_bytes());
                    }
                }
                let answer = forward.body(body.to_vec()).send().await.unwrap();
                let status = answer.status().as_u16();
                let mut bytes = answer.bytes().await.unwrap().to_vec();
                if req.method() == "POST" && req.path() == "/api/v1/uploads" && status == 201 {
                    let mut created: Value = serde_json::from_slice(&bytes).unwrap();
                    created["warnings"] = serde_json::json!(["unknown field sha_256 ignored"]);
                    bytes = serde_json::to_vec(&created).unwrap();
                }
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                    .content_type("application/json")
                    .body(bytes)
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (format!("http://127.0.0.1:{port}"), seen)
}

/// The create answer's `warnings` reach the person (stderr) and the script
/// (`--json`); and the client's first request is the service document, not
/// a probe that shows in the server's logs as a 404.
#[tokio::test]
async fn the_servers_warnings_are_shown_and_the_probe_is_the_service_document() {
    bounded(async {
        let app = spawn_app().await;
        let (proxy, seen) = warning_proxy(&app.address).await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (file, data) = write_file(dir.path(), "warned.bin", 5000, 13);
        let run = tranche(&[
            "upload",
            file.to_str().unwrap(),
            "--server",
            &proxy,
            "--state-dir",
            state.to_str().unwrap(),
            "--json",
        ])
        .await;
        assert_eq!(run.code, 0, "{run}");
        let done = &run.json()["files"][0];
        assert_eq!(
            done["warnings"],
            serde_json::json!(["unknown field sha_256 ignored"]),
            "{run}"
        );
        assert!(
            run.stderr.contains("warns: unknown field sha_256 ignored"),
            "{run}"
        );
        assert_eq!(fetch(&app, done["url"].as_str().unwrap()).await, data);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[0], "GET /api/v1", "{seen:?}");
        assert!(
            !seen.iter().any(|r| r.contains("00000000-0000")),
            "{seen:?}"
        );
    })
    .await
}

#[tokio::test]
async fn files_delete_removes_a_file_and_is_fine_twice() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let data = test_data(3 * 1024, 31);
        let created = app
            .request(reqwest::Method::POST, "/api/v1/uploads")
            .bearer_auth(TEST_API_KEY)
            .json(&serde_json::json!({"filename": "d.bin", "size": data.len(), "chunk_size": 4096}))
            .send()
            .await
            .unwrap();
        let id = expect_json(created, 201).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let server = app.address.as_str();

        // Not completed yet: no file to delete.
        let run = tranche(&[
            "files",
            "delete",
            &id,
            "--server",
            server,
            "--token",
            TEST_API_KEY,
        ])
        .await;
        assert_eq!(run.code, 3, "{run}");
        assert!(run.stderr.contains("file_not_found"), "{run}");

        for (method, path, body) in [
            (reqwest::Method::PUT, chunk_url(&id, 0), data.clone()),
            (
                reqwest::Method::POST,
                format!("/api/v1/uploads/{id}/complete"),
                Vec::new(),
            ),
        ] {
            let resp = app
                .request(method, &path)
                .bearer_auth(TEST_API_KEY)
                .body(body)
                .send()
                .await
                .unwrap();
            expect_json(resp, 200).await;
        }
        let run = tranche(&["files", "delete", &id, "--server", server]).await;
        assert_eq!(run.code, 3, "without credentials: {run}");
        assert!(run.stderr.contains("unauthorized"), "{run}");

        let run = tranche(&[
            "files",
            "delete",
            &id,
            "--server",
            server,
            "--token",
            TEST_API_KEY,
        ])
        .await;
        assert_eq!(run.code, 0, "{run}");
        assert!(run.stdout.contains(&format!("deleted {id}")), "{run}");
        assert!(!app.file_path(&id).exists());
        let run = tranche(&[
            "files",
            "delete",
            &id,
            "--server",
            server,
            "--token",
            TEST_API_KEY,
            "--json",
        ])
        .await;
        assert_eq!(run.code, 0, "twice: {run}");
        assert_eq!(run.json()["deleted"], true);
    })
    .await
}

#[tokio::test]
async fn scrub_exits_5_on_a_byte_flipped_on_disk() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(4 * 1024, 32);
        let done = app.upload_all(&data, 1024).await;
        let id = done["id"].as_str().unwrap().to_owned();

        let run = tranche(&["scrub", "--server", &app.address]).await;
        assert_eq!(run.code, 0, "{run}");
        assert!(run.stdout.contains("scrubbed  1 files"), "{run}");

        let path = app.file_path(&id);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0x80;
        std::fs::write(&path, bytes).unwrap();
        let run = tranche(&["scrub", "--server", &app.address, "--bandwidth", "10MiB"]).await;
        assert_eq!(run.code, 5, "{run}");
        assert!(run.stdout.contains(&format!("MISMATCH  {id}")), "{run}");
        let run = tranche(&["scrub", "--server", &app.address, "--json"]).await;
        assert_eq!(run.code, 5, "{run}");
        assert_eq!(run.json()["mismatches"][0]["id"], id.as_str());
    })
    .await
}

#[tokio::test]
async fn scrub_exits_5_when_a_completed_files_bytes_are_missing() {
    bounded(async {
        let app = spawn_app().await;
        let done = app.upload_all(&test_data(2 * 1024, 33), 1024).await;
        let id = done["id"].as_str().unwrap().to_owned();
        std::fs::remove_file(app.file_path(&id)).unwrap();
        let run = tranche(&["scrub", "--server", &app.address]).await;
        assert_eq!(run.code, 5, "{run}");
        assert!(run.stdout.contains(&format!("MISSING   {id}")), "{run}");
        assert!(run.stdout.contains("0 mismatch(es), 1 missing"), "{run}");
        let run = tranche(&["scrub", "--server", &app.address, "--json"]).await;
        assert_eq!(run.code, 5, "{run}");
        assert_eq!(run.json()["missing"][0], id.as_str());
    })
    .await
}
