//! Conformance battery for the blocking hooks, written from docs/API.md
//! ("Hooks") and issue 11: every row of the answer table, both `on_error`
//! policies, API v1 and tus creates (deferred length, concatenation),
//! idempotent replays, dedup, the caller's identity, signatures checked
//! with the documented scheme, and `pre_finish` refusals and outages. The
//! application is a scripted actix-web server on a loopback port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tranche::config::{HookEndpoint, OnError, WebhookSettings};
use tranche::guards::auth::Claims;

use crate::helpers::*;
use crate::tus_client::*;

const SECRET_BYTES: &[u8] = b"spec battery hook secret, 40 bytes long!";

fn secret() -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET_BYTES);
    format!("whsec_{b64}")
}

/// What the application answers on one path.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    content_type: &'static str,
    delay: Duration,
    location: Option<String>,
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.to_owned(),
        content_type: "application/json",
        delay: Duration::ZERO,
        location: None,
    }
}

/// A request the application received.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    headers: HashMap<String, String>,
    raw: Vec<u8>,
    pub(crate) json: Value,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    /// Checked as docs/API.md's Python recipe does: HMAC-SHA256 keyed with
    /// the secret's bytes over `{id}.{timestamp}.` and the raw body, any of
    /// the space-separated signatures.
    fn signature_verifies(&self) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET_BYTES).unwrap();
        mac.update(self.header("webhook-id").as_bytes());
        mac.update(b".");
        mac.update(self.header("webhook-timestamp").as_bytes());
        mac.update(b".");
        mac.update(&self.raw);
        let b64 = base64::engine::general_purpose::STANDARD;
        let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
        self.header("webhook-signature")
            .split(' ')
            .any(|s| s == expected)
    }
}

#[derive(Clone, Default)]
struct Scripted {
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    received: Arc<Mutex<Vec<(String, Received)>>>,
}

/// The application: each path answers as scripted (204 until then).
pub(crate) struct Application {
    scripted: Scripted,
    port: u16,
    handle: actix_web::dev::ServerHandle,
}

async fn serve(req: HttpRequest, body: web::Bytes, scripted: web::Data<Scripted>) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let received = Received {
        headers,
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: body.to_vec(),
    };
    let path = req.path().to_owned();
    scripted
        .received
        .lock()
        .unwrap()
        .push((path.clone(), received));
    let Some(r) = scripted.replies.lock().unwrap().get(&path).cloned() else {
        return HttpResponse::NoContent().finish();
    };
    tokio::time::sleep(r.delay).await;
    let mut answer = HttpResponse::build(actix_web::http::StatusCode::from_u16(r.status).unwrap());
    if let Some(location) = &r.location {
        answer.insert_header(("location", location.clone()));
    }
    answer.content_type(r.content_type).body(r.body)
}

