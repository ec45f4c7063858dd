//! tus 1.0.0 concatenation, from the protocol text: partial uploads, a final
//! upload made of them in the listed order, and what a final upload refuses.
//! The final upload is an ordinary tranche upload, with its SHA-256.

use std::time::Duration;

use reqwest::{Method, Url};

use crate::helpers::*;
use crate::tus_client::*;

/// A final upload may be assembled after its 201; this long at most.
const ASSEMBLY: Duration = Duration::from_secs(10);

/// A completed partial upload of `data`.
async fn partial(tus: &Tus, data: &[u8], metadata: Option<&str>) -> Url {
    let length = data.len().to_string();
    let mut headers = vec![
        ("Upload-Length", length.as_str()),
        ("Upload-Concat", "partial"),
    ];
    if let Some(m) = metadata {
        headers.push(("Upload-Metadata", m));
    }
    let url = tus.location(&tus.post(&headers).await.expect(&[201]));
    if !data.is_empty() {
        tus.patch_ok(&url, 0, data).await;
    }
    url
}

/// `POST` of a final upload; the 201 is the caller's to check.
async fn final_upload(tus: &Tus, concat: &str, metadata: Option<&str>) -> Answer {
    let mut headers = vec![("Upload-Concat", concat)];
    if let Some(m) = metadata {
        headers.push(("Upload-Metadata", m));
    }
    tus.post(&headers).await
}

/// Once a final upload is assembled, its HEAD has the offset and length equal
/// ("After successful concatenation, the Upload-Offset and Upload-Length MUST
/// be set and their values MUST be equal") and echoes Upload-Concat.
async fn assert_final_head(tus: &Tus, url: &Url, concat: &str, length: u64) {
    let head = tus.head(url).await.expect(&[200, 204]);
    assert_eq!(head.length(), Some(length), "{head}");
    assert_eq!(head.offset(), Some(length), "{head}");
    assert_eq!(head.header("upload-concat"), Some(concat), "{head}");
    assert_eq!(head.header("cache-control"), Some("no-store"), "{head}");
}

#[tokio::test]
async fn tus_partials_concatenate_in_the_listed_order_by_relative_urls() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        // The spec's own example first.
        let a = partial(&tus, b"hello", None).await;
        let b = partial(&tus, b" world", None).await;
        // "The response to a HEAD request for a partial upload MUST contain
        // the Upload-Offset header" and Upload-Concat "as received".
        let head = tus.head(&a).await.expect(&[200, 204]);
        assert_eq!(head.offset(), Some(5), "{head}");
        assert_eq!(head.header("upload-concat"), Some("partial"), "{head}");

        let concat = format!("final;{} {}", a.path(), b.path());
        let meta = format!("filename {}", b64(b"greeting.txt"));
        let created = final_upload(&tus, &concat, Some(&meta))
            .await
            .expect(&[201]);
        let url = tus.location(&created);
        // "The Upload-Length header MUST be included if the length of the
        // final resource can be calculated at the time of the request."
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert_eq!(head.length(), Some(11), "{head}");
        assert_eq!(
            head.header("upload-concat"),
            Some(concat.as_str()),
            "{head}"
        );
        // "The value of the Upload-Offset header before concatenation is not
        // defined": only that it is an integer if present (Answer::offset).
        let _ = head.offset();

        let view = tus.completed_view(&upload_id(&url), ASSEMBLY).await;
        assert_eq!(view["filename"], "greeting.txt", "{view}");
        tus.assert_file(&url, b"hello world").await;
        assert_final_head(&tus, &url, &concat, 11).await;
    })
    .await
}

#[tokio::test]
async fn tus_partials_concatenate_by_absolute_urls_into_a_big_file() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let parts = [
            test_data(70_000, 21),
            test_data(1, 22),
            test_data(4097, 23),
            test_data(130_000, 24),
        ];
        let mut urls = Vec::new();
        for p in &parts {
            urls.push(partial(&tus, p, None).await);
        }
        let list: Vec<&str> = urls.iter().map(Url::as_str).collect();
        let concat = format!("final;{}", list.join(" "));
        let url = tus.location(&final_upload(&tus, &concat, None).await.expect(&[201]));
        let all = parts.concat();
        tus.completed_view(&upload_id(&url), ASSEMBLY).await;
        tus.assert_file(&url, &all).await;
        assert_final_head(&tus, &url, &concat, all.len() as u64).await;
    })
    .await
}

