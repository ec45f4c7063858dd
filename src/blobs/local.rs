//! The local disk: bytes in the data directory.
//!
//! Layout under the data directory:
//! - `uploads/<id>.part`: one file per upload in progress, preallocated to the
//!   file's size; chunk `i` is written straight at offset `i * chunk_size`.
//! - `files/<ab>/<cd>/<id>`: completed files, `ab`/`cd` the id's first hex digits,
//!   so no directory grows huge and no client-supplied name is ever a path.
//!
//! Why chunks go straight into their place instead of into one file each that
//! is joined at the end: measured on a 2-core machine with ext4 and no
//! reflinks, writing in place and hashing on another thread ran at ~660 MB/s
//! end to end, chunk files joined with `copy_file_range` at ~320 MB/s,
//! because without reflinks the join copies every byte a second time. In
//! place, every byte is written once and "assembly" is a rename. A chunk that
//! is cut off leaves garbage only in its own byte range, which is not counted
//! and is overwritten when the chunk is sent again.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod fsops;

use bytes::Bytes;
use futures::Stream;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::blobs::writer::{stream_into, Pace, Target};
use crate::blobs::{
    ByteStore, ByteStream, FileMeta, PartEntry, StorageError, WriteError, WriteOptions,
    WrittenChunk,
};
use crate::hashing::HashState;
pub(super) use fsops::{blocking, no_space, start_writeback};
use fsops::{read_range, remove_counting, sync_dir};

/// Disk writes running at once, across all requests. More would not make the
/// disk faster; bounding them bounds the blocking threads (and their stacks)
/// that a burst of uploads can wake.
const IO_SLOTS: usize = 8;

/// Bytes read back per step when hashing from disk.
const HASH_READ_SIZE: usize = 128 * 1024;

/// Bytes read from disk per piece of a download's body.
const READ_SIZE: usize = 64 * 1024;

/// Hashing jobs (catch-up, assembly) running at once, across all uploads.
const HASH_SLOTS: usize = 2;

#[derive(Debug, Clone)]
pub struct LocalDisk {
    root: PathBuf,
    sync: bool,
    io_slots: Arc<tokio::sync::Semaphore>,
    hash_slots: Arc<tokio::sync::Semaphore>,
    pace: Arc<Pace>,
}

impl LocalDisk {
    /// Creates the layout under `root` if needed. With `sync`, data is flushed
    /// to disk (fdatasync) before it counts.
    pub fn open(root: &Path, sync: bool) -> io::Result<Self> {
        std::fs::create_dir_all(root.join("uploads"))?;
        std::fs::create_dir_all(root.join("files"))?;
        Ok(LocalDisk {
            root: root.to_path_buf(),
            sync,
            io_slots: Arc::new(tokio::sync::Semaphore::new(IO_SLOTS)),
            hash_slots: Arc::new(tokio::sync::Semaphore::new(HASH_SLOTS)),
            pace: Arc::default(),
        })
    }

    fn part_path(&self, id: Uuid) -> PathBuf {
        self.root
            .join("uploads")
            .join(format!("{}.part", id.simple()))
    }

    fn file_path(&self, id: Uuid) -> PathBuf {
        let hex = id.simple().to_string();
        self.root
            .join("files")
            .join(&hex[0..2])
            .join(&hex[2..4])
            .join(hex)
    }

    /// Runs `job` on the blocking pool once a hashing slot is free. Hashing is
    /// CPU-bound: more of it at once than there are slots only adds threads
    /// and read buffers, not speed.
    async fn hashing<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let permit = self
            .hash_slots
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        blocking(move || {
            let _permit = permit;
            job()
        })
        .await
    }
}

