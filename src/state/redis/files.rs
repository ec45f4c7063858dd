//! Completed files in the Redis store: deleting one (its keys at once, then
//! its index entry and idempotency key beside the script).

use std::collections::HashMap;

use uuid::Uuid;

use super::record::decode;
use super::{corrupt, RedisStore};
use crate::state::{StateStore, StoreError, Update};

impl RedisStore {
    /// [`crate::state::StateStore::delete_file`]: the `DELETE_FILE` script
    /// deletes the record's keys atomically if it is completed; the expiry
    /// index and the idempotency key, global keys, follow.
    pub(super) async fn delete_completed(&self, id: Uuid) -> Result<Update, StoreError> {
        let (fields,): (Vec<Vec<u8>>,) = self
            .query(|| {
                let mut p = redis::pipe();
                self.scripts
                    .delete_file
                    .add(&mut p, &[&self.meta(id), &self.chunks(id)], &[]);
                p
            })
            .await?;
        let map = pairs(fields);
        if map.is_empty() {
            return Ok(Update::NotFound);
        }
        if !map.contains_key("rec") {
            // Not completed: kept. The record as it stands, if still there.
            return Ok(match self.get_upload(id).await? {
                Some(rec) => Update::Rejected(rec),
                None => Update::NotFound,
            });
        }
        let rec = decode(map, None)?.ok_or_else(|| corrupt("deleted record without rec"))?;
        let idem = rec.idempotency_key.clone();
        self.query::<()>(|| {
            let mut p = redis::pipe();
            p.cmd("ZREM").arg(self.index()).arg(id.to_string()).ignore();
            if let Some(key) = &idem {
                p.cmd("DEL").arg(self.idem(key)).ignore();
            }
            p
        })
        .await?;
        Ok(Update::Done(rec))
    }
}

/// A flat HGETALL answer as a map.
pub(super) fn pairs(fields: Vec<Vec<u8>>) -> HashMap<String, Vec<u8>> {
    fields
        .chunks_exact(2)
        .map(|kv| (String::from_utf8_lossy(&kv[0]).into_owned(), kv[1].clone()))
        .collect()
}
