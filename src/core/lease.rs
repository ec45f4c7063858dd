//! Holding a lease from the state store while work goes on: renewed in the
//! background, given back when the work ends or its request is cancelled.

use crate::context::AppContext;
use crate::core::{lease_ttl, Error};
use crate::state::{Lease, LeaseOf, StateStore};

/// Holds a lease: [`LeaseGuard::release`] gives it back; if the holder is
/// dropped first (a cancelled request), the lease is given back in the
/// background.
pub(super) struct LeaseGuard {
    ctx: AppContext,
    lease: Option<Lease>,
}

impl LeaseGuard {
    pub(super) fn new(ctx: &AppContext, lease: Lease) -> Self {
        LeaseGuard {
            ctx: ctx.clone(),
            lease: Some(lease),
        }
    }

    /// Runs `work` while renewing the lease in the background; fails with 409
    /// if the lease was lost (the holder stalled past its TTL and another
    /// request took over), so that two writers never go on together.
    pub(super) async fn hold_while<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Error> {
        let lease = self.lease.as_ref().expect("the lease is held");
        let ttl = lease_ttl(&lease.of);
        let renew = async {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match self.ctx.store.renew(lease, ttl).await {
                    Ok(true) => {}
                    // The store is unreachable: keep working; recording the
                    // result will fail too if it stays so.
                    Err(e) => tracing::warn!(error = %e, "could not renew lease"),
                    Ok(false) => return,
                }
            }
        };
        tokio::select! {
            out = work => Ok(out),
            () = renew => {
                tracing::warn!(lease = %lease.of, "lease lost; stopping");
                Err(match &lease.of {
                    LeaseOf::Chunk { index, .. } => Error::ChunkInProgress { index: *index },
                    LeaseOf::Create(_) => Error::CreateInProgress,
                    LeaseOf::Append(upload) => Error::UploadLocked(upload.to_string()),
                    LeaseOf::Complete(upload) => Error::UploadAssembling(upload.to_string()),
                    LeaseOf::Delivery => Error::Internal(anyhow::anyhow!("event delivery lease lost")),
                })
            }
        }
    }

    /// Takes the lease out, for a store call that releases it itself.
    pub(super) fn disarm(&mut self) -> Lease {
        self.lease.take().expect("the lease is held")
    }

    pub(super) async fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            if let Err(e) = self.ctx.store.release(&lease).await {
                tracing::warn!(error = %e, lease = %lease.of, "could not release lease; it will lapse");
            }
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            let store = self.ctx.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.release(&lease).await {
                    tracing::warn!(error = %e, lease = %lease.of, "could not release lease; it will lapse");
                }
            });
        }
    }
}
