//! API v1 over HTTP for the client: one method per endpoint, each request
//! retried with exponential backoff and jitter while the failure is one a
//! retry can fix, honouring the server's `Retry-After`.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use base64::Engine;
use bytes::Bytes;
use reqwest::{header, Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

use super::ClientError;
use crate::wire::{ScrubReport, UploadView};

/// Control requests are small; a server that takes longer is treated as gone.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait between two attempts, also when `Retry-After` asks for more.
const MAX_DELAY: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    retries: usize,
}

/// The create request of API v1.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewUpload {
    pub filename: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
}

/// `GET /api/v1`, the parts the client reads.
#[derive(Debug, Deserialize)]
pub struct ServiceDocument {
    #[serde(default)]
    pub version: String,
    pub auth: ServiceAuth,
}

#[derive(Debug, Deserialize)]
pub struct ServiceAuth {
    pub required: bool,
    /// `none`, `not_needed`, `api_key`, `upload_token` or `create_token`.
    pub credential: String,
}

/// The create answer: the upload, and what the server had to say about the
/// request (`warnings`, say an unknown field it ignored).
pub struct Created {
    pub view: UploadView,
    pub warnings: Vec<String>,
}

/// What `complete` answered.
pub enum Completion {
    Done(Box<UploadView>),
    /// 202: the server is still assembling; poll the upload.
    Assembling,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
}

#[derive(Deserialize)]
struct ChunkAnswer {
    sha256: Option<String>,
}

impl Api {
    /// The client of a command's `--server`, `--token` and `--retries`.
    pub fn for_client(args: &crate::cli::ClientArgs) -> Result<Api, ClientError> {
        Api::new(&args.server, args.token.clone(), args.retries)
    }

