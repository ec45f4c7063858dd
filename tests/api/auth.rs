//! Authentication and authorisation from outside: every kind of credential
//! against every endpoint, with the status the contract gives each cell, and
//! what a denied request must leave alone.

use std::time::Duration;

use base64::Engine;
use reqwest::{Method, Response};
use serde_json::{json, Value};
use tranche::guards::auth::Claims;

use crate::helpers::*;

const KEY: &str = TEST_API_KEY;
const SECRET: &str = TEST_JWT_SECRET;

fn unix_now() -> u64 {
    tranche::guards::auth::token::unix_now()
}

fn create_token(claims: Claims) -> String {
    test_tokens().mint(&claims).unwrap()
}

/// Sends a request with an optional bearer credential.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    cred: Option<&str>,
    body: Option<Value>,
    raw: Option<Vec<u8>>,
) -> Response {
    let mut req = app.request(method, path);
    if let Some(c) = cred {
        req = req.bearer_auth(c);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(r) = raw {
        req = req.body(r);
    }
    req.send().await.expect("request")
}

/// Creates a one-chunk upload with the API key; returns (id, upload_token, data).
async fn keyed_upload(app: &TestApp) -> (String, String, Vec<u8>) {
    let data = test_data(2000, 7);
    let resp = send(
        app,
        Method::POST,
        "/api/v1/uploads",
        Some(KEY),
        Some(json!({"filename": "a.bin", "size": data.len(), "chunk_size": 4096})),
        None,
    )
    .await;
    let body = expect_json(resp, 201).await;
    let token = body["upload_token"]
        .as_str()
        .expect("create answer carries upload_token when auth is on")
        .to_owned();
    (body["id"].as_str().unwrap().to_owned(), token, data)
}

async fn keyed_put(app: &TestApp, id: &str, data: &[u8]) {
    let r = send(
        app,
        Method::PUT,
        &chunk_url(id, 0),
        Some(KEY),
        None,
        Some(data.to_vec()),
    )
    .await;
    expect_json(r, 200).await;
}

async fn keyed_complete(app: &TestApp, id: &str) {
    let path = format!("/api/v1/uploads/{id}/complete");
    let r = send(app, Method::POST, &path, Some(KEY), None, None).await;
    expect_json(r, 200).await;
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cred {
    None,
    ApiKey,
    CreateToken,
    ThisUpload,
    OtherUpload,
    Expired,
    Tampered,
    WrongAlg,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Create,
    Chunk,
    Status,
    Complete,
    Abort,
    Download,
    DeleteFile,
    Metrics,
}

fn expected(cred: Cred, action: Action) -> u16 {
    use Action::*;
    use Cred::*;
    match (cred, action) {
        (None | Expired | Tampered | WrongAlg, _) => 401,
        (ApiKey, Create) => 201,
        (ApiKey, Abort | DeleteFile) => 204,
        (ApiKey, _) => 200,
        (CreateToken, Create) => 201,
        (CreateToken, _) => 403,
        // Unless auth.owner_may_delete, see `files.rs`.
        (ThisUpload, Create | Metrics | DeleteFile) => 403,
        (ThisUpload, Abort) => 204,
        (ThisUpload, _) => 200,
        (OtherUpload, _) => 403,
    }
}

/// The credential of a row, for the upload `id` whose token is `token`.
fn credential(cred: Cred, id: &str, token: &str, other_token: &str) -> Option<String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let uuid: uuid::Uuid = id.parse().unwrap();
    match cred {
        Cred::None => None,
        Cred::ApiKey => Some(KEY.into()),
        Cred::CreateToken => Some(create_token(Claims {
            exp: unix_now() + 600,
            max_size: Some(1 << 20),
            ..Claims::default()
        })),
        Cred::ThisUpload => Some(token.into()),
        Cred::OtherUpload => Some(other_token.into()),
        Cred::Expired => Some(create_token(Claims {
            exp: unix_now() - 120,
            upload_id: Some(uuid),
            ..Claims::default()
        })),
        Cred::Tampered => {
            // Another upload's token with its upload_id rewritten to this one.
            let parts: Vec<&str> = other_token.split('.').collect();
            let claims = json!({"exp": unix_now() + 600, "upload_id": id});
            Some(format!(
                "{}.{}.{}",
                parts[0],
                b64.encode(claims.to_string()),
                parts[2]
            ))
        }
        Cred::WrongAlg => Some(
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
                &Claims {
                    exp: unix_now() + 600,
                    upload_id: Some(uuid),
                    ..Claims::default()
                },
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap(),
        ),
    }
}

#[tokio::test]
async fn every_credential_against_every_endpoint() {
    bounded_for(Duration::from_secs(120), async {
        let app = spawn_with_auth(|_| {}).await;
        let (_, other_token, _) = keyed_upload(&app).await;
        let creds = [
            Cred::None,
            Cred::ApiKey,
            Cred::CreateToken,
            Cred::ThisUpload,
            Cred::OtherUpload,
            Cred::Expired,
            Cred::Tampered,
            Cred::WrongAlg,
        ];
        let actions = [
            Action::Create,
            Action::Chunk,
            Action::Status,
            Action::Complete,
            Action::Abort,
            Action::Download,
            Action::DeleteFile,
            Action::Metrics,
        ];
        let mut failures = Vec::new();
        for cred in creds {
            for action in actions {
                // A fresh upload per cell, so no cell depends on another.
                let (id, token, data) = keyed_upload(&app).await;
                if action == Action::Complete {
                    keyed_put(&app, &id, &data).await;
                }
                if matches!(action, Action::Download | Action::DeleteFile) {
                    keyed_put(&app, &id, &data).await;
                    keyed_complete(&app, &id).await;
                }
                let c = credential(cred, &id, &token, &other_token);
                let c = c.as_deref();
                let resp = match action {
                    Action::Create => {
                        send(
                            &app,
                            Method::POST,
                            "/api/v1/uploads",
                            c,
                            Some(json!({"filename": "x", "size": 10})),
                            None,
                        )
                        .await
                    }
                    Action::Chunk => {
                        send(
                            &app,
                            Method::PUT,
                            &chunk_url(&id, 0),
                            c,
                            None,
                            Some(data.clone()),
                        )
                        .await
                    }
                    Action::Status => {
                        send(
                            &app,
                            Method::GET,
                            &format!("/api/v1/uploads/{id}"),
                            c,
                            None,
                            None,
                        )
                        .await
                    }
                    Action::Complete => {
                        send(
                            &app,
                            Method::POST,
                            &format!("/api/v1/uploads/{id}/complete"),
                            c,
                            None,
                            None,
                        )
                        .await
                    }
                    Action::Abort => {
                        send(
                            &app,
                            Method::DELETE,
                            &format!("/api/v1/uploads/{id}"),
                            c,
                            None,
                            None,
                        )
                        .await
                    }
                    Action::Download => {
                        send(
                            &app,
                            Method::GET,
                            &format!("/api/v1/files/{id}"),
                            c,
                            None,
                            None,
                        )
                        .await
                    }
                    Action::DeleteFile => {
                        send(
                            &app,
                            Method::DELETE,
                            &format!("/api/v1/files/{id}"),
                            c,
                            None,
                            None,
                        )
                        .await
                    }
                    Action::Metrics => send(&app, Method::GET, "/metrics", c, None, None).await,
                };
                let want = expected(cred, action);
                let got = resp.status().as_u16();
                if got != want {
                    let text = resp.text().await.unwrap_or_default();
                    failures.push(format!(
                        "{cred:?} × {action:?}: expected {want}, got {got}: {text}"
                    ));
                    continue;
                }
                if want >= 400 {
                    let code = if want == 401 {
                        "unauthorized"
                    } else {
                        "forbidden"
                    };
                    if want == 401 {
                        let challenge = resp
                            .headers()
                            .get("www-authenticate")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_else(|| {
                                panic!("{cred:?} × {action:?}: 401 without WWW-Authenticate")
                            });
                        // RFC 6750 §3: an error code only when a credential came.
                        assert_eq!(
                            challenge.contains(r#"error="invalid_token""#),
                            cred != Cred::None,
                            "{cred:?} × {action:?}: {challenge}"
                        );
                    }
                    let body = assert_error(resp, want, code).await;
                    assert!(!body["message"].as_str().unwrap().contains(SECRET));
                    // A refused request changed nothing.
                    let st = send(
                        &app,
                        Method::GET,
                        &format!("/api/v1/uploads/{id}"),
                        Some(KEY),
                        None,
                        None,
                    )
                    .await;
                    let st = expect_json(st, 200).await;
                    let (status, received) = match action {
                        Action::Complete => ("uploading", 1),
                        Action::Download | Action::DeleteFile => ("completed", 1),
                        _ => ("uploading", 0),
                    };
                    assert_eq!(
                        st["status"], status,
                        "{cred:?} × {action:?} changed the upload: {st}"
                    );
                    assert_eq!(
                        st["received_chunks"], received,
                        "{cred:?} × {action:?} changed the upload: {st}"
                    );
                }
            }
        }
        assert!(
            failures.is_empty(),
            "auth matrix cells failed:\n{}",
            failures.join("\n")
        );
    })
    .await;
}

#[tokio::test]
async fn health_stays_open_and_downloads_can_be_public() {
    bounded(async {
        let app = spawn_with_auth(|s| s.auth.public_downloads = true).await;
        assert_eq!(
            app.request(Method::GET, "/healthz")
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            app.request(Method::GET, "/readyz")
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let (id, _, data) = keyed_upload(&app).await;
        keyed_put(&app, &id, &data).await;
        keyed_complete(&app, &id).await;
        let r = app.download(&id).await;
        assert_eq!(r.status(), 200);
        // Anyone may fetch it, so shared caches may keep it.
        assert!(!r.headers().contains_key("cache-control"));
        assert_eq!(r.bytes().await.unwrap().to_vec(), data);
        // Public downloads open nothing else.
        assert_error(app.status(&id).await, 401, "unauthorized").await;
    })
    .await;
}

#[tokio::test]
async fn a_create_token_is_held_to_its_claims() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let token = create_token(Claims {
            exp: unix_now() + 600,
            sub: Some("course-101".into()),
            max_size: Some(5000),
            content_types: Some(vec!["video/*".into()]),
            max_uploads: Some(2),
            ..Claims::default()
        });
        let create = |body: Value| {
            let app = &app;
            let token = token.clone();
            async move {
                send(
                    app,
                    Method::POST,
                    "/api/v1/uploads",
                    Some(&token),
                    Some(body),
                    None,
                )
                .await
            }
        };
        assert_error(
            create(json!({"filename": "big.mp4", "size": 5001, "content_type": "video/mp4"})).await,
            403,
            "forbidden",
        )
        .await;
        assert_error(
            create(json!({"filename": "a.png", "size": 10, "content_type": "image/png"})).await,
            403,
            "forbidden",
        )
        .await;
        assert_error(
            create(json!({"filename": "a.bin", "size": 10})).await,
            403,
            "forbidden",
        )
        .await;
        // Within its claims: the browser gets the upload's own token and uses it.
        let created = expect_json(
            create(json!({"filename": "a.mp4", "size": 3, "content_type": "video/mp4"})).await,
            201,
        )
        .await;
        let id = created["id"].as_str().unwrap();
        let upload_token = created["upload_token"].as_str().unwrap();
        let r = send(
            &app,
            Method::PUT,
            &chunk_url(id, 0),
            Some(upload_token),
            None,
            Some(b"abc".to_vec()),
        )
        .await;
        expect_json(r, 200).await;
        let r = send(
            &app,
            Method::POST,
            &format!("/api/v1/uploads/{id}/complete"),
            Some(upload_token),
            None,
            None,
        )
        .await;
        expect_json(r, 200).await;
        let r = send(
            &app,
            Method::GET,
            &format!("/api/v1/files/{id}"),
            Some(upload_token),
            None,
            None,
        )
        .await;
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"abc");
        // The upload token carries the create token's subject.
        let claims = test_tokens().verify(upload_token).unwrap();
        assert_eq!(claims.sub.as_deref(), Some("course-101"));
        // max_uploads = 2: one more create passes, the third is refused.
        expect_json(
            create(json!({"filename": "b.mp4", "size": 3, "content_type": "video/mp4"})).await,
            201,
        )
        .await;
        assert_error(
            create(json!({"filename": "c.mp4", "size": 3, "content_type": "video/mp4"})).await,
            403,
            "forbidden",
        )
        .await;
    })
    .await;
}

