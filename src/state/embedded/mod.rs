//! The embedded state backend: a redb database file in the data directory.
//!
//! Why redb: it is an ACID key-value store in pure Rust (no C build, one file),
//! its commits are crash-safe with a single fsync, and it survives `kill -9`
//! without a recovery step of ours. Only one process may open the file, which
//! is what "embedded, single node" means; several instances need Redis.
//!
//! Group commit: every change goes through one writer thread, which takes all
//! changes queued while the previous commit was syncing and applies them in a
//! single transaction with a single fsync. Under load (many chunks landing at
//! once) that keeps the store from adding one fsync per chunk on top of the
//! chunk's own. Each change is a closure run inside the transaction, so the
//! check and the write of a transition are atomic; its caller is answered only
//! after the commit is durable.
//!
//! Outages end by themselves: after an I/O error (a full disk, say) redb
//! refuses every further write until the database is opened again, so the
//! writer opens it again itself (redb repairs on open), and callers meanwhile
//! get `Unavailable` (503, retry). When the disk is full, the state reserve
//! ([`StateReserve`]) is given up first, so that the commits of uploads
//! already admitted find room.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::Duration;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    rules, ChunkMark, IdempotencyRecord, Insert, Lease, LeaseOf, OffsetMark, Rate, StateStore,
    StoreError, Update,
};
use crate::clock::Clock;
use crate::config::Durability;
use crate::events::{OutboxEntry, OutboxSettings};
use crate::guards::limits::reserve::StateReserve;
use crate::hashing::HashState;
use crate::upload::{Failure, FileInfo, UploadRecord};

mod ledger;
mod outbox;
mod writer;

use writer::{open_database, writer_loop, Job, Reply, Slot};

/// upload id → record (JSON).
const UPLOADS: TableDefinition<u128, &[u8]> = TableDefinition::new("uploads");
/// (expires_at ms, upload id) → (): the janitor's index, in expiry order.
const EXPIRY: TableDefinition<(i64, u128), ()> = TableDefinition::new("expiry");
/// Idempotency-Key → [`IdempotencyRecord::to_json`].
const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");

/// Token name → (uses, lapses at ms): the counts behind `max_uploads`.
const USES: TableDefinition<&str, (u64, i64)> = TableDefinition::new("uses");

/// Leases held in this process: what each guards → (token, until ms on the clock).
type LeaseMap = HashMap<LeaseOf, (u64, i64)>;

/// Rate buckets: name → theoretical arrival time (µs on the clock), see
/// [`rules::take_token`]. In memory: a bucket is worth no commit per request,
/// and a restart that forgets them only lets callers burst once more.
#[derive(Default)]
struct Buckets {
    tat: HashMap<String, i64>,
    /// Takes since the last time full buckets were forgotten.
    takes: u32,
}

/// Full buckets are forgotten every this many takes, so memory stays bounded
/// by the callers of the last moments.
const BUCKET_PRUNE_EVERY: u32 = 4096;

/// What the embedded store says of its own health (for `/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedHealth {
    /// The database is open (not being opened again after an error).
    pub open: bool,
    /// Times it was opened again after an error, since start.
    pub reopened: u64,
}

#[derive(Clone)]
pub struct EmbeddedStore {
    slot: Arc<Slot>,
    jobs: mpsc::Sender<Job>,
    leases: Arc<Mutex<LeaseMap>>,
    next_token: Arc<AtomicU64>,
    buckets: Arc<Mutex<Buckets>>,
    /// When leases and use counts lapse and buckets refill.
    clock: Clock,
    /// Set: transitions write their events (see `outbox.rs`).
    outbox: Option<OutboxSettings>,
}

impl EmbeddedStore {
    /// Opens (or creates) the database at `path` and starts the writer thread,
    /// which ends when the last handle is dropped. Leases and use counts lapse,
    /// and rate buckets refill, by `clock`.
    pub fn open(path: &Path, durability: Durability, clock: Clock) -> Result<Self, StoreError> {
        Self::open_with_reserve(path, durability, clock, None)
    }

    /// [`EmbeddedStore::open`], giving up `reserve` when a commit finds the
    /// disk full.
    pub fn open_with_reserve(
        path: &Path,
        durability: Durability,
        clock: Clock,
        reserve: Option<Arc<StateReserve>>,
    ) -> Result<Self, StoreError> {
        let db = Arc::new(open_database(path)?);
        let slot = Arc::new(Slot {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
            reopened: AtomicU64::new(0),
        });
        let (jobs, queue) = mpsc::channel::<Job>();
        let writer_slot = slot.clone();
        std::thread::Builder::new()
            .name("tranche-store-writer".into())
            .spawn(move || writer_loop(&writer_slot, &queue, durability, reserve.as_deref()))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(EmbeddedStore {
            slot,
            jobs,
            leases: Arc::default(),
            next_token: Arc::new(AtomicU64::new(1)),
            buckets: Arc::default(),
            clock,
            outbox: None,
        })
    }

