//! The tus endpoint under races, cut connections and crashes. The spec asks
//! that "the Upload-Offset header's value MUST be equal to the current
//! offset" (so of PATCHes racing from one offset only one can be right) and
//! that "the Server SHOULD always attempt to store as much of the received
//! data as possible" (so a cut PATCH keeps what arrived); tranche adds that
//! bytes are never interleaved or doubled and that a crash loses no
//! acknowledged byte.

use std::time::{Duration, Instant};

use reqwest::{Client, Url};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::tus_client::*;

/// A PATCH written by hand on a plain socket, for what reqwest will not do:
/// announce a length, send part of it, and stall or hang up.
pub struct RawPatch {
    stream: TcpStream,
}

impl RawPatch {
    /// Connects to `url`'s server and sends the head of a PATCH announcing
    /// `content_length` bytes at `offset`.
    pub async fn start(url: &Url, offset: u64, content_length: usize) -> RawPatch {
        let port = url.port().expect("test URLs carry a port");
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let head = format!(
            "PATCH {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTus-Resumable: {TUS_VERSION}\r\n\
             Content-Type: {OCTETS}\r\nUpload-Offset: {offset}\r\n\
             Content-Length: {content_length}\r\nConnection: close\r\n\r\n",
            url.path()
        );
        stream.write_all(head.as_bytes()).await.expect("send head");
        RawPatch { stream }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send body");
        self.stream.flush().await.expect("flush");
    }

    /// The answer's status and head once the server closes (or `within`
    /// passes); `None` if it closed without one.
    pub async fn answer(mut self, within: Duration) -> (Option<u16>, String) {
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(within, self.stream.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok());
        (status, text)
    }

    /// Ends the body early (the server reads end of stream where bytes
    /// were announced) and drops the connection.
    pub async fn hang_up(mut self) {
        let _ = self.stream.shutdown().await;
        let _ = self.answer(Duration::from_secs(2)).await;
    }
}

/// HEAD until the offset moves past `previous`, since the server may notice
/// a cut connection a moment after it happened; the last offset seen.
pub async fn offset_after_cut(tus: &Tus, url: &Url, previous: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = None;
    loop {
        let head = tus.head(url).await;
        // 423: the cut PATCH may still hold the upload for a moment.
        assert!([200, 204, 423].contains(&head.status), "{head}");
        if head.status != 423 {
            let offset = head
                .offset()
                .unwrap_or_else(|| panic!("{head}: Upload-Offset"));
            if offset > previous {
                return offset;
            }
            last = Some(offset);
        }
        if Instant::now() > deadline {
            return last.unwrap_or_else(|| panic!("{url} stayed locked after the cut"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn tus_two_patches_at_once_one_proceeds_the_other_gets_409_or_423() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let first = test_data(100_000, 41);
        let second = test_data(100_000, 42);
        let rest = test_data(50_000, 43);
        let url = tus.create(150_000, None).await;

        // The first PATCH is under way, half its body sent.
        let mut a = RawPatch::start(&url, 0, first.len()).await;
        a.send(&first[..50_000]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The second, whole, from the same offset.
        let b = tokio::spawn({
            let tus = tus.clone();
            let url = url.clone();
            let second = second.clone();
            async move { tus.patch(&url, 0, &second).await }
        });
        // A server may answer it at once or let it wait for the first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        a.send(&first[50_000..]).await;
        let (a_status, a_text) = a.answer(Duration::from_secs(10)).await;
        let b = b.await.unwrap();

        let winner = match (a_status, b.status) {
            (Some(204), 409 | 423) => &first,
            (Some(409 | 423), 204) => &second,
            other => {
                panic!("exactly one proceeds, the other 409/423; got {other:?}:\n{a_text}\n{b}")
            }
        };
        // Neither interleaved nor doubled: the offset is one body's length.
        assert_eq!(tus.offset_of(&url).await, 100_000);
        tus.patch_ok(&url, 100_000, &rest).await;
        tus.assert_file(&url, &[winner.as_slice(), &rest].concat())
            .await;
    })
    .await
}

#[tokio::test]
async fn tus_six_racing_patches_at_one_offset_one_wins_whole() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let len = 512 * 1024;
        let bodies: Vec<Vec<u8>> = (0..6).map(|i| test_data(len, 50 + i)).collect();
        let url = tus.create(len as u64, None).await;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(bodies.len()));
        let racers: Vec<_> = bodies
            .iter()
            .cloned()
            .map(|body| {
                let (tus, url, barrier) = (tus.clone(), url.clone(), barrier.clone());
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
        for (i, a) in answers.iter().enumerate() {
            if i != winners[0] {
                assert!([409, 423].contains(&a.status), "loser {i}: {a}");
            }
        }
        assert_eq!(answers[winners[0]].offset(), Some(len as u64));
        tus.assert_file(&url, &bodies[winners[0]]).await;
    })
    .await
}

#[tokio::test]
async fn tus_a_cut_patch_keeps_the_bytes_that_arrived_and_the_upload_resumes() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let data = test_data(100_000, 44);
        let url = tus.create(100_000, None).await;
        tus.patch_ok(&url, 0, &data[..10_000]).await;

        // 60 000 announced, 30 000 sent, then the client is gone.
        let mut cut = RawPatch::start(&url, 10_000, 60_000).await;
        cut.send(&data[10_000..40_000]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        cut.hang_up().await;

        let offset = offset_after_cut(&tus, &url, 10_000).await;
        assert!(
            offset > 10_000 && offset <= 40_000,
            "offset {offset}: the bytes that arrived are kept, no more"
        );
        tus.patch_ok(&url, offset, &data[offset as usize..]).await;
        tus.assert_file(&url, &data).await;
    })
    .await
}

