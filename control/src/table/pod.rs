//! The Pod row: READY, STATUS and RESTARTS are derived, not stored.
//!
//! STATUS starts from the phase (or `status.reason`) and is overridden, in order, by the first
//! init container that has not finished ("Init:0/2", "Init:CrashLoopBackOff"), then by any app
//! container's waiting or terminated reason (the first container wins, as Kubernetes walks them
//! backwards), and finally by deletion ("Terminating"). Sidecars (init containers with
//! `restartPolicy: Always`) count as containers once started. RESTARTS adds "(5m ago)" from the
//! latest `lastState.terminated.finishedAt`.

use serde_json::{Value, json};

use super::time::{human_duration_since, timestamp};
use super::{Column, Printer, Row, age, flag, int, list, name, present, text};

/// The printer of Pods: READY, STATUS, RESTARTS, AGE (and IP, NODE wide).
pub static POD: Printer = Printer {
    columns: &[
        Column::NAME,
        Column::string("Ready", "The aggregate readiness state of this pod for accepting traffic."),
        Column::string("Status", "The aggregate status of the containers in this pod."),
        Column::string(
            "Restarts",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        Column::AGE,
        Column::string("IP", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.").wide(),
        Column::string("Node", "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename").wide(),
        Column::string("Nominated Node", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.").wide(),
        Column::string("Readiness Gates", "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates").wide(),
    ],
    print,
};

/// Restart count and the latest `lastState.terminated.finishedAt` seen.
#[derive(Clone, Copy, Debug, Default)]
struct Restarts {
    count: i64,
    last: Option<i128>,
}

impl Restarts {
    fn add(&mut self, status: &Value) {
        self.count += int(status, "/restartCount");
        if let Some(t) = timestamp(status, "/lastState/terminated/finishedAt") {
            self.last = Some(self.last.map_or(t, |last| last.max(t)));
        }
    }

    fn cell(self, now: i64) -> String {
        match self.last {
            Some(t) if self.count != 0 => {
                format!("{} ({} ago)", self.count, human_duration_since(t, now))
            }
            _ => self.count.to_string(),
        }
    }
}

fn print(pod: &Value, now: i64) -> Row {
    let phase = text(pod, "/status/phase");
    let conditions = list(pod, "/status/conditions");
    let mut reason = match text(pod, "/status/reason") {
        "" => phase.to_owned(),
        r => r.to_owned(),
    };
    let gated = conditions
        .iter()
        .any(|c| text(c, "/type") == "PodScheduled" && text(c, "/reason") == "SchedulingGated");
    if gated {
        reason = "SchedulingGated".to_owned();
    }

    let init_specs = list(pod, "/spec/initContainers");
    let is_sidecar = |container: &str| {
        init_specs
            .iter()
            .rev()
            .find(|c| text(c, "/name") == container)
            .is_some_and(|c| text(c, "/restartPolicy") == "Always")
    };
    let sidecars = init_specs
        .iter()
        .filter(|c| text(c, "/restartPolicy") == "Always")
        .count();
    let total = list(pod, "/spec/containers").len() + sidecars;
    let mut ready: usize = 0;

    let mut restarts = Restarts::default();
    let mut sidecar_restarts = Restarts::default();
    let mut initializing = false;
    for (i, status) in list(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        restarts.add(status);
        let sidecar = is_sidecar(text(status, "/name"));
        if sidecar {
            sidecar_restarts.add(status);
        }
        let terminated = present(status, "/state/terminated");
        let waiting = text(status, "/state/waiting/reason");
        reason = match terminated {
            Some(t) if int(t, "/exitCode") == 0 => continue,
            _ if sidecar && flag(status, "/started") => {
                if flag(status, "/ready") {
                    ready += 1;
                }
                continue;
            }
            Some(t) => terminated_reason(t, "Init:"),
            None if !waiting.is_empty() && waiting != "PodInitializing" => {
                format!("Init:{waiting}")
            }
            None => format!("Init:{i}/{}", init_specs.len()),
        };
        initializing = true;
        break;
    }

    if !initializing || initialized(conditions) {
        restarts = sidecar_restarts;
        ready += app_containers(pod, conditions, &mut restarts, &mut reason);
    }

    if present(pod, "/metadata/deletionTimestamp").is_some() {
        if text(pod, "/status/reason") == "NodeLost" {
            reason = "Unknown".to_owned();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_owned();
        }
    }

    let cells = vec![
        name(pod).into(),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts.cell(now).into(),
        age(pod, now),
        or_none(text(pod, "/status/podIPs/0/ip")).into(),
        or_none(text(pod, "/spec/nodeName")).into(),
        or_none(text(pod, "/status/nominatedNodeName")).into(),
        readiness_gates(pod, conditions).into(),
    ];
    let conditions = match phase {
        "Succeeded" => Some(completed(
            "Succeeded",
            "The pod has completed successfully.",
        )),
        "Failed" => Some(completed("Failed", "The pod failed.")),
        _ => None,
    };
    Row { cells, conditions }
}

/// The app containers' part of READY, STATUS and RESTARTS, walked backwards as Kubernetes does
/// (the first container's reason wins); returns how many are ready.
fn app_containers(
    pod: &Value,
    conditions: &[Value],
    restarts: &mut Restarts,
    reason: &mut String,
) -> usize {
    let mut ready = 0;
    let mut has_running = false;
    for status in list(pod, "/status/containerStatuses").iter().rev() {
        restarts.add(status);
        let waiting = text(status, "/state/waiting/reason");
        if !waiting.is_empty() {
            *reason = waiting.to_owned();
        } else if let Some(t) = present(status, "/state/terminated") {
            *reason = terminated_reason(t, "");
        } else if flag(status, "/ready") && present(status, "/state/running").is_some() {
            has_running = true;
            ready += 1;
        }
    }
    // A Completed container beside running ones does not make the Pod Completed.
    if *reason == "Completed" && has_running {
        let pod_ready = conditions
            .iter()
            .any(|c| text(c, "/type") == "Ready" && text(c, "/status") == "True");
        *reason = if pod_ready { "Running" } else { "NotReady" }.to_owned();
    }
    ready
}

/// "OOMKilled", else "Signal:9", else "ExitCode:1", after `prefix`.
fn terminated_reason(terminated: &Value, prefix: &str) -> String {
    let reason = text(terminated, "/reason");
    let signal = int(terminated, "/signal");
    if !reason.is_empty() {
        format!("{prefix}{reason}")
    } else if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int(terminated, "/exitCode"))
    }
}

/// Whether the first `Initialized` condition is True.
fn initialized(conditions: &[Value]) -> bool {
    conditions
        .iter()
        .find(|c| text(c, "/type") == "Initialized")
        .is_some_and(|c| text(c, "/status") == "True")
}

/// "1/2": readiness gates whose condition is True, or "<none>".
fn readiness_gates(pod: &Value, conditions: &[Value]) -> String {
    let gates = list(pod, "/spec/readinessGates");
    if gates.is_empty() {
        return "<none>".to_owned();
    }
    let passing = gates
        .iter()
        .filter(|gate| {
            let wanted = text(gate, "/conditionType");
            conditions
                .iter()
                .find(|c| text(c, "/type") == wanted)
                .is_some_and(|c| text(c, "/status") == "True")
        })
        .count();
    format!("{passing}/{}", gates.len())
}

fn completed(reason: &str, message: &str) -> Value {
    json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}])
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { "<none>" } else { s }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::tests::{NOW, cells, columns};
    use super::super::{IncludeObject, to_table};

    fn pod(spec: Value, status: Value) -> Value {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default",
                         "creationTimestamp": "2026-11-22T01:58:04Z"},
        });
        pod["spec"] = spec;
        pod["status"] = status;
        pod
    }

    fn two_containers() -> Value {
        json!({"nodeName": "node-a", "containers": [
            {"name": "app", "image": "shop:1"}, {"name": "proxy", "image": "envoy:1"}]})
    }

    #[test]
    fn columns_match_kubernetes() {
        let want = [
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(n, t, p)| (n.to_string(), t.to_string(), *p))
            .collect();
        assert_eq!(columns("Pod"), want);
    }

    #[test]
    fn running_pod_with_one_unready_container_and_restarts() {
        let status = json!({
            "phase": "Running",
            "podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}, {"ip": "fd00::7"}],
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 0,
                 "state": {"running": {"startedAt": "2026-11-22T01:58:10Z"}}},
                {"name": "proxy", "ready": false, "restartCount": 3,
                 "state": {"running": {"startedAt": "2026-11-22T01:58:40Z"}},
                 "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                              "finishedAt": "2026-11-22T01:58:04Z"}}}
            ]
        });
        assert_eq!(
            cells("Pod", pod(two_containers(), status)),
            [
                json!("web-1"),
                json!("1/2"),
                json!("Running"),
                json!("3 (5m ago)"),
                json!("5m"),
                json!("10.244.1.7"),
                json!("node-a"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
    }

    #[test]
    fn pending_pod_creating_containers() {
        let status = json!({
            "phase": "Pending",
            "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ContainerCreating"}}},
                {"name": "proxy", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ContainerCreating"}}}
            ]
        });
        let row = cells("Pod", pod(two_containers(), status));
        assert_eq!(
            row[1..5],
            [
                json!("0/2"),
                json!("ContainerCreating"),
                json!("0"),
                json!("5m")
            ]
        );
        assert_eq!(row[5], "<none>");
    }

    #[test]
    fn crash_looping_first_container_wins() {
        let status = json!({
            "phase": "Running",
            "containerStatuses": [
                {"name": "app", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 2, "finishedAt": "2026-11-22T02:02:04Z"}}},
                {"name": "proxy", "restartCount": 0, "state": {"terminated": {"exitCode": 137, "signal": 9}}}
            ]
        });
        let row = cells("Pod", pod(two_containers(), status));
        assert_eq!(
            row[1..4],
            [
                json!("0/2"),
                json!("CrashLoopBackOff"),
                json!("4 (60s ago)")
            ]
        );
    }

    #[test]
    fn terminated_without_reason_reads_signal_or_exit_code() {
        let status = |terminated: Value| {
            json!({"phase": "Running", "containerStatuses": [
                {"name": "app", "state": {"terminated": terminated}}]})
        };
        let spec = json!({"containers": [{"name": "app"}]});
        let signalled = cells(
            "Pod",
            pod(spec.clone(), status(json!({"exitCode": 137, "signal": 9}))),
        );
        assert_eq!(signalled[2], "Signal:9");
        let exited = cells("Pod", pod(spec, status(json!({"exitCode": 3}))));
        assert_eq!(exited[2], "ExitCode:3");
    }

    #[test]
    fn terminating_pod() {
        let mut p = pod(
            json!({"containers": [{"name": "app"}], "nodeName": "node-a"}),
            json!({"phase": "Running", "containerStatuses": [
                {"name": "app", "ready": true, "state": {"running": {}}}]}),
        );
        p["metadata"]["deletionTimestamp"] = json!("2026-11-22T02:03:00Z");
        assert_eq!(
            cells("Pod", p.clone())[1..3],
            [json!("1/1"), json!("Terminating")]
        );
        // A finished Pod being deleted keeps its phase; a lost node reads Unknown.
        p["status"]["phase"] = json!("Succeeded");
        p["status"]["containerStatuses"] = json!([{"name": "app", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]);
        assert_eq!(cells("Pod", p.clone())[2], "Completed");
        p["status"]["phase"] = json!("Running");
        p["status"]["reason"] = json!("NodeLost");
        p["status"]["containerStatuses"] = json!([]);
        assert_eq!(cells("Pod", p)[2], "Unknown");
    }

    #[test]
    fn succeeded_pod_is_completed_and_marked_as_such() {
        let p = pod(
            json!({"containers": [{"name": "job"}]}),
            json!({"phase": "Succeeded", "containerStatuses": [
                {"name": "job", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        let table = to_table(&super::POD, &[p], IncludeObject::None, NOW, json!({}));
        let row = &table["rows"][0];
        assert_eq!(row["cells"][1], "0/1");
        assert_eq!(row["cells"][2], "Completed");
        assert_eq!(
            row["conditions"],
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                    "message": "The pod has completed successfully."}])
        );
    }

    #[test]
    fn completed_container_beside_running_one() {
        let status = |ready: &str| {
            json!({"phase": "Running",
                "conditions": [{"type": "Ready", "status": ready}],
                "containerStatuses": [
                    {"name": "app", "ready": true, "state": {"running": {}}},
                    {"name": "proxy", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]})
        };
        assert_eq!(
            cells("Pod", pod(two_containers(), status("True")))[2],
            "Running"
        );
        assert_eq!(
            cells("Pod", pod(two_containers(), status("False")))[2],
            "NotReady"
        );
    }

    #[test]
    fn init_containers() {
        let spec = json!({"initContainers": [{"name": "migrate"}, {"name": "seed"}],
                          "containers": [{"name": "app"}]});
        let init = |statuses: Value| {
            json!({"phase": "Pending", "initContainerStatuses": statuses,
                   "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}]})
        };
        let waiting_first = init(json!([
            {"name": "migrate", "state": {"waiting": {"reason": "PodInitializing"}}},
            {"name": "seed", "state": {"waiting": {}}}]));
        assert_eq!(
            cells("Pod", pod(spec.clone(), waiting_first))[1..3],
            [json!("0/1"), json!("Init:0/2")]
        );

        let second = init(json!([
            {"name": "migrate", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "seed", "state": {"running": {}}}]));
        assert_eq!(cells("Pod", pod(spec.clone(), second))[2], "Init:1/2");

        let crashing = init(json!([
            {"name": "migrate", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-22T02:02:34Z"}}}]));
        assert_eq!(
            cells("Pod", pod(spec.clone(), crashing))[2..4],
            [json!("Init:CrashLoopBackOff"), json!("2 (30s ago)")]
        );

        let failed = init(json!([{"name": "migrate", "state": {"terminated": {"exitCode": 3}}}]));
        assert_eq!(
            cells("Pod", pod(spec.clone(), failed))[2],
            "Init:ExitCode:3"
        );
        let killed = init(
            json!([{"name": "migrate", "state": {"terminated": {"exitCode": 1, "reason": "OOMKilled"}}}]),
        );
        assert_eq!(cells("Pod", pod(spec, killed))[2], "Init:OOMKilled");
    }

    #[test]
    fn finished_init_restarts_are_not_counted_once_running() {
        let spec =
            json!({"initContainers": [{"name": "migrate"}], "containers": [{"name": "app"}]});
        let status = json!({"phase": "Running",
            "initContainerStatuses": [{"name": "migrate", "restartCount": 2,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-22T02:03:00Z"}}}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 1,
                "state": {"running": {}}}]});
        // No finishedAt for the app container, so no "(... ago)".
        assert_eq!(
            cells("Pod", pod(spec, status))[1..4],
            [json!("1/1"), json!("Running"), json!("1")]
        );
    }

    #[test]
    fn started_sidecar_counts_as_a_container() {
        let spec = json!({"initContainers": [{"name": "mesh", "restartPolicy": "Always"}],
                          "containers": [{"name": "app"}]});
        let status = json!({"phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [{"name": "mesh", "started": true, "ready": true, "restartCount": 1,
                "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-22T01:03:04Z"}}}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]});
        assert_eq!(
            cells("Pod", pod(spec, status))[1..4],
            [json!("2/2"), json!("Running"), json!("1 (60m ago)")]
        );
    }

    #[test]
    fn scheduling_gated_nominated_and_readiness_gates() {
        let spec = json!({"containers": [{"name": "app"}],
            "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]});
        let status = json!({"phase": "Pending", "nominatedNodeName": "node-b",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"},
                           {"type": "example.com/lb", "status": "True"}]});
        let row = cells("Pod", pod(spec, status));
        assert_eq!(row[2], "SchedulingGated");
        assert_eq!(
            row[5..],
            [
                json!("<none>"),
                json!("<none>"),
                json!("node-b"),
                json!("1/2")
            ]
        );
    }

    #[test]
    fn evicted_pod_shows_its_reason() {
        let status = json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."});
        let p = pod(json!({"containers": [{"name": "app"}]}), status);
        let table = to_table(&super::POD, &[p], IncludeObject::None, NOW, json!({}));
        assert_eq!(table["rows"][0]["cells"][2], "Evicted");
        assert_eq!(table["rows"][0]["conditions"][0]["reason"], "Failed");
    }
}
