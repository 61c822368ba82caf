//! Map doors for tests, for any plane: [`FakeMaps`] keeps the entries in memory and logs every
//! write, so a test can assert that a sync touched only what changed and replay the writes to
//! see every state the kernel could have read in between; [`FaultyMaps`] wraps any door and
//! fails the writes it is told to, like Cilium's faulty maps, so a test can check that a sync
//! cut short anywhere leaves the maps safe and that the next one converges.

use std::collections::BTreeSet;
use std::fmt::Debug;

use super::door::{MapDoor, MapDoorError};
use super::plane::MapState;

/// What the kernel fills by itself beside a plane's maps (an LRU), as a fake keeps it: a write
/// may clear some of it. `()`: nothing.
pub trait KernelFilled<W>: Clone + Debug + Default + Send {
    /// Sees one write applied.
    fn saw(&mut self, write: W);
}

impl<W> KernelFilled<W> for () {
    fn saw(&mut self, _: W) {}
}

/// In-memory maps that log every write.
#[derive(Clone, Debug)]
pub struct FakeMaps<S: MapState, K = ()> {
    /// What the maps hold.
    pub state: S,
    /// What the kernel filled: tests put entries here to see writes clear them.
    pub kernel_filled: K,
    /// Every write applied, in order.
    pub writes: Vec<S::Write>,
}

impl<S: MapState, K: Default> Default for FakeMaps<S, K> {
    fn default() -> Self {
        FakeMaps::holding(S::default())
    }
}

impl<S: MapState, K: Default> FakeMaps<S, K> {
    /// Fake maps holding `state`, as if a previous agent had left it pinned.
    pub fn holding(state: S) -> Self {
        FakeMaps {
            state,
            kernel_filled: K::default(),
            writes: Vec::new(),
        }
    }
}

impl<S: MapState, K: KernelFilled<S::Write>> MapDoor<S> for FakeMaps<S, K> {
    fn dump(&self) -> Result<S, MapDoorError> {
        Ok(self.state.clone())
    }

    fn apply(&mut self, write: S::Write) -> Result<(), MapDoorError> {
        self.state.apply(write);
        self.kernel_filled.saw(write);
        self.writes.push(write);
        Ok(())
    }
}

/// Which writes a [`FaultyMaps`] fails, counting every write tried from 0.
#[derive(Clone, Debug)]
enum Faults {
    /// These.
    Writes(BTreeSet<usize>),
    /// This one and every later one.
    From(usize),
}

/// A door that fails chosen writes, changing nothing for them.
#[derive(Clone, Debug)]
pub struct FaultyMaps<M> {
    /// The door that does the writes that succeed.
    pub inner: M,
    faults: Faults,
    tried: usize,
}

impl<M> FaultyMaps<M> {
    /// Fails the writes numbered in `fail`.
    pub fn new(inner: M, fail: impl IntoIterator<Item = usize>) -> Self {
        FaultyMaps {
            inner,
            faults: Faults::Writes(fail.into_iter().collect()),
            tried: 0,
        }
    }

    /// Fails write `first` and every one after it.
    pub fn failing_from(inner: M, first: usize) -> Self {
        FaultyMaps {
            inner,
            faults: Faults::From(first),
            tried: 0,
        }
    }

    /// How many writes were tried, failed ones included.
    pub fn tried(&self) -> usize {
        self.tried
    }
}

impl<S: MapState, M: MapDoor<S>> MapDoor<S> for FaultyMaps<M> {
    fn dump(&self) -> Result<S, MapDoorError> {
        self.inner.dump()
    }

    fn apply(&mut self, write: S::Write) -> Result<(), MapDoorError> {
        let n = self.tried;
        self.tried += 1;
        let fails = match &self.faults {
            Faults::Writes(numbers) => numbers.contains(&n),
            Faults::From(first) => n >= *first,
        };
        if fails {
            return Err(MapDoorError::Injected(n));
        }
        self.inner.apply(write)
    }
}
