//! `GET` / `HEAD /api/v1/files/{id}`: the completed file with its headers,
//! and ranges.

use base64::Engine;
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

/// Uploads `data` under `filename` / `content_type` and completes it.
async fn publish(app: &TestApp, data: &[u8], filename: &str, content_type: &str) -> String {
    let created = expect_json(
        app.create(json!({"filename": filename, "size": data.len(), "content_type": content_type, "chunk_size": 1024}))
            .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let n = data.len().div_ceil(1024) as u64;
    app.send_chunks(&id, data, 1024, 0..n).await;
    assert_eq!(
        expect_json(app.complete(&id).await, 200).await["status"],
        "completed"
    );
    id
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header; headers: {:?}", resp.headers()))
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn download_sends_the_file_with_its_headers() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(5000, 71);
        let id = publish(&app, &data, "leçon 1 – vidéo.mp4", "video/mp4").await;

        let resp = app.download(&id).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-length"), "5000");
        assert_eq!(header(&resp, "content-type"), "video/mp4");
        // The declared type is final: no browser guesses another from the bytes.
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
        let disposition = header(&resp, "content-disposition");
        assert!(disposition.starts_with("attachment"), "{disposition}");
        assert!(
            disposition.contains("filename*=UTF-8''le%C3%A7on%201%20%E2%80%93%20vid%C3%A9o.mp4"),
            "{disposition}"
        );
        assert!(!header(&resp, "etag").is_empty());
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(hex::decode(sha256_hex(&data)).unwrap());
        assert_eq!(header(&resp, "repr-digest"), format!("sha-256=:{b64}:"));
        assert_eq!(header(&resp, "digest"), format!("sha-256={b64}"));
        let body = resp.bytes().await.unwrap();
        assert_eq!(&body[..], &data[..]);
    })
    .await
}

#[tokio::test]
async fn download_filename_cannot_smuggle_paths_or_quotes() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(100, 72);
        let id = publish(&app, &data, "../../etc/\"passwd\".txt", "text/plain").await;
        let resp = app.download(&id).await;
        assert_eq!(resp.status(), 200);
        let disposition = header(&resp, "content-disposition");
        assert!(!disposition.contains('/'), "{disposition}");
        assert!(!disposition.contains("\\\""), "{disposition}");
        assert_eq!(disposition.matches('"').count() % 2, 0, "{disposition}");
    })
    .await
}

#[tokio::test]
async fn download_keeps_the_content_type_declared_at_create() {
    bounded(async {
        let app = spawn_app().await;
        // A charset other than UTF-8: announcing the wrong one garbles the text.
        let data = b"le\xe7on\n".to_vec();
        let id = publish(&app, &data, "latin1.txt", "text/plain; charset=iso-8859-1").await;
        let resp = app.download(&id).await;
        assert_eq!(resp.status(), 200);
        let content_type = header(&resp, "content-type")
            .replace(' ', "")
            .to_ascii_lowercase();
        assert_eq!(content_type, "text/plain;charset=iso-8859-1");
    })
    .await
}

#[tokio::test]
async fn download_honours_a_byte_range_with_206() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(5000, 73);
        let id = publish(&app, &data, "r.bin", "application/octet-stream").await;
        let resp = app
            .request(Method::GET, &format!("/api/v1/files/{id}"))
            .header("range", "bytes=10-99")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206);
        assert_eq!(header(&resp, "content-range"), "bytes 10-99/5000");
        assert_eq!(header(&resp, "content-length"), "90");
        let body = resp.bytes().await.unwrap();
        assert_eq!(&body[..], &data[10..100]);
    })
    .await
}

#[tokio::test]
async fn download_answers_head_with_the_length_and_no_body() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3000, 74);
        let id = publish(&app, &data, "h.bin", "application/octet-stream").await;
        let resp = app
            .request(Method::HEAD, &format!("/api/v1/files/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-length"), "3000");
        assert!(resp.headers().contains_key("etag"));
        assert!(resp.bytes().await.unwrap().is_empty());
    })
    .await
}

#[tokio::test]
async fn download_of_an_unknown_or_unfinished_upload_answers_404() {
    bounded(async {
        let app = spawn_app().await;
        let unknown = uuid::Uuid::new_v4().to_string();
        assert_error(app.download(&unknown).await, 404, "file_not_found").await;

        let data = test_data(3000, 75);
        let id = app.create_for(&data, 1024).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_error(app.download(&id).await, 404, "file_not_found").await;
        // Even with every chunk there, it is no file until completed.
        app.send_chunks(&id, &data, 1024, 0..3).await;
        assert_error(app.download(&id).await, 404, "file_not_found").await;
    })
    .await
}

