//! Blocking hooks: tranche asks the application, over HTTP, whether an
//! upload may go on, and waits for the answer. `pre_create` sees the create
//! request and who makes it, before anything is stored, and may refuse it
//! or set its filename, content type and metadata; `pre_finish` sees the
//! upload once its SHA-256 is verified, before it counts as completed, and
//! may refuse it.
//!
//! A 2xx answer allows, unless its JSON says `"allow": false`; a 4xx
//! refuses, with the application's message passed on to the client.
//! Anything else (a timeout, no connection, a 5xx, a body that cannot be
//! read) is the hook failing, and its `on_error` decides: fail closed
//! ([`Answer::Unavailable`]) or open (allowed, with a warning in the log).
//! Requests are signed as Standard Webhooks when the hook has a secret, as
//! events are. The core decides what an answer does to the upload.

use std::time::Duration;

use prometheus::IntCounterVec;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::config::{HookEndpoint, HookSettings, OnError};
use crate::events::sinks::webhook::{client, secret_key, signed};
use crate::events::EventUpload;
use crate::guards::auth::Access;
use crate::upload::UploadRecord;

/// The most of a hook's answer read: a verdict and a few fields.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The most of the application's message passed on to a client.
const MAX_MESSAGE_CHARS: usize = 1024;

/// Who makes a request, as a hook is told.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub kind: CallerKind,
    /// The API key's id or the create token's id (`jti`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The token's subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerKind {
    /// Authentication is off.
    Open,
    ApiKey,
    /// A create token (or an upload's own token).
    Token,
    /// No credentials (a front end that knows no caller).
    #[default]
    Anonymous,
}

impl Identity {
    pub fn of(access: &Access) -> Identity {
        let (kind, id) = match access {
            Access::Open => (CallerKind::Open, None),
            Access::Anonymous => (CallerKind::Anonymous, None),
            Access::Admin { key_id } => (CallerKind::ApiKey, Some(key_id.clone())),
            Access::Upload { .. } => (CallerKind::Token, None),
            // The issuer's own id for its token when it gave one.
            Access::Create { claims, token_id } => (
                CallerKind::Token,
                Some(claims.jti.clone().unwrap_or_else(|| token_id.clone())),
            ),
        };
        Identity {
            kind,
            id,
            sub: access.subject().map(str::to_owned),
        }
    }
}

/// What the application decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Go on, with these fields set (`pre_create` only).
    Allow(Overrides),
    Deny(Denial),
    /// The hook failed and fails closed (why is in the log).
    Unavailable,
}

/// Fields of the create the application set in its answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    /// What was wrong with a field of the wrong type, if one was.
    pub invalid: Option<String>,
}

impl Overrides {
    pub fn any(&self) -> bool {
        self.filename.is_some()
            || self.content_type.is_some()
            || self.metadata.is_some()
            || self.invalid.is_some()
    }
}

/// A refusal, as the application worded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    /// The status it asked for (its JSON `status`, or its answer's 4xx).
    pub status: Option<u16>,
    /// Its own code for why (`code`).
    pub reason: Option<String>,
    pub message: String,
}

/// The hooks the server calls; a missing one allows everything.
pub struct Hooks {
    pre_create: Option<Endpoint>,
    pre_finish: Option<Endpoint>,
    /// `tranche_hook_calls_total{hook, outcome}`.
    calls: IntCounterVec,
}

struct Endpoint {
    name: &'static str,
    url: String,
    key: Option<Vec<u8>>,
    on_error: OnError,
    timeout: Duration,
    client: reqwest::Client,
}

