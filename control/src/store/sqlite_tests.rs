//! SQLite-specific tests: what a file keeps across reopen, schema versioning, cutting off a
//! slow watcher, and the key-range bound. Behaviour every backend shares is tested in
//! `conformance_tests.rs`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::super::tests::next;
use super::*;

/// A fresh directory under the system temp dir, removed on drop (also when a test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "skiff-store-{name}-{}-{nanos}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `cond` until it holds, failing after 10s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn reopen_keeps_values_revision_and_history() {
    let dir = TempDir::new("reopen");
    let path = dir.0.join("store.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.create("/a", b"a1".to_vec()).await.unwrap(); // 1
        s.create("/b", b"b1".to_vec()).await.unwrap(); // 2
        s.update("/a", b"a2".to_vec(), 1).await.unwrap(); // 3
        s.delete("/b", None).await.unwrap(); // 4
        s.create("/c", b"c1".to_vec()).await.unwrap(); // 5
        s.delete("/c", None).await.unwrap(); // 6
        s.compact(1).await.unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), 6);
    assert_eq!(s.compacted_revision().await.unwrap(), 1);
    assert_eq!(
        s.get("/a").await.unwrap().map(|kv| kv.value),
        Some(b"a2".to_vec())
    );
    assert_eq!(s.get("/b").await.unwrap(), None);
    let at2 = s.list("/", 2).await.unwrap();
    assert_eq!(
        at2.kvs.iter().map(|kv| &kv.key[..]).collect::<Vec<_>>(),
        ["/a", "/b"]
    );

    let mut rx = s.watch("/", 1).await.unwrap();
    for (revision, kind) in [
        (2, EventKind::Put),
        (3, EventKind::Put),
        (4, EventKind::Delete),
        (5, EventKind::Put),
        (6, EventKind::Delete),
    ] {
        let event = next(&mut rx).await.unwrap();
        assert_eq!((event.revision(), event.kind), (revision, kind));
    }
    // Even the newest rows being tombstones does not let the counter go back.
    assert_eq!(s.create("/d", vec![]).await.unwrap().mod_revision, 7);
    assert_eq!(next(&mut rx).await.map(|e| e.revision()), Some(7));

    let raw = Connection::open(&path).unwrap();
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn open_refuses_a_newer_schema() {
    let dir = TempDir::new("schema");
    let path = dir.0.join("store.db");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::UnsupportedSchema {
            found: 99,
            supported: SCHEMA_VERSION
        })
    ));
}

#[tokio::test]
async fn a_slow_watcher_is_cut_off_and_writers_go_on() {
    let s = SqliteStore::in_memory().unwrap().with_watch_buffer(8);
    let mut slow = s.watch("/", 0).await.unwrap();
    let mut fast = s.watch("/", 0).await.unwrap();
    for i in 0..50 {
        s.create(&format!("/k{i}"), vec![]).await.unwrap();
        assert_eq!(next(&mut fast).await.map(|e| e.revision()), Some(i + 1));
    }
    eventually("slow watcher closed", || slow.is_closed()).await;
    for revision in 1..=8 {
        assert_eq!(next(&mut slow).await.map(|e| e.revision()), Some(revision));
    }
    assert_eq!(next(&mut slow).await, None);
    assert!(!fast.is_closed());
}

#[tokio::test]
async fn dropping_the_receiver_ends_the_forwarder() {
    let s = SqliteStore::in_memory().unwrap();
    let rx = s.watch("/", 0).await.unwrap();
    assert_eq!(s.events.receiver_count(), 1);
    drop(rx);
    eventually("forwarder gone", || s.events.receiver_count() == 0).await;
}

#[test]
fn upper_bound_is_the_prefix_with_its_last_byte_incremented() {
    assert_eq!(UpperBound::of("/registry/pods/").0, b"/registry/pods0");
    assert_eq!(UpperBound::of("é").0, [0xC3, 0xAA]);
    assert_eq!(UpperBound::of("").0, [0xFF]);
}
