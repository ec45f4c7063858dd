//! Redis Streams: each event is `XADD`ed to a stream capped with `MAXLEN ~`,
//! with fields `id`, `type`, `upload_id` and `event` (the JSON), so that
//! workers read it with a consumer group (`XREADGROUP`, `XACK`) and dedupe
//! on `id`. Any Redis will do, whichever state store tranche uses.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::{Filter, Sink, SinkError};
use crate::config::StreamSettings;
use crate::events::{Event, EventKind};

pub struct StreamSink {
    name: String,
    client: redis::Client,
    /// Connected at the first delivery, so that a Redis that is down at
    /// start-up delays events instead of stopping the server.
    conn: OnceCell<ConnectionManager>,
    stream: String,
    maxlen: u64,
    events: Filter,
    retry_for: Duration,
}

impl StreamSink {
    pub fn new(index: usize, settings: &StreamSettings) -> Result<Self, String> {
        let client = redis::Client::open(settings.redis_url.as_str())
            .map_err(|e| format!("stream redis_url: {e}"))?;
        Ok(StreamSink {
            name: format!("stream{index}:{}", settings.stream),
            client,
            conn: OnceCell::new(),
            stream: settings.stream.clone(),
            maxlen: settings.maxlen,
            events: Filter::of(&settings.events),
            retry_for: settings.retry_for,
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, SinkError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(5))
            .set_number_of_retries(1);
        self.conn
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .cloned()
            .map_err(|e| SinkError(format!("redis: {e}")))
    }
}

impl Sink for StreamSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, kind: EventKind) -> bool {
        self.events.wants(kind)
    }

    fn retry_for(&self) -> Duration {
        self.retry_for
    }

    async fn deliver(&self, event: &Event, body: &str) -> Result<(), SinkError> {
        let mut conn = self.connection().await?;
        redis::cmd("XADD")
            .arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.maxlen)
            .arg("*")
            .arg("id")
            .arg(event.id.to_string())
            .arg("type")
            .arg(event.kind.as_str())
            .arg("upload_id")
            .arg(event.upload_id.to_string())
            .arg("event")
            .arg(body)
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| SinkError(format!("XADD {}: {e}", self.stream)))
    }
}
