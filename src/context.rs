//! What every request handler and background task shares: settings, the clock,
//! the state store, the bytes on disk, the metrics, and the gates a request passes
//! (credentials, rates, disk space, chunk slots). Cheap to clone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::blobs::LocalDisk;
use crate::clock::Clock;
use crate::config::Settings;
use crate::guards::auth::Authenticator;
use crate::guards::limits::disk::DiskGuard;
use crate::guards::limits::inflight::ChunkSlots;
use crate::guards::rate::RateLimiter;
use crate::hooks::Hooks;
use crate::metrics::Metrics;
use crate::state::Store;

#[derive(Clone)]
pub struct AppContext {
    pub settings: Arc<Settings>,
    /// What every time-dependent rule reads; tests move it forward.
    pub clock: Clock,
    pub store: Store,
    pub storage: LocalDisk,
    pub metrics: Metrics,
    pub auth: Arc<Authenticator>,
    pub rate_limiter: RateLimiter,
    pub disk_guard: Arc<DiskGuard>,
    pub chunk_slots: ChunkSlots,
    /// Uploads whose running hash a background task is catching up, with a flag
    /// asking it to look again before it stops (set when more chunks land).
    pub catching_up: Arc<Mutex<HashMap<Uuid, bool>>>,
    /// Held while a scrub runs: one at a time.
    pub scrubbing: Arc<tokio::sync::Mutex<()>>,
    /// The application's blocking hooks (`[hooks]`).
    pub hooks: Arc<Hooks>,
    /// Live followers of uploads (SSE), woken by [`crate::core::notify`].
    pub watchers: crate::core::Watchers,
    /// Cancelled when the server starts to stop: what never ends by itself
    /// (an SSE stream) ends then, so a graceful stop does not wait for it.
    pub stopping: tokio_util::sync::CancellationToken,
}
