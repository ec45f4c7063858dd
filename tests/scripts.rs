//! `scripts/curl-upload.sh`, run with `sh` (dash on Debian, so POSIX) against
//! the real server: interrupted with SIGKILL mid-upload and run again, it
//! finishes with the right file and sends only what was missing; a file
//! rewritten between runs starts a new upload; with authentication on, a
//! create token is enough (the rest goes with the answer's `upload_token`);
//! SIGTERM stops the chunk in flight with the script.
//!
//! Needs `curl`, `dd`, `sha256sum`, `stat` and `mktemp` on PATH.

/// The state store of the apps this test crate spawns.
pub const BACKEND: helpers::Backend = helpers::Backend::Embedded;

#[path = "api/helpers.rs"]
mod helpers;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use helpers::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/curl-upload.sh");
const CHUNK: usize = 4096;

fn script(file: &Path, url: &str, state_dir: &Path) -> Command {
    script_with_chunk(file, url, CHUNK, state_dir)
}

/// `sh scripts/curl-upload.sh FILE URL CHUNK_SIZE STATE_DIR`, without a token.
fn script_with_chunk(file: &Path, url: &str, chunk: usize, state_dir: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg(SCRIPT)
        .arg(file)
        .arg(url)
        .arg(chunk.to_string())
        .arg(state_dir)
        .env_remove("TRANCHE_TOKEN")
        .stdin(Stdio::null());
    cmd
}

/// Runs a command to its end off the async runtime.
async fn output(cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = cmd;
        cmd.output()
    })
    .await
    .unwrap()
    .expect("sh runs")
}

/// Sends `signal` ("TERM", "KILL") to `target` (a pid, or "-pid" for its
/// process group) with the shell's own kill: procps may be missing on a
/// minimal machine.
fn send_signal(signal: &str, target: &str) {
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -{signal} \"$0\""), target])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// Starts the script in a process group of its own and kills the group (the
/// script, its curl and dd) with SIGKILL once the server has stored at least
/// `chunks` chunks in all.
async fn kill_after_chunks(app: &TestApp, mut cmd: Command, chunks: u64) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("sh runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.ctx.metrics.chunks_received.get() < chunks {
        assert!(Instant::now() < deadline, "the script sent no chunks");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the script ended early"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    send_signal("KILL", &format!("-{}", child.id()));
    let _ = child.wait();
    // A chunk whose body was on its way is finished or dropped by now.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.ctx.metrics.chunks_in_flight.get() > 0 {
        assert!(Instant::now() < deadline, "a chunk request never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn bytes_received(app: &TestApp) -> u64 {
    app.ctx.metrics.chunk_bytes_received.get()
}

#[tokio::test]
async fn curl_script_killed_mid_upload_resumes_and_sends_only_the_rest() {
    bounded_for(Duration::from_secs(60), async {
        let app = spawn_app().await;
        let dir = tempfile::tempdir().unwrap();
        // 150 chunks: a curl process each, so the first run is still busy
        // when it is killed.
        let data = test_data(149 * CHUNK + 99, 601);
        let file = dir.path().join("big file.bin");
        std::fs::write(&file, &data).unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir(&state_dir).unwrap();
        let state_file = state_dir.join("big file.bin.tranche");

        // First run: killed, with its curl and dd, once some chunks are in.
        kill_after_chunks(&app, script(&file, &app.address, &state_dir), 10).await;

        let id = std::fs::read_to_string(&state_file).expect("the state file names the upload");
        let id = id.split_whitespace().next().unwrap().to_owned();
        let before = app.status_json(&id).await;
        assert_eq!(before["status"], "uploading");
        let sent_first = before["bytes_received"].as_u64().unwrap();
        assert!(sent_first > 0 && sent_first < data.len() as u64, "{before}");
        assert_eq!(bytes_received(&app), sent_first);

        // Second run: only the missing chunks, then complete.
        let out = output(script(&file, &app.address, &state_dir)).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(
            stderr.contains(&format!("resuming upload {id}")),
            "{stderr}"
        );
        let sent_second = bytes_received(&app) - sent_first;
        eprintln!(
            "first run: {sent_first} bytes, second run: {sent_second} bytes, file: {} bytes",
            data.len()
        );
        assert_eq!(sent_second, data.len() as u64 - sent_first);

        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines,
            [app.url(&format!("/api/v1/files/{id}")), sha256_hex(&data)]
        );
        let got = reqwest::get(lines[0]).await.unwrap().bytes().await.unwrap();
        assert_eq!(sha256_hex(&got), sha256_hex(&data));
        assert!(!state_file.exists(), "the state outlived the upload");
    })
    .await
}

