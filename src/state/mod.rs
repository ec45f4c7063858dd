//! Upload state: the record of each upload, which chunks arrived, the running
//! hash, idempotency keys, leases and the expiry index.
//!
//! [`StateStore`] is the contract; [`Store`] dispatches to one backend per
//! variant (no `Box<dyn>`: native `async fn` in traits, cheap `Clone` handles).
//! Every method that changes state is one atomic step in the backend, so two
//! requests (or two processes sharing Redis) can never lose each other's update:
//! there is no read-modify-write across calls. Callers read a record to decide
//! what to do, then ask for a transition that the store re-checks atomically.
//!
//! Time: a rule about an upload's expiry takes `now_ms` from the caller, who
//! reads [`crate::clock::Clock`]. Leases, use counts and rate buckets lapse by
//! the backend's own time: the embedded store's clock (the same `Clock`), or
//! Redis's (`PX`, `PEXPIREAT`, `TIME`), on which every instance agrees.
//! `tests/state_store.rs` checks every guarantee below on both backends.

pub mod embedded;
pub mod ledger;
pub mod redis;
pub mod rules;

use std::time::Duration;

use uuid::Uuid;

use crate::events::{OutboxEntry, OutboxSettings};
use crate::hashing::HashState;
use crate::upload::{Failure, FileInfo, UploadRecord};

pub use embedded::EmbeddedStore;
pub use ledger::{Charge, LedgerStore, Quota, QuotaLimits, Usage, UsageKind};
pub use redis::RedisStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or cannot commit right now; nothing was
    /// changed and the request may be retried.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with something this version cannot read.
    #[error("state store data is corrupt: {0}")]
    Corrupt(String),
}

/// Result of an atomic update that depends on the upload's current state.
#[derive(Debug)]
pub enum Update {
    /// The update was applied; this is the record after it.
    Done(UploadRecord),
    /// No upload with that id.
    NotFound,
    /// The upload is not in a state that allows this update (wrong status,
    /// expired, not fully received); this is the record as it stands.
    Rejected(UploadRecord),
}

/// Result of inserting a new upload.
#[derive(Debug)]
pub enum Insert {
    Created,
    /// The idempotency key was already used: what the first create kept.
    Existing(IdempotencyRecord),
}

/// What an `Idempotency-Key` keeps: the first create's answer, and a digest
/// of its request so that the key reused for another request is told apart
/// from a retry. Every backend stores it as [`IdempotencyRecord::to_json`]
/// gives it, and reads it back with [`IdempotencyRecord::from_json`].
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    /// The upload the first create started.
    pub upload: Uuid,
    /// The digest of the first create's request; `None` in a record kept by
    /// a version that stored the answer alone.
    pub request: Option<String>,
    /// The first create's answer (the upload object).
    pub answer: serde_json::Value,
}

/// An [`IdempotencyRecord`] as stored: `{"id", "answer": {"request",
/// "answer"}}`, the very form earlier versions wrote and read (instances of
/// two versions may share one Redis during an upgrade). The oldest form has
/// the answer alone in place of the inner object.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredIdempotency {
    #[serde(default)]
    id: Option<Uuid>,
    answer: serde_json::Value,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RequestAndAnswer {
    request: String,
    answer: serde_json::Value,
}

impl IdempotencyRecord {
    pub fn new(upload: Uuid, request: &str, answer: serde_json::Value) -> Self {
        IdempotencyRecord {
            upload,
            request: Some(request.to_owned()),
            answer,
        }
    }

    /// The answer for a create whose request has the digest `request`: the
    /// first answer if it is a retry of the same request (or the record
    /// predates digests), `None` if the key was used for another request.
    pub fn replay(&self, request: &str) -> Option<&serde_json::Value> {
        match &self.request {
            Some(first) if first != request => None,
            _ => Some(&self.answer),
        }
    }

    pub fn to_json(&self) -> String {
        let answer = match &self.request {
            Some(request) => serde_json::json!({"request": request, "answer": self.answer}),
            None => self.answer.clone(),
        };
        let stored = StoredIdempotency {
            id: Some(self.upload),
            answer,
        };
        serde_json::to_string(&stored).expect("JSON values always serialise")
    }

