//! The Redis state backend: several tranche instances share uploads through
//! one Redis, which is what production deployments with more than one node run.
//!
//! Keys, with the configured prefix `P` (default `tranche:`):
//! - `P{<id>}:meta`: a hash with the record. `rec` is the whole record as
//!   written at create (JSON); the fields that change (`status`, `bytes`,
//!   `expires`, `hash`, `hash_len`, `file`, `failure`) are kept beside it so that
//!   Lua scripts update them without decoding JSON.
//! - `P{<id>}:chunks`: the received-chunk bitmap (`SETBIT`/`BITCOUNT`).
//! - `P{<id>}:lease:chunk:<index>`, `P{<id>}:lease:complete`: the leases of
//!   one upload (`SET NX PX`, released by token); `Please:create:<key>`: the
//!   lease of a create with an `Idempotency-Key`.
//! - `Pexpiry`: a sorted set of upload ids by `expires_at`, the janitor's index.
//! - `Pidem:<key>`: what an `Idempotency-Key` keeps ([`IdempotencyRecord`]).
//! - `Prate:<bucket>`: a rate bucket (GCRA), see `RATE_LIMIT`.
//! - `Puses:<token>`: the use count of a token with `max_uploads`.
//!
//! The keys of one upload share a hash tag, so each state transition is one
//! Lua script over keys of one slot (atomic, and valid on Redis Cluster). The
//! two global keys are updated beside the scripts, never inside them; the
//! janitor re-checks each record atomically before deleting, so an index
//! that lags behind costs nothing but a look. Every key of an upload carries a
//! TTL a day past its `expires_at`, refreshed as chunks arrive, so an abandoned
//! upload's state goes away by itself even if no janitor runs; its bytes are
//! then removed by the janitor's orphan sweep.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, Pipeline, RedisError};
use uuid::Uuid;

use super::{
    ChunkMark, IdempotencyRecord, Insert, Lease, LeaseOf, OffsetMark, Rate, StateStore, StoreError,
    Update,
};
use crate::hashing::HashState;
use crate::upload::{Failure, FileInfo, UploadRecord};

mod files;
mod leases;
mod ledger;
mod outbox;
mod record;
mod scripts;

use record::{decode, outcome, record_outcome, sequential_fields};
use scripts::{
    Lua, Scripts, ABORT, ADD_USE, ADVANCE_HASH, ADVANCE_OFFSET, BEGIN_ASSEMBLY, DELETE_EXPIRED,
    DELETE_FILE, FINISH_ASSEMBLY, RATE_LIMIT, RECORD_CHUNK, RELEASE, RENEW,
};

/// How long an upload's keys outlive its `expires_at`, so that the janitor
/// finds the record (and deletes the bytes with it) before Redis drops it.
const KEY_GRACE_MS: i64 = 24 * 3600 * 1000;

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
    outbox: Option<crate::events::OutboxSettings>,
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("redis: {what}"))
}

