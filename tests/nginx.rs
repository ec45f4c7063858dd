//! The shipped `nginx/tranche.conf` in front of three real tranche processes
//! that share one real Redis and one data directory: chunks spread over all
//! three, an upload completed through another instance than the one that
//! created it, downloads through nginx, an instance killed mid-chunk, the
//! 413s for an oversized chunk and an oversized control request, proof
//! that nginx streams chunk bodies instead of spooling them, and an upload's
//! live event stream (SSE) passed on event by event. Each test ends by
//! stopping nginx and checking that none of its processes outlived it.
//!
//! Needs `nginx` (Debian package; /usr/sbin/nginx) and `redis-server`.
//! nginx runs unprivileged-style from a temp prefix with its own temp paths;
//! the test changes only what nginx/README.md says it changes.

/// The state store of the in-process helpers (unused here: every tranche is a
/// real process on Redis).
pub const BACKEND: helpers::Backend = helpers::Backend::Redis;

#[path = "api/helpers.rs"]
mod helpers;
#[path = "api/sse_client.rs"]
mod sse_client;

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use reqwest::Client;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use helpers::*;

/// Bound of each test: three processes, Redis and nginx start in a second or two.
const NGINX_TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The test client's own loopback address: not one of `trusted_proxies`, so
/// that what it writes in `X-Forwarded-*` counts for nothing.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// What the client claims to be; nginx appends the real address after it.
const SPOOFED_IP: &str = "203.0.113.66";

/// nginx as a child process in a process group of its own, from a temp
/// prefix. [`Nginx::stop`] shuts it down and reports any process of its group
/// (a worker) still alive; drop stops it too, for a test that failed first.
struct Nginx {
    child: Child,
    port: u16,
    prefix: tempfile::TempDir,
    stopped: bool,
}

fn nginx_binary() -> PathBuf {
    let on_path = Command::new("nginx")
        .arg("-v")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        "nginx".into()
    } else if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx".into()
    } else {
        panic!("nginx not found: apt-get install nginx");
    }
}

/// The shipped config with what a test must change: the instances' addresses
/// in the upstream block, and the `# tls` lines (certificates, port 443)
/// replaced by a plain-HTTP loopback `listen`.
fn shipped_config(upstreams: &[String], port: u16) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/nginx/tranche.conf");
    let shipped = std::fs::read_to_string(path).expect("nginx/tranche.conf");
    let mut conf = String::new();
    let mut listen_written = false;
    for line in shipped.lines() {
        if line.trim_end().ends_with("# tls") {
            if !listen_written {
                conf.push_str(&format!("    listen 127.0.0.1:{port};\n"));
                listen_written = true;
            }
            continue;
        }
        conf.push_str(line);
        conf.push('\n');
    }
    assert!(listen_written, "nginx/tranche.conf has no `# tls` lines");
    let shipped_upstreams = ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"];
    for (from, to) in shipped_upstreams.iter().zip(upstreams) {
        let server = format!("server {from} ");
        assert_eq!(
            conf.matches(&server).count(),
            1,
            "nginx/tranche.conf should name upstream {from} once"
        );
        conf = conf.replace(&server, &format!("server {to} "));
    }
    conf
}

impl Nginx {
    async fn start(upstreams: &[String], client: &Client) -> Nginx {
        let binary = nginx_binary();
        for attempt in 1..=5 {
            let prefix = tempfile::tempdir().expect("nginx prefix");
            let p = prefix.path();
            let port = free_port();
            std::fs::write(p.join("tranche.conf"), shipped_config(upstreams, port)).unwrap();
            // As root, nginx's workers would otherwise run as `nobody`, which
            // cannot enter this 0700 temp directory.
            let is_root = std::os::unix::fs::MetadataExt::uid(
                &std::fs::metadata("/proc/self").expect("/proc/self"),
            ) == 0;
            let d = p.display();
            let main = format!(
                "{user}worker_processes 1;\nerror_log {d}/error.log info;\npid {d}/nginx.pid;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n\
                 \x20   client_body_temp_path {d}/client_body;\n\
                 \x20   proxy_temp_path {d}/proxy;\n\
                 \x20   fastcgi_temp_path {d}/fastcgi;\n\
                 \x20   uwsgi_temp_path {d}/uwsgi;\n\
                 \x20   scgi_temp_path {d}/scgi;\n\
                 \x20   access_log {d}/access.log;\n\
                 \x20   include {d}/tranche.conf;\n\
                 }}\n",
                user = if is_root { "user root;\n" } else { "" },
            );
            std::fs::write(p.join("nginx.conf"), main).unwrap();
            let child = Command::new(&binary)
                .arg("-p")
                .arg(p)
                .arg("-c")
                .arg(p.join("nginx.conf"))
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its workers join this group: stopping checks the group is empty.
                .process_group(0)
                .spawn()
                .expect("start nginx");
            let mut nginx = Nginx {
                child,
                port,
                prefix,
                stopped: false,
            };
            match nginx.wait_ready(client).await {
                Ok(()) => return nginx,
                Err(e) if attempt < 5 => eprintln!("nginx did not start ({e}); retrying"),
                Err(e) => panic!("nginx did not start: {e}"),
            }
        }
        unreachable!()
    }

