//! The Redis store's event outbox: a stream, `Poutbox`, appended to by the
//! very Lua script (or `MULTI` block, for a create) of the transition that
//! causes each event (see [`crate::events`]).
//!
//! With an outbox, the transition scripts are wrapped: the original script
//! runs as a function, then the wrapper decides by the shared rules
//! ([`crate::events::EventKind`], here in Lua) whether it wrote an event and
//! `XADD`s it, with the upload's fields as they stood, in the same script. An
//! upload's sequence number is the `evseq` field of its meta hash.
//!
//! Not for Redis Cluster: the outbox is one key shared by every upload, which
//! the scripts touch beside the upload's own keys (another hash slot). A
//! per-upload outbox with an index would be cluster-safe, but the index
//! could only be updated beside the scripts, and a consumer would have to
//! scan for what it missed; one stream keeps delivery simple and ordered.
//! The stream is capped with `MAXLEN ~ max_len`: Redis trims the oldest
//! entries beyond it (approximately, and without telling).

use std::collections::HashMap;
use std::sync::Arc;

use redis::Pipeline;
use uuid::Uuid;

use super::record::decode;
use super::scripts::{
    Lua, ABORT, ADVANCE_OFFSET, DELETE_EXPIRED, DELETE_FILE, FINISH_ASSEMBLY, RECORD_CHUNK,
};
use super::{corrupt, RedisStore};
use crate::events::{EventKind, OutboxEntry, OutboxSettings, StoredEvent};
use crate::state::StoreError;
use crate::upload::UploadRecord;

/// Runs a transition script (`{body}`), then appends its event, if
/// `{kind}` (Lua setting `kind`, and `removed` when the script deleted the
/// record and returned its fields) says it has one.
const WRAPPER: &str = r#"
local function transition()
{body}
end
local before = redis.call('HGET', KEYS[1], 'status')
local bytes_before = redis.call('HGET', KEYS[1], 'bytes')
local evseq = redis.call('HGET', KEYS[1], 'evseq')
local result = transition()
local kind = nil
local removed = false
{kind}
if kind then
  local seq = tonumber(evseq or '0') + 1
  local fields = result
  if not removed then
    redis.call('HSET', KEYS[1], 'evseq', seq)
    fields = redis.call('HGETALL', KEYS[1])
  end
  local map = {}
  for i = 1, #fields, 2 do map[fields[i]] = fields[i + 1] end
  local t = redis.call('TIME')
  local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local prefix, id = string.match(KEYS[1], '^(.*){(.-)}:meta$')
  redis.call('XADD', prefix .. 'outbox', 'MAXLEN', '~', '{max_len}', '*', 'event',
    cjson.encode({kind = kind, upload = id, seq = seq, at = at, fields = map}))
end
return result
"#;

const FINISHED: &str = r#"
if result == 1 then
  if ARGV[1] == '1' then kind = 'upload.completed' else kind = 'upload.failed' end
end"#;

const ABORTED: &str = r#"
if result == 1 and before ~= 'aborted' then kind = 'upload.aborted' end"#;

/// Bytes counted: `upload.progress`, at most once per `{progress_ms}`.
const PROGRESSED: &str = r#"
if result == 1 and redis.call('HGET', KEYS[1], 'bytes') ~= bytes_before then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local last = tonumber(redis.call('HGET', KEYS[1], 'evprog') or '0')
  if now - last >= {progress_ms} then
    kind = 'upload.progress'
    redis.call('HSET', KEYS[1], 'evprog', string.format('%.0f', now))
  end
end"#;

const FILE_DELETED: &str = r#"
if #result > 2 then kind = 'file.deleted'; removed = true end"#;

const EXPIRED: &str = r#"
if #result > 2 then
  removed = true
  if before == 'completed' then kind = 'file.deleted'
  elseif before == 'uploading' then kind = 'upload.expired' end
end"#;

fn wrap(body: &str, kind: &str, max_len: u64) -> Lua {
    Lua::new(
        WRAPPER
            .replace("{body}", body)
            .replace("{kind}", kind)
            .replace("{max_len}", &max_len.to_string()),
    )
}

