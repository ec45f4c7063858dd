//! Crash recovery: the real binary is killed with SIGKILL mid-upload and
//! started again on the same data directory (and, with the Redis backend, the
//! same Redis); every acknowledged chunk must still be there.

use std::time::Duration;

use reqwest::Client;
use serde_json::{json, Value};

use crate::helpers::*;

/// The store the restarted binary runs on: with the Redis backend, one
/// redis-server outlives both tranche processes.
async fn store_for_restart() -> Option<RedisServer> {
    match crate::BACKEND {
        Backend::Embedded => None,
        Backend::Redis => Some(RedisServer::start().await),
    }
}

async fn put(
    client: &Client,
    server: &ServerProcess,
    id: &str,
    index: usize,
    body: Vec<u8>,
) -> Value {
    let resp = client
        .put(server.url(&chunk_url(id, index)))
        .body(body)
        .send()
        .await
        .unwrap();
    expect_json(resp, 200).await
}

#[tokio::test]
async fn acknowledged_chunks_survive_sigkill_and_the_upload_finishes_after_restart() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let client = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let cs = 4096;
        let data = test_data(10 * cs + 321, 101);
        let chunks = chunks_of(&data, cs);
        assert_eq!(chunks.len(), 11);

        let redis = store_for_restart().await;
        let mut server = ServerProcess::start(dir.path(), &data_dir, redis.as_ref(), &client).await;
        let created = expect_json(
            client
                .post(server.url("/api/v1/uploads"))
                .json(&json!({"filename": "r.bin", "size": data.len(), "chunk_size": cs, "sha256": sha256_hex(&data)}))
                .send()
                .await
                .unwrap(),
            201,
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(created["chunk_size"], cs as u64);

        // Half the chunks, out of order, so both the hashed prefix and
        // chunks beyond it must be recovered.
        let sent = [0usize, 1, 4, 7, 2, 10];
        for &i in &sent {
            put(&client, &server, &id, i, chunks[i].clone()).await;
        }
        server.kill();

        let server = ServerProcess::start(dir.path(), &data_dir, redis.as_ref(), &client).await;
        let view = expect_json(client.get(server.url(&format!("/api/v1/uploads/{id}"))).send().await.unwrap(), 200).await;
        let mut acked: Vec<u64> = sent.iter().map(|&i| i as u64).collect();
        acked.sort();
        let missing: Vec<u64> = (0..11).filter(|i| !acked.contains(i)).collect();
        assert_eq!(view["status"], "uploading");
        assert_eq!(view["missing_chunks"], json!(missing));
        assert_eq!(view["received_chunks"], sent.len());
        let acked_bytes: usize = sent.iter().map(|&i| chunks[i].len()).sum();
        assert_eq!(view["bytes_received"], acked_bytes);

        for &i in &missing {
            put(&client, &server, &id, i as usize, chunks[i as usize].clone()).await;
        }
        let done = expect_json(
            client
                .post(server.url(&format!("/api/v1/uploads/{id}/complete")))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(done["file"]["sha256"], sha256_hex(&data));
        let body = client.get(server.url(&format!("/api/v1/files/{id}"))).send().await.unwrap();
        assert_eq!(body.status(), 200);
        assert_eq!(sha256_hex(&body.bytes().await.unwrap()), sha256_hex(&data));
    })
    .await
}

#[tokio::test]
async fn usage_and_the_dedup_index_survive_a_restart() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let client = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let quota = "[quota]\nmax_pending_bytes = 5000";
        let redis = store_for_restart().await;
        let start = |redis| ServerProcess::start_with(dir.path(), &data_dir, redis, &client, quota, None);
        let mut server = start(redis.as_ref()).await;
        let create = |server: &ServerProcess, body: Value| {
            client.post(server.url("/api/v1/uploads")).json(&body).send()
        };
        let data = test_data(3000, 102);
        let stored = json!({"filename": "s.bin", "size": 3000, "chunk_size": 4096, "sha256": sha256_hex(&data)});
        let first = expect_json(create(&server, stored.clone()).await.unwrap(), 201).await;
        let id = first["id"].as_str().unwrap().to_owned();
        put(&client, &server, &id, 0, data.clone()).await;
        let done = client.post(server.url(&format!("/api/v1/uploads/{id}/complete"))).send().await.unwrap();
        expect_json(done, 200).await;
        let pending = json!({"filename": "p.bin", "size": 4000});
        expect_json(create(&server, pending).await.unwrap(), 201).await;
        server.kill();

        let server = start(redis.as_ref()).await;
        // With authentication off everyone is one owner, `open`.
        let usage = client.get(server.url("/api/v1/usage")).send().await.unwrap();
        let usage = expect_json(usage, 200).await;
        assert_eq!(
            usage["owners"],
            json!([{"owner": "open", "stored_bytes": 3000, "pending_bytes": 4000, "max_pending_bytes": 5000}])
        );
        let over = create(&server, json!({"filename": "o.bin", "size": 1001})).await.unwrap();
        assert_error(over, 507, "quota_exceeded").await;
        let again = expect_json(create(&server, stored).await.unwrap(), 201).await;
        assert_eq!(again["status"], "completed", "the index outlived the process");
    })
    .await
}
