//! Choosing among the Nodes that fit: kube-scheduler's NodeResourcesFit with the
//! LeastAllocated strategy (weight 1) and its default spreading of a controller's Pods
//! (PodTopologySpread's system default over hostnames, weight 2), each scored 0–100.
//! Ties go to a random Node among the best, as kube-scheduler does, so equal Nodes share load.

use skiff_common::rng::SmallRng;

use super::cache::{NodeInfo, PodDemand, Resources};
use super::filter::{self, FitError};

const RESOURCE_WEIGHT: i128 = 1;
const SPREAD_WEIGHT: i128 = 2;

/// Free share of one resource after placing the Pod, 0–100.
fn free_share(allocatable: i128, requested: i128) -> i128 {
    if allocatable <= 0 {
        return 0;
    }
    ((allocatable - requested).max(0) * 100) / allocatable
}

fn least_allocated(node: &NodeInfo, want: Resources) -> i128 {
    let cpu = free_share(node.allocatable.cpu, node.score_requested.cpu + want.cpu);
    let memory = free_share(
        node.allocatable.memory,
        node.score_requested.memory + want.memory,
    );
    (cpu + memory) / 2
}

/// The best Node for `demand` among `nodes`, or why none fits.
pub fn pick<'a>(
    nodes: impl Iterator<Item = &'a NodeInfo>,
    demand: &PodDemand,
    ties: &mut SmallRng,
) -> Result<&'a str, FitError> {
    let mut error = FitError::default();
    // (node, resource score, Pods of the same owner already there)
    let mut feasible: Vec<(&NodeInfo, i128, usize)> = Vec::new();
    for node in nodes {
        error.nodes += 1;
        match filter::check(node, demand) {
            Ok(()) => {
                let siblings = demand
                    .owner
                    .as_ref()
                    .and_then(|o| node.owners.get(o).copied())
                    .unwrap_or(0);
                feasible.push((node, least_allocated(node, demand.score_requests), siblings));
            }
            Err(reasons) => error.add(&reasons),
        }
    }
    let most_siblings = feasible.iter().map(|f| f.2).max().unwrap_or(0) as i128;
    let mut best: Option<(&str, i128)> = None;
    let mut tied = 0u64;
    for (node, resources, siblings) in feasible {
        let spread = if most_siblings == 0 {
            100
        } else {
            (most_siblings - siblings as i128) * 100 / most_siblings
        };
        let score = RESOURCE_WEIGHT * resources + SPREAD_WEIGHT * spread;
        match best {
            Some((_, top)) if score < top => {}
            Some((_, top)) if score == top => {
                // Reservoir sampling: each of the tied Nodes wins with equal chance.
                tied += 1;
                if ties.below(tied) == 0 {
                    best = Some((&node.name, score));
                }
            }
            _ => {
                best = Some((&node.name, score));
                tied = 1;
            }
        }
    }
    best.map(|(name, _)| name).ok_or(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: i128) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            exists: true,
            ready: true,
            allocatable: Resources {
                cpu,
                memory: 1 << 40,
            },
            allocatable_pods: 110,
            ..NodeInfo::default()
        }
    }

    fn demand(cpu: i128, owner: Option<&str>) -> PodDemand {
        let r = Resources { cpu, memory: 0 };
        PodDemand {
            requests: r,
            score_requests: r,
            owner: owner.map(str::to_owned),
            ..PodDemand::default()
        }
    }

    #[test]
    fn prefers_the_least_allocated_node() {
        let mut busy = node("busy", 4000);
        busy.score_requested.cpu = 3000;
        let idle = node("idle", 4000);
        let nodes = [busy, idle];
        let mut ties = SmallRng::seeded(7);
        assert_eq!(
            pick(nodes.iter(), &demand(500, None), &mut ties),
            Ok("idle")
        );
    }

    #[test]
    fn spreads_one_owners_pods_over_equal_nodes() {
        let mut a = node("a", 4000);
        a.owners.insert("rs".into(), 1);
        let b = node("b", 4000);
        let nodes = [a, b];
        for seed in 0..20 {
            let mut ties = SmallRng::seeded(seed);
            assert_eq!(
                pick(nodes.iter(), &demand(100, Some("rs")), &mut ties),
                Ok("b")
            );
        }
    }

    #[test]
    fn ties_are_broken_among_all_best_nodes() {
        let nodes = [node("a", 4000), node("b", 4000), node("c", 4000)];
        let mut ties = SmallRng::seeded(42);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            seen.insert(pick(nodes.iter(), &demand(100, None), &mut ties).unwrap());
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
    }

    #[test]
    fn no_fit_explains_every_node() {
        let mut cordoned = node("c", 4000);
        cordoned.unschedulable = true;
        let nodes = [cordoned, node("small", 100), node("small2", 100)];
        let mut ties = SmallRng::seeded(1);
        let err = pick(nodes.iter(), &demand(500, None), &mut ties).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu."
        );
    }
}
