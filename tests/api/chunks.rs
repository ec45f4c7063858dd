//! `PUT /api/v1/uploads/{id}/chunks/{index}`: order, parallelism, resends,
//! length and digest checks, cut-off bodies, hostile ids, and two writers
//! racing for one chunk.

use std::time::Duration;

use base64::Engine;
use futures::future::join_all;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

const CS: usize = 16 * 1024;

/// Creates an upload of `data` cut into `CS` chunks; returns its id.
async fn start(app: &TestApp, data: &[u8]) -> String {
    let created = app.create_for(data, CS as u64).await;
    assert_eq!(created["chunk_size"], CS as u64);
    created["id"].as_str().unwrap().to_owned()
}

fn missing(view: &Value) -> Vec<u64> {
    view["missing_chunks"]
        .as_array()
        .expect("missing_chunks")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

async fn complete_and_check(app: &TestApp, id: &str, data: &[u8]) {
    let done = expect_json(app.complete(id).await, 200).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["file"]["sha256"], sha256_hex(data));
    let body = app.download(id).await.bytes().await.unwrap();
    assert_eq!(
        sha256_hex(&body),
        sha256_hex(data),
        "downloaded bytes differ"
    );
}

#[tokio::test]
async fn parallel_out_of_order_chunks_assemble_into_the_right_file() {
    bounded(async {
        let app = spawn_app().await;
        // Last chunk deliberately short.
        let data = test_data(8 * CS - 1000, 21);
        let id = start(&app, &data).await;
        let chunks = chunks_of(&data, CS);
        assert_eq!(chunks.len(), 8);
        let mut order: Vec<usize> = (0..8).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
        let answers = join_all(
            order
                .iter()
                .map(|&i| app.put_chunk(&id, i as u64, chunks[i].clone())),
        )
        .await;
        for (resp, &i) in answers.into_iter().zip(&order) {
            let body = expect_json(resp, 200).await;
            assert_eq!(body["index"], i as u64);
            assert_eq!(body["size"], chunks[i].len() as u64);
            assert_eq!(body["chunk_count"], 8);
        }
        let view = app.status_json(&id).await;
        assert_eq!(view["received_chunks"], 8);
        assert_eq!(view["bytes_received"], data.len() as u64);
        assert_eq!(missing(&view), Vec::<u64>::new());
        complete_and_check(&app, &id, &data).await;
    })
    .await
}

#[tokio::test]
async fn resending_a_received_chunk_answers_200_and_counts_nothing_more() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3 * CS, 22);
        let id = start(&app, &data).await;
        let chunks = chunks_of(&data, CS);
        let first = expect_json(app.put_chunk(&id, 1, chunks[1].clone()).await, 200).await;
        assert_eq!(first["received_chunks"], 1);
        assert_eq!(first["bytes_received"], CS as u64);
        let again = expect_json(app.put_chunk(&id, 1, chunks[1].clone()).await, 200).await;
        assert_eq!(again["received_chunks"], 1);
        assert_eq!(again["bytes_received"], CS as u64);
        let view = app.status_json(&id).await;
        assert_eq!(view["received_chunks"], 1);
        assert_eq!(view["bytes_received"], CS as u64);
        assert_eq!(missing(&view), vec![0, 2]);
    })
    .await
}

#[tokio::test]
async fn body_shorter_than_the_chunk_answers_400_and_leaves_it_missing() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3 * CS, 23);
        let id = start(&app, &data).await;
        let chunks = chunks_of(&data, CS);

        // Announced short (Content-Length smaller than the chunk).
        let resp = app.put_chunk(&id, 1, chunks[1][..CS - 1].to_vec()).await;
        let err = assert_error(resp, 400, "chunk_size_mismatch").await;
        assert_eq!(err["expected_size"], CS as u64, "{err}");

        // Streamed without a length, ending early.
        let short = chunks[2][..CS / 2].to_vec();
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(short)]);
        let resp = app
            .request(Method::PUT, &chunk_url(&id, 2))
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "chunk_size_mismatch").await;

        let view = app.status_json(&id).await;
        assert_eq!(view["received_chunks"], 0);
        assert_eq!(view["bytes_received"], 0);
        assert_eq!(missing(&view), vec![0, 1, 2]);

        // The same chunks sent whole afterwards make the right file.
        app.send_chunks(&id, &data, CS, 0..3).await;
        complete_and_check(&app, &id, &data).await;
    })
    .await
}