#[tokio::test]
async fn tus_a_partial_may_be_used_twice_in_one_final_and_in_two_finals() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let a = partial(&tus, b"ab", None).await;
        let b = partial(&tus, b"CD", None).await;
        // "The same partial upload MAY be present multiple times in the
        // Upload-Concat header in one upload creation request or MAY be used
        // in multiple upload creation requests." The server MAY also delete
        // partials after concatenation, so a refusal of the reuse is allowed:
        // a wrong file is not.
        let first = format!("final;{} {} {}", a.path(), b.path(), a.path());
        let answer = final_upload(&tus, &first, None).await;
        if answer.status == 201 {
            let url = tus.location(&answer);
            tus.completed_view(&upload_id(&url), ASSEMBLY).await;
            tus.assert_file(&url, b"abCDab").await;
        } else {
            assert!((400..500).contains(&answer.status), "{answer}");
        }
        let second = format!("final;{} {}", b.path(), a.path());
        let answer = final_upload(&tus, &second, None).await;
        if answer.status == 201 {
            let url = tus.location(&answer);
            tus.completed_view(&upload_id(&url), ASSEMBLY).await;
            tus.assert_file(&url, b"CDab").await;
        } else {
            assert!([400, 404, 409, 410].contains(&answer.status), "{answer}");
        }
    })
    .await
}

#[tokio::test]
async fn tus_a_final_upload_refuses_patches_with_403_and_stays_intact() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let a = partial(&tus, b"12345", None).await;
        let b = partial(&tus, b"67890", None).await;
        let concat = format!("final;{} {}", a.path(), b.path());
        let url = tus.location(&final_upload(&tus, &concat, None).await.expect(&[201]));
        tus.completed_view(&upload_id(&url), ASSEMBLY).await;
        // "The Server MUST respond with the 403 Forbidden status to PATCH
        // requests against a final upload URL and MUST NOT modify the final
        // or its partial uploads."
        for offset in [0u64, 5, 10] {
            tus.patch(&url, offset, b"xxxxx").await.expect(&[403]);
        }
        tus.assert_file(&url, b"1234567890").await;
        assert_final_head(&tus, &url, &concat, 10).await;
        for p in [&a, &b] {
            let head = tus.head(p).await;
            if head.status != 404 && head.status != 410 {
                // Still there (the server MAY delete partials): unchanged.
                assert!([200, 204].contains(&head.status), "{head}");
                assert_eq!(head.offset(), Some(5), "{head}");
            }
        }
    })
    .await
}

#[tokio::test]
async fn tus_partial_metadata_is_not_carried_into_the_final_upload() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let meta = format!("filename {},secret {}", b64(b"part-a.bin"), b64(b"x"));
        let a = partial(&tus, b"abc", Some(&meta)).await;
        let head = tus.head(&a).await.expect(&[200, 204]);
        assert_eq!(
            head.header("upload-metadata"),
            Some(meta.as_str()),
            "{head}"
        );
        let concat = format!("final;{}", a.path());
        let url = tus.location(&final_upload(&tus, &concat, None).await.expect(&[201]));
        // "the partial uploads' metadata SHALL NOT be transferred to the new
        // final upload."
        let view = tus.completed_view(&upload_id(&url), ASSEMBLY).await;
        assert_ne!(view["filename"], "part-a.bin", "{view}");
        assert!(view["metadata"].get("secret").is_none(), "{view}");
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert!(head.header("upload-metadata").is_none(), "{head}");
        tus.assert_file(&url, b"abc").await;
    })
    .await
}

#[tokio::test]
async fn tus_a_final_upload_of_unknown_or_non_partial_uploads_is_refused() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let a = partial(&tus, b"abc", None).await;
        let plain = tus.upload(b"plain", 5, None).await;
        let unknown = format!("{TUS_PATH}{}", uuid::Uuid::new_v4());
        for concat in [
            format!("final;{} {unknown}", a.path()),
            format!("final;{} {}", a.path(), plain.path()),
            "final;".to_owned(),
            format!("final;{}", app.url("/api/v1/uploads")),
        ] {
            let answer = final_upload(&tus, &concat, None).await;
            assert!((400..500).contains(&answer.status), "{concat}: {answer}");
            assert!(answer.header("location").is_none(), "{answer}");
        }
        // A final with a length of its own: "The Client MUST NOT include the
        // Upload-Length header in the final upload creation."
        let concat = format!("final;{}", a.path());
        let answer = tus
            .post(&[("Upload-Concat", &concat), ("Upload-Length", "3")])
            .await;
        assert!(
            (400..500).contains(&answer.status) || answer.status == 201,
            "{answer}"
        );
        // The refused finals left the partial alone.
        assert_eq!(tus.offset_of(&a).await, 3);
    })
    .await
}

