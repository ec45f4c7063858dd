//! The resume state of unfinished uploads: one small JSON file per upload in
//! the user's cache directory, so that running the same `tranche upload`
//! again continues instead of starting over. The key is the file's canonical
//! path, size and modification time plus the server: a changed file or
//! another server starts a fresh upload.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ClientError;

/// What is remembered about one unfinished upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeState {
    pub server: String,
    pub path: PathBuf,
    pub size: u64,
    pub upload_id: String,
    pub chunk_size: u64,
    /// The whole file's SHA-256, so that a resumed run need not read it again.
    pub sha256: String,
    /// The per-upload token of the create answer, when authentication is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_token: Option<String>,
}

/// Identifies one local file at one moment, for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileKey {
    pub canonical: PathBuf,
    pub size: u64,
    pub mtime_ns: u128,
}

impl FileKey {
    pub fn of(path: &Path) -> Result<FileKey, ClientError> {
        let canonical = path
            .canonicalize()
            .map_err(|e| ClientError::local("cannot read it", e))?;
        let meta =
            std::fs::metadata(&canonical).map_err(|e| ClientError::local("cannot read it", e))?;
        if !meta.is_file() {
            return Err(ClientError::Local("not a regular file".into()));
        }
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok(FileKey {
            canonical,
            size: meta.len(),
            mtime_ns,
        })
    }
}

/// The directory of state files.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// `dir`, or `tranche/uploads` in the user's cache directory
    /// (`~/.cache` on Linux, honouring `XDG_CACHE_HOME`).
    pub fn new(dir: Option<PathBuf>) -> Result<StateDir, ClientError> {
        let dir = match dir {
            Some(d) => d,
            None => dirs::cache_dir()
                .ok_or_else(|| {
                    ClientError::Local(
                        "no cache directory for the resume state (HOME unset?); give --state-dir"
                            .into(),
                    )
                })?
                .join("tranche")
                .join("uploads"),
        };
        Ok(StateDir { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Makes sure state files can be written here, before any upload is
    /// started whose state would then be lost.
    pub fn check_writable(&self) -> Result<(), ClientError> {
        let fail = |e| ClientError::local(format!("resume state in {}", self.dir.display()), e);
        std::fs::create_dir_all(&self.dir).map_err(fail)?;
        let probe = self.dir.join(format!(".probe{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(fail)?;
        std::fs::remove_file(&probe).map_err(fail)
    }

    fn file_for(&self, server: &str, key: &FileKey) -> PathBuf {
        let mut h = Sha256::new();
        for part in [
            server.as_bytes(),
            key.canonical.as_os_str().as_encoded_bytes(),
            key.size.to_string().as_bytes(),
            key.mtime_ns.to_string().as_bytes(),
        ] {
            // Length-prefixed, so that no two different keys hash alike.
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        self.dir
            .join(format!("{}.json", &hex::encode(h.finalize())[..32]))
    }

    /// The state for this file and server, if a previous run left one. A
    /// state file that cannot be read is treated as absent: the worst case
    /// is an upload started afresh.
    pub fn load(&self, server: &str, key: &FileKey) -> Option<ResumeState> {
        let text = std::fs::read(self.file_for(server, key)).ok()?;
        let state: ResumeState = serde_json::from_slice(&text).ok()?;
        (state.server == server && state.path == key.canonical && state.size == key.size)
            .then_some(state)
    }

    /// Writes the state atomically (temp file, fsync, rename), so that a run
    /// killed at any moment leaves either the old state or the new one. The
    /// file is private: it may hold an upload token.
    pub fn save(&self, key: &FileKey, state: &ResumeState) -> Result<(), ClientError> {
        let target = self.file_for(&state.server, key);
        let fail = |e: std::io::Error| {
            ClientError::local(format!("resume state in {}", self.dir.display()), e)
        };
        std::fs::create_dir_all(&self.dir).map_err(fail)?;
        let tmp = target.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            fail(e)
        })
    }

    /// Forgets the state once the upload is finished or gone.
    pub fn remove(&self, server: &str, key: &FileKey) {
        let _ = std::fs::remove_file(self.file_for(server, key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(server: &str, key: &FileKey) -> ResumeState {
        ResumeState {
            server: server.into(),
            path: key.canonical.clone(),
            size: key.size,
            upload_id: "0b9d5c0e-6c1e-4b8e-9a4f-3d2f1c0b7a61".into(),
            chunk_size: 1024,
            sha256: "00".repeat(32),
            upload_token: Some("t".into()),
        }
    }

    #[test]
    fn saved_state_is_found_only_for_the_same_file_and_server() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.bin");
        std::fs::write(&file, b"hello").unwrap();
        let states = StateDir::new(Some(dir.path().join("state"))).unwrap();
        let key = FileKey::of(&file).unwrap();
        let s = state("http://a", &key);
        states.save(&key, &s).unwrap();

        assert_eq!(states.load("http://a", &key), Some(s));
        assert_eq!(states.load("http://b", &key), None);
        let changed = FileKey {
            mtime_ns: key.mtime_ns + 1,
            ..key.clone()
        };
        assert_eq!(states.load("http://a", &changed), None);

        states.remove("http://a", &key);
        assert_eq!(states.load("http://a", &key), None);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(states.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_corrupt_state_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.bin");
        std::fs::write(&file, b"hello").unwrap();
        let states = StateDir::new(Some(dir.path().join("state"))).unwrap();
        let key = FileKey::of(&file).unwrap();
        states.save(&key, &state("http://a", &key)).unwrap();
        let written = std::fs::read_dir(states.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        std::fs::write(written.path(), b"{not json").unwrap();
        assert_eq!(states.load("http://a", &key), None);
    }

    #[test]
    fn a_directory_is_not_a_file_to_upload() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            FileKey::of(dir.path()),
            Err(ClientError::Local(_))
        ));
    }
}
