//! Conformance tests, written against [`Store`] alone: they run here on the in-memory SQLite
//! backend and are meant to run unchanged on any other backend.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Receiver;

use super::sqlite::SqliteStore;
use super::*;

fn store() -> SqliteStore {
    SqliteStore::in_memory().expect("in-memory store")
}

fn kv(key: &str, value: &str, create_revision: Revision, mod_revision: Revision) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
        create_revision,
        mod_revision,
    }
}

/// The next watch event (None = stream ended); fails instead of hanging.
pub(super) async fn next(rx: &mut Receiver<WatchEvent>) -> Option<WatchEvent> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no watch event within 10s")
}

fn keys(list: &ListResult) -> Vec<(&str, &[u8])> {
    list.kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
        .collect()
}

#[tokio::test]
async fn create_get_update_delete_with_conflicts() {
    let s = store();
    let key = "/registry/pods/default/web-1";
    let created = s.create(key, b"v1".to_vec()).await.unwrap();
    assert_eq!(created, kv(key, "v1", 1, 1));
    assert_eq!(s.get(key).await.unwrap(), Some(created.clone()));
    assert!(
        matches!(s.create(key, b"x".to_vec()).await, Err(StoreError::AlreadyExists(k)) if k == key)
    );

    let updated = s.update(key, b"v2".to_vec(), 1).await.unwrap();
    assert_eq!(updated, kv(key, "v2", 1, 2));
    match s.update(key, b"stale".to_vec(), 1).await {
        Err(StoreError::Conflict {
            key: k,
            expected: 1,
            actual: 2,
        }) if k == key => {}
        other => panic!("stale update: {other:?}"),
    }
    match s.delete(key, Some(1)).await {
        Err(StoreError::Conflict {
            expected: 1,
            actual: 2,
            ..
        }) => {}
        other => panic!("stale delete: {other:?}"),
    }
    assert_eq!(
        s.get(key).await.unwrap(),
        Some(updated),
        "losers changed nothing"
    );

    assert_eq!(s.delete(key, Some(2)).await.unwrap(), kv(key, "v2", 1, 3));
    assert_eq!(s.get(key).await.unwrap(), None);
    assert!(
        matches!(s.update(key, b"x".to_vec(), 3).await, Err(StoreError::NotFound(k)) if k == key)
    );
    assert!(matches!(
        s.delete(key, None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete("/never", Some(1)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.create("", vec![]).await,
        Err(StoreError::InvalidKey(_))
    ));

    // A new incarnation gets a new create revision; an unconditional delete works.
    assert_eq!(
        s.create(key, b"v3".to_vec()).await.unwrap(),
        kv(key, "v3", 4, 4)
    );
    assert_eq!(s.delete(key, None).await.unwrap(), kv(key, "v3", 4, 5));
}

#[tokio::test]
async fn every_write_takes_the_next_global_revision() {
    let s = store();
    assert_eq!(s.current_revision().await.unwrap(), 0);
    assert_eq!(s.create("/a", vec![1]).await.unwrap().mod_revision, 1);
    assert_eq!(s.create("/b", vec![2]).await.unwrap().mod_revision, 2);
    assert_eq!(s.update("/a", vec![3], 1).await.unwrap().mod_revision, 3);
    assert_eq!(s.delete("/b", None).await.unwrap().mod_revision, 4);
    // Failed writes take no revision.
    assert!(s.create("/a", vec![]).await.is_err());
    assert!(s.update("/a", vec![], 1).await.is_err());
    assert!(s.delete("/b", None).await.is_err());
    assert_eq!(s.current_revision().await.unwrap(), 4);
    assert_eq!(s.create("/c", vec![]).await.unwrap().mod_revision, 5);
    assert_eq!(s.current_revision().await.unwrap(), 5);
}

#[tokio::test]
async fn list_at_latest_and_older_revisions() {
    let s = store();
    let (a, b, c) = (
        "/registry/pods/default/a",
        "/registry/pods/default/b",
        "/registry/pods/kube-system/c",
    );
    s.create(a, b"a1".to_vec()).await.unwrap(); // 1
    s.create(b, b"b1".to_vec()).await.unwrap(); // 2
    s.create("/registry/podsx/default/z", b"z".to_vec())
        .await
        .unwrap(); // 3
    s.create(c, b"c1".to_vec()).await.unwrap(); // 4
    s.update(a, b"a2".to_vec(), 1).await.unwrap(); // 5
    s.delete(b, None).await.unwrap(); // 6

    let latest = s.list("/registry/pods/", 0).await.unwrap();
    assert_eq!(latest.revision, 6);
    assert_eq!(latest.kvs, vec![kv(a, "a2", 1, 5), kv(c, "c1", 4, 4)]);
    let at4 = s.list("/registry/pods/", 4).await.unwrap();
    assert_eq!(at4.revision, 4);
    assert_eq!(
        at4.kvs,
        vec![kv(a, "a1", 1, 1), kv(b, "b1", 2, 2), kv(c, "c1", 4, 4)]
    );
    assert_eq!(
        keys(&s.list("/registry/pods/", 1).await.unwrap()),
        vec![(a, &b"a1"[..])]
    );
    assert_eq!(
        keys(&s.list("/registry/podsx/", 0).await.unwrap()),
        vec![("/registry/podsx/default/z", &b"z"[..])]
    );
    assert_eq!(s.list("", 0).await.unwrap().kvs.len(), 3);
    assert_eq!(
        s.list("/registry/pods/default/a", 0)
            .await
            .unwrap()
            .kvs
            .len(),
        1
    );
    assert!(
        s.list("/registry/services/", 0)
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
    assert!(matches!(
        s.list("/registry/pods/", 7).await,
        Err(StoreError::FutureRevision {
            requested: 7,
            current: 6
        })
    ));
    assert!(matches!(
        s.list("/", -1).await,
        Err(StoreError::InvalidRevision(-1))
    ));
}

#[tokio::test]
async fn prefixes_match_bytes_not_patterns() {
    let s = store();
    for key in [
        "/r/a_b/1", "/r/aXb/2", "/r/a%b/3", "/r/a_b", "/r/é/4", "/r/ê/5", "/r/a_c/6",
    ] {
        s.create(key, key.as_bytes().to_vec()).await.unwrap();
    }
    let listed = |prefix: &'static str| {
        let s = &s;
        async move {
            let list = s.list(prefix, 0).await.unwrap();
            list.kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("/r/a_b/").await, ["/r/a_b/1"]);
    assert_eq!(listed("/r/a%").await, ["/r/a%b/3"]);
    assert_eq!(listed("/r/a_").await, ["/r/a_b", "/r/a_b/1", "/r/a_c/6"]);
    assert_eq!(listed("/r/é").await, ["/r/é/4"]);
}

#[tokio::test]
async fn watch_events_carry_kind_value_and_prev() {
    let s = store();
    let key = "/registry/services/default/api";
    s.create(key, b"v1".to_vec()).await.unwrap(); // 1
    s.update(key, b"v2".to_vec(), 1).await.unwrap(); // 2
    s.create("/registry/servicesx/other", vec![]).await.unwrap(); // 3
    s.delete(key, None).await.unwrap(); // 4
    let put = |kv, prev| WatchEvent {
        kind: EventKind::Put,
        kv,
        prev,
    };
    let delete = |kv, prev| WatchEvent {
        kind: EventKind::Delete,
        kv,
        prev,
    };
    let want = [
        put(kv(key, "v1", 1, 1), None),
        put(kv(key, "v2", 1, 2), Some(kv(key, "v1", 1, 1))),
        delete(kv(key, "v2", 1, 4), Some(kv(key, "v2", 1, 2))),
        put(kv(key, "v3", 5, 5), None),
        put(kv(key, "v4", 5, 6), Some(kv(key, "v3", 5, 5))),
    ];
    // Once replayed from history, once live from the current revision.
    let mut from_history = s.watch("/registry/services/", 0).await.unwrap();
    let mut live = s.watch("/registry/services/", 4).await.unwrap();
    s.create(key, b"v3".to_vec()).await.unwrap(); // 5
    s.update(key, b"v4".to_vec(), 5).await.unwrap(); // 6
    for event in &want {
        assert_eq!(next(&mut from_history).await.as_ref(), Some(event));
    }
    for event in &want[3..] {
        assert_eq!(next(&mut live).await.as_ref(), Some(event));
    }
}

/// Collects a watch's revisions until the `/end` key shows up.
fn collect_until_end(mut rx: Receiver<WatchEvent>) -> tokio::task::JoinHandle<Vec<Revision>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let event = next(&mut rx).await.expect("stream ended early");
            assert!(event.kv.key.starts_with("/registry/pods/"), "{event:?}");
            got.push(event.revision());
            if event.kv.key == "/registry/pods/end" {
                // Nothing else was queued behind it.
                assert!(rx.try_recv().is_err());
                return got;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_replays_history_then_live_without_gap_or_duplicate() {
    let s = Arc::new(store());
    let mut want = Vec::new();
    for i in 0..700 {
        let kv = s
            .create(&format!("/registry/pods/h{i}"), vec![])
            .await
            .unwrap();
        want.push(kv.mod_revision);
        s.create(&format!("/registry/podsx/h{i}"), vec![])
            .await
            .unwrap();
    }

    // Writers run while two watches start: one replays more than a page of history, the
    // other starts just behind the writers. Both read while the writers write (a watcher
    // that stops reading is cut off by design).
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..150 {
                    let key = format!("/registry/pods/w{w}-{i}");
                    let created = s.create(&key, vec![1]).await.unwrap();
                    let updated = s.update(&key, vec![2], created.mod_revision).await.unwrap();
                    s.create(&format!("/registry/podsx/w{w}-{i}"), vec![])
                        .await
                        .unwrap();
                    mine.extend([created.mod_revision, updated.mod_revision]);
                }
                mine
            })
        })
        .collect();
    let old = want[99];
    let from_old = collect_until_end(s.watch("/registry/pods/", old).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2)).await;
    let recent = s.current_revision().await.unwrap();
    let from_recent = collect_until_end(s.watch("/registry/pods/", recent).await.unwrap());
    for writer in writers {
        want.extend(writer.await.unwrap());
    }
    want.push(
        s.create("/registry/pods/end", vec![])
            .await
            .unwrap()
            .mod_revision,
    );
    want.sort_unstable();

    let from = |after: Revision| {
        want.iter()
            .copied()
            .filter(|&r| r > after)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        from_old.await.unwrap(),
        from(old),
        "every change once, in order"
    );
    assert_eq!(
        from_recent.await.unwrap(),
        from(recent),
        "every change once, in order"
    );
}

