//! tus 1.0.0 extensions other than concatenation, from the protocol text:
//! creation-with-upload, creation-defer-length, expiration, checksum and
//! termination.

use std::time::Duration;

use reqwest::Method;
use sha2::{Digest, Sha256};

use crate::helpers::*;
use crate::tus_client::*;

// ---------------------------------------------------------------------------
// Creation With Upload

#[tokio::test]
async fn tus_creation_with_upload_takes_the_first_bytes_in_the_post() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let data = test_data(5000, 11);
        let req = tus
            .request(Method::POST, TUS_PATH)
            .header("Upload-Length", "5000")
            .header("Content-Type", OCTETS)
            .body(data[..1234].to_vec());
        // "MUST include the Upload-Offset header in the response and MUST set
        // its value to the offset of the upload after applying the accepted
        // bytes."
        let created = tus.send(req).await.expect(&[201]);
        let accepted = created
            .offset()
            .unwrap_or_else(|| panic!("{created}: Upload-Offset"));
        assert!(accepted <= 1234, "{created}");
        let url = tus.location(&created);
        assert_eq!(tus.offset_of(&url).await, accepted);
        tus.patch_ok(&url, accepted, &data[accepted as usize..])
            .await;
        tus.assert_file(&url, &data).await;
    })
    .await
}

#[tokio::test]
async fn tus_creation_with_the_whole_upload_completes_it() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let req = tus
            .request(Method::POST, TUS_PATH)
            .header("Upload-Length", "11")
            .header("Content-Type", OCTETS)
            .body(b"hello world".to_vec());
        let created = tus.send(req).await.expect(&[201]);
        assert_eq!(created.offset(), Some(11), "{created}");
        let url = tus.location(&created);
        tus.assert_file(&url, b"hello world").await;
    })
    .await
}

#[tokio::test]
async fn tus_creation_with_more_bytes_than_its_length_is_refused_with_413() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let req = tus
            .request(Method::POST, TUS_PATH)
            .header("Upload-Length", "5")
            .header("Content-Type", OCTETS)
            .body(b"hello world".to_vec());
        let answer = tus.send(req).await;
        // "similar rules as for the PATCH request and response apply".
        assert_eq!(answer.status, 413, "{answer}");
        if let Some(loc) = answer.header("location") {
            // A server that kept the upload must not have stored past 5.
            let url = tus.url(loc);
            assert!(tus.offset_of(&url).await <= 5);
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Creation Defer Length

#[tokio::test]
async fn tus_a_deferred_length_is_announced_until_a_patch_sets_it() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let data = test_data(3000, 12);
        let created = tus
            .post(&[("Upload-Defer-Length", "1")])
            .await
            .expect(&[201]);
        let url = tus.location(&created);
        // "As long as the length of the upload is not known, the Server MUST
        // set Upload-Defer-Length: 1 in all responses to HEAD requests."
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert_eq!(head.header("upload-defer-length"), Some("1"), "{head}");
        assert!(head.length().is_none(), "{head}");
        assert_eq!(head.offset(), Some(0), "{head}");

        tus.patch_ok(&url, 0, &data[..1000]).await;
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert_eq!(head.header("upload-defer-length"), Some("1"), "{head}");
        assert_eq!(head.offset(), Some(1000), "{head}");

        // "the Client MUST set the Upload-Length header in the next PATCH
        // request, once the length is known."
        let req = tus
            .patch_request(&url, 1000, &data[1000..2000])
            .header("Upload-Length", "3000");
        let answer = tus.send(req).await.expect(&[204]);
        assert_eq!(answer.offset(), Some(2000), "{answer}");
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert_eq!(head.length(), Some(3000), "{head}");
        // "If the length of an upload is not deferred, this header MUST be
        // omitted."
        assert!(head.header("upload-defer-length").is_none(), "{head}");

        // "Once set the length MUST NOT be changed": the server may refuse
        // the PATCH or ignore the header, never take the new length.
        let req = tus
            .patch_request(&url, 2000, &data[2000..2500])
            .header("Upload-Length", "4000");
        let answer = tus.send(req).await;
        let offset = match answer.status {
            204 => 2500,
            400..=499 => 2000,
            _ => panic!("{answer}"),
        };
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert_eq!(head.length(), Some(3000), "{head}");
        assert_eq!(head.offset(), Some(offset), "{head}");

        tus.patch_ok(&url, offset, &data[offset as usize..]).await;
        tus.assert_file(&url, &data).await;
    })
    .await
}

