//! `tranche upload`: hash the file, create the upload (or pick up the one a
//! previous run left), send the missing chunks in parallel and complete.
//!
//! Memory stays bounded: at most `parallel` chunks are read and in flight at
//! once, each read with a positional read so that parallel readers of one
//! file never share a seek position. The command around it (reports,
//! `--json`, the resume command) is in [`command`].

mod command;

pub use command::run;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::api::{Api, Completion, Created, NewUpload};
use super::progress::{phase, Progress};
use super::resume::{FileKey, ResumeState, StateDir};
use super::{describe, ClientError};
use crate::wire::{Status, UploadView};

/// Rounds of "send what is missing, then complete" before giving up: a
/// second round is needed only if chunks went missing in between (expired
/// parts, a server that lost a chunk).
const MAX_ROUNDS: usize = 3;
/// Read size while hashing the whole file.
const HASH_BUFFER: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub parallel: usize,
    pub chunk_size: Option<u64>,
}

/// What one file's upload did, for people and for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Uploaded {
    pub path: PathBuf,
    pub upload_id: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
    pub chunk_size: u64,
    pub chunk_count: u64,
    /// Chunks and bytes this run sent (not those already on the server).
    pub chunks_sent: u64,
    pub bytes_sent: u64,
    /// Whether this run continued an upload that a previous run started.
    pub resumed: bool,
    /// Whether the server already stored this content and answered the
    /// create with a completed upload (dedup): no byte was sent.
    pub already_stored: bool,
    /// What the server said about the create request (an ignored field, say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Where the file being uploaded stands, kept outside [`upload_file`] so that
/// an interrupted run can still say it (`--json`).
#[derive(Debug, Default)]
pub struct Progressed {
    /// The upload on the server, once created or found.
    pub upload_id: Option<String>,
    pub size: u64,
    /// Bytes the server has acknowledged (held before this run, or sent by it).
    pub bytes_acknowledged: u64,
}

pub(crate) type Live = std::sync::Mutex<Progressed>;

fn record(live: &Live, update: impl FnOnce(&mut Progressed)) {
    if let Ok(mut p) = live.lock() {
        update(&mut p);
    }
}