/// `max_uploads` counts uploads that really start: a create the server
/// refuses, or a retry that gets the first answer again (same
/// Idempotency-Key), leaves the token's uses alone.
#[tokio::test]
async fn max_uploads_counts_only_uploads_that_start() {
    bounded(async {
        let app = spawn_with_auth(|s| {
            s.max_file_size = bytesize::ByteSize(1000);
            // Room for small uploads only: a bigger one fails after its use was taken.
            s.limits.max_pending_bytes = bytesize::ByteSize(500);
        })
        .await;
        let token = create_token(Claims {
            exp: unix_now() + 600,
            max_uploads: Some(1),
            ..Claims::default()
        });
        let create = |body: Value, key: &'static str| {
            let req = app
                .request(Method::POST, "/api/v1/uploads")
                .bearer_auth(&token)
                .header("Idempotency-Key", key)
                .json(&body);
            async move { req.send().await.expect("create request") }
        };
        let big = json!({"filename": "big.bin", "size": 1001});
        assert_error(create(big, "k0").await, 413, "file_too_large").await;
        let nameless = json!({"filename": "", "size": 10});
        assert_error(create(nameless, "k0").await, 400, "invalid_request").await;
        let no_room = json!({"filename": "wide.bin", "size": 900});
        assert_error(create(no_room, "k9").await, 507, "insufficient_storage").await;

        let body = json!({"filename": "a.bin", "size": 10});
        let first = expect_json(create(body.clone(), "k1").await, 201).await;
        let retried = expect_json(create(body, "k1").await, 201).await;
        assert_eq!(
            first["id"], retried["id"],
            "the retry gets the first upload"
        );

        // That one upload was its only use.
        let other = json!({"filename": "b.bin", "size": 10});
        let refused = assert_error(create(other, "k2").await, 403, "forbidden").await;
        assert!(
            refused["message"].as_str().unwrap().contains("at most 1"),
            "{refused}"
        );

        // Retries racing their first attempt all get its answer: the use it
        // took is not held against them.
        let token = create_token(Claims {
            exp: unix_now() + 600,
            sub: Some("racer".into()),
            max_uploads: Some(1),
            ..Claims::default()
        });
        let racing = (0..12).map(|_| {
            app.request(Method::POST, "/api/v1/uploads")
                .bearer_auth(&token)
                .header("Idempotency-Key", "race")
                .json(&json!({"filename": "r.bin", "size": 10}))
                .send()
        });
        let mut ids = std::collections::HashSet::new();
        for resp in futures::future::join_all(racing).await {
            let body = expect_json(resp.expect("create request"), 201).await;
            ids.insert(body["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(ids.len(), 1, "one upload for one key: {ids:?}");
    })
    .await;
}

#[tokio::test]
async fn idempotency_keys_are_scoped_to_the_caller() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let t1 = create_token(Claims {
            exp: unix_now() + 600,
            sub: Some("alice".into()),
            ..Claims::default()
        });
        let t2 = create_token(Claims {
            exp: unix_now() + 600,
            sub: Some("mallory".into()),
            ..Claims::default()
        });
        let create = |token: String| {
            let app = &app;
            async move {
                app.request(Method::POST, "/api/v1/uploads")
                    .bearer_auth(token)
                    .header("Idempotency-Key", "same-key")
                    .json(&json!({"filename": "a", "size": 10}))
                    .send()
                    .await
                    .unwrap()
            }
        };
        let a1 = expect_json(create(t1.clone()).await, 201).await;
        let a2 = expect_json(create(t1).await, 201).await;
        assert_eq!(
            a1["id"], a2["id"],
            "a retried create returns the first upload"
        );
        let m = expect_json(create(t2).await, 201).await;
        assert_ne!(
            m["id"], a1["id"],
            "another caller's key must not return alice's upload"
        );
    })
    .await;
}