#[tokio::test]
async fn body_longer_than_the_chunk_answers_413_and_leaves_it_missing() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(2 * CS + 100, 24);
        let id = start(&app, &data).await;
        let chunks = chunks_of(&data, CS);

        let mut long = chunks[0].clone();
        long.push(0);
        let resp = app.put_chunk(&id, 0, long).await;
        assert_error(resp, 413, "chunk_size_mismatch").await;

        // The short last chunk padded to a full chunk size is too long as well.
        let mut padded = chunks[2].clone();
        padded.resize(CS, 0);
        assert_error(
            app.put_chunk(&id, 2, padded).await,
            413,
            "chunk_size_mismatch",
        )
        .await;

        let view = app.status_json(&id).await;
        assert_eq!(missing(&view), vec![0, 1, 2]);
        assert_eq!(view["bytes_received"], 0);

        app.send_chunks(&id, &data, CS, [2, 1, 0]).await;
        complete_and_check(&app, &id, &data).await;
    })
    .await
}

#[tokio::test]
async fn body_cut_off_midway_leaves_the_chunk_missing_and_resendable() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3 * CS, 25);
        let id = start(&app, &data).await;
        let chunks = chunks_of(&data, CS);

        // Half of chunk 1's bytes, then the client goes away.
        let mut raw = RawRequest::start(&app, "PUT", &chunk_url(&id, 1), CS).await;
        raw.send(&chunks[1][..CS / 2]).await;
        let (status, body) = raw.hang_up(Duration::from_secs(5)).await;
        if let Some(status) = status {
            // Nobody may read it, but if the server answers it must be a 400.
            assert_eq!(status, 400, "cut-off body answered {status}: {body}");
            let err: Value = serde_json::from_str(&body).expect("JSON error body");
            assert_eq!(err["error"], "body_incomplete", "{err}");
        }

        let view = app.status_json(&id).await;
        assert!(missing(&view).contains(&1), "{view}");
        assert_eq!(view["received_chunks"], 0);
        assert_eq!(view["bytes_received"], 0);

        // The server may still be noticing the hang-up; a client retries a 409.
        let mut resent = false;
        for _ in 0..50 {
            let resp = app.put_chunk(&id, 1, chunks[1].clone()).await;
            if resp.status() == 409 {
                assert_error(resp, 409, "chunk_in_progress").await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let body = expect_json(resp, 200).await;
            assert_eq!(body["received_chunks"], 1);
            assert_eq!(body["bytes_received"], CS as u64);
            resent = true;
            break;
        }
        assert!(resent, "chunk 1 stayed locked after its sender hung up");

        app.send_chunks(&id, &data, CS, [0, 2]).await;
        complete_and_check(&app, &id, &data).await;
    })
    .await
}

#[tokio::test]
async fn chunk_index_out_of_range_answers_400_chunk_out_of_range() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(2 * CS, 26);
        let id = start(&app, &data).await;
        assert_error(
            app.put_chunk(&id, 2, vec![0; CS]).await,
            400,
            "chunk_out_of_range",
        )
        .await;
        assert_error(
            app.put_chunk(&id, u64::MAX, vec![0; 10]).await,
            400,
            "chunk_out_of_range",
        )
        .await;
    })
    .await
}

#[tokio::test]
async fn non_integer_chunk_index_answers_400() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(2 * CS, 27);
        let id = start(&app, &data).await;
        for index in ["abc", "-1", "1.5", "0x1", "%20", "18446744073709551616"] {
            let resp = app
                .request(Method::PUT, &chunk_url(&id, index))
                .body(vec![0; 10])
                .send()
                .await
                .unwrap();
            assert_error(resp, 400, "invalid_request").await;
        }
    })
    .await
}

