//! What more than one skiff component needs to do the same way: the scheduler and the node
//! agent both read resource quantities and must agree on them ([`quantity`]); every binary
//! starts alike, and the node agent and a standalone proxy must name their node alike
//! ([`cli`]).

pub mod cli;
pub mod quantity;
pub mod rng;