    pub fn health(&self) -> EmbeddedHealth {
        EmbeddedHealth {
            // Never waits on the async runtime: a slot held for writing is
            // being opened again, i.e. not open.
            open: self.slot.db.try_read().is_ok_and(|db| db.is_some()),
            reopened: self.slot.reopened.load(Ordering::Relaxed),
        }
    }

    /// Runs `change` inside the next group transaction and returns its result
    /// once that transaction is committed (durably, if `durable`).
    async fn write<T: Send + 'static>(
        &self,
        durable: bool,
        change: impl FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            durable,
            run: Box::new(move |txn| {
                let out = change(txn)?;
                Ok(Box::new(move |committed: Result<(), StoreError>| {
                    let _ = tx.send(committed.map(|()| out));
                }) as Reply)
            }),
        };
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the commit was abandoned".into()))?
    }

    /// A read of one record by its key: a few B-tree pages, nearly always in
    /// redb's cache or the OS's (a record is read by each of its chunks,
    /// right after the last one wrote it). Done in place, it saves the
    /// hand-off to the blocking pool and back, two wake-ups per chunk
    /// request; only while the database is open and its slot free (while
    /// the writer opens it again, it waits on the blocking pool instead).
    /// Scans stay on the blocking pool ([`EmbeddedStore::read`]).
    async fn read_one<T: Send + 'static>(
        &self,
        query: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if let Ok(db) = self.slot.db.try_read() {
            if let Some(db) = db.as_ref() {
                let txn = db.begin_read().map_err(unavailable)?;
                return query(&txn);
            }
        }
        self.read(query).await
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let slot = self.slot.clone();
        tokio::task::spawn_blocking(move || {
            // Taken here, not on the runtime: while the writer thread opens
            // the database again it holds the slot, for up to a second.
            let db = slot.get()?;
            let txn = db.begin_read().map_err(unavailable)?;
            query(&txn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    /// Read-modify-write of one record inside the group transaction, keeping the
    /// expiry index in step. `change` returns false to leave the record alone.
    async fn update(
        &self,
        id: Uuid,
        durable: bool,
        change: impl FnOnce(&mut UploadRecord) -> bool + Send + 'static,
    ) -> Result<Update, StoreError> {
        let (events, now) = (self.outbox, self.clock.now_ms());
        self.write(durable, move |txn| {
            let mut uploads = txn.open_table(UPLOADS).map_err(unavailable)?;
            let Some(mut rec) = load(&uploads, id)? else {
                return Ok(Update::NotFound);
            };
            let before = rec.clone();
            if !change(&mut rec) {
                return Ok(Update::Rejected(rec));
            }
            uploads
                .insert(id.as_u128(), encode(&rec)?.as_slice())
                .map_err(unavailable)?;
            outbox::changed(txn, events, &before, &rec, now)?;
            let mut expiry = txn.open_table(EXPIRY).map_err(unavailable)?;
            if rules::expires(&before) {
                expiry
                    .remove((before.expires_at, id.as_u128()))
                    .map_err(unavailable)?;
            }
            if rules::expires(&rec) {
                expiry
                    .insert((rec.expires_at, id.as_u128()), ())
                    .map_err(unavailable)?;
            }
            Ok(Update::Done(rec))
        })
        .await
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A table that no write has created yet reads as empty.
pub(super) fn open_or_none<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(unavailable(e)),
    }
}

fn encode(rec: &UploadRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(rec).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn load(
    table: &impl ReadableTable<u128, &'static [u8]>,
    id: Uuid,
) -> Result<Option<UploadRecord>, StoreError> {
    match table.get(id.as_u128()).map_err(unavailable)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("upload {id}: {e}"))),
    }
}

/// Removes a record with its entry in the expiry index and its
/// idempotency key (and writes its event), inside the caller's transaction.
fn remove_record(
    txn: &WriteTransaction,
    uploads: &mut redb::Table<u128, &'static [u8]>,
    rec: &UploadRecord,
    (events, now): (Option<OutboxSettings>, i64),
) -> Result<(), StoreError> {
    outbox::removed(txn, events, rec, now)?;
    let id = rec.id.as_u128();
    uploads.remove(id).map_err(unavailable)?;
    let mut expiry = txn.open_table(EXPIRY).map_err(unavailable)?;
    expiry.remove((rec.expires_at, id)).map_err(unavailable)?;
    if let Some(key) = &rec.idempotency_key {
        let mut idem = txn.open_table(IDEMPOTENCY).map_err(unavailable)?;
        idem.remove(key.as_str()).map_err(unavailable)?;
    }
    Ok(())
}

