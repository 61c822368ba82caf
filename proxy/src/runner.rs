//! The bounded-frequency sync runner.
//!
//! Watch handlers record into the trackers and *poke*; the runner decides when to sync. Bursts
//! of changes (a Deployment rolling 100 Pods) are batched: after a sync, the next one waits,
//! however many pokes arrive — three times as long as that sync took (at least 10 ms), and at
//! most `min_interval`. Cheap syncs (the eBPF maps, a small ruleset) so follow a change within
//! milliseconds — a new Service's EndpointSlice lands a few ms after the Service itself — while
//! costly ones still batch: a 100 ms `iptables-restore` leaves the proxy idle 2/3 of the time
//! under churn, a 400 ms one waits the full `min_interval` as kube-proxy does. Without pokes it still syncs every
//! `max_interval` (cheap: a partial sync with nothing changed writes nothing), and every
//! `full_interval` it rewrites everything, repairing rules someone else deleted. A failed sync
//! makes the data plane forget what it applied, so the retry — after the full `min_interval` —
//! is a full one. The runner lives on a thread of its own: data plane calls block (they run
//! `iptables-restore`), and the tokio workers stay free for the watches and HTTP servers.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often to sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    /// Longest wait between two syncs to batch a burst (cheap syncs wait less).
    pub min: Duration,
    /// Most time between two syncs.
    pub max: Duration,
    /// Most time between two full syncs.
    pub full: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            min: Duration::from_secs(1),
            max: Duration::from_secs(30),
            full: Duration::from_secs(3600),
        }
    }
}

/// When to run next: the pure part of the runner.
#[derive(Clone, Debug)]
pub struct Schedule {
    intervals: Intervals,
    last_run: Option<Instant>,
    last_full: Option<Instant>,
    /// How long the last sync took; `None` before the first and after a failure.
    last_took: Option<Duration>,
    requested: bool,
}

/// The shortest wait between syncs, however cheap they are.
const FLOOR: Duration = Duration::from_millis(10);
/// After a sync, the next one waits this many times as long as it took (up to `min`).
const COST_FACTOR: u32 = 3;

impl Schedule {
    /// A schedule that runs as soon as it is asked.
    pub fn new(intervals: Intervals) -> Self {
        Schedule {
            intervals,
            last_run: None,
            last_full: None,
            last_took: None,
            requested: false,
        }
    }

    /// Something changed (or a sync failed): run again soon.
    pub fn request(&mut self) {
        self.requested = true;
    }

    /// When the next run is due.
    pub fn due(&self) -> Option<Instant> {
        let last = self.last_run?;
        Some(if self.requested {
            last + self.gap()
        } else {
            last + self.intervals.max
        })
    }

    /// The wait after the last run before a requested one.
    fn gap(&self) -> Duration {
        match self.last_took {
            Some(took) => (took * COST_FACTOR).max(FLOOR).min(self.intervals.min),
            None => self.intervals.min,
        }
    }

    /// The run that started last ended after `took`; `ok`: it succeeded (a failed one is
    /// retried only after the full `min` interval).
    pub fn finished(&mut self, took: Duration, ok: bool) {
        self.last_took = ok.then_some(took);
    }

    /// Is a run due at `now`?
    pub fn is_due(&self, now: Instant) -> bool {
        match self.due() {
            Some(due) => now >= due,
            None => self.requested,
        }
    }

    /// A run starts at `now`; returns whether it must be a full one.
    pub fn start(&mut self, now: Instant) -> bool {
        self.requested = false;
        self.last_run = Some(now);
        let full = self
            .last_full
            .is_none_or(|t| now >= t + self.intervals.full);
        if full {
            self.last_full = Some(now);
        }
        full
    }
}

/// Pokes from watch handlers, and the stop signal.
#[derive(Debug, Default)]
pub struct Poke {
    state: Mutex<(bool, bool)>,
    wake: Condvar,
}

impl Poke {
    /// A new, quiet poke.
    pub fn new() -> Arc<Self> {
        Arc::new(Poke::default())
    }

    fn lock(&self) -> MutexGuard<'_, (bool, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Something changed.
    pub fn poke(&self) {
        self.lock().0 = true;
        self.wake.notify_all();
    }

    /// The runner should end.
    pub fn stop(&self) {
        self.lock().1 = true;
        self.wake.notify_all();
    }

    /// Waits until poked, stopped, or `deadline`; returns (poked, stopped) and clears the poke.
    pub fn wait(&self, deadline: Option<Instant>) -> (bool, bool) {
        let mut state = self.lock();
        while !state.0 && !state.1 {
            match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    state = self
                        .wake
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
            }
        }
        let result = *state;
        state.0 = false;
        result
    }
}

