//! tus 1.0.0 `Upload-Metadata`, from the protocol text: what a HEAD gives
//! back, and how tranche maps the keys tus clients send onto an upload
//! (`filename`/`name`, `filetype`/`type`, the rest in `metadata`).

use serde_json::Value;

use crate::helpers::*;
use crate::tus_client::*;

#[tokio::test]
async fn tus_metadata_round_trips_exactly_and_maps_onto_the_upload() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        // An empty value with its space (not last: a header value's trailing
        // space is not part of it), a key without a value.
        let meta = format!(
            "filename {},empty {},novalue,filetype {},camera {}",
            b64("ünïcode name.mp4".as_bytes()),
            b64(b""),
            b64(b"video/mp4"),
            b64(b"Pixel 9"),
        );
        let url = tus.create(4, Some(&meta)).await;
        // "responses to HEAD requests MUST include the Upload-Metadata header
        // and its value as specified by the Client during the creation."
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert_eq!(
            head.header("upload-metadata"),
            Some(meta.as_str()),
            "{head}"
        );
        tus.patch_ok(&url, 0, b"data").await;
        let view = tus.assert_file(&url, b"data").await;
        assert_eq!(view["filename"], "ünïcode name.mp4", "{view}");
        assert_eq!(view["content_type"], "video/mp4", "{view}");
        let extra = view["metadata"].as_object().expect("metadata object");
        assert_eq!(extra.get("camera"), Some(&Value::from("Pixel 9")), "{view}");
        for key in ["empty", "novalue"] {
            assert!(extra.contains_key(key), "{key} kept: {view}");
        }
        assert_eq!(extra.get("empty"), Some(&Value::from("")), "{view}");
        // The keys that became filename and content type are not repeated.
        assert!(
            !extra.contains_key("filename") && !extra.contains_key("filetype"),
            "{view}"
        );
        // Still exact after completion.
        let head = tus.head(&url).await.expect(&[200, 204]);
        assert_eq!(
            head.header("upload-metadata"),
            Some(meta.as_str()),
            "{head}"
        );
    })
    .await
}

#[tokio::test]
async fn tus_binary_metadata_is_echoed_exactly_or_refused() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        // Not UTF-8, with a newline, a comma and a space once decoded: "Since
        // metadata can contain arbitrary binary values, Servers SHOULD
        // carefully validate metadata values or sanitize them" and "MAY
        // decide to ... reject it".
        let meta = format!(
            "blob {},filename {}",
            b64(&[0, 255, 10, 13, 44, 32]),
            b64(b"a\r\nb")
        );
        let answer = tus
            .post(&[("Upload-Length", "1"), ("Upload-Metadata", &meta)])
            .await;
        if answer.status == 201 {
            let url = tus.location(&answer);
            let head = tus.head(&url).await.expect(&[200, 204]);
            assert_eq!(
                head.header("upload-metadata"),
                Some(meta.as_str()),
                "{head}"
            );
            // No header was smuggled in through the decoded values.
            assert!(head.headers.keys().all(|k| k.as_str() != "b"), "{head}");
        } else {
            assert_eq!(answer.status, 400, "{answer}");
        }
    })
    .await
}

#[tokio::test]
async fn tus_name_and_type_are_the_other_spellings_of_filename_and_filetype() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let meta = format!("name {},type {}", b64(b"photo.jpg"), b64(b"image/jpeg"));
        let url = tus.create(3, Some(&meta)).await;
        tus.patch_ok(&url, 0, b"jpg").await;
        let view = tus.assert_file(&url, b"jpg").await;
        assert_eq!(view["filename"], "photo.jpg", "{view}");
        assert_eq!(view["content_type"], "image/jpeg", "{view}");
    })
    .await
}

#[tokio::test]
async fn tus_metadata_that_is_not_base64_is_refused_or_kept_exactly() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        // "the value MUST be Base64 encoded"; the Server "MAY decide to ...
        // reject it". It may not mangle it.
        let meta = "filename not*base64!";
        let answer = tus
            .post(&[("Upload-Length", "1"), ("Upload-Metadata", meta)])
            .await;
        if answer.status == 201 {
            let head = tus.head(&tus.location(&answer)).await.expect(&[200, 204]);
            assert_eq!(head.header("upload-metadata"), Some(meta), "{head}");
        } else {
            assert_eq!(answer.status, 400, "{answer}");
        }
    })
    .await
}

#[tokio::test]
async fn tus_metadata_with_a_repeated_key_is_refused_or_kept_exactly() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        // "All keys MUST be unique": a client's duty; a server that takes
        // the header anyway still owes it back "as specified by the Client".
        let meta = format!("note {},note {}", b64(b"one"), b64(b"two"));
        let answer = tus
            .post(&[("Upload-Length", "1"), ("Upload-Metadata", &meta)])
            .await;
        if answer.status == 201 {
            let head = tus.head(&tus.location(&answer)).await.expect(&[200, 204]);
            assert_eq!(
                head.header("upload-metadata"),
                Some(meta.as_str()),
                "{head}"
            );
        } else {
            assert_eq!(answer.status, 400, "{answer}");
        }
    })
    .await
}

#[tokio::test]
async fn tus_an_announced_sha256_is_checked_at_the_last_patch() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let data = test_data(5000, 92);
        // tranche's own key (docs/API.md): the file's SHA-256 in hex.
        let meta = |digest: &str| format!("sha256 {}", b64(digest.as_bytes()));
        let right = tus
            .upload(&data, 2000, Some(&meta(&sha256_hex(&data))))
            .await;
        tus.assert_file(&right, &data).await;

        let url = tus
            .create(5000, Some(&meta(&sha256_hex(b"other bytes"))))
            .await;
        tus.patch_ok(&url, 0, &data[..4000]).await;
        tus.patch(&url, 4000, &data[4000..]).await.expect(&[422]);
        let (_, view) = tus.view(&upload_id(&url)).await;
        assert_ne!(view["status"], "completed", "{view}");
        assert!(view["file"].is_null(), "{view}");
    })
    .await
}

/// The `sha256` key takes part in dedup as a create's `sha256` does: a
/// second tus upload of stored content is complete at its creation, its
/// offset at its length, and no PATCH is needed.
#[tokio::test]
async fn tus_a_second_upload_of_stored_content_is_complete_at_creation() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        let data = test_data(5000, 93);
        let meta = format!("sha256 {}", b64(sha256_hex(&data).as_bytes()));
        let first = tus.upload(&data, 2000, Some(&meta)).await;
        tus.assert_file(&first, &data).await;

        let second = tus.create(5000, Some(&meta)).await;
        assert_ne!(upload_id(&second), upload_id(&first));
        assert_eq!(tus.offset_of(&second).await, 5000);
        tus.assert_file(&second, &data).await;
    })
    .await
}
