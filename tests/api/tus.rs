//! tus 1.0.0 at `/files/`, checked against the protocol text
//! (tus/tus-resumable-upload-protocol, `protocol.md`) rather than against
//! tranche's code: the core protocol and the creation extension. Elsewhere:
//! the other extensions in `tus_ext`, concatenation in `tus_concat`,
//! metadata in `tus_metadata`, credentials and CORS in `tus_auth`, settings
//! in `tus_config`, races, cut connections and crashes in `tus_faults` (and
//! `tus_redis`), framing in `tus_wire`; the client they share is `tus_client`.

use reqwest::{Method, RequestBuilder};

use crate::helpers::*;
use crate::tus_client::*;

// ---------------------------------------------------------------------------
// Discovery (OPTIONS)

#[tokio::test]
async fn tus_options_advertise_the_version_every_extension_and_the_checksums() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let answer = tus.options().await.expect(&[200, 204]);
        // "A successful response ... MUST contain the Tus-Version header".
        let versions = list(answer.header("tus-version"));
        assert!(versions.iter().any(|v| v == TUS_VERSION), "{answer}");
        let extensions = list(answer.header("tus-extension"));
        for ext in [
            "creation",
            "creation-with-upload",
            "creation-defer-length",
            "expiration",
            "checksum",
            "termination",
            "concatenation",
        ] {
            assert!(
                extensions.iter().any(|e| e == ext),
                "{ext} missing: {answer}"
            );
        }
        let max = answer
            .header("tus-max-size")
            .unwrap_or_else(|| panic!("{answer}: Tus-Max-Size"));
        assert!(max.parse::<u64>().is_ok(), "Tus-Max-Size {max:?}");
        let algorithms = list(answer.header("tus-checksum-algorithm"));
        for alg in ["sha1", "sha256", "md5"] {
            assert!(algorithms.iter().any(|a| a == alg), "{alg}: {answer}");
        }
        // "The names ... MUST only consist of ASCII characters with the
        // modification that uppercase characters are excluded."
        for alg in &algorithms {
            assert!(
                alg.chars().all(|c| c.is_ascii() && !c.is_ascii_uppercase()),
                "{alg}"
            );
        }
    })
    .await
}

#[tokio::test]
async fn tus_options_ignore_tus_resumable_even_an_unsupported_one() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        // "The Client SHOULD NOT include the Tus-Resumable header in the
        // request and the Server MUST ignore the header."
        for version in [TUS_VERSION, "0.2.2", "2.0.0", "garbage"] {
            let answer = tus
                .send(
                    tus.bare(Method::OPTIONS, TUS_PATH)
                        .header("Tus-Resumable", version),
                )
                .await
                .expect(&[200, 204]);
            assert!(answer.header("tus-version").is_some(), "{answer}");
        }
    })
    .await
}

#[tokio::test]
async fn tus_max_size_is_the_limit_creation_enforces_with_413() {
    bounded(async {
        let app = spawn_app_with(|s| s.max_file_size = bytesize::ByteSize::kib(100)).await;
        let tus = Tus::new(&app);
        let answer = tus.options().await.expect(&[200, 204]);
        let max: u64 = answer
            .header("tus-max-size")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{answer}: Tus-Max-Size"));
        assert_eq!(max, 100 * 1024, "the configured max_file_size");
        // "If the length of the upload exceeds the maximum ... the Server
        // MUST respond with the 413 Request Entity Too Large status."
        let over = (max + 1).to_string();
        tus.post(&[("Upload-Length", &over)]).await.expect(&[413]);
        let at = max.to_string();
        tus.post(&[("Upload-Length", &at)]).await.expect(&[201]);
    })
    .await
}

// ---------------------------------------------------------------------------
// Creation and the core protocol

