//! tus 1.0.0 at `/files/`, checked against the protocol text
//! (tus/tus-resumable-upload-protocol, `protocol.md`) rather than against
//! tranche's code: the core protocol and the creation extension, plus the
//! request helpers the other `tus_*` modules share. The other extensions are
//! in `tus_ext`, concatenation in `tus_concat`, credentials in `tus_auth`,
//! races, cut connections and crashes in `tus_faults`.

use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Url};
use serde_json::Value;

use crate::helpers::*;

pub const TUS_VERSION: &str = "1.0.0";
/// Where the endpoint lives by default (`[tus] path`).
pub const TUS_PATH: &str = "/files/";
/// The only body type a PATCH may carry (spec, "PATCH").
pub const OCTETS: &str = "application/offset+octet-stream";

/// An answer of the tus endpoint, read in full. Reading it checks what every
/// answer must carry whatever its status, so that no test can forget it:
/// `Tus-Resumable: 1.0.0` (spec, "Tus-Resumable": "MUST be included in every
/// request and response") and, if there is a body, JSON (tranche's errors).
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    /// The request, for failure messages.
    pub what: String,
}

impl Answer {
    pub async fn read(what: String, resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("answer body");
        let answer = Answer {
            status,
            headers,
            body,
            what,
        };
        assert_eq!(
            answer.header("tus-resumable"),
            Some(TUS_VERSION),
            "{answer}: every answer carries Tus-Resumable: 1.0.0"
        );
        if !answer.body.is_empty() {
            assert!(
                serde_json::from_slice::<Value>(&answer.body).is_ok(),
                "{answer}: a body, if any, is JSON"
            );
        }
        answer
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| {
            v.to_str()
                .unwrap_or_else(|_| panic!("{}: {name} is not ASCII", self.what))
        })
    }

    /// `Upload-Offset`, which must be a non-negative integer when present.
    pub fn offset(&self) -> Option<u64> {
        self.header("upload-offset").map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{self}: Upload-Offset {v:?} is not an integer"))
        })
    }

    pub fn length(&self) -> Option<u64> {
        self.header("upload-length").map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{self}: Upload-Length {v:?} is not an integer"))
        })
    }

    /// Asserts the status is one of `statuses`.
    pub fn expect(self, statuses: &[u16]) -> Answer {
        assert!(
            statuses.contains(&self.status),
            "{self}: expected status {statuses:?}"
        );
        self
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("<binary>")))
            .collect();
        write!(
            f,
            "{} -> {} [{}] {}",
            self.what,
            self.status,
            headers.join("; "),
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// A tus client of one server, with one credential (or none).
#[derive(Clone)]
pub struct Tus {
    pub client: reqwest::Client,
    /// `http://127.0.0.1:port`
    pub base: String,
    pub bearer: Option<String>,
}

impl Tus {
    pub fn new(app: &TestApp) -> Tus {
        Tus::at(app.client.clone(), &app.address)
    }

    /// A client of a server that is not a `TestApp` (the real binary).
    pub fn at(client: reqwest::Client, base: &str) -> Tus {
        Tus {
            client,
            base: base.to_owned(),
            bearer: None,
        }
    }

    pub fn with_bearer(app: &TestApp, credential: &str) -> Tus {
        Tus {
            bearer: Some(credential.to_owned()),
            ..Tus::new(app)
        }
    }

    /// `target` resolved against the creation URL, as a client resolves a
    /// `Location` ("This URL MAY be absolute or relative").
    pub fn url(&self, target: &str) -> Url {
        Url::parse(&format!("{}{TUS_PATH}", self.base))
            .unwrap()
            .join(target)
            .unwrap_or_else(|e| panic!("cannot resolve {target:?}: {e}"))
    }

    /// A request without `Tus-Resumable`.
    pub fn bare(&self, method: Method, target: &str) -> RequestBuilder {
        let mut req = self.client.request(method, self.url(target));
        if let Some(c) = &self.bearer {
            req = req.bearer_auth(c);
        }
        req
    }

    /// A request as a tus 1.0.0 client sends it.
    pub fn request(&self, method: Method, target: &str) -> RequestBuilder {
        self.bare(method, target)
            .header("Tus-Resumable", TUS_VERSION)
    }

    pub async fn send(&self, req: RequestBuilder) -> Answer {
        let req = req.build().expect("request builds");
        let what = format!("{} {}", req.method(), req.url().path());
        let resp = self
            .client
            .execute(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        Answer::read(what, resp).await
    }

    pub async fn options(&self) -> Answer {
        self.send(self.bare(Method::OPTIONS, TUS_PATH)).await
    }

    /// `POST /files/` with these headers and no body.
    pub async fn post(&self, headers: &[(&str, &str)]) -> Answer {
        let mut req = self.request(Method::POST, TUS_PATH);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.header("Content-Length", "0")).await
    }

    /// Creates an upload of `length` bytes; returns its absolute URL.
    pub async fn create(&self, length: u64, metadata: Option<&str>) -> Url {
        let length = length.to_string();
        let mut headers = vec![("Upload-Length", length.as_str())];
        if let Some(m) = metadata {
            headers.push(("Upload-Metadata", m));
        }
        let answer = self.post(&headers).await.expect(&[201]);
        self.location(&answer)
    }

    /// The created upload's URL from a 201's `Location`.
    pub fn location(&self, answer: &Answer) -> Url {
        let loc = answer
            .header("location")
            .unwrap_or_else(|| panic!("{answer}: a 201 carries Location"));
        self.url(loc)
    }

    pub async fn head(&self, url: &Url) -> Answer {
        self.send(self.request(Method::HEAD, url.as_str())).await
    }

    /// A PATCH as the spec has it: the offset, the right type, the bytes.
    pub fn patch_request(&self, url: &Url, offset: u64, bytes: &[u8]) -> RequestBuilder {
        self.request(Method::PATCH, url.as_str())
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", OCTETS)
            .body(bytes.to_vec())
    }

    pub async fn patch(&self, url: &Url, offset: u64, bytes: &[u8]) -> Answer {
        self.send(self.patch_request(url, offset, bytes)).await
    }

    /// A PATCH that must succeed: 204 and the new offset (spec, "PATCH").
    pub async fn patch_ok(&self, url: &Url, offset: u64, bytes: &[u8]) -> u64 {
        let answer = self.patch(url, offset, bytes).await.expect(&[204]);
        let want = offset + bytes.len() as u64;
        assert_eq!(answer.offset(), Some(want), "{answer}");
        want
    }

    pub async fn delete(&self, url: &Url) -> Answer {
        self.send(
            self.request(Method::DELETE, url.as_str())
                .header("Content-Length", "0"),
        )
        .await
    }

    /// The upload's offset by HEAD, which must answer 200 or 204.
    pub async fn offset_of(&self, url: &Url) -> u64 {
        let answer = self.head(url).await.expect(&[200, 204]);
        answer
            .offset()
            .unwrap_or_else(|| panic!("{answer}: HEAD always carries Upload-Offset"))
    }

    /// Creates an upload for `data` and sends it in PATCHes of `piece` bytes.
    pub async fn upload(&self, data: &[u8], piece: usize, metadata: Option<&str>) -> Url {
        let url = self.create(data.len() as u64, metadata).await;
        let mut offset = 0;
        for p in data.chunks(piece.max(1)) {
            offset = self.patch_ok(&url, offset, p).await;
        }
        url
    }

    /// The `/api/v1` credential for reads: the test's own, else nothing.
    fn api_request(&self, path: &str) -> RequestBuilder {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(c) = &self.bearer {
            req = req.bearer_auth(c);
        }
        req
    }

    /// `GET /api/v1/uploads/{id}` as JSON, whatever the status.
    pub async fn view(&self, id: &str) -> (u16, Value) {
        let resp = self
            .api_request(&format!("/api/v1/uploads/{id}"))
            .send()
            .await
            .expect("status request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The upload's `/api/v1` view once it is completed. Waits a little
    /// (bounded) for the cases where the server may assemble after its
    /// answer (a concatenation's final upload).
    pub async fn completed_view(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, view) = self.view(id).await;
            if status == 200 && view["status"] == "completed" {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "upload {id} not completed within {within:?}: {status} {view}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /api/v1/files/{id}`'s bytes, which must answer 200.
    pub async fn download(&self, id: &str) -> Vec<u8> {
        let resp = self
            .api_request(&format!("/api/v1/files/{id}"))
            .send()
            .await
            .expect("download request");
        assert_eq!(resp.status(), 200, "download of {id}");
        resp.bytes().await.unwrap().to_vec()
    }

    /// Asserts the upload behind `url` is a completed tranche upload of
    /// exactly `data`: its SHA-256 in the view and its bytes on download.
    pub async fn assert_file(&self, url: &Url, data: &[u8]) -> Value {
        let id = upload_id(url);
        let view = self.completed_view(&id, Duration::from_secs(5)).await;
        assert_eq!(view["file"]["sha256"], sha256_hex(data), "{view}");
        assert_eq!(view["size"], data.len() as u64, "{view}");
        let got = self.download(&id).await;
        assert_eq!(got.len(), data.len(), "downloaded length");
        assert!(
            got == data,
            "downloaded bytes differ from the uploaded ones"
        );
        view
    }
}

/// The tranche id of an upload URL: its last path segment.
pub fn upload_id(url: &Url) -> String {
    url.path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("no id in {url}"))
        .to_owned()
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A comma-separated header value as a list of trimmed items.
pub fn list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

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
        for bad in ["-1", "abc", "1.5", "", " 0x0"] {
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
        // And on a complete upload, one more byte.
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
async fn tus_creation_without_a_length_or_with_a_bad_one_is_refused() {
    bounded(async {
        let app = spawn_app().await;
        let tus = Tus::new(&app);
        // "The request MUST include one of the following headers:
        // Upload-Length ... Upload-Defer-Length: 1".
        let none = tus.post(&[]).await;
        assert!((400..500).contains(&none.status), "{none}");
        for bad in ["-1", "ten", "1e3", ""] {
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
