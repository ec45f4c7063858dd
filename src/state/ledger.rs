//! What the state store keeps about completed files beside their records:
//! each owner's usage (for quotas), the dedup index (SHA-256 and size to a
//! file), and the list of completed uploads (for the scrub). A concern of
//! its own, so a trait of its own ([`LedgerStore`]), on both backends.
//!
//! Usage is a ledger of entries (one per upload: its announced size, pending
//! or stored) with running totals per owner. The
//! ledger makes each change idempotent (charging an upload twice, or
//! releasing it twice, changes nothing the second time), so a transition
//! repeated after a crash or a race never counts twice. The limits are
//! checked in the same atomic step as the charge: two creates racing for
//! the last bytes of a quota cannot both get them.

use uuid::Uuid;

use super::{Store, StoreError, Update};
use crate::wire::Processing;

/// Where an upload's bytes count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageKind {
    /// An unfinished upload: its announced size.
    Pending,
    /// A completed file: its size.
    Stored,
}

impl UsageKind {
    pub fn code(self) -> u8 {
        match self {
            UsageKind::Pending => b'p',
            UsageKind::Stored => b's',
        }
    }

    pub fn from_code(code: u8) -> Option<UsageKind> {
        match code {
            b'p' => Some(UsageKind::Pending),
            b's' => Some(UsageKind::Stored),
            _ => None,
        }
    }
}

/// One owner's totals, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub pending: u64,
    pub stored: u64,
}

/// An owner's limits; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    pub max_stored: Option<u64>,
    pub max_pending: Option<u64>,
}

/// Which quota a charge would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    Stored,
    Pending,
}

/// What a charge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Counted (or counted already); the totals before it.
    Charged(Usage),
    /// Refused: `quota` would be exceeded; the totals as they stand.
    Refused { usage: Usage, quota: Quota },
}

/// Whether `size` more bytes of `kind` fit `limits` on top of `usage`.
/// Pending bytes count against the stored quota too: they are stored bytes
/// once their uploads complete, and a quota that let many uploads start at
/// once would be passed by all of them completing.
pub fn check(usage: Usage, kind: UsageKind, size: u64, limits: QuotaLimits) -> Result<(), Quota> {
    if kind == UsageKind::Pending
        && limits
            .max_pending
            .is_some_and(|max| usage.pending.saturating_add(size) > max)
    {
        return Err(Quota::Pending);
    }
    let total = usage
        .stored
        .saturating_add(usage.pending)
        .saturating_add(size);
    if limits.max_stored.is_some_and(|max| total > max) {
        return Err(Quota::Stored);
    }
    Ok(())
}

/// What every state backend keeps besides upload records; see the module.
#[allow(async_fn_in_trait)]
pub trait LedgerStore {
    /// Counts `size` bytes of upload `upload` as `owner`'s `kind`, if they
    /// fit `limits` ([`check`]); else changes nothing and says which quota
    /// they would pass. Atomic (the check and the count are one step) and
    /// durable. Idempotent: an upload counted already (of either kind) is
    /// `Charged` again with nothing added.
    async fn charge_usage(
        &self,
        owner: &str,
        upload: Uuid,
        kind: UsageKind,
        size: u64,
        limits: QuotaLimits,
    ) -> Result<Charge, StoreError>;

    /// Moves upload `upload`'s pending bytes to `owner`'s stored bytes (it
    /// completed). Atomic, durable, idempotent; nothing for an upload that
    /// is not pending.
    async fn settle_usage(&self, owner: &str, upload: Uuid) -> Result<(), StoreError>;

    /// Forgets upload `upload`'s bytes, pending or stored (it was aborted,
    /// failed, expired or deleted). Atomic, durable, idempotent.
    async fn release_usage(&self, owner: &str, upload: Uuid) -> Result<(), StoreError>;

