//! The Lua scripts of the Redis store: each state transition of one upload is
//! one script over keys of one hash slot, so it is atomic (and valid on Redis
//! Cluster).

use redis::Pipeline;

/// A Lua script and its SHA-1, run with `EVALSHA` inside pipelines; after a
/// Redis restart has emptied the script cache, scripts are loaded again.
#[derive(Clone)]
pub(super) struct Lua {
    pub(super) src: std::borrow::Cow<'static, str>,
    pub(super) sha: String,
}

impl Lua {
    pub(super) fn new(src: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        let src = src.into();
        let sha = redis::Script::new(&src).get_hash().to_string();
        Lua { src, sha }
    }

    /// Appends an `EVALSHA` of this script to `pipe`.
    pub(super) fn add(&self, pipe: &mut Pipeline, keys: &[&str], args: &[&dyn std::fmt::Display]) {
        let cmd = pipe.cmd("EVALSHA").arg(&self.sha).arg(keys.len()).arg(keys);
        for a in args {
            cmd.arg(a.to_string());
        }
    }
}

/// Counts a chunk. Returns 0: no such upload, 1: counted, 2: not uploading or expired.
/// With ARGV[6] (not ''), then moves the running hash as ADVANCE_HASH does,
/// from ARGV[6] bytes to ARGV[7] (state ARGV[8]).
pub(super) const RECORD_CHUNK: &str = r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 0 end
local exp = tonumber(redis.call('HGET', KEYS[1], 'expires'))
if st ~= 'uploading' or exp <= tonumber(ARGV[3]) then return 2 end
if redis.call('SETBIT', KEYS[2], ARGV[1], 1) == 0 then
  redis.call('HINCRBY', KEYS[1], 'bytes', ARGV[2])
end
local new = math.max(exp, tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'expires', string.format('%.0f', new))
local until_ms = string.format('%.0f', new + tonumber(ARGV[5]))
redis.call('PEXPIREAT', KEYS[1], until_ms)
redis.call('PEXPIREAT', KEYS[2], until_ms)
if ARGV[6] and ARGV[6] ~= '' and redis.call('HGET', KEYS[1], 'hash_len') == ARGV[6] then
  local to = tonumber(ARGV[7])
  if to > tonumber(ARGV[6]) and to <= cjson.decode(redis.call('HGET', KEYS[1], 'rec')).size then
    redis.call('HSET', KEYS[1], 'hash', ARGV[8], 'hash_len', ARGV[7])
  end
end
return 1
"#;

/// Moves a sequential upload's offset, `rules::advance_offset`: from ARGV[1]
/// to ARGV[2], setting its length to ARGV[3] if not '' (it was deferred:
/// `seq_size` is ''). ARGV[4] now, ARGV[5] the new expiry, ARGV[6] the keys'
/// grace. 0: no upload, 1: moved, 2: rejected. With ARGV[7] (not ''), then
/// moves the running hash as ADVANCE_HASH does, from ARGV[7] bytes to
/// ARGV[8] (state ARGV[9]), never past the new offset.
pub(super) const ADVANCE_OFFSET: &str = r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 0 end
local exp = tonumber(redis.call('HGET', KEYS[1], 'expires'))
if st ~= 'uploading' or exp <= tonumber(ARGV[4]) then return 2 end
local off = redis.call('HGET', KEYS[1], 'seq_offset')
if not off or off ~= ARGV[1] then return 2 end
local to = tonumber(ARGV[2])
if to < tonumber(off) then return 2 end
local size = redis.call('HGET', KEYS[1], 'seq_size')
if ARGV[3] ~= '' then
  if size ~= '' and size ~= ARGV[3] then return 2 end
  size = ARGV[3]
end
if size ~= '' and to > tonumber(size) then return 2 end
local new = math.max(exp, tonumber(ARGV[5]))
redis.call('HSET', KEYS[1], 'seq_offset', ARGV[2], 'seq_size', size, 'bytes', ARGV[2],
  'expires', string.format('%.0f', new))
local until_ms = string.format('%.0f', new + tonumber(ARGV[6]))
redis.call('PEXPIREAT', KEYS[1], until_ms)
if ARGV[7] and ARGV[7] ~= '' and redis.call('HGET', KEYS[1], 'hash_len') == ARGV[7] then
  local hto = tonumber(ARGV[8])
  if hto > tonumber(ARGV[7]) and hto <= to then
    redis.call('HSET', KEYS[1], 'hash', ARGV[9], 'hash_len', ARGV[8])
  end
end
return 1
"#;

/// Compare-and-set of the running hash, `rules::advance_hash`: from ARGV[1]
/// bytes to ARGV[2] (forward, never past the file's size, nor past a
/// sequential upload's offset). Returns 1 if it was replaced.
pub(super) const ADVANCE_HASH: &str = r#"
if redis.call('HGET', KEYS[1], 'hash_len') ~= ARGV[1] then return 0 end
local to = tonumber(ARGV[2])
if to <= tonumber(ARGV[1]) then return 0 end
local off = redis.call('HGET', KEYS[1], 'seq_offset')
if off then
  if to > tonumber(off) then return 0 end
elseif to > cjson.decode(redis.call('HGET', KEYS[1], 'rec')).size then return 0 end
redis.call('HSET', KEYS[1], 'hash', ARGV[3], 'hash_len', ARGV[2])
return 1
"#;