#[tokio::test]
async fn tus_a_deferred_length_can_be_set_with_the_last_bytes_or_with_none() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.location(
            &tus.post(&[("Upload-Defer-Length", "1")])
                .await
                .expect(&[201]),
        );
        tus.patch_ok(&url, 0, b"hello ").await;
        let req = tus
            .patch_request(&url, 6, b"world")
            .header("Upload-Length", "11");
        tus.send(req).await.expect(&[204]);
        tus.assert_file(&url, b"hello world").await;

        // All bytes sent, then an empty PATCH that only tells the length.
        let url = tus.location(
            &tus.post(&[("Upload-Defer-Length", "1")])
                .await
                .expect(&[201]),
        );
        tus.patch_ok(&url, 0, b"abc").await;
        let req = tus.patch_request(&url, 3, b"").header("Upload-Length", "3");
        let answer = tus.send(req).await.expect(&[204]);
        assert_eq!(answer.offset(), Some(3), "{answer}");
        tus.assert_file(&url, b"abc").await;
    })
    .await
}

#[tokio::test]
async fn tus_a_deferred_length_below_the_bytes_already_there_is_refused() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.location(
            &tus.post(&[("Upload-Defer-Length", "1")])
                .await
                .expect(&[201]),
        );
        tus.patch_ok(&url, 0, b"0123456789").await;
        let req = tus
            .patch_request(&url, 10, b"")
            .header("Upload-Length", "5");
        let answer = tus.send(req).await;
        assert!((400..500).contains(&answer.status), "{answer}");
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert_eq!(head.offset(), Some(10), "{head}");
        assert_eq!(head.header("upload-defer-length"), Some("1"), "{head}");
    })
    .await
}

#[tokio::test]
async fn tus_a_deferred_upload_stops_at_tus_max_size_with_413() {
    bounded(async {
        let app = spawn_app_with(|s| s.max_file_size = bytesize::ByteSize::kib(4)).await;
        let tus = Tus::new(&app);
        let url = tus.location(
            &tus.post(&[("Upload-Defer-Length", "1")])
                .await
                .expect(&[201]),
        );
        let data = test_data(4096, 13);
        tus.patch_ok(&url, 0, &data[..4000]).await;
        tus.patch(&url, 4000, &test_data(200, 14))
            .await
            .expect(&[413]);
        let offset = tus.offset_of(&url).await;
        assert!((4000..=4096).contains(&offset), "offset {offset}");
        // A length above the maximum is refused as at creation.
        let req = tus
            .patch_request(&url, offset, b"")
            .header("Upload-Length", "5000");
        tus.send(req).await.expect(&[413]);
    })
    .await
}

// ---------------------------------------------------------------------------
// Expiration

/// An RFC 9110 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form a
/// server must send.
fn http_date(value: &str) -> time::OffsetDateTime {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(value, format)
        .unwrap_or_else(|e| panic!("Upload-Expires {value:?} is not an HTTP date: {e}"))
        .assume_utc()
}

