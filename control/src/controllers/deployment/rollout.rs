//! The arithmetic of a rolling update, as Kubernetes' `deployment/util` and `rolling.go`:
//! how far the new ReplicaSet may grow (maxSurge) and how far old ones may shrink
//! (maxUnavailable). Pure, over a small view of each ReplicaSet, so it is tested alone.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// What the arithmetic needs of a ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsView {
    pub name: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.availableReplicas`, never above `replicas` (a status not yet caught up with a
    /// scale-down must not count Pods that are going away).
    pub available: i32,
}

impl RsView {
    /// The view of a ReplicaSet.
    pub fn of(rs: &ReplicaSet) -> Self {
        let replicas = spec_replicas(rs);
        let available = rs
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        RsView {
            name: rs.metadata.name.clone().unwrap_or_default(),
            replicas,
            available: available.min(replicas).max(0),
        }
    }
}

/// `spec.replicas` of a ReplicaSet (default 1).
pub fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `spec.replicas` of a Deployment (default 1).
pub fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// An int or a percentage of `total`, rounded up or down (`GetScaledValueFromIntOrPercent`).
pub fn scaled_value(value: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> i32 {
    let percent = |text: &str| -> Option<i64> { text.strip_suffix('%')?.parse().ok() };
    match value {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => scale_percent(
            percent(s).or_else(|| s.parse().ok()).unwrap_or(0),
            total,
            round_up,
        ),
        None => scale_percent(percent(default).unwrap_or(0), total, round_up),
    }
}

fn scale_percent(percent: i64, total: i32, round_up: bool) -> i32 {
    let product = percent * i64::from(total);
    let value = if round_up {
        (product + 99).div_euclid(100)
    } else {
        product.div_euclid(100)
    };
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Whether the Deployment rolls (the default) rather than recreates.
pub fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        != Some("Recreate")
}

/// `(maxSurge, maxUnavailable)` resolved against `spec.replicas` (`ResolveFenceposts`, then
/// `MaxSurge` / `MaxUnavailable`): surge rounds up, unavailable down, never both zero.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    if !is_rolling(d) {
        return (0, 0);
    }
    let replicas = desired(d);
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = scaled_value(
        rolling.and_then(|r| r.max_surge.as_ref()),
        "25%",
        replicas,
        true,
    );
    let mut unavailable = scaled_value(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        "25%",
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    if replicas == 0 {
        unavailable = 0;
    }
    (surge.max(0), unavailable.clamp(0, replicas.max(0)))
}

/// The size the new ReplicaSet may grow to now (`NewRSNewReplicas` for RollingUpdate).
pub fn new_rs_replicas(replicas: i32, surge: i32, all: &[RsView], new: &RsView) -> i32 {
    let current: i32 = all.iter().map(|r| r.replicas).sum();
    let max_total = replicas + surge;
    if current >= max_total {
        return new.replicas;
    }
    let up = (max_total - current).min(replicas - new.replicas);
    new.replicas + up.max(0)
}

/// Old ReplicaSets scaled down as far as maxUnavailable allows (`reconcileOldReplicaSets`):
/// first the unavailable Pods of old ReplicaSets, then available ones, oldest ReplicaSet first.
/// `old` is in creation order. Returns the new sizes of those that change.
pub fn scale_down_old(
    replicas: i32,
    unavailable: i32,
    old: &[RsView],
    new: Option<&RsView>,
) -> Vec<(String, i32)> {
    let original = old.to_vec();
    let mut old = old.to_vec();
    let old_count: i32 = old.iter().map(|r| r.replicas).sum();
    if old_count == 0 {
        return Vec::new();
    }
    let new_replicas = new.map_or(0, |n| n.replicas);
    let new_available = new.map_or(0, |n| n.available);
    let all_count = old_count + new_replicas;
    let min_available = replicas - unavailable;
    let new_unavailable = new_replicas - new_available;
    let max_scaled_down = all_count - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    // Unhealthy Pods of old ReplicaSets go first: they do not count towards availability.
    let mut cleaned = 0;
    for rs in &mut old {
        if cleaned >= max_scaled_down {
            break;
        }
        if rs.replicas == 0 || rs.replicas == rs.available {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(rs.replicas - rs.available);
        rs.replicas -= down;
        cleaned += down;
    }
    let available: i32 = old.iter().map(|r| r.available).sum::<i32>() + new_available;
    if available > min_available {
        let mut budget = available - min_available;
        for rs in &mut old {
            if budget == 0 {
                break;
            }
            if rs.replicas == 0 {
                continue;
            }
            let down = rs.replicas.min(budget);
            rs.replicas -= down;
            budget -= down;
        }
    }
    old.into_iter()
        .zip(original)
        .filter(|(after, before)| after.replicas != before.replicas)
        .map(|(after, _)| (after.name, after.replicas))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(
        replicas: i32,
        surge: &serde_json::Value,
        unavailable: &serde_json::Value,
    ) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "a"}},
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                "template": {}
            }
        }))
        .unwrap()
    }

    fn view(name: &str, replicas: i32, available: i32) -> RsView {
        RsView {
            name: name.into(),
            replicas,
            available,
        }
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        assert_eq!(
            fenceposts(&deployment(10, &json!("25%"), &json!("25%"))),
            (3, 2)
        );
        assert_eq!(
            fenceposts(&deployment(3, &json!("25%"), &json!("25%"))),
            (1, 0)
        );
        assert_eq!(fenceposts(&deployment(3, &json!(2), &json!(1))), (2, 1));
        // Both zero: one may be unavailable, or nothing could move.
        assert_eq!(
            fenceposts(&deployment(3, &json!("0%"), &json!("10%"))),
            (0, 1)
        );
        // Never more unavailable than replicas.
        assert_eq!(fenceposts(&deployment(2, &json!(1), &json!(5))), (1, 2));
    }

    #[test]
    fn the_new_replicaset_grows_within_the_surge() {
        let old = view("old", 3, 3);
        let new = view("new", 0, 0);
        assert_eq!(new_rs_replicas(3, 1, &[old.clone(), new.clone()], &new), 1);
        let new = view("new", 1, 0);
        // Already at replicas + surge: wait.
        assert_eq!(new_rs_replicas(3, 1, &[old, new.clone()], &new), 1);
        let old = view("old", 1, 1);
        let new = view("new", 2, 2);
        assert_eq!(new_rs_replicas(3, 1, &[old, new.clone()], &new), 3);
    }

    #[test]
    fn old_replicasets_shrink_within_max_unavailable() {
        // 3 replicas, maxUnavailable 0: only once a new Pod is available may an old one go.
        let old = [view("old", 3, 3)];
        assert!(scale_down_old(3, 0, &old, Some(&view("new", 1, 0))).is_empty());
        assert_eq!(
            scale_down_old(3, 0, &old, Some(&view("new", 1, 1))),
            [("old".to_owned(), 2)]
        );
        // maxUnavailable 1 lets one go at once.
        assert_eq!(
            scale_down_old(3, 1, &old, Some(&view("new", 1, 0))),
            [("old".to_owned(), 2)]
        );
    }

    #[test]
    fn unavailable_old_pods_go_first_and_oldest_replicaset_first() {
        let old = [view("older", 2, 0), view("old", 2, 2)];
        // Unhealthy ones are cleaned up without touching availability.
        assert_eq!(
            scale_down_old(4, 0, &old, Some(&view("new", 2, 2))),
            [("older".to_owned(), 0)]
        );
        let old = [view("older", 2, 2), view("old", 2, 2)];
        assert_eq!(
            scale_down_old(4, 1, &old, Some(&view("new", 0, 0))),
            [("older".to_owned(), 1)]
        );
    }
}