/// A `GET` of file `id` with the given request headers.
async fn get_with(app: &TestApp, id: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app.request(Method::GET, &format!("/api/v1/files/{id}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// Asserts a 206 with `Content-Range` and exactly `data[start..=end]`.
async fn assert_part(resp: reqwest::Response, data: &[u8], start: usize, end: usize) {
    assert_eq!(resp.status(), 206, "{:?}", resp.headers());
    assert_eq!(
        header(&resp, "content-range"),
        format!("bytes {start}-{end}/{}", data.len())
    );
    assert_eq!(
        header(&resp, "content-length"),
        (end - start + 1).to_string()
    );
    let body = resp.bytes().await.unwrap();
    assert_eq!(&body[..], &data[start..=end]);
}

/// Asserts a 200 with the whole of `data` and no `Content-Range`.
async fn assert_whole(resp: reqwest::Response, data: &[u8]) {
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    assert!(!resp.headers().contains_key("content-range"));
    assert_eq!(header(&resp, "content-length"), data.len().to_string());
    let body = resp.bytes().await.unwrap();
    assert_eq!(&body[..], data);
}

#[tokio::test]
async fn download_serves_open_ended_suffix_and_clamped_ranges() {
    bounded(async {
        let app = spawn_app().await;
        // Larger than one read from disk, so that ranges cross reads.
        let data = test_data(200_000, 80);
        let id = app.upload_all(&data, 64 * 1024).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let cases: &[(&str, usize, usize)] = &[
            ("bytes=0-0", 0, 0),
            ("bytes=65530-131080", 65530, 131080),
            ("bytes=199000-", 199000, 199999),
            ("bytes=-1000", 199000, 199999),
            // A suffix longer than the file is all of it.
            ("bytes=-900000", 0, 199999),
            // A last position past the end stops at the end.
            ("bytes=150000-900000", 150000, 199999),
        ];
        for &(range, start, end) in cases {
            let resp = get_with(&app, &id, &[("range", range)]).await;
            assert_part(resp, &data, start, end).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_range_on_a_zero_byte_file_is_ignored() {
    bounded(async {
        let app = spawn_app().await;
        let id = app.upload_all(&[], 1024).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // `bytes=-1` used to panic inside actix-files and drop the connection.
        for range in ["bytes=-1", "bytes=0-0", "bytes=0-", "bytes=-0"] {
            let resp = get_with(&app, &id, &[("range", range)]).await;
            assert_whole(resp, &[]).await;
        }
    })
    .await
}

#[tokio::test]
async fn an_unsatisfiable_range_answers_416_in_json_with_the_length() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(5000, 81);
        let id = publish(&app, &data, "u.bin", "video/mp4").await;
        for range in [
            "bytes=700000-",
            "bytes=5000-",
            "bytes=5000-6000",
            "bytes=-0",
        ] {
            let resp = get_with(&app, &id, &[("range", range)]).await;
            assert_eq!(header(&resp, "content-range"), "bytes */5000", "{range}");
            let body = assert_error(resp, 416, "range_not_satisfiable").await;
            assert_eq!(body["size"], 5000);
        }
    })
    .await
}

#[tokio::test]
async fn malformed_ranges_and_other_units_are_ignored() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3000, 82);
        let id = publish(&app, &data, "m.bin", "application/octet-stream").await;
        for range in [
            "items=0-1",
            "bytes=abc",
            "bytes=9-1",
            "bytes=",
            "bytes=1-2-3",
        ] {
            let resp = get_with(&app, &id, &[("range", range)]).await;
            assert_whole(resp, &data).await;
        }
    })
    .await
}

#[tokio::test]
async fn several_ranges_get_the_whole_file() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3000, 83);
        let id = publish(&app, &data, "multi.bin", "application/octet-stream").await;
        for range in ["bytes=0-1,5-6", "bytes=0-1, 2000-", "bytes=9000-,9500-"] {
            let resp = get_with(&app, &id, &[("range", range)]).await;
            assert_whole(resp, &data).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_declared_text_type_is_sent_exactly_without_a_charset() {
    bounded(async {
        let app = spawn_app().await;
        for declared in ["text/plain", "text/csv", "text/html"] {
            let id = publish(&app, b"a,b\n1,2\n", "t.txt", declared).await;
            let resp = app.download(&id).await;
            assert_eq!(resp.status(), 200);
            assert_eq!(header(&resp, "content-type"), declared);
            // The same on a part.
            let resp = get_with(&app, &id, &[("range", "bytes=0-1")]).await;
            assert_eq!(resp.status(), 206);
            assert_eq!(header(&resp, "content-type"), declared);
        }
    })
    .await
}

#[tokio::test]
async fn the_etag_is_the_files_sha256_and_the_validators_are_sent() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(2000, 84);
        let id = publish(&app, &data, "e.bin", "application/octet-stream").await;
        let resp = app.download(&id).await;
        assert_eq!(header(&resp, "etag"), format!("\"{}\"", sha256_hex(&data)));
        assert_eq!(header(&resp, "accept-ranges"), "bytes");
        assert!(!header(&resp, "last-modified").is_empty());
        // Auth is off: nothing to keep out of shared caches.
        assert!(!resp.headers().contains_key("cache-control"));
        // A part carries the whole file's validators and digest.
        let part = get_with(&app, &id, &[("range", "bytes=5-9")]).await;
        assert_eq!(header(&part, "etag"), header(&resp, "etag"));
        assert_eq!(header(&part, "repr-digest"), header(&resp, "repr-digest"));
    })
    .await
}