impl StateStore for EmbeddedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|txn| txn.open_table(UPLOADS).map(|_| ()).map_err(unavailable))
            .await
    }

    async fn insert_upload(
        &self,
        record: &UploadRecord,
        idempotency: Option<(&str, &IdempotencyRecord)>,
    ) -> Result<Insert, StoreError> {
        let rec = record.clone();
        let idem = idempotency.map(|(key, first)| (key.to_owned(), first.to_json()));
        let (events, now) = (self.outbox, self.clock.now_ms());
        self.write(true, move |txn| {
            if let Some((key, value)) = &idem {
                let mut table = txn.open_table(IDEMPOTENCY).map_err(unavailable)?;
                if let Some(existing) = table.get(key.as_str()).map_err(unavailable)? {
                    return IdempotencyRecord::from_json(existing.value()).map(Insert::Existing);
                }
                table
                    .insert(key.as_str(), value.as_bytes())
                    .map_err(unavailable)?;
            }
            let mut uploads = txn.open_table(UPLOADS).map_err(unavailable)?;
            uploads
                .insert(rec.id.as_u128(), encode(&rec)?.as_slice())
                .map_err(unavailable)?;
            let mut expiry = txn.open_table(EXPIRY).map_err(unavailable)?;
            expiry
                .insert((rec.expires_at, rec.id.as_u128()), ())
                .map_err(unavailable)?;
            outbox::created(txn, events, &rec, now)?;
            Ok(Insert::Created)
        })
        .await
    }

    async fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let key = key.to_owned();
        self.read(move |txn| {
            let table = txn.open_table(IDEMPOTENCY).map_err(unavailable)?;
            match table.get(key.as_str()).map_err(unavailable)? {
                None => Ok(None),
                Some(v) => IdempotencyRecord::from_json(v.value()).map(Some),
            }
        })
        .await
    }

    async fn add_use(&self, name: &str, delta: i64, until_ms: i64) -> Result<u64, StoreError> {
        let name = name.to_owned();
        let now = self.clock.now_ms();
        self.write(true, move |txn| {
            let mut table = txn.open_table(USES).map_err(unavailable)?;
            let (count, until) = match table.get(name.as_str()).map_err(unavailable)? {
                Some(v) if v.value().1 > now => v.value(),
                _ => (0, until_ms),
            };
            let count = count.saturating_add_signed(delta);
            if count == 0 {
                table.remove(name.as_str()).map_err(unavailable)?;
            } else {
                table
                    .insert(name.as_str(), (count, until.max(until_ms)))
                    .map_err(unavailable)?;
            }
            Ok(count)
        })
        .await
    }

    async fn purge_lapsed_uses(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.write(false, move |txn| {
            let mut table = txn.open_table(USES).map_err(unavailable)?;
            let mut removed = 0;
            table
                .retain(|_, (_, until)| {
                    let lapsed = until <= now_ms;
                    removed += u64::from(lapsed);
                    !lapsed
                })
                .map_err(unavailable)?;
            Ok(removed)
        })
        .await
    }

    async fn get_upload(&self, id: Uuid) -> Result<Option<UploadRecord>, StoreError> {
        self.read_one(move |txn| load(&txn.open_table(UPLOADS).map_err(unavailable)?, id))
            .await
    }

    async fn record_chunk(&self, id: Uuid, mark: ChunkMark) -> Result<Update, StoreError> {
        self.update(id, true, move |rec| rules::record_chunk(rec, &mark))
            .await
    }

    async fn advance_offset(&self, id: Uuid, mark: OffsetMark) -> Result<Update, StoreError> {
        self.update(id, true, move |rec| rules::advance_offset(rec, &mark))
            .await
    }

    async fn advance_hash(
        &self,
        id: Uuid,
        from_len: u64,
        to: HashState,
    ) -> Result<bool, StoreError> {
        let done = self
            .update(id, false, move |rec| {
                rules::advance_hash(rec, from_len, &to)
            })
            .await?;
        Ok(matches!(done, Update::Done(_)))
    }

    async fn begin_assembly(&self, id: Uuid) -> Result<Update, StoreError> {
        self.update(id, true, rules::begin_assembly).await
    }

    async fn finish_assembly(
        &self,
        id: Uuid,
        outcome: Result<FileInfo, Failure>,
        keep_until: i64,
    ) -> Result<Update, StoreError> {
        self.update(id, true, move |rec| {
            rules::finish_assembly(rec, &outcome, keep_until)
        })
        .await
    }

    async fn abort(&self, id: Uuid, tombstone_until: i64) -> Result<Update, StoreError> {
        self.update(id, true, move |rec| rules::abort(rec, tombstone_until))
            .await
    }

    async fn expired(&self, now_ms: i64, limit: usize) -> Result<Vec<Uuid>, StoreError> {
        self.read(move |txn| {
            let table = txn.open_table(EXPIRY).map_err(unavailable)?;
            let range = table
                .range((i64::MIN, 0u128)..=(now_ms, u128::MAX))
                .map_err(unavailable)?;
            let mut ids = Vec::new();
            for entry in range.take(limit) {
                let (key, _) = entry.map_err(unavailable)?;
                ids.push(Uuid::from_u128(key.value().1));
            }
            Ok(ids)
        })
        .await
    }

    async fn delete_expired(
        &self,
        id: Uuid,
        now_ms: i64,
    ) -> Result<Option<UploadRecord>, StoreError> {
        let events = (self.outbox, self.clock.now_ms());
        self.write(true, move |txn| {
            let mut uploads = txn.open_table(UPLOADS).map_err(unavailable)?;
            let Some(rec) = load(&uploads, id)? else {
                return Ok(None);
            };
            if !rules::deletable(&rec, now_ms) {
                return Ok(None);
            }
            remove_record(txn, &mut uploads, &rec, events)?;
            Ok(Some(rec))
        })
        .await
    }

    async fn delete_file(&self, id: Uuid) -> Result<Update, StoreError> {
        let events = (self.outbox, self.clock.now_ms());
        self.write(true, move |txn| {
            let mut uploads = txn.open_table(UPLOADS).map_err(unavailable)?;
            let Some(rec) = load(&uploads, id)? else {
                return Ok(Update::NotFound);
            };
            if !rules::file_deletable(&rec) {
                return Ok(Update::Rejected(rec));
            }
            remove_record(txn, &mut uploads, &rec, events)?;
            Ok(Update::Done(rec))
        })
        .await
    }

    async fn try_lease(&self, of: LeaseOf, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        // One process owns the database, so leases need not outlive it: a map
        // in memory is enough, and a crash releases every lease with it. They
        // lapse by the store's clock, so a test can make them lapse at once.
        let mut leases = self.leases.lock().expect("lease map poisoned");
        let now = self.clock.now_ms();
        if leases.get(&of).is_some_and(|(_, until)| *until > now) {
            return Ok(None);
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        leases.insert(of.clone(), (token, now + ttl.as_millis() as i64));
        Ok(Some(Lease {
            of,
            token: token.to_string(),
        }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let mut leases = self.leases.lock().expect("lease map poisoned");
        match leases.get_mut(&lease.of) {
            Some((token, until)) if token.to_string() == lease.token => {
                *until = self.clock.now_ms() + ttl.as_millis() as i64;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn take_token(&self, bucket: &str, rate: Rate) -> Result<Option<Duration>, StoreError> {
        let now = self.clock.now_us();
        let mut buckets = self.buckets.lock().expect("rate buckets poisoned");
        buckets.takes += 1;
        if buckets.takes >= BUCKET_PRUNE_EVERY {
            // A bucket whose arrival time has passed is full: as if unknown.
            buckets.takes = 0;
            buckets.tat.retain(|_, tat| *tat > now);
            buckets.tat.shrink_to_fit();
        }
        let tat = buckets.tat.get(bucket).copied();
        match rules::take_token(tat, now, rate) {
            Ok(tat) => {
                buckets.tat.insert(bucket.to_owned(), tat);
                Ok(None)
            }
            Err(wait_us) => Ok(Some(Duration::from_micros(wait_us as u64))),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut leases = self.leases.lock().expect("lease map poisoned");
        if leases
            .get(&lease.of)
            .is_some_and(|(token, _)| token.to_string() == lease.token)
        {
            leases.remove(&lease.of);
        }
        Ok(())
    }

    async fn pending_events(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_pending(limit).await
    }
    async fn ack_event(&self, position: &str) -> Result<(), StoreError> {
        self.outbox_ack(position).await
    }
    async fn outbox_len(&self) -> Result<u64, StoreError> {
        self.outbox_len_now().await
    }
}

#[cfg(test)]
mod tests;
