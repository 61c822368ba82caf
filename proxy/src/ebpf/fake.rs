//! Map doors for tests: [`FakeLbMaps`] keeps the entries in memory and logs every write, so a
//! test can assert that a sync touched only what changed and replay the writes to see every
//! state the kernel could have read in between; [`FaultyLbMaps`] wraps any door and fails the
//! writes it is told to, like Cilium's faulty maps, so a test can check that a sync cut short
//! anywhere leaves the maps safe and that the next one converges.

use std::collections::{BTreeMap, BTreeSet};

use skiff_ebpf_common::{AffinityKey, AffinityValue};

use super::maps::{LbMaps, LbMapsError, LbState, MapWrite};

/// In-memory maps that log every write.
#[derive(Clone, Debug, Default)]
pub struct FakeLbMaps {
    /// What the maps hold.
    pub state: LbState,
    /// The affinity LRU, which the kernel fills: tests put pins here to see them cleared.
    pub affinity: BTreeMap<AffinityKey, AffinityValue>,
    /// Every write applied, in order.
    pub writes: Vec<MapWrite>,
}

impl FakeLbMaps {
    /// Fake maps holding `state`, as if a previous agent had left it pinned.
    pub fn holding(state: LbState) -> Self {
        FakeLbMaps {
            state,
            ..FakeLbMaps::default()
        }
    }
}

/// Applies one write to in-memory maps.
pub fn apply_to(state: &mut LbState, write: MapWrite) {
    match write {
        MapWrite::PutService(k, v) => _ = state.services.insert(k, v),
        MapWrite::DeleteService(k) => _ = state.services.remove(&k),
        MapWrite::PutSlot(k, v) => _ = state.slots.insert(k, v),
        MapWrite::DeleteSlot(k) => _ = state.slots.remove(&k),
        MapWrite::PutBackend(k, v) => _ = state.backends.insert(k, v),
        MapWrite::DeleteBackend(k) => _ = state.backends.remove(&k),
        MapWrite::PutAffinityMatch(k, v) => _ = state.affinity_match.insert(k, v),
        MapWrite::DeleteAffinityMatch(k) => _ = state.affinity_match.remove(&k),
        MapWrite::ClearAffinity(_) => {}
    }
}

impl LbMaps for FakeLbMaps {
    fn dump(&self) -> Result<LbState, LbMapsError> {
        Ok(self.state.clone())
    }

    fn apply(&mut self, write: MapWrite) -> Result<(), LbMapsError> {
        apply_to(&mut self.state, write);
        if let MapWrite::ClearAffinity(id) = write {
            self.affinity.retain(|k, _| k.service_id != id);
        }
        self.writes.push(write);
        Ok(())
    }
}

/// A door that fails chosen writes: write `n` (counting every write tried, from 0) fails,
/// changing nothing, when `n` is in the set.
#[derive(Clone, Debug)]
pub struct FaultyLbMaps<M> {
    /// The door that does the writes that succeed.
    pub inner: M,
    fail: BTreeSet<usize>,
    tried: usize,
}

impl<M: LbMaps> FaultyLbMaps<M> {
    /// Fails the writes numbered in `fail`.
    pub fn new(inner: M, fail: impl IntoIterator<Item = usize>) -> Self {
        FaultyLbMaps {
            inner,
            fail: fail.into_iter().collect(),
            tried: 0,
        }
    }

    /// How many writes were tried, failed ones included.
    pub fn tried(&self) -> usize {
        self.tried
    }
}

impl<M: LbMaps> LbMaps for FaultyLbMaps<M> {
    fn dump(&self) -> Result<LbState, LbMapsError> {
        self.inner.dump()
    }

    fn apply(&mut self, write: MapWrite) -> Result<(), LbMapsError> {
        let n = self.tried;
        self.tried += 1;
        if self.fail.contains(&n) {
            return Err(LbMapsError::Injected(n));
        }
        self.inner.apply(write)
    }
}
