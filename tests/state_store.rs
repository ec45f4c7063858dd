//! The `StateStore` conformance suite: every guarantee the trait's doc
//! comments make (`src/state/mod.rs`, and `LedgerStore`'s in
//! `src/state/ledger.rs`: usage, the dedup index), written once and run against each
//! backend, the embedded store (redb) and a private redis-server, so that the
//! Lua scripts and the redb rules cannot drift apart. (As garage runs one
//! suite per database adapter, `src/db/test.rs`.)
//!
//! Time passes by the stores' adjustable clock, never by sleeping, with two
//! exceptions that belong to Redis's own clock: a Redis lease lapses by `PX`
//! and a Redis rate bucket refills by `TIME`, so on Redis those two tests use
//! a short real TTL and wait for it with a bounded poll.
//!
//! Needs `redis-server` on PATH (`apt-get install redis-server`).

/// The state store of the in-process helpers (unused here: each test opens
/// its stores itself).
pub const BACKEND: helpers::Backend = helpers::Backend::Embedded;

#[path = "api/helpers.rs"]
mod helpers;

use std::time::{Duration, Instant};

use serde_json::json;
use tempfile::TempDir;
use tranche::clock::Clock;
use tranche::config::Durability;
use tranche::events::{EventKind, OutboxSettings};
use tranche::hashing::HashState;
use tranche::state::{
    Charge, ChunkMark, EmbeddedStore, IdempotencyRecord, Insert, LeaseOf, LedgerStore, OffsetMark,
    Quota, QuotaLimits, Rate, RedisStore, StateStore, Store, Update, Usage, UsageKind,
};
use tranche::upload::{ChunkSet, Concat, Failure, FileInfo, Sequential, Status, UploadRecord};
use uuid::Uuid;

use helpers::{Backend, RedisServer};

/// A store under test, with the clock it reads and what keeps it alive.
struct Subject {
    store: Store,
    clock: Clock,
    backend: Backend,
    _dir: Option<TempDir>,
    _redis: Option<RedisServer>,
}

async fn open(backend: Backend) -> Subject {
    let clock = Clock::adjustable();
    match backend {
        Backend::Embedded => {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(
                &dir.path().join("state.redb"),
                Durability::Full,
                clock.clone(),
            )
            .expect("open the embedded store")
            .with_outbox(OUTBOX);
            Subject {
                store: Store::Embedded(store),
                clock,
                backend,
                _dir: Some(dir),
                _redis: None,
            }
        }
        Backend::Redis => {
            let redis = RedisServer::start().await;
            let store = RedisStore::connect(&redis.url(), "conformance:")
                .await
                .expect("connect to redis")
                .with_outbox(OUTBOX)
                .await
                .expect("load the outbox scripts");
            Subject {
                store: Store::Redis(store),
                clock,
                backend,
                _dir: None,
                _redis: Some(redis),
            }
        }
    }
}

/// Runs each named test (an `async fn(Subject)`) once per backend, as
/// `embedded::<name>` and `redis::<name>`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    crate::helpers::bounded(async {
                        super::$name(super::open(crate::helpers::Backend::Embedded).await).await
                    })
                    .await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    crate::helpers::bounded(async {
                        super::$name(super::open(crate::helpers::Backend::Redis).await).await
                    })
                    .await
                }
            )*
        }
    };
}

conformance!(
    an_inserted_upload_reads_back_as_written,
    a_chunk_counts_once_and_refreshes_the_expiry,
    chunks_recorded_at_once_are_all_counted,
    an_expired_or_finished_upload_counts_no_chunk,
    the_running_hash_moves_by_compare_and_set,
    a_counted_chunk_moves_the_running_hash_in_the_same_step,
    a_moved_offset_moves_the_running_hash_in_the_same_step,
    assembly_goes_from_uploading_to_completed_and_leaves_the_index,
    a_failed_assembly_is_kept_until_told,
    an_abort_leaves_a_tombstone_unless_completed_or_assembling,
    the_expiry_index_lists_expired_uploads_oldest_first,
    only_a_still_expired_upload_is_deleted_with_its_key,
    a_completed_file_is_deleted_once_with_its_key,
    a_file_with_a_retention_is_listed_and_deleted_when_it_ends,
    a_lease_is_exclusive_until_released,
    a_lease_is_renewed_and_released_only_by_its_holder,
    a_lease_whose_holder_died_lapses,
    a_chunk_lease_comes_with_the_record_and_goes_with_the_count,
    an_idempotency_key_creates_once_when_inserts_race,
    use_counts_add_up_and_lapse,
    a_rate_bucket_allows_its_burst_then_says_how_long_to_wait,
    a_rate_bucket_is_never_overdrawn_by_racing_takers,
    a_rate_bucket_refills_with_time,
    an_offset_moves_only_from_where_it_stands,
    a_deferred_length_is_set_once_and_bounds_the_offset,
    of_racing_moves_from_one_offset_exactly_one_wins,
    usage_is_charged_within_limits_settled_and_released_once,
    racing_charges_never_pass_a_quota,
    the_content_index_names_every_file_until_removed,
    completed_ids_lists_completed_uploads_only,
    processing_reports_are_kept_on_completed_uploads_and_numbered,
    transitions_write_their_events_in_order,
    an_upload_that_failed_or_expired_tells_it_once,
    an_outbox_entry_goes_only_when_acknowledged,
    progress_is_told_at_most_once_per_interval,
);

/// Every store under test keeps an outbox, so that every test also shows
/// that writing events changes no transition's outcome.
const OUTBOX: OutboxSettings = OutboxSettings {
    max_len: 10_000,
    progress_ms: None,
};

const CHUNK: u64 = 1024;
const TTL_MS: i64 = 60_000;

/// A new upload of `size` bytes in 1 KiB chunks, expiring in a minute.
fn record(clock: &Clock, size: u64) -> UploadRecord {
    let now = clock.now_ms();
    UploadRecord {
        id: Uuid::new_v4(),
        filename: "conformance.bin".into(),
        size,
        content_type: "application/octet-stream".into(),
        expected_sha256: None,
        chunk_size: CHUNK,
        metadata: serde_json::Map::from_iter([("k".to_string(), json!("v"))]),
        status: Status::Uploading,
        received: ChunkSet::default(),
        bytes_received: 0,
        hash: HashState::default(),
        created_at: now,
        expires_at: now + TTL_MS,
        file: None,
        failure: None,
        idempotency_key: None,
        retention_ms: None,
        sequential: None,
        owner: None,
        delete_after_download: false,
        processing: None,
    }
}

/// A new upload written in order (a tus upload) of `size` bytes, or of a
/// length not known yet.
fn sequential(clock: &Clock, size: Option<u64>) -> UploadRecord {
    UploadRecord {
        sequential: Some(Sequential {
            length_deferred: size.is_none(),
            raw_metadata: Some("filename YS5iaW4=,empty ,flag".into()),
            concat: Some(Concat::Partial),
            creator: Some("token".into()),
            ..Sequential::default()
        }),
        ..record(clock, size.unwrap_or(0))
    }
}

/// Bytes `from..to` of a sequential upload as written now (setting its
/// length to `length`).
fn moved(clock: &Clock, from: u64, to: u64, length: Option<u64>) -> OffsetMark {
    let now = clock.now_ms();
    OffsetMark {
        from,
        to,
        length,
        now_ms: now,
        expires_at: now + 2 * TTL_MS,
        hash: None,
    }
}

/// Chunk `index` of `rec` as received now, with a fresh TTL.
fn mark(clock: &Clock, rec: &UploadRecord, index: u64) -> ChunkMark {
    let (start, end) = rec.chunk_range(index);
    let now = clock.now_ms();
    ChunkMark {
        index,
        len: end - start,
        now_ms: now,
        expires_at: now + TTL_MS,
        hash: None,
    }
}

async fn insert(s: &Subject, rec: &UploadRecord) {
    assert!(matches!(
        s.store.insert_upload(rec, None).await.unwrap(),
        Insert::Created
    ));
}

async fn get(s: &Subject, id: Uuid) -> UploadRecord {
    s.store
        .get_upload(id)
        .await
        .unwrap()
        .expect("the upload exists")
}