#[tokio::test]
async fn tus_upload_expires_is_on_creation_and_every_patch_and_then_410() {
    bounded(async {
        let app = spawn_app_with(|s| {
            s.upload_ttl = Duration::from_secs(3600);
            s.janitor_interval = Duration::from_secs(3600);
        })
        .await;
        let tus = Tus::new(&app);
        let now = time::OffsetDateTime::now_utc();
        // "If the expiration is known at the creation, the Upload-Expires
        // header MUST be included in the response to the initial POST".
        let created = tus.post(&[("Upload-Length", "20")]).await.expect(&[201]);
        let expires = http_date(
            created
                .header("upload-expires")
                .unwrap_or_else(|| panic!("{created}: Upload-Expires")),
        );
        let ahead = expires - now;
        assert!(
            ahead > time::Duration::minutes(50) && ahead < time::Duration::minutes(70),
            "Upload-Expires {expires} with a TTL of an hour"
        );
        let url = tus.location(&created);
        // "This header MUST be included in every PATCH response if the upload
        // is going to expire."
        let answer = tus.patch(&url, 0, b"0123456789").await.expect(&[204]);
        http_date(
            answer
                .header("upload-expires")
                .unwrap_or_else(|| panic!("{answer}: Upload-Expires")),
        );

        // Past the TTL, before any sweep: the server still knows it.
        app.ctx.clock.advance(Duration::from_secs(2 * 3600));
        // "the Server SHOULD respond with the 404 Not Found or 410 Gone
        // status. The latter one SHOULD be used if the Server is keeping
        // track of expired uploads."
        let head = tus.head(&url).await.expect(&[410]);
        assert!(head.offset().is_none(), "{head}");
        tus.patch(&url, 10, b"0123456789").await.expect(&[410]);
    })
    .await
}

#[tokio::test]
async fn tus_an_expired_upload_swept_by_the_janitor_is_gone() {
    bounded(async {
        let app = spawn_app_with(|s| {
            s.upload_ttl = Duration::from_secs(60);
            s.janitor_interval = Duration::from_secs(3600);
            s.orphan_grace = Duration::from_secs(60);
        })
        .await;
        let tus = Tus::new(&app);
        let url = tus.create(20, None).await;
        tus.patch_ok(&url, 0, b"0123456789").await;
        app.ctx.clock.advance(Duration::from_secs(120));
        tranche::janitor::sweep(&app.ctx).await.expect("sweep");
        let head = tus.head(&url).await.expect(&[404, 410]);
        assert!(head.offset().is_none(), "{head}");
        tus.patch(&url, 10, b"0123456789").await.expect(&[404, 410]);
        assert!(!app.part_path(&upload_id(&url)).exists(), "bytes freed");
    })
    .await
}

// ---------------------------------------------------------------------------
// Checksum

#[tokio::test]
async fn tus_checksummed_patches_in_sha1_md5_and_sha256_are_taken() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let third = b"! and some more bytes";
        let url = tus.create(22 + third.len() as u64, None).await;
        // Digests of the spec's example payload, computed independently
        // (sha1sum, md5sum).
        let pieces: [(&[u8], String); 3] = [
            (b"hello world", "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=".into()),
            (b"hello world", "md5 XrY7u+Ae7tCTyyK7j1rNww==".into()),
            (third, format!("sha256 {}", b64(&Sha256::digest(third)))),
        ];
        let mut offset = 0;
        for (bytes, checksum) in pieces {
            let req = tus
                .patch_request(&url, offset, bytes)
                .header("Upload-Checksum", &checksum);
            let answer = tus.send(req).await.expect(&[204]);
            offset += bytes.len() as u64;
            assert_eq!(answer.offset(), Some(offset), "{answer}");
        }
        let mut all = b"hello worldhello world".to_vec();
        all.extend_from_slice(third);
        tus.assert_file(&url, &all).await;
    })
    .await
}

