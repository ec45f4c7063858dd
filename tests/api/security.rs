//! The edges an attacker or a strict client pokes at, with auth on: an
//! Idempotency-Key never crosses callers (nor tells one caller that another
//! used it), credentials are checked before any input is, and tokens, schemes,
//! content types and file names are read as the RFCs and the major JWT
//! libraries have them.

use reqwest::{Method, Response};
use serde_json::{json, Value};
use tranche::guards::auth::Claims;

use crate::helpers::*;

fn unix_now() -> u64 {
    tranche::guards::auth::token::unix_now()
}

fn create_token(sub: &str) -> String {
    test_tokens()
        .mint(&Claims {
            exp: unix_now() + 600,
            sub: Some(sub.into()),
            max_size: Some(1000),
            ..Claims::default()
        })
        .unwrap()
}

async fn create_with_key(app: &TestApp, token: &str, key: &str, body: Value) -> Response {
    app.request(Method::POST, "/api/v1/uploads")
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_idempotency_key_never_crosses_callers_whatever_their_separators() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let body = json!({"filename": "payroll.xlsx", "size": 10});
        // (sub, key) pairs that a plain "{sub}|{key}" or "{sub}:{key}" joins
        // into one string, each with its mirror.
        let pairs = [
            (("acme|bob", "k2"), ("acme", "bob|k2")),
            (("auth0|123", "k"), ("auth0", "123|k")),
            (("a:b", "k"), ("a", "b:k")),
            (("sub:x", "y"), ("sub", "x:y")),
        ];
        for ((sub_a, key_a), (sub_b, key_b)) in pairs {
            let a = create_with_key(&app, &create_token(sub_a), key_a, body.clone()).await;
            let a = expect_json(a, 201).await;
            let b = create_with_key(&app, &create_token(sub_b), key_b, body.clone()).await;
            let b = expect_json(b, 201).await;
            assert_ne!(
                a["id"], b["id"],
                "sub {sub_b:?} with key {key_b:?} got the upload of sub {sub_a:?} with key {key_a:?}"
            );
            // The first caller's retry still gets its own upload back.
            let again = create_with_key(&app, &create_token(sub_a), key_a, body.clone()).await;
            assert_eq!(expect_json(again, 201).await["id"], a["id"]);
            // B's token cannot reach A's upload.
            let id = a["id"].as_str().unwrap();
            let stolen = app
                .request(Method::PUT, &chunk_url(id, 0))
                .bearer_auth(b["upload_token"].as_str().unwrap())
                .body(vec![0u8; 10])
                .send()
                .await
                .unwrap();
            assert_error(stolen, 403, "forbidden").await;
        }
    })
    .await;
}

#[tokio::test]
async fn another_callers_key_behaves_like_an_unused_one() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let first = create_with_key(
            &app,
            &create_token("acme|bob"),
            "k2",
            json!({"filename": "payroll.xlsx", "size": 10}),
        )
        .await;
        expect_json(first, 201).await;
        // Another body under the same key string: a key of one's own that was
        // used for another request would get 422; another caller's must not.
        for (sub, key) in [("acme", "bob|k2"), ("mallory", "k2")] {
            let other = create_with_key(
                &app,
                &create_token(sub),
                key,
                json!({"filename": "guess.txt", "size": 20}),
            )
            .await;
            let other = expect_json(other, 201).await;
            assert_eq!(other["filename"], "guess.txt", "{sub} {key}");
        }
        // The API key is a caller of its own too.
        let keyed = create_with_key(
            &app,
            TEST_API_KEY,
            "k2",
            json!({"filename": "other.bin", "size": 30}),
        )
        .await;
        assert_eq!(expect_json(keyed, 201).await["size"], 30);
    })
    .await;
}

#[tokio::test]
async fn anonymous_requests_get_401_before_their_input_is_read() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let not_json = app
            .request(Method::POST, "/api/v1/uploads")
            .header("content-type", "application/json")
            .body("{not json <script>")
            .send()
            .await
            .unwrap();
        let body = assert_error(not_json, 401, "unauthorized").await;
        assert!(!body.to_string().contains("script"), "{body}");
        let wrong_type = app
            .request(Method::POST, "/api/v1/uploads")
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_error(wrong_type, 401, "unauthorized").await;
        let bad = "not-a-uuid<b>";
        for (method, path) in [
            (Method::GET, format!("/api/v1/uploads/{bad}")),
            (Method::DELETE, format!("/api/v1/uploads/{bad}")),
            (Method::POST, format!("/api/v1/uploads/{bad}/complete")),
            (Method::PUT, chunk_url(bad, "minus-one")),
            (Method::GET, format!("/api/v1/files/{bad}")),
        ] {
            let resp = app.request(method.clone(), &path).send().await.unwrap();
            let body = assert_error(resp, 401, "unauthorized").await;
            assert!(!body.to_string().contains("<b>"), "{method} {path}: {body}");
        }
    })
    .await;
}

