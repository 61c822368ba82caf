//! One map plane: the sync loop shared by the socket load balancer's maps and the external
//! traffic maps.
//!
//! A plane's [`Planner`] says what its maps must hold for a [`DesiredState`] and which writes
//! get there; its [`MapDoor`] reads the maps whole and writes single entries. [`MapPlane`]
//! keeps what the maps hold (as far as it knows) and what the last sync applied, so a sync
//! plans only the Services that changed and writes only the entries that differ. The first
//! sync, and any after a failure, reads the maps back first — which is how a restarted agent
//! adopts the maps its predecessor pinned and writes nothing when nothing changed.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::marker::PhantomData;

use super::door::{MapDoor, MapDoorError};
use crate::dataplane::{Dataplane, DataplaneError, SyncReport};
use crate::model::DesiredState;

/// The contents of one plane's maps that the proxy writes, with the writes that change them.
pub trait MapState: Clone + Debug + Default + PartialEq + Send {
    /// One entry written or deleted.
    type Write: Copy + Debug + PartialEq + Send;
    /// Applies one write in memory, as the kernel would.
    fn apply(&mut self, write: Self::Write);
    /// How many entries each map holds, for the sync report.
    fn entries(&self) -> BTreeMap<&'static str, usize>;
}

/// The part of the maps one incremental sync rewrites.
#[derive(Debug)]
pub struct Change<S> {
    /// What those entries hold now.
    pub before: S,
    /// What they must hold.
    pub after: S,
}

/// What one plane's maps must hold, and how to get there.
pub trait Planner {
    /// The maps' contents.
    type State: MapState;
    /// What the last sync applied, to find what the next one changes.
    type Applied: Debug + Send;
    /// The full contents `desired` needs, reusing the ids `held` gives.
    fn plan(desired: &DesiredState, held: &Self::State) -> Self::State;
    /// The writes that turn `held` into `want`, in an order the kernel can read at any point.
    fn diff(held: &Self::State, want: &Self::State) -> Vec<<Self::State as MapState>::Write>;
    /// Records a state planned in full.
    fn applied_after_full(desired: &DesiredState, now: &Self::State) -> Self::Applied;
    /// Plans only the Services that changed since `applied`; `None` when a full plan is due.
    /// On success `held` and `applied` are updated to the new state.
    fn plan_changes(
        applied: &mut Self::Applied,
        desired: &DesiredState,
        held: &mut Self::State,
    ) -> Option<Change<Self::State>>;
}

/// What a plane does beside its map writes (the socket plane ends sockets of departed
/// backends); `()` does nothing.
pub trait SyncFollowUp<S>: Send {
    /// The entries `before` are about to become `after`.
    fn changing(&mut self, before: &S, after: &S);
    /// Everything is about to be removed.
    fn clearing(&mut self);
    /// The writes are done and the maps hold `now`; returns how many flows were cleared.
    fn synced(&mut self, now: &S) -> usize;
}

impl<S> SyncFollowUp<S> for () {
    fn changing(&mut self, _: &S, _: &S) {}
    fn clearing(&mut self) {}
    fn synced(&mut self, _: &S) -> usize {
        0
    }
}

/// A data plane over one set of maps: planner `P`, door `M`, follow-up `F`.
#[derive(Debug)]
pub struct MapPlane<P: Planner, M, F = ()> {
    maps: M,
    follow_up: F,
    /// What the maps hold, as far as we know; `None`: read them back before the next sync.
    held: Option<P::State>,
    /// What the last sync applied (with `held`): the next one plans only what changed.
    applied: Option<P::Applied>,
    planner: PhantomData<fn() -> P>,
}

impl<P: Planner, M: MapDoor<P::State>, F: SyncFollowUp<P::State>> MapPlane<P, M, F> {
    /// A plane whose first sync reads the maps back (and so adopts pinned ones).
    pub fn with_follow_up(maps: M, follow_up: F) -> Self {
        MapPlane {
            maps,
            follow_up,
            held: None,
            applied: None,
            planner: PhantomData,
        }
    }

    /// The map door, for tests and `explain`.
    pub fn maps(&self) -> &M {
        &self.maps
    }

    /// The map door, for tests that play the kernel's part.
    pub fn maps_mut(&mut self) -> &mut M {
        &mut self.maps
    }

    /// What the plane does beside its writes.
    pub fn follow_up(&self) -> &F {
        &self.follow_up
    }

    /// What the last sync applied, if it worked.
    pub fn applied(&self) -> Option<&P::Applied> {
        self.applied.as_ref()
    }

    fn write(&mut self, want: Option<&DesiredState>) -> Result<SyncReport, MapDoorError> {
        let full = self.held.is_none();
        let mut held = match self.held.take() {
            Some(held) => held,
            None => self.maps.dump()?,
        };
        let mut applied = self.applied.take();
        let change = match (want, applied.as_mut()) {
            (Some(desired), Some(applied)) if !full => P::plan_changes(applied, desired, &mut held),
            _ => None,
        };
        let (writes, now) = match change {
            Some(change) => {
                self.follow_up.changing(&change.before, &change.after);
                (P::diff(&change.before, &change.after), held)
            }
            None => {
                let now = match want {
                    Some(desired) => P::plan(desired, &held),
                    None => P::State::default(),
                };
                applied = want.map(|desired| P::applied_after_full(desired, &now));
                if want.is_some() {
                    self.follow_up.changing(&held, &now);
                } else {
                    self.follow_up.clearing();
                }
                (P::diff(&held, &now), now)
            }
        };
        // On error `held` and `applied` stay `None`: the next sync reads the maps back.
        for write in &writes {
            self.maps.apply(*write)?;
        }
        let report = SyncReport {
            full,
            map_entries: now.entries(),
            written: writes.len(),
            flows_cleared: self.follow_up.synced(&now),
            ..SyncReport::default()
        };
        self.held = Some(now);
        self.applied = applied;
        Ok(report)
    }
}

impl<P, M, F> Dataplane for MapPlane<P, M, F>
where
    P: Planner,
    M: MapDoor<P::State>,
    F: SyncFollowUp<P::State>,
{
    fn sync(&mut self, desired: &DesiredState) -> Result<SyncReport, DataplaneError> {
        Ok(self.write(Some(desired))?)
    }

    fn force_full_sync(&mut self) {
        self.held = None;
        self.applied = None;
    }

    fn cleanup(&mut self) -> Result<(), DataplaneError> {
        self.force_full_sync();
        self.write(None)?;
        Ok(())
    }
}