    async fn wait_ready(&mut self, client: &Client) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(self.prefix.path().join("error.log"))
                    .unwrap_or_default();
                return Err(format!("exited with {status}: {log}"));
            }
            let up = client.get(self.url("/healthz")).send().await;
            if up.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("no answer on /healthz within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// Every file nginx spooled a request body into.
    fn spooled_bodies(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.prefix.path().join("client_body"), &mut out);
        out
    }
}

impl Nginx {
    /// Shuts nginx down as its manual says (SIGQUIT: the master tells its
    /// workers to finish and waits for them; SIGTERM if that takes more than
    /// 5 s), reaps the master, and returns the processes of its group still
    /// alive after that, SIGKILLed. Killing only the master, as this test once
    /// did, orphans the workers to PID 1, still listening on their port.
    fn stop(&mut self) -> Vec<String> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        let pid = self.child.id();
        // A master already reaped (it failed to start) has a pid that may now
        // be another process's: no signal to it, only the check of its group.
        let exited = self.child.try_wait().ok().flatten().is_some();
        let signals: &[(&str, u64)] = if exited {
            &[]
        } else {
            &[("QUIT", 5), ("TERM", 5)]
        };
        for &(signal, wait) in signals {
            signal_process(pid, signal);
            let deadline = Instant::now() + Duration::from_secs(wait);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The master waits for its workers before it exits; anything left in
        // its group now outlived it.
        let left = processes_in_group(pid);
        if !left.is_empty() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        left
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let left = self.stop();
        if !left.is_empty() && !std::thread::panicking() {
            panic!("nginx processes outlived their master: {left:?}");
        }
    }
}

/// `kill -SIGNAL pid` (the shell's kill: no libc in the tests).
fn signal_process(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

/// The live processes (not zombies) whose process group is `pgid`, as
/// "pid (name)", read from /proc.
fn processes_in_group(pgid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            found.push(format!("{head})"));
        }
    }
    found
}

/// Three tranche processes on one Redis and one data directory, nginx in front.
struct Cluster {
    redis: RedisServer,
    instances: Vec<ServerProcess>,
    logs: Vec<PathBuf>,
    nginx: Nginx,
    client: Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let redis = RedisServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let client = Client::builder()
            .local_address(IpAddr::V4(CLIENT_IP))
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        let mut instances = Vec::new();
        let mut logs = Vec::new();
        for n in 0..3 {
            let own = dir.path().join(format!("instance{n}"));
            std::fs::create_dir_all(&own).unwrap();
            let log = own.join("tranche.log");
            // nginx reaches the instances from 127.0.0.1; the client is 127.0.0.3.
            let config = "trusted_proxies = [\"127.0.0.1\"]\n[log]\nformat = \"json\"";
            instances.push(
                ServerProcess::start_with(
                    &own,
                    &data_dir,
                    Some(&redis),
                    &client,
                    config,
                    Some(&log),
                )
                .await,
            );
            logs.push(log);
        }
        let upstreams: Vec<String> = instances
            .iter()
            .map(|s| s.base.trim_start_matches("http://").to_owned())
            .collect();
        let nginx = Nginx::start(&upstreams, &client).await;
        Cluster {
            redis,
            instances,
            logs,
            nginx,
            client,
            _dir: dir,
        }
    }

    /// Stops nginx and checks that none of its processes is left, nor
    /// anything listening on its port.
    fn stop_nginx(&mut self) {
        let left = self.nginx.stop();
        assert!(
            left.is_empty(),
            "nginx processes outlived the test: {left:?}"
        );
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.nginx.port)).is_err(),
            "something still listens on nginx's port {}",
            self.nginx.port
        );
    }

    async fn metric(&self, instance: usize, name: &str, labels: Option<&str>) -> f64 {
        let resp = self
            .client
            .get(self.instances[instance].url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        metric_value(&resp.text().await.unwrap(), name, labels).unwrap_or(0.0)
    }

    async fn create(&self, data: &[u8], chunk_size: usize) -> (String, reqwest::header::HeaderMap) {
        let resp = self
            .client
            .post(self.nginx.url("/api/v1/uploads"))
            .header("x-forwarded-for", SPOOFED_IP)
            .json(&json!({"filename": "n.bin", "size": data.len(),
                          "chunk_size": chunk_size, "sha256": sha256_hex(data)}))
            .send()
            .await
            .unwrap();
        let headers = resp.headers().clone();
        let created = expect_json(resp, 201).await;
        assert_eq!(created["chunk_size"], chunk_size);
        (created["id"].as_str().unwrap().to_owned(), headers)
    }

    async fn put_via_nginx(&self, id: &str, index: usize, chunk: &[u8]) -> reqwest::Response {
        self.client
            .put(self.nginx.url(&chunk_url(id, index)))
            .header("x-forwarded-for", SPOOFED_IP)
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap()
    }
}

