//! The Pods waiting for a Node, in kube-scheduler's three places: active (to try now, first in
//! first out), in flight (decided, binding being written) and unschedulable (tried, no Node
//! fit). Unschedulable Pods come back when the cluster changes in a way that may make room
//! (a Node added or changed, a Pod gone) or, failing that, after a backoff of 1 s doubling to
//! 60 s, so a Pod is never forgotten even if an event was missed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::time::Instant;

use super::cache::{PodDemand, PodKey};

/// A Pod waiting to be scheduled: what deciding and reporting need of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    /// Its uid (the binding's precondition).
    pub uid: String,
    /// What it asks of a Node.
    pub demand: Arc<PodDemand>,
    /// Its PodScheduled condition as (status, message), when it has one.
    pub scheduled: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    InFlight,
    Waiting(Instant),
}

#[derive(Debug)]
struct Entry {
    pod: Pending,
    state: State,
    failures: u32,
}

/// The scheduling queue.
#[derive(Debug, Default)]
pub struct Queue {
    active: VecDeque<PodKey>,
    entries: HashMap<PodKey, Entry>,
    waiting: usize,
}

impl Queue {
    /// Adds a Pod to try, or updates one already here; a waiting Pod whose demand changed is
    /// tried again at once.
    pub fn upsert(&mut self, key: PodKey, pod: Pending) {
        match self.entries.get_mut(&key) {
            None => {
                self.entries.insert(
                    key.clone(),
                    Entry {
                        pod,
                        state: State::Active,
                        failures: 0,
                    },
                );
                self.active.push_back(key);
            }
            Some(entry) => {
                let changed = entry.pod.demand != pod.demand;
                entry.pod = pod;
                if changed && matches!(entry.state, State::Waiting(_)) {
                    entry.state = State::Active;
                    self.waiting -= 1;
                    self.active.push_back(key);
                }
            }
        }
    }

    /// The next Pod to try, now marked in flight.
    pub fn pop(&mut self) -> Option<(PodKey, Pending)> {
        while let Some(key) = self.active.pop_front() {
            if let Some(entry) = self.entries.get_mut(&key)
                && entry.state == State::Active
            {
                entry.state = State::InFlight;
                return Some((key, entry.pod.clone()));
            }
        }
        None
    }

    /// The Pod with `uid` is dealt with (bound, or gone); a newer Pod of the same name that
    /// came meanwhile is tried next.
    pub fn done(&mut self, key: &str, uid: &str) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if entry.pod.uid == uid {
            self.remove(key);
        } else if entry.state == State::InFlight {
            entry.state = State::Active;
            self.active.push_back(key.to_owned());
        }
    }

    /// Forgets a Pod (deleted, bound by someone else, or no longer for this scheduler).
    pub fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key)
            && matches!(entry.state, State::Waiting(_))
        {
            self.waiting -= 1;
        }
    }

    /// An in-flight Pod found no Node or failed to bind: retry after its backoff.
    pub fn wait(&mut self, key: &str, now: Instant) {
        if let Some(entry) = self.entries.get_mut(key)
            && entry.state == State::InFlight
        {
            entry.state = State::Waiting(now + crate::controllers::backoff(entry.failures));
            entry.failures += 1;
            self.waiting += 1;
        }
    }

    /// The cluster changed: every waiting Pod is tried again.
    pub fn wake_all(&mut self) {
        self.wake(|_| true);
    }

    /// Waiting Pods whose backoff has passed are tried again.
    pub fn wake_due(&mut self, now: Instant) {
        self.wake(|at| at <= now);
    }

    fn wake(&mut self, due: impl Fn(Instant) -> bool) {
        if self.waiting == 0 {
            return;
        }
        let mut woken: Vec<&PodKey> = Vec::new();
        for (key, entry) in &mut self.entries {
            if let State::Waiting(at) = entry.state
                && due(at)
            {
                entry.state = State::Active;
                woken.push(key);
            }
        }
        // Oldest first would need a timestamp; name order at least keeps it deterministic.
        woken.sort();
        self.waiting -= woken.len();
        self.active.extend(woken.into_iter().cloned());
    }

    /// When the earliest backoff ends, if any Pod waits.
    pub fn next_wake(&self) -> Option<Instant> {
        if self.waiting == 0 {
            return None;
        }
        self.entries
            .values()
            .filter_map(|e| match e.state {
                State::Waiting(at) => Some(at),
                _ => None,
            })
            .min()
    }

    /// Keeps only the Pods in `keys` (after a relist).
    pub fn retain(&mut self, keys: &std::collections::HashSet<PodKey>) {
        let gone: Vec<PodKey> = self
            .entries
            .keys()
            .filter(|k| !keys.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.remove(&key);
        }
    }

    /// Pods here in any state.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pending(uid: &str, cpu: i128) -> Pending {
        let mut demand = PodDemand::default();
        demand.requests.cpu = cpu;
        Pending {
            uid: uid.into(),
            demand: Arc::new(demand),
            scheduled: None,
        }
    }

    #[test]
    fn pods_come_out_in_order_once() {
        let mut q = Queue::default();
        q.upsert("ns/a".into(), pending("a", 1));
        q.upsert("ns/b".into(), pending("b", 1));
        q.upsert("ns/a".into(), pending("a", 1));
        assert_eq!(q.pop().unwrap().0, "ns/a");
        assert_eq!(q.pop().unwrap().0, "ns/b");
        assert!(q.pop().is_none(), "in flight Pods are not handed out twice");
        q.done("ns/a", "a");
        q.upsert("ns/b".into(), pending("b2", 1));
        q.done("ns/b", "b");
        assert_eq!(q.len(), 1, "a recreated Pod (other uid) stays");
        assert_eq!(q.pop().unwrap().1.uid, "b2");
    }

    #[test]
    fn unschedulable_pods_wait_for_backoff_or_a_change() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.upsert("ns/a".into(), pending("a", 1));
        q.pop();
        q.wait("ns/a", now);
        assert!(q.pop().is_none());
        assert_eq!(q.next_wake(), Some(now + Duration::from_secs(1)));
        q.wake_due(now);
        assert!(q.pop().is_none(), "not due yet");
        q.wake_due(now + Duration::from_secs(1));
        assert_eq!(q.pop().unwrap().0, "ns/a");
        q.wait("ns/a", now);
        assert_eq!(
            q.next_wake(),
            Some(now + Duration::from_secs(2)),
            "backoff grows"
        );
        q.wake_all();
        assert_eq!(q.pop().unwrap().0, "ns/a");
        q.wait("ns/a", now);
        q.upsert("ns/a".into(), pending("a", 1));
        assert!(
            q.pop().is_none(),
            "an update that changes nothing leaves it waiting"
        );
        q.upsert("ns/a".into(), pending("a", 2));
        assert_eq!(
            q.pop().unwrap().0,
            "ns/a",
            "a changed demand is tried at once"
        );
        q.remove("ns/a");
        assert_eq!((q.len(), q.next_wake()), (0, None));
    }
}
