//! The iptables data plane: render the whole ruleset, write what changed in one restore.
//!
//! See [`render`] for the shape of the rules and why, and [`restore`] for how full and partial
//! syncs are written; the kernel door (`iptables-restore`, `iptables-save`, and their fake) is
//! the `skiff-iptables` crate the node network shares. Both tables go in one restore, so nat
//! and filter never disagree about a Service. [`trace`] walks a parsed ruleset the way the
//! kernel would, for tests and `skiff-proxy explain`.

mod assemble;
pub mod render;
pub mod restore;
pub mod trace;

use tracing::warn;

pub use assemble::ChainChanges;
pub use render::{RenderChanges, RenderOptions, Renderer, Ruleset};
pub use skiff_iptables::{FakeIptables, Iptables, IptablesError, RealIptables, Table};

use std::collections::{BTreeMap, BTreeSet};

use crate::conntrack::{Conntrack, stale_service_flows};
use crate::dataplane::{Dataplane, DataplaneError, SyncReport};
use crate::model::{DesiredService, DesiredState, ServicePortName};

/// The tables the proxy writes, in the order a restore names them.
pub const TABLES: [Table; 2] = [Table::Filter, Table::Nat];

/// The iptables data plane over an [`Iptables`] door and a [`Conntrack`] door.
#[derive(Debug)]
pub struct IptablesDataplane<I: Iptables, C: Conntrack> {
    iptables: I,
    conntrack: C,
    renderer: Renderer,
    /// Does the kernel hold the renderer's last ruleset? No: the next sync is full.
    synced: bool,
    /// Is there a last applied state to find stale flows against?
    flows_known: bool,
    /// Services changed since the last successful sync, with their state then.
    pending: BTreeMap<ServicePortName, Option<DesiredService>>,
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
            synced: false,
            flows_known: false,
            pending: BTreeMap::new(),
        }
    }

    /// The iptables door.
    pub fn iptables(&self) -> &I {
        &self.iptables
    }

    fn write(&self, changes: &ChainChanges) -> Result<(bool, usize), DataplaneError> {
        let full = !self.synced;
        let ruleset = self.renderer.ruleset();
        let mut text = String::new();
        for table in TABLES {
            if full {
                let kernel = restore::parse_save(&self.iptables.save(table)?);
                text.push_str(&restore::full(table, ruleset, &kernel));
            } else if let Some(partial) = changes
                .get(&table)
                .and_then(|changed| restore::partial(table, ruleset, changed))
            {
                text.push_str(&partial);
            }
        }
        if text.is_empty() {
            return Ok((full, 0));
        }
        self.iptables.restore(&text)?;
        let written = text.lines().filter(|l| l.starts_with(':')).count();
        Ok((full, written))
    }
}

impl<I: Iptables, C: Conntrack> Dataplane for IptablesDataplane<I, C> {
    fn sync(&mut self, desired: &DesiredState) -> Result<SyncReport, DataplaneError> {
        let changes = self.renderer.render(desired);
        for (name, before) in changes.services {
            self.pending.entry(name).or_insert(before);
        }
        let (full, written) = match self.write(&changes.chains) {
            Ok(done) => done,
            Err(err) => {
                self.synced = false;
                return Err(err);
            }
        };
        self.synced = true;
        let mut report = SyncReport {
            full,
            written,
            ..SyncReport::default()
        };
        for table in TABLES {
            report
                .rules
                .insert(table.as_str(), self.renderer.ruleset().rule_count(table));
        }
        let mut flows = BTreeSet::new();
        if self.flows_known {
            for (name, before) in &self.pending {
                let after = desired.services.get(name);
                stale_service_flows(name, before.as_ref(), after, &mut flows);
            }
        }
        self.pending.clear();
        self.flows_known = true;
        for flow in flows {
            match self.conntrack.delete(&flow) {
                Ok(()) => report.flows_cleared += 1,
                Err(err) => warn!(error = %err, "cannot delete stale conntrack entries"),
            }
        }
        Ok(report)
    }

    fn force_full_sync(&mut self) {
        self.synced = false;
    }

    fn cleanup(&mut self) -> Result<(), DataplaneError> {
        self.synced = false;
        self.flows_known = false;
        self.pending.clear();
        let mut text = String::new();
        for table in TABLES {
            let kernel = restore::parse_save(&self.iptables.save(table)?);
            text.extend(restore::cleanup(table, &kernel));
        }
        if !text.is_empty() {
            self.iptables.restore(&text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