/// Runs `sync(full) -> succeeded` on the schedule until stopped.
pub fn run(intervals: Intervals, poke: &Poke, mut sync: impl FnMut(bool) -> bool) {
    let mut schedule = Schedule::new(intervals);
    loop {
        let now = Instant::now();
        if schedule.is_due(now) {
            let full = schedule.start(now);
            let ok = sync(full);
            schedule.finished(now.elapsed(), ok);
            if !ok {
                schedule.request();
            }
            continue;
        }
        let (poked, stopped) = poke.wait(schedule.due());
        if stopped {
            return;
        }
        if poked {
            schedule.request();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intervals() -> Intervals {
        Intervals {
            min: Duration::from_secs(1),
            max: Duration::from_secs(30),
            full: Duration::from_secs(3600),
        }
    }

    #[test]
    fn the_first_request_runs_at_once_and_is_full() {
        let mut s = Schedule::new(intervals());
        let t0 = Instant::now();
        assert!(!s.is_due(t0), "nothing asked yet");
        s.request();
        assert!(s.is_due(t0));
        assert!(s.start(t0));
    }

    #[test]
    fn a_burst_after_a_run_waits_for_the_min_interval() {
        let mut s = Schedule::new(intervals());
        let t0 = Instant::now();
        s.request();
        s.start(t0);
        for ms in [1, 10, 500] {
            s.request();
            assert!(!s.is_due(t0 + Duration::from_millis(ms)));
        }
        assert!(s.is_due(t0 + Duration::from_secs(1)));
        assert!(
            !s.start(t0 + Duration::from_secs(1)),
            "not full within the hour"
        );
    }

    #[test]
    fn a_cheap_run_shortens_the_wait_and_a_costly_or_failed_one_keeps_the_min_interval() {
        let mut s = Schedule::new(intervals());
        let t0 = Instant::now();
        s.request();
        s.start(t0);
        s.finished(Duration::from_millis(2), true);
        s.request();
        assert!(!s.is_due(t0 + Duration::from_millis(9)));
        assert!(s.is_due(t0 + Duration::from_millis(10)), "the 10 ms floor");
        let t1 = t0 + Duration::from_millis(10);
        s.start(t1);
        s.finished(Duration::from_millis(100), true);
        s.request();
        assert!(!s.is_due(t1 + Duration::from_millis(299)));
        assert!(s.is_due(t1 + Duration::from_millis(300)), "3x the last run");
        let t2 = t1 + Duration::from_millis(300);
        s.start(t2);
        s.finished(Duration::from_millis(400), true);
        s.request();
        assert!(!s.is_due(t2 + Duration::from_millis(999)));
        assert!(s.is_due(t2 + Duration::from_secs(1)), "capped at min");
        let t3 = t2 + Duration::from_secs(1);
        s.start(t3);
        s.finished(Duration::from_millis(1), false);
        s.request();
        assert!(
            !s.is_due(t3 + Duration::from_millis(999)),
            "a failure waits min"
        );
    }

    #[test]
    fn without_requests_the_max_interval_forces_a_run_and_the_hour_a_full_one() {
        let mut s = Schedule::new(intervals());
        let t0 = Instant::now();
        s.request();
        s.start(t0);
        assert!(!s.is_due(t0 + Duration::from_secs(29)));
        assert!(s.is_due(t0 + Duration::from_secs(30)));
        assert!(s.start(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn the_loop_batches_pokes_and_retries_failures() {
        let poke = Poke::new();
        let fast = Intervals {
            min: Duration::from_millis(100),
            max: Duration::from_secs(60),
            full: Duration::from_secs(3600),
        };
        let runs = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (poke, runs) = (Arc::clone(&poke), Arc::clone(&runs));
            std::thread::spawn(move || {
                run(fast, &poke, |full| {
                    // Costly enough that the next run waits the whole min interval.
                    std::thread::sleep(Duration::from_millis(40));
                    let mut runs = runs.lock().unwrap();
                    runs.push(full);
                    // The second run fails; the third (a retry nobody asked for) succeeds.
                    runs.len() != 2
                })
            })
        };
        let started = Instant::now();
        for _ in 0..20 {
            poke.poke();
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(450));
        poke.stop();
        thread.join().unwrap();
        let runs = runs.lock().unwrap().clone();
        // 20 pokes in ~100 ms: one run at once, one batched run, one retry.
        assert_eq!(runs.len(), 3, "{runs:?} after {:?}", started.elapsed());
        assert!(runs[0]);
    }
}