#[tokio::test]
async fn tus_an_upload_in_patches_is_an_ordinary_tranche_upload() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let data = test_data(10_000, 1);
        let meta = format!(
            "filename {},filetype {}",
            b64(b"report.pdf"),
            b64(b"application/pdf")
        );
        let created = tus
            .post(&[("Upload-Length", "10000"), ("Upload-Metadata", &meta)])
            .await
            .expect(&[201]);
        let url = tus.location(&created);
        assert!(
            url.path().starts_with(TUS_PATH) && url.path().len() > TUS_PATH.len(),
            "upload URL {url} under {TUS_PATH}"
        );

        // "The new resource has an implicit offset of 0."
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert_eq!(head.offset(), Some(0), "{head}");
        assert_eq!(head.length(), Some(10_000), "{head}");
        assert_eq!(head.header("cache-control"), Some("no-store"), "{head}");
        assert_eq!(
            head.header("upload-metadata"),
            Some(meta.as_str()),
            "{head}"
        );

        let mut offset = 0;
        for piece in [&data[..1], &data[1..4000], &data[4000..9999]] {
            offset = tus.patch_ok(&url, offset, piece).await;
            assert_eq!(tus.offset_of(&url).await, offset);
        }
        // The last PATCH finishes it: no further call, the file is there.
        tus.patch_ok(&url, offset, &data[9999..]).await;
        let (status, view) = tus.view(&upload_id(&url)).await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(
            view["status"], "completed",
            "right after the last PATCH: {view}"
        );
        let view = tus.assert_file(&url, &data).await;
        assert_eq!(view["filename"], "report.pdf", "{view}");
        assert_eq!(view["content_type"], "application/pdf", "{view}");

        // "The Server MUST always include the Upload-Offset header ... even if
        // ... the upload is already considered completed."
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert_eq!(head.offset(), Some(10_000), "{head}");
        assert_eq!(head.length(), Some(10_000), "{head}");
        assert_eq!(head.header("cache-control"), Some("no-store"), "{head}");
    })
    .await
}

#[tokio::test]
async fn tus_a_relative_upload_url_and_an_absolute_one_reach_the_same_upload() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.create(6, None).await;
        tus.patch_ok(&url, 0, b"abc").await;
        // The same upload by its path alone, resolved against the server.
        let by_path = tus.url(url.path());
        assert_eq!(tus.offset_of(&by_path).await, 3);
        tus.patch_ok(&by_path, 3, b"def").await;
        tus.assert_file(&url, b"abcdef").await;
    })
    .await
}

#[tokio::test]
async fn tus_an_empty_upload_is_complete_at_creation() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        // "The Upload-Length header MAY be set to 0 ... Such an upload is
        // immediately complete after its creation".
        let url = tus
            .create(0, Some(&format!("filename {}", b64(b"empty.txt"))))
            .await;
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert_eq!(head.offset(), Some(0), "{head}");
        assert_eq!(head.length(), Some(0), "{head}");
        let view = tus.assert_file(&url, b"").await;
        assert_eq!(view["filename"], "empty.txt");
    })
    .await
}

#[tokio::test]
async fn tus_a_wrong_offset_gets_409_and_changes_nothing() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let data = test_data(3000, 2);
        let url = tus.create(3000, None).await;
        // Ahead of an empty upload.
        tus.patch(&url, 1, &data[1..100]).await.expect(&[409]);
        assert_eq!(tus.offset_of(&url).await, 0);
        tus.patch_ok(&url, 0, &data[..1000]).await;
        // Behind (a replay), ahead, far ahead, and past the length.
        for (offset, bytes) in [
            (0u64, test_data(1000, 99)),
            (999, test_data(10, 98)),
            (1001, data[1001..2000].to_vec()),
            (2500, data[2500..].to_vec()),
            (3000, Vec::new()),
        ] {
            let answer = tus.patch(&url, offset, &bytes).await.expect(&[409]);
            assert!(answer.offset().is_none_or(|o| o == 1000), "{answer}");
            assert_eq!(tus.offset_of(&url).await, 1000, "after PATCH at {offset}");
        }
        tus.patch_ok(&url, 1000, &data[1000..]).await;
        tus.assert_file(&url, &data).await;
    })
    .await
}

