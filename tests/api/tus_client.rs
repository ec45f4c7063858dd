//! A tus 1.0.0 client for the `tus_*` modules: requests as the protocol text
//! (tus/tus-resumable-upload-protocol, `protocol.md`) has a client send them,
//! and answers read in full with what every answer must carry checked on the
//! way in.

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
    /// The creation URL's path ([`TUS_PATH`] unless configured otherwise).
    pub path: String,
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
            path: TUS_PATH.to_owned(),
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
        Url::parse(&format!("{}{}", self.base, self.path))
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
        self.send(self.bare(Method::OPTIONS, &self.path)).await
    }

    /// `POST /files/` with these headers and no body.
    pub async fn post(&self, headers: &[(&str, &str)]) -> Answer {
        let mut req = self.request(Method::POST, &self.path);
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
