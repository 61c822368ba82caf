use std::collections::BTreeSet;
use std::fs;
use std::sync::Arc;
use std::thread;

use super::*;
use crate::testutil::TempDir;

fn cidr(text: &str) -> PodCidr {
    PodCidr::new(text.parse().unwrap()).unwrap()
}

fn pod(n: usize) -> Attachment {
    Attachment::new(&format!("container-{n}"), "eth0")
}

#[test]
fn network_gateway_and_broadcast_are_never_handed_out() {
    let ipam = Ipam::new(MemoryStore::default(), cidr("10.0.0.0/29"));
    let ips: Vec<Ipv4Addr> = (0..5)
        .map(|n| ipam.reserve(&pod(n)).unwrap().commit())
        .collect();
    let expected: Vec<Ipv4Addr> = (2..=6).map(|h| Ipv4Addr::new(10, 0, 0, h)).collect();
    assert_eq!(ips, expected);
    assert_eq!(ipam.free().unwrap(), 0);
    let err = ipam.reserve(&pod(9)).unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::NoFreeAddress);
}

#[test]
fn the_same_pair_gets_the_same_address_and_another_ifname_another() {
    let ipam = Ipam::new(MemoryStore::default(), cidr("10.0.0.0/24"));
    let first = ipam.reserve(&pod(1)).unwrap().commit();
    assert_eq!(ipam.reserve(&pod(1)).unwrap().commit(), first);
    let second_if = ipam
        .reserve(&Attachment::new("container-1", "net1"))
        .unwrap()
        .commit();
    assert_ne!(second_if, first);
    assert_eq!(ipam.lookup(&pod(1)).unwrap(), Some(first));
}

#[test]
fn allocation_is_round_robin_so_a_freed_address_is_not_reused_at_once() {
    let ipam = Ipam::new(MemoryStore::default(), cidr("10.0.0.0/29"));
    let a = ipam.reserve(&pod(1)).unwrap().commit();
    assert_eq!(ipam.release(&pod(1)).unwrap(), Some(a));
    let b = ipam.reserve(&pod(2)).unwrap().commit();
    assert_ne!(a, b);
    // After wrapping around, the freed address is found again.
    let rest: Vec<Ipv4Addr> = (3..7)
        .map(|n| ipam.reserve(&pod(n)).unwrap().commit())
        .collect();
    assert_eq!(rest.last(), Some(&a));
}

#[test]
fn a_dropped_reservation_is_released_and_a_committed_one_kept() {
    let store = MemoryStore::default();
    let ipam = Ipam::new(store.clone(), cidr("10.0.0.0/24"));
    let ip = {
        let reservation = ipam.reserve(&pod(1)).unwrap();
        assert_eq!(store.snapshot().reservations.len(), 1);
        reservation.ip()
    };
    assert!(
        store.snapshot().reservations.is_empty(),
        "{ip} should be released"
    );
    let kept = ipam.reserve(&pod(2)).unwrap().commit();
    assert_eq!(store.snapshot().reservations.get(&kept), Some(&pod(2)));
}

#[test]
fn a_failed_repeat_add_does_not_free_the_address_a_running_pod_holds() {
    let store = MemoryStore::default();
    let ipam = Ipam::new(store.clone(), cidr("10.0.0.0/24"));
    let ip = ipam.reserve(&pod(1)).unwrap().commit();
    drop(ipam.reserve(&pod(1)).unwrap());
    assert_eq!(store.snapshot().reservations.get(&ip), Some(&pod(1)));
}

#[test]
fn stale_lists_holders_missing_from_the_valid_list() {
    let ipam = Ipam::new(MemoryStore::default(), cidr("10.0.0.0/24"));
    for n in 0..4 {
        ipam.reserve(&pod(n)).unwrap().commit();
    }
    let stale = ipam.stale(&[pod(1), pod(3)]).unwrap();
    let holders: Vec<&Attachment> = stale.iter().map(|(_, who)| who).collect();
    assert_eq!(holders, [&pod(0), &pod(2)]);
    assert!(ipam.stale(&[]).unwrap().len() == 4);
    let (ip, who) = &stale[0];
    assert!(ipam.release_exact(*ip, who).unwrap());
    assert!(!ipam.release_exact(*ip, who).unwrap(), "already released");
}

#[test]
fn the_disk_store_persists_across_instances() {
    let dir = TempDir::new("persist");
    let first = Ipam::new(DiskStore::open(dir.path()).unwrap(), cidr("10.0.0.0/24"));
    let ip = first.reserve(&pod(1)).unwrap().commit();
    let second = Ipam::new(DiskStore::open(dir.path()).unwrap(), cidr("10.0.0.0/24"));
    assert_eq!(second.lookup(&pod(1)).unwrap(), Some(ip));
    assert_ne!(second.reserve(&pod(2)).unwrap().commit(), ip);
    let text = fs::read_to_string(dir.path().join(store::STATE_FILE)).unwrap();
    assert!(
        text.contains("container-1") && text.contains("lastReserved"),
        "{text}"
    );
}

#[test]
fn a_corrupt_state_file_is_an_error_not_an_empty_pool() {
    let dir = TempDir::new("corrupt");
    fs::write(dir.path().join(store::STATE_FILE), b"{\"reservations\": 7").unwrap();
    let ipam = Ipam::new(DiskStore::open(dir.path()).unwrap(), cidr("10.0.0.0/24"));
    let err = ipam.reserve(&pod(1)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::CorruptState, "{err}");
}

#[test]
fn concurrent_disk_stores_never_hand_out_one_address_twice() {
    let dir = Arc::new(TempDir::new("concurrent"));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let dir = Arc::clone(&dir);
            thread::spawn(move || {
                // A store per thread: separate open file descriptions, as separate processes have.
                let ipam = Ipam::new(DiskStore::open(dir.path()).unwrap(), cidr("10.1.0.0/24"));
                (0..12)
                    .map(|n| ipam.reserve(&pod(t * 100 + n)).unwrap().commit())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let all: Vec<Ipv4Addr> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let distinct: BTreeSet<Ipv4Addr> = all.iter().copied().collect();
    assert_eq!((all.len(), distinct.len()), (192, 192));
    let ipam = Ipam::new(DiskStore::open(dir.path()).unwrap(), cidr("10.1.0.0/24"));
    assert_eq!(ipam.free().unwrap(), 253 - 192);
}
