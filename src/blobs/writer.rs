//! How a body gets from the socket into a file: its own buffers are written
//! as they come (no copy), in batches, and hashed right after their write
//! while they are still in the CPU's cache. A batch is written on the
//! receiving thread, as a page-cache copy costs no more than the socket's;
//! what waits on the disk (the sync, the start of write-back, and every write
//! while the kernel is holding writers back) goes to the blocking pool.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};

use crate::blobs::local::{blocking, no_space, start_writeback};
use crate::blobs::{StorageError, WriteError, WriteOptions, WrittenChunk};
use crate::hashing::{Algorithm, HashState, Hasher};

/// The most body bytes gathered before they are written. A request holds one
/// batch, or two while its writes are on the blocking pool (one filling, one
/// being written), so this bounds a chunk request's memory whatever the chunk
/// size, while keeping the writes (and hand-offs) few for a fast stream.
pub const BATCH_SIZE: usize = 128 * 1024;

/// How many bytes written, with a sync to come, are left to the page cache
/// before the disk is told to start on them. Measured with 8 MiB chunks at
/// durability full (benches/upload.rs): 1 and 2 MiB windows gave ~20 % more
/// throughput than none at the same CPU per GiB, 128 KiB windows more CPU,
/// 4 MiB less gain.
const WRITE_BEHIND: u64 = 2 * 1024 * 1024;

/// Where a body goes.
pub(super) struct Target<'a> {
    pub file: Arc<File>,
    pub offset: u64,
    /// The body's length (the most it may be, with `at_most`).
    pub expected: u64,
    /// Whether the bytes must be on disk before this returns.
    pub sync: bool,
    /// Bounds the batches being written at once, across all requests.
    pub io_slots: &'a Arc<tokio::sync::Semaphore>,
    /// Whether batches may be written on the receiving thread.
    pub pace: &'a Pace,
}

/// What is computed from the bytes as they are written.
#[derive(Default)]
struct Digests {
    chunk: Option<Hasher>,
    running: Option<HashState>,
}

impl Digests {
    fn update(&mut self, bytes: &[u8]) {
        if let Some(h) = &mut self.chunk {
            h.update(bytes);
        }
        if let Some(h) = &mut self.running {
            h.update(bytes);
        }
    }
}

/// What a batch's job gives back: the digests, moved on over the batch,
/// and the outcome of the file's sync if it did it.
type Written = (Digests, Option<io::Result<()>>);

