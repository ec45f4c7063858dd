//! Bytes: where an upload's bytes live while it is in progress, how a body
//! gets from the socket to its place, and where completed files end up. The
//! core speaks to [`ByteStore`] only; [`local::LocalDisk`] is the one
//! implementation today, and nothing outside it builds a path.
//!
//! The core's primitive is "write these bytes at this offset of upload `id`"
//! ([`ByteStore::write_at`]): a chunk of API v1 is a write at its index times
//! the chunk size, and a tus PATCH a write at its `Upload-Offset`.

pub mod local;

use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;
use uuid::Uuid;

use crate::hashing::{Algorithm, HashState};

pub use local::LocalDisk;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("not enough free disk space for {needed} bytes")]
    NoSpace { needed: u64 },
    #[error("the upload's part file is missing")]
    PartMissing,
    #[error("the completed file is missing")]
    FileMissing,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// How a body stream ended badly.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("body longer than {expected} bytes")]
    TooLong { expected: u64 },
    #[error("body ended after {received} of {expected} bytes")]
    TooShort { received: u64, expected: u64 },
    #[error("body cut off after {received} of {expected} bytes")]
    Incomplete { received: u64, expected: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a write stored.
#[derive(Debug)]
pub struct WrittenChunk {
    pub len: u64,
    /// The digest of the bytes written, when one was asked for.
    pub digest: Option<Vec<u8>>,
}

/// How [`ByteStore::write_at`] treats its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Also compute this digest of the bytes written.
    pub digest: Option<Algorithm>,
    /// The length is the most the body may carry, not what it must: a body
    /// that ends early is fine (a write that goes on from where it ends).
    pub at_most: bool,
    /// A body cut off keeps what arrived: those bytes are written (durably,
    /// when the store is) and reported by [`WriteError::Incomplete`], so the
    /// caller may count them. Otherwise they are left for the caller to ignore.
    pub keep_partial: bool,
}

/// A completed file's length and modification time, for downloads.
#[derive(Debug, Clone, Copy)]
pub struct FileMeta {
    pub len: u64,
    /// `None` when the store cannot tell.
    pub modified: Option<SystemTime>,
}

/// Something in the store's place for unfinished uploads, for the janitor's
/// orphan sweep.
#[derive(Debug, Clone)]
pub struct PartEntry {
    /// The upload it belongs to, by name; `None` for a stray that is not ours
    /// by name (an editor's backup, a temp file), which still ages out.
    pub upload: Option<Uuid>,
    /// How the store names it, for [`ByteStore::remove_orphan`] (and, made
    /// readable, for logs). Not necessarily UTF-8: a stray may be named
    /// anything the file system allows.
    pub name: std::ffi::OsString,
    pub modified: SystemTime,
}

/// A completed file's bytes, streamed.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Where bytes live. Every method is safe to call again after a crash or a
/// failed attempt: the state store, not the byte store, says what counts.
#[allow(async_fn_in_trait)]
pub trait ByteStore {
    /// Makes room for a new upload of `size` bytes, so that a full disk is
    /// reported now ([`StorageError::NoSpace`]) rather than mid-upload.
    async fn create(&self, id: Uuid, size: u64) -> Result<(), StorageError>;

    /// Streams `body`, which must be exactly `len` bytes (at most, with
    /// `opts.at_most`), into upload `id` at `offset`, holding bounded memory
    /// whatever `len` is; with `opts.digest`, also returns the digest of
    /// those bytes. When the store is durable, the bytes are on stable
    /// storage when this returns Ok; on Err, bytes of the range may have
    /// been written, but the caller does not count them, except those that
    /// `WriteError::Incomplete` reports under `opts.keep_partial`.
    async fn write_at<S, E>(
        &self,
        id: Uuid,
        offset: u64,
        len: u64,
        body: S,
        opts: WriteOptions,
    ) -> Result<WrittenChunk, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin;

    /// Makes room for upload `id` to reach `size` bytes: its length, once
    /// an upload created without one learns it.
    async fn grow(&self, id: Uuid, size: u64) -> Result<(), StorageError>;

    /// Copies the first `len` bytes of upload `from` into upload `to` at
    /// `offset` (durably, when the store is): how a concatenation's final
    /// upload gets its partial uploads' bytes.
    async fn copy_part(
        &self,
        from: Uuid,
        to: Uuid,
        offset: u64,
        len: u64,
    ) -> Result<(), StorageError>;

    /// Extends `state` over upload `id`'s bytes up to offset `until` (from
    /// the completed file if the upload was published meanwhile).
    async fn hash_until(
        &self,
        id: Uuid,
        state: HashState,
        until: u64,
    ) -> Result<HashState, StorageError>;

