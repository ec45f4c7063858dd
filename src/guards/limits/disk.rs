//! The disk guard: an upload is admitted only if the data directory can hold
//! it whole, keeping `reserve_free_bytes` free and, when set, the bytes of
//! unfinished uploads under `max_pending_bytes`. A create's part file is
//! preallocated to the upload's full size, so uploads in flight already count
//! as used space; admission and allocation are serialised so that two big
//! creates cannot both pass the same check.

use crate::blobs::{ByteStore, LocalDisk};
use std::sync::Arc;

use super::reserve::StateReserve;
use crate::core::Error;

#[derive(Debug)]
pub struct DiskGuard {
    reserve: u64,
    max_pending: u64,
    /// The embedded store's room for a full disk; while it is given up, no
    /// upload is admitted.
    state_reserve: Option<Arc<StateReserve>>,
    admission: tokio::sync::Mutex<()>,
}

impl DiskGuard {
    pub fn new(
        reserve: u64,
        max_pending: u64,
        state_reserve: Option<Arc<StateReserve>>,
    ) -> DiskGuard {
        DiskGuard {
            reserve,
            max_pending,
            state_reserve,
            admission: tokio::sync::Mutex::new(()),
        }
    }

    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Is the state reserve given up (the disk filled)? Lays it down again
    /// first if there is room now: a preallocation and an fsync of the
    /// whole reserve, so on the blocking pool, not on the runtime.
    pub async fn state_reserve_released(&self) -> bool {
        let Some(reserve) = self.state_reserve.clone() else {
            return false;
        };
        if !reserve.is_released() {
            return false;
        }
        tokio::task::spawn_blocking(move || !reserve.restore())
            .await
            .unwrap_or(true)
    }

    /// Admits an upload of `size` bytes and creates its part file, or says 507.
    pub async fn admit(&self, storage: &LocalDisk, id: uuid::Uuid, size: u64) -> Result<(), Error> {
        let _turn = self.admission.lock().await;
        self.check_room(storage, size).await?;
        storage.create(id, size).await?;
        Ok(())
    }

    /// Whether `needed` bytes that no create reserved (a write to an upload
    /// whose length was not known) fit beside the reserve and within the
    /// pending-bytes budget; else 507. The state reserve's room, once
    /// released, is the state store's alone.
    pub async fn check_room(&self, storage: &LocalDisk, needed: u64) -> Result<(), Error> {
        if self.state_reserve_released().await {
            tracing::warn!(
                needed,
                "write refused: the disk filled and the state reserve is in use"
            );
            return Err(Error::InsufficientStorage { needed });
        }
        let free = storage
            .free_space()
            .map_err(|e| Error::Internal(e.into()))?;
        if free.saturating_sub(self.reserve) < needed {
            tracing::warn!(
                needed,
                free,
                reserve = self.reserve,
                "write refused: disk nearly full"
            );
            return Err(Error::InsufficientStorage { needed });
        }
        if self.max_pending > 0 {
            let pending = storage
                .pending_bytes()
                .await
                .map_err(|e| Error::Internal(e.into()))?;
            if pending.saturating_add(needed) > self.max_pending {
                tracing::warn!(
                    needed,
                    pending,
                    max = self.max_pending,
                    "refused: pending-bytes budget"
                );
                return Err(Error::InsufficientStorage { needed });
            }
        }
        Ok(())
    }
}