fn done(update: Update) -> UploadRecord {
    match update {
        Update::Done(rec) => rec,
        other => panic!("expected Done, got {other:?}"),
    }
}

fn rejected(update: Update) -> UploadRecord {
    match update {
        Update::Rejected(rec) => rec,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

/// An upload with every chunk recorded and `begin_assembly` done.
async fn assembling(s: &Subject) -> UploadRecord {
    let rec = record(&s.clock, 2 * CHUNK);
    insert(s, &rec).await;
    for i in 0..2 {
        done(
            s.store
                .record_chunk(rec.id, mark(&s.clock, &rec, i))
                .await
                .unwrap(),
        );
    }
    done(s.store.begin_assembly(rec.id).await.unwrap())
}

fn file(id: Uuid) -> FileInfo {
    FileInfo {
        id,
        size: 2 * CHUNK,
        sha256: "0".repeat(64),
        expires_at: None,
    }
}

async fn an_inserted_upload_reads_back_as_written(s: Subject) {
    s.store.ping().await.unwrap();
    let rec = record(&s.clock, 3 * CHUNK - 10);
    insert(&s, &rec).await;
    let got = get(&s, rec.id).await;
    assert_eq!(got.id, rec.id);
    assert_eq!(got.filename, rec.filename);
    assert_eq!(got.size, rec.size);
    assert_eq!(got.chunk_size, CHUNK);
    assert_eq!(got.metadata, rec.metadata);
    assert_eq!(got.status, Status::Uploading);
    assert_eq!(got.received, ChunkSet::default());
    assert_eq!(got.bytes_received, 0);
    assert_eq!(got.hash, HashState::default());
    assert_eq!(
        (got.created_at, got.expires_at),
        (rec.created_at, rec.expires_at)
    );
    assert_eq!(got.missing_chunks(), vec![0, 1, 2]);
    assert!(s.store.get_upload(Uuid::new_v4()).await.unwrap().is_none());
}

async fn a_chunk_counts_once_and_refreshes_the_expiry(s: Subject) {
    let rec = record(&s.clock, 3 * CHUNK - 10);
    insert(&s, &rec).await;
    let first = done(
        s.store
            .record_chunk(rec.id, mark(&s.clock, &rec, 2))
            .await
            .unwrap(),
    );
    assert_eq!(first.received.count(), 1);
    assert_eq!(first.bytes_received, CHUNK - 10);
    assert!(first.received.contains(2));

    s.clock.advance(Duration::from_secs(10));
    let again = mark(&s.clock, &rec, 2);
    let second = done(s.store.record_chunk(rec.id, again.clone()).await.unwrap());
    assert_eq!(second.received.count(), 1, "a chunk counted twice");
    assert_eq!(second.bytes_received, CHUNK - 10);
    assert_eq!(second.expires_at, again.expires_at, "the expiry slides");
    assert_eq!(get(&s, rec.id).await.expires_at, again.expires_at);

    // The expiry never moves back.
    let mut older = mark(&s.clock, &rec, 0);
    older.expires_at = rec.expires_at;
    let third = done(s.store.record_chunk(rec.id, older).await.unwrap());
    assert_eq!(third.expires_at, again.expires_at);
    assert_eq!(third.bytes_received, 2 * CHUNK - 10);

    let unknown = s
        .store
        .record_chunk(Uuid::new_v4(), mark(&s.clock, &rec, 0))
        .await
        .unwrap();
    assert!(matches!(unknown, Update::NotFound), "{unknown:?}");
}

async fn chunks_recorded_at_once_are_all_counted(s: Subject) {
    let rec = record(&s.clock, 32 * CHUNK);
    insert(&s, &rec).await;
    let all = (0..32).map(|i| s.store.record_chunk(rec.id, mark(&s.clock, &rec, i)));
    for update in futures::future::join_all(all).await {
        done(update.unwrap());
    }
    let got = get(&s, rec.id).await;
    assert_eq!(got.received.count(), 32, "an update was lost");
    assert_eq!(got.bytes_received, 32 * CHUNK);
    assert!(got.is_fully_received());
}

async fn an_expired_or_finished_upload_counts_no_chunk(s: Subject) {
    let rec = record(&s.clock, 2 * CHUNK);
    insert(&s, &rec).await;
    s.clock.advance(Duration::from_millis(TTL_MS as u64));
    let late = rejected(
        s.store
            .record_chunk(rec.id, mark(&s.clock, &rec, 0))
            .await
            .unwrap(),
    );
    assert_eq!(late.received.count(), 0);
    assert_eq!(late.expires_at, rec.expires_at, "a refused chunk refreshed");

    let aborted = record(&s.clock, 2 * CHUNK);
    insert(&s, &aborted).await;
    done(
        s.store
            .abort(aborted.id, s.clock.now_ms() + TTL_MS)
            .await
            .unwrap(),
    );
    let refused = rejected(
        s.store
            .record_chunk(aborted.id, mark(&s.clock, &aborted, 0))
            .await
            .unwrap(),
    );
    assert_eq!(refused.status, Status::Aborted);
    assert_eq!(refused.received.count(), 0);

    let assembling = assembling(&s).await;
    let refused = rejected(
        s.store
            .record_chunk(assembling.id, mark(&s.clock, &assembling, 0))
            .await
            .unwrap(),
    );
    assert_eq!(refused.status, Status::Assembling);
}

async fn the_running_hash_moves_by_compare_and_set(s: Subject) {
    let rec = record(&s.clock, 2 * CHUNK);
    insert(&s, &rec).await;
    let mut one = HashState::default();
    one.update(&[7; CHUNK as usize]);
    let mut two = one.clone();
    two.update(&[8; CHUNK as usize]);

    assert!(
        !s.store
            .advance_hash(rec.id, CHUNK, two.clone())
            .await
            .unwrap(),
        "wrong from"
    );
    // Only forward, and never past the end of the file.
    assert!(
        !s.store
            .advance_hash(rec.id, 0, HashState::default())
            .await
            .unwrap(),
        "not forward"
    );
    let mut past_end = two.clone();
    past_end.update(&[9]);
    assert!(
        !s.store.advance_hash(rec.id, 0, past_end).await.unwrap(),
        "past the end"
    );
    assert!(s.store.advance_hash(rec.id, 0, one.clone()).await.unwrap());
    assert!(
        !s.store.advance_hash(rec.id, 0, one.clone()).await.unwrap(),
        "applied twice"
    );
    assert_eq!(get(&s, rec.id).await.hash, one);
    assert!(s
        .store
        .advance_hash(rec.id, CHUNK, two.clone())
        .await
        .unwrap());
    assert_eq!(get(&s, rec.id).await.hash, two);
    assert!(!s.store.advance_hash(Uuid::new_v4(), 0, one).await.unwrap());
}

async fn a_counted_chunk_moves_the_running_hash_in_the_same_step(s: Subject) {
    let rec = record(&s.clock, 2 * CHUNK);
    insert(&s, &rec).await;
    let mut one = HashState::default();
    one.update(&[7; CHUNK as usize]);
    let mut two = one.clone();
    two.update(&[8; CHUNK as usize]);

    // From where the hash does not stand: the chunk counts, the hash stays.
    let mut second = mark(&s.clock, &rec, 1);
    second.hash = Some((CHUNK, two.clone()));
    let got = done(s.store.record_chunk(rec.id, second).await.unwrap());
    assert!(got.received.contains(1));
    assert_eq!(
        got.hash,
        HashState::default(),
        "hash moved from the wrong length"
    );

    let mut first = mark(&s.clock, &rec, 0);
    first.hash = Some((0, one.clone()));
    let got = done(s.store.record_chunk(rec.id, first).await.unwrap());
    assert_eq!(got.hash, one, "the answer carries the hash moved");
    assert_eq!(get(&s, rec.id).await.hash, one);

    // Never past the end of the file, like advance_hash.
    let mut past_end = two.clone();
    past_end.update(&[9]);
    let mut again = mark(&s.clock, &rec, 1);
    again.hash = Some((CHUNK, past_end));
    let got = done(s.store.record_chunk(rec.id, again).await.unwrap());
    assert_eq!(got.hash, one, "hash moved past the end");

    // An upload that no longer counts chunks moves no hash either.
    s.store
        .abort(rec.id, s.clock.now_ms() + TTL_MS)
        .await
        .unwrap();
    let mut late = mark(&s.clock, &rec, 1);
    late.hash = Some((CHUNK, two));
    let refused = s.store.record_chunk(rec.id, late).await.unwrap();
    assert!(matches!(refused, Update::Rejected(_)), "{refused:?}");
    assert_eq!(get(&s, rec.id).await.hash, one);
}

async fn assembly_goes_from_uploading_to_completed_and_leaves_the_index(s: Subject) {
    let rec = record(&s.clock, 2 * CHUNK);
    insert(&s, &rec).await;
    done(
        s.store
            .record_chunk(rec.id, mark(&s.clock, &rec, 0))
            .await
            .unwrap(),
    );
    let incomplete = rejected(s.store.begin_assembly(rec.id).await.unwrap());
    assert_eq!(incomplete.status, Status::Uploading);
    done(
        s.store
            .record_chunk(rec.id, mark(&s.clock, &rec, 1))
            .await
            .unwrap(),
    );

    let started = done(s.store.begin_assembly(rec.id).await.unwrap());
    assert_eq!(started.status, Status::Assembling);
    // An assembly interrupted by a crash can be taken up again.
    let resumed = done(s.store.begin_assembly(rec.id).await.unwrap());
    assert_eq!(resumed.status, Status::Assembling);

    let keep_until = s.clock.now_ms() + TTL_MS;
    let completed = done(
        s.store
            .finish_assembly(rec.id, Ok(file(rec.id)), keep_until)
            .await
            .unwrap(),
    );
    assert_eq!(completed.status, Status::Completed);
    assert_eq!(completed.file, Some(file(rec.id)));
    assert_eq!(get(&s, rec.id).await.file, Some(file(rec.id)));
    let again = rejected(
        s.store
            .finish_assembly(rec.id, Ok(file(rec.id)), keep_until)
            .await
            .unwrap(),
    );
    assert_eq!(again.status, Status::Completed);
    assert_eq!(
        rejected(s.store.begin_assembly(rec.id).await.unwrap()).status,
        Status::Completed
    );

    // Completed files are kept: out of the index, never deleted as expired.
    let far = s.clock.now_ms() + 100 * TTL_MS;
    assert!(!s.store.expired(far, 100).await.unwrap().contains(&rec.id));
    assert!(s.store.delete_expired(rec.id, far).await.unwrap().is_none());
    assert_eq!(get(&s, rec.id).await.status, Status::Completed);

    assert!(matches!(
        s.store.begin_assembly(Uuid::new_v4()).await.unwrap(),
        Update::NotFound
    ));
}

async fn a_failed_assembly_is_kept_until_told(s: Subject) {
    let rec = assembling(&s).await;
    let failure = Failure {
        error: "digest_mismatch".into(),
        message: "not the announced file".into(),
        sha256: Some("1".repeat(64)),
    };
    let keep_until = rec.expires_at + 5 * TTL_MS;
    let failed = done(
        s.store
            .finish_assembly(rec.id, Err(failure.clone()), keep_until)
            .await
            .unwrap(),
    );
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.failure, Some(failure.clone()));
    assert_eq!(failed.expires_at, keep_until);
    assert_eq!(get(&s, rec.id).await.failure, Some(failure));
    // Still in the index, listed once its time has come, not before.
    assert!(!s
        .store
        .expired(keep_until - 1, 100)
        .await
        .unwrap()
        .contains(&rec.id));
    assert!(s
        .store
        .expired(keep_until, 100)
        .await
        .unwrap()
        .contains(&rec.id));
    assert!(s
        .store
        .delete_expired(rec.id, keep_until - 1)
        .await
        .unwrap()
        .is_none());
    let deleted = s.store.delete_expired(rec.id, keep_until).await.unwrap();
    assert_eq!(deleted.map(|r| r.status), Some(Status::Failed));
}

async fn an_abort_leaves_a_tombstone_unless_completed_or_assembling(s: Subject) {
    let rec = record(&s.clock, 2 * CHUNK);
    insert(&s, &rec).await;
    let until = s.clock.now_ms() + 2 * TTL_MS;
    let aborted = done(s.store.abort(rec.id, until).await.unwrap());
    assert_eq!(aborted.status, Status::Aborted);
    assert_eq!(aborted.expires_at, until);
    // Aborting twice is fine.
    assert_eq!(
        done(s.store.abort(rec.id, until).await.unwrap()).status,
        Status::Aborted
    );
    // The tombstone stays until its time, then the janitor may take it.
    assert!(!s
        .store
        .expired(until - 1, 100)
        .await
        .unwrap()
        .contains(&rec.id));
    s.clock.advance(Duration::from_millis(2 * TTL_MS as u64));
    let now = s.clock.now_ms();
    assert!(s.store.expired(now, 100).await.unwrap().contains(&rec.id));
    let deleted = s.store.delete_expired(rec.id, now).await.unwrap();
    assert_eq!(deleted.map(|r| r.status), Some(Status::Aborted));
    assert!(s.store.get_upload(rec.id).await.unwrap().is_none());

    let busy = assembling(&s).await;
    let refused = rejected(s.store.abort(busy.id, until).await.unwrap());
    assert_eq!(refused.status, Status::Assembling);
    done(
        s.store
            .finish_assembly(busy.id, Ok(file(busy.id)), until)
            .await
            .unwrap(),
    );
    let refused = rejected(s.store.abort(busy.id, until).await.unwrap());
    assert_eq!(refused.status, Status::Completed);

    assert!(matches!(
        s.store.abort(Uuid::new_v4(), until).await.unwrap(),
        Update::NotFound
    ));
}

async fn the_expiry_index_lists_expired_uploads_oldest_first(s: Subject) {
    let mut ids = Vec::new();
    for age in [3, 1, 2] {
        let mut rec = record(&s.clock, CHUNK);
        rec.expires_at = s.clock.now_ms() + age * 1000;
        insert(&s, &rec).await;
        ids.push((rec.expires_at, rec.id));
    }
    ids.sort();
    let now = s.clock.now_ms();
    assert_eq!(s.store.expired(now, 100).await.unwrap(), Vec::<Uuid>::new());
    // At or before now: the bound is inclusive.
    assert_eq!(
        s.store.expired(ids[0].0, 100).await.unwrap(),
        vec![ids[0].1]
    );
    let all: Vec<Uuid> = ids.iter().map(|(_, id)| *id).collect();
    assert_eq!(s.store.expired(now + 3000, 100).await.unwrap(), all);
    assert_eq!(
        s.store.expired(now + 3000, 2).await.unwrap(),
        all[..2].to_vec()
    );

    // A chunk that refreshes an upload moves it in the index.
    let first = get(&s, all[0]).await;
    s.clock.advance(Duration::from_millis(500));
    done(
        s.store
            .record_chunk(first.id, mark(&s.clock, &first, 0))
            .await
            .unwrap(),
    );
    assert_eq!(
        s.store.expired(now + 3000, 100).await.unwrap(),
        all[1..].to_vec()
    );
}

async fn only_a_still_expired_upload_is_deleted_with_its_key(s: Subject) {
    let mut rec = record(&s.clock, 2 * CHUNK);
    rec.idempotency_key = Some("v2:deadbeef".into());
    let first = IdempotencyRecord::new(rec.id, "digest", json!({"id": rec.id}));
    let inserted = s
        .store
        .insert_upload(&rec, Some(("v2:deadbeef", &first)))
        .await
        .unwrap();
    assert!(matches!(inserted, Insert::Created));
    let listed_at = rec.expires_at;
    assert_eq!(s.store.expired(listed_at, 10).await.unwrap(), vec![rec.id]);

    // Listed, then refreshed by a chunk before the janitor came: kept.
    s.clock.advance(Duration::from_millis(TTL_MS as u64 / 2));
    done(
        s.store
            .record_chunk(rec.id, mark(&s.clock, &rec, 0))
            .await
            .unwrap(),
    );
    assert!(s
        .store
        .delete_expired(rec.id, listed_at)
        .await
        .unwrap()
        .is_none());
    assert_eq!(get(&s, rec.id).await.received.count(), 1);
    assert!(s
        .store
        .idempotency_record("v2:deadbeef")
        .await
        .unwrap()
        .is_some());

    // Expired for real: deleted, its idempotency key with it.
    s.clock.advance(Duration::from_millis(TTL_MS as u64 + 1000));
    let now = s.clock.now_ms();
    let deleted = s
        .store
        .delete_expired(rec.id, now)
        .await
        .unwrap()
        .expect("deleted");
    assert_eq!(deleted.id, rec.id);
    assert!(s.store.get_upload(rec.id).await.unwrap().is_none());
    assert!(s
        .store
        .idempotency_record("v2:deadbeef")
        .await
        .unwrap()
        .is_none());
    assert!(!s.store.expired(now, 10).await.unwrap().contains(&rec.id));
    assert!(
        s.store.delete_expired(rec.id, now).await.unwrap().is_none(),
        "deleted twice"
    );
}

async fn a_completed_file_is_deleted_once_with_its_key(s: Subject) {
    // Only a completed upload is a file: others are left alone.
    let open = record(&s.clock, 2 * CHUNK);
    insert(&s, &open).await;
    assert_eq!(
        rejected(s.store.delete_file(open.id).await.unwrap()).status,
        Status::Uploading
    );
    let busy = assembling(&s).await;
    assert_eq!(
        rejected(s.store.delete_file(busy.id).await.unwrap()).status,
        Status::Assembling
    );
    assert_eq!(get(&s, busy.id).await.status, Status::Assembling);

    let mut rec = record(&s.clock, CHUNK);
    rec.idempotency_key = Some("v2:f11e".into());
    let first = IdempotencyRecord::new(rec.id, "digest", json!({"id": rec.id}));
    let inserted = s
        .store
        .insert_upload(&rec, Some(("v2:f11e", &first)))
        .await
        .unwrap();
    assert!(matches!(inserted, Insert::Created));
    done(
        s.store
            .record_chunk(rec.id, mark(&s.clock, &rec, 0))
            .await
            .unwrap(),
    );
    done(s.store.begin_assembly(rec.id).await.unwrap());
    let until = s.clock.now_ms() + TTL_MS;
    done(
        s.store
            .finish_assembly(rec.id, Ok(file(rec.id)), until)
            .await
            .unwrap(),
    );

    let deleted = done(s.store.delete_file(rec.id).await.unwrap());
    assert_eq!(deleted.status, Status::Completed);
    assert_eq!(deleted.file, Some(file(rec.id)));
    assert!(s.store.get_upload(rec.id).await.unwrap().is_none());
    assert!(s
        .store
        .idempotency_record("v2:f11e")
        .await
        .unwrap()
        .is_none());
    let far = s.clock.now_ms() + 100 * TTL_MS;
    assert!(!s.store.expired(far, 100).await.unwrap().contains(&rec.id));
    assert!(matches!(
        s.store.delete_file(rec.id).await.unwrap(),
        Update::NotFound
    ));
    assert!(matches!(
        s.store.delete_file(Uuid::new_v4()).await.unwrap(),
        Update::NotFound
    ));

    // Two deletes racing: one deletes, the other finds nothing.
    let raced = assembling(&s).await;
    done(
        s.store
            .finish_assembly(raced.id, Ok(file(raced.id)), until)
            .await
            .unwrap(),
    );
    let (a, b) = futures::join!(s.store.delete_file(raced.id), s.store.delete_file(raced.id));
    let outcomes = [a.unwrap(), b.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|u| matches!(u, Update::Done(_)))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.iter().any(|u| matches!(u, Update::NotFound)));
}