#[tokio::test]
async fn no_upload_token_without_auth() {
    bounded(async {
        let app = spawn_app().await;
        let created = app.create_for(b"abc", 1024).await;
        assert!(created.get("upload_token").is_none(), "{created}");
    })
    .await;
}

#[tokio::test]
async fn api_keys_can_be_given_as_hashes_and_in_a_file() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# ops team\nfile-key-0123456789abcdef\n").unwrap();
        let app = spawn_with_auth(|s| {
            s.auth.api_keys = vec![tranche::guards::auth::keys::hash_entry(
                "hashed-key-0123456789",
            )];
            s.auth.api_keys_file = Some(file.clone());
        })
        .await;
        for key in ["hashed-key-0123456789", "file-key-0123456789abcdef"] {
            let r = send(&app, Method::GET, "/metrics", Some(key), None, None).await;
            assert_eq!(r.status(), 200, "key {key}");
        }
        assert_error(
            send(&app, Method::GET, "/metrics", Some(KEY), None, None).await,
            401,
            "unauthorized",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn serving_beyond_loopback_without_auth_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.bind = "0.0.0.0:0".into();
    let err = tranche::startup::Application::build(settings.clone())
        .await
        .err()
        .expect("must refuse");
    assert!(format!("{err:#}").contains("--insecure"), "{err:#}");
    settings.auth.allow_anonymous = true;
    let app = tranche::startup::Application::build(settings)
        .await
        .expect("allowed when asked");
    drop(app);
}

