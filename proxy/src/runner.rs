//! The bounded-frequency sync runner.
//!
//! Watch handlers record into the trackers and *poke*; the runner decides when to sync. Bursts
//! of changes (a Deployment rolling 100 Pods) are batched: after a sync, the next one waits,
//! however many pokes arrive — three times as long as that sync took (at least 10 ms), and at
//! most `min_interval`. Cheap syncs (the eBPF maps, a small ruleset) so follow a change within
//! milliseconds — a new Service's EndpointSlice lands a few ms after the Service itself — while
//! costly ones still batch: a 100 ms `iptables-restore` leaves the proxy idle 2/3 of the time
//! under churn, a 400 ms one waits the full `min_interval` as kube-proxy does. Without pokes it
//! still syncs every `max_interval` (cheap: a partial sync with nothing changed writes
//! nothing), and every `full_interval` it rewrites everything, repairing rules someone else
//! deleted. A failed sync
//! makes the data plane forget what it applied, so the retry — after the full `min_interval` —
//! is a full one. The runner lives on a thread of its own: data plane calls block (they run
//! `iptables-restore`), and the tokio workers stay free for the watches and HTTP servers.
//!
//! The loop reads time and waits through a [`Clock`], so its tests run on a fake one: no sleeps,
//! and the same runs at the same instants every time.

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

    /// (poked, stopped) if either is set, clearing the poke; `None` when neither is.
    pub fn take(&self) -> Option<(bool, bool)> {
        let mut state = self.lock();
        let result = *state;
        state.0 = false;
        (result.0 || result.1).then_some(result)
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

/// Where the runner reads the time and waits for pokes.
pub trait Clock {
    /// The time now.
    fn now(&self) -> Instant;
    /// Waits until `poke` is poked or stopped, or until `deadline`; returns (poked, stopped)
    /// and clears the poke.
    fn wait(&self, poke: &Poke, deadline: Option<Instant>) -> (bool, bool);
}

/// The machine's monotonic clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wait(&self, poke: &Poke, deadline: Option<Instant>) -> (bool, bool) {
        poke.wait(deadline)
    }
}

/// Runs `sync(full) -> succeeded` on the schedule until stopped.
pub fn run(intervals: Intervals, poke: &Poke, sync: impl FnMut(bool) -> bool) {
    run_on(&SystemClock, intervals, poke, sync);
}

/// [`run`] on `clock`.
pub fn run_on(
    clock: &impl Clock,
    intervals: Intervals,
    poke: &Poke,
    mut sync: impl FnMut(bool) -> bool,
) {
    let mut schedule = Schedule::new(intervals);
    loop {
        let now = clock.now();
        if schedule.is_due(now) {
            let full = schedule.start(now);
            let ok = sync(full);
            schedule.finished(clock.now() - now, ok);
            if !ok {
                schedule.request();
            }
            continue;
        }
        let (poked, stopped) = clock.wait(poke, schedule.due());
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
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;

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
    fn a_poke_wait_returns_what_was_set_and_clears_only_the_poke() {
        let poke = Poke::default();
        assert_eq!(
            poke.wait(Some(Instant::now())),
            (false, false),
            "past deadline"
        );
        poke.poke();
        assert_eq!(poke.wait(None), (true, false));
        assert_eq!(poke.take(), None, "the poke was cleared");
        poke.stop();
        assert_eq!(poke.wait(None), (false, true));
        assert_eq!(poke.take(), Some((false, true)), "a stop stays");
    }

    /// A clock that jumps to the next thing to happen: a deadline, or a scripted poke or stop.
    struct FakeClock {
        start: Instant,
        now: Cell<Instant>,
        /// (when, stop?) after `start`, in order: a poke, or the stop.
        script: RefCell<VecDeque<(Duration, bool)>>,
        /// Waits so far: a runner that spins fails the test instead of hanging it.
        waits: Cell<usize>,
    }

    impl FakeClock {
        fn new(script: impl IntoIterator<Item = (Duration, bool)>) -> Self {
            let start = Instant::now();
            FakeClock {
                start,
                now: Cell::new(start),
                script: RefCell::new(script.into_iter().collect()),
                waits: Cell::new(0),
            }
        }

        fn advance(&self, by: Duration) {
            self.now.set(self.now.get() + by);
        }

        fn elapsed(&self) -> Duration {
            self.now.get() - self.start
        }

        fn move_to(&self, at: Instant) {
            self.now.set(self.now.get().max(at));
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.now.get()
        }

        fn wait(&self, poke: &Poke, deadline: Option<Instant>) -> (bool, bool) {
            self.waits.set(self.waits.get() + 1);
            assert!(self.waits.get() < 1000, "the runner spins");
            loop {
                if let Some(state) = poke.take() {
                    return state;
                }
                let next = self.script.borrow().front().copied();
                match next {
                    Some((at, stop)) if deadline.is_none_or(|d| self.start + at < d) => {
                        self.script.borrow_mut().pop_front();
                        self.move_to(self.start + at);
                        if stop {
                            poke.stop();
                        } else {
                            poke.poke();
                        }
                    }
                    _ => {
                        self.move_to(deadline.expect("the runner would wait forever"));
                        return (false, false);
                    }
                }
            }
        }
    }

    #[test]
    fn the_loop_batches_pokes_and_retries_failures() {
        let fast = Intervals {
            min: Duration::from_millis(100),
            max: Duration::from_secs(60),
            full: Duration::from_secs(3600),
        };
        // 20 pokes 5 ms apart, then quiet until the stop at 550 ms.
        let pokes = (0..20).map(|n| (Duration::from_millis(5 * n), false));
        let clock = FakeClock::new(pokes.chain([(Duration::from_millis(550), true)]));
        let mut runs = Vec::new();
        run_on(&clock, fast, &Poke::default(), |full| {
            let started = clock.elapsed();
            // Costly enough that the next run waits the whole min interval.
            clock.advance(Duration::from_millis(40));
            runs.push((started.as_millis(), full));
            // The second run fails; the third (a retry nobody asked for) succeeds.
            runs.len() != 2
        });
        // One run at once, one batched run a min interval later, one retry after another.
        assert_eq!(runs, [(0, true), (100, false), (200, false)]);
    }
}
