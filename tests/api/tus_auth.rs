//! Who may talk to the tus endpoint: callers with credentials, and browser
//! pages of other origins (CORS). The spec leaves authorisation to the server
//! ("the implementation of authentication and authorization is left for the
//! Server to decide"); tranche's contract: no credential gets 401, the API key
//! may do everything, a create token may create uploads and then drive the
//! ones it created, never another token's.

use reqwest::Url;
use tranche::guards::auth::Claims;

use crate::helpers::*;
use crate::tus_client::*;

fn create_token(sub: &str) -> String {
    test_tokens()
        .mint(&Claims {
            exp: tranche::guards::auth::token::unix_now() + 600,
            sub: Some(sub.into()),
            max_size: Some(1 << 20),
            ..Claims::default()
        })
        .unwrap()
}

/// The upload behind `url` as the API key sees it.
async fn offset_by_key(app: &TestApp, url: &Url) -> u64 {
    Tus::with_bearer(app, TEST_API_KEY).offset_of(url).await
}

#[tokio::test]
async fn tus_without_credentials_every_request_gets_401_and_changes_nothing() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let anonymous = Tus::new(&app);
        let keyed = Tus::with_bearer(&app, TEST_API_KEY);
        let url = keyed.create(10, None).await;
        keyed.patch_ok(&url, 0, b"01234").await;

        let created = anonymous
            .post(&[("Upload-Length", "10")])
            .await
            .expect(&[401]);
        assert!(created.header("location").is_none(), "{created}");
        let head = anonymous.head(&url).await.expect(&[401]);
        assert!(head.offset().is_none(), "{head}: no offset to strangers");
        anonymous.patch(&url, 5, b"56789").await.expect(&[401]);
        anonymous.delete(&url).await.expect(&[401]);
        // A credential that is not one: same as none.
        let forged = Tus::with_bearer(&app, "not-a-key-nor-a-token");
        forged.patch(&url, 5, b"56789").await.expect(&[401]);

        assert_eq!(offset_by_key(&app, &url).await, 5);
        keyed.patch_ok(&url, 5, b"56789").await;
        keyed.assert_file(&url, b"0123456789").await;
    })
    .await
}

#[tokio::test]
async fn tus_the_api_key_may_do_everything() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let keyed = Tus::with_bearer(&app, TEST_API_KEY);
        let data = test_data(5000, 31);
        let url = keyed.upload(&data, 2000, None).await;
        keyed.assert_file(&url, &data).await;
        keyed.delete(&url).await.expect(&[204]);
        keyed.head(&url).await.expect(&[404, 410]);

        let part = keyed.location(
            &keyed
                .post(&[("Upload-Length", "3"), ("Upload-Concat", "partial")])
                .await
                .expect(&[201]),
        );
        keyed.patch_ok(&part, 0, b"abc").await;
        let concat = format!("final;{}", part.path());
        let fin = keyed.location(
            &keyed
                .post(&[("Upload-Concat", &concat)])
                .await
                .expect(&[201]),
        );
        keyed
            .completed_view(&upload_id(&fin), std::time::Duration::from_secs(10))
            .await;
        keyed.assert_file(&fin, b"abc").await;
    })
    .await
}

#[tokio::test]
async fn tus_a_create_token_drives_its_own_uploads_and_no_one_elses() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let alice = Tus::with_bearer(&app, &create_token("alice"));
        let bob = Tus::with_bearer(&app, &create_token("bob"));
        let keyed = Tus::with_bearer(&app, TEST_API_KEY);

        let data = test_data(3000, 32);
        let url = alice.create(3000, None).await;
        alice.patch_ok(&url, 0, &data[..1000]).await;
        assert_eq!(alice.offset_of(&url).await, 1000);

        // Bob's token is valid, just not for Alice's upload.
        let head = bob.head(&url).await.expect(&[403, 404]);
        assert!(head.offset().is_none(), "{head}");
        bob.patch(&url, 1000, &test_data(2000, 33))
            .await
            .expect(&[403, 404]);
        bob.delete(&url).await.expect(&[403, 404]);
        assert_eq!(offset_by_key(&app, &url).await, 1000);

        alice.patch_ok(&url, 1000, &data[1000..]).await;
        keyed.assert_file(&url, &data).await;

        // Bob's own upload is his to terminate, and Alice's to leave alone.
        let his = bob.create(10, None).await;
        alice.delete(&his).await.expect(&[403, 404]);
        bob.delete(&his).await.expect(&[204]);
        keyed.head(&his).await.expect(&[404, 410]);
    })
    .await
}