/// Runs the real binary's `token` command with the test secret in the environment.
fn tranche_token(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tranche"))
        .arg("token")
        .args(args)
        .env("TRANCHE_AUTH__JWT_SECRET", SECRET)
        .output()
        .expect("run tranche token");
    assert!(
        out.status.success(),
        "tranche token {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn tokens_and_keys_from_the_command_line_work() {
    bounded(async {
        let printed = tranche_token(&["key"]);
        let key = printed
            .lines()
            .find_map(|l| l.strip_prefix("key:"))
            .unwrap()
            .trim()
            .to_owned();
        let entry = printed
            .lines()
            .find_map(|l| l.strip_prefix("config: api_keys = [\""))
            .unwrap();
        let entry = entry.trim_end_matches("\"]").to_owned();
        assert!(entry.starts_with("sha256:") && !entry.contains(&key));
        let app = spawn_with_auth(|s| s.auth.api_keys = vec![entry.clone()]).await;
        let r = send(&app, Method::GET, "/metrics", Some(&key), None, None).await;
        assert_eq!(r.status(), 200);

        let token = tranche_token(&[
            "create",
            "--max-size",
            "100",
            "--content-type",
            "video/*",
            "--ttl",
            "10m",
            "--sub",
            "cli",
        ]);
        let token = token.trim();
        let claims = test_tokens().verify(token).unwrap();
        assert_eq!(claims.max_size, Some(100));
        let quota = tranche_token(&[
            "create",
            "--max-stored-bytes",
            "1KiB",
            "--max-pending-bytes",
            "512B",
        ]);
        let quota = test_tokens().verify(quota.trim()).unwrap();
        assert_eq!(quota.max_stored_bytes, Some(1024));
        assert_eq!(quota.max_pending_bytes, Some(512));
        let ok = send(
            &app,
            Method::POST,
            "/api/v1/uploads",
            Some(token),
            Some(json!({"filename": "v.mp4", "size": 50, "content_type": "video/mp4"})),
            None,
        )
        .await;
        expect_json(ok, 201).await;
        let too_big = send(
            &app,
            Method::POST,
            "/api/v1/uploads",
            Some(token),
            Some(json!({"filename": "v.mp4", "size": 200, "content_type": "video/mp4"})),
            None,
        )
        .await;
        assert_error(too_big, 403, "forbidden").await;
    })
    .await;
}

#[test]
fn check_config_hides_secrets() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tranche"))
        .arg("check-config")
        .env("TRANCHE_AUTH__JWT_SECRET", SECRET)
        .env("TRANCHE_AUTH__API_KEYS", format!("[\"{KEY}\"]"))
        .env("TRANCHE_AUTH__ENABLED", "true")
        .output()
        .expect("run tranche check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(
        !stdout.contains(SECRET) && !stdout.contains(KEY),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_download_link_may_carry_its_uploads_token() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let (id, token, data) = keyed_upload(&app).await;
        let (_, other_token, _) = keyed_upload(&app).await;
        keyed_put(&app, &id, &data).await;
        keyed_complete(&app, &id).await;
        let link = |cred: &str| format!("/api/v1/files/{id}?access_token={cred}");
        let r = app
            .request(Method::GET, &link(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Fetched with a credential: no shared cache may pass it on.
        assert_eq!(r.headers()["cache-control"], "private");
        assert_eq!(r.bytes().await.unwrap().to_vec(), data);
        let r = app
            .request(Method::GET, &link(&other_token))
            .send()
            .await
            .unwrap();
        assert_error(r, 403, "forbidden").await;
        // API keys do not belong in URLs, and links work for downloads only.
        let r = app.request(Method::GET, &link(KEY)).send().await.unwrap();
        assert_error(r, 401, "unauthorized").await;
        let status = format!("/api/v1/uploads/{id}?access_token={token}");
        let r = app.request(Method::GET, &status).send().await.unwrap();
        assert_error(r, 401, "unauthorized").await;
    })
    .await;
}

/// check-config catches what `serve` would refuse: a short secret, a secret
/// file that cannot be read. Both exit 2, as a configuration mistake.
#[test]
fn check_config_and_serve_refuse_the_same_auth_settings() {
    let check = |command: &str, var: &str, value: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tranche"))
            .args([command, "--data-dir", "/nonexistent/tranche-test"])
            .env("TRANCHE_AUTH__ENABLED", "true")
            .env(var, value)
            .output()
            .expect("run tranche")
    };
    for (var, value, says) in [
        ("TRANCHE_AUTH__JWT_SECRET", "short", "at least 32 bytes"),
        (
            "TRANCHE_AUTH__JWT_SECRET_FILE",
            "/nonexistent/jwt-secret",
            "/nonexistent/jwt-secret",
        ),
    ] {
        for command in ["check-config", "serve"] {
            let out = check(command, var, value);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command} {var}: {stderr}");
            assert!(stderr.contains(says), "{command} {var}: {stderr}");
        }
    }
}