#[tokio::test]
async fn curl_script_reports_a_refusal_and_keeps_no_state() {
    bounded(async {
        let app = spawn_app_with(|s| s.max_file_size = bytesize::ByteSize::b(1000)).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.bin");
        std::fs::write(&file, test_data(5000, 602)).unwrap();
        let out = output(script(&file, &app.address, dir.path())).await;
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("\"error\":\"file_too_large\""), "{stderr}");
        assert!(out.stdout.is_empty());
        assert!(!dir.path().join("f.bin.tranche").exists());
    })
    .await
}

/// A file rewritten with the same size between two runs: the second run must
/// not resume the first upload (whose chunks hold the old bytes) but start a
/// new one, and finish with the new content.
#[tokio::test]
async fn curl_script_starts_afresh_when_the_file_was_rewritten_with_the_same_size() {
    bounded_for(Duration::from_secs(60), async {
        let app = spawn_app().await;
        let dir = tempfile::tempdir().unwrap();
        let old = test_data(149 * CHUNK + 99, 604);
        let file = dir.path().join("report.bin");
        std::fs::write(&file, &old).unwrap();
        let state_file = dir.path().join("report.bin.tranche");

        kill_after_chunks(&app, script(&file, &app.address, dir.path()), 10).await;
        let state = std::fs::read_to_string(&state_file).expect("a state file");
        let old_id = state.split_whitespace().next().unwrap().to_owned();
        assert_eq!(app.status_json(&old_id).await["status"], "uploading");

        let new = test_data(old.len(), 605);
        std::fs::write(&file, &new).unwrap();
        let out = output(script(&file, &app.address, dir.path())).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stderr.contains("starting a new upload"), "{stderr}");
        assert!(!stderr.contains("resuming"), "{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        assert!(!lines[0].contains(&old_id), "{stdout}");
        assert_eq!(lines[1], sha256_hex(&new));
        let got = reqwest::get(lines[0]).await.unwrap().bytes().await.unwrap();
        assert_eq!(sha256_hex(&got), sha256_hex(&new));
        assert!(!state_file.exists(), "the state outlived the upload");
        // The first upload was left alone (it expires in its own time).
        assert_eq!(app.status_json(&old_id).await["status"], "uploading");
    })
    .await
}

/// A directory with a `curl` that is the real one slowed to 2 KiB/s, put
/// first on PATH so that a chunk of the script is still on its way when the
/// test signals it.
/// The command lines of running curl processes that talk to `address`.
fn curls_of(address: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmd| cmd.contains("curl") && cmd.contains(address))
        .collect()
}

fn slow_curl(dir: &Path) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let real = std::env::split_paths(&path)
        .map(|d| d.join("curl"))
        .find(|p| p.is_file())
        .expect("curl on PATH");
    let bin = dir.join("slow-bin");
    std::fs::create_dir(&bin).unwrap();
    let wrapper = bin.join("curl");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' --limit-rate 2K \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).unwrap();
    format!("{}:{path}", bin.display())
}

