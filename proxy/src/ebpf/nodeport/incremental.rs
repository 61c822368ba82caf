//! Syncing what changed in the NodePort maps, as [`crate::ebpf::incremental`] does for the
//! socket maps: an endpoint change among 10,000 NodePort Services plans and diffs one Service,
//! not all of them.
//!
//! Simpler than the socket side: a slot holds its backend's address (no shared backend ids),
//! so a Service's entries are its frontends, its slots and its source ranges, all found by its
//! id. The same three things send a sync back to the full [`plan_external`]: the node's facts
//! changed (every node-port frontend moves), a frontend claimed by two Services, and many
//! changes at once.

use std::collections::BTreeMap;

use super::plan::{ExtState, external_frontend_count, plan_external};
use crate::ebpf::incremental::{ChangedServices, frontends_of, owned_ids, slot_range};
use crate::model::{DesiredService, DesiredState, NodeFacts, ServicePortName};

/// What the last NodePort sync applied, to find what the next one changes.
#[derive(Clone, Debug, Default)]
pub struct ExtApplied {
    /// Some frontend was claimed by more than one Service: every sync plans in full.
    contested: bool,
    node: NodeFacts,
    services: BTreeMap<ServicePortName, DesiredService>,
}

impl ExtApplied {
    /// Records a state planned in full.
    pub fn after_full(desired: &DesiredState, state: &ExtState) -> Self {
        ExtApplied {
            contested: external_frontend_count(desired) != state.services.len(),
            node: desired.node.clone(),
            services: desired.services.clone(),
        }
    }

    /// Is some frontend claimed twice, so that every sync plans in full?
    pub fn contested(&self) -> bool {
        self.contested
    }
}

/// The part of the NodePort maps one incremental sync rewrites.
#[derive(Debug)]
pub struct ExtChange {
    /// What those entries hold now.
    pub before: ExtState,
    /// What they must hold.
    pub after: ExtState,
}

/// Plans only the Services that changed since `applied`; `None` when a full plan is needed.
/// On success `held` and `applied` are updated to the new state.
pub fn plan_external_changes(
    applied: &mut ExtApplied,
    desired: &DesiredState,
    held: &mut ExtState,
) -> Option<ExtChange> {
    let changed =
        ChangedServices::since(applied.contested, &applied.node, &applied.services, desired)?;
    // The changed Services' ids, found through the frontends they had.
    let old_plan = plan_external(&changed.old, held);
    let after = plan_external(&changed.new, held);
    let ids = owned_ids(&held.services, &old_plan.services, &after.services)?;
    if external_frontend_count(&changed.old) != old_plan.services.len()
        || external_frontend_count(&changed.new) != after.services.len()
    {
        return None;
    }
    let mut before = ExtState {
        services: frontends_of(&held.services, &ids),
        ..ExtState::default()
    };
    for id in &ids {
        before
            .slots
            .extend(held.slots.range(slot_range(*id)).map(|(k, v)| (*k, *v)));
        before.sources.extend(
            held.sources
                .range((*id, ipnet::Ipv4Net::default())..)
                .take_while(|(owner, _)| owner == id)
                .copied(),
        );
    }
    for key in before.services.keys() {
        held.services.remove(key);
    }
    for key in before.slots.keys() {
        held.slots.remove(key);
    }
    for source in &before.sources {
        held.sources.remove(source);
    }
    held.services.extend(&after.services);
    held.slots.extend(&after.slots);
    held.sources.extend(&after.sources);
    changed.record(&mut applied.services, desired);
    Some(ExtChange { before, after })
}