impl Application {
    pub(crate) fn start() -> Application {
        let scripted = Scripted::default();
        let data = web::Data::new(scripted.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(serve))
        })
        .workers(2)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Application {
            scripted,
            port,
            handle,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn set(&self, path: &str, r: Reply) {
        self.scripted
            .replies
            .lock()
            .unwrap()
            .insert(path.to_owned(), r);
    }

    pub(crate) fn answer(&self, path: &str, status: u16, body: &str) {
        self.set(path, reply(status, body));
    }

    pub(crate) fn received(&self, path: &str) -> Vec<Received> {
        let all = self.scripted.received.lock().unwrap();
        all.iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .collect()
    }

    fn count(&self, path: &str) -> usize {
        self.received(path).len()
    }

    fn last(&self, path: &str) -> Received {
        self.received(path).pop().expect("the hook was called")
    }

    pub(crate) fn hook(&self, path: &str, on_error: OnError) -> HookEndpoint {
        HookEndpoint {
            url: self.url(path),
            timeout: Duration::from_millis(700),
            on_error,
            secret: Some(secret()),
        }
    }

    pub(crate) async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

fn token_for(sub: &str, jti: &str) -> String {
    test_tokens()
        .mint(&Claims {
            exp: tranche::guards::auth::token::unix_now() + 600,
            sub: Some(sub.into()),
            jti: Some(jti.into()),
            ..Claims::default()
        })
        .unwrap()
}

fn small_create() -> Value {
    json!({"filename": "client.bin", "size": 100, "content_type": "application/pdf",
           "metadata": {"from": "client"}})
}

/// Every failure the table lists, each as the application would commit it.
fn failures(app: &Application) -> Vec<(&'static str, Reply, Option<String>)> {
    let big_allow = format!(r#"{{"allow": true, "pad": "{}"}}"#, "x".repeat(70 * 1024));
    let big_deny = format!(r#"{{"message": "{}"}}"#, "x".repeat(70 * 1024));
    let slow = Reply {
        delay: Duration::from_secs(3),
        ..reply(204, "")
    };
    let redirect = Reply {
        location: Some(app.url("/allow")),
        ..reply(307, "")
    };
    let refused = format!("http://127.0.0.1:{}/pre-create", free_port());
    vec![
        ("timeout", slow, None),
        ("connection refused", reply(204, ""), Some(refused)),
        ("500", reply(500, r#"{"allow": false}"#), None),
        ("503", reply(503, ""), None),
        ("307", redirect, None),
        ("302 empty", reply(302, ""), None),
        (
            "html",
            Reply {
                content_type: "text/html",
                ..reply(200, "<html>ok</html>")
            },
            None,
        ),
        ("garbage JSON", reply(200, r#"{"allow": tru"#), None),
        ("a JSON array", reply(200, "[true]"), None),
        ("a JSON string", reply(200, "\"allow\""), None),
        ("a 2xx over 64 KiB", reply(200, &big_allow), None),
        ("a 4xx over 64 KiB", reply(403, &big_deny), None),
    ]
}

#[tokio::test]
async fn a_failed_pre_create_is_a_503_when_closed_and_ignored_when_open() {
    bounded_for(Duration::from_secs(120), async {
        let application = Application::start();
        for (what, r, url) in failures(&application) {
            application.set("/pre-create", r);
            for on_error in [OnError::Deny, OnError::Allow] {
                let mut hook = application.hook("/pre-create", on_error);
                if let Some(url) = &url {
                    hook.url = url.clone();
                }
                let app = spawn_app_with(|s| s.hooks.pre_create = Some(hook)).await;
                let started = Instant::now();
                let resp = app.create(small_create()).await;
                assert!(
                    started.elapsed() < Duration::from_millis(2500),
                    "{what}: waited {:?}",
                    started.elapsed()
                );
                if on_error == OnError::Deny {
                    let retry = resp.headers().get("retry-after").cloned();
                    let body = assert_error(resp, 503, "hook_unavailable").await;
                    assert_eq!(body["hook"], "pre_create", "{what}: {body}");
                    assert!(retry.is_some(), "{what}: 503 without Retry-After");
                } else {
                    let view = expect_json(resp, 201).await;
                    // Nothing the failed answer said was applied.
                    assert_eq!(view["filename"], "client.bin", "{what}: {view}");
                    assert_eq!(view["metadata"], json!({"from": "client"}), "{what}");
                }
                let text = app.metrics_text().await;
                let errors =
                    metric_value(&text, "tranche_hook_calls_total", Some("outcome=\"error\""));
                assert_eq!(errors, Some(1.0), "{what}: {text}");
                app.stop().await;
            }
        }
        // The redirect was not followed.
        assert_eq!(application.count("/allow"), 0);
        application.stop().await;
    })
    .await;
}

#[tokio::test]
async fn every_allowing_answer_allows_and_every_refusal_refuses_as_the_table_says() {
    bounded(async {
        let application = Application::start();
        let app = spawn_app_with(|s| {
            s.hooks.pre_create = Some(application.hook("/pre-create", OnError::Allow));
        })
        .await;
        for (status, body) in [
            (204, ""),
            (200, ""),
            (200, " \r\n "),
            (200, "{}"),
            (200, r#"{"allow": true}"#),
            (201, r#"{"allow": true, "message": "fine", "extra": [1]}"#),
            (202, r#"{"allow": true, "filename": null, "metadata": null}"#),
        ] {
            application.answer("/pre-create", status, body);
            let view = expect_json(app.create(small_create()).await, 201).await;
            assert_eq!(view["filename"], "client.bin", "{status} {body:?}: {view}");
            assert_eq!(view["content_type"], "application/pdf");
            assert_eq!(view["metadata"], json!({"from": "client"}));
        }

        // Refusals, even on a fail-open hook: (answer) -> (status, message, reason).
        let default = "the application refused this upload";
        let cases: Vec<(u16, String, u16, &str, Option<&str>)> = vec![
            (
                200,
                r#"{"allow": false, "message": "Upgrade your plan", "status": 402, "code": "plan_limit"}"#.into(),
                402,
                "Upgrade your plan",
                Some("plan_limit"),
            ),
            (200, r#"{"allow": false}"#.into(), 403, default, None),
            (200, r#"{"allow": false, "status": 451, "message": "m"}"#.into(), 451, "m", None),
            (403, r#"{"message": "no Fridays", "code": "calendar"}"#.into(), 403, "no Fridays", Some("calendar")),
            (403, r#"{"message": "as 409", "status": 409}"#.into(), 409, "as 409", None),
            (422, "  plain text refusal \n".into(), 422, "plain text refusal", None),
            (400, "".into(), 400, default, None),
            (404, "{}".into(), 404, default, None),
            (429, r#"{"message": "slow down"}"#.into(), 429, "slow down", None),
            // Statuses that would mislead a client become 403.
            (401, r#"{"message": "who?"}"#.into(), 403, "who?", None),
            (407, "proxy".into(), 403, "proxy", None),
            (200, r#"{"allow": false, "status": 401, "message": "a"}"#.into(), 403, "a", None),
        ];
        for (status, body, want, message, reason) in cases {
            application.answer("/pre-create", status, &body);
            let got = assert_error(app.create(small_create()).await, want, "upload_rejected").await;
            assert_eq!(got["message"], message, "{status} {body}: {got}");
            match reason {
                Some(reason) => assert_eq!(got["reason"], reason, "{status} {body}: {got}"),
                None => assert!(got.get("reason").is_none(), "{status} {body}: {got}"),
            }
        }

        // A long message is cut to 1 024 characters, control characters blanked.
        let long = format!("bad\u{7}bell {}", "é".repeat(3000));
        application.answer("/pre-create", 403, &json!({"message": long}).to_string());
        let got = assert_error(app.create(small_create()).await, 403, "upload_rejected").await;
        let text = got["message"].as_str().unwrap();
        assert_eq!(text.chars().count(), 1024, "{text}");
        assert!(text.starts_with("bad bell "), "{text}");
        assert!(!text.chars().any(char::is_control), "{text}");
        application.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_refusal_with_an_odd_status_or_odd_fields_is_still_a_refusal() {
    bounded(async {
        let application = Application::start();
        // Fail open: a refusal misread as a failed hook would let it through.
        let app = spawn_app_with(|s| {
            s.hooks.pre_create = Some(application.hook("/pre-create", OnError::Allow));
        })
        .await;
        for body in [
            r#"{"allow": false, "status": 200, "message": "no"}"#,
            r#"{"allow": false, "status": 302, "message": "no"}"#,
            r#"{"allow": false, "status": 500, "message": "no"}"#,
            r#"{"allow": false, "status": 99, "message": "no"}"#,
            r#"{"allow": false, "status": 70000, "message": "no"}"#,
            r#"{"allow": false, "status": -403, "message": "no"}"#,
            r#"{"allow": false, "status": "402", "message": "no"}"#,
            r#"{"allow": false, "status": 402.5, "message": "no"}"#,
            r#"{"allow": false, "code": 17, "message": "no"}"#,
        ] {
            application.answer("/pre-create", 200, body);
            let got = assert_error(app.create(small_create()).await, 403, "upload_rejected").await;
            assert_eq!(got["message"], "no", "{body}: {got}");
        }
        // A message that is not text is no message.
        application.answer(
            "/pre-create",
            200,
            r#"{"allow": false, "message": {"x": 1}}"#,
        );
        assert_error(app.create(small_create()).await, 403, "upload_rejected").await;
        application.answer("/pre-create", 409, r#"{"message": ["a"], "status": "x"}"#);
        assert_error(app.create(small_create()).await, 409, "upload_rejected").await;
        application.stop().await;
    })
    .await;
}

#[tokio::test]
async fn overrides_are_applied_and_checked_as_the_clients_own_fields() {
    bounded(async {
        let application = Application::start();
        let app = spawn_app_with(|s| {
            s.hooks.pre_create = Some(application.hook("/pre-create", OnError::Allow));
            s.limits.allowed_content_types = vec!["application/pdf".into(), "image/*".into()];
        })
        .await;

        application.answer(
            "/pre-create",
            200,
            r#"{"filename": "Résumé 2026 ✓.pdf", "content_type": "image/png",
                "metadata": {"tenant": 7, "tags": ["a"], "nested": {"ok": true}}}"#,
        );
        let view = expect_json(app.create(small_create()).await, 201).await;
        assert_eq!(view["filename"], "Résumé 2026 ✓.pdf", "{view}");
        assert_eq!(view["content_type"], "image/png", "{view}");
        let set = json!({"tenant": 7, "tags": ["a"], "nested": {"ok": true}});
        assert_eq!(view["metadata"], set, "replaces the client's: {view}");
        let id = view["id"].as_str().unwrap();
        assert_eq!(app.status_json(id).await["metadata"], set);
        // An empty object empties it.
        application.answer("/pre-create", 200, r#"{"metadata": {}}"#);
        let view = expect_json(app.create(small_create()).await, 201).await;
        assert_eq!(view["metadata"], json!({}), "{view}");

        // Bad ones: 400 invalid_request naming the hook, on a fail-open hook too.
        for body in [
            r#"{"filename": ""}"#,
            r#"{"filename": "nul\u0000.pdf"}"#,
            r#"{"filename": "line\nbreak"}"#,
            r#"{"filename": 12}"#,
            r#"{"content_type": "not a type"}"#,
            r#"{"content_type": "video/mp4"}"#,
            r#"{"content_type": ["image/png"]}"#,
            r#"{"metadata": "tenant=7"}"#,
            r#"{"metadata": [1, 2]}"#,
            r#"{"metadata": 5}"#,
            r#"{"allow": true, "filename": "ok.pdf", "metadata": true}"#,
            &json!({"filename": "n".repeat(1025)}).to_string(),
        ] {
            application.answer("/pre-create", 200, body);
            let got = assert_error(app.create(small_create()).await, 400, "invalid_request").await;
            assert!(
                got["message"].as_str().unwrap().contains("pre_create"),
                "{body}: {got}"
            );
        }
        application.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_caller_is_named_and_every_call_is_signed() {
    bounded(async {
        let application = Application::start();
        let app = spawn_with_auth(|s| {
            s.hooks.pre_create = Some(application.hook("/pre-create", OnError::Deny));
            s.hooks.pre_finish = Some(application.hook("/pre-finish", OnError::Deny));
        })
        .await;
        let create = |bearer: String| {
            app.request(reqwest::Method::POST, "/api/v1/uploads")
                .bearer_auth(bearer)
                .json(&json!({"filename": "c.bin", "size": 5}))
                .send()
        };

        expect_json(
            create(token_for("alice", "jti-alice-1")).await.unwrap(),
            201,
        )
        .await;
        let caller = application.last("/pre-create").json["caller"].clone();
        assert_eq!(caller["kind"], "token", "{caller}");
        assert_eq!(caller["sub"], "alice", "{caller}");
        assert_eq!(caller["id"], "jti-alice-1", "{caller}");
        assert_eq!(caller["owner"], "sub:alice", "{caller}");

        let view = expect_json(create(TEST_API_KEY.into()).await.unwrap(), 201).await;
        let caller = application.last("/pre-create").json["caller"].clone();
        assert_eq!(caller["kind"], "api_key", "{caller}");
        let key_id = caller["id"].as_str().expect("the key's id").to_owned();
        assert!(!key_id.is_empty(), "{caller}");
        assert!(
            !caller.to_string().contains(TEST_API_KEY),
            "the key itself never goes to the application: {caller}"
        );
        assert!(
            caller.get("sub").is_none() || caller["sub"].is_null(),
            "{caller}"
        );

        // No credentials: refused before the application is asked.
        let before = application.count("/pre-create");
        let anonymous = app
            .request(reqwest::Method::POST, "/api/v1/uploads")
            .json(&json!({"filename": "c.bin", "size": 5}))
            .send()
            .await
            .unwrap();
        assert_error(anonymous, 401, "unauthorized").await;
        assert_eq!(application.count("/pre-create"), before);

        // pre_finish of the API key's upload, finished with its upload token.
        let id = view["id"].as_str().unwrap();
        let token = view["upload_token"].as_str().unwrap();
        let put = app
            .request(reqwest::Method::PUT, &chunk_url(id, 0))
            .bearer_auth(token)
            .body(&b"hello"[..])
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
        let done = app
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/uploads/{id}/complete"),
            )
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        expect_json(done, 200).await;
        let finish = application.last("/pre-finish");
        assert_eq!(
            finish.json["owner"],
            format!("key:{key_id}"),
            "{}",
            finish.json
        );
        assert_eq!(finish.json["file"]["sha256"], sha256_hex(b"hello"));

        // Every call signed as documented, each with a new id, timestamped now.
        let mut calls = application.received("/pre-create");
        calls.extend(application.received("/pre-finish"));
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut ids = std::collections::HashSet::new();
        for call in &calls {
            assert!(call.signature_verifies(), "{call:?}");
            assert!(ids.insert(call.header("webhook-id").to_owned()), "{call:?}");
            let ts: i64 = call.header("webhook-timestamp").parse().unwrap();
            assert!((now - ts).abs() < 60, "{ts} vs {now}");
            assert!(call.header("content-type").starts_with("application/json"));
        }
        assert_eq!(calls.len(), 3);
        application.stop().await;
    })
    .await;
}

#[tokio::test]
async fn replays_and_dedup_ask_pre_create_as_documented() {
    bounded(async {
        let application = Application::start();
        let app = spawn_app_with(|s| {
            s.hooks.pre_create = Some(application.hook("/pre-create", OnError::Deny));
            s.hooks.pre_finish = Some(application.hook("/pre-finish", OnError::Deny));
        })
        .await;
        let keyed = |key: &'static str, body: Value| {
            app.request(reqwest::Method::POST, "/api/v1/uploads")
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
        };

        // A refused create stored nothing: its retry is asked again.
        application.answer("/pre-create", 403, r#"{"message": "not yet"}"#);
        let refused = keyed("spec-key-1", small_create()).await.unwrap();
        assert_error(refused, 403, "upload_rejected").await;
        application.set(
            "/pre-create",
            Reply {
                delay: Duration::from_secs(3),
                ..reply(204, "")
            },
        );
        let unavailable = keyed("spec-key-1", small_create()).await.unwrap();
        assert_error(unavailable, 503, "hook_unavailable").await;
        application.answer("/pre-create", 204, "");
        let first = expect_json(keyed("spec-key-1", small_create()).await.unwrap(), 201).await;
        assert_eq!(application.count("/pre-create"), 3);
        // The stored answer is replayed without asking, even if it would now refuse.
        application.answer("/pre-create", 403, r#"{"message": "changed my mind"}"#);
        let again = expect_json(keyed("spec-key-1", small_create()).await.unwrap(), 201).await;
        assert_eq!(again["id"], first["id"]);
        assert_eq!(application.count("/pre-create"), 3);

        // Dedup: asked (with the sha256), refusable, and no pre_finish.
        application.answer("/pre-create", 204, "");
        let data = test_data(3000, 11);
        let stored = app
            .create(
                json!({"filename": "d.bin", "size": 3000, "chunk_size": 1024,
                           "sha256": sha256_hex(&data)}),
            )
            .await;
        let stored = expect_json(stored, 201).await;
        let stored_id = stored["id"].as_str().unwrap();
        app.send_chunks(stored_id, &data, 1024, 0..3).await;
        expect_json(app.complete(stored_id).await, 200).await;
        assert_eq!(application.count("/pre-finish"), 1);
        let same = json!({"filename": "again.bin", "size": 3000, "sha256": sha256_hex(&data)});

        application.answer("/pre-create", 403, r#"{"message": "no duplicates"}"#);
        let got = assert_error(app.create(same.clone()).await, 403, "upload_rejected").await;
        assert_eq!(got["message"], "no duplicates");
        assert_eq!(
            application.last("/pre-create").json["upload"]["sha256"],
            sha256_hex(&data)
        );

        application.answer("/pre-create", 200, r#"{"filename": "named-by-app.bin"}"#);
        let dedup = expect_json(app.create(same).await, 201).await;
        assert_eq!(dedup["status"], "completed", "{dedup}");
        assert_eq!(dedup["filename"], "named-by-app.bin", "{dedup}");
        assert_ne!(dedup["id"], stored["id"]);
        assert_eq!(
            application.count("/pre-finish"),
            1,
            "dedup asks no pre_finish"
        );
        let copy = app.download(dedup["id"].as_str().unwrap()).await;
        assert_eq!(&copy.bytes().await.unwrap()[..], &data[..]);
        application.stop().await;
    })
    .await;
}

#[tokio::test]
async fn tus_creates_are_asked_deferred_and_concatenated_ones_included() {
    bounded(async {
        let application = Application::start();
        let app = spawn_app_with(|s| {
            s.hooks.pre_create = Some(application.hook("/pre-create", OnError::Deny));
            s.hooks.pre_finish = Some(application.hook("/pre-finish", OnError::Deny));
        })
        .await;
        let tus = Tus::new(&app);

        // Deferred length: asked with a null size, refusable, overridable.
        application.answer(
            "/pre-create",
            402,
            r#"{"message": "pay first", "code": "plan"}"#,
        );
        let refused = tus
            .post(&[("Upload-Defer-Length", "1")])
            .await
            .expect(&[402]);
        let body: Value = serde_json::from_slice(&refused.body).unwrap();
        assert_eq!(body["error"], "upload_rejected", "{body}");
        assert_eq!(body["message"], "pay first", "{body}");
        let asked = application.last("/pre-create").json;
        assert_eq!(asked["protocol"], "tus", "{asked}");
        assert!(asked["upload"]["size"].is_null(), "{asked}");

        application.answer("/pre-create", 200, r#"{"filename": "deferred.txt"}"#);
        let url = tus.location(
            &tus.post(&[("Upload-Defer-Length", "1")])
                .await
                .expect(&[201]),
        );
        let patched = tus
            .patch_request(&url, 0, b"deferred")
            .header("Upload-Length", "8")
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), 204);
        let view = tus.assert_file(&url, b"deferred").await;
        assert_eq!(view["filename"], "deferred.txt", "{view}");
        assert_eq!(application.last("/pre-finish").json["protocol"], "tus");

        // Concatenation: partial uploads and the final one are all asked.
        application.answer("/pre-create", 204, "");
        let mut partials = Vec::new();
        for piece in [&b"con"[..], &b"cat"[..]] {
            let length = piece.len().to_string();
            let answer = tus
                .post(&[("Upload-Length", &length), ("Upload-Concat", "partial")])
                .await
                .expect(&[201]);
            let url = tus.location(&answer);
            tus.patch_ok(&url, 0, piece).await;
            partials.push(url);
        }
        let concat = format!("final;{} {}", partials[0].path(), partials[1].path());
        let creates = application.count("/pre-create");
        application.answer("/pre-create", 403, r#"{"message": "no finals"}"#);
        let refused = tus.post(&[("Upload-Concat", &concat)]).await.expect(&[403]);
        let body: Value = serde_json::from_slice(&refused.body).unwrap();
        assert_eq!(body["message"], "no finals", "{body}");
        assert_eq!(application.count("/pre-create"), creates + 1);
        assert_eq!(application.last("/pre-create").json["protocol"], "tus");

        // The final upload's pre_finish may refuse it: it fails, never 500.
        application.answer("/pre-create", 204, "");
        application.answer(
            "/pre-finish",
            200,
            r#"{"allow": false, "message": "no cats"}"#,
        );
        let finishes = application.count("/pre-finish");
        let answer = tus.post(&[("Upload-Concat", &concat)]).await;
        assert!(answer.status < 500, "{answer}");
        let final_id = match answer.status {
            201 => upload_id(&tus.location(&answer)),
            _ => {
                let body: Value = serde_json::from_slice(&answer.body).unwrap();
                assert_eq!(body["error"], "upload_rejected", "{body}");
                application.last("/pre-finish").json["upload"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let view = loop {
            let (_, view) = tus.view(&final_id).await;
            if view["status"] == "failed" {
                break view;
            }
            assert!(Instant::now() < deadline, "not failed: {view}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(view["error"]["error"], "upload_rejected", "{view}");
        assert_eq!(view["error"]["message"], "no cats", "{view}");
        assert!(application.count("/pre-finish") > finishes);
        let got = app.download(&final_id).await;
        assert_eq!(got.status(), 404);

        // Allowed, the same partials make a final upload of their bytes.
        application.answer("/pre-finish", 204, "");
        let answer = tus.post(&[("Upload-Concat", &concat)]).await.expect(&[201]);
        let url = tus.location(&answer);
        tus.assert_file(&url, b"concat").await;
        application.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_pre_finish_refusal_fails_the_upload_for_good() {
    bounded(async {
        let application = Application::start();
        let app = spawn_app_with(|s| {
            s.hooks.pre_finish = Some(application.hook("/pre-finish", OnError::Allow));
            s.events.webhooks = vec![WebhookSettings {
                url: application.url("/events"),
                secret: secret(),
                events: vec!["upload.failed".into(), "upload.completed".into()],
                timeout: Duration::from_secs(5),
                retry_for: Duration::from_secs(600),
            }];
        })
        .await;
        let data = test_data(5000, 12);
        application.answer(
            "/pre-finish",
            409,
            r#"{"message": "malware: Eicar-Test-Signature", "code": "av", "status": 409}"#,
        );
        let created = app
            .create(json!({"filename": "v.bin", "size": 5000, "chunk_size": 1024,
                           "sha256": sha256_hex(&data), "metadata": {"k": "v"}}))
            .await;
        let id = expect_json(created, 201).await["id"].as_str().unwrap().to_owned();
        app.send_chunks(&id, &data, 1024, 0..5).await;
        // Refused at finish: always 422, whatever status the application asked.
        let first = assert_error(app.complete(&id).await, 422, "upload_rejected").await;
        assert_eq!(first["message"], "malware: Eicar-Test-Signature", "{first}");
        let asked = application.last("/pre-finish").json;
        assert_eq!(asked["file"]["sha256"], sha256_hex(&data), "{asked}");
        assert_eq!(asked["file"]["size"], 5000, "{asked}");
        assert_eq!(asked["upload"]["metadata"], json!({"k": "v"}), "{asked}");

        let view = app.status_json(&id).await;
        assert_eq!(view["status"], "failed", "{view}");
        assert_eq!(view["error"]["error"], "upload_rejected", "{view}");
        assert_eq!(view["error"]["message"], "malware: Eicar-Test-Signature");
        assert!(view.get("file").is_none() || view["file"].is_null(), "{view}");

        // Retried (even once the application would allow): the same answer, not asked again.
        application.answer("/pre-finish", 204, "");
        let calls = application.count("/pre-finish");
        for _ in 0..2 {
            let again = assert_error(app.complete(&id).await, 422, "upload_rejected").await;
            assert_eq!(again["message"], first["message"]);
        }
        assert_eq!(application.count("/pre-finish"), calls);
        assert_eq!(app.download(&id).await.status(), 404);
        // No more chunks for it either, and still no 5xx.
        let resend = app.put_chunk(&id, 0, data[..1024].to_vec()).await;
        assert!(resend.status().is_client_error(), "{}", resend.status());

        let deadline = Instant::now() + Duration::from_secs(20);
        let event = loop {
            let found = application
                .received("/events")
                .into_iter()
                .find(|e| e.json["upload_id"] == id.as_str());
            if let Some(e) = found {
                break e;
            }
            assert!(Instant::now() < deadline, "no event for {id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(event.signature_verifies());
        assert_eq!(event.json["type"], "upload.failed", "{}", event.json);
        let reason = &event.json["data"]["reason"];
        assert_eq!(reason["error"], "upload_rejected", "{reason}");
        assert_eq!(reason["message"], "malware: Eicar-Test-Signature", "{reason}");
        assert_eq!(reason["sha256"], sha256_hex(&data), "{reason}");
        assert!(
            !application
                .received("/events")
                .iter()
                .any(|e| e.json["type"] == "upload.completed" && e.json["upload_id"] == id.as_str()),
            "a refused upload never completes"
        );

        // pre_finish's overrides are ignored: the file is what it is.
        application.answer("/pre-finish", 200, r#"{"filename": "other.bin", "metadata": {}}"#);
        let done = app.upload_all(&test_data(2000, 13), 1024).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["filename"], "test.bin", "{done}");
        application.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_unavailable_pre_finish_keeps_the_upload_until_it_answers() {
    bounded_for(Duration::from_secs(60), async {
        let application = Application::start();
        let app = spawn_app_with(|s| {
            s.hooks.pre_finish = Some(application.hook("/pre-finish", OnError::Deny));
        })
        .await;
        let data = test_data(3000, 14);
        let created = app.create_for(&data, 1024).await;
        let id = created["id"].as_str().unwrap().to_owned();
        app.send_chunks(&id, &data, 1024, 0..3).await;

        for failure in [
            reply(500, "oops"),
            reply(200, "not json"),
            Reply {
                delay: Duration::from_secs(3),
                ..reply(204, "")
            },
        ] {
            application.set("/pre-finish", failure);
            let resp = app.complete(&id).await;
            assert!(resp.headers().contains_key("retry-after"));
            let body = assert_error(resp, 503, "hook_unavailable").await;
            assert_eq!(body["hook"], "pre_finish", "{body}");
            let view = app.status_json(&id).await;
            assert_eq!(view["status"], "assembling", "{view}");
            assert_eq!(app.download(&id).await.status(), 404);
        }

        // Once it answers, a poll finishes the upload (no complete needed).
        application.answer("/pre-finish", 204, "");
        let deadline = Instant::now() + Duration::from_secs(20);
        let view = loop {
            let view = app.status_json(&id).await;
            if view["status"] != "assembling" {
                break view;
            }
            assert!(Instant::now() < deadline, "still assembling: {view}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(view["status"], "completed", "{view}");
        assert_eq!(view["file"]["sha256"], sha256_hex(&data), "{view}");
        let done = expect_json(app.complete(&id).await, 200).await;
        assert_eq!(done["file"], view["file"]);
        let bytes = app.download(&id).await.bytes().await.unwrap();
        assert_eq!(&bytes[..], &data[..]);

        // tus: the last PATCH gets the 503; its HEAD asks again.
        application.answer("/pre-finish", 503, "");
        let tus = Tus::new(&app);
        let url = tus.create(4, None).await;
        let answer = tus.patch(&url, 0, b"tail").await.expect(&[503]);
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(body["error"], "hook_unavailable", "{body}");
        application.answer("/pre-finish", 204, "");
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert_eq!(head.offset(), Some(4), "{head}");
        tus.assert_file(&url, b"tail").await;
        application.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_pre_finish_timeout_fails_open_when_configured() {
    bounded(async {
        let application = Application::start();
        application.set(
            "/pre-finish",
            Reply {
                delay: Duration::from_secs(3),
                ..reply(403, "")
            },
        );
        let app = spawn_app_with(|s| {
            s.hooks.pre_finish = Some(application.hook("/pre-finish", OnError::Allow));
        })
        .await;
        let data = test_data(2500, 15);
        let started = Instant::now();
        let done = app.upload_all(&data, 1024).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(done["status"], "completed", "{done}");
        let bytes = app
            .download(done["id"].as_str().unwrap())
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(&bytes[..], &data[..]);
        application.stop().await;
    })
    .await;
}

#[tokio::test]
async fn keyed_creates_racing_a_slow_hook_make_one_upload() {
    bounded(async {
        let application = Application::start();
        application.set(
            "/pre-create",
            Reply {
                delay: Duration::from_millis(400),
                ..reply(204, "")
            },
        );
        let app = spawn_app_with(|s| {
            s.hooks.pre_create = Some(application.hook("/pre-create", OnError::Deny));
        })
        .await;
        let creates = (0..4).map(|_| {
            app.request(reqwest::Method::POST, "/api/v1/uploads")
                .header("Idempotency-Key", "spec-race")
                .json(&small_create())
                .send()
        });
        let mut ids = std::collections::HashSet::new();
        for resp in futures::future::join_all(creates).await {
            let resp = resp.unwrap();
            match resp.status().as_u16() {
                201 => {
                    ids.insert(expect_json(resp, 201).await["id"].to_string());
                }
                _ => {
                    assert_error(resp, 409, "create_in_progress").await;
                }
            }
        }
        // Retried after the race, every one gets the one upload.
        let again = app
            .request(reqwest::Method::POST, "/api/v1/uploads")
            .header("Idempotency-Key", "spec-race")
            .json(&small_create())
            .send()
            .await
            .unwrap();
        ids.insert(expect_json(again, 201).await["id"].to_string());
        assert_eq!(ids.len(), 1, "{ids:?}");
        application.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_completed_event_carries_the_file_and_the_callers_sub() {
    bounded(async {
        let application = Application::start();
        let app = spawn_with_auth(|s| {
            s.hooks.pre_create = Some(application.hook("/pre-create", OnError::Deny));
            s.events.webhooks = vec![WebhookSettings {
                url: application.url("/events"),
                secret: secret(),
                events: vec!["upload.completed".into()],
                timeout: Duration::from_secs(5),
                retry_for: Duration::from_secs(600),
            }];
        })
        .await;
        application.answer(
            "/pre-create",
            200,
            r#"{"filename": "by-app.txt", "content_type": "text/plain", "metadata": {"t": 1}}"#,
        );
        // A tus upload, with a create token of alice's.
        let tus = Tus::with_bearer(&app, &token_for("alice", "jti-tus"));
        let url = tus.create(9, None).await;
        let asked = application.last("/pre-create").json;
        assert_eq!(asked["caller"]["kind"], "token", "{asked}");
        assert_eq!(asked["caller"]["sub"], "alice", "{asked}");
        assert_eq!(asked["protocol"], "tus", "{asked}");
        tus.patch_ok(&url, 0, b"tus bytes").await;
        let id = upload_id(&url);

        let deadline = Instant::now() + Duration::from_secs(20);
        let event = loop {
            let found = application
                .received("/events")
                .into_iter()
                .find(|e| e.json["upload_id"] == id.as_str());
            if let Some(e) = found {
                break e.json;
            }
            assert!(Instant::now() < deadline, "no upload.completed for {id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(event["type"], "upload.completed", "{event}");
        let file = &event["data"]["file"];
        assert_eq!(file["size"], 9, "{event}");
        assert_eq!(file["sha256"], sha256_hex(b"tus bytes"), "{event}");
        assert_eq!(file["filename"], "by-app.txt", "{event}");
        assert_eq!(file["content_type"], "text/plain", "{event}");
        assert_eq!(file["metadata"], json!({"t": 1}), "{event}");
        assert_eq!(file["url"], format!("/api/v1/files/{id}"), "{event}");
        assert_eq!(event["data"]["upload"]["sub"], "alice", "{event}");
        application.stop().await;
    })
    .await;
}

#[tokio::test]
async fn tus_creates_get_the_same_answers_for_bad_overrides_and_failed_hooks() {
    bounded(async {
        let application = Application::start();
        let app = spawn_app_with(|s| {
            s.hooks.pre_create = Some(application.hook("/pre-create", OnError::Allow));
        })
        .await;
        let tus = Tus::new(&app);
        for body in [
            r#"{"filename": 7}"#,
            r#"{"metadata": "k=v"}"#,
            r#"{"content_type": "no type"}"#,
        ] {
            application.answer("/pre-create", 200, body);
            let answer = tus.post(&[("Upload-Length", "4")]).await.expect(&[400]);
            let got: Value = serde_json::from_slice(&answer.body).unwrap();
            assert_eq!(got["error"], "invalid_request", "{body}: {got}");
            assert!(
                got["message"].as_str().unwrap().contains("pre_create"),
                "{body}: {got}"
            );
        }
        // A failed hook, open: the tus upload goes on, as the client asked.
        application.answer("/pre-create", 500, r#"{"filename": "ignored.txt"}"#);
        let meta = format!("filename {}", b64(b"mine.txt"));
        let url = tus.create(4, Some(&meta)).await;
        tus.patch_ok(&url, 0, b"abcd").await;
        let view = tus.assert_file(&url, b"abcd").await;
        assert_eq!(view["filename"], "mine.txt", "{view}");
        application.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_concatenation_waiting_on_pre_finish_finishes_once_it_answers() {
    bounded(async {
        let application = Application::start();
        let app = spawn_app_with(|s| {
            s.hooks.pre_finish = Some(application.hook("/pre-finish", OnError::Deny));
        })
        .await;
        let tus = Tus::new(&app);
        let mut partials = Vec::new();
        for piece in [&b"left|"[..], &b"right"[..]] {
            let length = piece.len().to_string();
            let answer = tus
                .post(&[("Upload-Length", &length), ("Upload-Concat", "partial")])
                .await
                .expect(&[201]);
            let url = tus.location(&answer);
            tus.patch_ok(&url, 0, piece).await;
            partials.push(url);
        }
        let concat = format!("final;{} {}", partials[0].path(), partials[1].path());
        application.answer("/pre-finish", 502, "");
        let answer = tus.post(&[("Upload-Concat", &concat)]).await;
        assert!(answer.status == 201 || answer.status == 503, "{answer}");
        let finishes = application.received("/pre-finish");
        let id = finishes
            .iter()
            .map(|c| {
                c.json["upload"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .find(|id| !id.is_empty())
            .expect("pre_finish asked about the final upload");
        let (status, view) = tus.view(&id).await;
        assert_eq!(status, 200, "{view}");
        assert_ne!(view["status"], "completed", "{view}");
        assert_ne!(view["status"], "failed", "nothing is lost: {view}");

        application.answer("/pre-finish", 204, "");
        let view = tus.completed_view(&id, Duration::from_secs(15)).await;
        assert_eq!(view["file"]["sha256"], sha256_hex(b"left|right"), "{view}");
        assert_eq!(tus.download(&id).await, b"left|right");
        application.stop().await;
    })
    .await;
}