#[tokio::test]
async fn tus_a_checksum_mismatch_gets_460_and_its_bytes_do_not_count() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.create(22, None).await;
        tus.patch_ok(&url, 0, b"hello world").await;
        // Right algorithm, digest of other bytes; and a corrupted body.
        for (body, checksum) in [
            (&b"HELLO WORLD"[..], "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
            (b"hello_world", "md5 XrY7u+Ae7tCTyyK7j1rNww=="),
        ] {
            let req = tus
                .patch_request(&url, 11, body)
                .header("Upload-Checksum", checksum);
            // "In the first two cases the uploaded chunk MUST be discarded,
            // and the upload and its offset MUST NOT be updated."
            tus.send(req).await.expect(&[460]);
            assert_eq!(tus.offset_of(&url).await, 11, "after {checksum}");
        }
        let other = b64(&Sha256::digest(b"hello there"));
        let req = tus
            .patch_request(&url, 11, b"hello world")
            .header("Upload-Checksum", format!("sha256 {other}"));
        tus.send(req).await.expect(&[460]);
        assert_eq!(tus.offset_of(&url).await, 11, "after a wrong sha256");
        // The discarded bytes left nothing behind: the right ones complete it.
        let req = tus
            .patch_request(&url, 11, b"hello world")
            .header("Upload-Checksum", "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=");
        tus.send(req).await.expect(&[204]);
        tus.assert_file(&url, b"hello worldhello world").await;
    })
    .await
}

#[tokio::test]
async fn tus_an_unsupported_checksum_algorithm_gets_400_and_changes_nothing() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.create(11, None).await;
        // Only names the server does not advertise count as unsupported.
        let options = tus.options().await.expect(&[200, 204]);
        let advertised = list(options.header("tus-checksum-algorithm"));
        let unsupported: Vec<String> = [
            "crc32 DUoRhQ==",
            "sha512 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
            "nosuchalg Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
        ]
        .iter()
        .filter(|c| !advertised.iter().any(|a| c.starts_with(&format!("{a} "))))
        .map(|c| c.to_string())
        .collect();
        assert!(!unsupported.is_empty());
        for checksum in &unsupported {
            let req = tus
                .patch_request(&url, 0, b"hello world")
                .header("Upload-Checksum", checksum);
            tus.send(req).await.expect(&[400]);
            assert_eq!(tus.offset_of(&url).await, 0, "after {checksum}");
        }
        tus.patch_ok(&url, 0, b"hello world").await;
    })
    .await
}

#[tokio::test]
async fn tus_a_malformed_upload_checksum_changes_nothing() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.create(11, None).await;
        // No digest, a digest that is not Base64, digests of the wrong size:
        // malformed (400) or simply not matching (460), never taken.
        for checksum in [
            "sha1",
            "sha1 !!!not-base64!!!",
            "sha1 AAAA",
            "sha256 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
        ] {
            let req = tus
                .patch_request(&url, 0, b"hello world")
                .header("Upload-Checksum", checksum);
            let answer = tus.send(req).await;
            assert!(
                answer.status == 400 || answer.status == 460,
                "{checksum:?}: {answer}"
            );
            assert_eq!(tus.offset_of(&url).await, 0, "after {checksum}");
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Termination

#[tokio::test]
async fn tus_a_terminated_upload_is_gone_for_every_later_request() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.create(20, None).await;
        tus.patch_ok(&url, 0, b"0123456789").await;
        let id = upload_id(&url);
        // "MUST respond with the 204 No Content status".
        tus.delete(&url).await.expect(&[204]);
        // "For all future requests to this URL, the Server SHOULD respond with
        // the 404 Not Found or 410 Gone status."
        let head = tus.head(&url).await.expect(&[404, 410]);
        assert!(head.offset().is_none(), "{head}");
        tus.patch(&url, 10, b"0123456789").await.expect(&[404, 410]);
        tus.delete(&url).await.expect(&[404, 410]);
        // "the Server SHOULD free associated resources"
        assert!(!app.part_path(&id).exists(), "part file freed");
        let (status, view) = tus.view(&id).await;
        assert!(
            status == 404 || status == 410 || view["status"] == "aborted",
            "{status} {view}"
        );
    })
    .await
}