#[tokio::test]
async fn tus_a_patch_dropped_without_a_word_keeps_its_bytes_too() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let data = test_data(80_000, 45);
        let url = tus.create(80_000, None).await;

        // No half-close this time: the socket is simply dropped.
        let mut cut = RawPatch::start(&url, 0, 80_000).await;
        cut.send(&data[..20_000]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(cut);

        let offset = offset_after_cut(&tus, &url, 0).await;
        assert!(offset > 0 && offset <= 20_000, "offset {offset}");
        tus.patch_ok(&url, offset, &data[offset as usize..]).await;
        tus.assert_file(&url, &data).await;
    })
    .await
}

/// The store the restarted binary runs on: with the Redis backend, one
/// redis-server outlives both tranche processes.
async fn store_for_restart() -> Option<RedisServer> {
    match crate::BACKEND {
        Backend::Embedded => None,
        Backend::Redis => Some(RedisServer::start().await),
    }
}

#[tokio::test]
async fn tus_sigkill_mid_patch_then_restart_resume_and_the_sha256_is_right() {
    bounded_for(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let client = Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let data = test_data(200_000, 46);
        let redis = store_for_restart().await;
        let mut server = ServerProcess::start(dir.path(), &data_dir, redis.as_ref(), &client).await;
        let tus = Tus::at(client.clone(), &server.base);
        let meta = format!("filename {}", b64(b"crash.bin"));
        let url = tus.create(200_000, Some(&meta)).await;
        tus.patch_ok(&url, 0, &data[..50_000]).await;

        // A PATCH in flight, part of its body on the server, when it dies.
        let mut inflight = RawPatch::start(&url, 50_000, 100_000).await;
        inflight.send(&data[50_000..120_000]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.kill();
        drop(inflight);

        let server = ServerProcess::start(dir.path(), &data_dir, redis.as_ref(), &client).await;
        let tus = Tus::at(client.clone(), &server.base);
        // The same upload on the new process, by the same path.
        let url = tus.url(url.path());
        let offset = tus.offset_of(&url).await;
        // Every acknowledged byte, and nothing that never arrived.
        assert!(
            (50_000..=120_000).contains(&offset),
            "offset {offset} after the restart"
        );
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert_eq!(head.length(), Some(200_000), "{head}");
        assert_eq!(
            head.header("upload-metadata"),
            Some(meta.as_str()),
            "{head}"
        );
        // The dead process's write lease may outlive it for a few seconds
        // (on Redis): 423 until it lapses, which a tus client retries, as
        // tus-js-client does after 0, 1, 3 and 5 s.
        let mut answer = tus.patch(&url, offset, &data[offset as usize..]).await;
        for _ in 0..10 {
            if answer.status != 423 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            answer = tus.patch(&url, offset, &data[offset as usize..]).await;
        }
        answer.expect(&[204]);
        let view = tus.assert_file(&url, &data).await;
        assert_eq!(view["filename"], "crash.bin");
    })
    .await
}

#[tokio::test]
async fn tus_head_answers_with_the_offset_while_a_patch_is_under_way() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let data = test_data(100_000, 47);
        let url = tus.create(100_000, None).await;
        tus.patch_ok(&url, 0, &data[..10_000]).await;
        let mut inflight = RawPatch::start(&url, 10_000, 90_000).await;
        inflight.send(&data[10_000..50_000]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // "The Server MUST always include the Upload-Offset header in the
        // response for a HEAD request": a writer elsewhere does not excuse it.
        let head = tus.head(&url).await.expect(&[200, 204]);
        let offset = head.offset().unwrap_or_else(|| panic!("{head}"));
        assert!((10_000..=50_000).contains(&offset), "{head}");
        inflight.send(&data[50_000..]).await;
        let (status, text) = inflight.answer(Duration::from_secs(10)).await;
        assert_eq!(status, Some(204), "{text}");
        tus.assert_file(&url, &data).await;
    })
    .await
}

