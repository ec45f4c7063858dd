//! The Redis store's [`LedgerStore`]. Keys, with the prefix `P`:
//! - `Pusage:<owner>`: a hash with the owner's totals (`pending`, `stored`)
//!   and its ledger (`e:<upload id>` → `p<bytes>` or `s<bytes>`). One key
//!   per owner, so each change is one script over one key (atomic, and valid
//!   on Redis Cluster).
//! - `Pusage-owners`: a set of owners, for the listing of every owner
//!   (updated beside the scripts).
//! - `Pcontent:<dedup key>`: a set of the ids of completed files.
//!
//! None of them expires: usage and a file's index entry live as long as the
//! files they count.

use redis::Script;
use uuid::Uuid;

use super::record::outcome;
use super::{corrupt, unavailable, RedisStore};
use crate::state::ledger::{Charge, LedgerStore, Quota, QuotaLimits, Usage, UsageKind};
use crate::state::{StateStore, StoreError, Update};
use crate::wire::Processing;

/// ARGV: upload id, kind (`p`/`s`), bytes, max pending, max stored ('' for
/// none). Returns {code, pending, stored} before it; code 0: charged (or
/// charged already), 1: over the pending quota, 2: over the stored quota.
/// The rule is `ledger::check`'s.
const CHARGE: &str = r#"
local pending = tonumber(redis.call('HGET', KEYS[1], 'pending') or '0')
local stored = tonumber(redis.call('HGET', KEYS[1], 'stored') or '0')
local field = 'e:' .. ARGV[1]
if redis.call('HEXISTS', KEYS[1], field) == 1 then return {0, pending, stored} end
local size = tonumber(ARGV[3])
if ARGV[2] == 'p' and ARGV[4] ~= '' and pending + size > tonumber(ARGV[4]) then
  return {1, pending, stored}
end
if ARGV[5] ~= '' and stored + pending + size > tonumber(ARGV[5]) then
  return {2, pending, stored}
end
redis.call('HSET', KEYS[1], field, ARGV[2] .. ARGV[3])
redis.call('HINCRBY', KEYS[1], ARGV[2] == 'p' and 'pending' or 'stored', ARGV[3])
return {0, pending, stored}
"#;

/// ARGV: upload id, and '1' to move its pending bytes to stored or '0' to
/// forget its bytes. Returns 1 if it changed anything.
const SETTLE_OR_RELEASE: &str = r#"
local field = 'e:' .. ARGV[1]
local e = redis.call('HGET', KEYS[1], field)
if not e then return 0 end
local kind, size = string.sub(e, 1, 1), string.sub(e, 2)
local total = kind == 'p' and 'pending' or 'stored'
if ARGV[2] == '1' then
  if kind ~= 'p' then return 0 end
  redis.call('HSET', KEYS[1], field, 's' .. size)
  redis.call('HINCRBY', KEYS[1], 'stored', size)
else
  redis.call('HDEL', KEYS[1], field)
end
-- Redis reads '-0' as no integer: a zero-byte upload takes nothing back.
if size ~= '0' then redis.call('HINCRBY', KEYS[1], total, '-' .. size) end
return 1
"#;

/// Keeps a worker's report (ARGV[1], its JSON) on a completed upload, and
/// counts it in `proc_rev`, which stands for the report's `revision` when
/// the record is read (`record::decode`): the rule of
/// `rules::report_processing`, without Lua rewriting JSON it did not write.
/// Returns 0: no upload, -1: not completed, else the report's revision.
const SET_PROCESSING: &str = r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 0 end
if st ~= 'completed' then return -1 end
local revision = redis.call('HINCRBY', KEYS[1], 'proc_rev', 1)
redis.call('HSET', KEYS[1], 'processing', ARGV[1])
return revision
"#;

impl RedisStore {
    fn usage_key(&self, owner: &str) -> String {
        format!("{}usage:{owner}", self.prefix)
    }

    fn owners_key(&self) -> String {
        format!("{}usage-owners", self.prefix)
    }

    fn content_key(&self, key: &str) -> String {
        format!("{}content:{key}", self.prefix)
    }

