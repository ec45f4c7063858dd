//! A small Server-Sent Events client for tests: reads a `text/event-stream`
//! answer as a browser's `EventSource` would (events, ids, data lines,
//! comments), each read bounded in time. Shared by `tests/api/sse*.rs` and
//! `tests/nginx.rs`.

// Each test crate uses a different part of it.
#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use reqwest::Response;
use serde_json::Value;

/// How long a test waits for one event before it fails.
pub const EVENT_WAIT: Duration = Duration::from_secs(5);

/// One SSE message: an event, or a comment (a heartbeat).
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
    pub comment: Option<String>,
}

impl Message {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{self:?}: {e}"))
    }

    pub fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("")
    }
}

/// An open event stream.
pub struct Sse {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    pub ended: bool,
}

impl Sse {
    /// The stream of a 200 answer with the SSE content type.
    pub fn of(resp: Response) -> Sse {
        assert_eq!(resp.status(), 200, "the stream was not opened");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-type"), "text/event-stream");
        assert_eq!(header("cache-control"), "no-cache");
        Sse {
            body: resp.bytes_stream().boxed(),
            buffer: String::new(),
            ended: false,
        }
    }

    /// The next message (event or comment); `None` when the server ended
    /// the stream. Fails the test after `within`.
    pub async fn next_within(&mut self, within: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(at) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..at + 2).collect();
                return Some(parse(&block));
            }
            if self.ended {
                assert!(self.buffer.is_empty(), "a cut message: {:?}", self.buffer);
                return None;
            }
            let piece = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("no SSE message within {within:?} (have {:?})", self.buffer)
                });
            match piece {
                Some(bytes) => {
                    let bytes = bytes.expect("the stream reads");
                    self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
                }
                None => self.ended = true,
            }
        }
    }

    /// The next event, skipping heartbeats; `None` at the end of the stream.
    pub async fn next_event(&mut self) -> Option<Message> {
        loop {
            let message = self.next_within(EVENT_WAIT).await?;
            if message.comment.is_none() {
                return Some(message);
            }
        }
    }

    /// The next event, which must be `name`.
    pub async fn expect(&mut self, name: &str) -> Message {
        let message = self.next_event().await.expect("the stream ended early");
        assert_eq!(message.name(), name, "{message:?}");
        assert!(message.id.is_some(), "an event without an id: {message:?}");
        message
    }

    /// Asserts the server ends the stream (after nothing but heartbeats).
    pub async fn expect_end(&mut self) {
        if let Some(message) = self.next_event().await {
            panic!("expected the end of the stream, got {message:?}");
        }
    }
}

fn parse(block: &str) -> Message {
    let mut message = Message::default();
    let mut data = Vec::new();
    for line in block.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix(':') {
            message.comment = Some(comment.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => message.event = Some(value.to_owned()),
            "id" => message.id = Some(value.to_owned()),
            "data" => data.push(value),
            other => panic!("unexpected SSE field {other:?} in {block:?}"),
        }
    }
    message.data = data.join("\n");
    message
}

pub fn events_path(id: &str) -> String {
    format!("/api/v1/uploads/{id}/events")
}

/// Opens the stream of upload `id` on the server at `base`, with a bearer
/// `credential` and a `Last-Event-ID`, if given.
pub async fn open_at(
    base: &str,
    id: &str,
    credential: Option<&str>,
    last_event_id: Option<&str>,
) -> Response {
    // No overall timeout: the stream is long-lived; each read is bounded.
    let client = reqwest::Client::new();
    let mut req = client.get(format!("{base}{}", events_path(id)));
    if let Some(credential) = credential {
        req = req.bearer_auth(credential);
    }
    if let Some(last) = last_event_id {
        req = req.header("Last-Event-ID", last);
    }
    tokio::time::timeout(EVENT_WAIT, req.send())
        .await
        .expect("the stream's head in time")
        .expect("the stream request")
}
