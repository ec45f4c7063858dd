//! The embedded store's writer: one thread that commits every change, in
//! groups (one transaction and one fsync for all changes queued meanwhile),
//! and opens the database again after an I/O error.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

use redb::{Database, WriteTransaction};

use super::{unavailable, EXPIRY, IDEMPOTENCY, UPLOADS, USES};
use crate::config::Durability;
use crate::guards::limits::reserve::StateReserve;
use crate::state::StoreError;

/// Largest number of changes committed together.
pub(super) const MAX_BATCH: usize = 512;

pub(super) type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

pub(super) type Change = Box<dyn FnOnce(&WriteTransaction) -> Result<Reply, StoreError> + Send>;

/// One change for the writer thread.
pub(super) struct Job {
    /// Must the change survive a crash once answered? The running hash need
    /// not: losing its last steps only means hashing those bytes again. A
    /// batch of such changes only is committed without fsync.
    pub(super) durable: bool,
    pub(super) run: Change,
}

/// The open database, or none while the writer opens it again after an I/O
/// error. Readers take a handle for the length of one read; redb lets one
/// handle per file be open, so the writer reopens once they have let go.
pub(super) struct Slot {
    pub(super) path: PathBuf,
    pub(super) db: RwLock<Option<Arc<Database>>>,
    /// Times the database was opened again after an error.
    pub(super) reopened: AtomicU64,
}

impl Slot {
    pub(super) fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .expect("store slot poisoned")
            .clone()
            .ok_or_else(|| {
                StoreError::Unavailable(
                    "the state database is being opened again after an I/O error".into(),
                )
            })
    }
}

/// Opens (or creates) the database, with its tables, so that readers never
/// find them missing. redb checks and repairs the file on open.
pub(super) fn open_database(path: &Path) -> Result<Database, StoreError> {
    let db = Database::builder()
        .set_cache_size(16 << 20)
        .create(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    let txn = db.begin_write().map_err(unavailable)?;
    txn.open_table(UPLOADS).map_err(unavailable)?;
    txn.open_table(EXPIRY).map_err(unavailable)?;
    txn.open_table(IDEMPOTENCY).map_err(unavailable)?;
    txn.open_table(USES).map_err(unavailable)?;
    txn.commit().map_err(unavailable)?;
    Ok(db)
}

pub(super) fn writer_loop(
    slot: &Slot,
    queue: &mpsc::Receiver<Job>,
    durability: Durability,
    reserve: Option<&StateReserve>,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let db = match slot.get() {
            Ok(db) => db,
            // Still shut after an error: try again now, for this batch.
            Err(_) => match reopen(slot, reserve) {
                Some(db) => db,
                None => continue, // dropping the batch answers each caller "unavailable"
            },
        };
        if !commit_batch(&db, batch, durability) && needs_reopen(&db) {
            drop(db);
            reopen(slot, reserve);
        }
    }
}

/// Runs and commits one batch; answers its callers. Returns whether it landed.
fn commit_batch(db: &Database, batch: Vec<Job>, durability: Durability) -> bool {
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a store transaction");
            return false; // dropping the batch answers each caller "unavailable"
        }
    };
    let durable = batch.iter().any(|job| job.durable);
    txn.set_durability(match (durable, durability) {
        (false, _) => redb::Durability::None,
        (true, Durability::Full) => redb::Durability::Immediate,
        (true, Durability::Relaxed) => redb::Durability::Eventual,
    });
    let mut replies = Vec::with_capacity(batch.len());
    let mut failed = None;
    for job in batch {
        // A change that panics (a bug) fails its batch, not the writer: a
        // dead writer thread would answer every later write 503 for good.
        let run = std::panic::AssertUnwindSafe(|| (job.run)(&txn));
        match std::panic::catch_unwind(run) {
            Ok(Ok(reply)) => replies.push(reply),
            Ok(Err(e)) => {
                failed = Some(e);
                break;
            }
            Err(_) => {
                tracing::error!("a state store change panicked; its batch is refused");
                failed = Some(StoreError::Corrupt("a state store change panicked".into()));
                break;
            }
        }
    }
    let result = match failed {
        // A change failed half-way: none of the batch may land.
        Some(e) => {
            let _ = txn.abort();
            Err(e)
        }
        None => txn.commit().map_err(unavailable),
    };
    if let Err(e) = &result {
        tracing::error!(error = %e, "store commit failed");
    }
    let landed = result.is_ok();
    for reply in replies {
        reply(match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        });
    }
    landed
}

/// After a failed batch: does the database refuse writes until it is opened
/// again (redb's answer to an I/O error)?
fn needs_reopen(db: &Database) -> bool {
    match db.begin_write() {
        Ok(txn) => {
            let _ = txn.abort();
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "the state database refuses writes; opening it again");
            true
        }
    }
}

/// Shuts the database and opens it again, giving up the state reserve first
/// when the disk is full. Waits a little for readers to let go of their
/// handles; if it cannot open it yet (no space to repair, say), the store
/// stays shut and the next write tries again.
fn reopen(slot: &Slot, reserve: Option<&StateReserve>) -> Option<Arc<Database>> {
    if let Some(reserve) = reserve {
        let dir = slot.path.parent().unwrap_or(Path::new("."));
        let free = fs4::available_space(dir).unwrap_or(0);
        if free < reserve.size() {
            reserve.release();
        }
    }
    let mut guard = slot.db.write().expect("store slot poisoned");
    if let Some(old) = guard.take() {
        drop(old);
    }
    for attempt in 0..50 {
        match open_database(&slot.path) {
            Ok(db) => {
                let db = Arc::new(db);
                *guard = Some(db.clone());
                slot.reopened.fetch_add(1, Ordering::Relaxed);
                tracing::info!("the state database is open again");
                return Some(db);
            }
            // A reader still holds the old handle: it lets go within a read.
            Err(e) if e.to_string().contains("already open") && attempt < 49 => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::error!(error = %e, "the state database cannot be opened yet; writes wait");
                return None;
            }
        }
    }
    None
}