    pub fn new(server: &str, token: Option<String>, retries: usize) -> Result<Api, ClientError> {
        let mut base = Url::parse(server)
            .map_err(|e| ClientError::local(format!("--server {server:?}"), e))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Local(format!(
                "--server {server:?}: must be an http:// or https:// URL"
            )));
        }
        // `join` keeps the last path segment only when the base ends in '/':
        // a server behind a prefix (https://host/tranche) keeps its prefix.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("tranche/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::local("cannot set up HTTP", e))?;
        Ok(Api {
            http,
            base,
            token: token.filter(|t| !t.is_empty()),
            retries,
        })
    }

    /// An absolute URL for `path`, which may be relative to the server
    /// (`/api/v1/files/ID`, as `file.url` is without `public_url`) or absolute.
    pub fn url(&self, path: &str) -> Result<Url, ClientError> {
        let relative = path.strip_prefix('/').unwrap_or(path);
        self.base
            .join(relative)
            .map_err(|e| ClientError::local(format!("URL {path:?}"), e))
    }

    /// A request to the endpoint under the server's base URL named by
    /// `segments`, each percent-encoded: an id typed by the user stays one
    /// path segment, whatever it contains.
    fn request(&self, method: Method, segments: &[&str], token: Option<&str>) -> RequestBuilder {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        let req = self.http.request(method, url);
        match token.or(self.token.as_deref()) {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends what `make` builds until it succeeds, fails for good, or the
    /// retries run out; `on_retry` hears about each failed attempt.
    pub async fn send(
        &self,
        make: impl Fn() -> RequestBuilder,
        on_retry: &(dyn Fn(&ClientError, Duration) + Sync),
    ) -> Result<Response, ClientError> {
        (|| async { checked(make().send().await.map_err(network)?).await })
            .retry(self.backoff())
            .when(ClientError::is_retryable)
            .adjust(|e, delay| {
                let asked = match e {
                    ClientError::Server { retry_after, .. } => *retry_after,
                    _ => None,
                };
                next_delay(delay, asked)
            })
            .notify(|e, delay| on_retry(e, delay))
            .await
    }

    pub async fn create(
        &self,
        new: &NewUpload,
        idempotency_key: &str,
        on_retry: &(dyn Fn(&ClientError, Duration) + Sync),
    ) -> Result<Created, ClientError> {
        let resp = self
            .send(
                || {
                    self.request(Method::POST, &["api", "v1", "uploads"], None)
                        .timeout(CONTROL_TIMEOUT)
                        // A create retried after a lost answer returns the
                        // first upload instead of starting a second one.
                        .header("Idempotency-Key", idempotency_key)
                        .json(new)
                },
                on_retry,
            )
            .await?;
        let answer: serde_json::Value = json(resp).await?;
        let view: UploadView = serde_json::from_value(answer).map_err(|e| ClientError::Server {
            status: 201,
            code: "invalid_answer".into(),
            message: format!("the create answer is not an upload: {e}"),
            retry_after: None,
        })?;
        let warnings = view.warnings.clone();
        Ok(Created { view, warnings })
    }

    /// `GET /api/v1`: the service document (version, limits, whether a
    /// credential is needed and what the one sent is).
    pub async fn service(
        &self,
        on_retry: &(dyn Fn(&ClientError, Duration) + Sync),
    ) -> Result<ServiceDocument, ClientError> {
        let resp = self
            .send(
                || {
                    self.request(Method::GET, &["api", "v1"], None)
                        .timeout(CONTROL_TIMEOUT)
                },
                on_retry,
            )
            .await?;
        json(resp).await
    }

    pub async fn get_upload(
        &self,
        id: &str,
        token: Option<&str>,
        on_retry: &(dyn Fn(&ClientError, Duration) + Sync),
    ) -> Result<UploadView, ClientError> {
        let path = ["api", "v1", "uploads", id];
        let resp = self
            .send(
                || {
                    self.request(Method::GET, &path, token)
                        .timeout(CONTROL_TIMEOUT)
                },
                on_retry,
            )
            .await?;
        json(resp).await
    }

    /// Sends chunk `index` with its `Content-Digest` (`digest` is the
    /// chunk's SHA-256, computed by the caller off the runtime's threads), and
    /// checks the digest the server says it stored.
    pub async fn put_chunk(
        &self,
        id: &str,
        index: u64,
        body: Bytes,
        digest: [u8; 32],
        token: Option<&str>,
        on_retry: &(dyn Fn(&ClientError, Duration) + Sync),
    ) -> Result<(), ClientError> {
        let header_value = format!(
            "sha-256=:{}:",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        let index_text = index.to_string();
        let path = ["api", "v1", "uploads", id, "chunks", &index_text];
        let resp = self
            .send(
                || {
                    self.request(Method::PUT, &path, token)
                        .header("Content-Digest", &header_value)
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .body(body.clone())
                },
                on_retry,
            )
            .await?;
        let answer: ChunkAnswer = json(resp).await?;
        match answer.sha256 {
            Some(stored) if stored != hex::encode(digest) => {
                Err(ClientError::Verification(format!(
                    "chunk {index}: the server stored sha256 {stored}, we sent {}",
                    hex::encode(digest)
                )))
            }
            _ => Ok(()),
        }
    }

    pub async fn complete(
        &self,
        id: &str,
        token: Option<&str>,
        on_retry: &(dyn Fn(&ClientError, Duration) + Sync),
    ) -> Result<Completion, ClientError> {
        let path = ["api", "v1", "uploads", id, "complete"];
        let resp = self
            .send(
                || {
                    // Assembly may take the server's whole `complete_wait`.
                    self.request(Method::POST, &path, token)
                        .timeout(CONTROL_TIMEOUT * 2)
                },
                on_retry,
            )
            .await?;
        if resp.status() == StatusCode::ACCEPTED {
            return Ok(Completion::Assembling);
        }
        Ok(Completion::Done(Box::new(json(resp).await?)))
    }

    /// `GET /api/v1/files/{id}` from byte `from` on (a `Range` request when
    /// `from > 0`): a 200 or 206 answer whose body is the caller's to read.
    pub async fn download(
        &self,
        id: &str,
        from: u64,
        on_retry: &(dyn Fn(&ClientError, Duration) + Sync),
    ) -> Result<Response, ClientError> {
        let path = ["api", "v1", "files", id];
        let range = format!("bytes={from}-");
        self.send(
            || {
                let req = self.request(Method::GET, &path, None);
                if from > 0 {
                    req.header(header::RANGE, &range)
                } else {
                    req
                }
            },
            on_retry,
        )
        .await
    }

    /// `HEAD /api/v1/files/{id}`: the file's length and digest headers.
    pub async fn head_file(
        &self,
        id: &str,
        on_retry: &(dyn Fn(&ClientError, Duration) + Sync),
    ) -> Result<Response, ClientError> {
        let path = ["api", "v1", "files", id];
        self.send(
            || {
                self.request(Method::HEAD, &path, None)
                    .timeout(CONTROL_TIMEOUT)
            },
            on_retry,
        )
        .await
    }

    /// `DELETE /api/v1/files/{id}`: 204, also for a file deleted already.
    pub async fn delete_file(
        &self,
        id: &str,
        on_retry: &(dyn Fn(&ClientError, Duration) + Sync),
    ) -> Result<(), ClientError> {
        let path = ["api", "v1", "files", id];
        self.send(
            || {
                self.request(Method::DELETE, &path, None)
                    .timeout(CONTROL_TIMEOUT)
            },
            on_retry,
        )
        .await
        .map(|_| ())
    }

    /// `POST /api/v1/admin/scrub`: waits (no timeout) while the server
    /// reads every completed file. A retry is harmless: a scrub changes nothing.
    pub async fn scrub(
        &self,
        bandwidth: Option<u64>,
        on_retry: &(dyn Fn(&ClientError, Duration) + Sync),
    ) -> Result<ScrubReport, ClientError> {
        let path = ["api", "v1", "admin", "scrub"];
        let resp = self
            .send(
                || {
                    let req = self.request(Method::POST, &path, None);
                    match bandwidth {
                        Some(b) => req.query(&[("bandwidth", b)]),
                        None => req,
                    }
                },
                on_retry,
            )
            .await?;
        json(resp).await
    }

    /// The delays between attempts: exponential with jitter, capped, as many
    /// as `--retries` allows.
    pub fn backoff(&self) -> impl backon::Backoff {
        use backon::BackoffBuilder;
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(MAX_DELAY)
            .with_max_times(self.retries)
            .with_jitter()
            .build()
    }
}

/// The wait before the next attempt: the backoff's, or longer if the server
/// asked for more with `Retry-After`. Never shorter than the backoff: a
/// server's "1 s" repeated (say a chunk lease left by an instance that died,
/// which lapses only after 10 s) must not use up every retry within seconds.
/// `None` (no retries left) stays `None`: Retry-After buys no extra attempt.
fn next_delay(backoff: Option<Duration>, asked: Option<Duration>) -> Option<Duration> {
    backoff.map(|d| asked.map_or(d, |a| a.min(MAX_DELAY).max(d)))
}

/// A 2xx answer as is; any other turned into [`ClientError::Server`] with the
/// server's error code, message and `Retry-After`.
async fn checked(resp: Response) -> Result<Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = resp.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => (body.error, body.message),
        // Not tranche speaking: a proxy in between, say.
        Err(_) => (
            status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_"),
            text.chars().take(200).collect::<String>().trim().to_owned(),
        ),
    };
    Err(ClientError::Server {
        status: status.as_u16(),
        code,
        message,
        retry_after,
    })
}

