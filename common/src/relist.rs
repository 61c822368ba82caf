//! A watch as a stream of changes, with a relist handed over whole.
//!
//! kube-runtime's watcher lists before it watches, and lists again after a watch broke
//! (`Init`, `InitApply`…, `InitDone`). Whoever keeps state from a watch must then drop what the
//! new list no longer holds — deletions it missed while the watch was down — and must not act
//! on half a list. [`Relist`] does that bookkeeping once: it holds a list's objects back until
//! the list is complete and hands them over as one [`Change::Relisted`], which the holder
//! treats as "this is everything now". [`Change::Listing`] says a list began, for a holder that
//! must stop acting on what it knows until then (an allocator whose used set may be stale).

use futures::{Stream, StreamExt};
use kube::runtime::watcher::Event;

/// What a watch says happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Change<K> {
    /// An object was created or changed.
    Applied(K),
    /// An object was deleted.
    Deleted(K),
    /// A list began: what is known may be stale until [`Change::Relisted`].
    Listing,
    /// A complete list: these objects, and no others, exist.
    Relisted(Vec<K>),
}

/// Turns watcher events into [`Change`]s, one event at a time.
#[derive(Debug)]
pub struct Relist<K> {
    /// Objects of a list still coming in.
    listing: Option<Vec<K>>,
}

impl<K> Default for Relist<K> {
    fn default() -> Self {
        Relist { listing: None }
    }
}

impl<K> Relist<K> {
    /// Nothing listed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The change `event` makes, if it completes one.
    pub fn step(&mut self, event: Event<K>) -> Option<Change<K>> {
        match event {
            Event::Init => {
                self.listing = Some(Vec::new());
                Some(Change::Listing)
            }
            Event::InitApply(object) => match &mut self.listing {
                Some(listing) => {
                    listing.push(object);
                    None
                }
                None => Some(Change::Applied(object)),
            },
            Event::InitDone => Some(Change::Relisted(self.listing.take().unwrap_or_default())),
            Event::Apply(object) => Some(Change::Applied(object)),
            Event::Delete(object) => Some(Change::Deleted(object)),
        }
    }
}

/// A watcher's event stream as a stream of changes (errors pass through).
pub fn changes<K, E>(
    events: impl Stream<Item = Result<Event<K>, E>>,
) -> impl Stream<Item = Result<Change<K>, E>> {
    let mut relist = Relist::new();
    events.filter_map(move |event| {
        std::future::ready(match event {
            Ok(event) => relist.step(event).map(Ok),
            Err(err) => Some(Err(err)),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_handed_over_whole_and_watch_events_one_by_one() {
        let events = [
            Event::Init,
            Event::InitApply("a"),
            Event::InitApply("b"),
            Event::InitDone,
            Event::Apply("c"),
            Event::Delete("a"),
            // The watch broke: a relist, in which "b" is gone.
            Event::Init,
            Event::InitApply("c"),
            Event::InitDone,
        ];
        let stream = futures::stream::iter(events.map(Ok::<_, ()>));
        let changes: Vec<_> = futures::executor::block_on(changes(stream).collect());
        let want = [
            Change::Listing,
            Change::Relisted(vec!["a", "b"]),
            Change::Applied("c"),
            Change::Deleted("a"),
            Change::Listing,
            Change::Relisted(vec!["c"]),
        ];
        assert_eq!(changes, want.map(Ok));
    }

    #[test]
    fn an_empty_list_still_says_everything_is_gone() {
        let mut relist = Relist::<&str>::new();
        assert_eq!(relist.step(Event::Init), Some(Change::Listing));
        assert_eq!(
            relist.step(Event::InitDone),
            Some(Change::Relisted(Vec::new()))
        );
    }
}