/// Uploads one file; see the module doc.
pub async fn upload_file(
    api: &Api,
    states: &StateDir,
    progress: &Progress,
    path: &Path,
    opts: &UploadOptions,
    live: &Live,
) -> Result<Uploaded, ClientError> {
    let key = FileKey::of(path)?;
    record(live, |p| p.size = key.size);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let server = api.url("")?.to_string();
    let bar = progress.bar(&name, key.size);
    let on_retry = |e: &ClientError, delay: Duration| {
        progress.note(&format!(
            "{name}: {}; retrying in {:.1}s",
            describe(e),
            delay.as_secs_f64()
        ))
    };

    let (state, view, resumed, warnings) =
        match resume(api, states, &server, &key, &on_retry).await? {
            Some((state, view)) => (state, view, true, Vec::new()),
            None => {
                let (state, created) = start(
                    api, states, &server, &key, &name, path, opts, &bar, &on_retry,
                )
                .await?;
                for warning in &created.warnings {
                    progress.note(&format!("{name}: the server warns: {warning}"));
                }
                (state, created.view, false, created.warnings)
            }
        };
    record(live, |p| {
        p.upload_id = Some(view.id.to_string());
        p.bytes_acknowledged = view.bytes_received;
    });
    // Completed at once, without a chunk: the server had these bytes (the
    // create carries the file's SHA-256, which is hashed first for this).
    let already_stored = !resumed && view.status == Status::Completed;
    let token = state.upload_token.as_deref();
    let id = view.id.to_string();
    let sent = Sent::default();
    let mut view = view;
    let mut rounds = 0;
    loop {
        match view.status {
            Status::Completed => break,
            Status::Assembling => {
                bar.set_message("assembling");
                view = wait_assembled(api, &id, token, &on_retry).await?;
            }
            Status::Uploading if rounds < MAX_ROUNDS => {
                rounds += 1;
                send_missing(
                    api,
                    path,
                    &view,
                    token,
                    opts.parallel,
                    &bar,
                    &sent,
                    live,
                    &on_retry,
                )
                .await?;
                bar.set_message("completing");
                view = match api.complete(&id, token, &on_retry).await {
                    Ok(Completion::Done(v)) => *v,
                    Ok(Completion::Assembling) => api.get_upload(&id, token, &on_retry).await?,
                    Err(ClientError::Server {
                        status: 409, code, ..
                    }) if code == "upload_incomplete" => {
                        api.get_upload(&id, token, &on_retry).await?
                    }
                    Err(ClientError::Server {
                        status: 422,
                        message,
                        ..
                    }) => {
                        states.remove(&server, &key);
                        return Err(ClientError::Verification(message));
                    }
                    Err(e) => return Err(e),
                };
            }
            Status::Uploading => {
                return Err(ClientError::Server {
                    status: 409,
                    code: "upload_incomplete".into(),
                    message: format!(
                        "chunks {:?} still missing after {MAX_ROUNDS} rounds of sending them",
                        view.missing_chunks
                    ),
                    retry_after: None,
                })
            }
            Status::Failed | Status::Aborted => {
                states.remove(&server, &key);
                let (code, message) = view
                    .error
                    .map(|f| (f.error, f.message))
                    .unwrap_or_else(|| ("upload_failed".into(), "the upload was aborted".into()));
                if code == "digest_mismatch" {
                    return Err(ClientError::Verification(message));
                }
                // The upload's state forbids going on, as the API's 409 says.
                return Err(ClientError::Server {
                    status: 409,
                    code,
                    message,
                    retry_after: None,
                });
            }
        }
    }

    let file = view.file.ok_or_else(|| ClientError::Server {
        status: 200,
        code: "invalid_answer".into(),
        message: "the completed upload has no file".into(),
        retry_after: None,
    })?;
    states.remove(&server, &key);
    if file.sha256 != state.sha256 {
        return Err(ClientError::Verification(format!(
            "the server's file has sha256 {}, the local file {}",
            file.sha256, state.sha256
        )));
    }
    bar.set_message("done");
    bar.finish();
    Ok(Uploaded {
        path: path.to_path_buf(),
        upload_id: id,
        url: api.url(&file.url)?.to_string(),
        sha256: file.sha256,
        size: view.size,
        chunk_size: view.chunk_size,
        chunk_count: view.chunk_count,
        chunks_sent: sent.chunks.load(Ordering::Relaxed),
        bytes_sent: sent.bytes.load(Ordering::Relaxed),
        resumed,
        already_stored,
        warnings,
    })
}

