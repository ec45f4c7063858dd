//! `[events]`: where tranche sends the events of uploads (webhooks, Redis
//! Streams), and how its outbox and delivery behave.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::events::EventKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventSettings {
    /// Most events the outbox keeps undelivered; past it the oldest are
    /// dropped (a metric and an error in the log).
    pub outbox_max: u64,
    /// How often the delivery task looks for new events when it found none.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// At most one `upload.progress` per upload per this; 0: none.
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
    /// How often an idle SSE stream (`GET /api/v1/uploads/{id}/events`)
    /// sends a comment line, so that proxies keep the connection open.
    #[serde(with = "humantime_serde")]
    pub sse_heartbeat: Duration,
    /// Signed HTTP POSTs (Standard Webhooks).
    pub webhooks: Vec<WebhookSettings>,
    /// Redis Streams (`XADD`), for workers with consumer groups.
    pub streams: Vec<StreamSettings>,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            outbox_max: 100_000,
            poll_interval: Duration::from_millis(250),
            progress_interval: Duration::from_secs(1),
            sse_heartbeat: Duration::from_secs(15),
            webhooks: Vec::new(),
            streams: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub url: String,
    /// `whsec_` followed by the base64 of the key (Standard Webhooks).
    pub secret: String,
    /// Event types sent (e.g. `["upload.completed"]`); empty: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// How long one POST may take.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// How long an event is retried (exponential backoff) before it is
    /// given up as dead.
    #[serde(with = "humantime_serde", default = "default_retry_for")]
    pub retry_for: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// The Redis to `XADD` to (any Redis: the state store may be embedded).
    pub redis_url: String,
    #[serde(default = "default_stream")]
    pub stream: String,
    /// `MAXLEN ~`: about how many entries the stream keeps.
    #[serde(default = "default_maxlen")]
    pub maxlen: u64,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(with = "humantime_serde", default = "default_retry_for")]
    pub retry_for: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_retry_for() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_stream() -> String {
    "tranche:events".into()
}

fn default_maxlen() -> u64 {
    100_000
}

impl EventSettings {
    /// Whether any sink is configured: only then is the outbox kept.
    pub fn enabled(&self) -> bool {
        !self.webhooks.is_empty() || !self.streams.is_empty()
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.outbox_max == 0 {
            return Err("outbox_max must be at least 1".into());
        }
        if self.poll_interval.is_zero() {
            return Err("poll_interval must be longer than zero".into());
        }
        // Proxies close a connection idle for a minute or so (nginx's
        // proxy_read_timeout: 60 s by default).
        if self.sse_heartbeat.is_zero() || self.sse_heartbeat > Duration::from_secs(300) {
            return Err("sse_heartbeat must be longer than zero and at most 5 min".into());
        }
        let filters = self
            .webhooks
            .iter()
            .flat_map(|w| &w.events)
            .chain(self.streams.iter().flat_map(|s| &s.events));
        for name in filters {
            if EventKind::parse(name).is_none() {
                return Err(format!("unknown event type {name:?} in a filter"));
            }
        }
        for hook in &self.webhooks {
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return Err(format!("webhook url {:?} must be http(s)", hook.url));
            }
            crate::events::sinks::webhook::secret_key(&hook.secret)?;
        }
        for stream in &self.streams {
            if !stream.redis_url.starts_with("redis://")
                && !stream.redis_url.starts_with("rediss://")
            {
                return Err(format!(
                    "stream redis_url {:?} must be redis://",
                    stream.redis_url
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{CliOverrides, Settings};

    #[test]
    // The closure's error type is figment's, not ours to shrink.
    #[allow(clippy::result_large_err)]
    fn sinks_come_from_the_file_and_scalars_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "config.toml",
                r#"
                [events]
                [[events.webhooks]]
                url = "https://app.example.com/hook"
                secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
                events = ["upload.completed"]
                [[events.streams]]
                redis_url = "redis://127.0.0.1:6379"
                "#,
            )?;
            jail.set_env("TRANCHE_EVENTS__OUTBOX_MAX", "10");
            jail.set_env("TRANCHE_EVENTS__PROGRESS_INTERVAL", "5s");
            jail.set_env("TRANCHE_EVENTS__SSE_HEARTBEAT", "500ms");
            let s = Settings::load(None, &CliOverrides::default()).unwrap();
            let events = &s.events;
            assert!(events.enabled());
            assert_eq!(events.outbox_max, 10);
            assert_eq!(events.progress_interval.as_secs(), 5);
            assert_eq!(events.sse_heartbeat.as_millis(), 500);
            assert_eq!(events.webhooks[0].retry_for.as_secs(), 24 * 3600);
            assert_eq!(events.streams[0].stream, "tranche:events");
            let good = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
            for (secret, filter, why) in [
                ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "[]", "whsec_"),
                (good, r#"["upload.done"]"#, "upload.done"),
            ] {
                let hook = format!(
                    "[[events.webhooks]]\nurl = \"https://a.example\"\n\
                     secret = \"{secret}\"\nevents = {filter}\n"
                );
                jail.create_file("config.toml", &hook)?;
                let err = Settings::load(None, &CliOverrides::default()).unwrap_err();
                assert!(err.to_string().contains(why), "{hook}: {err}");
            }
            for heartbeat in ["0s", "10min"] {
                jail.set_env("TRANCHE_EVENTS__SSE_HEARTBEAT", heartbeat);
                jail.create_file("config.toml", "")?;
                let err = Settings::load(None, &CliOverrides::default()).unwrap_err();
                assert!(
                    err.to_string().contains("sse_heartbeat"),
                    "{heartbeat}: {err}"
                );
            }
            Ok(())
        });
    }
}