    /// The SHA-256 of `len` stored bytes of upload `id` from `start`.
    async fn hash_range(&self, id: Uuid, start: u64, len: u64) -> Result<[u8; 32], StorageError>;

    /// Makes a fully received upload its completed file. Idempotent: done
    /// already when the upload's bytes are the file.
    async fn publish(&self, id: Uuid) -> Result<(), StorageError>;

    /// Removes an unfinished upload's bytes (none is fine); returns the bytes
    /// freed.
    async fn remove(&self, id: Uuid) -> io::Result<u64>;

    /// Removes a completed file's bytes (none is fine: deleted already);
    /// returns the bytes freed. Readers that opened the file before may
    /// finish reading it.
    async fn remove_file(&self, id: Uuid) -> io::Result<u64>;

    /// The ids of every completed file the store holds (for the scrub, which
    /// looks each up in the state store: one without a record is an orphan).
    async fn list_files(&self) -> io::Result<Vec<Uuid>>;

    /// The completed file's length and modification time.
    async fn file_meta(&self, id: Uuid) -> Result<FileMeta, StorageError>;

    /// `count` bytes of the completed file from `start`, streamed with
    /// bounded memory.
    async fn read_file(&self, id: Uuid, start: u64, count: u64)
        -> Result<ByteStream, StorageError>;

    /// Everything in the place for unfinished uploads.
    async fn list_parts(&self) -> io::Result<Vec<PartEntry>>;

    /// Removes an entry of [`ByteStore::list_parts`]; returns the bytes freed.
    /// `None` when it was gone already (another sweep took it).
    async fn remove_orphan(&self, entry: &PartEntry) -> io::Result<Option<u64>>;

    /// Bytes promised to unfinished uploads.
    async fn pending_bytes(&self) -> io::Result<u64>;

    /// Bytes that can still be written.
    fn free_space(&self) -> io::Result<u64>;

    /// Proves that the store takes writes (for `/readyz`).
    async fn check_writable(&self) -> io::Result<()>;
}

/// What every [`ByteStore`] must do, written once: a new implementation runs
/// [`conformance::check`] from its own tests.
#[cfg(test)]
pub mod conformance {
    use futures::StreamExt;
    use sha2::{Digest, Sha256};

    use super::*;

    fn body(pieces: &[&[u8]]) -> impl Stream<Item = Result<Bytes, io::Error>> + Unpin + use<> {
        let owned: Vec<_> = pieces
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
        futures::stream::iter(owned)
    }

    async fn read_all(store: &impl ByteStore, id: Uuid, start: u64, count: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = store.read_file(id, start, count).await.unwrap();
        while let Some(piece) = s.next().await {
            out.extend_from_slice(&piece.unwrap());
        }
        out
    }

