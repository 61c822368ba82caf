//! A readable text form of the external-traffic maps, for golden files and for people; the external
//! twin of [`crate::ebpf::socket_lb::dump`], one line per entry.
//!
//! ```text
//! external svc 1
//!   tcp 172.31.0.11:30001 -> count 2 flags has-endpoints,snat
//!   slot 0 -> 10.244.1.10:8080 local
//!   slot 1 -> 10.244.2.10:8080
//! ```

use std::collections::BTreeSet;
use std::fmt::Write;

use skiff_ebpf_common::nodeport::{EXT_FLAG_SNAT, EXT_FLAG_SOURCE_RANGES, EXT_SLOT_LOCAL};
use skiff_ebpf_common::{SERVICE_FLAG_AFFINITY, SERVICE_FLAG_HAS_ENDPOINTS};

use super::plan::ExternalState;
use crate::ebpf::socket_lb::trace::{show_key, socket_addr};

/// The dump of `state` (empty when it holds nothing).
pub fn dump_external(state: &ExternalState) -> String {
    let ids: BTreeSet<u32> = state
        .services
        .values()
        .map(|v| v.service_id)
        .chain(state.slots.keys().map(|k| k.service_id))
        .collect();
    let mut out = String::new();
    for id in ids {
        let _ = writeln!(out, "external svc {id}");
        for (key, value) in state.services.iter().filter(|(_, v)| v.service_id == id) {
            let mut flags = Vec::new();
            if value.flags & SERVICE_FLAG_HAS_ENDPOINTS != 0 {
                flags.push("has-endpoints".to_owned());
            }
            if value.flags & EXT_FLAG_SNAT != 0 {
                flags.push("snat".to_owned());
            }
            if value.flags & EXT_FLAG_SOURCE_RANGES != 0 {
                flags.push("source-ranges".to_owned());
            }
            if value.flags & SERVICE_FLAG_AFFINITY != 0 {
                flags.push(format!("affinity({}s)", value.affinity_seconds));
            }
            let flags = if flags.is_empty() {
                "none".to_owned()
            } else {
                flags.join(",")
            };
            let _ = writeln!(
                out,
                "  {} -> count {} flags {flags}",
                show_key(key),
                value.backend_count
            );
        }
        for (key, slot) in state.slots.iter().filter(|(k, _)| k.service_id == id) {
            let local = if slot.flags & EXT_SLOT_LOCAL != 0 {
                " local"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  slot {} -> {}{local}",
                key.slot,
                socket_addr(&slot.backend)
            );
        }
        for (_, range) in state.sources.iter().filter(|(sid, _)| *sid == id) {
            let _ = writeln!(out, "  source {range}");
        }
    }
    out
}
