//! The iptables door that the CNI plugin's node network and the service proxy share.
//!
//! Both write through `iptables-restore --noflush`: it applies a whole change atomically and
//! leaves every chain it is not told about alone, so skiff's rules live next to Docker's, the
//! admin's and each other's. The door is three calls — [`Iptables::restore`] (any number of
//! `*table` sections in one call), [`Iptables::save`] and [`Iptables::check`] — with one real
//! implementation ([`RealIptables`], in the caller's network namespace or on a thread that
//! entered another, see [`Namespace`]) and one fake ([`FakeIptables`]).
//!
//! Restore text is read in one place, [`Tables`]: the fake applies restores to it, and the
//! proxy's save parser and packet tracer parse `iptables-save` output with it, so what the
//! fake accepts and what the tools understand cannot drift apart. [`words`] splits and joins
//! rule words the way iptables quotes them.

mod door;
mod fake;
mod model;
mod real;
mod table;
pub mod words;

pub use door::{Iptables, IptablesError};
pub use fake::FakeIptables;
pub use model::{Chains, RestoreError, Tables};
pub use real::{CurrentNamespace, Namespace, NamespaceError, RealIptables, output_with_input};
pub use table::Table;
pub use words::{join_words, jumps_to, split_words};