impl Hooks {
    pub fn new(settings: &HookSettings, calls: IntCounterVec) -> Result<Hooks, String> {
        let endpoint = |name: &'static str, hook: Option<&HookEndpoint>| {
            hook.map(|h| Endpoint::new(name, h)).transpose()
        };
        Ok(Hooks {
            pre_create: endpoint("pre_create", settings.pre_create.as_ref())?,
            pre_finish: endpoint("pre_finish", settings.pre_finish.as_ref())?,
            calls,
        })
    }

    /// Asks `pre_create` about the upload `record` is to start, made by
    /// `caller` (owning it as `owner`).
    pub async fn pre_create(&self, record: &UploadRecord, caller: &Identity) -> Answer {
        let Some(hook) = &self.pre_create else {
            return Answer::Allow(Overrides::default());
        };
        let body = json!({
            "type": "pre_create",
            "protocol": protocol(record),
            "caller": {
                "kind": caller.kind,
                "id": caller.id,
                "sub": caller.sub,
                "owner": record.owner,
            },
            "upload": {
                "id": record.id,
                "filename": record.filename,
                // Unknown yet for a tus upload with a deferred length.
                "size": (!record.sequential.as_ref().is_some_and(|s| s.length_deferred))
                    .then_some(record.size),
                "content_type": record.content_type,
                "sha256": record.expected_sha256,
                "metadata": record.metadata,
            },
        });
        self.ask(hook, &body).await
    }

    /// Asks `pre_finish` about `record`, whose bytes hash to `sha256`.
    /// Overrides in its answer are for the caller to ignore: the file is
    /// what it is.
    pub async fn pre_finish(&self, record: &UploadRecord, sha256: &str) -> Answer {
        let Some(hook) = &self.pre_finish else {
            return Answer::Allow(Overrides::default());
        };
        let body = json!({
            "type": "pre_finish",
            "protocol": protocol(record),
            "upload": EventUpload::of(record),
            "file": { "size": record.size, "sha256": sha256 },
            "owner": record.owner,
        });
        self.ask(hook, &body).await
    }

    /// Calls `hook` and applies its `on_error` to a failure.
    async fn ask(&self, hook: &Endpoint, body: &Value) -> Answer {
        let started = std::time::Instant::now();
        let result = hook.call(body).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let outcome = match &result {
            Ok(Answer::Deny(_)) => "deny",
            Ok(_) => "allow",
            Err(_) => "error",
        };
        self.calls.with_label_values(&[hook.name, outcome]).inc();
        match result {
            Ok(answer) => {
                tracing::debug!(hook = hook.name, outcome, elapsed_ms, "hook answered");
                answer
            }
            Err(problem) if hook.on_error == OnError::Allow => {
                tracing::warn!(hook = hook.name, url = %hook.url, %problem, elapsed_ms,
                    "hook failed; going on (on_error = \"allow\")");
                Answer::Allow(Overrides::default())
            }
            Err(problem) => {
                tracing::error!(hook = hook.name, url = %hook.url, %problem, elapsed_ms,
                    "hook failed; refusing (on_error = \"deny\")");
                Answer::Unavailable
            }
        }
    }
}

fn protocol(record: &UploadRecord) -> &'static str {
    if record.sequential.is_some() {
        "tus"
    } else {
        "v1"
    }
}

impl Endpoint {
    fn new(name: &'static str, settings: &HookEndpoint) -> Result<Endpoint, String> {
        let key = settings
            .secret
            .as_deref()
            .map(secret_key)
            .transpose()
            .map_err(|e| format!("hooks.{name}.secret: {e}"))?;
        let client = client(settings.timeout)?;
        Ok(Endpoint {
            name,
            url: settings.url.clone(),
            key,
            on_error: settings.on_error,
            timeout: settings.timeout,
            client,
        })
    }

    /// One POST; `Err` says how the hook failed (for the log).
    async fn call(&self, body: &Value) -> Result<Answer, String> {
        let body = body.to_string();
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json");
        if let Some(key) = &self.key {
            let id = format!("hook_{}", uuid::Uuid::new_v4().simple());
            request = signed(request, key, &id, &body);
        }
        let timed_out = |e: &reqwest::Error| {
            if e.is_timeout() {
                format!("no answer within {:?}", self.timeout)
            } else {
                format!("{e}")
            }
        };
        let mut answer = request.body(body).send().await.map_err(|e| timed_out(&e))?;
        let status = answer.status().as_u16();
        if !(200..300).contains(&status) && !(400..500).contains(&status) {
            return Err(format!("answered {status}"));
        }
        let mut bytes = Vec::new();
        while let Some(piece) = answer.chunk().await.map_err(|e| timed_out(&e))? {
            bytes.extend_from_slice(&piece);
            if bytes.len() > MAX_ANSWER_BYTES {
                return Err(format!("answered more than {MAX_ANSWER_BYTES} bytes"));
            }
        }
        interpret(status, &bytes)
    }
}

/// The verdict of an answer with `status` (2xx or 4xx) and `body`.
///
/// Fields are read one by one rather than as one typed struct: a refusal
/// whose `status` or `code` is odd is still a refusal (read as a failed
/// hook, a fail-open policy would let the upload through), and an override
/// of the wrong type is the application's mistake to name, not an outage.
fn interpret(status: u16, body: &[u8]) -> Result<Answer, String> {
    let blank = body.iter().all(u8::is_ascii_whitespace);
    if (200..300).contains(&status) {
        let reply = match blank {
            true => Map::new(),
            false => match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(reply)) => reply,
                Ok(_) => return Err(format!("answered {status} with JSON that is not an object")),
                Err(e) => {
                    return Err(format!(
                        "answered {status} with a body that is not JSON: {e}"
                    ))
                }
            },
        };
        let allow = match reply.get("allow") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(allow)) => *allow,
            Some(other) => return Err(format!("answered {status} with \"allow\": {other}")),
        };
        if allow {
            return Ok(Answer::Allow(overrides(&reply)));
        }
        return Ok(Answer::Deny(denial(&reply, None)));
    }
    // A refusal: its JSON's fields if it has them, else its text.
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(reply)) => Ok(Answer::Deny(denial(&reply, Some(status)))),
        _ if blank => Ok(Answer::Deny(denial(&Map::new(), Some(status)))),
        _ => Ok(Answer::Deny(Denial {
            status: Some(status),
            reason: None,
            message: message_or_default(Some(&String::from_utf8_lossy(body))),
        })),
    }
}