async fn a_file_with_a_retention_is_listed_and_deleted_when_it_ends(s: Subject) {
    // Retention shorter than the upload's own expiry: the file's end rules.
    let short = assembling(&s).await;
    let until = s.clock.now_ms() + TTL_MS / 2;
    let retained = FileInfo {
        expires_at: Some(until),
        ..file(short.id)
    };
    let completed = done(
        s.store
            .finish_assembly(short.id, Ok(retained.clone()), until)
            .await
            .unwrap(),
    );
    assert_eq!(completed.expires_at, until);
    assert_eq!(get(&s, short.id).await.file, Some(retained));
    // One kept until deleted, beside it.
    let forever = assembling(&s).await;
    done(
        s.store
            .finish_assembly(forever.id, Ok(file(forever.id)), until)
            .await
            .unwrap(),
    );

    assert!(!s
        .store
        .expired(until - 1, 100)
        .await
        .unwrap()
        .contains(&short.id));
    assert!(s
        .store
        .delete_expired(short.id, until - 1)
        .await
        .unwrap()
        .is_none());
    let far = s.clock.now_ms() + 100 * TTL_MS;
    let listed = s.store.expired(far, 100).await.unwrap();
    assert!(listed.contains(&short.id), "{listed:?}");
    assert!(!listed.contains(&forever.id), "{listed:?}");

    let deleted = s
        .store
        .delete_expired(short.id, until)
        .await
        .unwrap()
        .expect("deleted at the end of its retention");
    assert_eq!(deleted.status, Status::Completed);
    assert!(s.store.get_upload(short.id).await.unwrap().is_none());
    assert!(!s.store.expired(far, 100).await.unwrap().contains(&short.id));
    assert!(s
        .store
        .delete_expired(forever.id, far)
        .await
        .unwrap()
        .is_none());
    assert_eq!(get(&s, forever.id).await.status, Status::Completed);
}

