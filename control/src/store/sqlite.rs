//! The embedded store: an append-only change log in one SQLite file, kine-style.
//!
//! Layout. Every create, update and delete appends one row to `kv`; the row's
//! `INTEGER PRIMARY KEY AUTOINCREMENT` id *is* the revision. AUTOINCREMENT (not plain rowid)
//! matters: SQLite then never reuses an id, even after compaction deleted the newest rows, so
//! the revision counter survives restarts and never goes back. A row carries the key (`name`),
//! `created`/`deleted` flags, the key's `create_revision`, the id of the key's previous row
//! (`prev_revision`, 0 for a create) and the value; a delete's row (tombstone) repeats the
//! deleted value, so a Delete event can be rebuilt from the log.
//!
//! Why a log and not a plain map: history is what a watch resumes from. A watcher that
//! reconnects, or an apiserver that restarts, asks for "everything after revision R" and gets
//! it from the table with no gap; `list` at an older revision is "latest row per name with id
//! <= R". The `(name, id)` index serves both point reads and that per-name maximum; the primary
//! key serves "rows with id > R" for watches. A `meta` table keeps the compacted revision.
//!
//! Writes. Each write is one `BEGIN IMMEDIATE` transaction: read the key's latest row, check
//! the condition (absent for create, mod revision for a CAS), insert the new row, commit. All
//! work goes through one connection behind a mutex, run on tokio's blocking pool, so writes are
//! serialized and revisions are handed out in commit order.
//!
//! Durability: WAL with `synchronous=FULL`. NORMAL would skip the fsync per commit and may
//! lose the newest commits on power loss; the revision counter would then hand out revisions
//! that clients have already seen with other contents. Like etcd, we pay one fsync per write.
//!
//! Watch. After each commit, still holding the connection, the event goes on a
//! `tokio::sync::broadcast` channel, so live events are published in revision order and without
//! polling. `watch` subscribes first, then reads the log (in pages) for revisions above
//! `after`, then forwards live events, skipping any at or below the last revision it sent: an
//! event committed between subscribing and reading is in both and is sent once. A slow watcher
//! never blocks writers: if its channel (`watch_buffer` events) is full or it lags the broadcast
//! ring ([`BROADCAST_CAPACITY`] events), its stream is closed and it must re-watch from the last
//! revision it saw (or re-list), as with an etcd watch that was cancelled. The per-watcher task
//! (`Forwarder`) is in `sqlite_watch.rs`.

#[path = "sqlite_watch.rs"]
mod watch;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, Transaction, TransactionBehavior, params};
use tokio::sync::{broadcast, mpsc};

use super::{EventKind, KeyValue, ListResult, Revision, Store, StoreError, WatchEvent};
use watch::Forwarder;

/// Live events the broadcast ring holds before a watcher that has not caught up is cut off.
pub const BROADCAST_CAPACITY: usize = 4096;
/// Default capacity of each watcher's channel.
pub const DEFAULT_WATCH_BUFFER: usize = 1024;
/// History rows read per transaction while a watcher catches up.
const HISTORY_PAGE: usize = 512;
/// The `user_version` this build writes and understands.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT    NOT NULL,
    created         INTEGER NOT NULL,
    deleted         INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision   INTEGER NOT NULL,
    value           BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS kv_name_id ON kv (name, id);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

type Db = Arc<Mutex<Connection>>;

