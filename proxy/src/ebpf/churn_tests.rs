//! Random churn for either plane: after every incremental sync the maps hold what a full plan
//! from the state before would have written.

use std::net::Ipv4Addr;

use crate::dataplane::Dataplane;
use crate::ebpf::fake::{FakeMaps, KernelFilled};
use crate::ebpf::plane::{MapPlane, MapState, Planner, SyncFollowUp};
use crate::model::{DesiredState, NodeFacts};
use skiff_common::rng::SmallRng;

/// A desired state with no Services on a node with one address.
pub(crate) fn one_node() -> DesiredState {
    DesiredState {
        node: NodeFacts {
            ips: vec![Ipv4Addr::new(172, 31, 0, 11)],
            ..NodeFacts::default()
        },
        ..DesiredState::default()
    }
}

/// What a churn run saw.
#[derive(Debug, Default)]
pub(crate) struct Churn {
    /// Syncs that were not full.
    pub partial: usize,
    /// Syncs with fewer than 20 writes.
    pub small: usize,
}

/// 400 steps of 1 to 3 `change`s each, a sync after each, compared with a full plan;
/// `after_sync` looks at the plane after each step.
pub(crate) fn churn<P, K, F>(
    plane: &mut MapPlane<P, FakeMaps<P::State, K>, F>,
    desired: &mut DesiredState,
    rng: &mut SmallRng,
    mut change: impl FnMut(&mut DesiredState, &mut SmallRng),
    mut after_sync: impl FnMut(usize, &MapPlane<P, FakeMaps<P::State, K>, F>),
) -> Churn
where
    P: Planner,
    K: KernelFilled<<P::State as MapState>::Write>,
    F: SyncFollowUp<P::State>,
{
    let mut seen = Churn::default();
    for step in 0..400 {
        let before = plane.maps().state.clone();
        for _ in 0..1 + rng.below(3) {
            change(desired, rng);
        }
        let writes_before = plane.maps().writes.len();
        let report = plane.sync(desired).unwrap();
        seen.partial += usize::from(!report.full);
        seen.small += usize::from(plane.maps().writes.len() - writes_before < 20);
        assert_eq!(
            plane.maps().state,
            P::plan(desired, &before),
            "step {step}: the maps differ from a full plan"
        );
        after_sync(step, plane);
    }
    seen
}
