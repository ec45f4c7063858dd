//! Quotas per owner: the bytes an owner (see [`Access::owner`]) stores and
//! has pending, counted in the state store's ledger ([`LedgerStore`]) as
//! uploads start, complete and go, and checked at create, before any byte is
//! sent. Records of versions before quotas have no owner and count for
//! nobody.

use bytesize::ByteSize;
use uuid::Uuid;

use crate::config::Settings;
use crate::context::AppContext;
use crate::core::live::store_error;
use crate::core::{dedup, Error};
use crate::guards::auth::Access;
use crate::hooks::Identity;
use crate::state::{Charge, LedgerStore, Quota, QuotaLimits, UsageKind};
use crate::upload::{Status, UploadRecord};
use crate::wire::{OwnerUsage, UsageReport};

/// Who starts an upload, and the quotas that hold for them. The default is
/// nobody: no quota, no dedup (for front ends that know no owner).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub owner: Option<String>,
    pub limits: QuotaLimits,
    /// Who it is, as the `pre_create` hook is told.
    pub identity: Identity,
}

impl Caller {
    /// The caller `access` is, under the server's `[quota]` lowered by the
    /// token's own claims (which never raise it).
    pub fn of(access: &Access, settings: &Settings) -> Caller {
        let (stored, pending) = access.quota_claims();
        let server = server_limits(settings);
        let lower = |a: Option<u64>, b: Option<u64>| a.into_iter().chain(b).min();
        Caller {
            owner: access.owner(),
            limits: QuotaLimits {
                max_stored: lower(server.max_stored, stored),
                max_pending: lower(server.max_pending, pending),
            },
            identity: Identity::of(access),
        }
    }
}

fn server_limits(settings: &Settings) -> QuotaLimits {
    let limit = |b: ByteSize| (b.0 > 0).then_some(b.0);
    QuotaLimits {
        max_stored: limit(settings.quota.max_stored_bytes),
        max_pending: limit(settings.quota.max_pending_bytes),
    }
}

/// Counts upload `id`'s `size` bytes for the caller, or refuses with 507
/// `quota_exceeded`, naming the quota, the usage and the limit.
pub(super) async fn charge(
    ctx: &AppContext,
    caller: &Caller,
    id: Uuid,
    kind: UsageKind,
    size: u64,
) -> Result<(), Error> {
    let Some(owner) = &caller.owner else {
        return Ok(());
    };
    let charged = ctx
        .store
        .charge_usage(owner, id, kind, size, caller.limits)
        .await
        .map_err(|e| store_error(ctx, e))?;
    let Charge::Refused { usage, quota } = charged else {
        return Ok(());
    };
    let (name, used, limit, what) = match quota {
        Quota::Pending => (
            "max_pending_bytes",
            usage.pending,
            caller.limits.max_pending.unwrap_or(0),
            format!("{} pending", ByteSize(usage.pending)),
        ),
        Quota::Stored => (
            "max_stored_bytes",
            usage.stored + usage.pending,
            caller.limits.max_stored.unwrap_or(0),
            format!(
                "{} stored and {} pending",
                ByteSize(usage.stored),
                ByteSize(usage.pending)
            ),
        ),
    };
    Err(Error::QuotaExceeded {
        quota: name,
        usage: used,
        limit,
        message: format!(
            "quota exceeded: {name} is {limit} bytes ({}) and this owner has {what}; \
             this upload of {size} bytes ({}) does not fit. Delete files or ask for a larger quota",
            ByteSize(limit),
            ByteSize(size)
        ),
    })
}

/// An upload completed: its pending bytes are stored bytes now.
pub(super) async fn settle(ctx: &AppContext, rec: &UploadRecord) {
    let Some(owner) = &rec.owner else { return };
    if let Err(e) = ctx.store.settle_usage(owner, rec.id).await {
        tracing::warn!(upload_id = %rec.id, error = %e, "usage not moved to stored");
    }
}

/// An upload's bytes count no more (aborted, failed, expired or deleted).
pub(super) async fn release(ctx: &AppContext, rec: &UploadRecord) {
    let Some(owner) = &rec.owner else { return };
    if let Err(e) = ctx.store.release_usage(owner, rec.id).await {
        tracing::warn!(upload_id = %rec.id, error = %e, "usage not released");
    }
}

/// A record left the state store (deleted, expired): its live followers are
/// told, what it counted goes, and a completed file leaves the dedup index.
/// Safe to call twice.
pub async fn record_gone(ctx: &AppContext, rec: &UploadRecord) {
    super::notify(ctx, rec.id);
    release(ctx, rec).await;
    if rec.status == Status::Completed {
        dedup::unindex(ctx, rec).await;
    }
}

/// `GET /api/v1/usage`: every owner for an API key (or with authentication
/// off), the caller's own for a token.
pub async fn usage_report(ctx: &AppContext, access: &Access) -> Result<UsageReport, Error> {
    access.require_credentials()?;
    let every = matches!(access, Access::Open | Access::Admin { .. });
    let caller = Caller::of(access, &ctx.settings);
    let owner = match (&caller.owner, every) {
        (_, true) => None,
        (Some(owner), false) => Some(owner.as_str()),
        (None, false) => {
            return Err(Error::Forbidden(
                "this token names no owner (no sub); ask with an API key".into(),
            ))
        }
    };
    let rows = ctx
        .store
        .usage(owner)
        .await
        .map_err(|e| store_error(ctx, e))?;
    let limits = if every {
        server_limits(&ctx.settings)
    } else {
        caller.limits
    };
    let mut owners: Vec<OwnerUsage> = rows
        .into_iter()
        .map(|(owner, u)| OwnerUsage {
            owner,
            stored_bytes: u.stored,
            pending_bytes: u.pending,
            max_stored_bytes: limits.max_stored,
            max_pending_bytes: limits.max_pending,
        })
        .collect();
    if let (Some(owner), true) = (owner, owners.is_empty()) {
        // An owner with nothing counted yet: zeros, not an empty answer.
        owners.push(OwnerUsage {
            owner: owner.to_owned(),
            max_stored_bytes: limits.max_stored,
            max_pending_bytes: limits.max_pending,
            ..OwnerUsage::default()
        });
    }
    Ok(UsageReport { owners })
}