#[tokio::test]
async fn if_none_match_and_if_modified_since_answer_304() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(2000, 85);
        let id = publish(&app, &data, "c.bin", "application/octet-stream").await;
        let first = app.download(&id).await;
        let etag = header(&first, "etag");
        let modified = header(&first, "last-modified");

        for h in [
            ("if-none-match", etag.as_str()),
            ("if-none-match", "*"),
            ("if-none-match", &format!("\"other\", W/{etag}")),
            ("if-modified-since", modified.as_str()),
        ] {
            let resp = get_with(&app, &id, &[h]).await;
            assert_eq!(resp.status(), 304, "{h:?}");
            assert_eq!(header(&resp, "etag"), etag);
            assert!(resp.bytes().await.unwrap().is_empty());
        }
        // Another tag, or an older date: the file.
        let resp = get_with(&app, &id, &[("if-none-match", "\"other\"")]).await;
        assert_whole(resp, &data).await;
        let old = "Mon, 01 Jan 2001 00:00:00 GMT";
        let resp = get_with(&app, &id, &[("if-modified-since", old)]).await;
        assert_whole(resp, &data).await;
        // HEAD revalidates too.
        let resp = app
            .request(Method::HEAD, &format!("/api/v1/files/{id}"))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 304);
    })
    .await
}

#[tokio::test]
async fn a_false_if_match_or_if_unmodified_since_answers_412_in_json() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(2000, 86);
        let id = publish(&app, &data, "p.bin", "video/mp4").await;
        let etag = header(&app.download(&id).await, "etag");

        let resp = get_with(&app, &id, &[("if-match", "\"zzz\"")]).await;
        assert_error(resp, 412, "precondition_failed").await;
        let old = "Mon, 01 Jan 2001 00:00:00 GMT";
        let resp = get_with(&app, &id, &[("if-unmodified-since", old)]).await;
        assert_error(resp, 412, "precondition_failed").await;
        // A failed If-Match wins over a range.
        let resp = get_with(
            &app,
            &id,
            &[("if-match", "\"zzz\""), ("range", "bytes=0-9")],
        )
        .await;
        assert_error(resp, 412, "precondition_failed").await;

        let resp = get_with(&app, &id, &[("if-match", &etag)]).await;
        assert_whole(resp, &data).await;
        let resp = get_with(&app, &id, &[("if-match", "*"), ("range", "bytes=0-9")]).await;
        assert_part(resp, &data, 0, 9).await;
    })
    .await
}

#[tokio::test]
async fn if_range_sends_the_part_only_of_the_same_file() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(4000, 87);
        let id = publish(&app, &data, "ir.bin", "application/octet-stream").await;
        let first = app.download(&id).await;
        let etag = header(&first, "etag");
        let modified = header(&first, "last-modified");
        let range = ("range", "bytes=100-199");

        let resp = get_with(&app, &id, &[range, ("if-range", &etag)]).await;
        assert_part(resp, &data, 100, 199).await;
        let resp = get_with(&app, &id, &[range, ("if-range", &modified)]).await;
        assert_part(resp, &data, 100, 199).await;

        let old = "Mon, 01 Jan 2001 00:00:00 GMT";
        for validator in ["\"stale\"", old, &format!("W/{etag}")] {
            let resp = get_with(&app, &id, &[range, ("if-range", validator)]).await;
            assert_whole(resp, &data).await;
        }
    })
    .await
}

#[tokio::test]
async fn head_ignores_range_and_sends_the_full_length() {
    bounded(async {
        let app = spawn_app().await;
        let data = test_data(3000, 88);
        let id = publish(&app, &data, "hr.bin", "application/octet-stream").await;
        for range in ["bytes=0-9", "bytes=9000-"] {
            let resp = app
                .request(Method::HEAD, &format!("/api/v1/files/{id}"))
                .header("range", range)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{range}");
            assert_eq!(header(&resp, "content-length"), "3000");
            assert_eq!(header(&resp, "accept-ranges"), "bytes");
            assert!(!resp.headers().contains_key("content-range"));
            assert!(resp.bytes().await.unwrap().is_empty());
        }
    })
    .await
}
