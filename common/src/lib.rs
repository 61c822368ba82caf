//! What more than one skiff component needs to read the Kubernetes API the same way: the
//! scheduler and the node agent both read resource quantities, and must agree on them.

pub mod quantity;