    pub fn from_json(json: &[u8]) -> Result<Self, StoreError> {
        let corrupt =
            |e: serde_json::Error| StoreError::Corrupt(format!("idempotency record: {e}"));
        let stored: StoredIdempotency = serde_json::from_slice(json).map_err(corrupt)?;
        let (request, answer) = if stored.answer.get("answer").is_some() {
            let both: RequestAndAnswer = serde_json::from_value(stored.answer).map_err(corrupt)?;
            (Some(both.request), both.answer)
        } else {
            (None, stored.answer)
        };
        let upload = stored
            .id
            .or_else(|| {
                answer["id"]
                    .as_str()
                    .and_then(|id| Uuid::try_parse(id).ok())
            })
            .unwrap_or_default();
        Ok(IdempotencyRecord {
            upload,
            request,
            answer,
        })
    }
}

/// One chunk whose bytes are durable on disk, to be counted.
#[derive(Debug, Clone)]
pub struct ChunkMark {
    pub index: u64,
    pub len: u64,
    pub now_ms: i64,
    /// The upload's new `expires_at` (sliding expiry).
    pub expires_at: i64,
    /// The running hash extended over this chunk: (the length it was
    /// extended from, the state after). Moved on as by `advance_hash`, in
    /// the same atomic step, once the chunk is counted.
    pub hash: Option<(u64, HashState)>,
}

/// Bytes written in order at a sequential upload's offset, to be counted.
#[derive(Debug, Clone)]
pub struct OffsetMark {
    /// The offset the write started at: the count moves only from there.
    pub from: u64,
    /// Where the bytes written end.
    pub to: u64,
    /// The upload's length, when this write sets it (it was deferred).
    pub length: Option<u64>,
    pub now_ms: i64,
    /// The upload's new `expires_at` (sliding expiry).
    pub expires_at: i64,
    /// The running hash extended over the bytes written, as in
    /// [`ChunkMark::hash`]: moved on in the same step, once counted.
    pub hash: Option<(u64, HashState)>,
}

/// What a lease guards: one writer at a time for each. The store derives
/// its key names from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeaseOf {
    /// Writing chunk `index` of an upload.
    Chunk { upload: Uuid, index: u64 },
    /// Writing at a sequential upload's offset (one writer at a time: its
    /// bytes go in order).
    Append(Uuid),
    /// Assembling an upload.
    Complete(Uuid),
    /// Creating the upload of an Idempotency-Key (as scoped to its caller),
    /// so that a retry racing its first attempt waits for its answer.
    Create(String),
    /// Delivering the event outbox: one instance at a time, so that
    /// instances sharing a store do not each send every event.
    Delivery,
}

impl std::fmt::Display for LeaseOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseOf::Chunk { upload, index } => write!(f, "chunk {index} of {upload}"),
            LeaseOf::Append(upload) => write!(f, "writing at the offset of {upload}"),
            LeaseOf::Complete(upload) => write!(f, "completion of {upload}"),
            LeaseOf::Create(key) => write!(f, "create with key {key}"),
            LeaseOf::Delivery => write!(f, "event delivery"),
        }
    }
}

/// An acquired lease; hand it back to [`StateStore::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub of: LeaseOf,
    /// Proves the holder: releasing needs it, so a lease that lapsed and was
    /// taken by someone else is not released by its first holder.
    pub token: String,
}

/// A token bucket's rate: `burst` requests at once, refilled at one per
/// `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub interval: Duration,
    pub burst: u32,
}

impl Rate {
    /// `per_second` sustained (at least one a million seconds), `burst` at once.
    pub fn per_second(per_second: f64, burst: u32) -> Rate {
        let interval = Duration::from_secs_f64(1.0 / per_second.max(1e-6));
        Rate {
            interval: interval.max(Duration::from_micros(1)),
            burst: burst.max(1),
        }
    }

    /// The GCRA's emission interval: µs per request.
    fn interval_us(self) -> i64 {
        (self.interval.as_micros() as i64).max(1)
    }

    /// The GCRA's burst tolerance: how far ahead of now (µs) the bucket's
    /// theoretical arrival time may run.
    fn tolerance_us(self) -> i64 {
        self.interval_us() * i64::from(self.burst.max(1) - 1)
    }
}

/// What every state backend must guarantee. "Atomic" means: applied entirely
/// or not at all, and serialised with every other update of the same upload.
/// "Durable" means: when the call returns Ok, the change survives a crash of
/// the process (and, with `durability = full`, of the machine).
#[allow(async_fn_in_trait)]
pub trait StateStore {
    /// Checks that the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Atomically and durably inserts a new upload. With an idempotency key,
    /// inserts only if the key is unused, keeping `first` under it; if the
    /// key is taken, inserts nothing and returns what it keeps. Of two
    /// inserts racing with one key, exactly one creates. The key is deleted
    /// with the upload ([`StateStore::delete_expired`]).
    async fn insert_upload(
        &self,
        record: &UploadRecord,
        idempotency: Option<(&str, &IdempotencyRecord)>,
    ) -> Result<Insert, StoreError>;

