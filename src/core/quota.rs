//! A create token's `max_uploads`: uses counted in the state store, taken
//! only by creates that really start an upload.

use crate::context::AppContext;
use crate::core::live::store_error;
use crate::core::Error;
use crate::guards::auth::Access;
use crate::state::StateStore;

/// A create token's `max_uploads`: how many uploads it may start, counted in
/// the state store under the token's name until shortly after it expires.
#[derive(Debug, Clone)]
pub struct UseLimit {
    name: String,
    max: u64,
    until_ms: i64,
}

impl UseLimit {
    /// The limit `access` carries, if any.
    pub fn of(access: &Access) -> Option<UseLimit> {
        match access {
            Access::Create { claims, token_id } => claims.max_uploads.map(|max| UseLimit {
                name: token_id.clone(),
                max,
                // Past the token's own expiry plus leeway, the count can go.
                until_ms: (claims.exp as i64 + 300).saturating_mul(1000),
            }),
            _ => None,
        }
    }

    /// Takes one use, or refuses with 403 when all are taken. The use is
    /// given back unless [`TakenUse::keep`] is called: a create that fails,
    /// or whose request is cancelled half-way, leaves the count as it was.
    pub(super) async fn take(&self, ctx: &AppContext) -> Result<TakenUse, Error> {
        let used = ctx
            .store
            .add_use(&self.name, 1, self.until_ms)
            .await
            .map_err(|e| store_error(ctx, e))?;
        if used > self.max {
            self.give_back(ctx).await;
            return Err(Error::Forbidden(format!(
                "this token may start at most {} upload(s) and has started them all; ask for a new token",
                self.max
            )));
        }
        Ok(TakenUse {
            ctx: ctx.clone(),
            limit: Some(self.clone()),
        })
    }

    /// Returns a use taken for a create that did not start an upload.
    async fn give_back(&self, ctx: &AppContext) {
        if let Err(e) = ctx.store.add_use(&self.name, -1, self.until_ms).await {
            tracing::warn!(error = %e, "a token use could not be given back");
        }
    }
}

/// A `max_uploads` use held by a create in progress; dropped unsettled (the
/// request was cancelled half-way), it is given back in the background.
pub(super) struct TakenUse {
    ctx: AppContext,
    /// `None` once kept.
    limit: Option<UseLimit>,
}

impl TakenUse {
    /// The upload started: the use stays taken.
    pub(super) fn keep(mut self) {
        self.limit = None;
    }

    /// The create failed: the use goes back now.
    pub(super) async fn give_back(mut self) {
        if let Some(limit) = self.limit.take() {
            limit.give_back(&self.ctx).await;
        }
    }
}

impl Drop for TakenUse {
    fn drop(&mut self) {
        if let Some(limit) = self.limit.take() {
            let ctx = self.ctx.clone();
            tokio::spawn(async move { limit.give_back(&ctx).await });
        }
    }
}
