//! What more than one skiff component needs to do the same way: the scheduler and the node
//! agent both read resource quantities and must agree on them ([`quantity`]); every binary
//! starts alike, and the node agent and a standalone proxy must name their node alike
//! ([`cli`]); the node agent, xtask and the test harness start processes inside Pods
//! ([`placement`]); a small seedable generator serves tie-breaks and tests ([`rng`]); and
//! whoever keeps state from a watch needs its relists handed over whole ([`relist`]); every
//! server serves its Prometheus metrics alike ([`metrics`]).

pub mod cli;
pub mod metrics;
pub mod placement;
pub mod quantity;
pub mod relist;
pub mod rng;