/// A refusal's fields; `status` is the answer's own (a 4xx), if any.
fn denial(reply: &Map<String, Value>, status: Option<u16>) -> Denial {
    let text = |name: &str| reply.get(name).and_then(Value::as_str);
    // A status that is no HTTP status at all is no status: the refusal's
    // default (403) rather than a failed hook.
    let asked = reply
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok());
    Denial {
        status: asked.or(status),
        reason: text("code").map(|c| bounded(c, 100)),
        message: message_or_default(text("message")),
    }
}

/// The create fields an allowing answer sets; one of a type no create
/// could carry is kept as a problem for the core to report.
fn overrides(reply: &Map<String, Value>) -> Overrides {
    let mut set = Overrides::default();
    let mut wrong = Vec::new();
    let mut text = |name: &'static str| match reply.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            wrong.push(format!("`{name}` must be a string"));
            None
        }
    };
    set.filename = text("filename");
    set.content_type = text("content_type");
    set.metadata = match reply.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => {
            wrong.push("`metadata` must be an object".into());
            None
        }
    };
    if !wrong.is_empty() {
        set.invalid = Some(wrong.join("; "));
    }
    set
}

fn message_or_default(message: Option<&str>) -> String {
    match message.map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => bounded(m, MAX_MESSAGE_CHARS),
        None => "the application refused this upload".into(),
    }
}

/// `text` without control characters, cut to `max` characters.
fn bounded(text: &str, max: usize) -> String {
    text.trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(status: Option<u16>, reason: Option<&str>, message: &str) -> Answer {
        Answer::Deny(Denial {
            status,
            reason: reason.map(str::to_owned),
            message: message.into(),
        })
    }

    #[test]
    fn answers_are_read_as_the_contract_says() {
        assert_eq!(
            interpret(204, b"").unwrap(),
            Answer::Allow(Overrides::default())
        );
        let set = interpret(
            200,
            br#"{"allow": true, "filename": "a.pdf", "metadata": {"k": 1}}"#,
        )
        .unwrap();
        let Answer::Allow(o) = set else {
            panic!("{set:?}")
        };
        assert_eq!(o.filename.as_deref(), Some("a.pdf"));
        assert_eq!(o.metadata.unwrap()["k"], 1);
        assert_eq!(
            interpret(
                200,
                br#"{"allow": false, "status": 402, "code": "plan", "message": " Upgrade "}"#
            )
            .unwrap(),
            deny(Some(402), Some("plan"), "Upgrade")
        );
        assert_eq!(
            interpret(200, br#"{"allow": false}"#).unwrap(),
            deny(None, None, "the application refused this upload")
        );
        assert_eq!(
            interpret(403, br#"{"message": "no videos on Fridays"}"#).unwrap(),
            deny(Some(403), None, "no videos on Fridays")
        );
        assert_eq!(
            interpret(451, b"  blocked\r\nhere \n").unwrap(),
            deny(Some(451), None, "blocked  here")
        );
        let long = "x".repeat(5000);
        let Answer::Deny(d) = interpret(400, long.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(d.message.chars().count(), MAX_MESSAGE_CHARS);
        assert!(interpret(200, b"<html>ok</html>").is_err());
        assert!(interpret(200, br#"{"allow": "yes"}"#).is_err());
    }

    #[test]
    fn odd_fields_leave_a_refusal_a_refusal_and_an_override_a_mistake() {
        for body in [
            &br#"{"allow": false, "status": 70000, "message": "no"}"#[..],
            br#"{"allow": false, "status": "402", "code": 7, "message": "no"}"#,
        ] {
            assert_eq!(interpret(200, body).unwrap(), deny(None, None, "no"));
        }
        assert_eq!(
            interpret(409, br#"{"message": ["a"], "status": -1}"#).unwrap(),
            deny(Some(409), None, "the application refused this upload")
        );
        let Answer::Allow(set) = interpret(200, br#"{"filename": 1, "metadata": []}"#).unwrap()
        else {
            panic!()
        };
        assert!(set.any());
        assert!(set.invalid.unwrap().contains("filename"));
    }

    #[test]
    fn identities_name_the_kind_of_credential() {
        let open = serde_json::to_value(Identity::of(&Access::Open)).unwrap();
        assert_eq!(open, json!({"kind": "open"}));
        let key = Identity::of(&Access::Admin {
            key_id: "ops".into(),
        });
        assert_eq!(
            serde_json::to_value(key).unwrap(),
            json!({"kind": "api_key", "id": "ops"})
        );
    }
}
