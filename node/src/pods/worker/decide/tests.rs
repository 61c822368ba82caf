use serde_json::json;

use super::*;

fn exited(exit_code: i32) -> ContainerState {
    ContainerState::Exited {
        exit_code,
        reason: String::new(),
        message: None,
        started_at: None,
        finished_at: String::new(),
    }
}

fn running() -> ContainerState {
    ContainerState::Running {
        started_at: String::new(),
    }
}

#[test]
fn the_restart_policy_decides_which_exits_run_again() {
    let none = Backoff::default();
    let now = Instant::now();
    let decide = |policy, run: &ContainerState| next(policy, Some(run), true, &none, &none, now);
    let again = Next::Start { restart: true };
    for (policy, success, failure) in [
        (RestartPolicy::Always, again, again),
        (RestartPolicy::OnFailure, Next::Leave, again),
        (RestartPolicy::Never, Next::Leave, Next::Leave),
    ] {
        assert_eq!(
            decide(policy, &exited(0)),
            success,
            "{policy:?} after exit 0"
        );
        assert_eq!(
            decide(policy, &exited(1)),
            failure,
            "{policy:?} after exit 1"
        );
        assert_eq!(
            decide(policy, &running()),
            Next::Leave,
            "{policy:?} running"
        );
    }
    let first = next(RestartPolicy::Never, None, true, &none, &none, now);
    assert_eq!(
        first,
        Next::Start { restart: false },
        "every policy starts a first run"
    );
    let pod: Pod = serde_json::from_value(json!({"spec": {"containers": [],
        "restartPolicy": "OnFailure"}}))
    .unwrap();
    assert_eq!(RestartPolicy::of(&pod), RestartPolicy::OnFailure);
    assert_eq!(RestartPolicy::of(&Pod::default()), RestartPolicy::Always);
}

#[test]
fn a_pod_that_cannot_run_starts_nothing() {
    let none = Backoff::default();
    let decided = next(
        RestartPolicy::Always,
        None,
        false,
        &none,
        &none,
        Instant::now(),
    );
    assert_eq!(decided, Next::Leave);
}

#[test]
fn crashes_restart_at_once_then_back_off_doubling_to_five_minutes() {
    let t0 = Instant::now();
    let mut crash = Backoff::default();
    let none = Backoff::default();
    let crashed = exited(1);
    let decide = |crash: &Backoff, at| {
        next(
            RestartPolicy::Always,
            Some(&crashed),
            true,
            crash,
            &none,
            at,
        )
    };
    assert_eq!(
        decide(&crash, t0),
        Next::Start { restart: true },
        "the first restart is immediate"
    );
    count_restart(&mut crash, Some(t0), t0);
    assert_eq!(
        decide(&crash, t0 + Duration::from_secs(4)),
        Next::CrashBackOff {
            left: Duration::from_secs(6)
        }
    );
    assert_eq!(
        decide(&crash, t0 + BACKOFF_START),
        Next::Start { restart: true }
    );
    let waits: Vec<u64> = (1..=8).map(|n| Backoff::delay(n).as_secs()).collect();
    assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300, 300]);
}

#[test]
fn a_long_run_forgives_earlier_crashes() {
    let t0 = Instant::now();
    let mut crash = Backoff::default();
    for n in 0..4 {
        count_restart(&mut crash, Some(t0), t0 + Duration::from_secs(n));
    }
    let soon = t0 + Duration::from_secs(4);
    assert_eq!(
        crash.left(soon),
        Some(Backoff::delay(4) - Duration::from_secs(1))
    );
    let later = t0 + BACKOFF_RESET;
    count_restart(&mut crash, Some(t0), later);
    assert_eq!(
        crash.left(later),
        Some(BACKOFF_START),
        "ten minutes of running start over"
    );
}

#[test]
fn a_failed_pull_holds_the_start_until_its_back_off_ends() {
    let t0 = Instant::now();
    let none = Backoff::default();
    let mut pull = Backoff::default();
    pull.fail(t0);
    pull.fail(t0);
    let at = |secs| {
        next(
            RestartPolicy::Always,
            None,
            true,
            &none,
            &pull,
            t0 + Duration::from_secs(secs),
        )
    };
    assert_eq!(at(19), Next::PullBackOff);
    assert_eq!(at(20), Next::Start { restart: false });
    pull.reset();
    assert_eq!(pull.left(t0), None);
}

#[test]
fn containers_stop_before_the_sandbox_goes_and_the_pod_is_deleted_last() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"deletionGracePeriodSeconds": 5},
        "spec": {"containers": [], "terminationGracePeriodSeconds": 60}}))
    .unwrap();
    assert_eq!(
        teardown(Some(&pod)),
        [
            Teardown::StopContainers {
                grace: Duration::from_secs(5)
            },
            Teardown::RemoveSandbox,
            Teardown::DeletePod,
        ]
    );
    assert_eq!(
        teardown(None),
        [
            Teardown::StopContainers {
                grace: ORPHAN_GRACE
            },
            Teardown::RemoveSandbox
        ],
        "a Pod already gone from the API is not deleted again"
    );
    let spec_only: Pod = serde_json::from_value(
        json!({"spec": {"containers": [], "terminationGracePeriodSeconds": 60}}),
    )
    .unwrap();
    assert_eq!(grace_of(&spec_only), Duration::from_secs(60));
    assert_eq!(grace_of(&Pod::default()), Duration::from_secs(30));
}