#[tokio::test]
async fn correct_content_digest_is_accepted_and_echoed_as_hex() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(2 * CS, 28);
        let id = start(&app, &data).await;
        let chunks = chunks_of(&data, CS);
        let resp = app
            .put_chunk_with_digest(&id, 0, chunks[0].clone(), &content_digest(&chunks[0]))
            .await;
        let body = expect_json(resp, 200).await;
        assert_eq!(body["sha256"], sha256_hex(&chunks[0]));
        // A resend with a digest is checked and echoed too.
        let resp = app
            .put_chunk_with_digest(&id, 0, chunks[0].clone(), &content_digest(&chunks[0]))
            .await;
        assert_eq!(
            expect_json(resp, 200).await["sha256"],
            sha256_hex(&chunks[0])
        );
    })
    .await
}

#[tokio::test]
async fn wrong_content_digest_answers_422_and_leaves_the_chunk_missing() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(2 * CS, 29);
        let id = start(&app, &data).await;
        let chunks = chunks_of(&data, CS);
        // The digest of the other chunk: well formed, wrong.
        let resp = app
            .put_chunk_with_digest(&id, 0, chunks[0].clone(), &content_digest(&chunks[1]))
            .await;
        assert_error(resp, 422, "digest_mismatch").await;
        let view = app.status_json(&id).await;
        assert_eq!(missing(&view), vec![0, 1]);
        assert_eq!(view["bytes_received"], 0);

        // Also on a resend of a received chunk: checked, refused, still counted once.
        app.send_chunks(&id, &data, CS, [1]).await;
        let resp = app
            .put_chunk_with_digest(&id, 1, chunks[1].clone(), &content_digest(&chunks[0]))
            .await;
        assert_error(resp, 422, "digest_mismatch").await;
        let view = app.status_json(&id).await;
        assert_eq!(missing(&view), vec![0]);
        assert_eq!(view["bytes_received"], CS as u64);
    })
    .await
}

/// The file's running hash is extended while an in-order chunk is written,
/// but only a chunk that counts moves it: refused bytes (a wrong digest) at
/// the hash's end leave no trace in the completed file's SHA-256.
#[tokio::test]
async fn refused_bytes_do_not_enter_the_files_hash() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3 * CS, 33);
        let id = start(&app, &data).await;
        let chunks = chunks_of(&data, CS);
        app.send_chunks(&id, &data, CS, [0]).await;
        let resp = app
            .put_chunk_with_digest(&id, 1, test_data(CS, 34), &content_digest(&chunks[1]))
            .await;
        assert_error(resp, 422, "digest_mismatch").await;
        app.send_chunks(&id, &data, CS, [1, 2]).await;
        complete_and_check(&app, &id, &data).await;
    })
    .await
}

/// A resend must carry the bytes that were stored: different ones (the
/// file changed under the client) are refused with 409 `chunk_conflict`,
/// and the stored chunk stays as it was.
#[tokio::test]
async fn resending_different_bytes_for_a_received_chunk_answers_409() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(2 * CS, 31);
        let id = start(&app, &data).await;
        app.send_chunks(&id, &data, CS, [0]).await;
        let other = test_data(CS, 32);
        assert_error(
            app.put_chunk(&id, 0, other.clone()).await,
            409,
            "chunk_conflict",
        )
        .await;
        // With its own (correct) digest too: the answer never names bytes
        // that were not stored.
        let resp = app
            .put_chunk_with_digest(&id, 0, other.clone(), &content_digest(&other))
            .await;
        assert_error(resp, 409, "chunk_conflict").await;
        let view = app.status_json(&id).await;
        assert_eq!(missing(&view), vec![1]);
        assert_eq!(view["bytes_received"], CS as u64);
        app.send_chunks(&id, &data, CS, [1]).await;
        complete_and_check(&app, &id, &data).await;
    })
    .await
}

