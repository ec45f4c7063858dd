//! Webhooks, signed as Standard Webhooks specifies: headers `webhook-id`
//! (the event's id, the same on every retry), `webhook-timestamp` (Unix
//! seconds of this attempt) and `webhook-signature` (`v1,` and the base64
//! of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with the secret's
//! bytes). Any 2xx answer is taken as delivered.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Filter, Sink, SinkError};
use crate::config::WebhookSettings;
use crate::events::{Event, EventKind};

pub struct WebhookSink {
    name: String,
    url: String,
    key: Vec<u8>,
    events: Filter,
    retry_for: Duration,
    client: reqwest::Client,
}

/// The key of a `whsec_<base64>` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("a webhook secret must start with whsec_")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "a webhook secret must be whsec_ followed by base64".to_string())?;
    // The spec asks for 24 to 64 bytes; a shorter key is too easy to guess.
    if key.len() < 24 || key.len() > 64 {
        return Err("a webhook secret's key must be 24 to 64 bytes".into());
    }
    Ok(key)
}

/// The `webhook-signature` value of `body` sent as event `id` at `timestamp`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// A client for calls into the application (webhooks, hooks): each bounded
/// by `timeout`, and a redirect is an answer, not followed.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// `request` with the Standard Webhooks headers of `body`, sent as message
/// `id` now, signed with `key`.
pub fn signed(
    request: reqwest::RequestBuilder,
    key: &[u8],
    id: &str,
    body: &str,
) -> reqwest::RequestBuilder {
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    request
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", sign(key, id, timestamp, body))
}

impl WebhookSink {
    pub fn new(index: usize, settings: &WebhookSettings) -> Result<Self, String> {
        let host = reqwest::Url::parse(&settings.url)
            .map_err(|e| format!("webhook url {:?}: {e}", settings.url))?;
        let client = client(settings.timeout)?;
        Ok(WebhookSink {
            name: format!("webhook{index}:{}", host.host_str().unwrap_or("?")),
            url: settings.url.clone(),
            key: secret_key(&settings.secret)?,
            events: Filter::of(&settings.events),
            retry_for: settings.retry_for,
            client,
        })
    }
}

impl Sink for WebhookSink {
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
        let request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json");
        let answer = signed(request, &self.key, &event.id.to_string(), body)
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| SinkError(format!("POST {}: {e}", self.url)))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(SinkError(format!(
                "POST {} answered {}",
                self.url,
                answer.status()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_checked() {
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(secret_key("whsec_not base64!").is_err());
        assert!(secret_key("whsec_c2hvcnQ=").is_err(), "too short");
    }
}