#[tokio::test]
async fn watch_ends_when_the_store_is_dropped() {
    let s = store();
    s.create("/a", vec![]).await.unwrap();
    let mut rx = s.watch("/", 0).await.unwrap();
    assert_eq!(next(&mut rx).await.map(|e| e.revision()), Some(1));
    drop(s);
    assert_eq!(next(&mut rx).await, None);
}

#[tokio::test]
async fn compaction_forgets_history_and_keeps_latest_values() {
    let s = store();
    s.create("/a", b"a1".to_vec()).await.unwrap(); // 1
    s.update("/a", b"a2".to_vec(), 1).await.unwrap(); // 2
    s.create("/b", b"b1".to_vec()).await.unwrap(); // 3
    s.delete("/b", None).await.unwrap(); // 4
    s.create("/c", b"c1".to_vec()).await.unwrap(); // 5
    s.update("/a", b"a3".to_vec(), 2).await.unwrap(); // 6
    assert_eq!(s.compacted_revision().await.unwrap(), 0);

    s.compact(4).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), 4);
    assert_eq!(s.current_revision().await.unwrap(), 6);
    assert!(matches!(
        s.list("/", 3).await,
        Err(StoreError::Compacted {
            requested: 3,
            compacted: 4
        })
    ));
    assert!(matches!(
        s.watch("/", 3).await,
        Err(StoreError::Compacted {
            requested: 3,
            compacted: 4
        })
    ));
    // At the compacted revision itself, and later, everything is still readable.
    assert_eq!(
        s.list("/", 4).await.unwrap().kvs,
        vec![kv("/a", "a2", 1, 2)]
    );
    assert_eq!(
        keys(&s.list("/", 5).await.unwrap()),
        [("/a", &b"a2"[..]), ("/c", b"c1")]
    );
    assert_eq!(
        s.list("/", 0).await.unwrap().kvs,
        vec![kv("/a", "a3", 1, 6), kv("/c", "c1", 5, 5)]
    );
    let mut rx = s.watch("/", 4).await.unwrap();
    assert_eq!(
        next(&mut rx).await.map(|e| e.kv),
        Some(kv("/c", "c1", 5, 5))
    );
    assert_eq!(
        next(&mut rx).await.and_then(|e| e.prev),
        Some(kv("/a", "a2", 1, 2))
    );

    // Compacting again below is a no-op; the future is refused.
    s.compact(2).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), 4);
    assert!(matches!(
        s.compact(7).await,
        Err(StoreError::FutureRevision {
            requested: 7,
            current: 6
        })
    ));
    assert_eq!(
        s.update("/a", b"a4".to_vec(), 6)
            .await
            .unwrap()
            .mod_revision,
        7
    );
}