/// Streams `body` into `to`, a batch at a time; while a batch is on the
/// blocking pool, the next fills from the socket, so a request holds at most
/// two batches. The contract is [`crate::blobs::ByteStore::write_at`]'s.
pub(super) async fn stream_into<S, E>(
    to: Target<'_>,
    mut body: S,
    opts: WriteOptions,
) -> Result<WrittenChunk, WriteError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let Target {
        file,
        offset,
        expected,
        sync,
        io_slots,
        pace,
    } = to;
    let mut digests = Some(Digests {
        chunk: opts.digest.map(Algorithm::hasher),
        running: opts.extend,
    });
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_len = 0usize;
    let mut in_flight: Option<tokio::task::JoinHandle<io::Result<Written>>> = None;
    // The outcome of the sync, when the last batch's job did it.
    let mut synced: Option<io::Result<()>> = None;
    // Every byte received is written but those of `batch`.
    let mut received: u64 = 0;
    let mut cut = false;
    // Where the bytes not yet handed to the disk's write-back start.
    let mut behind = offset;

    loop {
        // Take what the socket has already delivered; when it has nothing
        // more right now, write what is gathered before waiting. A fast
        // stream thus writes in big batches (few hand-offs), while many
        // slow or competing streams each hold little memory.
        let (item, idle) = match body.next().now_or_never() {
            Some(item) => (item, false),
            None if batch_len > 0 => (None, true),
            None => (body.next().await, false),
        };
        let mut end = item.is_none() && !idle;
        match item {
            None => {}
            Some(Err(_)) if opts.keep_partial => {
                // What arrived is written and made durable below, then
                // reported: the caller counts it.
                cut = true;
                end = true;
            }
            Some(Err(_)) => {
                // Let the write in flight finish so nothing touches the file later.
                if let Some(job) = in_flight.take() {
                    let _ = join(job).await;
                }
                return Err(WriteError::Incomplete { received, expected });
            }
            Some(Ok(bytes)) => {
                if received + bytes.len() as u64 > expected {
                    if let Some(job) = in_flight.take() {
                        let _ = join(job).await;
                    }
                    return Err(WriteError::TooLong { expected });
                }
                received += bytes.len() as u64;
                batch_len += bytes.len();
                batch.push(bytes);
            }
        }
        // Written on this thread, what arrived goes at once: gathering it
        // would only hold memory. For the pool, it is gathered into batches,
        // each hand-off being a thread wake-up.
        let here = pace.writes_are_fast();
        if batch_len > 0 && (batch_len >= BATCH_SIZE || end || idle || here) {
            if let Some(job) = in_flight.take() {
                let (d, _) = join(job)
                    .await
                    .map_err(|e| no_space(e, expected - received))?;
                digests = Some(d);
            }
            let at = offset + received - batch_len as u64;
            batch_len = 0;
            // The last batch makes the file durable in the same job (after
            // every earlier batch, joined above): one hand-off to the
            // blocking pool and one wake-up less per request.
            let sync_here = sync && end;
            // With a sync to come, the disk starts on what is written so far
            // (a window at a time: smaller ones cost CPU, larger ones leave
            // the disk idle longer), so the sync has little left to wait for.
            if sync && !end && offset + received - behind >= WRITE_BEHIND {
                let (from, to) = (behind, offset + received);
                behind = to;
                // It may wait for room in the disk's queue: not on this
                // thread, and in one of the slots that bound the blocking
                // threads. With none free it is left to the sync: only a hint.
                if let Ok(permit) = io_slots.clone().try_acquire_owned() {
                    let file = file.clone();
                    drop(tokio::task::spawn_blocking(move || {
                        start_writeback(&file, from, (to - from) as usize);
                        drop(permit);
                    }));
                }
            }
            if !sync_here && here {
                // A write into the page cache is a copy, like the socket's:
                // done here it costs no hand-off, no wake-up and no second
                // batch held, and hashing the batch right after it reads
                // bytes still in this core's cache.
                let d = digests
                    .as_mut()
                    .expect("the last batch gave its digests back");
                let took = write_batch(&file, at, &batch, d)
                    .map_err(|e| no_space(e.into(), expected - received))?;
                pace.note(took);
                // Keeps its room for the next pieces.
                batch.clear();
            } else {
                let pieces = std::mem::take(&mut batch);
                let mut d = digests
                    .take()
                    .expect("the last batch gave its digests back");
                let permit = io_slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
                let file = file.clone();
                in_flight = Some(tokio::task::spawn_blocking(move || {
                    write_batch(&file, at, &pieces, &mut d)?;
                    // The slots bound the batches being written; a sync holds
                    // no batch, so it waits for the disk without one.
                    drop(permit);
                    let synced = sync_here.then(|| file.sync_data());
                    Ok((d, synced))
                }));
            }
        }
        if end {
            break;
        }
    }
    if let Some(job) = in_flight.take() {
        let (d, sync_done) = join(job)
            .await
            .map_err(|e| no_space(e, expected - received))?;
        digests = Some(d);
        synced = sync_done;
    }
    if received < expected && !cut && !opts.at_most {
        return Err(WriteError::TooShort { received, expected });
    }
    if let Some(done) = synced {
        done.map_err(|e| no_space(e.into(), received))?;
    } else if sync && received > 0 {
        // Bytes count only once they are on disk: the store's record
        // must never point at bytes a crash could lose.
        let file = file.clone();
        let started = Instant::now();
        blocking(move || file.sync_data().map_err(StorageError::from))
            .await
            .map_err(|e| no_space(e, received))?;
        tracing::debug!(
            sync_ms = started.elapsed().as_secs_f64() * 1000.0,
            "write synced"
        );
    }
    if cut {
        return Err(WriteError::Incomplete { received, expected });
    }
    let digests = digests.expect("the last batch gave its digests back");
    Ok(WrittenChunk {
        len: received,
        digest: digests.chunk.map(Hasher::finalize),
        extended: digests.running,
    })
}