async fn a_lease_is_exclusive_until_released(s: Subject) {
    let id = Uuid::new_v4();
    let ttl = Duration::from_secs(10);
    let chunk = |index| LeaseOf::Chunk { upload: id, index };
    let held = s
        .store
        .try_lease(chunk(3), ttl)
        .await
        .unwrap()
        .expect("free");
    assert_eq!(held.of, chunk(3));
    assert!(
        s.store.try_lease(chunk(3), ttl).await.unwrap().is_none(),
        "taken twice"
    );
    // Each thing guarded has a lease of its own.
    let others = [
        chunk(4),
        LeaseOf::Chunk {
            upload: Uuid::new_v4(),
            index: 3,
        },
        LeaseOf::Complete(id),
        LeaseOf::Create("v2:abc".into()),
    ];
    for of in others.clone() {
        let lease = s.store.try_lease(of.clone(), ttl).await.unwrap();
        assert!(lease.is_some(), "{of} is not free");
        assert!(
            s.store.try_lease(of.clone(), ttl).await.unwrap().is_none(),
            "{of} twice"
        );
    }
    s.store.release(&held).await.unwrap();
    let again = s
        .store
        .try_lease(chunk(3), ttl)
        .await
        .unwrap()
        .expect("released");
    assert_ne!(again.token, held.token);
}

async fn a_lease_is_renewed_and_released_only_by_its_holder(s: Subject) {
    let of = LeaseOf::Complete(Uuid::new_v4());
    let ttl = Duration::from_secs(10);
    let held = s
        .store
        .try_lease(of.clone(), ttl)
        .await
        .unwrap()
        .expect("free");
    let mut impostor = held.clone();
    impostor.token = "not-the-holder".into();
    assert!(!s.store.renew(&impostor, ttl).await.unwrap());
    s.store.release(&impostor).await.unwrap();
    assert!(
        s.store.try_lease(of.clone(), ttl).await.unwrap().is_none(),
        "released by another"
    );

    assert!(s.store.renew(&held, ttl).await.unwrap());
    s.store.release(&held).await.unwrap();
    // Released: the old holder can neither renew nor release the next one's.
    let next = s
        .store
        .try_lease(of.clone(), ttl)
        .await
        .unwrap()
        .expect("free again");
    assert!(!s.store.renew(&held, ttl).await.unwrap());
    s.store.release(&held).await.unwrap();
    assert!(s.store.try_lease(of, ttl).await.unwrap().is_none());
    assert!(s.store.renew(&next, ttl).await.unwrap());
}