    /// What an idempotency key keeps, if it was used.
    async fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Adds `delta` (1 to count a use, -1 to give one back) to the uses of a
    /// token with `max_uploads`, named `name`, and returns the new count.
    /// Atomic and durable: a restart must not hand a token fresh uses. The
    /// count lapses at `until_ms` (Unix ms) and starts again from 0.
    async fn add_use(&self, name: &str, delta: i64, until_ms: i64) -> Result<u64, StoreError>;

    /// Forgets use counts that lapsed before `now_ms`; returns how many.
    /// (A backend whose keys expire by themselves has nothing to do.)
    async fn purge_lapsed_uses(&self, now_ms: i64) -> Result<u64, StoreError>;

    async fn get_upload(&self, id: Uuid) -> Result<Option<UploadRecord>, StoreError>;

    /// Atomically and durably counts a chunk: only while the upload is
    /// `uploading` and not expired (else `Rejected`). Counting a chunk twice is
    /// a no-op apart from refreshing the expiry. With `mark.hash`, then the
    /// compare-and-set of [`StateStore::advance_hash`], in the same step.
    async fn record_chunk(&self, id: Uuid, mark: ChunkMark) -> Result<Update, StoreError>;

    /// Atomically and durably moves a sequential upload's offset from
    /// `mark.from` to `mark.to` (setting its deferred length, if `mark`
    /// carries one): only while it is `uploading`, not expired, stands at
    /// `mark.from`, and `mark.to` does not pass its length (else `Rejected`).
    async fn advance_offset(&self, id: Uuid, mark: OffsetMark) -> Result<Update, StoreError>;

    /// Compare-and-set of the running hash: replaces it with `to` only if it
    /// currently covers exactly `from_len` bytes. Returns whether it did.
    /// Atomic, but need not be durable: a crash that loses it leaves an older
    /// hash state that is still true, and those bytes are hashed again.
    async fn advance_hash(
        &self,
        id: Uuid,
        from_len: u64,
        to: HashState,
    ) -> Result<bool, StoreError>;

    /// `uploading` (with every chunk received) → `assembling`. An upload that is
    /// already `assembling` is returned as `Done` too, so that an assembly
    /// interrupted by a crash can be resumed.
    async fn begin_assembly(&self, id: Uuid) -> Result<Update, StoreError>;

    /// `assembling` → `completed` (with the file) or `failed`. A completed
    /// upload leaves the expiry index (kept until deleted), unless its file
    /// has a retention (`FileInfo::expires_at`): then it stays in the index
    /// by that time, which becomes its `expires_at`. A failed one is kept at
    /// least until `keep_until` so that clients can read why.
    async fn finish_assembly(
        &self,
        id: Uuid,
        outcome: Result<FileInfo, Failure>,
        keep_until: i64,
    ) -> Result<Update, StoreError>;

    /// Any status but `completed` or `assembling` → `aborted`, kept as a tombstone until
    /// `tombstone_until` so later requests learn it was aborted (410).
    async fn abort(&self, id: Uuid, tombstone_until: i64) -> Result<Update, StoreError>;

    /// Atomically and durably deletes a completed upload's record, with its
    /// idempotency key and its entry in the expiry index: what deleting a
    /// file does before its bytes go. `Done` with the record as it was;
    /// `NotFound` when there is none (deleted already, or never was);
    /// `Rejected` with the record, left alone, when it is not `completed`.
    /// Of two deletes racing, one gets `Done`, the other `NotFound`.
    async fn delete_file(&self, id: Uuid) -> Result<Update, StoreError>;

    /// Ids of uploads whose `expires_at` is at or before `now_ms`, oldest first.
    async fn expired(&self, now_ms: i64, limit: usize) -> Result<Vec<Uuid>, StoreError>;

    /// Deletes an upload's state (and its idempotency key) if it is still
    /// deletable at `now_ms` ([`rules::deletable`]: expired, or a completed
    /// file past its retention); a record refreshed meanwhile is kept.
    /// Returns the deleted record.
    async fn delete_expired(
        &self,
        id: Uuid,
        now_ms: i64,
    ) -> Result<Option<UploadRecord>, StoreError>;

    /// Takes the lease `of` for `ttl` if nobody holds it. A lease whose holder
    /// died lapses after `ttl`. Leases need not be durable: the embedded
    /// store's die with its process, which is their only holder.
    async fn try_lease(&self, of: LeaseOf, ttl: Duration) -> Result<Option<Lease>, StoreError>;

