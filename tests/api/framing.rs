//! Requests the HTTP/1 parser refuses before any handler runs (ambiguous
//! framing, a stalled or oversized head) get tranche's JSON error format, over
//! a plain socket; and the socket wrapper that gives it changes nothing else:
//! uploads, downloads (even of bytes that look like such an answer), keep-alive
//! and the peer address behave as before.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// How long a test waits for an answer the server should give at once.
const PROMPT: Duration = Duration::from_secs(5);

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect")
}

/// Reads until the server closes the connection (or `within` passes).
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> String {
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut raw)).await;
    String::from_utf8_lossy(&raw).into_owned()
}

/// Reads exactly one response with a `content-length` body.
async fn read_one(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(PROMPT, async {
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if raw.len() >= end + 4 + length {
                    return;
                }
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed mid-answer: {}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("an answer in time");
    String::from_utf8_lossy(&raw).into_owned()
}

/// Asserts that `raw` is exactly one JSON error answer with `status` and
/// `code`: a content-type, a length that is the body's, a message.
fn assert_json_answer(raw: &str, status: u16, code: &str) -> Value {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {raw:?}"));
    let head = head.to_ascii_lowercase();
    assert!(
        head.starts_with(&format!("http/1.1 {status} ")),
        "expected {status}: {raw:?}"
    );
    assert!(
        head.contains("\r\ncontent-type: application/json"),
        "{raw:?}"
    );
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap_or_else(|| panic!("no content-length: {raw:?}"))
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "length is not the body's: {raw:?}");
    let json: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {raw:?}"));
    assert_eq!(json["error"], code, "{json}");
    assert!(
        json["message"].as_str().is_some_and(|m| m.len() > 20),
        "{json}"
    );
    json
}

/// Sends `request` on a new connection and returns all the server answers.
async fn exchange(app: &TestApp, request: &[u8]) -> String {
    let mut stream = connect(app).await;
    stream.write_all(request).await.expect("send");
    read_to_close(&mut stream, PROMPT).await
}

#[tokio::test]
async fn content_length_with_transfer_encoding_gets_a_json_400() {
    bounded(async {
        let app = spawn_app().await;
        let raw = exchange(
            &app,
            b"POST /api/v1/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\
              Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .await;
        assert_json_answer(&raw, 400, "bad_request");
        assert!(raw
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"));
    })
    .await;
}

#[tokio::test]
async fn two_different_content_lengths_get_a_json_400() {
    bounded(async {
        let app = spawn_app().await;
        let raw = exchange(
            &app,
            b"POST /api/v1/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        )
        .await;
        assert_json_answer(&raw, 400, "bad_request");
    })
    .await;
}

#[tokio::test]
async fn a_stalled_head_gets_a_json_408() {
    bounded(async {
        let app = spawn_app_with(|s| s.limits.header_timeout = Duration::from_secs(1)).await;
        let mut stream = connect(&app).await;
        stream
            .write_all(b"POST /api/v1/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        let raw = read_to_close(&mut stream, PROMPT).await;
        let json = assert_json_answer(&raw, 408, "request_timeout");
        let message = json["message"].as_str().unwrap();
        assert!(message.contains("limits.header_timeout"), "{message}");
        // The same code as a stalled body, which tranche answers itself.
        assert!(message.contains("1s"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn an_oversized_head_gets_a_json_431() {
    bounded(async {
        let app = spawn_app().await;
        // Too many header fields (the parser takes 96).
        let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for i in 0..100 {
            head.push_str(&format!("X-Filler-{i}: {i}\r\n"));
        }
        head.push_str("\r\n");
        let raw = exchange(&app, head.as_bytes()).await;
        assert_json_answer(&raw, 431, "request_header_fields_too_large");

        // A head that never ends within the parser's buffer (128 KiB); exactly
        // that much, so that no unread byte makes the close a reset.
        let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ");
        head.push_str(&"a".repeat(128 * 1024 - head.len()));
        let raw = exchange(&app, head.as_bytes()).await;
        assert_json_answer(&raw, 431, "request_header_fields_too_large");
    })
    .await;
}

#[tokio::test]
async fn a_bad_request_after_a_good_one_on_the_same_connection_gets_json() {
    bounded(async {
        let app = spawn_app().await;
        let mut stream = connect(&app).await;
        for _ in 0..2 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .await
                .unwrap();
            let raw = read_one(&mut stream).await;
            assert!(raw.starts_with("HTTP/1.1 200 "), "{raw:?}");
        }
        stream
            .write_all(
                b"POST /api/v1/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\
                  Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            )
            .await
            .unwrap();
        let raw = read_to_close(&mut stream, PROMPT).await;
        assert_json_answer(&raw, 400, "bad_request");
    })
    .await;
}

#[tokio::test]
async fn a_bad_request_pipelined_behind_a_good_one_leaves_the_good_answer_whole() {
    bounded(async {
        let app = spawn_app().await;
        let raw = exchange(
            &app,
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\
              POST /api/v1/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\
              Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .await;
        assert!(raw.starts_with("HTTP/1.1 200 "), "{raw:?}");
        // The 400 follows, JSON when it went out in a write of its own, else
        // as the parser wrote it; either way a well-framed answer.
        let second = raw
            .match_indices("HTTP/1.1 400 Bad Request\r\n")
            .map(|(i, _)| &raw[i..])
            .next()
            .unwrap_or_else(|| panic!("no 400: {raw:?}"));
        if second.contains("application/json") {
            assert_json_answer(second, 400, "bad_request");
        } else {
            assert!(second.contains("content-length: 0\r\n"), "{second:?}");
            assert!(second.ends_with("\r\n\r\n"), "{second:?}");
        }
    })
    .await;
}

/// What the parser writes for a bad request, as a file's content.
fn looks_like_an_empty_400() -> Vec<u8> {
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\
      date: Tue, 15 Nov 1994 08:12:31 GMT\r\n\r\n"
        .to_vec()
}

#[tokio::test]
async fn uploads_and_downloads_pass_through_untouched() {
    bounded(async {
        let app = spawn_app().await;
        // Large enough to go out in many writes; then files that are, or end
        // with, the very bytes of an empty 400, which must come back as sent.
        // A download's head goes out before its body is read from disk, so
        // the 103-byte file reaches the socket as a write of its own: only
        // the count of live response bodies tells it from the parser's 400.
        let big = test_data(3 * 1024 * 1024 + 17, 5);
        let mut ends_like_one = test_data(200 * 1024, 6);
        ends_like_one.extend_from_slice(&looks_like_an_empty_400());
        for data in [big, looks_like_an_empty_400(), ends_like_one] {
            let done = app.upload_all(&data, 64 * 1024).await;
            assert_eq!(done["file"]["sha256"], sha256_hex(&data));
            let id = done["id"].as_str().unwrap();
            for _ in 0..3 {
                let r = app.download(id).await;
                assert_eq!(r.status(), 200);
                let body = r.bytes().await.unwrap();
                assert!(
                    body[..] == data[..],
                    "download of {} bytes changed",
                    data.len()
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn the_peer_address_still_reaches_the_app() {
    bounded(async {
        // Forwarded headers count only from a trusted peer: with 127.0.0.1
        // trusted, each forwarded client has a bucket of its own, which needs
        // the connection's peer address.
        let app = spawn_app_with(|s| {
            s.rate_limit.create_per_second = 0.2;
            s.rate_limit.create_burst = 1;
            s.trusted_proxies = ["127.0.0.1"].iter().collect();
        })
        .await;
        let create_from = |client: &'static str| {
            app.request(reqwest::Method::POST, "/api/v1/uploads")
                .header("x-forwarded-for", client)
                .json(&json!({"filename": "a", "size": 1}))
                .send()
        };
        assert_eq!(create_from("203.0.113.7").await.unwrap().status(), 201);
        assert_error(
            create_from("203.0.113.7").await.unwrap(),
            429,
            "rate_limited",
        )
        .await;
        assert_eq!(create_from("198.51.100.9").await.unwrap().status(), 201);
    })
    .await;
}