impl RedisStore {
    /// Connects (with timeouts, reconnecting by itself later) and loads the scripts.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        // Short timeouts: while Redis is away, a request should learn it (503)
        // in about a second rather than hang; the manager keeps reconnecting.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(1)
            .set_max_delay(500);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        let store = RedisStore {
            conn,
            prefix: prefix.into(),
            scripts: Arc::new(Scripts {
                record_chunk: Lua::new(RECORD_CHUNK),
                advance_offset: Lua::new(ADVANCE_OFFSET),
                advance_hash: Lua::new(ADVANCE_HASH),
                begin_assembly: Lua::new(BEGIN_ASSEMBLY),
                finish_assembly: Lua::new(FINISH_ASSEMBLY),
                abort: Lua::new(ABORT),
                delete_expired: Lua::new(DELETE_EXPIRED),
                delete_file: Lua::new(DELETE_FILE),
                release: Lua::new(RELEASE),
                renew: Lua::new(RENEW),
                rate_limit: Lua::new(RATE_LIMIT),
                add_use: Lua::new(ADD_USE),
            }),
            outbox: None,
        };
        store.load_scripts().await?;
        Ok(store)
    }

    async fn load_scripts(&self) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for lua in self.scripts.all() {
            pipe.cmd("SCRIPT")
                .arg("LOAD")
                .arg(lua.src.as_ref())
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    /// Runs a pipeline built by `build`; if Redis forgot the scripts (it was
    /// restarted), loads them and runs it once more. Nothing in a pipeline that
    /// failed with NOSCRIPT has changed state: the failing EVALSHA did nothing,
    /// and every pipeline here is safe to repeat.
    async fn query<T: redis::FromRedisValue>(
        &self,
        build: impl Fn() -> Pipeline,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        match build().query_async(&mut conn).await {
            Err(e) if e.kind() == ErrorKind::NoScriptError => {
                self.load_scripts().await?;
                build().query_async(&mut conn).await.map_err(unavailable)
            }
            other => other.map_err(unavailable),
        }
    }

    fn meta(&self, id: Uuid) -> String {
        format!("{}{{{id}}}:meta", self.prefix)
    }

    fn chunks(&self, id: Uuid) -> String {
        format!("{}{{{id}}}:chunks", self.prefix)
    }

    fn index(&self) -> String {
        format!("{}expiry", self.prefix)
    }

    fn idem(&self, key: &str) -> String {
        format!("{}idem:{key}", self.prefix)
    }

    /// Adds the reads of a whole record (meta hash and bitmap) to `pipe`.
    fn add_read(&self, pipe: &mut Pipeline, id: Uuid) {
        pipe.cmd("HGETALL")
            .arg(self.meta(id))
            .cmd("GET")
            .arg(self.chunks(id));
    }

    async fn get_after(&self, id: Uuid, code: i64) -> Result<Update, StoreError> {
        Ok(outcome(code, self.get_upload(id).await?))
    }
}

