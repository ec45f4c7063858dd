//! The embedded store's event outbox: entries written inside the very
//! transaction of the transition that causes them (see [`crate::events`]).
//!
//! Tables: `outbox` (position → [`StoredEvent`] JSON, in commit order),
//! `event_seq` (upload id → the last sequence number given, removed with the
//! upload) and `outbox_next` (the next position: positions are never reused,
//! so an acknowledgement can only ever remove the entry it names).

use std::sync::atomic::Ordering;

use super::{open_or_none, unavailable, EmbeddedStore};
use crate::events::{EventKind, OutboxEntry, OutboxSettings, StoredEvent, DROPPED};
use crate::state::StoreError;
use crate::upload::UploadRecord;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const EVENT_SEQ: TableDefinition<u128, u64> = TableDefinition::new("event_seq");
const OUTBOX_NEXT: TableDefinition<&str, u64> = TableDefinition::new("outbox_next");
/// upload id → when its last `upload.progress` was written (ms).
const PROGRESS_AT: TableDefinition<u128, i64> = TableDefinition::new("progress_at");

/// Appends the event of a record that changed from `before` to `after`, if
/// the change has one, inside the caller's transaction.
pub(super) fn changed(
    txn: &WriteTransaction,
    outbox: Option<OutboxSettings>,
    before: &UploadRecord,
    after: &UploadRecord,
    now_ms: i64,
) -> Result<(), StoreError> {
    let Some(settings) = outbox else {
        return Ok(());
    };
    if let Some(kind) = EventKind::of_change(before.status, after.status) {
        return append(txn, settings, kind, after, now_ms, false);
    }
    let (Some(every), true) = (
        settings.progress_ms,
        after.bytes_received > before.bytes_received,
    ) else {
        return Ok(());
    };
    // Coalesced: progress is news once in a while, not once per chunk.
    let mut last = txn.open_table(PROGRESS_AT).map_err(unavailable)?;
    let due = last
        .get(after.id.as_u128())
        .map_err(unavailable)?
        .is_none_or(|at| now_ms - at.value() >= every);
    if due {
        last.insert(after.id.as_u128(), now_ms)
            .map_err(unavailable)?;
        drop(last);
        append(txn, settings, EventKind::Progress, after, now_ms, false)?;
    }
    Ok(())
}

/// Appends the event of a new upload.
pub(super) fn created(
    txn: &WriteTransaction,
    outbox: Option<OutboxSettings>,
    rec: &UploadRecord,
    now_ms: i64,
) -> Result<(), StoreError> {
    match outbox {
        Some(settings) => append(txn, settings, EventKind::Created, rec, now_ms, false),
        None => Ok(()),
    }
}

/// Appends the event of a record being deleted (by a request or by the
/// janitor), if its deletion has one, and forgets the upload's sequence number.
pub(super) fn removed(
    txn: &WriteTransaction,
    outbox: Option<OutboxSettings>,
    rec: &UploadRecord,
    now_ms: i64,
) -> Result<(), StoreError> {
    let Some(settings) = outbox else {
        return Ok(());
    };
    if let Some(kind) = EventKind::of_removal(rec.status) {
        append(txn, settings, kind, rec, now_ms, true)?;
    }
    let mut seqs = txn.open_table(EVENT_SEQ).map_err(unavailable)?;
    seqs.remove(rec.id.as_u128()).map_err(unavailable)?;
    let mut last = txn.open_table(PROGRESS_AT).map_err(unavailable)?;
    last.remove(rec.id.as_u128()).map_err(unavailable)?;
    Ok(())
}

fn append(
    txn: &WriteTransaction,
    settings: OutboxSettings,
    kind: EventKind,
    rec: &UploadRecord,
    now_ms: i64,
    last: bool,
) -> Result<(), StoreError> {
    let seq = {
        let mut seqs = txn.open_table(EVENT_SEQ).map_err(unavailable)?;
        let id = rec.id.as_u128();
        let seq = seqs.get(id).map_err(unavailable)?.map_or(0, |v| v.value()) + 1;
        if !last {
            seqs.insert(id, seq).map_err(unavailable)?;
        }
        seq
    };
    let event = StoredEvent {
        kind,
        upload: rec.id,
        seq,
        at: now_ms,
        record: rec.clone(),
    };
    let json = serde_json::to_vec(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut next = txn.open_table(OUTBOX_NEXT).map_err(unavailable)?;
    let position = next
        .get("next")
        .map_err(unavailable)?
        .map_or(1, |v| v.value());
    next.insert("next", position + 1).map_err(unavailable)?;
    let mut outbox = txn.open_table(OUTBOX).map_err(unavailable)?;
    outbox
        .insert(position, json.as_slice())
        .map_err(unavailable)?;
    // Bounded: a sink down for longer than the outbox holds loses the
    // oldest events rather than the disk filling with them.
    let mut over = outbox
        .len()
        .map_err(unavailable)?
        .saturating_sub(settings.max_len);
    while over > 0 {
        let Some((oldest, _)) = outbox.pop_first().map_err(unavailable)? else {
            break;
        };
        DROPPED.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            position = oldest.value(),
            max_len = settings.max_len,
            "event outbox full: the oldest event was dropped undelivered"
        );
        over -= 1;
    }
    Ok(())
}

impl EmbeddedStore {
    /// Keeps an outbox from now on: every transition with an event writes it.
    pub fn with_outbox(mut self, settings: OutboxSettings) -> Self {
        self.outbox = Some(settings);
        self
    }

    pub(super) async fn outbox_pending(
        &self,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.read(move |txn| {
            // Never written: no event yet.
            let Some(table) = open_or_none(txn, OUTBOX)? else {
                return Ok(Vec::new());
            };
            let mut entries = Vec::new();
            for entry in table.iter().map_err(unavailable)?.take(limit) {
                let (position, json) = entry.map_err(unavailable)?;
                let event: StoredEvent = serde_json::from_slice(json.value())
                    .map_err(|e| StoreError::Corrupt(format!("outbox entry: {e}")))?;
                entries.push(OutboxEntry {
                    position: position.value().to_string(),
                    event,
                });
            }
            Ok(entries)
        })
        .await
    }

    pub(super) async fn outbox_ack(&self, position: &str) -> Result<(), StoreError> {
        let position: u64 = position
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("outbox position {position:?}")))?;
        // Not durable: an acknowledgement lost in a crash means one more
        // delivery, which at-least-once allows.
        self.write(false, move |txn| {
            let mut table = txn.open_table(OUTBOX).map_err(unavailable)?;
            table.remove(position).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn outbox_len_now(&self) -> Result<u64, StoreError> {
        self.read(|txn| match open_or_none(txn, OUTBOX)? {
            Some(table) => table.len().map_err(unavailable),
            None => Ok(0),
        })
        .await
    }
}
