//! The tus endpoint's settings, `[tus] enabled` and `[tus] path`, on the real
//! binary with a `config.toml` (so these tests name no Rust field): the
//! endpoint moves with its path, and is gone when disabled while API v1 stays.

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
