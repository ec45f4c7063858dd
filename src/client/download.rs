//! `tranche download ID -o PATH`: streams a completed file to disk, resumes a
//! partial file with a `Range` request, and checks the whole file's SHA-256
//! against the digest the server announces. The hash is fed from the bytes as
//! they are written (and from the partial file's bytes first), so the file is
//! read back only when there is nothing left to download.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use indicatif::ProgressBar;
use reqwest::{header, Response, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::api::{network, Api};
use super::progress::{phase, Progress};
use super::{describe, ClientError};
use crate::cli::DownloadArgs;

#[derive(Debug, Clone, Serialize)]
pub struct Downloaded {
    pub path: PathBuf,
    pub id: String,
    pub size: u64,
    pub sha256: String,
    /// Whether the server announced a digest and the file matched it.
    pub verified: bool,
    /// Bytes received by this run (less than `size` when it resumed).
    pub bytes_received: u64,
    pub resumed: bool,
}

/// Where the download stands: the file on disk and the hash of its bytes.
struct Partial {
    file: tokio::fs::File,
    hasher: Sha256,
    len: u64,
}

impl Partial {
    /// Opens `path`, keeping what is there, and hashes its bytes.
    async fn open(path: &Path) -> Result<Partial, ClientError> {
        let owned = path.to_path_buf();
        let (file, hasher, len) = tokio::task::spawn_blocking(move || {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&owned)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut len = 0u64;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Ok::<_, std::io::Error>((file, hasher, len))
        })
        .await
        .map_err(|e| ClientError::local(path.display(), e))?
        .map_err(|e| ClientError::local(path.display(), e))?;
        // The read left the position at the end, where appending goes on.
        Ok(Partial {
            file: tokio::fs::File::from_std(file),
            hasher,
            len,
        })
    }

    async fn truncate(&mut self, path: &Path) -> Result<(), ClientError> {
        use tokio::io::AsyncSeekExt;
        let fail = |e| ClientError::local(path.display(), e);
        self.file.set_len(0).await.map_err(fail)?;
        self.file
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(fail)?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }

    /// Appends the body of `resp`, hashing as it goes. A broken stream is a
    /// [`ClientError::Network`]: what arrived stays and counts.
    async fn append(
        &mut self,
        resp: Response,
        path: &Path,
        bar: &ProgressBar,
    ) -> Result<u64, ClientError> {
        let mut received = 0u64;
        let mut body = resp.bytes_stream();
        let result = async {
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(network)?;
                self.file
                    .write_all(&piece)
                    .await
                    .map_err(|e| ClientError::local(path.display(), e))?;
                self.hasher.update(&piece);
                self.len += piece.len() as u64;
                received += piece.len() as u64;
                bar.inc(piece.len() as u64);
            }
            Ok(())
        }
        .await;
        // What was written must be on disk for a later resume to trust it.
        self.file
            .flush()
            .await
            .map_err(|e| ClientError::local(path.display(), e))?;
        result.map(|()| received)
    }
}

/// The file's total size from a 200's `Content-Length` or a 206's
/// `Content-Range: bytes a-b/total`, and the start of the bytes sent.
fn extent(resp: &Response) -> Option<(u64, u64)> {
    if resp.status() == StatusCode::PARTIAL_CONTENT {
        let range = resp.headers().get(header::CONTENT_RANGE)?.to_str().ok()?;
        let (span, total) = range.strip_prefix("bytes ")?.split_once('/')?;
        let start = span.split_once('-')?.0.parse().ok()?;
        Some((start, total.parse().ok()?))
    } else {
        Some((0, content_length(resp)?))
    }
}