#[tokio::test]
async fn compacting_every_row_keeps_the_revision_counter() {
    let s = store();
    s.create("/x", vec![]).await.unwrap();
    s.create("/y", vec![]).await.unwrap();
    s.delete("/y", None).await.unwrap();
    s.delete("/x", None).await.unwrap();
    s.compact(4).await.unwrap();
    assert!(s.list("/", 0).await.unwrap().kvs.is_empty());
    assert_eq!(s.current_revision().await.unwrap(), 4);
    assert_eq!(
        s.create("/x", vec![]).await.unwrap(),
        KeyValue {
            key: "/x".into(),
            value: vec![],
            create_revision: 5,
            mod_revision: 5
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_creates_and_compare_and_swaps() {
    let s = Arc::new(store());
    let creates: Vec<_> = (0..100)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.create(&format!("/k/{i:03}"), vec![i]).await })
        })
        .collect();
    let mut revisions = BTreeSet::new();
    for create in creates {
        revisions.insert(create.await.unwrap().unwrap().mod_revision);
    }
    assert_eq!(revisions, (1..=100).collect());
    assert_eq!(s.list("/k/", 0).await.unwrap().kvs.len(), 100);

    // 50 updates racing on the same expected revision: exactly one wins.
    let base = s.create("/cas", vec![]).await.unwrap().mod_revision;
    let racers: Vec<_> = (0..50)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.update("/cas", vec![i], base).await })
        })
        .collect();
    let (mut wins, mut conflicts) = (Vec::new(), 0);
    for racer in racers {
        match racer.await.unwrap() {
            Ok(kv) => wins.push(kv),
            Err(StoreError::Conflict { expected, .. }) if expected == base => conflicts += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((wins.len(), conflicts), (1, 49));

    // 50 writers retrying read-modify-write: each expected revision is won exactly once.
    let writers: Vec<_> = (0..50)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                loop {
                    let seen = s.get("/cas").await.unwrap().unwrap().mod_revision;
                    match s.update("/cas", vec![i], seen).await {
                        Ok(kv) => return (seen, kv.mod_revision),
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            })
        })
        .collect();
    let mut chain = Vec::new();
    for writer in writers {
        chain.push(writer.await.unwrap());
    }
    chain.sort_unstable();
    let mut expected = wins[0].mod_revision;
    for &(seen, written) in &chain {
        assert_eq!(
            seen, expected,
            "each win builds on the previous one: {chain:?}"
        );
        expected = written;
    }
    assert_eq!(s.get("/cas").await.unwrap().unwrap().mod_revision, expected);
}
