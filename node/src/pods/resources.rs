//! A container's cgroup limits from its `resources`, as kubelet derives them: CPU shares from
//! the request (the limit when only that is set; 2 when neither), a CFS quota from the CPU
//! limit, `memory.max` from the memory limit.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_common::quantity::parse_millis;

use crate::runtime::Resources;

/// kubelet's floor for CPU shares.
const MIN_SHARES: u64 = 2;
/// The CFS period, in µs.
const PERIOD_US: u64 = 100_000;
/// kubelet's floor for a CFS quota, in µs.
const MIN_QUOTA_US: u64 = 1_000;

fn quantity(map: Option<&BTreeMap<String, Quantity>>, key: &str) -> Option<u128> {
    let text = &map?.get(key)?.0;
    match parse_millis(text) {
        Ok(millis) => u128::try_from(millis).ok(),
        Err(err) => {
            tracing::warn!(error = %err, "{key} ignored");
            None
        }
    }
}

/// The container's limits.
pub fn container_resources(container: &Container) -> Resources {
    let resources = container.resources.as_ref();
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    let cpu_limit = quantity(limits, "cpu");
    let cpu_request = quantity(requests, "cpu").or(cpu_limit);
    let cpu_shares = cpu_request.map_or(MIN_SHARES, |milli| {
        ((milli * 1024).div_ceil(1000) as u64).max(MIN_SHARES)
    });
    let cpu_quota =
        cpu_limit.map(|milli| ((milli * PERIOD_US as u128 / 1000) as u64).max(MIN_QUOTA_US));
    let memory_limit = quantity(limits, "memory").map(|milli| milli.div_ceil(1000) as u64);
    Resources {
        cpu_shares,
        cpu_quota,
        memory_limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_become_cgroup_settings_as_kubelet_sets_them() {
        let container: Container = serde_json::from_value(json!({"name": "c", "resources": {
            "requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}}))
        .unwrap();
        assert_eq!(
            container_resources(&container),
            Resources {
                cpu_shares: 256,
                cpu_quota: Some(50_000),
                memory_limit: Some(64 << 20)
            }
        );
        let bare: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        assert_eq!(container_resources(&bare).cpu_shares, 2);
        let limit_only: Container =
            serde_json::from_value(json!({"name": "c", "resources": {"limits": {"cpu": "1"}}}))
                .unwrap();
        assert_eq!(container_resources(&limit_only).cpu_shares, 1024);
    }
}