#[tokio::test]
async fn tus_a_missing_or_malformed_upload_offset_is_refused() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.create(10, None).await;
        let missing = tus
            .request(Method::PATCH, url.as_str())
            .header("Content-Type", OCTETS)
            .body(b"0123456789".to_vec());
        let answer = tus.send(missing).await;
        assert!((400..500).contains(&answer.status), "{answer}");
        // "The value MUST be a non-negative integer."
        for bad in ["-1", "abc", "1.5", "", " 0x0", "18446744073709551616"] {
            let req = tus
                .request(Method::PATCH, url.as_str())
                .header("Upload-Offset", bad)
                .header("Content-Type", OCTETS)
                .body(b"0123456789".to_vec());
            let answer = tus.send(req).await;
            assert!(
                (400..500).contains(&answer.status),
                "Upload-Offset {bad:?}: {answer}"
            );
            assert_eq!(tus.offset_of(&url).await, 0);
        }
        tus.patch_ok(&url, 0, b"0123456789").await;
    })
    .await
}

#[tokio::test]
async fn tus_a_missing_or_unsupported_tus_resumable_gets_412_and_is_not_processed() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.create(20, None).await;
        tus.patch_ok(&url, 0, b"0123456789").await;
        let bare = |method: Method, target: &str| tus.bare(method, target);
        for version in [None, Some("0.2.2"), Some("1.0"), Some("2.0.0")] {
            let with = |req: RequestBuilder| match version {
                Some(v) => req.header("Tus-Resumable", v),
                None => req,
            };
            let requests = [
                with(bare(Method::POST, TUS_PATH))
                    .header("Upload-Length", "5")
                    .header("Content-Length", "0"),
                with(bare(Method::HEAD, url.as_str())),
                with(bare(Method::PATCH, url.as_str()))
                    .header("Upload-Offset", "10")
                    .header("Content-Type", OCTETS)
                    .body(b"abcdefghij".to_vec()),
                with(bare(Method::DELETE, url.as_str())).header("Content-Length", "0"),
            ];
            for req in requests {
                // "it MUST respond with the 412 Precondition Failed status and
                // MUST include the Tus-Version header".
                let answer = tus.send(req).await.expect(&[412]);
                let versions = list(answer.header("tus-version"));
                assert!(versions.iter().any(|v| v == TUS_VERSION), "{answer}");
                assert!(answer.header("location").is_none(), "{answer}");
            }
        }
        // Even where the request is wrong in other ways, the version is
        // checked first: "it MUST respond with the 412 Precondition Failed".
        let unknown = tus.url(&format!("{TUS_PATH}{}", uuid::Uuid::new_v4()));
        let requests = [
            bare(Method::HEAD, unknown.as_str()),
            bare(Method::PATCH, url.as_str())
                .header("Upload-Offset", "0")
                .header("Content-Type", "text/plain")
                .body(b"x".to_vec()),
            bare(Method::POST, TUS_PATH).header("Content-Length", "0"),
        ];
        for req in requests {
            tus.send(req).await.expect(&[412]);
        }
        // "the Server MUST NOT process the request": not the PATCH, not the
        // DELETE.
        assert_eq!(tus.offset_of(&url).await, 10);
        tus.patch_ok(&url, 10, b"ABCDEFGHIJ").await;
        tus.assert_file(&url, b"0123456789ABCDEFGHIJ").await;
    })
    .await
}

#[tokio::test]
async fn tus_a_patch_of_another_content_type_gets_415_and_changes_nothing() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.create(8, None).await;
        for content_type in [
            Some("application/octet-stream"),
            Some("text/plain"),
            Some("application/offset+octet-streamx"),
            None,
        ] {
            let mut req = tus
                .request(Method::PATCH, url.as_str())
                .header("Upload-Offset", "0")
                .body(b"wrongwro".to_vec());
            if let Some(ct) = content_type {
                req = req.header("Content-Type", ct);
            }
            tus.send(req).await.expect(&[415]);
            assert_eq!(tus.offset_of(&url).await, 0, "after {content_type:?}");
        }
        tus.patch_ok(&url, 0, b"rightone").await;
        tus.assert_file(&url, b"rightone").await;
    })
    .await
}

