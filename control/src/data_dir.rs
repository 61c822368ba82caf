//! The data directory, claimed by one skiff-control at a time.
//!
//! The embedded store's watches are fed in-process, so a second server on the same files would
//! serve stale watches and race the allocators: `claim` takes an exclusive lock on
//! `<data-dir>/lock` for the life of the server and fails at once, clearly, when another
//! process holds it. The directory also keeps this instance's id, so a restarted server is
//! the same leader-election candidate and takes its own lease back at once instead of waiting
//! for it to expire.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another process holds the lock.
    #[error("{0} is in use by another skiff-control")]
    InUse(PathBuf),
    /// A file in it could not be read or written.
    #[error("cannot use {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A claimed data directory; the claim ends when this is dropped.
#[derive(Debug)]
pub struct DataDir {
    _lock: File,
    instance_id: String,
}

impl DataDir {
    /// Creates `path` if needed and locks it for this process.
    pub fn claim(path: &Path) -> Result<DataDir, DataDirError> {
        let io = |file: PathBuf| move |source| DataDirError::Io { path: file, source };
        std::fs::create_dir_all(path).map_err(io(path.to_path_buf()))?;
        let lock_path = path.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(lock_path.clone()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(DataDirError::InUse(path.to_path_buf())),
            Err(TryLockError::Error(source)) => return Err(io(lock_path)(source)),
        }
        let id_path = path.join("instance-id");
        let instance_id = match std::fs::read_to_string(&id_path) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
            Ok(_) => write_new_id(&id_path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_new_id(&id_path)?,
            Err(source) => {
                return Err(DataDirError::Io {
                    path: id_path,
                    source,
                });
            }
        };
        Ok(DataDir {
            _lock: lock,
            instance_id,
        })
    }

    /// This installation's id, the same across restarts.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }
}

fn write_new_id(path: &Path) -> Result<String, DataDirError> {
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(path, format!("{id}\n")).map_err(|source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("skiff-datadir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_claim_fails_until_the_first_ends() {
        let dir = temp_dir("claim");
        let first = DataDir::claim(&dir).unwrap();
        let second = DataDir::claim(&dir).unwrap_err();
        assert_eq!(
            second.to_string(),
            format!("{} is in use by another skiff-control", dir.display())
        );
        let id = first.instance_id().to_owned();
        drop(first);
        let again = DataDir::claim(&dir).unwrap();
        assert_eq!(again.instance_id(), id, "the id outlives the claim");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_directory_has_its_own_id() {
        let (a, b) = (temp_dir("a"), temp_dir("b"));
        let ids = (
            DataDir::claim(&a).unwrap().instance_id().to_owned(),
            DataDir::claim(&b).unwrap().instance_id().to_owned(),
        );
        assert_ne!(ids.0, ids.1);
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }
}
