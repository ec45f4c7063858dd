//! The state reserve: a ballast file in the data directory, preallocated, that
//! keeps room for the embedded state store when the disk fills up. Uploads
//! admitted before the disk filled have their bytes' place already (part
//! files are preallocated), but recording their chunks needs the store to
//! grow a little; when a commit finds no space, the ballast is deleted so the
//! store can go on, creates are refused (507) while it is missing, and it is
//! laid down again once the disk has room for it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The ballast's name in the data directory.
pub const FILE_NAME: &str = ".state-reserve";

#[derive(Debug)]
pub struct StateReserve {
    path: PathBuf,
    size: u64,
    /// Free bytes to keep beside the ballast before it is laid down again.
    keep_free: u64,
    /// Deleted for the store's sake and not laid down again yet.
    released: AtomicBool,
    /// Release (the store's writer thread) and restore (a create, `/readyz`)
    /// take turns: a release landing in the middle of a restore would delete
    /// the file being laid down, and the restore would then say the reserve
    /// is in place when nothing is on disk.
    turn: Mutex<()>,
}

impl StateReserve {
    /// Lays the ballast of `size` bytes down in `data_dir` (kept if it is
    /// there already). With no room for it the reserve starts released.
    pub fn open(data_dir: &Path, size: u64, keep_free: u64) -> StateReserve {
        let reserve = StateReserve {
            path: data_dir.join(FILE_NAME),
            size,
            keep_free,
            released: AtomicBool::new(true),
            turn: Mutex::new(()),
        };
        reserve.restore();
        reserve
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Is the ballast missing, its room lent to the store?
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }

    /// Deletes the ballast, so that the state store has room to commit.
    /// Returns whether there was one to delete.
    pub fn release(&self) -> bool {
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        let was_held = !self.released.swap(true, Ordering::SeqCst);
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                tracing::warn!(
                    bytes = self.size,
                    "the disk is full: the state reserve is released so that admitted uploads can finish; new uploads are refused until there is room again"
                );
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => was_held,
            Err(e) => {
                tracing::error!(error = %e, path = %self.path.display(), "the state reserve could not be released");
                false
            }
        }
    }

    /// Lays the ballast down again if it is missing and the disk has room for
    /// it and `keep_free` besides. Returns whether it is in place.
    pub fn restore(&self) -> bool {
        if !self.is_released() {
            return true;
        }
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        if !self.is_released() {
            // Laid down by another restore while this one waited.
            return true;
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let free = fs4::available_space(dir).unwrap_or(0);
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.size) {
            // Left by a previous run: it is ours, and in place. (One cut short
            // by a crash before its allocation is laid down again below.)
            self.released.store(false, Ordering::SeqCst);
            return true;
        }
        if free < self.size.saturating_add(self.keep_free) {
            return false;
        }
        match lay_down(&self.path, self.size) {
            Ok(()) => {
                if self.released.swap(false, Ordering::SeqCst) {
                    tracing::info!(bytes = self.size, "the state reserve is in place");
                }
                true
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                tracing::warn!(error = %e, "the state reserve could not be laid down; trying again later");
                false
            }
        }
    }
}

fn lay_down(path: &Path, size: u64) -> io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // Real blocks, not a sparse file: the point is that they are taken.
    fs4::fs_std::FileExt::allocate(&file, size)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_then_restored() {
        let dir = tempfile::tempdir().unwrap();
        let r = StateReserve::open(dir.path(), 1 << 20, 0);
        assert!(!r.is_released());
        assert_eq!(
            std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(),
            1 << 20
        );
        assert!(r.release());
        assert!(r.is_released());
        assert!(!dir.path().join(FILE_NAME).exists());
        assert!(!r.release(), "nothing left to release");
        assert!(r.restore());
        assert!(!r.is_released());
        assert!(dir.path().join(FILE_NAME).exists());
    }

    #[test]
    fn a_short_ballast_left_by_a_crash_is_laid_down_in_full() {
        // A crash between creating the file and allocating it leaves it short.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"").unwrap();
        let r = StateReserve::open(dir.path(), 1 << 20, 0);
        assert!(!r.is_released());
        assert_eq!(
            std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(),
            1 << 20,
            "a reserve in place must hold its size"
        );
    }

    #[test]
    fn release_and_restore_racing_agree_with_the_disk() {
        // The writer thread releases while /readyz or a create restores: once
        // both are done, "in place" must mean the ballast is on disk.
        let dir = tempfile::tempdir().unwrap();
        let r = std::sync::Arc::new(StateReserve::open(dir.path(), 64 << 10, 0));
        let path = dir.path().join(FILE_NAME);
        for round in 0..300u64 {
            r.release();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let (r2, b2) = (r.clone(), barrier.clone());
            let restorer = std::thread::spawn(move || {
                b2.wait();
                r2.restore();
            });
            barrier.wait();
            // Land somewhere inside the restore.
            std::thread::sleep(std::time::Duration::from_micros(round % 40));
            r.release();
            restorer.join().unwrap();
            assert_eq!(
                !r.is_released(),
                path.exists(),
                "round {round}: in place = {}, on disk = {}",
                !r.is_released(),
                path.exists()
            );
        }
    }

    #[test]
    fn no_room_means_released() {
        let dir = tempfile::tempdir().unwrap();
        let r = StateReserve::open(dir.path(), 1 << 20, u64::MAX / 2);
        assert!(r.is_released());
        assert!(!r.restore());
    }
}