/// Writes `pieces` at `at` of `file`, each hashed right after its write,
/// while it is still in the CPU's cache. Returns the time the writes took
/// (the hashing not counted).
fn write_batch(
    file: &File,
    mut at: u64,
    pieces: &[Bytes],
    d: &mut Digests,
) -> io::Result<Duration> {
    let mut took = Duration::ZERO;
    for piece in pieces {
        let started = Instant::now();
        file.write_all_at(piece, at)?;
        took += started.elapsed();
        at += piece.len() as u64;
        d.update(piece);
    }
    Ok(took)
}

/// Whether writes into the page cache are quick enough to make on the
/// receiving thread. When the kernel holds writers back (dirty pages past its
/// limits, a disk that cannot keep up), a write can wait for tens or hundreds
/// of milliseconds, and on the receiving thread so would every other
/// connection it serves. One such write sends every batch, of every request
/// to this disk, to the blocking pool for the next second.
#[derive(Debug)]
pub(super) struct Pace {
    started: Instant,
    /// Until when (in ms since `started`) batches go to the pool.
    pooled_until: AtomicU64,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            started: Instant::now(),
            pooled_until: AtomicU64::new(0),
        }
    }
}

impl Pace {
    /// Far above a page-cache copy of a batch (tens of microseconds), and
    /// above a thread's wait for a core on a busy machine (a few ms: 5 ms
    /// was reached by 100 uploads at once on 2 cores); the kernel pauses a
    /// throttled writer for 10 to 200 ms at a time.
    const SLOW_WRITE: Duration = Duration::from_millis(20);
    const POOLED_FOR: Duration = Duration::from_secs(1);

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(super) fn writes_are_fast(&self) -> bool {
        self.now_ms() >= self.pooled_until.load(Ordering::Relaxed)
    }

    /// Takes note of how long a batch's writes took.
    fn note(&self, took: Duration) {
        if took > Self::SLOW_WRITE {
            let until = self.now_ms() + Self::POOLED_FOR.as_millis() as u64;
            self.pooled_until.fetch_max(until, Ordering::Relaxed);
            // Only writes made on a receiving thread are timed, so this says
            // so at most once per `POOLED_FOR`.
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                "the disk is not keeping up: a write into the page cache waited; \
                 chunk writes go to the blocking pool for the next second"
            );
        }
    }
}

async fn join<T>(job: tokio::task::JoinHandle<io::Result<T>>) -> Result<T, StorageError> {
    Ok(job.await.map_err(io::Error::other)??)
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    /// A body of many batches, past a few write-back windows, ends up the same
    /// in the file and in its digests whichever thread writes the batches.
    #[tokio::test]
    async fn batches_written_here_or_on_the_pool_alike() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..5 * 1024 * 1024 + 777u32)
            .map(|i| (i * 31 % 253) as u8)
            .collect();
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        for pooled in [false, true] {
            let path = dir.path().join(format!("part-{pooled}"));
            let file = Arc::new(File::create(&path).unwrap());
            let pace = Pace::default();
            if pooled {
                pace.note(Duration::from_secs(1));
            }
            let body: Vec<Result<Bytes, io::Error>> = data
                .chunks(100_000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let opts = WriteOptions {
                digest: Some(Algorithm::Sha256),
                extend: Some(HashState::default()),
                ..WriteOptions::default()
            };
            let target = Target {
                file,
                offset: 0,
                expected: data.len() as u64,
                sync: true,
                io_slots: &slots,
                pace: &pace,
            };
            let w = stream_into(target, futures::stream::iter(body), opts)
                .await
                .unwrap();
            if pooled {
                assert!(!pace.writes_are_fast());
            }
            assert_eq!(std::fs::read(&path).unwrap(), data);
            assert_eq!(w.len, data.len() as u64);
            assert_eq!(w.digest, Some(Sha256::digest(&data).to_vec()));
            assert_eq!(
                w.extended.unwrap().finalize(),
                <[u8; 32]>::from(Sha256::digest(&data))
            );
        }
    }
}
