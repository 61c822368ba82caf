//! Syncing what changed, for either plane: one endpoint change in a 10,000-Service cluster
//! must not re-plan and re-compare 200,000 map entries (that costs ~200 ms; the target is 5 ms).
//!
//! After a sync a plane keeps the desired state it applied ([`AppliedServices`]). The next one
//! finds the Services whose `DesiredService` differs (one equality check each), plans only
//! those against everything the maps hold — so a changed Service keeps its id through its
//! frontends, and new ids avoid every id in use — and diffs only the entries of those
//! Services' ids (`plan_changed`). What a plane shares between Services (the socket plane's
//! backends) it settles itself.
//!
//! Three things send a sync back to the full plan: a change of the node's facts (every
//! node-port frontend moves), a frontend claimed by more than one Service (who wins depends
//! on all of them), and many changes at once, where the full plan is as cheap.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use skiff_ebpf_common::{ServiceKey, ServiceValue, SlotKey};

use super::plane::Change;
use crate::model::{DesiredService, DesiredState, NodeFacts, ServicePortName};

/// Map contents whose entries each belong to one Service id, found through its frontends.
pub trait ServiceEntries: Default {
    /// The frontends: (address, port, protocol) to the Service's id and flags.
    fn frontends(&self) -> &BTreeMap<ServiceKey, ServiceValue>;
    /// The entries of the Services `ids` (entries shared between Services aside).
    fn owned_by(&self, ids: &BTreeSet<u32>) -> Self;
    /// Takes `before`'s entries out and puts `after`'s in.
    fn replace(&mut self, before: &Self, after: &Self);
}

/// What a sync applied, per Service, to find what the next one changes.
#[derive(Clone, Debug, Default)]
pub struct AppliedServices {
    /// Some frontend was claimed by more than one Service: every sync plans in full.
    contested: bool,
    node: NodeFacts,
    services: BTreeMap<ServicePortName, DesiredService>,
}

impl AppliedServices {
    /// Records `desired`, planned in full; `contested` when some frontend was claimed twice.
    pub fn after_full(desired: &DesiredState, contested: bool) -> Self {
        AppliedServices {
            contested,
            node: desired.node.clone(),
            services: desired.services.clone(),
        }
    }

    /// Is some frontend claimed twice, so that every sync plans in full?
    pub fn contested(&self) -> bool {
        self.contested
    }
}

/// The entries of the Services that changed since `applied`, before and after, planned with
/// `plan` against `held`; `None` when a full plan is due. `frontend_count` counts the
/// frontends a desired state claims (one claimed twice, twice).
pub(crate) fn plan_changed<S: ServiceEntries>(
    applied: &AppliedServices,
    desired: &DesiredState,
    held: &S,
    plan: impl Fn(&DesiredState, &S) -> S,
    frontend_count: impl Fn(&DesiredState) -> usize,
) -> Option<(ChangedServices, Change<S>)> {
    let changed = ChangedServices::since(applied, desired)?;
    // The old entries of the changed Services: their ids, found through their frontends.
    let old_plan = plan(&changed.old, held);
    let after = plan(&changed.new, held);
    let ids = owned_ids(held.frontends(), old_plan.frontends(), after.frontends())?;
    // Two of the changed Services claiming one frontend among themselves: also everyone's.
    if frontend_count(&changed.old) != old_plan.frontends().len()
        || frontend_count(&changed.new) != after.frontends().len()
    {
        return None;
    }
    let before = held.owned_by(&ids);
    Some((changed, Change { before, after }))
}

/// The Services that changed since a sync, as two desired states holding only them.
#[derive(Debug)]
pub(crate) struct ChangedServices {
    names: Vec<ServicePortName>,
    /// The changed Services as the last sync applied them.
    old: DesiredState,
    /// The changed Services as they are now.
    new: DesiredState,
}