#[tokio::test]
async fn tus_an_upload_scoped_token_of_another_upload_is_refused() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let keyed = Tus::with_bearer(&app, TEST_API_KEY);
        let url = keyed.create(10, None).await;
        // A token minted for some other upload id.
        let other = test_tokens()
            .mint(&Claims {
                exp: tranche::guards::auth::token::unix_now() + 600,
                upload_id: Some(uuid::Uuid::new_v4()),
                ..Claims::default()
            })
            .unwrap();
        let stranger = Tus::with_bearer(&app, &other);
        stranger.head(&url).await.expect(&[403, 404]);
        stranger
            .patch(&url, 0, b"0123456789")
            .await
            .expect(&[403, 404]);
        assert_eq!(offset_by_key(&app, &url).await, 0);
        // The token of this very upload may drive it.
        let own = test_tokens()
            .mint(&Claims {
                exp: tranche::guards::auth::token::unix_now() + 600,
                upload_id: Some(upload_id(&url).parse().unwrap()),
                ..Claims::default()
            })
            .unwrap();
        let owner = Tus::with_bearer(&app, &own);
        owner.patch_ok(&url, 0, b"0123456789").await;
        keyed.assert_file(&url, b"0123456789").await;
    })
    .await
}

const PAGE: &str = "https://app.example.com";

#[tokio::test]
async fn tus_a_page_of_an_allowed_origin_may_send_and_read_the_tus_headers() {
    bounded(async {
        let app = spawn_app_with(|s| s.cors.allowed_origins = vec![PAGE.into()]).await;
        let tus = Tus::new(&app);
        let url = tus.create(10, None).await;
        // What tus-js-client and Uppy send from a browser.
        let sent = [
            "tus-resumable",
            "upload-length",
            "upload-offset",
            "upload-metadata",
            "upload-defer-length",
            "upload-concat",
            "upload-checksum",
            "x-http-method-override",
            "content-type",
            "authorization",
        ];
        for (target, method) in [
            (TUS_PATH, "POST"),
            (url.as_str(), "PATCH"),
            (url.as_str(), "HEAD"),
            (url.as_str(), "DELETE"),
        ] {
            let resp = tus
                .bare(reqwest::Method::OPTIONS, target)
                .header("Origin", PAGE)
                .header("Access-Control-Request-Method", method)
                .header("Access-Control-Request-Headers", sent.join(", "))
                .send()
                .await
                .unwrap();
            assert!(
                resp.status().is_success(),
                "{method} preflight: {}",
                resp.status()
            );
            let h = |name: &str| {
                resp.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_ascii_lowercase())
                    .unwrap_or_default()
            };
            assert_eq!(h("access-control-allow-origin"), PAGE.to_ascii_lowercase());
            assert!(h("access-control-allow-methods").contains(&method.to_ascii_lowercase()));
            let allowed = h("access-control-allow-headers");
            for name in sent {
                assert!(allowed.contains(name), "{name} not allowed: {allowed}");
            }
        }
        // And reads what the protocol answers with.
        let answer = tus
            .send(
                tus.patch_request(&url, 0, b"0123456789")
                    .header("Origin", PAGE),
            )
            .await
            .expect(&[204]);
        assert_eq!(answer.header("access-control-allow-origin"), Some(PAGE));
        let exposed = answer
            .header("access-control-expose-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        for name in [
            "location",
            "tus-resumable",
            "tus-version",
            "tus-extension",
            "tus-max-size",
            "tus-checksum-algorithm",
            "upload-offset",
            "upload-length",
            "upload-metadata",
            "upload-defer-length",
            "upload-concat",
            "upload-expires",
        ] {
            assert!(exposed.contains(name), "{name} not exposed: {exposed}");
        }
    })
    .await
}

fn create_token_up_to(sub: &str, max_size: u64) -> String {
    test_tokens()
        .mint(&Claims {
            exp: tranche::guards::auth::token::unix_now() + 600,
            sub: Some(sub.into()),
            max_size: Some(max_size),
            ..Claims::default()
        })
        .unwrap()
}

#[tokio::test]
async fn tus_a_final_upload_cannot_take_another_callers_partials() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let alice = Tus::with_bearer(&app, &create_token("alice"));
        let bob = Tus::with_bearer(&app, &create_token("bob"));
        let secret = alice.location(
            &alice
                .post(&[("Upload-Length", "6"), ("Upload-Concat", "partial")])
                .await
                .expect(&[201]),
        );
        alice.patch_ok(&secret, 0, b"secret").await;
        // Bob names Alice's partial in a final of his own: he would get her
        // bytes as his file.
        let concat = format!("final;{}", secret.path());
        let answer = bob.post(&[("Upload-Concat", &concat)]).await;
        assert!([403, 404].contains(&answer.status), "{answer}");
        assert!(answer.header("location").is_none(), "{answer}");
        // Alice may.
        let mine = alice.location(
            &alice
                .post(&[("Upload-Concat", &concat)])
                .await
                .expect(&[201]),
        );
        Tus::with_bearer(&app, TEST_API_KEY)
            .assert_file(&mine, b"secret")
            .await;
    })
    .await
}

#[tokio::test]
async fn tus_a_create_tokens_max_size_holds_at_creation() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let carol = Tus::with_bearer(&app, &create_token_up_to("carol", 1000));
        let answer = carol.post(&[("Upload-Length", "1001")]).await;
        assert!([403, 413].contains(&answer.status), "{answer}");
        assert!(answer.header("location").is_none(), "{answer}");
        carol
            .post(&[("Upload-Length", "1000")])
            .await
            .expect(&[201]);
    })
    .await
}