/// `Content-Digest` is an RFC 8941 dictionary: a member named twice counts
/// with its last value; algorithms other than sha-256 are not checked, but
/// the answer still carries the chunk's SHA-256.
#[tokio::test]
async fn content_digest_takes_the_last_sha256_and_answers_with_the_hash() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3 * CS, 33);
        let id = start(&app, &data).await;
        let chunks = chunks_of(&data, CS);
        let good = content_digest(&chunks[0]);
        let bad = content_digest(&chunks[1]);
        let resp = app
            .put_chunk_with_digest(&id, 0, chunks[0].clone(), &format!("{good}, {bad}"))
            .await;
        assert_error(resp, 422, "digest_mismatch").await;
        let resp = app
            .put_chunk_with_digest(&id, 0, chunks[0].clone(), &format!("{bad}, {good}"))
            .await;
        assert_eq!(
            expect_json(resp, 200).await["sha256"],
            sha256_hex(&chunks[0])
        );

        // The same list on two header lines (RFC 9110 §5.3): still the last.
        let two_lines = |first: &str, second: &str| {
            app.request(Method::PUT, &chunk_url(&id, 2))
                .header("content-digest", first)
                .header("content-digest", second)
                .body(chunks[2].clone())
                .send()
        };
        let (good2, bad2) = (content_digest(&chunks[2]), content_digest(&chunks[1]));
        let resp = two_lines(&good2, &bad2).await.unwrap();
        assert_error(resp, 422, "digest_mismatch").await;
        let resp = two_lines(&bad2, &good2).await.unwrap();
        assert_eq!(
            expect_json(resp, 200).await["sha256"],
            sha256_hex(&chunks[2])
        );

        use sha2::Digest;
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let sha512 = format!("sha-512=:{}:", b64(&sha2::Sha512::digest(&chunks[1])));
        let resp = app
            .put_chunk_with_digest(&id, 1, chunks[1].clone(), &sha512)
            .await;
        assert_eq!(
            expect_json(resp, 200).await["sha256"],
            sha256_hex(&chunks[1])
        );
    })
    .await
}

#[tokio::test]
async fn malformed_content_digest_answers_400() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(CS, 30);
        let id = start(&app, &data).await;
        for header in [
            "garbage",
            "sha-256=abc",
            "sha-256=:not base64!:",
            // Valid base64, but 3 bytes are no SHA-256.
            "sha-256=:AAAA:",
        ] {
            let resp = app
                .put_chunk_with_digest(&id, 0, data.clone(), header)
                .await;
            assert_error(resp, 400, "invalid_request").await;
        }
        assert_eq!(missing(&app.status_json(&id).await), vec![0]);
    })
    .await
}

#[tokio::test]
async fn post_is_a_synonym_of_put_for_chunks() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(2 * CS, 31);
        let id = start(&app, &data).await;
        let chunks = chunks_of(&data, CS);
        for i in 0..2u64 {
            let resp = app
                .request(Method::POST, &chunk_url(&id, i))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(chunks[i as usize].clone())
                .send()
                .await
                .unwrap();
            assert_eq!(expect_json(resp, 200).await["index"], i);
        }
        complete_and_check(&app, &id, &data).await;
    })
    .await
}

