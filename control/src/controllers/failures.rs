//! Per-object backoff for failed reconciles.
//!
//! A reconcile that keeps failing is retried after 1 s, 2 s, 4 s ... up to 60 s, and from 1 s
//! again once it succeeds: client-go's `ItemExponentialFailureRateLimiter`. Failures are counted
//! per object, so one broken object neither hammers the apiserver nor slows the others down.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

/// Consecutive failures per object key, and the wait before each retry.
#[derive(Debug)]
pub struct FailureBackoff<K> {
    failures: Mutex<HashMap<K, u32>>,
}

impl<K> Default for FailureBackoff<K> {
    fn default() -> Self {
        FailureBackoff {
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash> FailureBackoff<K> {
    /// Counts one more failure of `key` in a row; returns how long to wait before retrying it.
    pub fn failed(&self, key: K) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key).or_default();
        *count = count.saturating_add(1);
        super::backoff(*count - 1)
    }

    /// Forgets the failures of `key`: its reconcile succeeded.
    pub fn succeeded(&self, key: &K) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_double_the_wait_up_to_a_minute_per_key() {
        let backoff = FailureBackoff::default();
        let waits: Vec<u64> = (0..9).map(|_| backoff.failed("a").as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            backoff.failed("b"),
            Duration::from_secs(1),
            "keys count apart"
        );
        backoff.succeeded(&"a");
        assert_eq!(
            backoff.failed("a"),
            Duration::from_secs(1),
            "success resets"
        );
        assert_eq!(backoff.failed("b"), Duration::from_secs(2));
    }
}