#[tokio::test]
async fn tus_a_completed_upload_can_be_terminated_too() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.upload(b"complete", 4, None).await;
        let id = upload_id(&url);
        tus.assert_file(&url, b"complete").await;
        // "terminate completed and unfinished uploads".
        tus.delete(&url).await.expect(&[204]);
        tus.head(&url).await.expect(&[404, 410]);
        let resp = app.download(&id).await;
        assert!(
            resp.status() == 404 || resp.status() == 410,
            "download after termination: {}",
            resp.status()
        );
    })
    .await
}

#[tokio::test]
async fn tus_an_upload_aborted_through_api_v1_is_gone_for_tus_too() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.create(10, None).await;
        tus.patch_ok(&url, 0, b"01234").await;
        let resp = app.abort(&upload_id(&url)).await;
        assert_eq!(resp.status(), 204);
        let head = tus.head(&url).await.expect(&[404, 410]);
        assert!(head.offset().is_none(), "{head}");
        tus.patch(&url, 5, b"56789").await.expect(&[404, 410]);
    })
    .await
}

#[tokio::test]
async fn tus_a_checksum_on_creation_with_upload_is_checked_too() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        // "similar rules as for the PATCH request and response apply".
        let post = |checksum: &'static str| {
            tus.request(Method::POST, TUS_PATH)
                .header("Upload-Length", "22")
                .header("Content-Type", OCTETS)
                .header("Upload-Checksum", checksum)
                .body(b"hello world".to_vec())
        };
        let created = tus
            .send(post("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="))
            .await
            .expect(&[201]);
        assert_eq!(created.offset(), Some(11), "{created}");
        let answer = tus.send(post("md5 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")).await;
        match answer.header("location") {
            // Refused whole, or created with none of the bytes counted.
            None => assert_eq!(answer.status, 460, "{answer}"),
            Some(loc) => {
                assert!(answer.offset().is_none_or(|o| o == 0), "{answer}");
                assert_eq!(tus.offset_of(&tus.url(loc)).await, 0, "{answer}");
            }
        }
    })
    .await
}

#[tokio::test]
async fn tus_an_expired_partial_cannot_be_concatenated() {
    bounded(async {
        let app = spawn_app_with(|s| {
            s.upload_ttl = Duration::from_secs(60);
            s.janitor_interval = Duration::from_secs(3600);
        })
        .await;
        let tus = Tus::new(&app);
        let part = tus.location(
            &tus.post(&[("Upload-Length", "3"), ("Upload-Concat", "partial")])
                .await
                .expect(&[201]),
        );
        tus.patch_ok(&part, 0, b"abc").await;
        app.ctx.clock.advance(Duration::from_secs(120));
        tus.head(&part).await.expect(&[404, 410]);
        let concat = format!("final;{}", part.path());
        let answer = tus.post(&[("Upload-Concat", &concat)]).await;
        assert!([400, 404, 409, 410].contains(&answer.status), "{answer}");
        assert!(answer.header("location").is_none(), "{answer}");
    })
    .await
}

#[tokio::test]
async fn tus_a_finished_upload_does_not_expire_with_the_unfinished_ones() {
    bounded(async {
        let app = spawn_app_with(|s| {
            s.upload_ttl = Duration::from_secs(60);
            s.janitor_interval = Duration::from_secs(3600);
            s.orphan_grace = Duration::from_secs(60);
        })
        .await;
        let tus = Tus::new(&app);
        let url = tus.upload(b"kept for good", 5, None).await;
        // "The unfinished upload is available until the time specified in
        // Upload-Expires": a finished one is not bound by it.
        app.ctx.clock.advance(Duration::from_secs(600));
        tranche::janitor::sweep(&app.ctx).await.expect("sweep");
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert_eq!(head.offset(), Some(13), "{head}");
        assert_eq!(head.length(), Some(13), "{head}");
        tus.assert_file(&url, b"kept for good").await;
    })
    .await
}
