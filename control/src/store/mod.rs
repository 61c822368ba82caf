//! The control plane's store: an etcd-shaped, revisioned, watchable key-value map.
//!
//! Why this shape: the apiserver's semantics are etcd's. `resourceVersion` is a revision of one
//! global counter, optimistic concurrency is a compare-and-swap on a key's mod revision, and a
//! watch resumes from any revision the store still remembers. Keeping that contract in one
//! narrow trait lets the embedded backend ([`sqlite::SqliteStore`], kine-style) and a later etcd
//! backend be swapped under the apiserver, and lets both run the same conformance tests
//! (`conformance_tests.rs`).
//!
//! Contract, beyond the method docs:
//! - Every create, update and delete takes the next revision; revisions never go back, not even
//!   across restarts or compaction.
//! - A watch stream delivers each change under its prefix once, in revision order. It ends
//!   (`recv()` gives `None`) when the store is dropped, when the receiver is dropped, or when the
//!   watcher falls too far behind; a watcher that sees the end re-watches from the last revision
//!   it received (or re-lists if that gives [`StoreError::Compacted`]).

pub mod sqlite;

/// A point in the store's history: one global counter over all keys (etcd's revision).
pub type Revision = i64;

/// One key's value at some revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, e.g. `/registry/pods/default/web-1`.
    pub key: String,
    /// The opaque value.
    pub value: Vec<u8>,
    /// The revision that created this incarnation of the key.
    pub create_revision: Revision,
    /// The revision of the change that produced this value.
    pub mod_revision: Revision,
}

/// What a change did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or replaced.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change. For Put: kv is the new value (mod_revision = the change's revision), prev the
/// value before (None for a create). For Delete: kv holds the deleted value with mod_revision =
/// the deletion's revision; prev = the value before deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Whether this is a put or a delete.
    pub kind: EventKind,
    /// The value after the change (for a delete: the deleted value at the deletion's revision).
    pub kv: KeyValue,
    /// The value before the change, if the key was live.
    pub prev: Option<KeyValue>,
}

impl WatchEvent {
    /// The revision of this change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// The live keys under a prefix at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResult {
    /// Sorted by key.
    pub kvs: Vec<KeyValue>,
    /// The revision the list reflects.
    pub revision: Revision,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create` of a live key.
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// `update` or `delete` of a key that is absent (or deleted).
    #[error("key {0} not found")]
    NotFound(String),
    /// A compare-and-swap lost: the key's mod revision is not the expected one.
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        /// The key.
        key: String,
        /// The mod revision the caller expected.
        expected: Revision,
        /// The key's actual mod revision.
        actual: Revision,
    },
    /// The requested revision's history has been compacted away.
    #[error("revision {requested} has been compacted (compacted up to {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The revision history was compacted to.
        compacted: Revision,
    },
    /// The requested revision has not happened yet.
    #[error("revision {requested} is in the future (current {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's newest revision.
        current: Revision,
    },
    /// A key the store cannot hold (empty).
    #[error("invalid key {0:?}: keys must not be empty")]
    InvalidKey(String),
    /// A negative revision.
    #[error("invalid revision {0}: revisions are not negative")]
    InvalidRevision(Revision),
    /// The on-disk schema was written by a newer skiff.
    #[error("unsupported store schema version {found} (this build knows up to {supported})")]
    UnsupportedSchema {
        /// The version found in the file.
        found: i64,
        /// The newest version this build understands.
        supported: i64,
    },
    /// The backend (database, I/O, worker thread) failed.
    #[error("storage backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An etcd-shaped, revisioned, watchable key-value store.
pub trait Store: Send + Sync + 'static {
    /// The key's latest live value, if any.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<KeyValue>, StoreError>> + Send;

    /// Every live key starting with `prefix`, as of revision `at` (0 = latest).
    /// Compacted/FutureRevision errors as named.
    fn list(
        &self,
        prefix: &str,
        at: Revision,
    ) -> impl Future<Output = Result<ListResult, StoreError>> + Send;

    /// Creates `key`; AlreadyExists if it is live.
    fn create(
        &self,
        key: &str,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<KeyValue, StoreError>> + Send;

    /// Compare-and-swap on mod revision: replaces `key` only if its mod_revision == expected;
    /// Conflict otherwise; NotFound if absent.
    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> impl Future<Output = Result<KeyValue, StoreError>> + Send;

    /// Deletes `key` (if `expected` is Some, only at that mod revision -> Conflict otherwise);
    /// returns the Delete event's kv (deleted value, mod_revision = deletion revision).
    /// NotFound if absent.
    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> impl Future<Output = Result<KeyValue, StoreError>> + Send;

    /// Every change to keys under `prefix` with revision > `after`, in revision order: first the
    /// history from the log, then live changes as they happen, with no gap and no duplicate
    /// between the two. Compacted if `after` < the compacted revision. The stream ends (None)
    /// when the store is dropped or the receiver is dropped (and when the watcher lags: see the
    /// module docs).
    fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<WatchEvent>, StoreError>> + Send;

    /// The newest revision (0 for an empty new store).
    fn current_revision(&self) -> impl Future<Output = Result<Revision, StoreError>> + Send;

    /// Forgets history at and below `revision`: superseded versions and tombstones go; each
    /// key's latest live version stays. Lists/watches below it then fail with Compacted.
    fn compact(&self, revision: Revision) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The revision history was compacted to (0 if never).
    fn compacted_revision(&self) -> impl Future<Output = Result<Revision, StoreError>> + Send;
}

#[cfg(test)]
#[path = "conformance_tests.rs"]
mod tests;
