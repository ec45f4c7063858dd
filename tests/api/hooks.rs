//! Blocking hooks, end to end: a real application on a loopback port that
//! records each call and answers as the test scripts it. `pre_create` is
//! told who creates what (API v1 and tus), may refuse with its own status
//! and message, or set the filename, content type and metadata;
//! `pre_finish` sees the verified file and may fail the upload; a hook
//! that does not answer in time follows its `on_error`.

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

const KEY: &[u8] = b"a hook key of 32 bytes for tests";

fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(KEY)
    )
}

/// One request the application got.
#[derive(Debug, Clone)]
struct Call {
    headers: HashMap<String, String>,
    raw: String,
    json: Value,
}

impl Call {
    /// Whether the Standard Webhooks signature is right for the body.
    fn signed(&self) -> bool {
        let header = |n: &str| self.headers.get(n).cloned().unwrap_or_default();
        let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
        mac.update(
            format!(
                "{}.{}.{}",
                header("webhook-id"),
                header("webhook-timestamp"),
                self.raw
            )
            .as_bytes(),
        );
        let expected = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        header("webhook-signature") == expected
    }
}

/// An answer to give: status, body, after a delay.
#[derive(Clone)]
struct Script {
    status: u16,
    body: String,
    delay: Duration,
}

#[derive(Clone, Default)]
struct State {
    scripts: Arc<Mutex<HashMap<String, Script>>>,
    calls: Arc<Mutex<Vec<(String, Call)>>>,
}

/// The application: answers each path as scripted (204 when not), and
/// keeps every request.
struct Application {
    state: State,
    port: u16,
    handle: actix_web::dev::ServerHandle,
}

impl Application {
    fn start() -> Application {
        let state = State::default();
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new().app_data(data.clone()).default_service(web::to(
                |req: HttpRequest, body: String, state: web::Data<State>| async move {
                    let path = req.path().to_owned();
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let call = Call {
                        headers,
                        raw: body,
                        json,
                    };
                    state.calls.lock().unwrap().push((path.clone(), call));
                    let script = state.scripts.lock().unwrap().get(&path).cloned();
                    let Some(script) = script else {
                        return HttpResponse::NoContent().finish();
                    };
                    tokio::time::sleep(script.delay).await;
                    HttpResponse::build(
                        actix_web::http::StatusCode::from_u16(script.status).unwrap(),
                    )
                    .content_type("application/json")
                    .body(script.body)
                },
            ))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("bind a loopback port");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Application {
            state,
            port,
            handle,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn answer(&self, path: &str, status: u16, body: &str) {
        self.script(path, status, body, Duration::ZERO);
    }

    fn script(&self, path: &str, status: u16, body: &str, delay: Duration) {
        let script = Script {
            status,
            body: body.into(),
            delay,
        };
        self.state
            .scripts
            .lock()
            .unwrap()
            .insert(path.into(), script);
    }

    fn calls(&self, path: &str) -> Vec<Call> {
        let calls = self.state.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, c)| c.clone())
            .collect()
    }

    fn last(&self, path: &str) -> Call {
        self.calls(path)
            .pop()
            .unwrap_or_else(|| panic!("no call to {path}"))
    }

    fn endpoint(&self, path: &str, on_error: OnError, timeout: Duration) -> HookEndpoint {
        HookEndpoint {
            url: self.url(path),
            timeout,
            on_error,
            secret: Some(secret()),
        }
    }

