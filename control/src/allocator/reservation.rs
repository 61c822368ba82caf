//! A reservation: what one Service write takes and frees, undone unless committed.

use std::sync::Arc;

use super::{Item, ServiceAllocator};

/// Addresses and ports taken for a write in progress.
#[derive(Debug)]
pub struct Reservation {
    allocator: Arc<ServiceAllocator>,
    /// Newly taken; given back on drop unless committed.
    pub(super) taken: Vec<Item>,
    /// Held by the old Service and not the new one; given back on commit.
    pub(super) freed: Vec<Item>,
}

impl Reservation {
    pub(super) fn new(allocator: Arc<ServiceAllocator>) -> Self {
        Reservation {
            allocator,
            taken: Vec::new(),
            freed: Vec::new(),
        }
    }

    /// The write succeeded: keep what was taken, give back what is no longer held.
    pub fn commit(mut self) {
        self.taken.clear();
        let freed = std::mem::take(&mut self.freed);
        self.allocator.give_back(&freed);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.taken.is_empty() {
            self.allocator.give_back(&self.taken);
        }
    }
}