#[tokio::test]
async fn hostile_upload_ids_answer_400_json_on_every_endpoint() {
    bounded(async {
        let app = spawn_app().await;
        let long = "a".repeat(10_000);
        let ids = [
            "..%2F..",
            "..%2F..%2F..%2Fetc%2Fpasswd",
            "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
            "%00",
            "0b9d5c0e-6c1e-4b8e-9a4f-3d2f1c0b7a6%00",
            "not-a-uuid",
            long.as_str(),
        ];
        for id in ids {
            let requests = [
                (Method::GET, format!("/api/v1/uploads/{id}")),
                (Method::HEAD, format!("/api/v1/uploads/{id}")),
                (Method::DELETE, format!("/api/v1/uploads/{id}")),
                (Method::PUT, chunk_url(id, 0)),
                (Method::POST, format!("/api/v1/uploads/{id}/complete")),
                (Method::GET, format!("/api/v1/files/{id}")),
            ];
            for (method, path) in requests {
                let mut req = app.request(method.clone(), &path);
                if method == Method::PUT {
                    req = req.body(vec![1, 2, 3]);
                }
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let shown = &path[..path.len().min(80)];
                assert!(status < 500, "{method} {shown} answered {status}");
                if method == Method::HEAD {
                    assert_eq!(status, 400, "{method} {shown}");
                } else {
                    assert_error(resp, 400, "invalid_request").await;
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn unknown_well_formed_upload_id_answers_404_upload_not_found() {
    bounded(async {
        let app = spawn_app().await;
        let id = uuid::Uuid::new_v4().to_string();
        assert_error(app.status(&id).await, 404, "upload_not_found").await;
        assert_error(
            app.put_chunk(&id, 0, vec![0; 10]).await,
            404,
            "upload_not_found",
        )
        .await;
        assert_error(app.complete(&id).await, 404, "upload_not_found").await;
        assert_error(app.abort(&id).await, 404, "upload_not_found").await;
    })
    .await
}

#[tokio::test]
async fn a_chunk_held_by_a_slow_sender_is_not_written_by_a_second_request() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3 * CS, 32);
        let id = start(&app, &data).await;
        let chunks = chunks_of(&data, CS);

        // The slow sender announces chunk 1 and sends half of it...
        let mut slow = RawRequest::start(&app, "PUT", &chunk_url(&id, 1), CS).await;
        slow.send(&chunks[1][..CS / 2]).await;
        // ...and is inside the handler before the second request arrives.
        for _ in 0..200 {
            if app.ctx.metrics.chunks_in_flight.get() >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            app.ctx.metrics.chunks_in_flight.get(),
            1,
            "slow request never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;

        let mut second = Box::pin(app.put_chunk(&id, 1, chunks[1].clone()));
        let early = tokio::time::timeout(Duration::from_secs(1), &mut second).await;
        let second_waited = match early {
            Ok(resp) => {
                // Answered while the first still holds the chunk: it must not
                // have written it.
                let retry_after = resp.headers().get("retry-after").is_some();
                assert_error(resp, 409, "chunk_in_progress").await;
                assert!(retry_after, "409 chunk_in_progress without Retry-After");
                false
            }
            Err(_) => true,
        };

        slow.send(&chunks[1][CS / 2..]).await;
        let (status, body) = slow.read_answer(Duration::from_secs(10)).await;
        assert_eq!(status, Some(200), "slow sender: {body}");
        if second_waited {
            // A server that queues the second request must answer it after the first.
            assert_eq!(second.await.status(), 200);
        }

        let view = app.status_json(&id).await;
        assert_eq!(view["received_chunks"], 1);
        assert_eq!(view["bytes_received"], CS as u64);
        app.send_chunks(&id, &data, CS, [0, 2]).await;
        complete_and_check(&app, &id, &data).await;
    })
    .await
}

#[tokio::test]
async fn every_chunk_sent_twice_concurrently_is_counted_once() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(6 * CS + 5, 33);
        let id = start(&app, &data).await;
        let chunks = chunks_of(&data, CS);
        let sends = (0..chunks.len()).flat_map(|i| [i, i]).map(|i| {
            let app = &app;
            let id = &id;
            let body = chunks[i].clone();
            async move { (i, app.put_chunk(id, i as u64, body).await) }
        });
        let mut ok = vec![false; chunks.len()];
        for (i, resp) in join_all(sends).await {
            match resp.status().as_u16() {
                200 => ok[i] = true,
                409 => {
                    assert_error(resp, 409, "chunk_in_progress").await;
                }
                other => panic!("chunk {i}: {other} {:?}", resp.text().await),
            }
        }
        // The ones that lost every race are sent again, as a client would.
        for (i, done) in ok.iter().enumerate() {
            if !done {
                app.send_chunks(&id, &data, CS, [i as u64]).await;
            }
        }
        let view = app.status_json(&id).await;
        assert_eq!(view["received_chunks"], chunks.len() as u64);
        assert_eq!(view["bytes_received"], data.len() as u64);
        complete_and_check(&app, &id, &data).await;
    })
    .await
}