pub(crate) fn network(e: reqwest::Error) -> ClientError {
    // The server's origin, not the request's whole URL: which endpoint the
    // request was for says nothing about why the server cannot be reached.
    let origin = e
        .url()
        .map(|u| format!("{}: ", u.origin().ascii_serialization()))
        .unwrap_or_default();
    let e = e.without_url();
    // The chain holds the useful part ("Connection refused").
    let mut text = format!("{origin}{e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    ClientError::Network(text)
}

async fn json<T: serde::de::DeserializeOwned>(resp: Response) -> Result<T, ClientError> {
    let url = resp.url().clone();
    let bytes = resp.bytes().await.map_err(network)?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Server {
        status: 200,
        code: "invalid_answer".into(),
        message: format!("{url} answered something that is not tranche's JSON: {e}"),
        retry_after: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_lengthens_the_backoff_but_never_shortens_it() {
        let s = Duration::from_secs;
        assert_eq!(next_delay(Some(s(4)), Some(s(1))), Some(s(4)));
        assert_eq!(next_delay(Some(s(1)), Some(s(5))), Some(s(5)));
        assert_eq!(next_delay(Some(s(1)), Some(s(3600))), Some(MAX_DELAY));
        assert_eq!(next_delay(Some(s(2)), None), Some(s(2)));
        assert_eq!(next_delay(None, Some(s(1))), None);
    }
}