impl StateStore for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.query::<(String,)>(|| {
            let mut p = redis::pipe();
            p.cmd("PING");
            p
        })
        .await
        .map(|_| ())
    }

    async fn insert_upload(
        &self,
        record: &UploadRecord,
        idempotency: Option<(&str, &IdempotencyRecord)>,
    ) -> Result<Insert, StoreError> {
        let id = record.id;
        let ttl_ms = (record.expires_at - record.created_at).max(1000) + KEY_GRACE_MS;
        if let Some((key, first)) = idempotency {
            let value = first.to_json();
            let (set, existing): (Option<String>, Option<String>) = self
                .query(|| {
                    let mut p = redis::pipe();
                    p.cmd("SET")
                        .arg(self.idem(key))
                        .arg(&value)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl_ms);
                    p.cmd("GET").arg(self.idem(key));
                    p
                })
                .await?;
            if set.is_none() {
                // Taken: what the key keeps, unless the janitor deleted it in
                // between (then a retry creates afresh).
                let existing = existing.ok_or_else(|| {
                    StoreError::Unavailable("idempotency key deleted meanwhile; retry".into())
                })?;
                return IdempotencyRecord::from_json(existing.as_bytes()).map(Insert::Existing);
            }
        }
        let rec_json = serde_json::to_string(record).map_err(corrupt)?;
        let hash_json = serde_json::to_string(&record.hash).map_err(corrupt)?;
        let inserted = self
            .query::<()>(|| {
                let mut p = redis::pipe();
                p.cmd("HSET")
                    .arg(self.meta(id))
                    .arg("rec")
                    .arg(&rec_json)
                    .arg("status")
                    .arg(record.status.as_str())
                    .arg("bytes")
                    .arg(record.bytes_received)
                    .arg("expires")
                    .arg(record.expires_at)
                    .arg("hash")
                    .arg(&hash_json)
                    .arg("hash_len")
                    .arg(record.hash.len())
                    .arg("count")
                    .arg(record.chunk_count());
                for (field, value) in sequential_fields(record) {
                    p.arg(field).arg(value);
                }
                p.ignore();
                p.cmd("PEXPIREAT")
                    .arg(self.meta(id))
                    .arg(record.expires_at + KEY_GRACE_MS)
                    .ignore();
                p.cmd("ZADD")
                    .arg(self.index())
                    .arg(record.expires_at)
                    .arg(id.to_string())
                    .ignore();
                self.add_created(&mut p, record);
                p
            })
            .await;
        if let Err(e) = inserted {
            if let Some((key, _)) = idempotency {
                // Best effort: a retry should create afresh, not find an answer
                // that names an upload which does not exist.
                let _ = self
                    .query::<()>(|| {
                        let mut p = redis::pipe();
                        p.cmd("DEL").arg(self.idem(key)).ignore();
                        p
                    })
                    .await;
            }
            return Err(e);
        }
        Ok(Insert::Created)
    }

    async fn add_use(&self, name: &str, delta: i64, until_ms: i64) -> Result<u64, StoreError> {
        let key = format!("{}uses:{name}", self.prefix);
        self.query(|| {
            let mut p = redis::pipe();
            self.scripts
                .add_use
                .add(&mut p, &[&key], &[&delta, &until_ms]);
            p
        })
        .await
        .map(|(n,): (u64,)| n)
    }

    async fn purge_lapsed_uses(&self, _now_ms: i64) -> Result<u64, StoreError> {
        // Each count has its own PEXPIREAT.
        Ok(0)
    }

    async fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let (stored,): (Option<String>,) = self
            .query(|| {
                let mut p = redis::pipe();
                p.cmd("GET").arg(self.idem(key));
                p
            })
            .await?;
        stored
            .map(|s| IdempotencyRecord::from_json(s.as_bytes()))
            .transpose()
    }

    async fn get_upload(&self, id: Uuid) -> Result<Option<UploadRecord>, StoreError> {
        let (fields, bitmap): (HashMap<String, Vec<u8>>, Option<Vec<u8>>) = self
            .query(|| {
                let mut p = redis::pipe();
                self.add_read(&mut p, id);
                p
            })
            .await?;
        decode(fields, bitmap)
    }

    async fn record_chunk(&self, id: Uuid, mark: ChunkMark) -> Result<Update, StoreError> {
        let (code, fields, bitmap) = self.record_pipeline(id, &mark, None).await?;
        record_outcome(code, fields, bitmap)
    }

    async fn advance_offset(&self, id: Uuid, mark: OffsetMark) -> Result<Update, StoreError> {
        let (code, fields, bitmap) = self.offset_pipeline(id, &mark).await?;
        record_outcome(code, fields, bitmap)
    }

    async fn advance_hash(
        &self,
        id: Uuid,
        from_len: u64,
        to: HashState,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(&to).map_err(corrupt)?;
        let (done,): (i64,) = self
            .query(|| {
                let mut p = redis::pipe();
                self.scripts.advance_hash.add(
                    &mut p,
                    &[&self.meta(id)],
                    &[&from_len, &to.len(), &json],
                );
                p
            })
            .await?;
        Ok(done == 1)
    }

    async fn begin_assembly(&self, id: Uuid) -> Result<Update, StoreError> {
        let (code,): (i64,) = self
            .query(|| {
                let mut p = redis::pipe();
                self.scripts
                    .begin_assembly
                    .add(&mut p, &[&self.meta(id), &self.chunks(id)], &[]);
                p
            })
            .await?;
        self.get_after(id, code).await
    }

    async fn finish_assembly(
        &self,
        id: Uuid,
        outcome: Result<FileInfo, Failure>,
        keep_until: i64,
    ) -> Result<Update, StoreError> {
        let (ok, json) = match &outcome {
            Ok(file) => (1, serde_json::to_string(file).map_err(corrupt)?),
            Err(failure) => (0, serde_json::to_string(failure).map_err(corrupt)?),
        };
        let file_until = outcome.as_ref().ok().and_then(|f| f.expires_at);
        let until_arg = file_until.map_or(String::new(), |t| t.to_string());
        let (code,): (i64,) = self
            .query(|| {
                let mut p = redis::pipe();
                self.scripts.finish_assembly.add(
                    &mut p,
                    &[&self.meta(id), &self.chunks(id)],
                    &[&ok, &json, &keep_until, &KEY_GRACE_MS, &until_arg],
                );
                p
            })
            .await?;
        if code == 1 {
            // Completed files are kept: out of the index, unless they have a
            // retention (then by its end). Failed ones linger.
            self.query::<()>(|| {
                let mut p = redis::pipe();
                if let Some(until) = file_until {
                    p.cmd("ZADD")
                        .arg(self.index())
                        .arg(until)
                        .arg(id.to_string())
                        .ignore();
                } else if ok == 1 {
                    p.cmd("ZREM").arg(self.index()).arg(id.to_string()).ignore();
                } else {
                    p.cmd("ZADD")
                        .arg(self.index())
                        .arg("GT")
                        .arg(keep_until)
                        .arg(id.to_string())
                        .ignore();
                }
                p
            })
            .await?;
        }
        self.get_after(id, code).await
    }

    async fn abort(&self, id: Uuid, tombstone_until: i64) -> Result<Update, StoreError> {
        let (code,): (i64,) = self
            .query(|| {
                let mut p = redis::pipe();
                self.scripts.abort.add(
                    &mut p,
                    &[&self.meta(id), &self.chunks(id)],
                    &[&tombstone_until, &KEY_GRACE_MS],
                );
                p
            })
            .await?;
        if code == 1 {
            self.query::<()>(|| {
                let mut p = redis::pipe();
                p.cmd("ZADD")
                    .arg(self.index())
                    .arg(tombstone_until)
                    .arg(id.to_string())
                    .ignore();
                p
            })
            .await?;
        }
        self.get_after(id, code).await
    }

    async fn expired(&self, now_ms: i64, limit: usize) -> Result<Vec<Uuid>, StoreError> {
        let (ids,): (Vec<String>,) = self
            .query(|| {
                let mut p = redis::pipe();
                p.cmd("ZRANGEBYSCORE")
                    .arg(self.index())
                    .arg("-inf")
                    .arg(now_ms)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit);
                p
            })
            .await?;
        Ok(ids.iter().filter_map(|s| Uuid::try_parse(s).ok()).collect())
    }

    async fn delete_expired(
        &self,
        id: Uuid,
        now_ms: i64,
    ) -> Result<Option<UploadRecord>, StoreError> {
        let (fields,): (Vec<Vec<u8>>,) = self
            .query(|| {
                let mut p = redis::pipe();
                self.scripts.delete_expired.add(
                    &mut p,
                    &[&self.meta(id), &self.chunks(id)],
                    &[&now_ms],
                );
                p
            })
            .await?;
        let map = files::pairs(fields);
        let deleted = map.contains_key("rec");
        let kept_alive = !deleted && map.get("keep").is_some_and(|k| k == b"1");
        let rec = if deleted { decode(map, None)? } else { None };
        if !kept_alive {
            // Deleted now, gone already, or a file kept until deleted: either
            // way no longer the janitor's business.
            let idem = rec.as_ref().and_then(|r| r.idempotency_key.clone());
            self.query::<()>(|| {
                let mut p = redis::pipe();
                p.cmd("ZREM").arg(self.index()).arg(id.to_string()).ignore();
                if let Some(key) = &idem {
                    p.cmd("DEL").arg(self.idem(key)).ignore();
                }
                p
            })
            .await?;
        }
        Ok(rec)
    }

    async fn delete_file(&self, id: Uuid) -> Result<Update, StoreError> {
        self.delete_completed(id).await
    }

    async fn try_lease(&self, of: LeaseOf, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        self.lease_try(of, ttl).await
    }

    async fn take_token(&self, bucket: &str, rate: Rate) -> Result<Option<Duration>, StoreError> {
        self.bucket_take(bucket, rate).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.lease_release(lease).await
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        self.lease_renew(lease, ttl).await
    }

    async fn lease_and_get(
        &self,
        id: Uuid,
        index: u64,
        ttl: Duration,
    ) -> Result<Option<(Lease, Option<UploadRecord>)>, StoreError> {
        self.lease_and_read(id, index, ttl).await
    }

    async fn record_chunk_and_release(
        &self,
        id: Uuid,
        mark: ChunkMark,
        lease: &Lease,
    ) -> Result<Update, StoreError> {
        let (code, fields, bitmap) = self.record_pipeline(id, &mark, Some(lease)).await?;
        record_outcome(code, fields, bitmap)
    }

    async fn pending_events(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::events::OutboxEntry>, StoreError> {
        self.outbox_pending(limit).await
    }
    async fn ack_event(&self, position: &str) -> Result<(), StoreError> {
        self.outbox_ack(position).await
    }
    async fn outbox_len(&self) -> Result<u64, StoreError> {
        self.outbox_len_now().await
    }
}