async fn a_lease_whose_holder_died_lapses(s: Subject) {
    let of = LeaseOf::Create("v2:lapse".into());
    // Redis lapses leases by its own clock (PX): a short real TTL there.
    let ttl = match s.backend {
        Backend::Embedded => Duration::from_secs(10),
        Backend::Redis => Duration::from_secs(1),
    };
    let dead = s
        .store
        .try_lease(of.clone(), ttl)
        .await
        .unwrap()
        .expect("free");
    assert!(s.store.try_lease(of.clone(), ttl).await.unwrap().is_none());
    // A renewal keeps it for another ttl from now.
    s.clock.advance(ttl / 2);
    assert!(s.store.renew(&dead, ttl).await.unwrap());
    s.clock.advance(ttl * 3 / 4);
    assert!(
        s.store.try_lease(of.clone(), ttl).await.unwrap().is_none(),
        "renewal ignored"
    );

    s.clock.advance(ttl);
    let next = until_some(|| s.store.try_lease(of.clone(), ttl)).await;
    // The dead holder, back, finds it lost and cannot take it from the next.
    assert!(!s.store.renew(&dead, ttl).await.unwrap());
    s.store.release(&dead).await.unwrap();
    assert!(s.store.try_lease(of.clone(), ttl).await.unwrap().is_none());
    s.store.release(&next).await.unwrap();
}

async fn a_chunk_lease_comes_with_the_record_and_goes_with_the_count(s: Subject) {
    let rec = record(&s.clock, 2 * CHUNK);
    insert(&s, &rec).await;
    let ttl = Duration::from_secs(10);
    let (lease, got) = s
        .store
        .lease_and_get(rec.id, 1, ttl)
        .await
        .unwrap()
        .expect("free");
    assert_eq!(
        lease.of,
        LeaseOf::Chunk {
            upload: rec.id,
            index: 1
        }
    );
    assert_eq!(got.map(|r| r.id), Some(rec.id));
    assert!(
        s.store
            .lease_and_get(rec.id, 1, ttl)
            .await
            .unwrap()
            .is_none(),
        "held"
    );

    let counted = s
        .store
        .record_chunk_and_release(rec.id, mark(&s.clock, &rec, 1), &lease)
        .await
        .unwrap();
    assert_eq!(done(counted).received.count(), 1);
    // Released with the count, and the next holder reads the count.
    let (next, got) = s
        .store
        .lease_and_get(rec.id, 1, ttl)
        .await
        .unwrap()
        .expect("released");
    assert!(got.expect("the upload").received.contains(1));
    s.store.release(&next).await.unwrap();

    // Of an unknown upload: the lease, and no record.
    let unknown = Uuid::new_v4();
    let (lease, got) = s
        .store
        .lease_and_get(unknown, 0, ttl)
        .await
        .unwrap()
        .expect("free");
    assert!(got.is_none());
    // A refused count releases the lease too.
    let refused = s
        .store
        .record_chunk_and_release(unknown, mark(&s.clock, &rec, 0), &lease)
        .await
        .unwrap();
    assert!(matches!(refused, Update::NotFound));
    let chunk = LeaseOf::Chunk {
        upload: unknown,
        index: 0,
    };
    assert!(
        s.store.try_lease(chunk, ttl).await.unwrap().is_some(),
        "not released"
    );
}

async fn an_idempotency_key_creates_once_when_inserts_race(s: Subject) {
    let key = "v2:race";
    let mut a = record(&s.clock, CHUNK);
    let mut b = record(&s.clock, CHUNK);
    a.idempotency_key = Some(key.into());
    b.idempotency_key = Some(key.into());
    let first_a = IdempotencyRecord::new(a.id, "digest-a", json!({"id": a.id}));
    let first_b = IdempotencyRecord::new(b.id, "digest-b", json!({"id": b.id}));
    assert!(s.store.idempotency_record(key).await.unwrap().is_none());

    let (ra, rb) = tokio::join!(
        s.store.insert_upload(&a, Some((key, &first_a))),
        s.store.insert_upload(&b, Some((key, &first_b))),
    );
    let (winner, loser, kept) = match (ra.unwrap(), rb.unwrap()) {
        (Insert::Created, Insert::Existing(kept)) => (&a, &b, kept),
        (Insert::Existing(kept), Insert::Created) => (&b, &a, kept),
        other => panic!("expected exactly one create, got {other:?}"),
    };
    let expected = if winner.id == a.id {
        &first_a
    } else {
        &first_b
    };
    assert_eq!(&kept, expected, "the loser must get the winner's record");
    assert_eq!(
        s.store.idempotency_record(key).await.unwrap().as_ref(),
        Some(expected)
    );
    assert!(s.store.get_upload(winner.id).await.unwrap().is_some());
    assert!(
        s.store.get_upload(loser.id).await.unwrap().is_none(),
        "the loser was inserted"
    );
    assert_eq!(
        kept.replay(expected.request.as_deref().unwrap()),
        Some(&expected.answer)
    );
    assert_eq!(kept.replay("another request"), None);
}

async fn use_counts_add_up_and_lapse(s: Subject) {
    let now = s.clock.now_ms();
    let later = now + TTL_MS;
    assert_eq!(s.store.add_use("t", 1, later).await.unwrap(), 1);
    assert_eq!(s.store.add_use("t", 1, later).await.unwrap(), 2);
    assert_eq!(s.store.add_use("t", -1, later).await.unwrap(), 1);
    // A use given back never takes the count below zero.
    assert_eq!(s.store.add_use("u", -1, later).await.unwrap(), 0);
    assert_eq!(s.store.add_use("u", 1, later).await.unwrap(), 1);
    // Racing uses are all counted.
    let racing = (0..10).map(|_| s.store.add_use("r", 1, later));
    let mut counts: Vec<u64> = futures::future::join_all(racing)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=10).collect::<Vec<_>>());
    // A count that has lapsed starts again.
    assert_eq!(s.store.add_use("old", 1, now - 1).await.unwrap(), 1);
    assert_eq!(s.store.add_use("old", 1, now - 1).await.unwrap(), 1);
    // Purging forgets lapsed counts only (a backend whose keys expire by
    // themselves may have nothing left to purge).
    s.store.purge_lapsed_uses(now).await.unwrap();
    assert_eq!(s.store.add_use("old", 1, now - 1).await.unwrap(), 1);
    assert_eq!(s.store.add_use("t", 1, later).await.unwrap(), 2);
}

async fn a_rate_bucket_allows_its_burst_then_says_how_long_to_wait(s: Subject) {
    let rate = Rate {
        interval: Duration::from_secs(1),
        burst: 3,
    };
    for _ in 0..3 {
        assert_eq!(
            s.store.take_token("create:ip:1.2.3.4", rate).await.unwrap(),
            None
        );
    }
    let wait = s
        .store
        .take_token("create:ip:1.2.3.4", rate)
        .await
        .unwrap()
        .expect("the burst is spent");
    assert!(
        wait > Duration::from_millis(500) && wait <= rate.interval,
        "{wait:?}"
    );
    // A refused request takes nothing: the wait does not grow.
    let again = s
        .store
        .take_token("create:ip:1.2.3.4", rate)
        .await
        .unwrap()
        .unwrap();
    assert!(again <= wait, "{again:?} > {wait:?}");
    // Another bucket is another caller.
    assert_eq!(
        s.store.take_token("create:ip:5.6.7.8", rate).await.unwrap(),
        None
    );
    assert_eq!(
        s.store.take_token("chunk:ip:1.2.3.4", rate).await.unwrap(),
        None
    );
}

async fn a_rate_bucket_is_never_overdrawn_by_racing_takers(s: Subject) {
    let rate = Rate {
        interval: Duration::from_secs(3600),
        burst: 5,
    };
    let takes = (0..40).map(|_| s.store.take_token("race", rate));
    let allowed = futures::future::join_all(takes)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_none())
        .count();
    assert_eq!(allowed, 5);
}