    /// Gives a lease back; a lease that lapsed and was taken by another holder
    /// is left alone.
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Extends a lease the caller still holds to `ttl` from now. Returns false
    /// if it lapsed and someone else holds it now.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError>;

    /// Takes one request from the token bucket `bucket` at `rate`: `None` if
    /// it may go, else how long until it may. Atomic: two takers never both
    /// get the last token. A bucket nobody drew from is full; one left alone
    /// refills and may then be forgotten. Time is the backend's: the embedded
    /// store's clock, or Redis's own (`TIME`), so that every instance sharing
    /// a bucket agrees on it. Buckets need not be durable: a restart that
    /// forgets them lets a caller burst once more, nothing worse.
    async fn take_token(&self, bucket: &str, rate: Rate) -> Result<Option<Duration>, StoreError>;

    /// [`StateStore::try_lease`] of chunk `index` of upload `id`, then (only
    /// if the lease was taken) the record as it stands after it: what every
    /// chunk request starts with, in one round trip where the backend can.
    async fn lease_and_get(
        &self,
        id: Uuid,
        index: u64,
        ttl: Duration,
    ) -> Result<Option<(Lease, Option<UploadRecord>)>, StoreError> {
        let chunk = LeaseOf::Chunk { upload: id, index };
        let Some(lease) = self.try_lease(chunk, ttl).await? else {
            return Ok(None);
        };
        match self.get_upload(id).await {
            Ok(rec) => Ok(Some((lease, rec))),
            Err(e) => {
                let _ = self.release(&lease).await;
                Err(e)
            }
        }
    }

    /// [`StateStore::record_chunk`], then [`StateStore::release`] of the
    /// chunk's lease (also when the record fails): what every chunk request
    /// ends with, in one round trip where the backend can.
    async fn record_chunk_and_release(
        &self,
        id: Uuid,
        mark: ChunkMark,
        lease: &Lease,
    ) -> Result<Update, StoreError> {
        let update = self.record_chunk(id, mark).await;
        let released = self.release(lease).await;
        let update = update?;
        released.map(|()| update)
    }

    // The event outbox. A store given an outbox ([`Store::with_outbox`])
    // writes an upload's event in the same atomic step as the transition
    // that causes it, by the rules of [`crate::events::EventKind`]:
    // `insert_upload` (created), `finish_assembly` (completed or failed),
    // `abort` (aborted, once), `delete_file` and `delete_expired` (file
    // deleted, or expired unfinished). Each event of an upload carries the
    // next of its sequence numbers, from 1. Transitions that were rejected
    // write nothing. The outbox keeps at most its `max_len` entries.

    /// Up to `limit` outbox entries, oldest first (the order of the
    /// transitions, so an upload's events come in sequence).
    async fn pending_events(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Removes the entry at `position` (once every sink took it). Removing
    /// one that is gone is a no-op. Need not be durable: an acknowledgement
    /// lost in a crash means one more delivery, which at-least-once allows.
    async fn ack_event(&self, position: &str) -> Result<(), StoreError>;

    /// How many entries the outbox holds (the delivery backlog).
    async fn outbox_len(&self) -> Result<u64, StoreError>;
}

/// The configured backend.
#[derive(Clone)]
pub enum Store {
    Embedded(EmbeddedStore),
    Redis(RedisStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Embedded($s) => $e,
            Store::Redis($s) => $e,
        }
    };
}