    /// The totals of `owner` (none if it never had usage), or of every owner
    /// that ever had usage (`None`), sorted by owner.
    async fn usage(&self, owner: Option<&str>) -> Result<Vec<(String, Usage)>, StoreError>;

    /// Adds completed file `file` to the files under dedup key `key` (a key
    /// names every file with that content, so that deleting one leaves the
    /// others findable). Durable, idempotent. An entry is only a hint:
    /// whoever reads it checks the file it names, which may be gone.
    async fn index_content(&self, key: &str, file: Uuid) -> Result<(), StoreError>;

    /// Up to `limit` of the files under dedup key `key`, in no given order.
    async fn find_content(&self, key: &str, limit: usize) -> Result<Vec<Uuid>, StoreError>;

    /// Removes `file` from the files under dedup key `key` (the others stay).
    /// Idempotent.
    async fn unindex_content(&self, key: &str, file: Uuid) -> Result<(), StoreError>;

    /// Ids of every `completed` upload, for the scrub (which checks that
    /// each one's bytes are there). Need not be a snapshot.
    async fn completed_ids(&self) -> Result<Vec<Uuid>, StoreError>;

    /// Keeps a worker's report on completed upload `id`, numbered one past
    /// the last report's `revision` (see [`super::rules::report_processing`]);
    /// `Rejected` if the upload is not completed. Atomic, durable.
    async fn set_processing(&self, id: Uuid, report: Processing) -> Result<Update, StoreError>;
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Embedded($s) => $e,
            Store::Redis($s) => $e,
        }
    };
}

impl LedgerStore for Store {
    async fn charge_usage(
        &self,
        owner: &str,
        upload: Uuid,
        kind: UsageKind,
        size: u64,
        limits: QuotaLimits,
    ) -> Result<Charge, StoreError> {
        dispatch!(self, s => s.charge_usage(owner, upload, kind, size, limits).await)
    }
    async fn settle_usage(&self, owner: &str, upload: Uuid) -> Result<(), StoreError> {
        dispatch!(self, s => s.settle_usage(owner, upload).await)
    }
    async fn release_usage(&self, owner: &str, upload: Uuid) -> Result<(), StoreError> {
        dispatch!(self, s => s.release_usage(owner, upload).await)
    }
    async fn usage(&self, owner: Option<&str>) -> Result<Vec<(String, Usage)>, StoreError> {
        dispatch!(self, s => s.usage(owner).await)
    }
    async fn index_content(&self, key: &str, file: Uuid) -> Result<(), StoreError> {
        dispatch!(self, s => s.index_content(key, file).await)
    }
    async fn find_content(&self, key: &str, limit: usize) -> Result<Vec<Uuid>, StoreError> {
        dispatch!(self, s => s.find_content(key, limit).await)
    }
    async fn unindex_content(&self, key: &str, file: Uuid) -> Result<(), StoreError> {
        dispatch!(self, s => s.unindex_content(key, file).await)
    }
    async fn completed_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        dispatch!(self, s => s.completed_ids().await)
    }
    async fn set_processing(&self, id: Uuid, report: Processing) -> Result<Update, StoreError> {
        dispatch!(self, s => s.set_processing(id, report).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_bytes_count_against_both_quotas() {
        let limits = QuotaLimits {
            max_stored: Some(100),
            max_pending: Some(50),
        };
        let usage = Usage {
            pending: 40,
            stored: 30,
        };
        assert_eq!(check(usage, UsageKind::Pending, 10, limits), Ok(()));
        assert_eq!(
            check(usage, UsageKind::Pending, 11, limits),
            Err(Quota::Pending)
        );
        assert_eq!(check(usage, UsageKind::Stored, 30, limits), Ok(()));
        assert_eq!(
            check(usage, UsageKind::Stored, 31, limits),
            Err(Quota::Stored)
        );
        assert_eq!(
            check(usage, UsageKind::Pending, 1, QuotaLimits::default()),
            Ok(())
        );
    }
}