#[tokio::test]
async fn tus_a_create_tokens_max_size_holds_for_a_deferred_length() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let carol = Tus::with_bearer(&app, &create_token_up_to("carol", 1000));
        let keyed = Tus::with_bearer(&app, TEST_API_KEY);
        // The length comes later; the token's limit still holds, for the
        // bytes and for the length when it is told.
        let url = carol.location(
            &carol
                .post(&[("Upload-Defer-Length", "1")])
                .await
                .expect(&[201]),
        );
        carol.patch_ok(&url, 0, &test_data(900, 34)).await;
        let answer = carol.patch(&url, 900, &test_data(200, 35)).await;
        assert!([403, 413].contains(&answer.status), "{answer}");
        let offset = keyed.offset_of(&url).await;
        assert!(offset <= 1000, "offset {offset} past the token's max_size");
        let req = carol
            .patch_request(&url, offset, b"")
            .header("Upload-Length", "5000");
        let answer = carol.send(req).await;
        assert!([403, 413].contains(&answer.status), "{answer}");
    })
    .await
}

#[tokio::test]
async fn tus_a_create_tokens_max_size_holds_for_a_final_upload() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let carol = Tus::with_bearer(&app, &create_token_up_to("carol", 1000));
        // Each partial within the limit, their sum not.
        let mut parts = Vec::new();
        for seed in [36, 37] {
            let part = carol.location(
                &carol
                    .post(&[("Upload-Length", "800"), ("Upload-Concat", "partial")])
                    .await
                    .expect(&[201]),
            );
            carol.patch_ok(&part, 0, &test_data(800, seed)).await;
            parts.push(part);
        }
        let concat = format!("final;{} {}", parts[0].path(), parts[1].path());
        let answer = carol.post(&[("Upload-Concat", &concat)]).await;
        assert!([403, 413].contains(&answer.status), "{answer}");
        assert!(answer.header("location").is_none(), "{answer}");
    })
    .await
}

#[tokio::test]
async fn tus_a_create_tokens_content_types_and_max_uploads_hold() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let token = test_tokens()
            .mint(&Claims {
                exp: tranche::guards::auth::token::unix_now() + 600,
                sub: Some("course-101".into()),
                content_types: Some(vec!["video/*".into()]),
                max_uploads: Some(2),
                ..Claims::default()
            })
            .unwrap();
        let dave = Tus::with_bearer(&app, &token);
        let typed = |t: &str| format!("filename {},filetype {}", b64(b"f"), b64(t.as_bytes()));
        // The type a tus client declares is the upload's type, held to the
        // token's claims as at API v1 (no type: application/octet-stream).
        for meta in [typed("image/png"), format!("filename {}", b64(b"f.bin"))] {
            let answer = dave
                .post(&[("Upload-Length", "3"), ("Upload-Metadata", &meta)])
                .await
                .expect(&[403]);
            assert!(answer.header("location").is_none(), "{answer}");
        }
        dave.create(3, Some(&typed("video/mp4"))).await;
        dave.create(3, Some(&typed("video/webm"))).await;
        // Its two uploads are made.
        dave.post(&[
            ("Upload-Length", "3"),
            ("Upload-Metadata", &typed("video/mp4")),
        ])
        .await
        .expect(&[403]);
    })
    .await
}

#[tokio::test]
async fn tus_a_create_tokens_content_types_hold_for_a_final_upload() {
    bounded(async {
        let app = spawn_with_auth(|_| {}).await;
        let token = test_tokens()
            .mint(&Claims {
                exp: tranche::guards::auth::token::unix_now() + 600,
                sub: Some("course-102".into()),
                content_types: Some(vec!["video/*".into()]),
                ..Claims::default()
            })
            .unwrap();
        let erin = Tus::with_bearer(&app, &token);
        let typed = |t: &str| format!("filetype {}", b64(t.as_bytes()));
        let video = typed("video/mp4");
        let part = erin.location(
            &erin
                .post(&[
                    ("Upload-Length", "3"),
                    ("Upload-Concat", "partial"),
                    ("Upload-Metadata", &video),
                ])
                .await
                .expect(&[201]),
        );
        erin.patch_ok(&part, 0, b"abc").await;
        let concat = format!("final;{}", part.path());
        // The final is the file; its declared type (or none) is what counts.
        for meta in [Some(typed("image/png")), None] {
            let answer = final_upload_as(&erin, &concat, meta.as_deref()).await;
            assert_eq!(answer.status, 403, "{answer}");
        }
        final_upload_as(&erin, &concat, Some(&video))
            .await
            .expect(&[201]);
    })
    .await
}

async fn final_upload_as(tus: &Tus, concat: &str, metadata: Option<&str>) -> Answer {
    let mut headers = vec![("Upload-Concat", concat)];
    if let Some(m) = metadata {
        headers.push(("Upload-Metadata", m));
    }
    tus.post(&headers).await
}