/// A [`Store`] in one SQLite database (a file, or memory for tests). Needs a tokio runtime.
#[derive(Debug)]
pub struct SqliteStore {
    db: Db,
    events: broadcast::Sender<Arc<WatchEvent>>,
    watch_buffer: usize,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(
                format!(
                    "{}: cannot use WAL journal mode (got {mode})",
                    path.display()
                )
                .into(),
            ));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Self::with_connection(conn)
    }

    /// A fresh store in memory; gone when dropped.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::with_connection(Connection::open_in_memory()?)
    }

    /// Sets how many events each watcher may have unread before its stream is closed.
    pub fn with_watch_buffer(mut self, capacity: usize) -> Self {
        self.watch_buffer = capacity.max(1);
        self
    }

    fn with_connection(conn: Connection) -> Result<Self, StoreError> {
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::UnsupportedSchema {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Self {
            db: Arc::new(Mutex::new(conn)),
            events: broadcast::channel(BROADCAST_CAPACITY).0,
            watch_buffer: DEFAULT_WATCH_BUFFER,
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        blocking(Arc::clone(&self.db), f).await
    }

    /// Applies one write and, still holding the connection, publishes its event.
    async fn write(&self, key: &str, op: WriteOp) -> Result<KeyValue, StoreError> {
        if key.is_empty() {
            return Err(StoreError::InvalidKey(key.to_owned()));
        }
        let key = key.to_owned();
        let events = self.events.clone();
        self.read(move |conn| {
            let event = apply(conn, key, op)?;
            let kv = event.kv.clone();
            // No receivers is not an error: nobody is watching.
            let _ = events.send(Arc::new(event));
            Ok(kv)
        })
        .await
    }
}

impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| Ok(latest(conn, &key)?.filter(|r| !r.deleted).map(|r| r.kv)))
            .await
    }

    async fn list(&self, prefix: &str, at: Revision) -> Result<ListResult, StoreError> {
        if at < 0 {
            return Err(StoreError::InvalidRevision(at));
        }
        let prefix = prefix.to_owned();
        self.read(move |conn| {
            let tx = conn.transaction()?;
            let current = current_revision(&tx)?;
            let revision = if at == 0 { current } else { at };
            check_readable(&tx, revision, current)?;
            let mut stmt = tx.prepare_cached(
                "SELECT kv.name, kv.value, kv.create_revision, kv.id FROM kv
                 JOIN (SELECT MAX(id) AS id FROM kv
                       WHERE name >= ?1 AND name < ?2 AND id <= ?3 GROUP BY name) AS latest
                   ON kv.id = latest.id
                 WHERE kv.deleted = 0
                 ORDER BY kv.name",
            )?;
            let kvs = stmt
                .query_map(params![prefix, UpperBound::of(&prefix), revision], |row| {
                    Ok(KeyValue {
                        key: row.get(0)?,
                        value: row.get(1)?,
                        create_revision: row.get(2)?,
                        mod_revision: row.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ListResult { kvs, revision })
        })
        .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        self.write(key, WriteOp::Create(value)).await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        self.write(key, WriteOp::Update(value, expected)).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        self.write(key, WriteOp::Delete(expected)).await
    }

    async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        let after = after.max(0);
        // Subscribe before reading history: whatever commits from now on is seen live.
        let live = self.events.subscribe();
        let owned = prefix.to_owned();
        // The first page is read here so that a compacted `after` is the caller's error.
        let first = self.read(move |conn| history(conn, &owned, after)).await?;
        let (tx, rx) = mpsc::channel(self.watch_buffer);
        let forwarder = Forwarder {
            db: Arc::downgrade(&self.db),
            prefix: prefix.to_owned(),
            last: after,
            live,
            tx,
        };
        tracing::debug!(prefix, after, "watch started");
        tokio::spawn(forwarder.run(first));
        Ok(rx)
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.read(|conn| current_revision(conn)).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        if revision < 0 {
            return Err(StoreError::InvalidRevision(revision));
        }
        self.read(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = current_revision(&tx)?;
            if revision > current {
                return Err(StoreError::FutureRevision {
                    requested: revision,
                    current,
                });
            }
            if revision <= compacted_revision(&tx)? {
                return Ok(()); // Already forgotten.
            }
            // Tombstones at or below `revision` go, and so does every row that a newer row
            // at or below `revision` supersedes; each key's latest live row stays.
            let removed = tx.execute(
                "DELETE FROM kv WHERE id <= ?1 AND (deleted = 1 OR id <
                     (SELECT MAX(newer.id) FROM kv AS newer
                      WHERE newer.name = kv.name AND newer.id <= ?1))",
                [revision],
            )?;
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('compact_revision', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [revision],
            )?;
            tx.commit()?;
            tracing::info!(revision, removed, "store compacted");
            Ok(())
        })
        .await
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.read(|conn| compacted_revision(conn)).await
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// Runs `f` on the connection, on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    db: Db,
    f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(move || {
        // A panic mid-transaction rolled the transaction back (Drop), so the data is sound.
        let mut conn = db.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut conn)
    })
    .await
    .map_err(|e| StoreError::Backend(Box::new(e)))?
}