async fn a_rate_bucket_refills_with_time(s: Subject) {
    // Redis refills by its own clock (TIME): a short real interval there.
    let interval = match s.backend {
        Backend::Embedded => Duration::from_secs(10),
        Backend::Redis => Duration::from_secs(1),
    };
    let rate = Rate { interval, burst: 2 };
    for _ in 0..2 {
        assert_eq!(s.store.take_token("refill", rate).await.unwrap(), None);
    }
    let wait = s
        .store
        .take_token("refill", rate)
        .await
        .unwrap()
        .expect("spent");
    s.clock.advance(wait);
    // One interval refills one request, not the burst.
    until_some(|| async {
        Ok::<_, tranche::state::StoreError>(
            s.store
                .take_token("refill", rate)
                .await?
                .is_none()
                .then_some(()),
        )
    })
    .await;
    assert!(s.store.take_token("refill", rate).await.unwrap().is_some());
}

/// Asks `attempt` until it gives something: at once with the embedded store,
/// whose time the test moved; within a bounded poll on Redis's own clock.
async fn an_offset_moves_only_from_where_it_stands(s: Subject) {
    let rec = sequential(&s.clock, Some(3000));
    insert(&s, &rec).await;
    let read = get(&s, rec.id).await;
    assert_eq!(read.sequential, rec.sequential, "read back as written");
    assert_eq!(read.size, 3000);

    let first = moved(&s.clock, 0, 1000, None);
    let slid_to = first.expires_at;
    let after = done(s.store.advance_offset(rec.id, first).await.unwrap());
    assert_eq!(after.received_offset(), 1000);
    assert_eq!(after.bytes_received, 1000);
    assert_eq!(after.expires_at, slid_to, "the expiry slides");
    // From anywhere but where it stands, or past the length: refused.
    let stale = rejected(
        s.store
            .advance_offset(rec.id, moved(&s.clock, 0, 500, None))
            .await
            .unwrap(),
    );
    assert_eq!(stale.received_offset(), 1000);
    rejected(
        s.store
            .advance_offset(rec.id, moved(&s.clock, 1000, 3001, None))
            .await
            .unwrap(),
    );
    rejected(
        s.store
            .advance_offset(rec.id, moved(&s.clock, 1000, 900, None))
            .await
            .unwrap(),
    );
    rejected(
        s.store
            .advance_offset(rec.id, moved(&s.clock, 1000, 2000, Some(2500)))
            .await
            .unwrap(),
    );
    assert!(
        matches!(
            s.store.begin_assembly(rec.id).await.unwrap(),
            Update::Rejected(_)
        ),
        "not every byte is there"
    );
    // The running hash never passes the offset.
    let mut past = HashState::default();
    past.update(&[1; 1001]);
    assert!(!s.store.advance_hash(rec.id, 0, past).await.unwrap());

    let whole = done(
        s.store
            .advance_offset(rec.id, moved(&s.clock, 1000, 3000, Some(3000)))
            .await
            .unwrap(),
    );
    assert!(whole.is_fully_received());
    assert_eq!(get(&s, rec.id).await.received_offset(), 3000);
    assert_eq!(
        done(s.store.begin_assembly(rec.id).await.unwrap()).status,
        Status::Assembling
    );
    rejected(
        s.store
            .advance_offset(rec.id, moved(&s.clock, 3000, 3000, None))
            .await
            .unwrap(),
    );

    // An upload of chunks has no offset to move; an unknown one is not found.
    let chunked = record(&s.clock, 10);
    insert(&s, &chunked).await;
    rejected(
        s.store
            .advance_offset(chunked.id, moved(&s.clock, 0, 5, None))
            .await
            .unwrap(),
    );
    assert!(matches!(
        s.store
            .advance_offset(Uuid::new_v4(), moved(&s.clock, 0, 5, None))
            .await
            .unwrap(),
        Update::NotFound
    ));
    // Nor does an expired one.
    let late = sequential(&s.clock, Some(10));
    insert(&s, &late).await;
    s.clock.advance(Duration::from_millis(TTL_MS as u64 + 1));
    rejected(
        s.store
            .advance_offset(late.id, moved(&s.clock, 0, 5, None))
            .await
            .unwrap(),
    );
}

async fn a_deferred_length_is_set_once_and_bounds_the_offset(s: Subject) {
    let rec = sequential(&s.clock, None);
    insert(&s, &rec).await;
    let read = get(&s, rec.id).await;
    assert!(read.sequential.as_ref().unwrap().length_deferred);
    assert!(!read.is_fully_received());

    let some = done(
        s.store
            .advance_offset(rec.id, moved(&s.clock, 0, 700, None))
            .await
            .unwrap(),
    );
    assert!(some.sequential.as_ref().unwrap().length_deferred);
    // A length shorter than what is there cannot be set.
    rejected(
        s.store
            .advance_offset(rec.id, moved(&s.clock, 700, 700, Some(600)))
            .await
            .unwrap(),
    );
    let set = done(
        s.store
            .advance_offset(rec.id, moved(&s.clock, 700, 800, Some(1000)))
            .await
            .unwrap(),
    );
    assert_eq!(set.size, 1000);
    assert!(!set.sequential.as_ref().unwrap().length_deferred);
    let read = get(&s, rec.id).await;
    assert_eq!((read.size, read.received_offset()), (1000, 800));
    assert!(!read.sequential.as_ref().unwrap().length_deferred);
    // Once set, it stays.
    rejected(
        s.store
            .advance_offset(rec.id, moved(&s.clock, 800, 900, Some(900)))
            .await
            .unwrap(),
    );
    rejected(
        s.store
            .advance_offset(rec.id, moved(&s.clock, 800, 1001, None))
            .await
            .unwrap(),
    );
    let whole = done(
        s.store
            .advance_offset(rec.id, moved(&s.clock, 800, 1000, None))
            .await
            .unwrap(),
    );
    assert!(whole.is_fully_received());
}

async fn of_racing_moves_from_one_offset_exactly_one_wins(s: Subject) {
    let rec = sequential(&s.clock, Some(100));
    insert(&s, &rec).await;
    let moves = (1..=8u64).map(|n| {
        let store = s.store.clone();
        let mark = moved(&s.clock, 0, n * 10, None);
        async move { store.advance_offset(rec.id, mark).await.unwrap() }
    });
    let outcomes = futures::future::join_all(moves).await;
    let won: Vec<u64> = outcomes
        .iter()
        .filter_map(|u| match u {
            Update::Done(r) => Some(r.received_offset()),
            _ => None,
        })
        .collect();
    assert_eq!(won.len(), 1, "exactly one move applies: {outcomes:?}");
    assert_eq!(get(&s, rec.id).await.received_offset(), won[0]);
}

async fn until_some<T, E: std::fmt::Debug, F>(attempt: impl Fn() -> F) -> T
where
    F: std::future::Future<Output = Result<Option<T>, E>>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(found) = attempt().await.unwrap() {
            return found;
        }
        assert!(Instant::now() < deadline, "nothing lapsed within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn usage(pending: u64, stored: u64) -> Usage {
    Usage { pending, stored }
}

async fn totals(s: &Subject, owner: &str) -> Usage {
    let rows = s.store.usage(Some(owner)).await.unwrap();
    rows.first().map_or(Usage::default(), |(_, u)| *u)
}