    async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

fn create_token(sub: &str) -> String {
    test_tokens()
        .mint(&Claims {
            exp: tranche::guards::auth::token::unix_now() + 600,
            sub: Some(sub.into()),
            ..Claims::default()
        })
        .unwrap()
}

async fn create_with(app: &TestApp, bearer: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn pre_create_is_told_who_creates_and_may_refuse_or_set_fields() {
    bounded(async {
        let hook = Application::start();
        let app = spawn_with_auth(|s| {
            s.hooks.pre_create =
                Some(hook.endpoint("/pre-create", OnError::Deny, Duration::from_secs(5)));
        })
        .await;
        let alice = create_token("alice");
        let data = test_data(3000, 1);
        let request = json!({
            "filename": "orig.bin", "size": 3000, "sha256": sha256_hex(&data),
            "metadata": {"a": "b"}
        });

        // Allowed, with fields of the application's.
        hook.answer(
            "/pre-create",
            200,
            r#"{"allow": true, "filename": "renamed.bin", "content_type": "text/plain",
                "metadata": {"tenant": "t1"}}"#,
        );
        let view = expect_json(create_with(&app, &alice, request.clone()).await, 201).await;
        assert_eq!(view["filename"], "renamed.bin", "{view}");
        assert_eq!(view["content_type"], "text/plain", "{view}");
        assert_eq!(view["metadata"], json!({"tenant": "t1"}), "{view}");
        let call = hook.last("/pre-create");
        assert!(call.signed(), "signed as Standard Webhooks: {call:?}");
        let asked = &call.json;
        assert_eq!(asked["type"], "pre_create");
        assert_eq!(asked["protocol"], "v1");
        assert_eq!(asked["caller"]["kind"], "token", "{asked}");
        assert_eq!(asked["caller"]["sub"], "alice", "{asked}");
        assert_eq!(asked["caller"]["owner"], "sub:alice", "{asked}");
        assert_eq!(asked["upload"]["id"], view["id"], "{asked}");
        assert_eq!(asked["upload"]["filename"], "orig.bin", "{asked}");
        assert_eq!(asked["upload"]["size"], 3000, "{asked}");
        assert_eq!(asked["upload"]["sha256"], sha256_hex(&data), "{asked}");
        assert_eq!(asked["upload"]["metadata"], json!({"a": "b"}), "{asked}");
        // The upload is stored as the application set it.
        let stored = app
            .client
            .get(app.url(&format!("/api/v1/uploads/{}", view["id"].as_str().unwrap())))
            .bearer_auth(TEST_API_KEY)
            .send()
            .await
            .unwrap();
        let stored = expect_json(stored, 200).await;
        assert_eq!(stored["filename"], "renamed.bin", "{stored}");

        // An API key is named as one.
        hook.answer("/pre-create", 204, "");
        expect_json(
            create_with(&app, TEST_API_KEY, json!({"filename": "k.bin", "size": 1})).await,
            201,
        )
        .await;
        assert_eq!(hook.last("/pre-create").json["caller"]["kind"], "api_key");

        // Refused: the application's status, message and code; nothing stored.
        hook.answer(
            "/pre-create",
            403,
            r#"{"message": "Alice is over her plan", "code": "plan_limit"}"#,
        );
        let body = assert_error(
            create_with(&app, &alice, request.clone()).await,
            403,
            "upload_rejected",
        )
        .await;
        assert_eq!(body["message"], "Alice is over her plan", "{body}");
        assert_eq!(body["reason"], "plan_limit", "{body}");
        let refused = hook.last("/pre-create").json["upload"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let gone = app
            .client
            .get(app.url(&format!("/api/v1/uploads/{refused}")))
            .bearer_auth(TEST_API_KEY)
            .send()
            .await
            .unwrap();
        assert_error(gone, 404, "upload_not_found").await;

        // A plain-text 4xx is passed on as it is; `allow: false` is a 403.
        hook.answer("/pre-create", 451, "  blocked in your region \n");
        let body = assert_error(
            create_with(&app, &alice, request.clone()).await,
            451,
            "upload_rejected",
        )
        .await;
        assert_eq!(body["message"], "blocked in your region", "{body}");
        // Not a 401: the client's credentials are fine.
        hook.answer("/pre-create", 401, r#"{"message": "who?"}"#);
        let body = assert_error(
            create_with(&app, &alice, request.clone()).await,
            403,
            "upload_rejected",
        )
        .await;
        assert_eq!(body["message"], "who?", "{body}");
        hook.answer("/pre-create", 200, r#"{"allow": false, "message": "no"}"#);
        let body = assert_error(
            create_with(&app, &alice, request.clone()).await,
            403,
            "upload_rejected",
        )
        .await;
        assert_eq!(body["message"], "no", "{body}");

        // A field the application set is checked as the client's would be.
        hook.answer("/pre-create", 200, r#"{"filename": "a\nb"}"#);
        let body = assert_error(
            create_with(&app, &alice, request.clone()).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(
            body["message"].as_str().unwrap().contains("pre_create"),
            "{body}"
        );

        // A retry with the same Idempotency-Key gets the first answer
        // without asking again.
        hook.answer("/pre-create", 204, "");
        let keyed = || {
            app.client
                .post(app.url("/api/v1/uploads"))
                .bearer_auth(&alice)
                .header("Idempotency-Key", "hooks-once")
                .json(&request)
                .send()
        };
        let before = hook.calls("/pre-create").len();
        let first = expect_json(keyed().await.unwrap(), 201).await;
        let again = expect_json(keyed().await.unwrap(), 201).await;
        assert_eq!(first["id"], again["id"]);
        assert_eq!(hook.calls("/pre-create").len(), before + 1);
        hook.stop().await;
    })
    .await
}

#[tokio::test]
async fn tus_creates_ask_pre_create_too() {
    bounded(async {
        let hook = Application::start();
        let app = spawn_app_with(|s| {
            s.hooks.pre_create =
                Some(hook.endpoint("/pre-create", OnError::Deny, Duration::from_secs(5)));
        })
        .await;
        let tus = Tus::new(&app);
        let meta = format!("filename {}", b64(b"orig.txt"));

        hook.answer("/pre-create", 403, r#"{"message": "tus refused"}"#);
        let answer = tus
            .post(&[("Upload-Length", "4"), ("Upload-Metadata", &meta)])
            .await
            .expect(&[403]);
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(body["error"], "upload_rejected", "{body}");
        assert_eq!(body["message"], "tus refused", "{body}");
        let asked = hook.last("/pre-create").json;
        assert_eq!(asked["protocol"], "tus", "{asked}");
        assert_eq!(asked["caller"]["kind"], "open", "{asked}");
        assert_eq!(asked["upload"]["filename"], "orig.txt", "{asked}");
        assert_eq!(asked["upload"]["size"], 4, "{asked}");

        // A deferred length is told as unknown.
        hook.answer("/pre-create", 204, "");
        tus.post(&[("Upload-Defer-Length", "1")])
            .await
            .expect(&[201]);
        assert_eq!(hook.last("/pre-create").json["upload"]["size"], Value::Null);

        // What the application sets shows in the upload and in its HEAD.
        hook.answer(
            "/pre-create",
            200,
            r#"{"filename": "renamed.txt", "content_type": "text/plain", "metadata": {"k": "v"}}"#,
        );
        let url = tus.create(4, Some(&meta)).await;
        let head = tus.head(&url).await.expect(&[200, 204]);
        let expected = format!(
            "filename {},filetype {},k {}",
            b64(b"renamed.txt"),
            b64(b"text/plain"),
            b64(b"v")
        );
        assert_eq!(
            head.header("upload-metadata"),
            Some(expected.as_str()),
            "{head}"
        );
        tus.patch_ok(&url, 0, b"data").await;
        let view = tus.assert_file(&url, b"data").await;
        assert_eq!(view["filename"], "renamed.txt", "{view}");
        assert_eq!(view["content_type"], "text/plain", "{view}");
        assert_eq!(view["metadata"], json!({"k": "v"}), "{view}");
        hook.stop().await;
    })
    .await
}

#[tokio::test]
async fn pre_finish_may_fail_a_verified_upload() {
    bounded(async {
        let hook = Application::start();
        let app = spawn_app_with(|s| {
            s.hooks.pre_finish =
                Some(hook.endpoint("/pre-finish", OnError::Deny, Duration::from_secs(5)));
            s.events.webhooks = vec![WebhookSettings {
                url: hook.url("/events"),
                secret: secret(),
                events: vec!["upload.failed".into()],
                timeout: Duration::from_secs(5),
                retry_for: Duration::from_secs(600),
            }];
        })
        .await;

        // Allowed: completed, and the hook saw the verified file.
        let data = test_data(3000, 2);
        let view = app.upload_all(&data, 1024).await;
        assert_eq!(view["status"], "completed", "{view}");
        let call = hook.last("/pre-finish");
        assert!(call.signed(), "{call:?}");
        let asked = &call.json;
        assert_eq!(asked["type"], "pre_finish");
        assert_eq!(asked["protocol"], "v1");
        assert_eq!(asked["upload"]["id"], view["id"], "{asked}");
        assert_eq!(asked["upload"]["status"], "assembling", "{asked}");
        assert_eq!(asked["file"]["sha256"], sha256_hex(&data), "{asked}");
        assert_eq!(asked["file"]["size"], 3000, "{asked}");
        assert_eq!(asked["owner"], "open", "{asked}");

        // Refused: the upload fails with the application's message.
        hook.answer(
            "/pre-finish",
            200,
            r#"{"allow": false, "message": "virus found: EICAR"}"#,
        );
        let data = test_data(2500, 3);
        let created = app.create_for(&data, 1024).await;
        let id = created["id"].as_str().unwrap().to_owned();
        app.send_chunks(&id, &data, 1024, 0..3).await;
        let body = assert_error(app.complete(&id).await, 422, "upload_rejected").await;
        assert_eq!(body["message"], "virus found: EICAR", "{body}");
        let status = app.status_json(&id).await;
        assert_eq!(status["status"], "failed", "{status}");
        assert_eq!(status["error"]["error"], "upload_rejected", "{status}");
        assert_eq!(status["error"]["message"], "virus found: EICAR", "{status}");
        // A retried complete learns the same.
        let again = assert_error(app.complete(&id).await, 422, "upload_rejected").await;
        assert_eq!(again["message"], "virus found: EICAR", "{again}");
        assert_eq!(app.download(&id).await.status(), 404);
        // The upload.failed event says why.
        let deadline = Instant::now() + Duration::from_secs(20);
        let event = loop {
            let events = hook.calls("/events");
            if let Some(e) = events.iter().find(|c| c.json["upload_id"] == id.as_str()) {
                break e.json.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no upload.failed event: {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(event["type"], "upload.failed", "{event}");
        assert_eq!(
            event["data"]["reason"]["error"], "upload_rejected",
            "{event}"
        );
        assert_eq!(
            event["data"]["reason"]["message"], "virus found: EICAR",
            "{event}"
        );

        // A tus upload's last PATCH gets the refusal.
        hook.answer("/pre-finish", 406, "not this one");
        let tus = Tus::new(&app);
        let url = tus.create(4, None).await;
        let answer = tus.patch(&url, 0, b"data").await.expect(&[422]);
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(body["error"], "upload_rejected", "{body}");
        assert_eq!(body["message"], "not this one", "{body}");
        assert_eq!(hook.last("/pre-finish").json["protocol"], "tus");
        let (_, view) = tus.view(&upload_id(&url)).await;
        assert_eq!(view["status"], "failed", "{view}");
        hook.stop().await;
    })
    .await
}

#[tokio::test]
async fn a_hook_that_does_not_answer_follows_on_error() {
    bounded(async {
        let hook = Application::start();
        let slow = Duration::from_secs(3);
        let short = Duration::from_millis(300);
        hook.script("/slow", 204, "", slow);

        // Fail open: the create goes on.
        let open = spawn_app_with(|s| {
            s.hooks.pre_create = Some(hook.endpoint("/slow", OnError::Allow, short));
        })
        .await;
        let started = Instant::now();
        let view = expect_json(
            open.create(json!({"filename": "a.bin", "size": 10})).await,
            201,
        )
        .await;
        assert!(started.elapsed() < slow, "the timeout cut the wait");
        assert_eq!(view["status"], "uploading");
        let text = open.metrics_text().await;
        assert_eq!(
            metric_value(&text, "tranche_hook_calls_total", Some("outcome=\"error\"")),
            Some(1.0),
            "{text}"
        );

        // Fail closed: 503, retryable, nothing stored.
        let closed = spawn_app_with(|s| {
            s.hooks.pre_create = Some(hook.endpoint("/slow", OnError::Deny, short));
        })
        .await;
        let resp = closed
            .create(json!({"filename": "a.bin", "size": 10}))
            .await;
        assert!(resp.headers().contains_key("retry-after"));
        let body = assert_error(resp, 503, "hook_unavailable").await;
        assert_eq!(body["hook"], "pre_create", "{body}");

        // At finish: 503, the upload kept; completed once the hook answers.
        hook.script("/pre-finish", 204, "", slow);
        let finish = spawn_app_with(|s| {
            s.hooks.pre_finish = Some(hook.endpoint("/pre-finish", OnError::Deny, short));
        })
        .await;
        let data = test_data(3000, 4);
        let created = finish.create_for(&data, 1024).await;
        let id = created["id"].as_str().unwrap().to_owned();
        finish.send_chunks(&id, &data, 1024, 0..3).await;
        let body = assert_error(finish.complete(&id).await, 503, "hook_unavailable").await;
        assert_eq!(body["hook"], "pre_finish", "{body}");
        hook.answer("/pre-finish", 204, "");
        let done = expect_json(finish.complete(&id).await, 200).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["file"]["sha256"], sha256_hex(&data), "{done}");
        let bytes = finish.download(&id).await.bytes().await.unwrap();
        assert_eq!(&bytes[..], &data[..]);
        hook.stop().await;
    })
    .await
}

#[tokio::test]
async fn an_upload_killed_during_pre_finish_is_finished_after_restart() {
    bounded_for(Duration::from_secs(90), async {
        let hook = Application::start();
        // The first call never gets its answer: the server is killed meanwhile.
        hook.script("/pre-finish", 204, "", Duration::from_secs(20));
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let redis = match crate::BACKEND {
            Backend::Embedded => None,
            Backend::Redis => Some(RedisServer::start().await),
        };
        let config = format!(
            "[hooks.pre_finish]\nurl = \"{}\"\ntimeout = \"30s\"\n",
            hook.url("/pre-finish")
        );
        let start = || {
            ServerProcess::start_with(
                dir.path(),
                &data_dir,
                redis.as_ref(),
                &client,
                &config,
                None,
            )
        };
        let mut server = start().await;
        let data = test_data(5000, 5);
        let created = client
            .post(server.url("/api/v1/uploads"))
            .json(
                &json!({"filename": "k.bin", "size": data.len(), "chunk_size": 1024,
                          "sha256": sha256_hex(&data)}),
            )
            .send()
            .await
            .unwrap();
        let id = expect_json(created, 201).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for (i, chunk) in chunks_of(&data, 1024).into_iter().enumerate() {
            let resp = client
                .put(server.url(&chunk_url(&id, i)))
                .body(chunk)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
        let completing = tokio::spawn(
            client
                .post(server.url(&format!("/api/v1/uploads/{id}/complete")))
                .send(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while hook.calls("/pre-finish").is_empty() {
            assert!(Instant::now() < deadline, "pre_finish was never called");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill();
        let _ = completing.await;

        // Started again with a hook that answers: the upload is finished
        // (by a poll, once the dead assembly's lease lapsed), not lost.
        hook.answer("/pre-finish", 204, "");
        let server = start().await;
        let deadline = Instant::now() + Duration::from_secs(40);
        let view = loop {
            let resp = client
                .get(server.url(&format!("/api/v1/uploads/{id}")))
                .send()
                .await
                .unwrap();
            let view = expect_json(resp, 200).await;
            if view["status"] != "assembling" {
                break view;
            }
            assert!(Instant::now() < deadline, "still assembling: {view}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(view["status"], "completed", "{view}");
        assert_eq!(view["file"]["sha256"], sha256_hex(&data), "{view}");
        assert!(
            hook.calls("/pre-finish").len() >= 2,
            "asked again after the restart"
        );
        let bytes = client
            .get(server.url(&format!("/api/v1/files/{id}")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&bytes[..], &data[..]);
        hook.stop().await;
    })
    .await
}
