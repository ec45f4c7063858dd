//! Stopping a real `tranche serve` process with signals: the first ctrl-c
//! (SIGINT) or SIGTERM lets a chunk in flight finish and then exits; a second
//! one exits at once, cutting it; live event streams (SSE) end at the first
//! rather than hold the stop. Also the start-up line, which says which
//! store, data directory, durability and authentication are in use.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const CHUNK: usize = 64 * 1024;

/// A `tranche serve` on a port of its own choosing (read from its JSON log).
struct Server {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            "min_chunk_size = 1024\nserve_static = false\nworkers = 1\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        let log = dir.path().join("server.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tranche"));
        cmd.current_dir(dir.path())
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRANCHE_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().expect("start tranche");
        let started = wait_for_log(&log, "tranche is listening").await;
        let port = started["port"].as_u64().expect("port in the log") as u16;
        Server {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running");
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success());
    }

    /// Creates an upload of two chunks and returns its id.
    async fn create(&self) -> String {
        let body = format!(
            r#"{{"filename":"a.bin","size":{},"chunk_size":{CHUNK}}}"#,
            2 * CHUNK
        );
        let answer = request(
            self.port,
            &format!(
                "POST /api/v1/uploads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
        let json: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        json["id"].as_str().unwrap().to_owned()
    }

    /// Starts sending chunk 0 and stops half-way, as a slow client would.
    async fn half_a_chunk(&self, id: &str) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let head = format!(
            "PUT /api/v1/uploads/{id}/chunks/0 HTTP/1.1\r\nHost: x\r\n\
             Content-Length: {CHUNK}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[7u8; CHUNK / 2]).await.unwrap();
        stream.flush().await.unwrap();
        stream
    }

    /// Waits until the server is receiving a chunk (its `/metrics` say so),
    /// so that a signal sent next finds the request accepted and running.
    async fn until_chunk_in_flight(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let metrics = request(
                self.port,
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            if metrics.lines().any(|l| l == "tranche_chunks_in_flight 1") {
                return;
            }
            assert!(Instant::now() < deadline, "no chunk in flight: {metrics}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) for the process to exit and returns its status.
    async fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("tranche still running {limit:?} later"))
            .unwrap()
    }

    async fn wait_for_log(&self, message: &str) -> Value {
        wait_for_log(&self.log, message).await
    }
}

/// The first JSON log line whose message starts with `message`, waited for
/// up to 20 s.
async fn wait_for_log(log: &Path, message: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
            });
        if let Some(line) = found {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no log line {message:?} within 20 s; log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a whole request on a fresh connection and reads the answer to its end.
async fn request(port: u16, raw: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    read_to_end(&mut stream).await
}

async fn read_to_end(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("an answer or a closed connection within 20 s");
    String::from_utf8_lossy(&answer).into_owned()
}

async fn graceful_on(signal: &str) {
    let mut server = Server::start().await;
    let id = server.create().await;
    let mut stream = server.half_a_chunk(&id).await;
    server.until_chunk_in_flight().await;
    server.signal(signal);
    server.wait_for_log("stopping: no new connections").await;
    stream.write_all(&[7u8; CHUNK / 2]).await.unwrap();
    let answer = read_to_end(&mut stream).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the chunk in flight at {signal} was cut: {answer:?}"
    );
    let status = server.exit_within(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn ctrl_c_lets_the_chunk_in_flight_finish() {
    graceful_on("INT").await;
}

#[tokio::test]
async fn sigterm_lets_the_chunk_in_flight_finish() {
    graceful_on("TERM").await;
}

#[tokio::test]
async fn a_second_ctrl_c_stops_at_once() {
    let mut server = Server::start().await;
    let id = server.create().await;
    let mut stream = server.half_a_chunk(&id).await;
    server.until_chunk_in_flight().await;
    server.signal("INT");
    server.wait_for_log("stopping: no new connections").await;
    server.signal("INT");
    // Well within shutdown_timeout (30 s): the chunk is not waited for.
    server.exit_within(Duration::from_secs(10)).await;
    let answer = read_to_end(&mut stream).await;
    assert!(!answer.contains("200 OK"), "{answer:?}");
    server.wait_for_log("stopping at once").await;
}

#[tokio::test]
async fn the_start_up_line_names_store_data_dir_durability_and_auth() {
    let server = Server::start().await;
    let line = server.wait_for_log("tranche is listening").await;
    let fields = &line;
    let store = fields["store"].as_str().unwrap();
    assert!(
        store.starts_with("embedded ") && store.ends_with("state.redb"),
        "{line}"
    );
    assert!(
        fields["data_dir"].as_str().unwrap().ends_with("data"),
        "{line}"
    );
    assert_eq!(fields["durability"], "Full", "{line}");
    assert_eq!(fields["auth"], "off", "{line}");
}

/// A live event stream never ends by itself while its upload may change: a
/// graceful stop ends it at once rather than wait `shutdown_timeout` (30 s
/// here) for it.
#[tokio::test]
async fn sigterm_ends_live_event_streams_and_exits_promptly() {
    let mut server = Server::start().await;
    let id = server.create().await;
    let mut stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let head = format!("GET /api/v1/uploads/{id}/events HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let first_event = async {
        while !String::from_utf8_lossy(&seen).contains("event: upload.progress") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream closed early");
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), first_event)
        .await
        .expect("the stream's first event");
    let signalled = Instant::now();
    server.signal("TERM");
    let rest = read_to_end(&mut stream).await;
    // A chunked answer ends with its last, empty chunk: the stream was ended,
    // not cut.
    assert!(rest.ends_with("0\r\n\r\n"), "{rest:?}");
    let status = server.exit_within(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "the stop waited for the stream: {:?}",
        signalled.elapsed()
    );
}