    async fn settle_or_release(
        &self,
        owner: &str,
        upload: Uuid,
        settle: bool,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        Script::new(SETTLE_OR_RELEASE)
            .key(self.usage_key(owner))
            .arg(upload.to_string())
            .arg(if settle { "1" } else { "0" })
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

/// Escapes a glob pattern's special characters (the prefix is the
/// operator's to choose).
fn glob_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl LedgerStore for RedisStore {
    async fn charge_usage(
        &self,
        owner: &str,
        upload: Uuid,
        kind: UsageKind,
        size: u64,
        limits: QuotaLimits,
    ) -> Result<Charge, StoreError> {
        let limit = |l: Option<u64>| l.map_or(String::new(), |n| n.to_string());
        let mut conn = self.conn.clone();
        let (code, pending, stored): (i64, u64, u64) = Script::new(CHARGE)
            .key(self.usage_key(owner))
            .arg(upload.to_string())
            .arg(char::from(kind.code()).to_string())
            .arg(size)
            .arg(limit(limits.max_pending))
            .arg(limit(limits.max_stored))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let usage = Usage { pending, stored };
        match code {
            0 => {
                redis::cmd("SADD")
                    .arg(self.owners_key())
                    .arg(owner)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(unavailable)?;
                Ok(Charge::Charged(usage))
            }
            1 => Ok(Charge::Refused {
                usage,
                quota: Quota::Pending,
            }),
            2 => Ok(Charge::Refused {
                usage,
                quota: Quota::Stored,
            }),
            other => Err(corrupt(format!("charge answered {other}"))),
        }
    }

    async fn settle_usage(&self, owner: &str, upload: Uuid) -> Result<(), StoreError> {
        self.settle_or_release(owner, upload, true).await
    }

    async fn release_usage(&self, owner: &str, upload: Uuid) -> Result<(), StoreError> {
        self.settle_or_release(owner, upload, false).await
    }

    async fn usage(&self, owner: Option<&str>) -> Result<Vec<(String, Usage)>, StoreError> {
        let mut conn = self.conn.clone();
        let mut owners: Vec<String> = match owner {
            Some(o) => vec![o.to_owned()],
            None => redis::cmd("SMEMBERS")
                .arg(self.owners_key())
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?,
        };
        owners.sort();
        let mut pipe = redis::pipe();
        for o in &owners {
            pipe.cmd("HMGET")
                .arg(self.usage_key(o))
                .arg("pending")
                .arg("stored");
        }
        let totals: Vec<(Option<u64>, Option<u64>)> =
            pipe.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(owners
            .into_iter()
            .zip(totals)
            // An owner never charged has no hash: no usage to show.
            .filter(|(_, (p, s))| p.is_some() || s.is_some())
            .map(|(o, (p, s))| {
                let usage = Usage {
                    pending: p.unwrap_or(0),
                    stored: s.unwrap_or(0),
                };
                (o, usage)
            })
            .collect())
    }

    async fn index_content(&self, key: &str, file: Uuid) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("SADD")
            .arg(self.content_key(key))
            .arg(file.to_string())
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn find_content(&self, key: &str, limit: usize) -> Result<Vec<Uuid>, StoreError> {
        let mut conn = self.conn.clone();
        let found: Vec<String> = redis::cmd("SRANDMEMBER")
            .arg(self.content_key(key))
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        // Unreadable: as if absent; the index is only a hint.
        Ok(found
            .iter()
            .filter_map(|s| Uuid::try_parse(s).ok())
            .collect())
    }

    async fn unindex_content(&self, key: &str, file: Uuid) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("SREM")
            .arg(self.content_key(key))
            .arg(file.to_string())
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn completed_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}{{*}}:meta", glob_literal(&self.prefix));
        let mut cursor = 0u64;
        let mut ids = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let found: Vec<Uuid> = keys
                .iter()
                .filter_map(|k| {
                    let inner = k.strip_prefix(&*self.prefix)?.strip_prefix('{')?;
                    Uuid::try_parse(inner.strip_suffix("}:meta")?).ok()
                })
                .collect();
            if !found.is_empty() {
                let mut pipe = redis::pipe();
                for id in &found {
                    pipe.cmd("HGET").arg(self.meta(*id)).arg("status");
                }
                let statuses: Vec<Option<String>> =
                    pipe.query_async(&mut conn).await.map_err(unavailable)?;
                ids.extend(
                    found
                        .into_iter()
                        .zip(statuses)
                        .filter(|(_, st)| st.as_deref() == Some("completed"))
                        .map(|(id, _)| id),
                );
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    async fn set_processing(&self, id: Uuid, report: Processing) -> Result<Update, StoreError> {
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(&report).map_err(corrupt)?;
        let revision: i64 = Script::new(SET_PROCESSING)
            .key(self.meta(id))
            .arg(json)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let code = revision.clamp(-1, 1);
        Ok(match outcome(code, self.get_upload(id).await?) {
            // The record is read after the script: a report that came
            // meanwhile may be in it. The answer is this report's.
            Update::Done(mut rec) => {
                rec.processing = Some(Processing {
                    revision: revision as u64,
                    ..report
                });
                Update::Done(rec)
            }
            other => other,
        })
    }
}
