//! The directory checkpoint store: `DIR/checkpoint.bin`, replaced by
//! writing a temporary file of a unique name, syncing it, and renaming it
//! over the checkpoint (a reader sees the old or the new one, never a mix).
//!
//! One process per directory (SPEC §18 "Instances"): opening the store takes
//! an exclusive `flock` on `DIR/lock`, held for as long as the process runs
//! (the kernel drops it when the process ends, `kill -9` included). A second
//! `cspulse serve` on the same directory fails at start instead of
//! overwriting the first one's checkpoints.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::StoreError;

const CHECKPOINT: &str = "checkpoint.bin";
const TEMP_PREFIX: &str = "checkpoint.bin.tmp";

/// Temporary files written by this process (the pid tells processes apart,
/// a forked writer included).
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A checkpoint directory, locked for this process.
#[derive(Clone, Debug)]
pub struct FileStore {
    dir: PathBuf,
    /// The open `DIR/lock`, whose `flock` is this process's claim to the
    /// directory; shared by the store's clones, released when the process ends.
    _lock: Arc<std::fs::File>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::File { path: path.to_owned(), source }
}

impl FileStore {
    /// Creates the directory if needed and locks it; fails if another
    /// process holds it.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(StoreError::Locked(dir.to_owned()));
            }
            return Err(StoreError::File { path, source: e });
        }
        // Now no other process writes here: temporary files left by a
        // writer that died mid-write are garbage.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(FileStore { dir: dir.to_owned(), _lock: Arc::new(lock) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.dir.join(CHECKPOINT);
        match std::fs::read(&path) {
            Ok(blob) => Ok(Some(blob)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::File { path, source }),
        }
    }

    pub fn save(&self, blob: &[u8]) -> Result<(), StoreError> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TEMP_PREFIX}.{}.{seq}", std::process::id()));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(blob)?;
            f.sync_all()
        })();
        if let Err(source) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::File { path: tmp, source });
        }
        let path = dir.join(CHECKPOINT);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_directory_is_refused_until_its_holder_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{TEMP_PREFIX}.1.0")), b"left by a dead writer").unwrap();
        let first = FileStore::open(dir.path()).unwrap();
        assert!(!dir.path().join(format!("{TEMP_PREFIX}.1.0")).exists(), "stale temporary files are removed");
        first.save(b"one").unwrap();
        let err = FileStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
        let clone = first.clone();
        drop(first);
        assert!(FileStore::open(dir.path()).is_err(), "a clone keeps the lock");
        drop(clone);
        let second = FileStore::open(dir.path()).unwrap();
        assert_eq!(second.load().unwrap().as_deref(), Some(&b"one"[..]));
    }
}