enum WriteOp {
    Create(Vec<u8>),
    Update(Vec<u8>, Revision),
    Delete(Option<Revision>),
}

/// One write as a compare-and-swap in one transaction; returns the committed change.
fn apply(conn: &mut Connection, key: String, op: WriteOp) -> Result<WatchEvent, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let prev = latest(&tx, &key)?.filter(|r| !r.deleted).map(|r| r.kv);
    let event = match op {
        WriteOp::Create(value) => {
            if prev.is_some() {
                return Err(StoreError::AlreadyExists(key));
            }
            let id = insert(&tx, &key, Flag::Created, 0, 0, &value)?;
            tx.execute("UPDATE kv SET create_revision = id WHERE id = ?1", [id])?;
            let kv = KeyValue {
                key,
                value,
                create_revision: id,
                mod_revision: id,
            };
            WatchEvent {
                kind: EventKind::Put,
                kv,
                prev: None,
            }
        }
        WriteOp::Update(value, expected) => {
            let prev = expect(prev, key, Some(expected))?;
            let id = insert(
                &tx,
                &prev.key,
                Flag::Updated,
                prev.create_revision,
                prev.mod_revision,
                &value,
            )?;
            let kv = KeyValue {
                key: prev.key.clone(),
                value,
                create_revision: prev.create_revision,
                mod_revision: id,
            };
            WatchEvent {
                kind: EventKind::Put,
                kv,
                prev: Some(prev),
            }
        }
        WriteOp::Delete(expected) => {
            let prev = expect(prev, key, expected)?;
            let id = insert(
                &tx,
                &prev.key,
                Flag::Deleted,
                prev.create_revision,
                prev.mod_revision,
                &prev.value,
            )?;
            let kv = KeyValue {
                mod_revision: id,
                ..prev.clone()
            };
            WatchEvent {
                kind: EventKind::Delete,
                kv,
                prev: Some(prev),
            }
        }
    };
    tx.commit()?;
    Ok(event)
}

/// The live previous value, checked against the expected mod revision.
fn expect(
    prev: Option<KeyValue>,
    key: String,
    expected: Option<Revision>,
) -> Result<KeyValue, StoreError> {
    let prev = prev.ok_or_else(|| StoreError::NotFound(key))?;
    match expected {
        Some(expected) if expected != prev.mod_revision => Err(StoreError::Conflict {
            expected,
            actual: prev.mod_revision,
            key: prev.key,
        }),
        _ => Ok(prev),
    }
}

#[derive(Clone, Copy)]
enum Flag {
    Created,
    Updated,
    Deleted,
}

fn insert(
    tx: &Transaction<'_>,
    key: &str,
    flag: Flag,
    create_revision: Revision,
    prev_revision: Revision,
    value: &[u8],
) -> Result<Revision, StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO kv (name, created, deleted, create_revision, prev_revision, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    stmt.execute(params![
        key,
        matches!(flag, Flag::Created),
        matches!(flag, Flag::Deleted),
        create_revision,
        prev_revision,
        value,
    ])?;
    Ok(tx.last_insert_rowid())
}

/// A key's newest row, tombstone or not.
struct Latest {
    kv: KeyValue,
    deleted: bool,
}