/// uploading (all chunks in) -> assembling. 0: no upload, 1: assembling, 2: rejected.
pub(super) const BEGIN_ASSEMBLY: &str = r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 0 end
if st == 'assembling' then return 1 end
if st ~= 'uploading' then return 2 end
local off = redis.call('HGET', KEYS[1], 'seq_offset')
if off then
  if off ~= redis.call('HGET', KEYS[1], 'seq_size') then return 2 end
elseif redis.call('BITCOUNT', KEYS[2]) ~= tonumber(redis.call('HGET', KEYS[1], 'count')) then return 2 end
redis.call('HSET', KEYS[1], 'status', 'assembling')
return 1
"#;

/// assembling -> completed (ARGV[1] = 1, ARGV[2] = file JSON, ARGV[5] the
/// end of its retention or '' for none) or failed (ARGV[1] = 0, ARGV[2] =
/// failure JSON, kept until ARGV[3]). A completed file's keys never expire by
/// themselves: only a delete (or the janitor, at the end of its retention)
/// takes them with its bytes.
pub(super) const FINISH_ASSEMBLY: &str = r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 0 end
if st ~= 'assembling' then return 2 end
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'status', 'completed', 'file', ARGV[2])
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'expires', ARGV[5]) end
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
else
  local new = math.max(tonumber(redis.call('HGET', KEYS[1], 'expires')), tonumber(ARGV[3]))
  redis.call('HSET', KEYS[1], 'status', 'failed', 'failure', ARGV[2], 'expires', string.format('%.0f', new))
  local until_ms = string.format('%.0f', new + tonumber(ARGV[4]))
  redis.call('PEXPIREAT', KEYS[1], until_ms)
  redis.call('PEXPIREAT', KEYS[2], until_ms)
end
return 1
"#;

/// any but completed/assembling -> aborted until ARGV[1].
pub(super) const ABORT: &str = r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 0 end
if st == 'completed' or st == 'assembling' then return 2 end
redis.call('HSET', KEYS[1], 'status', 'aborted', 'expires', ARGV[1])
local until_ms = string.format('%.0f', tonumber(ARGV[1]) + tonumber(ARGV[2]))
redis.call('PEXPIREAT', KEYS[1], until_ms)
redis.call('PEXPIREAT', KEYS[2], until_ms)
return 1
"#;

/// Deletes an upload's keys if it is still deletable at ARGV[1]
/// (`rules::deletable`): an unfinished upload past its expiry, or a completed
/// file past its retention. Returns its fields (HGETALL) when it deleted, an
/// empty list when there is no record, and `{'keep', '1'}` for a record kept
/// that still expires, `{'keep', '0'}` for one that never does (it leaves
/// the index).
pub(super) const DELETE_EXPIRED: &str = r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {} end
local expires = st == 'uploading' or st == 'failed' or st == 'aborted'
if st == 'completed' then
  local f = redis.call('HGET', KEYS[1], 'file')
  local until_ms = f and cjson.decode(f).expires_at
  expires = until_ms ~= nil and until_ms ~= cjson.null
end
if not expires then return {'keep', '0'} end
local exp = tonumber(redis.call('HGET', KEYS[1], 'expires'))
if exp > tonumber(ARGV[1]) then return {'keep', '1'} end
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
return fields
"#;

/// Deletes a completed upload's keys; returns its fields (HGETALL) when it
/// deleted, an empty list when there is no upload, and the status alone
/// when the upload is not completed (and is kept).
pub(super) const DELETE_FILE: &str = r#"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {} end
if st ~= 'completed' then return {'status', st} end
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
return fields
"#;

/// Extends a lease (ARGV[2] ms) if the caller still holds it.
pub(super) const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"#;

/// Releases a lease if the caller still holds it.
pub(super) const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

#[derive(Clone)]
pub(super) struct Scripts {
    pub(super) record_chunk: Lua,
    pub(super) advance_offset: Lua,
    pub(super) advance_hash: Lua,
    pub(super) begin_assembly: Lua,
    pub(super) finish_assembly: Lua,
    pub(super) abort: Lua,
    pub(super) delete_expired: Lua,
    pub(super) delete_file: Lua,
    pub(super) release: Lua,
    pub(super) renew: Lua,
    pub(super) rate_limit: Lua,
    pub(super) add_use: Lua,
}

impl Scripts {
    pub(super) fn all(&self) -> [&Lua; 12] {
        [
            &self.record_chunk,
            &self.advance_offset,
            &self.advance_hash,
            &self.begin_assembly,
            &self.finish_assembly,
            &self.abort,
            &self.delete_expired,
            &self.delete_file,
            &self.release,
            &self.renew,
            &self.rate_limit,
            &self.add_use,
        ]
    }
}

/// A token bucket as GCRA, the rule of `rules::take_token`: the key holds the
/// bucket's "theoretical arrival time" in microseconds of Redis's own clock
/// (so every instance agrees). ARGV: emission interval (µs per request),
/// burst tolerance (µs). Returns 0 when the request may go, else the µs to
/// wait. The key lapses once the bucket is full again.
pub(super) const RATE_LIMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance - interval
if allow_at > now then return allow_at - now end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
"#;

/// Adds ARGV[1] to a token's use count, which lapses at ARGV[2] (Unix ms).
/// A count that falls to 0 (a use given back after the key lapsed) is
/// deleted rather than left negative. Returns the new count.
pub(super) const ADD_USE: &str = r#"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n <= 0 then redis.call('DEL', KEYS[1]) return 0 end
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return n
"#;
