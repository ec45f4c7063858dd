//! Live progress across instances: two apps share one Redis; the chunks go
//! to one, the event stream is read from the other, which learns of them by
//! reading the store (it gets no notice of another instance's changes).
//!
//! Included only by `tests/api_redis.rs`.

use std::time::Duration;

use crate::helpers::*;
use crate::sse_client::{open_at, Sse};

#[tokio::test]
async fn a_stream_on_one_instance_sees_progress_made_through_another() {
    bounded(async {
        let a = spawn_app().await;
        let shared = a.redis.as_ref().expect("a Redis app").store_settings();
        let b = spawn_app_on(None, |s| s.store = shared).await;
        let data = test_data(3000, 21);
        let upload = a.create_for(&data, 1024).await;
        let id = upload["id"].as_str().unwrap().to_owned();
        let mut sse = Sse::of(open_at(&b.address, &id, None, None).await);
        assert_eq!(
            sse.expect("upload.progress").await.json()["bytes_received"],
            0
        );
        let chunks = chunks_of(&data, 1024);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let sent = std::time::Instant::now();
            assert_eq!(a.put_chunk(&id, i as u64, chunk).await.status(), 200);
            let progress = sse.expect("upload.progress").await.json();
            assert_eq!(progress["bytes_received"], (1024 * (i + 1)).min(3000));
            // Seen by B's poll of the store, within about its interval.
            assert!(
                sent.elapsed() < Duration::from_secs(3),
                "{:?}",
                sent.elapsed()
            );
        }
        assert_eq!(a.complete(&id).await.status(), 200);
        let done = sse.expect("upload.completed").await.json();
        assert_eq!(done["file"]["sha256"], sha256_hex(&data));
    })
    .await;
}