fn latest(conn: &Connection, key: &str) -> Result<Option<Latest>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, deleted, create_revision, value FROM kv
         WHERE name = ?1 ORDER BY id DESC LIMIT 1",
    )?;
    let row = stmt
        .query_row([key], |row| {
            Ok(Latest {
                kv: KeyValue {
                    key: key.to_owned(),
                    value: row.get(3)?,
                    create_revision: row.get(2)?,
                    mod_revision: row.get(0)?,
                },
                deleted: row.get(1)?,
            })
        })
        .optional()?;
    Ok(row)
}

fn current_revision(conn: &Connection) -> Result<Revision, StoreError> {
    // AUTOINCREMENT's high-water mark: it outlives compacted rows.
    let rev = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'kv'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(rev.unwrap_or(0))
}

fn compacted_revision(conn: &Connection) -> Result<Revision, StoreError> {
    let rev = conn
        .query_row(
            "SELECT value FROM meta WHERE name = 'compact_revision'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(rev.unwrap_or(0))
}

/// Fails unless history at `revision` is still known (not compacted, not in the future).
fn check_readable(
    conn: &Connection,
    revision: Revision,
    current: Revision,
) -> Result<(), StoreError> {
    if revision > current {
        return Err(StoreError::FutureRevision {
            requested: revision,
            current,
        });
    }
    let compacted = compacted_revision(conn)?;
    if revision < compacted {
        return Err(StoreError::Compacted {
            requested: revision,
            compacted,
        });
    }
    Ok(())
}

/// Up to [`HISTORY_PAGE`] changes under `prefix` after `after`, oldest first.
fn history(
    conn: &mut Connection,
    prefix: &str,
    after: Revision,
) -> Result<Vec<WatchEvent>, StoreError> {
    let tx = conn.transaction()?;
    let compacted = compacted_revision(&tx)?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    let mut stmt = tx.prepare_cached(
        "SELECT k.id, k.name, k.created, k.deleted, k.create_revision, k.value,
                p.id, p.create_revision, p.value
         FROM kv AS k LEFT JOIN kv AS p ON p.id = k.prev_revision
         WHERE k.id > ?1 AND k.name >= ?2 AND k.name < ?3
         ORDER BY k.id LIMIT ?4",
    )?;
    let page = i64::try_from(HISTORY_PAGE).unwrap_or(i64::MAX);
    let events = stmt
        .query_map(
            params![after, prefix, UpperBound::of(prefix), page],
            |row| {
                let key: String = row.get(1)?;
                let created: bool = row.get(2)?;
                let deleted: bool = row.get(3)?;
                let prev = match row.get::<_, Option<Revision>>(6)? {
                    Some(id) if !created => Some(KeyValue {
                        key: key.clone(),
                        value: row.get(8)?,
                        create_revision: row.get(7)?,
                        mod_revision: id,
                    }),
                    _ => None,
                };
                Ok(WatchEvent {
                    kind: if deleted {
                        EventKind::Delete
                    } else {
                        EventKind::Put
                    },
                    kv: KeyValue {
                        key,
                        value: row.get(5)?,
                        create_revision: row.get(4)?,
                        mod_revision: row.get(0)?,
                    },
                    prev,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(events)
}

/// The least string greater than every key starting with a prefix, for `name < bound`.
///
/// A range instead of `LIKE 'prefix%'`: keys may hold `_` and `%`, and a range uses the index.
/// SQLite compares TEXT bytewise (BINARY collation), so the bound is the prefix with its last
/// byte incremented. That may not be valid UTF-8, which is why it is bound as raw TEXT bytes.
/// No UTF-8 string holds byte 0xFF, so for the empty prefix `"\xFF"` bounds every key.
#[derive(Debug, PartialEq, Eq)]
struct UpperBound(Vec<u8>);

impl UpperBound {
    fn of(prefix: &str) -> Self {
        let mut bytes = prefix.as_bytes().to_vec();
        match bytes.last_mut() {
            // Never 0xFF in UTF-8, so this cannot overflow.
            Some(last) => *last += 1,
            None => bytes.push(0xFF),
        }
        Self(bytes)
    }
}

impl ToSql for UpperBound {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(&self.0)))
    }
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