    pub async fn check(store: &impl ByteStore) {
        let exact = WriteOptions::default();
        let sha256 = WriteOptions {
            digest: Some(Algorithm::Sha256),
            ..exact
        };
        let id = Uuid::new_v4();
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        store.create(id, 300).await.unwrap();
        assert_eq!(store.pending_bytes().await.unwrap(), 300);

        // Writes at offsets, in any order, in pieces; each says its digest.
        let w = store
            .write_at(id, 200, 100, body(&[&data[200..250], &data[250..]]), sha256)
            .await
            .unwrap();
        assert_eq!(w.len, 100);
        assert_eq!(w.digest, Some(Sha256::digest(&data[200..]).to_vec()));
        store
            .write_at(id, 0, 200, body(&[&data[..200]]), exact)
            .await
            .unwrap();
        assert_eq!(
            store.hash_range(id, 100, 150).await.unwrap(),
            <[u8; 32]>::from(Sha256::digest(&data[100..250]))
        );

        // Bodies of the wrong length, or cut off, are errors.
        let long = store.write_at(id, 0, 10, body(&[&[0u8; 11]]), exact).await;
        assert!(matches!(long, Err(WriteError::TooLong { expected: 10 })));
        let short = store.write_at(id, 0, 10, body(&[&[0u8; 9]]), exact).await;
        assert!(matches!(
            short,
            Err(WriteError::TooShort {
                received: 9,
                expected: 10
            })
        ));
        let cut = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(io::Error::other("cut")),
        ]);
        let cut = store.write_at(id, 0, 10, cut, exact).await;
        assert!(matches!(
            cut,
            Err(WriteError::Incomplete { received: 3, .. })
        ));
        // A body that may end early is fine short; one that keeps what
        // arrived stores the bytes before the cut.
        let up_to = WriteOptions {
            at_most: true,
            keep_partial: true,
            ..exact
        };
        let w = store.write_at(id, 0, 10, body(&[b"xyz"]), up_to).await;
        assert_eq!(w.unwrap().len, 3);
        let cut = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"kept")),
            Err(io::Error::other("cut")),
        ]);
        let cut = store.write_at(id, 0, 10, cut, up_to).await;
        assert!(matches!(
            cut,
            Err(WriteError::Incomplete { received: 4, .. })
        ));
        assert_eq!(
            store.hash_range(id, 0, 4).await.unwrap(),
            <[u8; 32]>::from(Sha256::digest(b"kept"))
        );
        // Rewrite what those attempts may have touched, as a client resends.
        store
            .write_at(id, 0, 200, body(&[&data[..200]]), exact)
            .await
            .unwrap();

        // Room made later, for an upload created without a length.
        let late = Uuid::new_v4();
        let before = store.pending_bytes().await.unwrap();
        store.create(late, 0).await.unwrap();
        store.grow(late, 100).await.unwrap();
        assert_eq!(store.pending_bytes().await.unwrap(), before + 100);
        store.remove(late).await.unwrap();
        assert!(matches!(
            store.grow(late, 1).await,
            Err(StorageError::PartMissing)
        ));

        // One upload's bytes copied into another, at an offset.
        let whole = Uuid::new_v4();
        store.create(whole, 400).await.unwrap();
        store.copy_part(id, whole, 100, 300).await.unwrap();
        assert_eq!(
            store.hash_range(whole, 100, 300).await.unwrap(),
            <[u8; 32]>::from(Sha256::digest(&data))
        );
        assert!(matches!(
            store.copy_part(Uuid::new_v4(), whole, 0, 1).await,
            Err(StorageError::PartMissing)
        ));
        store.remove(whole).await.unwrap();

        // The running hash extends over stored bytes, in steps.
        let mut state = HashState::default();
        state = store.hash_until(id, state, 128).await.unwrap();
        state = store.hash_until(id, state, 300).await.unwrap();
        assert_eq!(state.finalize(), <[u8; 32]>::from(Sha256::digest(&data)));

        // Published: a completed file, readable in ranges; publish again is fine.
        assert!(matches!(
            store.file_meta(id).await,
            Err(StorageError::FileMissing)
        ));
        store.publish(id).await.unwrap();
        store.publish(id).await.unwrap();
        assert_eq!(store.file_meta(id).await.unwrap().len, 300);
        assert_eq!(read_all(store, id, 0, 300).await, data);
        assert_eq!(read_all(store, id, 290, 10).await, &data[290..]);
        // An assembly resumed after its publish still hashes (from the file).
        let again = store
            .hash_until(id, HashState::default(), 300)
            .await
            .unwrap();
        assert_eq!(again.finalize(), <[u8; 32]>::from(Sha256::digest(&data)));
        assert_eq!(store.pending_bytes().await.unwrap(), 0);

        // Completed files are listed; one goes once, removing it again frees nothing.
        assert_eq!(store.list_files().await.unwrap(), vec![id]);
        assert_eq!(store.remove_file(id).await.unwrap(), 300);
        assert!(store.list_files().await.unwrap().is_empty());
        assert!(matches!(
            store.file_meta(id).await,
            Err(StorageError::FileMissing)
        ));
        assert!(matches!(
            store.read_file(id, 0, 1).await,
            Err(StorageError::FileMissing)
        ));
        assert_eq!(store.remove_file(id).await.unwrap(), 0);

        // Unknown uploads and files.
        let other = Uuid::new_v4();
        let w = store.write_at(other, 0, 1, body(&[b"x"]), exact).await;
        assert!(matches!(
            w,
            Err(WriteError::Storage(StorageError::PartMissing))
        ));
        assert!(matches!(
            store.hash_range(other, 0, 1).await,
            Err(StorageError::PartMissing)
        ));
        assert!(matches!(
            store.read_file(other, 0, 1).await,
            Err(StorageError::FileMissing)
        ));
        assert_eq!(store.remove(other).await.unwrap(), 0);

        // Parts are listed by upload, and go.
        let third = Uuid::new_v4();
        store.create(third, 50).await.unwrap();
        let parts = store.list_parts().await.unwrap();
        let part = parts
            .iter()
            .find(|p| p.upload == Some(third))
            .expect("listed");
        assert_eq!(store.remove_orphan(part).await.unwrap(), Some(50));
        assert_eq!(store.remove_orphan(part).await.unwrap(), None);
        assert!(store
            .list_parts()
            .await
            .unwrap()
            .iter()
            .all(|p| p.upload != Some(third)));
        store.create(third, 5).await.unwrap();
        assert_eq!(store.remove(third).await.unwrap(), 5);
        assert_eq!(store.remove(third).await.unwrap(), 0);

        store.check_writable().await.unwrap();
        assert!(store.free_space().unwrap() > 0);
    }

    #[tokio::test]
    async fn the_local_disk_conforms() {
        for sync in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            check(&LocalDisk::open(dir.path(), sync).unwrap()).await;
        }
    }
}
