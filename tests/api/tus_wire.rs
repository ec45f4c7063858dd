//! tus requests framed as real clients frame them, which the protocol text
//! leaves to HTTP: `Expect: 100-continue` (which the spec recommends for
//! creation-with-upload, "to receive early feedback from the Server on
//! whether it will accept the creation request") and bodies without a
//! `Content-Length` (chunked), as a streaming client sends them.

use std::time::Duration;

use futures::stream;
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::tus_client::*;

/// Reads what the server sends until `within` passes or it pauses after
/// having sent a complete head.
async fn read_some(stream: &mut TcpStream, within: Duration) -> String {
    let mut raw = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
        }
        if raw.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&raw).into_owned()
}

/// Sends a request head announcing a body with `Expect: 100-continue`;
/// returns the socket and what the server said before any body byte.
async fn expecting(url: &Url, head_lines: &str, length: usize) -> (TcpStream, String) {
    let port = url.port().unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "{head_lines}Host: 127.0.0.1:{port}\r\nTus-Resumable: {TUS_VERSION}\r\n\
         Content-Type: {OCTETS}\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut early = read_some(&mut stream, Duration::from_secs(3)).await;
    if status_of(&early) == Some(100) && early.matches("HTTP/1.1 ").count() == 1 {
        // A final answer may follow the 100 at once, without the body.
        early += &read_some(&mut stream, Duration::from_millis(500)).await;
    }
    (stream, early)
}

/// The status of the last head in `text` (a 100 may come before a final
/// answer that the server sends without waiting for the body).
fn last_status(text: &str) -> Option<u16> {
    text.rsplit("HTTP/1.1 ")
        .next()
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

fn status_of(text: &str) -> Option<u16> {
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

#[tokio::test]
async fn tus_creation_with_upload_and_expect_100_continue() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.url(TUS_PATH);
        let (mut stream, early) = expecting(
            &url,
            &format!("POST {TUS_PATH} HTTP/1.1\r\nUpload-Length: 11\r\n"),
            11,
        )
        .await;
        assert_eq!(status_of(&early), Some(100), "before the body: {early:?}");
        stream.write_all(b"hello world").await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        // The final answer is the last head on the connection.
        let all = format!("{early}{}", String::from_utf8_lossy(&rest));
        let text = format!("HTTP/1.1 {}", all.rsplit("HTTP/1.1 ").next().unwrap_or(""));
        assert_eq!(status_of(&text), Some(201), "{text:?}");
        let location = text
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no Location in {text:?}"));
        tus.assert_file(&tus.url(&location), b"hello world").await;
    })
    .await
}

#[tokio::test]
async fn tus_a_refused_creation_answers_before_the_body_is_sent() {
    bounded(async {
        let app = spawn_app_with(|s| s.max_file_size = bytesize::ByteSize::kib(1)).await;
        let tus = Tus::new(&app);
        let url = tus.url(TUS_PATH);
        // Too long for Tus-Max-Size: the early feedback is the 413 itself.
        let (_stream, early) = expecting(
            &url,
            &format!("POST {TUS_PATH} HTTP/1.1\r\nUpload-Length: 5000\r\n"),
            5000,
        )
        .await;
        assert_eq!(last_status(&early), Some(413), "before the body: {early:?}");
    })
    .await
}

#[tokio::test]
async fn tus_a_patch_with_expect_100_continue_gets_an_answer_before_its_body() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.create(10, None).await;
        // Right offset: go ahead.
        let (mut stream, early) = expecting(
            &url,
            &format!("PATCH {} HTTP/1.1\r\nUpload-Offset: 0\r\n", url.path()),
            10,
        )
        .await;
        assert_eq!(status_of(&early), Some(100), "{early:?}");
        stream.write_all(b"0123456789").await.unwrap();
        let _ = read_some(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(tus.offset_of(&url).await, 10);

        // Wrong offset on another upload: a 100 or the 409 itself, not
        // silence until the body comes.
        let other = tus.create(10, None).await;
        let (_stream, early) = expecting(
            &other,
            &format!("PATCH {} HTTP/1.1\r\nUpload-Offset: 5\r\n", other.path()),
            5,
        )
        .await;
        assert!(
            matches!(status_of(&early), Some(100 | 409)),
            "before the body: {early:?}"
        );
    })
    .await
}

#[tokio::test]
async fn tus_a_chunked_patch_without_content_length_is_taken() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let data = test_data(200_000, 91);
        let url = tus.create(200_000, None).await;
        tus.patch_ok(&url, 0, &data[..1000]).await;
        // A streaming body: reqwest frames it with Transfer-Encoding: chunked.
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
            data[1000..].chunks(7000).map(|c| Ok(c.to_vec())).collect();
        let req = tus
            .request(reqwest::Method::PATCH, url.as_str())
            .header("Upload-Offset", "1000")
            .header("Content-Type", OCTETS)
            .body(reqwest::Body::wrap_stream(stream::iter(pieces)));
        let answer = tus.send(req).await.expect(&[204]);
        assert_eq!(answer.offset(), Some(200_000), "{answer}");
        tus.assert_file(&url, &data).await;
    })
    .await
}
