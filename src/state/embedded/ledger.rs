//! The embedded store's [`LedgerStore`]: usage and the dedup index in tables
//! of their own, each change one check-and-write in the group transaction.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use uuid::Uuid;

use super::{load, open_or_none, unavailable, EmbeddedStore, UPLOADS};
use crate::state::ledger::{check, Charge, LedgerStore, QuotaLimits, Usage, UsageKind};
use crate::state::{rules, StoreError, Update};
use crate::upload::Status;
use crate::wire::Processing;

/// Owner → (pending bytes, stored bytes).
const USAGE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("usage");
/// (owner, upload id) → (kind code, bytes): the ledger behind the totals.
const USAGE_ENTRIES: TableDefinition<(&str, u128), (u8, u64)> =
    TableDefinition::new("usage_entries");
/// (dedup key, file id) → (): every file with that content.
const CONTENT: TableDefinition<(&str, u128), ()> = TableDefinition::new("content");

fn totals(
    usage: &impl ReadableTable<&'static str, (u64, u64)>,
    owner: &str,
) -> Result<Usage, StoreError> {
    Ok(match usage.get(owner).map_err(unavailable)? {
        Some(v) => {
            let (pending, stored) = v.value();
            Usage { pending, stored }
        }
        None => Usage::default(),
    })
}

/// Applies a change of `owner`'s ledger entry for `upload`: `change` gets
/// the entry (if any) and returns the one to keep (if any); the totals
/// follow.
fn rewrite(
    txn: &WriteTransaction,
    owner: &str,
    upload: Uuid,
    change: impl FnOnce(Option<(UsageKind, u64)>) -> Option<(UsageKind, u64)>,
) -> Result<(), StoreError> {
    let mut entries = txn.open_table(USAGE_ENTRIES).map_err(unavailable)?;
    let key = (owner, upload.as_u128());
    let before = entries
        .get(key)
        .map_err(unavailable)?
        .and_then(|v| UsageKind::from_code(v.value().0).map(|k| (k, v.value().1)));
    let after = change(before);
    if before == after {
        return Ok(());
    }
    match after {
        Some((kind, size)) => entries.insert(key, (kind.code(), size)),
        None => entries.remove(key),
    }
    .map_err(unavailable)?;
    let mut usage = txn.open_table(USAGE).map_err(unavailable)?;
    let mut t = totals(&usage, owner)?;
    for (sign, entry) in [(-1i8, before), (1, after)] {
        let Some((kind, size)) = entry else { continue };
        let total = match kind {
            UsageKind::Pending => &mut t.pending,
            UsageKind::Stored => &mut t.stored,
        };
        *total = if sign < 0 {
            total.saturating_sub(size)
        } else {
            total.saturating_add(size)
        };
    }
    usage
        .insert(owner, (t.pending, t.stored))
        .map_err(unavailable)?;
    Ok(())
}

impl LedgerStore for EmbeddedStore {
    async fn charge_usage(
        &self,
        owner: &str,
        upload: Uuid,
        kind: UsageKind,
        size: u64,
        limits: QuotaLimits,
    ) -> Result<Charge, StoreError> {
        let owner = owner.to_owned();
        self.write(true, move |txn| {
            let usage = totals(&txn.open_table(USAGE).map_err(unavailable)?, &owner)?;
            let entries = txn.open_table(USAGE_ENTRIES).map_err(unavailable)?;
            let counted = entries
                .get((owner.as_str(), upload.as_u128()))
                .map_err(unavailable)?
                .is_some();
            drop(entries);
            if counted {
                return Ok(Charge::Charged(usage));
            }
            if let Err(quota) = check(usage, kind, size, limits) {
                return Ok(Charge::Refused { usage, quota });
            }
            rewrite(txn, &owner, upload, |_| Some((kind, size)))?;
            Ok(Charge::Charged(usage))
        })
        .await
    }

    async fn settle_usage(&self, owner: &str, upload: Uuid) -> Result<(), StoreError> {
        let owner = owner.to_owned();
        self.write(true, move |txn| {
            rewrite(txn, &owner, upload, |entry| match entry {
                Some((UsageKind::Pending, size)) => Some((UsageKind::Stored, size)),
                other => other,
            })
        })
        .await
    }

    async fn release_usage(&self, owner: &str, upload: Uuid) -> Result<(), StoreError> {
        let owner = owner.to_owned();
        self.write(true, move |txn| rewrite(txn, &owner, upload, |_| None))
            .await
    }

    async fn usage(&self, owner: Option<&str>) -> Result<Vec<(String, Usage)>, StoreError> {
        let owner = owner.map(str::to_owned);
        self.read(move |txn| {
            let Some(table) = open_or_none(txn, USAGE)? else {
                return Ok(Vec::new());
            };
            if let Some(owner) = owner {
                let found = table.get(owner.as_str()).map_err(unavailable)?.is_some();
                return Ok(if found {
                    vec![(owner.clone(), totals(&table, &owner)?)]
                } else {
                    Vec::new()
                });
            }
            let mut all = Vec::new();
            for entry in table.iter().map_err(unavailable)? {
                let (k, v) = entry.map_err(unavailable)?;
                let (pending, stored) = v.value();
                all.push((k.value().to_owned(), Usage { pending, stored }));
            }
            Ok(all)
        })
        .await
    }

    async fn index_content(&self, key: &str, file: Uuid) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(true, move |txn| {
            let mut table = txn.open_table(CONTENT).map_err(unavailable)?;
            table
                .insert((key.as_str(), file.as_u128()), ())
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn find_content(&self, key: &str, limit: usize) -> Result<Vec<Uuid>, StoreError> {
        let key = key.to_owned();
        self.read(move |txn| {
            let Some(table) = open_or_none(txn, CONTENT)? else {
                return Ok(Vec::new());
            };
            let range = table
                .range((key.as_str(), 0u128)..=(key.as_str(), u128::MAX))
                .map_err(unavailable)?;
            let mut files = Vec::new();
            for entry in range.take(limit) {
                let (k, _) = entry.map_err(unavailable)?;
                files.push(Uuid::from_u128(k.value().1));
            }
            Ok(files)
        })
        .await
    }

    async fn unindex_content(&self, key: &str, file: Uuid) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(true, move |txn| {
            let mut table = txn.open_table(CONTENT).map_err(unavailable)?;
            table
                .remove((key.as_str(), file.as_u128()))
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn completed_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        self.read(|txn| {
            let uploads = txn.open_table(UPLOADS).map_err(unavailable)?;
            let mut ids = Vec::new();
            for entry in uploads.iter().map_err(unavailable)? {
                let (k, _) = entry.map_err(unavailable)?;
                let id = Uuid::from_u128(k.value());
                // Decoding every record is what a scrub, reading every
                // file, can afford.
                if load(&uploads, id)?.is_some_and(|r| r.status == Status::Completed) {
                    ids.push(id);
                }
            }
            Ok(ids)
        })
        .await
    }

    async fn set_processing(&self, id: Uuid, report: Processing) -> Result<Update, StoreError> {
        self.update(id, true, move |rec| rules::report_processing(rec, &report))
            .await
    }
}