/// The presigned-URL flow: with authentication on, the script gets only a
/// create token (which may not touch uploads), so it must switch to the
/// create answer's `upload_token`, and keep it to resume. The first run is
/// stopped with SIGTERM mid-chunk: the script exits 143 at once, its curl
/// with it (the chunk in flight is dropped, not finished), and the state
/// stays for the second run, which resumes with the saved token.
#[tokio::test]
async fn curl_script_with_a_create_token_uses_the_upload_token_and_stops_on_sigterm() {
    bounded_for(Duration::from_secs(60), async {
        let app = spawn_with_auth(|_| {}).await;
        let create_token = test_tokens()
            .mint(&tranche::guards::auth::Claims {
                exp: tranche::guards::auth::token::unix_now() + 600,
                max_size: Some(1 << 20),
                ..Default::default()
            })
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Chunks of 64 KiB: at 2 KiB/s the first one would take 32 s.
        let chunk = 64 * 1024;
        let data = test_data(3 * chunk + 7, 606);
        let file = dir.path().join("talk.mp4");
        std::fs::write(&file, &data).unwrap();
        let state_file = dir.path().join("talk.mp4.tranche");

        // Its stderr goes to a file: a curl left behind would hold a pipe open.
        let stderr_file = dir.path().join("first.stderr");
        let first_stderr = || std::fs::read_to_string(&stderr_file).unwrap_or_default();
        let mut first = script_with_chunk(&file, &app.address, chunk, dir.path());
        let mut first = first
            .env("TRANCHE_TOKEN", &create_token)
            .env("PATH", slow_curl(dir.path()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .spawn()
            .expect("sh runs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while app.ctx.metrics.chunks_in_flight.get() == 0 {
            if let Some(status) = first.try_wait().unwrap() {
                panic!("the script ended early ({status}): {}", first_stderr());
            }
            assert!(Instant::now() < deadline, "no chunk was ever in flight");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // SIGTERM to the script alone, as `kill PID` or systemd would send it.
        send_signal("TERM", &first.id().to_string());
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = first.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the script outlived SIGTERM");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let stderr = first_stderr();
        assert_eq!(status.code(), Some(143), "{stderr}");
        assert!(stderr.contains("interrupted"), "{stderr}");
        // Its curl went with it...
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = curls_of(&app.address);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the script's curl outlived it: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // ...so the chunk it was sending ends at once, not in the 32 s it
        // would take at 2 KiB/s.
        let deadline = Instant::now() + Duration::from_secs(5);
        while app.ctx.metrics.chunks_in_flight.get() > 0 {
            assert!(Instant::now() < deadline, "the chunk in flight never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(app.ctx.metrics.chunks_received.get(), 0);

        // The state names the upload and keeps its upload_token, for the
        // owner's eyes only.
        let state = std::fs::read_to_string(&state_file).expect("the state is kept");
        let id = state.split_whitespace().next().unwrap().to_owned();
        let saved_token = state.split_whitespace().last().unwrap().to_owned();
        assert_ne!(saved_token, create_token);
        assert!(saved_token.starts_with("eyJ"), "{state}");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&state_file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "state file mode {mode:o}");

        // Second run, same command: resumes with the saved upload token.
        let mut second = script_with_chunk(&file, &app.address, chunk, dir.path());
        second.env("TRANCHE_TOKEN", &create_token);
        let out = output(second).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(
            stderr.contains(&format!("resuming upload {id}")),
            "{stderr}"
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines,
            [app.url(&format!("/api/v1/files/{id}")), sha256_hex(&data)]
        );
        assert!(!state_file.exists(), "the state outlived the upload");
        let got = app
            .client
            .get(lines[0])
            .bearer_auth(TEST_API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(sha256_hex(&got.bytes().await.unwrap()), sha256_hex(&data));
    })
    .await
}

/// The README's resume-by-hand loop, run as written: it sends exactly the
/// chunks the server is missing.
#[tokio::test]
async fn readme_resume_loop_sends_only_the_missing_chunks() {
    bounded(async {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let after = readme
            .split_once("To resume by hand")
            .expect("the README's resume section")
            .1;
        let block = after
            .split_once("```sh\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .expect("a sh block after it")
            .0
            .to_owned();
        assert!(block.contains("missing_chunks"), "{block}");

        let app = spawn_app().await;
        let data = test_data(7 * CHUNK + 5, 603);
        let created = app.create_for(&data, CHUNK as u64).await;
        let id = created["id"].as_str().unwrap().to_owned();
        app.send_chunks(&id, &data, CHUNK, [1, 4]).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lecture.mp4");
        std::fs::write(&file, &data).unwrap();

        let before = bytes_received(&app);
        let cmd = {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &block])
                .current_dir(dir.path())
                .env("F", "lecture.mp4")
                .env("API", app.url("/api/v1"))
                .env("ID", &id)
                .env("CS", CHUNK.to_string())
                .stdin(Stdio::null());
            cmd
        };
        let out = tokio::task::spawn_blocking(move || {
            let mut cmd = cmd;
            cmd.output()
        })
        .await
        .unwrap()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.is_empty(), "{stdout}");
        let sent = bytes_received(&app) - before;
        assert_eq!(sent, (data.len() - 2 * CHUNK) as u64);
        let done = expect_json(app.complete(&id).await, 200).await;
        assert_eq!(done["file"]["sha256"], sha256_hex(&data));
    })
    .await
}