#[tokio::test]
async fn tus_a_final_upload_of_an_unfinished_partial_needs_concatenation_unfinished() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let options = tus.options().await.expect(&[200, 204]);
        let unfinished_ok = list(options.header("tus-extension"))
            .iter()
            .any(|e| e == "concatenation-unfinished");
        let a = partial(&tus, b"done", None).await;
        let b = tus.location(
            &tus.post(&[("Upload-Length", "10"), ("Upload-Concat", "partial")])
                .await
                .expect(&[201]),
        );
        tus.patch_ok(&b, 0, b"half").await;
        let concat = format!("final;{} {}", a.path(), b.path());
        let answer = final_upload(&tus, &concat, None).await;
        if unfinished_ok {
            // "This feature MUST be explicitly announced": announced, so the
            // final completes once the partial does.
            let url = tus.location(&answer.expect(&[201]));
            tus.patch_ok(&b, 4, b"-rest!").await;
            tus.completed_view(&upload_id(&url), ASSEMBLY).await;
            tus.assert_file(&url, b"donehalf-rest!").await;
        } else {
            // Not announced: the final must not be made of half a partial.
            assert!((400..500).contains(&answer.status), "{answer}");
            tus.patch_ok(&b, 4, b"-rest!").await;
            let url = tus.location(&final_upload(&tus, &concat, None).await.expect(&[201]));
            tus.completed_view(&upload_id(&url), ASSEMBLY).await;
            tus.assert_file(&url, b"donehalf-rest!").await;
        }
    })
    .await
}

#[tokio::test]
async fn tus_a_final_upload_can_be_terminated() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let a = partial(&tus, b"abc", None).await;
        let concat = format!("final;{}", a.path());
        let url = tus.location(&final_upload(&tus, &concat, None).await.expect(&[201]));
        tus.completed_view(&upload_id(&url), ASSEMBLY).await;
        tus.delete(&url).await.expect(&[204]);
        tus.head(&url).await.expect(&[404, 410]);
        let resp = tus
            .bare(Method::GET, &format!("/api/v1/files/{}", upload_id(&url)))
            .send()
            .await
            .unwrap();
        assert!(
            [404, 410].contains(&resp.status().as_u16()),
            "{}",
            resp.status()
        );
    })
    .await
}

#[tokio::test]
async fn tus_a_final_upload_longer_than_tus_max_size_gets_413() {
    bounded(async {
        let app = spawn_app_with(|s| s.max_file_size = bytesize::ByteSize::kib(4)).await;
        let tus = Tus::new(&app);
        let a = partial(&tus, &test_data(3000, 25), None).await;
        let b = partial(&tus, &test_data(3000, 26), None).await;
        // "If the length of the upload exceeds the maximum ... the Server
        // MUST respond with the 413 Request Entity Too Large status."
        let concat = format!("final;{} {}", a.path(), b.path());
        let answer = final_upload(&tus, &concat, None).await.expect(&[413]);
        assert!(answer.header("location").is_none(), "{answer}");
    })
    .await
}

#[tokio::test]
async fn tus_a_final_upload_outlives_its_partials_and_refuses_terminated_ones() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let a = partial(&tus, b"first-", None).await;
        let b = partial(&tus, b"second", None).await;
        let concat = format!("final;{} {}", a.path(), b.path());
        let url = tus.location(&final_upload(&tus, &concat, None).await.expect(&[201]));
        tus.completed_view(&upload_id(&url), ASSEMBLY).await;
        // Terminating the partials (or finding them gone) leaves the final
        // whole.
        for p in [&a, &b] {
            tus.delete(p).await.expect(&[204, 404, 410]);
        }
        tus.assert_file(&url, b"first-second").await;
        assert_final_head(&tus, &url, &concat, 12).await;
        // A new final of terminated partials is refused.
        let answer = final_upload(&tus, &concat, None).await;
        assert!([400, 404, 409, 410].contains(&answer.status), "{answer}");
    })
    .await
}

#[tokio::test]
async fn tus_an_empty_partial_takes_its_place_in_a_final_upload() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let a = partial(&tus, b"left|", None).await;
        // Complete at creation ("Upload-Length ... MAY be set to 0").
        let empty = partial(&tus, b"", None).await;
        let b = partial(&tus, b"|right", None).await;
        let concat = format!("final;{} {} {}", a.path(), empty.path(), b.path());
        let url = tus.location(&final_upload(&tus, &concat, None).await.expect(&[201]));
        tus.completed_view(&upload_id(&url), ASSEMBLY).await;
        tus.assert_file(&url, b"left||right").await;
    })
    .await
}