async fn usage_is_charged_within_limits_settled_and_released_once(s: Subject) {
    let limits = QuotaLimits {
        max_stored: Some(5_000),
        max_pending: Some(4_000),
    };
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let charge = |id, kind, size| s.store.charge_usage("sub:alice", id, kind, size, limits);
    assert_eq!(
        charge(a, UsageKind::Pending, 3_000).await.unwrap(),
        Charge::Charged(usage(0, 0))
    );
    // Charging the same upload again adds nothing.
    assert_eq!(
        charge(a, UsageKind::Pending, 3_000).await.unwrap(),
        Charge::Charged(usage(3_000, 0))
    );
    assert_eq!(
        charge(b, UsageKind::Pending, 1_001).await.unwrap(),
        Charge::Refused {
            usage: usage(3_000, 0),
            quota: Quota::Pending
        }
    );
    assert_eq!(totals(&s, "sub:alice").await, usage(3_000, 0));
    // Completed: stored now; settling twice moves it once.
    s.store.settle_usage("sub:alice", a).await.unwrap();
    s.store.settle_usage("sub:alice", a).await.unwrap();
    assert_eq!(totals(&s, "sub:alice").await, usage(0, 3_000));
    assert_eq!(
        charge(b, UsageKind::Stored, 2_000).await.unwrap(),
        Charge::Charged(usage(0, 3_000))
    );
    // Pending bytes count against the stored quota too.
    assert_eq!(
        charge(c, UsageKind::Pending, 1).await.unwrap(),
        Charge::Refused {
            usage: usage(0, 5_000),
            quota: Quota::Stored
        }
    );
    // Settling a stored upload changes nothing; releasing frees it, once.
    s.store.settle_usage("sub:alice", b).await.unwrap();
    s.store.release_usage("sub:alice", a).await.unwrap();
    s.store.release_usage("sub:alice", a).await.unwrap();
    assert_eq!(totals(&s, "sub:alice").await, usage(0, 2_000));
    s.store
        .release_usage("sub:alice", Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(totals(&s, "sub:alice").await, usage(0, 2_000));
    // A zero-byte file is an upload like any other.
    let empty = Uuid::new_v4();
    let zero = charge(empty, UsageKind::Pending, 0).await.unwrap();
    assert_eq!(zero, Charge::Charged(usage(0, 2_000)));
    s.store.settle_usage("sub:alice", empty).await.unwrap();
    s.store.release_usage("sub:alice", empty).await.unwrap();
    assert_eq!(totals(&s, "sub:alice").await, usage(0, 2_000));
    // Without limits anything goes; every owner is listed, sorted.
    let none = QuotaLimits::default();
    let big = s
        .store
        .charge_usage("key:0a1b", c, UsageKind::Pending, u64::from(u32::MAX), none)
        .await
        .unwrap();
    assert_eq!(big, Charge::Charged(usage(0, 0)));
    let all = s.store.usage(None).await.unwrap();
    assert_eq!(
        all,
        vec![
            ("key:0a1b".to_string(), usage(u64::from(u32::MAX), 0)),
            ("sub:alice".to_string(), usage(0, 2_000)),
        ]
    );
    assert!(s.store.usage(Some("sub:nobody")).await.unwrap().is_empty());
}

async fn racing_charges_never_pass_a_quota(s: Subject) {
    let limits = QuotaLimits {
        max_stored: None,
        max_pending: Some(1_000),
    };
    let charges = (0..25).map(|_| {
        s.store
            .charge_usage("sub:race", Uuid::new_v4(), UsageKind::Pending, 100, limits)
    });
    let results = futures::future::join_all(charges).await;
    let charged = results
        .iter()
        .filter(|r| matches!(r, Ok(Charge::Charged(_))))
        .count();
    assert_eq!(charged, 10, "{results:?}");
    assert_eq!(totals(&s, "sub:race").await, usage(1_000, 0));
}

async fn the_content_index_names_every_file_until_removed(s: Subject) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let key = format!("g:{}:42", "ab".repeat(32));
    assert!(s.store.find_content(&key, 8).await.unwrap().is_empty());
    s.store.index_content(&key, a).await.unwrap();
    s.store.index_content(&key, a).await.unwrap();
    s.store.index_content(&key, b).await.unwrap();
    let mut found = s.store.find_content(&key, 8).await.unwrap();
    found.sort();
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(found, both);
    assert_eq!(s.store.find_content(&key, 1).await.unwrap().len(), 1);
    // Removing one leaves the other; removing it again is fine.
    s.store.unindex_content(&key, a).await.unwrap();
    s.store.unindex_content(&key, a).await.unwrap();
    assert_eq!(s.store.find_content(&key, 8).await.unwrap(), vec![b]);
    assert!(s.store.find_content("g:other", 8).await.unwrap().is_empty());
    s.store.unindex_content(&key, b).await.unwrap();
    assert!(s.store.find_content(&key, 8).await.unwrap().is_empty());
}

async fn completed_ids_lists_completed_uploads_only(s: Subject) {
    let finished = assembling(&s).await;
    done(
        s.store
            .finish_assembly(finished.id, Ok(file(finished.id)), 0)
            .await
            .unwrap(),
    );
    let unfinished = record(&s.clock, CHUNK);
    insert(&s, &unfinished).await;
    let building = assembling(&s).await;
    let ids = s.store.completed_ids().await.unwrap();
    assert_eq!(ids, vec![finished.id]);
    assert!(!ids.contains(&building.id));
    // A deleted file is listed no more.
    done(s.store.delete_file(finished.id).await.unwrap());
    assert!(s.store.completed_ids().await.unwrap().is_empty());
}

/// The outbox as (kind, upload, seq), oldest first.
async fn outbox(s: &Subject) -> Vec<(EventKind, Uuid, u64)> {
    let entries = s.store.pending_events(100).await.unwrap();
    assert_eq!(s.store.outbox_len().await.unwrap(), entries.len() as u64);
    entries
        .iter()
        .map(|e| (e.event.kind, e.event.upload, e.event.seq))
        .collect()
}

async fn transitions_write_their_events_in_order(s: Subject) {
    assert!(outbox(&s).await.is_empty());
    let a = assembling(&s).await;
    let b = record(&s.clock, CHUNK);
    insert(&s, &b).await;
    done(
        s.store
            .abort(b.id, s.clock.now_ms() + TTL_MS)
            .await
            .unwrap(),
    );
    // Aborted twice: one event.
    done(
        s.store
            .abort(b.id, s.clock.now_ms() + TTL_MS)
            .await
            .unwrap(),
    );
    done(
        s.store
            .finish_assembly(a.id, Ok(file(a.id)), s.clock.now_ms())
            .await
            .unwrap(),
    );
    // Rejected transitions write nothing.
    rejected(s.store.abort(a.id, s.clock.now_ms()).await.unwrap());
    rejected(s.store.delete_file(b.id).await.unwrap());
    done(s.store.delete_file(a.id).await.unwrap());
    use EventKind::*;
    assert_eq!(
        outbox(&s).await,
        vec![
            (Created, a.id, 1),
            (Created, b.id, 1),
            (Aborted, b.id, 2),
            (Completed, a.id, 2),
            (FileDeleted, a.id, 3),
        ]
    );
    let entries = s.store.pending_events(100).await.unwrap();
    let created = &entries[0].event;
    assert_eq!(created.record.filename, "conformance.bin");
    assert_eq!(created.record.metadata["k"], "v");
    assert_eq!(created.record.status, Status::Uploading);
    let completed = &entries[3].event;
    assert_eq!(completed.record.status, Status::Completed);
    assert_eq!(completed.record.file, Some(file(a.id)));
    assert_eq!(completed.record.size, 2 * CHUNK);
    assert_eq!(entries[4].event.record.file, Some(file(a.id)));
    assert_eq!(entries[2].event.record.status, Status::Aborted);
    let ids: std::collections::HashSet<Uuid> = entries.iter().map(|e| e.event.id()).collect();
    assert_eq!(ids.len(), 5, "every event has its own id");
    let again = s.store.pending_events(100).await.unwrap();
    assert_eq!(again[3].event.id(), completed.id(), "an id is stable");
}

async fn an_upload_that_failed_or_expired_tells_it_once(s: Subject) {
    let failed = assembling(&s).await;
    let failure = Failure {
        error: "digest_mismatch".into(),
        message: "not the announced SHA-256".into(),
        sha256: None,
    };
    done(
        s.store
            .finish_assembly(failed.id, Err(failure.clone()), s.clock.now_ms())
            .await
            .unwrap(),
    );
    let expired = record(&s.clock, CHUNK);
    insert(&s, &expired).await;
    s.clock.advance(Duration::from_millis(2 * TTL_MS as u64));
    let now = s.clock.now_ms();
    assert!(s
        .store
        .delete_expired(expired.id, now)
        .await
        .unwrap()
        .is_some());
    // The failed upload's tombstone goes quietly: it told its end already.
    assert!(s
        .store
        .delete_expired(failed.id, now)
        .await
        .unwrap()
        .is_some());
    use EventKind::*;
    assert_eq!(
        outbox(&s).await,
        vec![
            (Created, failed.id, 1),
            (Failed, failed.id, 2),
            (Created, expired.id, 1),
            (Expired, expired.id, 2),
        ]
    );
    let entries = s.store.pending_events(100).await.unwrap();
    assert_eq!(entries[1].event.record.failure, Some(failure));
    assert_eq!(entries[3].event.record.status, Status::Uploading);
}

