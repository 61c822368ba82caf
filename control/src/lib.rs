//! skiff-control: the control plane.
//!
//! An apiserver that speaks the Kubernetes REST API over a revisioned, watchable store, plus the
//! scheduler and controllers that feed the data plane (see `../shared/DESIGN.md`). The API and
//! controllers arrive with their own issues; this crate holds the workspace's place for them.
