//! The tus endpoint's settings and limits: `[tus] enabled` and `[tus] path`
//! on the real binary with a `config.toml` (so these tests name no Rust
//! field), the endpoint moving with its path and gone when disabled while
//! API v1 stays; and `[limits]` holding for tus uploads as for API v1.

use std::time::Duration;

use reqwest::{Client, Method};
use serde_json::json;

use crate::helpers::*;
use crate::tus_client::*;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The binary with `config` added to its `config.toml`, on the battery's
/// state store (with Redis, a redis-server that lives as long as it).
async fn server_with(
    dir: &std::path::Path,
    config: &str,
    client: &Client,
) -> (ServerProcess, Option<RedisServer>) {
    let redis = match crate::BACKEND {
        Backend::Embedded => None,
        Backend::Redis => Some(RedisServer::start().await),
    };
    let data_dir = dir.join("data");
    let server =
        ServerProcess::start_with(dir, &data_dir, redis.as_ref(), client, config, None).await;
    (server, redis)
}

#[tokio::test]
async fn tus_a_configured_path_moves_the_endpoint_there() {
    bounded_for(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let client = client();
        let (server, _redis) =
            server_with(dir.path(), "[tus]\npath = \"/uploads/tus/\"\n", &client).await;
        let mut tus = Tus::at(client.clone(), &server.base);
        tus.path = "/uploads/tus/".into();

        let options = tus.options().await.expect(&[200, 204]);
        assert!(list(options.header("tus-version")).contains(&TUS_VERSION.to_owned()));
        let url = tus.create(5, None).await;
        assert!(url.path().starts_with("/uploads/tus/"), "{url}");
        tus.patch_ok(&url, 0, b"moved").await;
        tus.assert_file(&url, b"moved").await;

        // Nothing is left at the default path.
        let old = client
            .post(server.url(TUS_PATH))
            .header("Tus-Resumable", TUS_VERSION)
            .header("Upload-Length", "5")
            .send()
            .await
            .unwrap();
        assert_eq!(old.status(), 404);
    })
    .await
}

#[tokio::test]
async fn tus_disabled_there_is_no_endpoint_and_api_v1_still_works() {
    bounded_for(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let client = client();
        let (server, _redis) = server_with(dir.path(), "[tus]\nenabled = false\n", &client).await;

        let created = client
            .post(server.url(TUS_PATH))
            .header("Tus-Resumable", TUS_VERSION)
            .header("Upload-Length", "5")
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 404);
        let options = client
            .request(Method::OPTIONS, server.url(TUS_PATH))
            .send()
            .await
            .unwrap();
        assert!(
            options.headers().get("tus-version").is_none(),
            "a disabled endpoint advertises nothing: {:?}",
            options.headers()
        );

        let v1 = client
            .post(server.url("/api/v1/uploads"))
            .json(&json!({"filename": "v1.bin", "size": 3}))
            .send()
            .await
            .unwrap();
        assert_eq!(v1.status(), 201);
    })
    .await
}

#[tokio::test]
async fn tus_uploads_count_against_max_pending_bytes_as_at_api_v1() {
    bounded(async {
        let app =
            spawn_app_with(|s| s.limits.max_pending_bytes = bytesize::ByteSize::b(10_000)).await;
        let tus = Tus::new(&app);
        let first = tus.create(6000, None).await;
        // Room for 4000 more: a second 6000 is refused as at API v1.
        let answer = tus.post(&[("Upload-Length", "6000")]).await.expect(&[507]);
        assert!(answer.header("location").is_none(), "{answer}");
        // A deferred length announces nothing; its bytes still may not pass
        // the bound.
        let deferred = tus.location(
            &tus.post(&[("Upload-Defer-Length", "1")])
                .await
                .expect(&[201]),
        );
        let answer = tus.patch(&deferred, 0, &test_data(6000, 81)).await;
        assert!([413, 507].contains(&answer.status), "{answer}");
        assert!(tus.offset_of(&deferred).await <= 4000);
        tus.patch_ok(&first, 0, &test_data(6000, 82)).await;
    })
    .await
}