impl ByteStore for LocalDisk {
    /// Creates the part file of a new upload and reserves `size` bytes for it.
    async fn create(&self, id: Uuid, size: u64) -> Result<(), StorageError> {
        let path = self.part_path(id);
        let sync = self.sync;
        blocking(move || {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            if size > 0 {
                if let Err(e) = fs4::fs_std::FileExt::allocate(&file, size) {
                    drop(file);
                    let _ = std::fs::remove_file(&path);
                    return Err(match e.kind() {
                        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
                            StorageError::NoSpace { needed: size }
                        }
                        _ => StorageError::Io(e),
                    });
                }
            }
            if sync {
                file.sync_all()?;
                sync_dir(path.parent().expect("part files live in a directory"))?;
            }
            Ok(())
        })
        .await
    }

    /// Removes an upload's part file; a missing one is fine.
    async fn remove(&self, id: Uuid) -> io::Result<u64> {
        let path = self.part_path(id);
        blocking(move || remove_counting(&path)).await
    }

    /// Streams a body into the part file at `offset` (see [`stream_into`]).
    async fn write_at<S, E>(
        &self,
        id: Uuid,
        offset: u64,
        expected: u64,
        body: S,
        opts: WriteOptions,
    ) -> Result<WrittenChunk, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let path = self.part_path(id);
        let open = move || match OpenOptions::new().write(true).open(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StorageError::PartMissing),
            other => Ok(Arc::new(other?)),
        };
        // Opening a file the kernel has just seen is as quick as a write into
        // the page cache, and goes where the writes go (see `Pace`).
        let file = if self.pace.writes_are_fast() {
            open()?
        } else {
            blocking(open).await?
        };
        let target = Target {
            file,
            offset,
            expected,
            sync: self.sync,
            io_slots: &self.io_slots,
            pace: &self.pace,
        };
        stream_into(target, body, opts).await
    }

    async fn grow(&self, id: Uuid, size: u64) -> Result<(), StorageError> {
        let path = self.part_path(id);
        let sync = self.sync;
        blocking(move || {
            let file = match OpenOptions::new().write(true).open(&path) {
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(StorageError::PartMissing),
                other => other?,
            };
            fs4::fs_std::FileExt::allocate(&file, size)
                .map_err(|e| no_space(StorageError::Io(e), size))?;
            if sync {
                file.sync_all()?;
            }
            Ok(())
        })
        .await
    }

    /// Copies with `std::io::copy`, which on Linux lets the kernel move the
    /// bytes (`copy_file_range`): no trip through user space, and on file
    /// systems that share extents (XFS, Btrfs) possibly no copy at all.
    async fn copy_part(
        &self,
        from: Uuid,
        to: Uuid,
        offset: u64,
        len: u64,
    ) -> Result<(), StorageError> {
        use std::io::{Read, Seek, SeekFrom};
        let (src, dest) = (self.part_path(from), self.part_path(to));
        let sync = self.sync;
        blocking(move || {
            let open = |r: io::Result<File>| match r {
                Err(e) if e.kind() == ErrorKind::NotFound => Err(StorageError::PartMissing),
                other => Ok(other?),
            };
            let src = open(File::open(&src))?;
            let mut dest = open(OpenOptions::new().write(true).open(&dest))?;
            dest.seek(SeekFrom::Start(offset))?;
            let copied = io::copy(&mut src.take(len), &mut dest)?;
            if copied < len {
                return Err(StorageError::Io(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("the part holds {copied} of the {len} bytes to copy"),
                )));
            }
            if sync {
                dest.sync_data()?;
            }
            Ok(())
        })
        .await
    }

    /// Extends `state` over the part file's bytes up to offset `until`, reading
    /// them back (from the page cache, usually): the catch-up for chunks that
    /// arrived before the ones in front of them.
    async fn hash_until(
        &self,
        id: Uuid,
        mut state: HashState,
        until: u64,
    ) -> Result<HashState, StorageError> {
        let path = self.part_path(id);
        let final_path = self.file_path(id);
        self.hashing(move || {
            let file = match File::open(&path) {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    // An assembly interrupted after its rename resumes from the final file.
                    File::open(&final_path).map_err(|_| StorageError::PartMissing)?
                }
                other => other?,
            };
            let from = state.len();
            read_range(&file, from, until, |bytes| state.update(bytes))?;
            Ok(state)
        })
        .await
    }

    /// The SHA-256 of `len` bytes of an upload's part file from `start`: what
    /// was stored for a chunk, to compare a resend with.
    async fn hash_range(&self, id: Uuid, start: u64, len: u64) -> Result<[u8; 32], StorageError> {
        let path = self.part_path(id);
        self.hashing(move || {
            let file = match File::open(&path) {
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(StorageError::PartMissing),
                other => other?,
            };
            let mut hasher = Sha256::new();
            read_range(&file, start, start + len, |bytes| hasher.update(bytes))?;
            Ok(hasher.finalize().into())
        })
        .await
    }

    /// Moves a fully received part file to its final place (idempotent: done
    /// already if the part is gone and the final file is there).
    async fn publish(&self, id: Uuid) -> Result<(), StorageError> {
        let part = self.part_path(id);
        let dest = self.file_path(id);
        let sync = self.sync;
        blocking(move || {
            if !part.exists() && dest.exists() {
                return Ok(());
            }
            let dir = dest.parent().expect("files live in a directory");
            std::fs::create_dir_all(dir)?;
            if sync {
                File::open(&part)?.sync_all()?;
            }
            std::fs::rename(&part, &dest)?;
            if sync {
                // The rename is durable only once both directories are.
                sync_dir(dir)?;
                sync_dir(part.parent().expect("part files live in a directory"))?;
            }
            Ok(())
        })
        .await
    }

    /// Part files with their modification time, for the janitor's orphan sweep.
    async fn list_parts(&self) -> io::Result<Vec<PartEntry>> {
        let dir = self.root.join("uploads");
        blocking(move || {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name();
                let upload = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".part"))
                    .and_then(|s| Uuid::try_parse(s).ok());
                let modified = entry.metadata()?.modified()?;
                out.push(PartEntry {
                    upload,
                    name,
                    modified,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn remove_orphan(&self, entry: &PartEntry) -> io::Result<Option<u64>> {
        // A name from list_parts; one that would reach out of the directory
        // never came from there.
        let mut parts = Path::new(&entry.name).components();
        if !matches!(
            (parts.next(), parts.next()),
            (Some(std::path::Component::Normal(_)), None)
        ) {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "not an entry of the uploads directory",
            ));
        }
        let path = self.root.join("uploads").join(&entry.name);
        blocking(move || {
            let size = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(Some(size)),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Bytes promised to unfinished uploads: part files are preallocated to
    /// their upload's full size, so this is the sum of their lengths.
    async fn pending_bytes(&self) -> io::Result<u64> {
        let dir = self.root.join("uploads");
        blocking(move || {
            let mut total = 0u64;
            for entry in std::fs::read_dir(&dir)? {
                // A part removed while we look was someone else's to count.
                if let Ok(meta) = entry?.metadata() {
                    total += meta.len();
                }
            }
            Ok(total)
        })
        .await
    }

    /// Unlinks the completed file (a download that has it open reads on).
    /// Its fan-out directories stay: they are few, and shared.
    async fn remove_file(&self, id: Uuid) -> io::Result<u64> {
        let path = self.file_path(id);
        let sync = self.sync;
        blocking(move || {
            let freed = remove_counting(&path)?;
            if sync && freed > 0 {
                // A deletion that a crash could undo would bring the file back.
                sync_dir(path.parent().expect("files live in a directory"))?;
            }
            Ok(freed)
        })
        .await
    }

    /// Walks `files/<ab>/<cd>/`; a name that is not an id is not ours.
    async fn list_files(&self) -> io::Result<Vec<Uuid>> {
        let root = self.root.join("files");
        blocking(move || {
            let mut ids = Vec::new();
            for first in std::fs::read_dir(&root)? {
                let first = first?.path();
                if !first.is_dir() {
                    continue;
                }
                for second in std::fs::read_dir(&first)? {
                    let second = second?.path();
                    if !second.is_dir() {
                        continue;
                    }
                    for file in std::fs::read_dir(&second)? {
                        let name = file?.file_name();
                        if let Some(id) = name.to_str().and_then(|n| Uuid::try_parse(n).ok()) {
                            ids.push(id);
                        }
                    }
                }
            }
            ids.sort();
            Ok(ids)
        })
        .await
    }

    async fn file_meta(&self, id: Uuid) -> Result<FileMeta, StorageError> {
        match tokio::fs::metadata(self.file_path(id)).await {
            Ok(meta) => Ok(FileMeta {
                len: meta.len(),
                modified: meta.modified().ok(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StorageError::FileMissing),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_file(
        &self,
        id: Uuid,
        start: u64,
        count: u64,
    ) -> Result<ByteStream, StorageError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = match tokio::fs::File::open(self.file_path(id)).await {
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StorageError::FileMissing),
            other => other?,
        };
        if start > 0 {
            file.seek(io::SeekFrom::Start(start)).await?;
        }
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            file.take(count),
            READ_SIZE,
        )))
    }

    fn free_space(&self) -> io::Result<u64> {
        fs4::available_space(&self.root)
    }

    /// Proves the data directory takes writes (for `/readyz`).
    async fn check_writable(&self) -> io::Result<()> {
        let probe = self.root.join(".readyz-probe");
        blocking(move || {
            std::fs::write(&probe, b"ok")?;
            std::fs::remove_file(&probe)
        })
        .await
    }

    /// A hard link: one inode, two names. Its bytes are freed with the last name.
    async fn link_file(&self, from: Uuid, to: Uuid) -> Result<(), StorageError> {
        let (source, dest) = (self.file_path(from), self.file_path(to));
        let sync = self.sync;
        blocking(move || {
            let dir = dest.parent().expect("files live in a directory");
            std::fs::create_dir_all(dir)?;
            match std::fs::hard_link(&source, &dest) {
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(StorageError::FileMissing),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
                other => other?,
            }
            if sync {
                // The new name survives a crash only once its directory does.
                sync_dir(dir)?;
            }
            Ok(())
        })
        .await
    }
}
