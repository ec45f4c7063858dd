//! The file-system steps the local disk's methods share, each on a blocking
//! thread where it may wait on the disk.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::blobs::StorageError;

use super::HASH_READ_SIZE;

pub(super) fn remove_counting(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let size = match std::fs::metadata(path) {
        // Another name (a dedup link) keeps the bytes: removing this one frees none.
        Ok(m) if m.nlink() > 1 => 0,
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
    let mut buf = vec![0u8; HASH_READ_SIZE.min(end.saturating_sub(start) as usize)];
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

pub(in crate::blobs) async fn blocking<T: Send + 'static, E: From<io::Error> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::from(io::Error::other(e)))?
}

/// A write that found the disk full says so: a part file without room
/// reserved at create (an upload whose length was not known) can meet it.
pub(in crate::blobs) fn no_space(e: StorageError, needed: u64) -> StorageError {
    match e {
        StorageError::Io(io)
            if matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) =>
        {
            StorageError::NoSpace { needed }
        }
        other => other,
    }
}

/// Starts writing `len` bytes at `offset` of `file` back to disk without
/// waiting for them (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`), so
/// that the disk works while the rest of the body arrives and the fdatasync
/// that makes the write durable finds most of its pages already written.
/// Only a hint: the fdatasync alone decides what is durable, so a failure
/// here is left for it to report.
#[cfg(target_os = "linux")]
pub(in crate::blobs) fn start_writeback(file: &File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for as long as `file` is borrowed, and
    // sync_file_range reads no memory of ours.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
pub(in crate::blobs) fn start_writeback(_file: &File, _offset: u64, _len: usize) {}
