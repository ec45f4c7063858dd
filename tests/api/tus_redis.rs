//! The tus endpoint of several tranche processes sharing one Redis and one
//! data directory (Redis only: the embedded store belongs to one process).
//! The offset is the store's, so a PATCH on one process and a PATCH on the
//! other from the same offset race exactly as on one process.

use std::time::Duration;

use reqwest::Client;

use crate::helpers::*;
use crate::tus_client::*;
use crate::tus_faults::{offset_after_cut, RawPatch};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test]
async fn tus_an_upload_moves_between_processes_and_racing_patches_across_them_do_not_mix() {
    bounded_for(Duration::from_secs(90), async {
        let redis = RedisServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let client = client();
        let a = ServerProcess::start(dir.path(), &data_dir, Some(&redis), &client).await;
        let b = ServerProcess::start(dir.path(), &data_dir, Some(&redis), &client).await;
        let on_a = Tus::at(client.clone(), &a.base);
        let on_b = Tus::at(client.clone(), &b.base);

        // Created on A, continued on B, finished on A: each sees the other's
        // offset at once.
        let data = test_data(30_000, 61);
        let url_a = on_a.create(30_000, None).await;
        let url_b = on_b.url(url_a.path());
        assert_eq!(on_b.offset_of(&url_b).await, 0);
        on_a.patch_ok(&url_a, 0, &data[..10_000]).await;
        assert_eq!(on_b.offset_of(&url_b).await, 10_000);
        on_b.patch(&url_b, 0, &data[..10_000]).await.expect(&[409]);
        on_b.patch_ok(&url_b, 10_000, &data[10_000..20_000]).await;
        on_a.patch_ok(&url_a, 20_000, &data[20_000..]).await;
        on_b.assert_file(&url_b, &data).await;

        // Six bodies from one offset, alternating between the processes.
        let len = 256 * 1024;
        let bodies: Vec<Vec<u8>> = (0..6).map(|i| test_data(len, 70 + i)).collect();
        let url = on_a.create(len as u64, None).await;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(bodies.len()));
        let racers: Vec<_> = bodies
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, body)| {
                let tus = if i % 2 == 0 {
                    on_a.clone()
                } else {
                    on_b.clone()
                };
                let url = tus.url(url.path());
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let req = tus.patch_request(&url, 0, &body);
                    barrier.wait().await;
                    tus.send(req).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for r in racers {
            answers.push(r.await.unwrap());
        }
        let winners: Vec<usize> = (0..6).filter(|&i| answers[i].status == 204).collect();
        let all: Vec<String> = answers.iter().map(ToString::to_string).collect();
        assert_eq!(winners.len(), 1, "exactly one wins:\n{}", all.join("\n"));
        for (i, answer) in answers.iter().enumerate() {
            if i != winners[0] {
                assert!([409, 423].contains(&answer.status), "loser {i}: {answer}");
            }
        }
        on_a.assert_file(&url, &bodies[winners[0]]).await;
        on_b.assert_file(&on_b.url(url.path()), &bodies[winners[0]])
            .await;
    })
    .await
}

#[tokio::test]
async fn tus_a_patch_cut_on_one_process_resumes_on_the_other() {
    bounded_for(Duration::from_secs(90), async {
        let redis = RedisServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let client = client();
        let a = ServerProcess::start(dir.path(), &data_dir, Some(&redis), &client).await;
        let b = ServerProcess::start(dir.path(), &data_dir, Some(&redis), &client).await;
        let on_a = Tus::at(client.clone(), &a.base);
        let on_b = Tus::at(client.clone(), &b.base);

        let data = test_data(100_000, 62);
        let url_a = on_a.create(100_000, None).await;
        on_a.patch_ok(&url_a, 0, &data[..10_000]).await;
        let mut cut = RawPatch::start(&url_a, 10_000, 90_000).await;
        cut.send(&data[10_000..40_000]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        cut.hang_up().await;

        // The load balancer sends the client's next requests to B.
        let url_b = on_b.url(url_a.path());
        let offset = offset_after_cut(&on_b, &url_b, 10_000).await;
        assert!(offset > 10_000 && offset <= 40_000, "offset {offset} on B");
        on_b.patch_ok(&url_b, offset, &data[offset as usize..])
            .await;
        on_a.assert_file(&url_a, &data).await;
    })
    .await
}