/// An outbox entry as the scripts (`fields`: the meta hash) or a create
/// (`record`) write it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Written {
    kind: EventKind,
    upload: Uuid,
    seq: u64,
    at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    record: Option<UploadRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fields: Option<HashMap<String, String>>,
}

impl RedisStore {
    /// Keeps an outbox from now on: the transition scripts are replaced by
    /// ones that write their events.
    pub async fn with_outbox(mut self, settings: OutboxSettings) -> Result<Self, StoreError> {
        let mut scripts = (*self.scripts).clone();
        let max = settings.max_len;
        scripts.finish_assembly = wrap(FINISH_ASSEMBLY, FINISHED, max);
        scripts.abort = wrap(ABORT, ABORTED, max);
        scripts.delete_file = wrap(DELETE_FILE, FILE_DELETED, max);
        scripts.delete_expired = wrap(DELETE_EXPIRED, EXPIRED, max);
        if let Some(every) = settings.progress_ms {
            let progressed = PROGRESSED.replace("{progress_ms}", &every.to_string());
            scripts.record_chunk = wrap(RECORD_CHUNK, &progressed, max);
            scripts.advance_offset = wrap(ADVANCE_OFFSET, &progressed, max);
        }
        self.scripts = Arc::new(scripts);
        self.outbox = Some(settings);
        self.load_scripts().await?;
        Ok(self)
    }

    fn outbox_key(&self) -> String {
        format!("{}outbox", self.prefix)
    }

    /// Makes a create's pipeline one `MULTI` block that also writes the
    /// upload's first event (with an outbox).
    pub(super) fn add_created(&self, pipe: &mut Pipeline, rec: &UploadRecord) {
        let Some(settings) = self.outbox else {
            return;
        };
        let written = Written {
            kind: EventKind::Created,
            upload: rec.id,
            seq: 1,
            at: rec.created_at,
            record: Some(rec.clone()),
            fields: None,
        };
        let json = serde_json::to_string(&written).expect("a record always serialises");
        pipe.atomic();
        pipe.cmd("HSET")
            .arg(self.meta(rec.id))
            .arg("evseq")
            .arg(1)
            .ignore();
        pipe.cmd("XADD")
            .arg(self.outbox_key())
            .arg("MAXLEN")
            .arg("~")
            .arg(settings.max_len)
            .arg("*")
            .arg("event")
            .arg(json)
            .ignore();
    }

    pub(super) async fn outbox_pending(
        &self,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let (entries,): (Vec<(String, Vec<String>)>,) = self
            .query(|| {
                let mut p = redis::pipe();
                p.cmd("XRANGE")
                    .arg(self.outbox_key())
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit);
                p
            })
            .await?;
        entries
            .into_iter()
            .map(|(position, pairs)| {
                let json = pairs
                    .chunks(2)
                    .find(|kv| kv[0] == "event")
                    .and_then(|kv| kv.get(1))
                    .ok_or_else(|| corrupt(format!("outbox entry {position} has no event")))?;
                let event = read_written(json)?;
                Ok(OutboxEntry { position, event })
            })
            .collect()
    }

    pub(super) async fn outbox_ack(&self, position: &str) -> Result<(), StoreError> {
        self.query::<()>(|| {
            let mut p = redis::pipe();
            p.cmd("XDEL").arg(self.outbox_key()).arg(position).ignore();
            p
        })
        .await
    }

    pub(super) async fn outbox_len_now(&self) -> Result<u64, StoreError> {
        self.query(|| {
            let mut p = redis::pipe();
            p.cmd("XLEN").arg(self.outbox_key());
            p
        })
        .await
        .map(|(n,): (u64,)| n)
    }
}

fn read_written(json: &str) -> Result<StoredEvent, StoreError> {
    let written: Written = serde_json::from_str(json).map_err(corrupt)?;
    let record = match (written.record, written.fields) {
        (Some(record), _) => record,
        (None, Some(fields)) => {
            let fields = fields
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            decode(fields, None)?.ok_or_else(|| corrupt("outbox entry without a record"))?
        }
        (None, None) => return Err(corrupt("outbox entry without a record")),
    };
    Ok(StoredEvent {
        kind: written.kind,
        upload: written.upload,
        seq: written.seq,
        at: written.at,
        record,
    })
}