#[tokio::test]
async fn tus_bytes_past_the_upload_length_get_413_and_none_are_stored() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let data = test_data(1000, 3);
        let url = tus.create(1000, None).await;
        tus.patch_ok(&url, 0, &data[..600]).await;
        // 401 more bytes than the upload has room for, the first 400 right.
        let mut too_long = data[600..].to_vec();
        too_long.extend(test_data(1, 4));
        tus.patch(&url, 600, &too_long).await.expect(&[413]);
        // Nothing past the length: the offset may stay or take the bytes
        // that fit ("store as much of the received data as possible").
        let offset = tus.offset_of(&url).await;
        assert!((600..=1000).contains(&offset), "offset {offset}");
        if offset < 1000 {
            tus.patch_ok(&url, offset, &data[offset as usize..]).await;
        }
        tus.assert_file(&url, &data).await;
    })
    .await
}

#[tokio::test]
async fn tus_a_byte_past_a_completed_upload_gets_413() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let data = test_data(1000, 6);
        let url = tus.upload(&data, 1000, None).await;
        tus.assert_file(&url, &data).await;
        // At the right offset (so not 409), one byte past Upload-Length.
        tus.patch(&url, 1000, b"x").await.expect(&[413]);
        assert_eq!(tus.offset_of(&url).await, 1000);
        assert_eq!(tus.download(&upload_id(&url)).await, data);
    })
    .await
}

#[tokio::test]
async fn tus_an_unknown_upload_gets_404() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let unknown = tus.url(&format!("{TUS_PATH}{}", uuid::Uuid::new_v4()));
        let not_an_id = tus.url(&format!("{TUS_PATH}not-an-upload"));
        for url in [&unknown, &not_an_id] {
            // "without the Upload-Offset header"
            let head = tus.head(url).await.expect(&[404]);
            assert!(head.offset().is_none(), "{head}");
            // "If the server receives a PATCH request against a non-existent
            // resource it SHOULD return a 404 Not Found status."
            tus.patch(url, 0, b"abc").await.expect(&[404]);
            tus.delete(url).await.expect(&[404]);
        }
    })
    .await
}

#[tokio::test]
async fn tus_x_http_method_override_makes_a_post_a_patch_or_a_delete() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.create(10, None).await;
        // "MUST be interpreted as the request's method by the Server ... The
        // actual method of the request MUST be ignored."
        let as_patch = tus
            .request(Method::POST, url.as_str())
            .header("X-HTTP-Method-Override", "PATCH")
            .header("Upload-Offset", "0")
            .header("Content-Type", OCTETS)
            .body(b"01234".to_vec());
        let answer = tus.send(as_patch).await.expect(&[204]);
        assert_eq!(answer.offset(), Some(5), "{answer}");
        assert!(
            answer.header("location").is_none(),
            "{answer}: no new upload"
        );
        assert_eq!(tus.offset_of(&url).await, 5);
        // The override with a wrong offset is a PATCH with a wrong offset.
        let wrong = tus
            .request(Method::POST, url.as_str())
            .header("X-HTTP-Method-Override", "PATCH")
            .header("Upload-Offset", "0")
            .header("Content-Type", OCTETS)
            .body(b"zzzzz".to_vec());
        tus.send(wrong).await.expect(&[409]);
        tus.patch_ok(&url, 5, b"56789").await;
        tus.assert_file(&url, b"0123456789").await;

        let other = tus.create(10, None).await;
        let as_delete = tus
            .request(Method::POST, other.as_str())
            .header("X-HTTP-Method-Override", "DELETE")
            .header("Content-Length", "0");
        tus.send(as_delete).await.expect(&[204]);
        let gone = tus.head(&other).await.expect(&[404, 410]);
        assert!(gone.offset().is_none(), "{gone}");
    })
    .await
}

