//! The socket plane's incremental sync ([`crate::ebpf::incremental`]), plus what only it has:
//! backends shared between Services. The plane keeps how many slots and affinity matches use
//! each backend id; one whose count drops to zero goes, and the ids of held backends are kept
//! by address so a changed Service's new backend reuses the id its address already has.

use std::collections::{BTreeMap, BTreeSet};

use super::maps::SocketLbState;
use super::plan::{BackendIndex, frontend_count, plan_indexed};
use crate::ebpf::incremental::{AppliedServices, ServiceEntries, plan_changed};
use crate::ebpf::plane::Change;
use crate::model::DesiredState;

/// What the last socket-plane sync applied, to find what the next one changes.
#[derive(Clone, Debug, Default)]
pub struct SocketLbApplied {
    services: AppliedServices,
    /// Slots and affinity matches naming each backend id.
    backend_refs: BTreeMap<u32, usize>,
    /// The held backends' ids by address, kept in step with the held map.
    backend_ids: BackendIndex,
}

impl SocketLbApplied {
    /// Records a state planned in full.
    pub fn after_full(desired: &DesiredState, state: &SocketLbState) -> Self {
        let mut backend_refs = BTreeMap::new();
        for id in references(state) {
            *backend_refs.entry(id).or_default() += 1;
        }
        SocketLbApplied {
            services: AppliedServices::after_full(
                desired,
                frontend_count(desired) != state.services.len(),
            ),
            backend_refs,
            backend_ids: BackendIndex::of(state),
        }
    }
}

/// Backend ids named by `state`'s slots and affinity matches, with repeats.
fn references(state: &SocketLbState) -> impl Iterator<Item = u32> + '_ {
    state
        .slots
        .values()
        .copied()
        .chain(state.affinity_match.keys().map(|k| k.backend_id))
}

/// Plans only the Services that changed since `applied`; `None` when a full plan is needed.
/// On success `held` and `applied` are updated to the new state.
pub fn plan_changes(
    applied: &mut SocketLbApplied,
    desired: &DesiredState,
    held: &mut SocketLbState,
) -> Option<Change<SocketLbState>> {
    let backend_ids = &applied.backend_ids;
    let (
        changed,
        Change {
            mut before,
            mut after,
        },
    ) = plan_changed(
        &applied.services,
        desired,
        held,
        |desired, held| plan_indexed(desired, held, backend_ids),
        frontend_count,
    )?;
    // Backends: counts down for what the old entries named, up for the new ones.
    let mut touched = BTreeSet::new();
    for id in references(&before) {
        touched.insert(id);
        if let Some(count) = applied.backend_refs.get_mut(&id) {
            *count = count.saturating_sub(1);
        }
    }
    for id in references(&after).collect::<Vec<_>>() {
        touched.insert(id);
        *applied.backend_refs.entry(id).or_default() += 1;
    }
    for id in &touched {
        if let Some(addr) = held.backends.get(id) {
            before.backends.insert(*id, *addr);
        }
        if applied.backend_refs.get(id).is_some_and(|n| *n > 0) {
            let addr = after.backends.get(id).or_else(|| held.backends.get(id))?;
            after.backends.insert(*id, *addr);
        } else {
            applied.backend_refs.remove(id);
            after.backends.remove(id);
        }
    }
    // The new whole: the old entries out, the new ones in.
    held.replace(&before, &after);
    for (id, addr) in &before.backends {
        applied.backend_ids.forget(*id, addr);
    }
    for (id, addr) in &after.backends {
        applied.backend_ids.learn(*id, *addr);
    }
    applied.backend_ids.settle(&held.backends);
    changed.record(&mut applied.services, desired);
    Some(Change { before, after })
}