/// The `Content-Length` header itself: reqwest's `content_length()` is the
/// body's size, which a HEAD answer does not have.
fn content_length(resp: &Response) -> Option<u64> {
    resp.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The whole file's SHA-256 (hex) that the server announces in
/// `Repr-Digest: sha-256=:<base64>:` (RFC 9530) or the older
/// `Digest: sha-256=<base64>`.
pub fn announced_sha256(headers: &header::HeaderMap) -> Option<String> {
    let b64 = ["repr-digest", "digest"].iter().find_map(|name| {
        let value = headers.get(*name)?.to_str().ok()?;
        value.split(',').find_map(|item| {
            let (alg, v) = item.trim().split_once('=')?;
            alg.eq_ignore_ascii_case("sha-256")
                .then(|| v.trim_matches(':').to_owned())
        })
    })?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (raw.len() == 32).then(|| hex::encode(raw))
}

/// Downloads file `id` to `path`; see the module doc. The bytes go to
/// `PATH.part` (resumed when it is there) and take `path`'s name only once
/// verified, so an existing file is never appended to, and a failed or
/// refused download leaves nothing misleading behind.
pub async fn download(
    api: &Api,
    id: &str,
    path: &Path,
    progress: &Progress,
) -> Result<Downloaded, ClientError> {
    if tokio::fs::try_exists(path).await.unwrap_or(false) {
        return already_there(api, id, path).await;
    }
    let part = part_path(path);
    // Only a regular file of ours is resumed: a link there could point the
    // bytes (and the truncation of a wrong start) at any file.
    if let Ok(meta) = tokio::fs::symlink_metadata(&part).await {
        if !meta.file_type().is_file() {
            return Err(ClientError::Local(format!(
                "{} is not a regular file; remove it or choose another -o",
                part.display()
            )));
        }
    }
    match fetch(api, id, path, &part, progress).await {
        Ok(done) => {
            tokio::fs::rename(&part, path)
                .await
                .map_err(|e| ClientError::local(path.display(), e))?;
            Ok(done)
        }
        Err(e) => {
            let empty = tokio::fs::metadata(&part).await.is_ok_and(|m| m.len() == 0);
            // Wrong bytes are worth nothing, and an empty file says nothing.
            if empty || matches!(e, ClientError::Verification(_)) {
                let _ = tokio::fs::remove_file(&part).await;
            }
            Err(e)
        }
    }
}

/// `PATH.part`: where the bytes of a download to `PATH` gather.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// `path` exists already: fine if it is this very file (a download run
/// again), refused otherwise rather than overwritten.
async fn already_there(api: &Api, id: &str, path: &Path) -> Result<Downloaded, ClientError> {
    let head = api.head_file(id, &|_, _| {}).await?;
    let expected = announced_sha256(head.headers());
    let size = content_length(&head);
    let owned = path.to_path_buf();
    let (len, sha256) = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&owned)?;
        let mut hasher = Sha256::new();
        let len = std::io::copy(&mut file, &mut hasher)?;
        Ok::<_, std::io::Error>((len, hex::encode(hasher.finalize())))
    })
    .await
    .map_err(|e| ClientError::local(path.display(), e))?
    .map_err(|e| ClientError::local(path.display(), e))?;
    // Without the server's digest, a length that matches proves nothing.
    let same = Some(len) == size && expected.as_ref() == Some(&sha256);
    if !same {
        return Err(ClientError::Local(format!(
            "{} already exists and is not known to be this file; remove it or choose another -o",
            path.display()
        )));
    }
    Ok(Downloaded {
        path: path.to_path_buf(),
        id: id.to_owned(),
        size: len,
        sha256,
        verified: true,
        bytes_received: 0,
        resumed: false,
    })
}

