//! The file-system steps the local disk's methods share, each on a blocking
//! thread where it may wait on the disk.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::blobs::StorageError;

use super::BATCH_SIZE;

pub(super) fn remove_counting(path: &Path) -> io::Result<u64> {
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    match std::fs::remove_file(path) {
        Ok(()) => Ok(size),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Feeds the bytes of `file` from offset `start` to `end` to `sink`, a batch
/// at a time (bounded memory whatever the range).
pub(super) fn read_range(
    file: &File,
    start: u64,
    end: u64,
    mut sink: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut buf = vec![0u8; BATCH_SIZE.min(end.saturating_sub(start) as usize)];
    let mut at = start;
    while at < end {
        let want = ((end - at) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "part file shorter than the upload",
            ));
        }
        sink(&buf[..n]);
        at += n as u64;
    }
    Ok(())
}

pub(super) async fn blocking<T: Send + 'static, E: From<io::Error> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::from(io::Error::other(e)))?
}

/// A write that found the disk full says so: a part file without room
/// reserved at create (an upload whose length was not known) can meet it.
pub(super) fn no_space(e: StorageError, needed: u64) -> StorageError {
    match e {
        StorageError::Io(io)
            if matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) =>
        {
            StorageError::NoSpace { needed }
        }
        other => other,
    }
}

pub(super) async fn join<T>(
    job: tokio::task::JoinHandle<io::Result<T>>,
) -> Result<T, StorageError> {
    Ok(job.await.map_err(io::Error::other)??)
}