/// Reads one HTTP answer (head and `Content-Length` body) from a raw
/// connection, within 10 s. nginx keeps a connection whose request body it
/// did not read open for a while (lingering close), so reading to the end
/// would wait for that.
/// Sends only a request `head` announcing a body too large for nginx, and
/// returns the JSON body of the 413 nginx answers from the head alone.
async fn refused_as_too_large(port: u16, head: &str) -> Value {
    refused_with(port, head, 413).await
}

/// Sends a raw request `head` that nginx refuses by itself, and returns the
/// JSON body of its answer, which must have `status`.
async fn refused_with(port: u16, head: &str, status: u16) -> Value {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "{answer}"
    );
    assert!(
        answer.contains("Content-Type: application/json"),
        "{answer}"
    );
    serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap().trim())
        .expect("a JSON error body")
}

async fn read_answer(stream: &mut tokio::net::TcpStream) -> String {
    let mut raw = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&raw).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok());
                if length.is_some_and(|n| body.len() >= n) {
                    return;
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    String::from_utf8_lossy(&raw).into_owned()
}

/// The access log lines (JSON) of one instance.
fn access_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "request")
        .collect()
}

#[tokio::test]
async fn three_instances_behind_nginx_share_one_upload() {
    bounded_for(NGINX_TEST_TIMEOUT, async {
        let mut c = Cluster::start().await;
        let cs = 64 * 1024;
        let data = test_data(9 * cs + 100, 501);
        let chunks = chunks_of(&data, cs);
        assert_eq!(chunks.len(), 10);

        let (id, headers) = c.create(&data, cs).await;
        // tranche trusts nginx's X-Forwarded-*: the Location points at nginx.
        assert_eq!(
            headers["location"].to_str().unwrap(),
            c.nginx.url(&format!("/api/v1/uploads/{id}"))
        );
        for (i, chunk) in chunks.iter().enumerate() {
            expect_json(c.put_via_nginx(&id, i, chunk).await, 200).await;
        }

        // Round-robin: every instance stored some of the chunks.
        let mut per_instance = Vec::new();
        for n in 0..3 {
            per_instance.push(c.metric(n, "tranche_chunks_received_total", None).await);
        }
        eprintln!("chunks stored per instance: {per_instance:?}");
        assert!(per_instance.iter().all(|&n| n >= 1.0), "{per_instance:?}");
        assert_eq!(per_instance.iter().sum::<f64>(), 10.0);

        // Complete directly on an instance that did not create the upload.
        let mut creator = None;
        for n in 0..3 {
            if c.metric(n, "tranche_uploads_total", Some("event=\"created\""))
                .await
                == 1.0
            {
                creator = Some(n);
            }
        }
        let creator = creator.expect("one instance created the upload");
        let finisher = (creator + 1) % 3;
        let done = expect_json(
            c.client
                .post(c.instances[finisher].url(&format!("/api/v1/uploads/{id}/complete")))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(done["file"]["sha256"], sha256_hex(&data));
        let completed = "event=\"completed\"";
        assert_eq!(
            c.metric(finisher, "tranche_uploads_total", Some(completed))
                .await,
            1.0
        );
        assert_eq!(
            c.metric(creator, "tranche_uploads_total", Some(completed))
                .await,
            0.0
        );
        // Asked directly (the client is no trusted proxy), the URL stays
        // relative whatever the client claims.
        assert_eq!(done["file"]["url"], format!("/api/v1/files/{id}"));

        // Through nginx the file's URL is absolute, on nginx's address, and works.
        let status = expect_json(
            c.client
                .get(c.nginx.url(&format!("/api/v1/uploads/{id}")))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        let url = status["file"]["url"].as_str().unwrap().to_owned();
        assert_eq!(url, c.nginx.url(&format!("/api/v1/files/{id}")));
        let resp = c.client.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(sha256_hex(&resp.bytes().await.unwrap()), sha256_hex(&data));
        let part = c
            .client
            .get(&url)
            .header("range", "bytes=1000-1999")
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(&part.bytes().await.unwrap()[..], &data[1000..2000]);

        // Each instance logged the client nginx saw, never what it claimed,
        // with the chunk's index and size on its line.
        let mut chunk_lines = 0;
        for log in &c.logs {
            let lines = access_log(log);
            assert!(!lines.is_empty(), "no access log in {}", log.display());
            for line in &lines {
                let span = &line["span"];
                assert_eq!(span["client_ip"], CLIENT_IP.to_string(), "{line}");
                assert!(
                    line["status"].is_number() && line["duration_ms"].is_number(),
                    "{line}"
                );
                if span["chunk"].is_number() && line["status"] == 200 {
                    assert_eq!(span["upload_id"], id.as_str(), "{line}");
                    let index = span["chunk"].as_u64().unwrap() as usize;
                    assert_eq!(span["bytes"], chunks[index].len(), "{line}");
                    chunk_lines += 1;
                }
            }
            let text = std::fs::read_to_string(log).unwrap();
            assert!(!text.contains(SPOOFED_IP), "spoofed address logged");
        }
        assert_eq!(chunk_lines, 10);
        assert!(c.nginx.spooled_bodies().is_empty());

        // Control endpoints are rate-limited per client (10/s, bursts of 40):
        // a client polling in a tight loop gets nginx's 429, as JSON.
        let mut limited = None;
        for _ in 0..80 {
            let r = c
                .client
                .get(c.nginx.url(&format!("/api/v1/uploads/{id}")))
                .send()
                .await
                .unwrap();
            if r.status() == 429 {
                limited = Some(r);
                break;
            }
            assert_eq!(r.status(), 200);
        }
        let r = limited.expect("80 status requests in a burst were never limited");
        assert_eq!(r.headers()["retry-after"], "1");
        assert_error(r, 429, "rate_limited").await;
        c.stop_nginx();
    })
    .await
}

#[tokio::test]
async fn nginx_streams_chunks_survives_a_killed_instance_and_refuses_oversized_ones() {
    bounded_for(NGINX_TEST_TIMEOUT, async {
        let mut c = Cluster::start().await;
        let cs = 1 << 20;
        let data = test_data(6 * cs + 1234, 502);
        let chunks = chunks_of(&data, cs);
        assert_eq!(chunks.len(), 7);
        let (id, _) = c.create(&data, cs).await;
        for i in [0, 1] {
            expect_json(c.put_via_nginx(&id, i, &chunks[i]).await, 200).await;
        }

        // Chunk 2 through nginx, half of it: an instance is already receiving
        // it while the client has not finished, and nginx spooled nothing.
        let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", c.nginx.port))
            .await
            .unwrap();
        let head = format!(
            "PUT {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n\r\n",
            chunk_url(&id, 2),
            c.nginx.port,
            chunks[2].len()
        );
        stalled.write_all(head.as_bytes()).await.unwrap();
        stalled.write_all(&chunks[2][..cs / 2]).await.unwrap();
        stalled.flush().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let victim = loop {
            let mut receiving = None;
            for n in 0..3 {
                if c.metric(n, "tranche_chunks_in_flight", None).await == 1.0 {
                    receiving = Some(n);
                }
            }
            if let Some(n) = receiving {
                break n;
            }
            assert!(
                Instant::now() < deadline,
                "no instance started receiving the half-sent chunk: nginx buffers it"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let spooled = c.nginx.spooled_bodies();
        assert!(spooled.is_empty(), "nginx spooled a body: {spooled:?}");

        // Kill the instance that holds the chunk: the client gets nginx's 502
        // in tranche's error format, and the chunk is not counted.
        let before: Vec<f64> = {
            let mut v = Vec::new();
            for n in 0..3 {
                v.push(c.metric(n, "tranche_chunks_received_total", None).await);
            }
            v
        };
        c.instances[victim].kill();
        let answer = read_answer(&mut stalled).await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        assert!(
            answer.contains("\"error\":\"upstream_unavailable\""),
            "{answer}"
        );

        // The dead instance's lease on chunk 2 makes a resend wait (tranche's
        // own 409, through nginx) until it lapses; fast-forward that lapse.
        let r = c.put_via_nginx(&id, 2, &chunks[2]).await;
        assert!(r.headers().contains_key("retry-after"));
        assert_error(r, 409, "chunk_in_progress").await;
        let mut conn = c.redis.connection().await;
        let lease_key = format!("tranche:{{{id}}}:lease:chunk:2");
        let _: () = conn.pexpire(&lease_key, 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;

        // Every remaining chunk goes through; nginx steps over the dead instance.
        for (i, chunk) in chunks.iter().enumerate().skip(2) {
            expect_json(c.put_via_nginx(&id, i, chunk).await, 200).await;
        }
        let mut survivors_stored = 0.0;
        for n in (0..3).filter(|&n| n != victim) {
            survivors_stored +=
                c.metric(n, "tranche_chunks_received_total", None).await - before[n];
        }
        assert_eq!(survivors_stored, 5.0);

        let done = expect_json(
            c.client
                .post(c.nginx.url(&format!("/api/v1/uploads/{id}/complete")))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(done["file"]["sha256"], sha256_hex(&data));
        let body = c
            .client
            .get(c.nginx.url(&format!("/api/v1/files/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(body.status(), 200);
        assert_eq!(sha256_hex(&body.bytes().await.unwrap()), sha256_hex(&data));

        // A body over client_max_body_size: refused by nginx from the header
        // alone, as JSON, before a byte of it is read or reaches tranche.
        let head = format!(
            "PUT {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
            chunk_url(&id, 0),
            (65 << 20) + 1
        );
        let body = refused_as_too_large(c.nginx.port, &head).await;
        assert_eq!(body["error"], "chunk_too_large");

        // A control request over the control limit (1 MiB): its own 413,
        // about control requests, not the chunk message.
        let head = format!(
            "POST /api/v1/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            (1 << 20) + 1
        );
        let body = refused_as_too_large(c.nginx.port, &head).await;
        assert_eq!(body["error"], "request_too_large", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("1 MiB"), "{message}");
        assert!(!message.contains("65 MiB"), "{message}");
        assert!(c.nginx.spooled_bodies().is_empty());

        // Framing that nginx refuses (request smuggling material): a JSON 400
        // too, on a chunk route and on any other.
        for path in [chunk_url(&id, 0), "/api/v1/uploads".to_string()] {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\
                 Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            );
            let body = refused_with(c.nginx.port, &head, 400).await;
            assert_eq!(body["error"], "bad_request", "{body}");
        }
        c.stop_nginx();
    })
    .await
}

/// A tus client with no special settings, through the shipped config: a
/// first PATCH larger than any chunk location would let through (tus
/// clients send a whole file in one PATCH by default), the rest in pieces
/// that nginx spreads over the instances sharing Redis.
#[tokio::test]
async fn a_tus_upload_goes_through_nginx_across_instances() {
    bounded_for(NGINX_TEST_TIMEOUT, async {
        let c = Cluster::start().await;
        let data = test_data(70 * 1024 * 1024 + 3 * 1000, 77);
        let tus = |req: reqwest::RequestBuilder| req.header("tus-resumable", "1.0.0");
        let created = tus(c.client.post(c.nginx.url("/files/")))
            .header("upload-length", data.len())
            .header("upload-metadata", "filename dHVzLmJpbg==")
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let location = created.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            location.starts_with(&c.nginx.origin()),
            "Location points at nginx: {location}"
        );
        let mut offset = 0;
        let first = data.len() - 3000;
        for end in [first, first + 1000, first + 2000, data.len()] {
            let resp = tus(c.client.patch(&location))
                .header("upload-offset", offset)
                .header("content-type", "application/offset+octet-stream")
                .body(data[offset..end].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 204, "PATCH at {offset}");
            assert_eq!(resp.headers()["upload-offset"], end.to_string().as_str());
            assert_eq!(resp.headers()["tus-resumable"], "1.0.0");
            offset = end;
        }
        let id = location.rsplit('/').next().unwrap();
        let done = expect_json(
            c.client
                .get(c.nginx.url(&format!("/api/v1/uploads/{id}")))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(done["status"], "completed");
        assert_eq!(done["filename"], "tus.bin");
        assert_eq!(done["file"]["sha256"], sha256_hex(&data));
        let file = c
            .client
            .get(c.nginx.url(&format!("/api/v1/files/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(file.status(), 200);
        assert_eq!(sha256_hex(&file.bytes().await.unwrap()), sha256_hex(&data));
    })
    .await;
}

/// The shipped config's `proxy_read_timeout` for the event stream's location.
fn events_read_timeout() -> Duration {
    let conf = shipped_config(&[], 1);
    let location = conf
        .split("location ~ ^/api/v1/uploads/[^/]+/events$ {")
        .nth(1)
        .expect("nginx/tranche.conf has a location for the event stream");
    let block = &location[..location.find('}').unwrap()];
    let value = block
        .lines()
        .find_map(|l| l.trim().strip_prefix("proxy_read_timeout "))
        .expect("the event stream's location sets proxy_read_timeout");
    humantime::parse_duration(value.trim_end_matches(';')).expect("a duration")
}

#[tokio::test]
async fn an_uploads_event_stream_goes_through_nginx_event_by_event() {
    use sse_client::{events_path, Sse};
    // Idle streams live on heartbeats; nginx must wait longer than one.
    let heartbeat = tranche::config::EventSettings::default().sse_heartbeat;
    assert!(
        events_read_timeout() >= 2 * heartbeat,
        "proxy_read_timeout {:?} would cut streams idle between heartbeats ({heartbeat:?})",
        events_read_timeout()
    );
    bounded_for(NGINX_TEST_TIMEOUT, async {
        let c = Cluster::start().await;
        let cs = 64 * 1024;
        let data = test_data(3 * cs + 10, 502);
        let (id, _) = c.create(&data, cs).await;
        // As an EventSource opens it: a token in the query (with
        // authentication off, taken and unneeded), which no log may keep.
        let secret = "a-token-that-no-log-may-keep";
        let url = format!("{}?access_token={secret}", c.nginx.url(&events_path(&id)));
        let resp = reqwest::get(url).await.unwrap();
        assert!(
            resp.headers().get("x-accel-buffering").is_none(),
            "nginx's own header"
        );
        let mut sse = Sse::of(resp);
        assert_eq!(
            sse.expect("upload.progress").await.json()["bytes_received"],
            0
        );
        // Round-robin: the chunks land on all three instances, the stream is
        // served by one; each progress still comes through on its own.
        for (i, chunk) in chunks_of(&data, cs).iter().enumerate() {
            expect_json(c.put_via_nginx(&id, i, chunk).await, 200).await;
            let progress = sse.expect("upload.progress").await.json();
            assert_eq!(progress["received_chunks"], i as u64 + 1, "{progress}");
        }
        let completed = c
            .client
            .post(c.nginx.url(&format!("/api/v1/uploads/{id}/complete")))
            .send()
            .await
            .unwrap();
        expect_json(completed, 200).await;
        let done = sse.expect("upload.completed").await.json();
        assert_eq!(done["file"]["sha256"], sha256_hex(&data));
        // Behind a trusted proxy the file's URL points at nginx.
        assert_eq!(
            done["file"]["url"],
            c.nginx.url(&format!("/api/v1/files/{id}"))
        );
        // A worker reports through nginx too (any instance); the last report
        // ends the stream.
        let reports = [
            json!({"state": "queued"}),
            json!({"state": "processing", "progress": 0.5}),
            json!({"state": "completed", "result": {"pages": 3}}),
        ];
        for body in reports {
            let kept = c
                .client
                .put(c.nginx.url(&format!("/api/v1/uploads/{id}/processing")))
                .json(&body)
                .send()
                .await
                .unwrap();
            expect_json(kept, 200).await;
            let seen = sse.expect("upload.processing").await.json();
            assert_eq!(seen["processing"]["state"], body["state"], "{seen}");
        }
        sse.expect_end().await;
        // tranche's access log names the stream's path, never its query.
        let path = events_path(&id);
        let logged = || c.logs.iter().flat_map(|log| access_log(log));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !logged().any(|l| l["path"] == path.as_str()) {
            assert!(Instant::now() < deadline, "no access log line for {path}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for log in &c.logs {
            let text = std::fs::read_to_string(log).unwrap();
            assert!(!text.contains(secret), "{} keeps the token", log.display());
        }
    })
    .await;
}
