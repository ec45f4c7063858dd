//! The curl recipes of API.md: `curl -T` and `curl --data-binary @file`.

use std::time::Duration;

use crate::helpers::*;

fn curl_available() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs curl with `args` and the URL; returns the HTTP status and the body.
async fn curl(args: &[&str], url: &str) -> (u16, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("curl timed out")
    .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (
        code.trim().parse().expect("numeric status"),
        body.to_owned(),
    )
}

#[tokio::test]
async fn curl_upload_file_and_data_binary_both_store_a_chunk() {
    if !curl_available() {
        eprintln!("note: curl is not on PATH; skipping the curl recipe test");
        return;
    }
    bounded(async {
        let app = spawn_app().await;
        // Chunks over 1 KiB, so that curl also goes through `Expect: 100-continue`.
        let cs = 32 * 1024;
        let data = test_data(2 * cs, 81);
        let id = app.create_for(&data, cs as u64).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let chunks = chunks_of(&data, cs);
        let dir = tempfile::tempdir().unwrap();
        let (c0, c1) = (dir.path().join("chunk0.bin"), dir.path().join("chunk1.bin"));
        std::fs::write(&c0, &chunks[0]).unwrap();
        std::fs::write(&c1, &chunks[1]).unwrap();

        let (status, body) =
            curl(&["-T", c0.to_str().unwrap()], &app.url(&chunk_url(&id, 0))).await;
        assert_eq!(status, 200, "curl -T: {body}");
        let at_file = format!("@{}", c1.display());
        let (status, body) = curl(&["--data-binary", &at_file], &app.url(&chunk_url(&id, 1))).await;
        assert_eq!(status, 200, "curl --data-binary: {body}");

        let done = expect_json(app.complete(&id).await, 200).await;
        assert_eq!(done["file"]["sha256"], sha256_hex(&data));
    })
    .await
}
