//! The iptables data plane: render the whole ruleset, write what changed in one restore per table.
//!
//! See [`render`] for the shape of the rules and why, [`restore`] for how full and partial syncs
//! are written, and [`door`] for the `iptables-restore` seam. [`trace`] walks a parsed ruleset
//! the way the kernel would, for tests and `skiff-proxy explain`.

pub mod door;
pub mod render;
pub mod restore;
pub mod trace;

use tracing::warn;

pub use door::{FakeIptables, Iptables, IptablesError, RealIptables, Table};
pub use render::{RenderOptions, Renderer, Ruleset};

use crate::conntrack::{Conntrack, stale_flows};
use crate::dataplane::{Dataplane, DataplaneError, SyncReport};
use crate::model::DesiredState;

/// The iptables data plane over an [`Iptables`] door and a [`Conntrack`] door.
#[derive(Debug)]
pub struct IptablesDataplane<I: Iptables, C: Conntrack> {
    iptables: I,
    conntrack: C,
    renderer: Renderer,
    /// What the kernel holds, as far as we know; `None` forces a full sync.
    applied: Option<Ruleset>,
    applied_state: Option<DesiredState>,
}

impl IptablesDataplane<RealIptables, crate::conntrack::RealConntrack> {
    /// The real data plane of this network namespace. When NodePorts answer on 127.0.0.1 it
    /// sets `route_localnet`, as kube-proxy does (a warning, not an error, if it cannot).
    pub fn real(options: RenderOptions) -> Self {
        if options.localhost_nodeports
            && let Err(err) = std::fs::write("/proc/sys/net/ipv4/conf/all/route_localnet", "1")
        {
            tracing::warn!(error = %err, "cannot set route_localnet; NodePorts on 127.0.0.1 will not answer");
        }
        Self::new(
            RealIptables::new(),
            crate::conntrack::RealConntrack,
            options,
        )
    }
}

impl<I: Iptables, C: Conntrack> IptablesDataplane<I, C> {
    /// A data plane whose first sync is a full one.
    pub fn new(iptables: I, conntrack: C, options: RenderOptions) -> Self {
        IptablesDataplane {
            iptables,
            conntrack,
            renderer: Renderer::new(options),
            applied: None,
            applied_state: None,
        }
    }

    /// The iptables door.
    pub fn iptables(&self) -> &I {
        &self.iptables
    }

    fn write(&mut self, ruleset: &Ruleset) -> Result<(bool, usize), DataplaneError> {
        let mut written = 0;
        let full = self.applied.is_none();
        for table in Table::ALL {
            let text = match &self.applied {
                Some(applied) => restore::partial(table, ruleset, applied),
                None => {
                    let kernel = restore::parse_save(&self.iptables.save(table)?);
                    Some(restore::full(table, ruleset, &kernel))
                }
            };
            if let Some(text) = text {
                written += text.lines().filter(|l| l.starts_with(':')).count();
                self.iptables.restore(table, &text)?;
            }
        }
        Ok((full, written))
    }
}

impl<I: Iptables, C: Conntrack> Dataplane for IptablesDataplane<I, C> {
    fn sync(&mut self, desired: &DesiredState) -> Result<SyncReport, DataplaneError> {
        let ruleset = self.renderer.render(desired);
        let (full, written) = match self.write(&ruleset) {
            Ok(done) => done,
            Err(err) => {
                self.applied = None;
                return Err(err);
            }
        };
        let mut report = SyncReport {
            full,
            written,
            ..SyncReport::default()
        };
        for table in Table::ALL {
            report
                .rules
                .insert(table.as_str(), ruleset.rule_count(table));
        }
        self.applied = Some(ruleset);
        for flow in stale_flows(self.applied_state.as_ref(), desired) {
            match self.conntrack.delete(&flow) {
                Ok(()) => report.flows_cleared += 1,
                Err(err) => warn!(error = %err, "cannot delete stale conntrack entries"),
            }
        }
        self.applied_state = Some(desired.clone());
        Ok(report)
    }

    fn force_full_sync(&mut self) {
        self.applied = None;
    }

    fn cleanup(&mut self) -> Result<(), DataplaneError> {
        self.applied = None;
        self.applied_state = None;
        for table in Table::ALL {
            let kernel = restore::parse_save(&self.iptables.save(table)?);
            if let Some(text) = restore::cleanup(table, &kernel) {
                self.iptables.restore(table, &text)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
