//! Crash recovery: the real binary is killed with SIGKILL mid-upload and
//! started again on the same data directory; every acknowledged chunk must
//! still be there.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};

use crate::helpers::*;

/// A server process, killed when dropped so that a failing test leaves none behind.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    /// Starts `tranche serve` on a free port, from `dir` as working directory
    /// (so that no `./config.toml` of the repository applies), and waits until
    /// `/healthz` answers.
    async fn start(dir: &Path, data_dir: &Path, client: &Client) -> Server {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = dir.join("config.toml");
        // Small chunks allowed, no static files, quiet logs.
        std::fs::write(
            &config,
            "min_chunk_size = 1024\nserve_static = false\nworkers = 2\n",
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tranche"));
        cmd.current_dir(dir)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // Settings from the environment running the tests must not leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRANCHE_") {
                cmd.env_remove(key);
            }
        }
        let mut server = Server {
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

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn kill(&mut self) {
        // std's kill is SIGKILL on Unix: no chance to flush anything.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn put(client: &Client, server: &Server, id: &str, index: usize, body: Vec<u8>) -> Value {
    let resp = client
        .put(server.url(&chunk_url(id, index)))
        .body(body)
        .send()
        .await
        .unwrap();
    expect_json(resp, 200).await
}

#[tokio::test]
async fn acknowledged_chunks_survive_sigkill_and_the_upload_finishes_after_restart() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let client = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let cs = 4096;
        let data = test_data(10 * cs + 321, 101);
        let chunks = chunks_of(&data, cs);
        assert_eq!(chunks.len(), 11);

        let mut server = Server::start(dir.path(), &data_dir, &client).await;
        let created = expect_json(
            client
                .post(server.url("/api/v1/uploads"))
                .json(&json!({"filename": "r.bin", "size": data.len(), "chunk_size": cs, "sha256": sha256_hex(&data)}))
                .send()
                .await
                .unwrap(),
            201,
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(created["chunk_size"], cs as u64);

        // Half the chunks, out of order, so both the hashed prefix and
        // chunks beyond it must be recovered.
        let sent = [0usize, 1, 4, 7, 2, 10];
        for &i in &sent {
            put(&client, &server, &id, i, chunks[i].clone()).await;
        }
        server.kill();

        let server = Server::start(dir.path(), &data_dir, &client).await;
        let view = expect_json(client.get(server.url(&format!("/api/v1/uploads/{id}"))).send().await.unwrap(), 200).await;
        let mut acked: Vec<u64> = sent.iter().map(|&i| i as u64).collect();
        acked.sort();
        let missing: Vec<u64> = (0..11).filter(|i| !acked.contains(i)).collect();
        assert_eq!(view["status"], "uploading");
        assert_eq!(view["missing_chunks"], json!(missing));
        assert_eq!(view["received_chunks"], sent.len());
        let acked_bytes: usize = sent.iter().map(|&i| chunks[i].len()).sum();
        assert_eq!(view["bytes_received"], acked_bytes);

        for &i in &missing {
            put(&client, &server, &id, i as usize, chunks[i as usize].clone()).await;
        }
        let done = expect_json(
            client
                .post(server.url(&format!("/api/v1/uploads/{id}/complete")))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(done["file"]["sha256"], sha256_hex(&data));
        let body = client.get(server.url(&format!("/api/v1/files/{id}"))).send().await.unwrap();
        assert_eq!(body.status(), 200);
        assert_eq!(sha256_hex(&body.bytes().await.unwrap()), sha256_hex(&data));
    })
    .await
}