/// Streams file `id` into `part`, resuming what is there, and verifies it.
async fn fetch(
    api: &Api,
    id: &str,
    path: &Path,
    part: &Path,
    progress: &Progress,
) -> Result<Downloaded, ClientError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| id.to_owned());
    let on_retry = |e: &ClientError, delay: Duration| {
        progress.note(&format!(
            "{name}: {}; retrying in {:.1}s",
            describe(e),
            delay.as_secs_f64()
        ))
    };
    let mut partial = Partial::open(part).await?;
    let resumed = partial.len > 0;
    let bar = progress.bar(&name, 0);
    let mut received = 0u64;
    let mut expected = None;
    let mut total;
    let mut delays = api.backoff();
    loop {
        let resp = match api.download(id, partial.len, &on_retry).await {
            Ok(resp) => resp,
            Err(ClientError::Server { status: 416, .. }) => {
                // Nothing after our bytes: the partial file is whole, or
                // longer than the file (then it is not this file's start).
                let head = api.head_file(id, &on_retry).await?;
                expected = announced_sha256(head.headers());
                let size = content_length(&head).unwrap_or(0);
                if partial.len == size {
                    total = size;
                    break;
                }
                partial.truncate(part).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some((start, size)) = extent(&resp) else {
            return Err(ClientError::Server {
                status: resp.status().as_u16(),
                code: "invalid_answer".into(),
                message: "the download has neither Content-Length nor Content-Range".into(),
                retry_after: None,
            });
        };
        if start != partial.len {
            // A 200 to a Range request (or a range we did not ask for): the
            // server sends the whole file, so start over.
            partial.truncate(part).await?;
            if start != 0 {
                continue;
            }
        }
        expected = announced_sha256(resp.headers()).or(expected);
        total = size;
        phase(&bar, "downloading", size, partial.len);
        match partial.append(resp, part, &bar).await {
            Ok(n) => {
                received += n;
                if partial.len >= size {
                    break;
                }
            }
            Err(e @ ClientError::Network(_)) => match delays.next() {
                Some(delay) => {
                    on_retry(&e, delay);
                    tokio::time::sleep(delay).await;
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    partial
        .file
        .sync_all()
        .await
        .map_err(|e| ClientError::local(part.display(), e))?;
    let size = total;
    let sha256 = hex::encode(partial.hasher.finalize());
    if let Some(expected) = &expected {
        if *expected != sha256 {
            return Err(ClientError::Verification(format!(
                "{} has sha256 {sha256}, the server's file {expected}; it was removed{}",
                part.display(),
                if resumed {
                    " (the partial download was not the start of this file): run the command again"
                } else {
                    ""
                }
            )));
        }
    }
    bar.set_message("done");
    bar.finish();
    Ok(Downloaded {
        path: path.to_path_buf(),
        id: id.to_owned(),
        size,
        sha256,
        verified: expected.is_some(),
        bytes_received: received,
        resumed,
    })
}

pub async fn run(args: DownloadArgs) -> u8 {
    let api = match Api::for_client(&args.client) {
        Ok(api) => api,
        Err(e) => return super::fail(&args.client, &e),
    };
    let progress = Progress::new(super::show_progress(&args.client), !args.client.quiet);
    match super::until_interrupted(download(&api, &args.id, &args.output, &progress)).await {
        Ok(done) => {
            if args.client.json {
                println!("{}", serde_json::to_string(&done).unwrap_or_default());
            } else {
                println!(
                    "{}  {} bytes\n  sha256  {}{}",
                    done.path.display(),
                    done.size,
                    done.sha256,
                    if done.verified { " (verified)" } else { "" }
                );
            }
            0
        }
        Err(e) => super::fail(&args.client, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announced_digest_is_read_from_either_header() {
        let sha = Sha256::digest(b"abc");
        let b64 = base64::engine::general_purpose::STANDARD.encode(sha);
        let mut h = header::HeaderMap::new();
        h.insert("digest", format!("md5=xyz, sha-256={b64}").parse().unwrap());
        assert_eq!(announced_sha256(&h), Some(hex::encode(sha)));
        h.insert("repr-digest", format!("sha-256=:{b64}:").parse().unwrap());
        assert_eq!(announced_sha256(&h), Some(hex::encode(sha)));
        assert_eq!(announced_sha256(&header::HeaderMap::new()), None);
    }
}