#[tokio::test]
async fn tus_creation_without_a_length_or_with_a_bad_one_is_refused() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        // "The request MUST include one of the following headers:
        // Upload-Length ... Upload-Defer-Length: 1".
        let none = tus.post(&[]).await;
        assert!((400..500).contains(&none.status), "{none}");
        for bad in ["-1", "ten", "1e3", "", "18446744073709551616"] {
            let answer = tus.post(&[("Upload-Length", bad)]).await;
            assert!(
                (400..500).contains(&answer.status),
                "Upload-Length {bad:?}: {answer}"
            );
            assert!(answer.header("location").is_none(), "{answer}");
        }
        // "If the Upload-Defer-Length header contains any other value than 1
        // the server should return a 400 Bad Request status."
        for bad in ["0", "2", "yes"] {
            tus.post(&[("Upload-Defer-Length", bad)])
                .await
                .expect(&[400]);
        }
    })
    .await
}

#[tokio::test]
async fn tus_patches_of_any_size_cross_the_servers_chunk_boundaries() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        // The test server's chunks are 64 KiB; tus clients know nothing of
        // them: one byte, a few odd sizes, then one big PATCH for the rest.
        let data = test_data(3 * 1024 * 1024 + 7, 5);
        let url = tus.create(data.len() as u64, None).await;
        let mut offset = 0u64;
        for size in [1usize, 65_535, 2, 70_001, 131_072] {
            let end = offset as usize + size;
            offset = tus
                .patch_ok(&url, offset, &data[offset as usize..end])
                .await;
        }
        tus.patch_ok(&url, offset, &data[offset as usize..]).await;
        tus.assert_file(&url, &data).await;
    })
    .await
}

#[tokio::test]
async fn tus_an_empty_patch_at_the_current_offset_changes_nothing() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.create(10, None).await;
        tus.patch_ok(&url, 0, b"01234").await;
        // Offsets match and no byte goes past the length: "The new offset
        // MUST be the sum of the offset before the PATCH request and the
        // number of bytes received".
        tus.patch_ok(&url, 5, b"").await;
        tus.patch_ok(&url, 5, b"56789").await;
        tus.assert_file(&url, b"0123456789").await;
    })
    .await
}

#[tokio::test]
async fn tus_a_completed_upload_takes_an_empty_patch_at_its_end() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.upload(b"0123456789", 10, None).await;
        tus.assert_file(&url, b"0123456789").await;
        // Its offset is its length, so the offsets match (409 is for "If the
        // offsets do not match"), and "The Server SHOULD accept PATCH
        // requests against any upload URL".
        tus.patch_ok(&url, 10, b"").await;
        assert_eq!(tus.offset_of(&url).await, 10);
    })
    .await
}

#[tokio::test]
async fn tus_every_answer_under_the_endpoint_carries_tus_resumable() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let url = tus.create(10, None).await;
        let deeper = tus.url(&format!("{}/extra", url.path()));
        // Methods the protocol does not use, and a path below an upload:
        // refused, but as the tus server ("MUST be included in every ...
        // response"; Answer::read checks it).
        for (method, target) in [
            (Method::PUT, url.as_str()),
            (Method::GET, TUS_PATH),
            (Method::PATCH, TUS_PATH),
            (Method::HEAD, deeper.as_str()),
            (Method::PATCH, deeper.as_str()),
        ] {
            let answer = tus
                .send(
                    tus.request(method.clone(), target)
                        .header("Upload-Offset", "0")
                        .header("Content-Type", OCTETS)
                        .body(b"0123456789".to_vec()),
                )
                .await;
            assert!((400..500).contains(&answer.status), "{answer}");
        }
        assert_eq!(tus.offset_of(&url).await, 0);
    })
    .await
}