impl ChangedServices {
    /// What changed between `applied` and `desired`; `None` when a full plan is due: some
    /// frontend was contested, the node's facts changed, or so much changed that the full
    /// plan is as cheap.
    fn since(applied: &AppliedServices, desired: &DesiredState) -> Option<Self> {
        if applied.contested || desired.node != applied.node {
            return None;
        }
        let names = changed_services(&applied.services, &desired.services);
        if names.len() * 8 > desired.services.len().max(8) {
            return None;
        }
        let subset = |services: &BTreeMap<ServicePortName, DesiredService>| DesiredState {
            node: desired.node.clone(),
            services: names
                .iter()
                .filter_map(|name| services.get(name).map(|s| (name.clone(), s.clone())))
                .collect(),
        };
        Some(ChangedServices {
            old: subset(&applied.services),
            new: subset(&desired.services),
            names,
        })
    }

    /// Records the changed Services of `desired` as applied.
    pub(crate) fn record(self, applied: &mut AppliedServices, desired: &DesiredState) {
        for name in self.names {
            match desired.services.get(&name) {
                Some(service) => applied.services.insert(name, service.clone()),
                None => applied.services.remove(&name),
            };
        }
    }
}

/// The ids of the Services that held the frontends `before` plans for them, when no other
/// Service holds any of those or of `after`'s (then who owns them depends on everyone).
fn owned_ids(
    held: &BTreeMap<ServiceKey, ServiceValue>,
    before: &BTreeMap<ServiceKey, ServiceValue>,
    after: &BTreeMap<ServiceKey, ServiceValue>,
) -> Option<BTreeSet<u32>> {
    let mut ids = BTreeSet::new();
    for key in before.keys() {
        ids.insert(held.get(key)?.service_id);
    }
    let foreign = after
        .keys()
        .chain(before.keys())
        .any(|key| held.get(key).is_some_and(|v| !ids.contains(&v.service_id)));
    (!foreign).then_some(ids)
}

/// The held frontends of the Services `ids`.
pub(crate) fn frontends_of(
    held: &BTreeMap<ServiceKey, ServiceValue>,
    ids: &BTreeSet<u32>,
) -> BTreeMap<ServiceKey, ServiceValue> {
    held.iter()
        .filter(|(_, value)| ids.contains(&value.service_id))
        .map(|(key, value)| (*key, *value))
        .collect()
}

/// The held slots of the Services `ids`.
pub(crate) fn slots_of<V: Copy>(
    held: &BTreeMap<SlotKey, V>,
    ids: &BTreeSet<u32>,
) -> BTreeMap<SlotKey, V> {
    ids.iter()
        .flat_map(|id| held.range(slot_range(*id)).map(|(k, v)| (*k, *v)))
        .collect()
}

/// Takes the keys of `before` out of `held` and puts `after`'s entries in.
pub(crate) fn replace_entries<K: Ord + Copy, V: Copy>(
    held: &mut BTreeMap<K, V>,
    before: &BTreeMap<K, V>,
    after: &BTreeMap<K, V>,
) {
    for key in before.keys() {
        held.remove(key);
    }
    held.extend(after);
}

/// The names whose Service differs between `before` and `now` (added, removed or changed), in
/// one ordered walk of both: lookups by name cost ~10x more at 10,000 Services.
fn changed_services(
    before: &BTreeMap<ServicePortName, DesiredService>,
    now: &BTreeMap<ServicePortName, DesiredService>,
) -> Vec<ServicePortName> {
    let mut changed = Vec::new();
    let (mut old, mut new) = (before.iter().peekable(), now.iter().peekable());
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => return changed,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((a, _)), Some((b, _))) => a.cmp(b),
        };
        match order {
            Ordering::Less => changed.extend(old.next().map(|(name, _)| name.clone())),
            Ordering::Greater => changed.extend(new.next().map(|(name, _)| name.clone())),
            Ordering::Equal => {
                if let (Some((name, x)), Some((_, y))) = (old.next(), new.next())
                    && x != y
                {
                    changed.push(name.clone());
                }
            }
        }
    }
}

/// Every slot key of Service `id`.
fn slot_range(id: u32) -> std::ops::RangeInclusive<SlotKey> {
    SlotKey {
        service_id: id,
        slot: 0,
    }..=SlotKey {
        service_id: id,
        slot: u32::MAX,
    }
}
