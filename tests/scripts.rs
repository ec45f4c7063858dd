//! `scripts/curl-upload.sh`, run with `sh` (dash on Debian, so POSIX) against
//! the real server: interrupted with SIGKILL mid-upload and run again, it
//! finishes with the right file and sends only what was missing.
//!
//! Needs `curl`, `dd` and `sha256sum` on PATH.

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
    let mut cmd = Command::new("sh");
    cmd.arg(SCRIPT)
        .arg(file)
        .arg(url)
        .arg(state_dir)
        .env("TRANCHE_CHUNK_SIZE", CHUNK.to_string())
        .env_remove("TRANCHE_TOKEN")
        .stdin(Stdio::null());
    cmd
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
        let mut first = script(&file, &app.address, &state_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("sh runs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while app.ctx.metrics.chunks_received.get() < 10 {
            assert!(Instant::now() < deadline, "the script sent no chunks");
            assert!(
                first.try_wait().unwrap().is_none(),
                "the script ended early"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The shell's own kill: procps may be missing on a minimal machine.
        let killed = Command::new("sh")
            .args(["-c", "kill -KILL \"-$0\"", &first.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let _ = first.wait();
        // A chunk whose body was on its way is finished or dropped by now.
        let deadline = Instant::now() + Duration::from_secs(5);
        while app.ctx.metrics.chunks_in_flight.get() > 0 {
            assert!(Instant::now() < deadline, "a chunk request never ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let id = std::fs::read_to_string(&state_file).expect("the state file names the upload");
        let id = id.split_whitespace().next().unwrap().to_owned();
        let before = app.status_json(&id).await;
        assert_eq!(before["status"], "uploading");
        let sent_first = before["bytes_received"].as_u64().unwrap();
        assert!(sent_first > 0 && sent_first < data.len() as u64, "{before}");
        assert_eq!(bytes_received(&app), sent_first);

        // Second run: only the missing chunks, then complete.
        let script2 = script(&file, &app.address, &state_dir);
        let out: Output = tokio::task::spawn_blocking(move || {
            let mut script2 = script2;
            script2.output()
        })
        .await
        .unwrap()
        .expect("sh runs");
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
        let cmd = script(&file, &app.address, dir.path());
        let out = tokio::task::spawn_blocking(move || {
            let mut cmd = cmd;
            cmd.output()
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("\"error\":\"file_too_large\""), "{stderr}");
        assert!(out.stdout.is_empty());
        assert!(!dir.path().join("f.bin.tranche").exists());
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