async fn an_outbox_entry_goes_only_when_acknowledged(s: Subject) {
    let recs: Vec<UploadRecord> = (0..3).map(|_| record(&s.clock, CHUNK)).collect();
    for rec in &recs {
        insert(&s, rec).await;
    }
    let first = s.store.pending_events(2).await.unwrap();
    assert_eq!(first.len(), 2, "at most the limit");
    s.store.ack_event(&first[0].position).await.unwrap();
    // Acknowledged twice: nothing more goes.
    s.store.ack_event(&first[0].position).await.unwrap();
    let left: Vec<Uuid> = outbox(&s).await.iter().map(|e| e.1).collect();
    assert_eq!(left, vec![recs[1].id, recs[2].id]);
    for entry in s.store.pending_events(10).await.unwrap() {
        s.store.ack_event(&entry.position).await.unwrap();
    }
    assert!(outbox(&s).await.is_empty());
    // A new upload's events carry on after them.
    let later = record(&s.clock, CHUNK);
    insert(&s, &later).await;
    assert_eq!(outbox(&s).await, vec![(EventKind::Created, later.id, 1)]);
}

async fn progress_is_told_at_most_once_per_interval(s: Subject) {
    let every = OutboxSettings {
        progress_ms: Some(30_000),
        ..OUTBOX
    };
    let store = s.store.clone().with_outbox(every).await.unwrap();
    let rec = record(&s.clock, 3 * CHUNK);
    insert(&s, &rec).await;
    let tus = sequential(&s.clock, Some(2 * CHUNK));
    insert(&s, &tus).await;
    done(
        store
            .record_chunk(rec.id, mark(&s.clock, &rec, 0))
            .await
            .unwrap(),
    );
    // Within the interval, and a chunk counted twice: nothing more.
    done(
        store
            .record_chunk(rec.id, mark(&s.clock, &rec, 1))
            .await
            .unwrap(),
    );
    done(
        store
            .record_chunk(rec.id, mark(&s.clock, &rec, 1))
            .await
            .unwrap(),
    );
    done(
        store
            .advance_offset(tus.id, moved(&s.clock, 0, 100, None))
            .await
            .unwrap(),
    );
    done(
        store
            .advance_offset(tus.id, moved(&s.clock, 100, 200, None))
            .await
            .unwrap(),
    );
    use EventKind::*;
    assert_eq!(
        outbox(&s).await,
        vec![
            (Created, rec.id, 1),
            (Created, tus.id, 1),
            (Progress, rec.id, 2),
            (Progress, tus.id, 2),
        ]
    );
    let entries = s.store.pending_events(10).await.unwrap();
    assert_eq!(entries[2].event.record.bytes_received, CHUNK);
    assert_eq!(entries[3].event.record.bytes_received, 100);
    if s.backend == Backend::Embedded {
        // Redis's own clock decides there; the embedded store's is the test's.
        s.clock.advance(Duration::from_secs(31));
        done(
            store
                .record_chunk(rec.id, mark(&s.clock, &rec, 2))
                .await
                .unwrap(),
        );
        assert_eq!(outbox(&s).await[4], (Progress, rec.id, 3));
    }
}

/// Embedded only: Redis trims its stream approximately (`MAXLEN ~`).
#[tokio::test]
async fn the_embedded_outbox_drops_its_oldest_past_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::adjustable();
    let store = EmbeddedStore::open(
        &dir.path().join("state.redb"),
        Durability::Full,
        clock.clone(),
    )
    .unwrap()
    .with_outbox(OutboxSettings {
        max_len: 2,
        progress_ms: None,
    });
    let recs: Vec<UploadRecord> = (0..3).map(|_| record(&clock, CHUNK)).collect();
    for rec in &recs {
        store.insert_upload(rec, None).await.unwrap();
    }
    let kept: Vec<Uuid> = store
        .pending_events(10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.upload)
        .collect();
    assert_eq!(kept, vec![recs[1].id, recs[2].id]);
    assert!(tranche::events::DROPPED.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}

async fn processing_reports_are_kept_on_completed_uploads_and_numbered(s: Subject) {
    use tranche::wire::{Processing, ProcessingState};
    let report = |state, progress| Processing {
        state,
        progress,
        message: Some("step".into()),
        result: Some(json!({"pages": [], "meta": {}})),
        updated_at: "2026-12-04T10:00:00.000Z".into(),
        revision: 0,
    };
    let building = assembling(&s).await;
    let before = rejected(
        s.store
            .set_processing(building.id, report(ProcessingState::Queued, None))
            .await
            .unwrap(),
    );
    assert_eq!(before.processing, None);
    assert!(matches!(
        s.store
            .set_processing(Uuid::new_v4(), report(ProcessingState::Queued, None))
            .await
            .unwrap(),
        Update::NotFound
    ));
    done(
        s.store
            .finish_assembly(building.id, Ok(file(building.id)), 0)
            .await
            .unwrap(),
    );
    let first = done(
        s.store
            .set_processing(building.id, report(ProcessingState::Queued, None))
            .await
            .unwrap(),
    );
    assert_eq!(first.processing.as_ref().unwrap().revision, 1);
    let second = report(ProcessingState::Processing, Some(0.25));
    let kept = done(
        s.store
            .set_processing(building.id, second.clone())
            .await
            .unwrap(),
    );
    let expected = Processing {
        revision: 2,
        ..second
    };
    assert_eq!(kept.processing.as_ref(), Some(&expected));
    // Read back as kept, and the rest of the record untouched.
    let read = get(&s, building.id).await;
    assert_eq!(read.processing, Some(expected));
    assert_eq!(read.status, Status::Completed);
    assert_eq!(read.file, Some(file(building.id)));
}

async fn a_moved_offset_moves_the_running_hash_in_the_same_step(s: Subject) {
    let rec = sequential(&s.clock, Some(3000));
    insert(&s, &rec).await;
    let mut first = HashState::default();
    first.update(&[1; 1000]);
    let mut second = first.clone();
    second.update(&[2; 1000]);

    // From where the hash does not stand: the offset moves, the hash stays.
    let mut wrong = moved(&s.clock, 0, 1000, None);
    wrong.hash = Some((500, first.clone()));
    let got = done(s.store.advance_offset(rec.id, wrong).await.unwrap());
    assert_eq!(got.received_offset(), 1000);
    assert_eq!(
        got.hash,
        HashState::default(),
        "hash moved from the wrong length"
    );

    // Past the new offset: the hash stays too.
    let mut ahead = moved(&s.clock, 1000, 1500, None);
    ahead.hash = Some((0, second.clone()));
    let got = done(s.store.advance_offset(rec.id, ahead).await.unwrap());
    assert_eq!(got.hash, HashState::default(), "hash moved past the offset");

    let mut caught_up = moved(&s.clock, 1500, 2000, None);
    caught_up.hash = Some((0, second.clone()));
    let got = done(s.store.advance_offset(rec.id, caught_up).await.unwrap());
    assert_eq!(got.hash, second, "the answer carries the hash moved");
    assert_eq!(get(&s, rec.id).await.hash, second);

    // A refused move moves no hash either.
    let mut stale = moved(&s.clock, 0, 2500, None);
    let mut longer = second.clone();
    longer.update(&[3; 500]);
    stale.hash = Some((2000, longer));
    let refused = s.store.advance_offset(rec.id, stale).await.unwrap();
    assert!(matches!(refused, Update::Rejected(_)), "{refused:?}");
    assert_eq!(get(&s, rec.id).await.hash, second);
}