#[tokio::test]
async fn tus_a_cut_patch_with_a_checksum_counts_for_nothing() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let data = test_data(60_000, 48);
        let url = tus.create(60_000, None).await;
        tus.patch_ok(&url, 0, &data[..10_000]).await;
        // "Once the entire request has been received, the Server MUST verify
        // the uploaded chunk against the provided checksum": a body that
        // never arrived whole cannot be verified, so none of it is taken.
        let digest = {
            use sha2::{Digest, Sha256};
            b64(&Sha256::digest(&data[10_000..]))
        };
        let port = url.port().unwrap();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let head = format!(
            "PATCH {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTus-Resumable: {TUS_VERSION}\r\n\
             Content-Type: {OCTETS}\r\nUpload-Offset: 10000\r\nUpload-Checksum: sha256 {digest}\r\n\
             Content-Length: 50000\r\nConnection: close\r\n\r\n",
            url.path()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&data[10_000..30_000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        RawPatch { stream }.hang_up().await;
        // Give the server the moment it may need to notice, then look.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let offset = offset_after_cut(&tus, &url, 10_000).await;
        assert_eq!(
            offset, 10_000,
            "a cut checksummed body must count for nothing"
        );
        tus.patch_ok(&url, 10_000, &data[10_000..]).await;
        tus.assert_file(&url, &data).await;
    })
    .await
}

#[tokio::test]
async fn tus_a_chunk_put_through_api_v1_never_corrupts_a_tus_upload() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        // Two of the server's 64 KiB chunks.
        let data = test_data(100_000, 49);
        let url = tus.create(100_000, None).await;
        let id = upload_id(&url);
        // Other bytes for the second chunk, through the other front end.
        let put = app.put_chunk(&id, 1, test_data(100_000 - 65_536, 50)).await;
        let put_status = put.status().as_u16();
        // Whatever it said, a tus client that sends every byte from the
        // offset HEAD gives must end with its own file.
        let offset = tus.offset_of(&url).await;
        assert_eq!(
            offset, 0,
            "no prefix arrived (API v1 answered {put_status})"
        );
        let answer = tus.patch(&url, 0, &data).await;
        if answer.status == 204 {
            tus.assert_file(&url, &data).await;
        } else {
            assert!((400..500).contains(&answer.status), "{answer}");
            assert!(
                put_status == 200,
                "neither front end took the bytes: {answer}"
            );
            let (_, view) = tus.view(&id).await;
            assert_ne!(view["status"], "completed", "{view}");
        }
    })
    .await
}

#[tokio::test]
async fn tus_a_delete_during_a_patch_leaves_no_upload_behind() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let data = test_data(100_000, 51);
        let url = tus.create(100_000, None).await;
        let id = upload_id(&url);
        let mut inflight = RawPatch::start(&url, 0, 100_000).await;
        inflight.send(&data[..40_000]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let deleted = tus.delete(&url).await.expect(&[204, 423]);
        inflight.send(&data[40_000..]).await;
        let (status, text) = inflight.answer(Duration::from_secs(10)).await;
        if deleted.status == 423 {
            // The writer went first; termination comes after it.
            assert_eq!(status, Some(204), "{text}");
            tus.delete(&url).await.expect(&[204]);
        } else {
            assert!(
                status != Some(204),
                "a PATCH acknowledged after its upload was terminated: {text}"
            );
        }
        // "For all future requests to this URL, the Server SHOULD respond
        // with the 404 Not Found or 410 Gone status", and nothing comes back
        // to life on disk.
        tokio::time::sleep(Duration::from_millis(300)).await;
        tus.head(&url).await.expect(&[404, 410]);
        tus.patch(&url, 0, &data).await.expect(&[404, 410]);
        assert!(
            !app.part_path(&id).exists(),
            "the part file of a terminated upload"
        );
    })
    .await
}

#[tokio::test]
async fn tus_two_finals_of_the_same_partials_at_once_are_both_whole() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let a = test_data(150_000, 52);
        let b = test_data(90_000, 53);
        let mut parts = Vec::new();
        for data in [&a, &b] {
            let url = tus.location(
                &tus.post(&[
                    ("Upload-Length", &data.len().to_string()),
                    ("Upload-Concat", "partial"),
                ])
                .await
                .expect(&[201]),
            );
            tus.patch_ok(&url, 0, data).await;
            parts.push(url);
        }
        let concat = format!("final;{} {}", parts[0].path(), parts[1].path());
        let finals: Vec<_> = (0..2)
            .map(|_| {
                let (tus, concat) = (tus.clone(), concat.clone());
                tokio::spawn(async move { tus.post(&[("Upload-Concat", &concat)]).await })
            })
            .collect();
        let whole = [a.as_slice(), &b].concat();
        for f in finals {
            let answer = f.await.unwrap().expect(&[201]);
            let url = tus.location(&answer);
            tus.completed_view(&upload_id(&url), Duration::from_secs(10))
                .await;
            tus.assert_file(&url, &whole).await;
        }
    })
    .await
}
