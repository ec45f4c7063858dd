//! What every request handler and background task shares: settings, the state
//! store, the bytes on disk and the metrics. Cheap to clone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::storage::Storage;
use crate::store::Store;

#[derive(Clone)]
pub struct AppContext {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub storage: Storage,
    pub metrics: Metrics,
    /// Uploads whose running hash a background task is catching up, with a flag
    /// asking it to look again before it stops (set when more chunks land).
    pub catching_up: Arc<Mutex<HashMap<Uuid, bool>>>,
}
