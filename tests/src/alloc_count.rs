//! A global allocator that counts the heap bytes a process holds, for memory figures.
//!
//! RSS says little about one structure: it counts the binary, thread stacks, and freed memory
//! the allocator keeps for later. A benchmark that wants "how much does the agent hold for N
//! Services" installs [`CountingAlloc`] with `#[global_allocator]` and takes the difference of
//! [`live_bytes`] around building what it measures. The counting is a relaxed atomic or two per
//! call on top of the system allocator: cheap enough to leave on for a whole benchmark.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// [`System`], counting the bytes it hands out and gets back.
#[derive(Clone, Copy, Debug, Default)]
pub struct CountingAlloc;

fn grew(bytes: usize) {
    LIVE.fetch_add(bytes, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which `System` shares.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is the caller's to get right.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        new
    }
}

/// Heap bytes allocated and not yet freed, process-wide (0 unless [`CountingAlloc`] is the
/// global allocator).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Resident-set figures of this process from `/proc/self/status`, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rss {
    /// `VmRSS`: resident now.
    pub current: u64,
    /// `VmHWM`: the most ever resident.
    pub peak: u64,
}

/// Reads [`Rss`] of this process.
pub fn rss() -> anyhow::Result<Rss> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_rss(&status).ok_or_else(|| anyhow::anyhow!("no VmRSS/VmHWM in /proc/self/status"))
}

fn parse_rss(status: &str) -> Option<Rss> {
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024)
    };
    Some(Rss {
        current: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static COUNTING: CountingAlloc = CountingAlloc;

    #[test]
    fn live_bytes_follow_an_allocation_and_its_release() {
        // Other tests allocate concurrently: a large block and a loose tolerance.
        const BLOCK: usize = 64 << 20;
        const SLACK: usize = 8 << 20;
        let before = live_bytes();
        let block = vec![1u8; BLOCK];
        let held = live_bytes().abs_diff(before);
        drop(block);
        let after = live_bytes().abs_diff(before);
        assert!(
            held.abs_diff(BLOCK) < SLACK,
            "held {held} for a {BLOCK}-byte block"
        );
        assert!(
            after < SLACK,
            "{after} bytes still counted after the release"
        );
    }

    #[test]
    fn rss_fields_are_read_in_bytes() {
        let status = "Name:\tx\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nThreads:\t1\n";
        assert_eq!(
            parse_rss(status),
            Some(Rss {
                current: 1024 * 1024,
                peak: 2048 * 1024
            })
        );
        assert_eq!(parse_rss("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        let rss = rss().unwrap();
        assert!(rss.current > 0 && rss.peak >= rss.current, "{rss:?}");
    }
}