impl StateStore for Store {
    async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }
    async fn insert_upload(
        &self,
        record: &UploadRecord,
        idempotency: Option<(&str, &IdempotencyRecord)>,
    ) -> Result<Insert, StoreError> {
        dispatch!(self, s => s.insert_upload(record, idempotency).await)
    }
    async fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        dispatch!(self, s => s.idempotency_record(key).await)
    }
    async fn add_use(&self, name: &str, delta: i64, until_ms: i64) -> Result<u64, StoreError> {
        dispatch!(self, s => s.add_use(name, delta, until_ms).await)
    }
    async fn purge_lapsed_uses(&self, now_ms: i64) -> Result<u64, StoreError> {
        dispatch!(self, s => s.purge_lapsed_uses(now_ms).await)
    }
    async fn get_upload(&self, id: Uuid) -> Result<Option<UploadRecord>, StoreError> {
        dispatch!(self, s => s.get_upload(id).await)
    }
    async fn record_chunk(&self, id: Uuid, mark: ChunkMark) -> Result<Update, StoreError> {
        dispatch!(self, s => s.record_chunk(id, mark).await)
    }
    async fn advance_offset(&self, id: Uuid, mark: OffsetMark) -> Result<Update, StoreError> {
        dispatch!(self, s => s.advance_offset(id, mark).await)
    }
    async fn advance_hash(
        &self,
        id: Uuid,
        from_len: u64,
        to: HashState,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.advance_hash(id, from_len, to).await)
    }
    async fn begin_assembly(&self, id: Uuid) -> Result<Update, StoreError> {
        dispatch!(self, s => s.begin_assembly(id).await)
    }
    async fn finish_assembly(
        &self,
        id: Uuid,
        outcome: Result<FileInfo, Failure>,
        keep_until: i64,
    ) -> Result<Update, StoreError> {
        dispatch!(self, s => s.finish_assembly(id, outcome, keep_until).await)
    }
    async fn abort(&self, id: Uuid, tombstone_until: i64) -> Result<Update, StoreError> {
        dispatch!(self, s => s.abort(id, tombstone_until).await)
    }
    async fn delete_file(&self, id: Uuid) -> Result<Update, StoreError> {
        dispatch!(self, s => s.delete_file(id).await)
    }
    async fn expired(&self, now_ms: i64, limit: usize) -> Result<Vec<Uuid>, StoreError> {
        dispatch!(self, s => s.expired(now_ms, limit).await)
    }
    async fn delete_expired(
        &self,
        id: Uuid,
        now_ms: i64,
    ) -> Result<Option<UploadRecord>, StoreError> {
        dispatch!(self, s => s.delete_expired(id, now_ms).await)
    }
    async fn try_lease(&self, of: LeaseOf, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        dispatch!(self, s => s.try_lease(of, ttl).await)
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        dispatch!(self, s => s.release(lease).await)
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        dispatch!(self, s => s.renew(lease, ttl).await)
    }
    async fn take_token(&self, bucket: &str, rate: Rate) -> Result<Option<Duration>, StoreError> {
        dispatch!(self, s => s.take_token(bucket, rate).await)
    }
    async fn lease_and_get(
        &self,
        id: Uuid,
        index: u64,
        ttl: Duration,
    ) -> Result<Option<(Lease, Option<UploadRecord>)>, StoreError> {
        dispatch!(self, s => s.lease_and_get(id, index, ttl).await)
    }
    async fn record_chunk_and_release(
        &self,
        id: Uuid,
        mark: ChunkMark,
        lease: &Lease,
    ) -> Result<Update, StoreError> {
        dispatch!(self, s => s.record_chunk_and_release(id, mark, lease).await)
    }
    async fn pending_events(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        dispatch!(self, s => s.pending_events(limit).await)
    }
    async fn ack_event(&self, position: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.ack_event(position).await)
    }
    async fn outbox_len(&self) -> Result<u64, StoreError> {
        dispatch!(self, s => s.outbox_len().await)
    }
}

impl Store {
    /// The store, keeping an event outbox from now on (see
    /// [`StateStore::pending_events`]).
    pub async fn with_outbox(self, settings: OutboxSettings) -> Result<Store, StoreError> {
        Ok(match self {
            Store::Embedded(s) => Store::Embedded(s.with_outbox(settings)),
            Store::Redis(s) => Store::Redis(s.with_outbox(settings).await?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn idempotency_records_keep_the_form_earlier_versions_read() {
        let id = Uuid::new_v4();
        let first = IdempotencyRecord::new(id, "d1", json!({"id": id, "size": 3}));
        let stored: serde_json::Value = serde_json::from_str(&first.to_json()).unwrap();
        assert_eq!(
            stored,
            json!({"id": id, "answer": {"request": "d1", "answer": {"id": id, "size": 3}}})
        );
        let read = IdempotencyRecord::from_json(first.to_json().as_bytes()).unwrap();
        assert_eq!(read, first);
        assert_eq!(read.replay("d1"), Some(&json!({"id": id, "size": 3})));
        assert_eq!(read.replay("d2"), None, "another request with the key");
    }

    #[test]
    fn an_idempotency_record_with_the_answer_alone_replays_for_any_request() {
        let id = Uuid::new_v4();
        let old = json!({"id": id, "answer": {"id": id, "size": 3}}).to_string();
        let read = IdempotencyRecord::from_json(old.as_bytes()).unwrap();
        assert_eq!(read.upload, id);
        assert_eq!(read.request, None);
        assert_eq!(read.replay("anything"), Some(&json!({"id": id, "size": 3})));
        assert!(matches!(
            IdempotencyRecord::from_json(b"not json"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