/// The upload a previous run left for this file, if the server still has it
/// in a state worth continuing. A state the server no longer knows (expired,
/// aborted, removed) is forgotten, and the caller starts afresh. So is one
/// whose saved upload token has expired, unless the user's own credential
/// (an API key) still reaches it.
async fn resume(
    api: &Api,
    states: &StateDir,
    server: &str,
    key: &FileKey,
    on_retry: &(dyn Fn(&ClientError, Duration) + Sync),
) -> Result<Option<(ResumeState, UploadView)>, ClientError> {
    let Some(mut state) = states.load(server, key) else {
        return Ok(None);
    };
    let mut found = api
        .get_upload(&state.upload_id, state.upload_token.as_deref(), on_retry)
        .await;
    if state.upload_token.is_some()
        && matches!(&found, Err(ClientError::Server { status: 401, .. }))
    {
        found = api.get_upload(&state.upload_id, None, on_retry).await;
        if found.is_ok() {
            state.upload_token = None;
        }
    }
    match found {
        Ok(view)
            if view.size == state.size
                && view.chunk_size == state.chunk_size
                && matches!(
                    view.status,
                    Status::Uploading | Status::Assembling | Status::Completed
                ) =>
        {
            Ok(Some((state, view)))
        }
        Ok(_)
        | Err(ClientError::Server {
            status: 404 | 410, ..
        }) => {
            states.remove(server, key);
            Ok(None)
        }
        // The saved upload token expired and the user's credential cannot
        // reach that upload (a create token): a new upload is the way on.
        Err(ClientError::Server {
            status: 401 | 403, ..
        }) if state.upload_token.is_some() => {
            states.remove(server, key);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Hashes the file, creates the upload and records it at once, so that a run
/// interrupted from here on resumes.
#[allow(clippy::too_many_arguments)]
async fn start(
    api: &Api,
    states: &StateDir,
    server: &str,
    key: &FileKey,
    name: &str,
    path: &Path,
    opts: &UploadOptions,
    bar: &ProgressBar,
    on_retry: &(dyn Fn(&ClientError, Duration) + Sync),
) -> Result<(ResumeState, Created), ClientError> {
    phase(bar, "hashing", key.size, 0);
    let sha256 = file_sha256(path, bar.clone()).await?;
    let new = NewUpload {
        filename: name.to_owned(),
        size: key.size,
        content_type: mime_guess::from_path(path)
            .first_or_octet_stream()
            .essence_str()
            .to_owned(),
        sha256,
        chunk_size: opts.chunk_size,
    };
    let idempotency_key = uuid::Uuid::new_v4().to_string();
    let created = api.create(&new, &idempotency_key, on_retry).await?;
    let view = &created.view;
    let state = ResumeState {
        server: server.to_owned(),
        path: key.canonical.clone(),
        size: key.size,
        upload_id: view.id.to_string(),
        chunk_size: view.chunk_size,
        sha256: new.sha256,
        upload_token: view.upload_token.clone(),
    };
    states.save(key, &state)?;
    Ok((state, created))
}

/// Counts of what this run sent, shared by the parallel chunk senders.
#[derive(Default)]
struct Sent {
    chunks: AtomicU64,
    bytes: AtomicU64,
}

/// Sends every chunk in `view.missing_chunks`, `parallel` at a time; stops at
/// the first chunk that fails for good.
#[allow(clippy::too_many_arguments)]
async fn send_missing(
    api: &Api,
    path: &Path,
    view: &UploadView,
    token: Option<&str>,
    parallel: usize,
    bar: &ProgressBar,
    sent: &Sent,
    live: &Live,
    on_retry: &(dyn Fn(&ClientError, Duration) + Sync),
) -> Result<(), ClientError> {
    phase(bar, "uploading", view.size, view.bytes_received);
    record(live, |p| p.bytes_acknowledged = view.bytes_received);
    if view.missing_chunks.is_empty() {
        return Ok(());
    }
    let file =
        Arc::new(std::fs::File::open(path).map_err(|e| ClientError::local("cannot read it", e))?);
    let id = view.id.to_string();
    futures::stream::iter(view.missing_chunks.iter().copied())
        .map(|index| {
            let file = Arc::clone(&file);
            let id = &id;
            async move {
                let start = index * view.chunk_size;
                let len = view.chunk_size.min(view.size.saturating_sub(start));
                let (body, digest) = read_at(file, start, len).await?;
                api.put_chunk(id, index, body, digest, token, on_retry)
                    .await?;
                bar.inc(len);
                record(live, |p| p.bytes_acknowledged += len);
                sent.chunks.fetch_add(1, Ordering::Relaxed);
                sent.bytes.fetch_add(len, Ordering::Relaxed);
                Ok::<(), ClientError>(())
            }
        })
        .buffer_unordered(parallel.max(1))
        .try_collect::<()>()
        .await
}

/// `len` bytes of `file` from `offset` and their SHA-256, read and hashed off
/// the runtime's threads.
async fn read_at(
    file: Arc<std::fs::File>,
    offset: u64,
    len: u64,
) -> Result<(Bytes, [u8; 32]), ClientError> {
    let read = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        let digest: [u8; 32] = Sha256::digest(&buf).into();
        Ok::<_, std::io::Error>((Bytes::from(buf), digest))
    })
    .await
    .map_err(|e| ClientError::local("cannot read it", e))?;
    read.map_err(|e| ClientError::local("cannot read it (did it shrink?)", e))
}

/// The SHA-256 of the whole file, read in bounded buffers; `bar` advances
/// with the bytes read.
pub async fn file_sha256(path: &Path, bar: ProgressBar) -> Result<String, ClientError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use std::io::Read;
        let mut f = std::fs::File::open(&owned)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; HASH_BUFFER];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bar.inc(n as u64);
        }
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| ClientError::local("cannot read it", e))?
    .map_err(|e| ClientError::local("cannot read it", e))
}

/// Polls an upload that is being assembled until it is not, with a delay
/// that grows to a few seconds (assembly of a big file takes a while).
async fn wait_assembled(
    api: &Api,
    id: &str,
    token: Option<&str>,
    on_retry: &(dyn Fn(&ClientError, Duration) + Sync),
) -> Result<UploadView, ClientError> {
    let mut delay = Duration::from_millis(200);
    loop {
        tokio::time::sleep(delay).await;
        let view = api.get_upload(id, token, on_retry).await?;
        if view.status != Status::Assembling {
            return Ok(view);
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