#[tokio::test]
async fn fractional_numeric_dates_and_any_case_of_bearer_are_accepted() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        // As PyJWT writes them: floats.
        let now = unix_now() as f64 + 0.25;
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": "py", "exp": now + 600.5, "iat": now, "nbf": now - 1.5, "max_size": 100}),
            &jsonwebtoken::EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes()),
        )
        .unwrap();
        for (i, scheme) in ["Bearer", "bearer", "BEARER", "BeArEr"].into_iter().enumerate() {
            for credential in [token.as_str(), TEST_API_KEY] {
                let resp = app
                    .request(Method::POST, "/api/v1/uploads")
                    .header("authorization", format!("{scheme} {credential}"))
                    .json(&json!({"filename": format!("f{i}"), "size": 10}))
                    .send()
                    .await
                    .unwrap();
                expect_json(resp, 201).await;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_create_must_be_json() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let body = r#"{"filename":"a.txt","size":3}"#;
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/xml",
            "not a type",
        ] {
            let resp = app
                .request(Method::POST, "/api/v1/uploads")
                .bearer_auth(TEST_API_KEY)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            let err = assert_error(resp, 415, "unsupported_content_type").await;
            assert!(
                err["message"]
                    .as_str()
                    .unwrap()
                    .contains("application/json"),
                "{err}"
            );
        }
        for ct in [
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("application/merge-patch+json"),
            None,
        ] {
            let mut req = app
                .request(Method::POST, "/api/v1/uploads")
                .bearer_auth(TEST_API_KEY)
                .body(body);
            if let Some(ct) = ct {
                req = req.header("content-type", ct);
            }
            expect_json(req.send().await.unwrap(), 201).await;
        }
    })
    .await;
}

#[tokio::test]
async fn unknown_create_fields_are_named_in_warnings() {
    bounded(async {
        let app = spawn_app().await;
        let resp = app
            .create(json!({"filename": "a.txt", "size": 3, "sha_256": "ab", "chunksize": 5}))
            .await;
        let created = expect_json(resp, 201).await;
        let warnings = created["warnings"].as_array().expect("warnings").clone();
        assert_eq!(warnings.len(), 2, "{created}");
        for field in ["sha_256", "chunksize"] {
            assert!(
                warnings.iter().any(|w| w.as_str().unwrap().contains(field)),
                "{field}: {created}"
            );
        }
        let clean = expect_json(app.create(json!({"filename": "b", "size": 3})).await, 201).await;
        assert!(clean.get("warnings").is_none(), "{clean}");
    })
    .await;
}

#[tokio::test]
async fn download_names_cannot_climb_hide_their_extension_or_decode() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let cases = [
            ("..", "__"),
            (".", "_"),
            ("%2e%2e%2fetc", "_2e_2e_2fetc"),
            ("evil\u{202e}gpj.exe", "evilgpj.exe"),
            ("a\u{2066}b\u{200f}.txt", "ab.txt"),
        ];
        for (name, fallback) in cases {
            let created = expect_json(
                app.request(Method::POST, "/api/v1/uploads")
                    .bearer_auth(TEST_API_KEY)
                    .json(&json!({"filename": name, "size": 3}))
                    .send()
                    .await
                    .unwrap(),
                201,
            )
            .await;
            let id = created["id"].as_str().unwrap();
            let put = app
                .request(Method::PUT, &chunk_url(id, 0))
                .bearer_auth(TEST_API_KEY)
                .body(b"abc".to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(put.status(), 200);
            let done = app
                .request(Method::POST, &format!("/api/v1/uploads/{id}/complete"))
                .bearer_auth(TEST_API_KEY)
                .send()
                .await
                .unwrap();
            expect_json(done, 200).await;
            let file = app
                .request(Method::GET, &format!("/api/v1/files/{id}"))
                .bearer_auth(TEST_API_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(file.status(), 200);
            let cd = file.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                cd.contains(&format!("filename=\"{fallback}\"")),
                "{name:?}: {cd}"
            );
            assert!(
                !cd.contains("\"..\"") && !cd.contains("''..;") && !cd.ends_with("''.."),
                "{name:?}: {cd}"
            );
            assert!(
                !cd.contains("%E2%80%AE") && !cd.contains("%E2%81%A6"),
                "bidi controls are dropped: {cd}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_percent_encoded_file_path_gets_the_download_rules() {
    bounded(async {
        let app = spawn_with_auth(|s| s.auth.public_downloads = true).await;
        let created = expect_json(
            app.request(Method::POST, "/api/v1/uploads")
                .bearer_auth(TEST_API_KEY)
                .json(&json!({"filename": "open.txt", "size": 3}))
                .send()
                .await
                .unwrap(),
            201,
        )
        .await;
        let id = created["id"].as_str().unwrap();
        for (method, path) in [
            (Method::PUT, chunk_url(id, 0)),
            (Method::POST, format!("/api/v1/uploads/{id}/complete")),
        ] {
            let mut req = app.request(method, &path).bearer_auth(TEST_API_KEY);
            if path.contains("chunks") {
                req = req.body(b"abc".to_vec());
            }
            assert!(req.send().await.unwrap().status().is_success());
        }
        // Routed by its decoded form, so answered by the download's rules:
        // public downloads need no credentials there either.
        for path in [
            format!("/api/v1/files/{id}"),
            format!("/api/v1/%66iles/{id}"),
        ] {
            let resp = app.request(Method::GET, &path).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            assert_eq!(resp.bytes().await.unwrap().as_ref(), b"abc");
        }
    })
    .await;
}
