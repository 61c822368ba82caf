//! Where allocations live between plugin runs: a file under a lock, or memory for tests.
//!
//! [`DiskStore`] keeps the whole state of one network in one JSON file (`state.json`) rather
//! than host-local's one file per address. The reason is atomicity: a reservation and the
//! round-robin cursor change together in one `rename`, so a process killed at any instruction
//! leaves either the old state or the new one, never half of each; and a lookup by container
//! is one read, not a directory scan. The file is small (a /24 is under 30 KiB) and the rewrite
//! happens under the lock anyway.
//!
//! Concurrency: `flock(LOCK_EX)` on a separate `lock` file (via `File::lock`) for the whole
//! read-modify-write. The kernel drops the lock when the holder dies, so a SIGKILLed ADD cannot
//! wedge the next one. The new state is written to `state.json.tmp`, `fsync`ed, and renamed over
//! `state.json`; a leftover temp file from a killed writer is simply overwritten next time.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::{Attachment, IpamError};

/// The state file's name inside a network's state folder.
pub const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
const TEMP_FILE: &str = "state.json.tmp";

/// Every reservation of one network, and the round-robin cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocations {
    /// Address → holder.
    #[serde(default)]
    pub reservations: BTreeMap<Ipv4Addr, Attachment>,
    /// The last address handed out.
    #[serde(default)]
    pub last_reserved: Option<Ipv4Addr>,
}

/// Keeps [`Allocations`] consistent across concurrent plugin processes.
pub trait IpamStore {
    /// Runs `f` on the current allocations under an exclusive lock and keeps what it changed.
    fn update<R>(&self, f: impl FnOnce(&mut Allocations) -> R) -> Result<R, IpamError>;
}

/// The on-disk store of one network: `<dataDir>/<network name>/state.json`.
#[derive(Clone, Debug)]
pub struct DiskStore {
    dir: PathBuf,
}

impl DiskStore {
    /// Opens (creating it if needed) the state folder `dir`.
    pub fn open(dir: &Path) -> Result<Self, IpamError> {
        fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        Ok(DiskStore {
            dir: dir.to_owned(),
        })
    }

    fn read(&self) -> Result<Allocations, IpamError> {
        let path = self.dir.join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| IpamError::Corrupt { path, source })
            }
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(Allocations::default()),
            Err(err) => Err(io_error("read", &path)(err)),
        }
    }

    fn write(&self, state: &Allocations) -> Result<(), IpamError> {
        let temp = self.dir.join(TEMP_FILE);
        let bytes = serde_json::to_vec_pretty(state).expect("allocations always serialize");
        let mut file = File::create(&temp).map_err(io_error("create", &temp))?;
        file.write_all(&bytes).map_err(io_error("write", &temp))?;
        file.sync_all().map_err(io_error("sync", &temp))?;
        let path = self.dir.join(STATE_FILE);
        fs::rename(&temp, &path).map_err(io_error("replace", &path))
    }
}

impl IpamStore for DiskStore {
    fn update<R>(&self, f: impl FnOnce(&mut Allocations) -> R) -> Result<R, IpamError> {
        let lock_path = self.dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error("open", &lock_path))?;
        lock.lock().map_err(io_error("lock", &lock_path))?;
        let before = self.read()?;
        let mut state = before.clone();
        let answer = f(&mut state);
        if state != before {
            self.write(&state)?;
        }
        // The lock is released when `lock` is closed, after the rename.
        drop(lock);
        Ok(answer)
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IpamError {
    let path = path.to_owned();
    move |source| IpamError::Io {
        action,
        path,
        source,
    }
}

/// An in-memory store (the fake), shared by clones.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<Allocations>>,
}

impl MemoryStore {
    /// A copy of the current allocations.
    pub fn snapshot(&self) -> Allocations {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl IpamStore for MemoryStore {
    fn update<R>(&self, f: impl FnOnce(&mut Allocations) -> R) -> Result<R, IpamError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(f(&mut state))
    }
}
