//! What the kernel programs would do with a connect (or an unconnected send), read from map
//! contents: the socket-level twin of `iptables::trace`, so golden and unit tests can state
//! behaviour ("this Pod reaches these endpoints") instead of map entries, and can check that
//! every state a sync passes through is one the kernel can read safely.

use std::net::SocketAddrV4;

use skiff_ebpf_common::{
    L4Addr, SERVICE_FLAG_AFFINITY, SERVICE_FLAG_HAS_ENDPOINTS, ServiceKey, ServiceValue, SlotKey,
};

use super::maps::SocketLbState;
use super::plan::ip_protocol;
use crate::model::Protocol;

/// What a connect to one address meets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No frontend (or a protocol the hooks leave alone): the call goes on untranslated.
    Untouched,
    /// The Service has no endpoints at all: `ECONNREFUSED` at once (iptables rejects).
    Refused,
    /// It has endpoints, none for this traffic here: `EPERM` (iptables drops).
    Dropped,
    /// Translated to one of these backends, each equally likely; sorted.
    Balanced {
        /// The backends.
        backends: Vec<SocketAddrV4>,
        /// The ClientIP affinity timeout, when a client is pinned to its first choice.
        affinity_seconds: Option<u32>,
    },
}

/// Why the kernel would find the maps broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Inconsistency {
    /// A frontend's count reaches a slot that is not there.
    #[error("frontend {0} reaches missing slot {1:?}")]
    MissingSlot(String, SlotKey),
    /// A slot or affinity match names a backend that is not there.
    #[error("{0} names missing backend {1}")]
    MissingBackend(String, u32),
}

/// What a connect to `dst` over `protocol` meets.
pub fn trace(state: &SocketLbState, dst: SocketAddrV4, protocol: Protocol) -> Outcome {
    let Some((_, value)) = frontend(state, dst, protocol) else {
        return Outcome::Untouched;
    };
    if value.backend_count == 0 {
        return if value.flags & SERVICE_FLAG_HAS_ENDPOINTS == 0 {
            Outcome::Refused
        } else {
            Outcome::Dropped
        };
    }
    let mut backends: Vec<SocketAddrV4> = reached(state, value).map(socket_addr).collect();
    backends.sort();
    Outcome::Balanced {
        backends,
        affinity_seconds: (value.flags & SERVICE_FLAG_AFFINITY != 0)
            .then_some(value.affinity_seconds),
    }
}

/// Would a client pinned to `backend` through `dst` (and within the timeout) be sent back to
/// it, as the kernel's `pinned_backend` decides?
pub fn honours_pin(
    state: &SocketLbState,
    dst: SocketAddrV4,
    protocol: Protocol,
    backend: SocketAddrV4,
) -> bool {
    let Some((_, value)) = frontend(state, dst, protocol) else {
        return false;
    };
    let backend = L4Addr::new(backend.ip().octets(), backend.port());
    let Some(backend_id) = state
        .backends
        .iter()
        .find(|(_, addr)| **addr == backend)
        .map(|(id, _)| *id)
    else {
        return false;
    };
    value.flags & SERVICE_FLAG_AFFINITY != 0
        && value.backend_count > 0
        && state
            .affinity_match
            .get(&value.match_key(backend_id))
            .is_some_and(|lists| lists & value.match_bit() != 0)
}

/// Checks what the kernel relies on: every slot a frontend can pick is there and names a
/// backend that is there, and so does every affinity match.
pub fn check(state: &SocketLbState) -> Result<(), Inconsistency> {
    for (key, value) in &state.services {
        for slot in slots(value) {
            let backend = state
                .slots
                .get(&slot)
                .ok_or_else(|| Inconsistency::MissingSlot(show_key(key), slot))?;
            if !state.backends.contains_key(backend) {
                return Err(Inconsistency::MissingBackend(
                    format!("slot {slot:?}"),
                    *backend,
                ));
            }
        }
    }
    for key in state.affinity_match.keys() {
        if !state.backends.contains_key(&key.backend_id) {
            let what = format!("affinity match of service {}", key.service_id);
            return Err(Inconsistency::MissingBackend(what, key.backend_id));
        }
    }
    Ok(())
}

/// `tcp 10.96.0.10:80`.
pub fn show_key(key: &ServiceKey) -> String {
    let protocol = match key.protocol {
        skiff_ebpf_common::IPPROTO_TCP => "tcp",
        skiff_ebpf_common::IPPROTO_UDP => "udp",
        _ => "?",
    };
    format!("{protocol} {}", key_addr(key))
}

/// A frontend's address and port.
pub fn key_addr(key: &ServiceKey) -> SocketAddrV4 {
    socket_addr(&L4Addr {
        addr: key.addr,
        port: key.port,
        pad: 0,
    })
}

/// An [`L4Addr`] as a socket address.
pub fn socket_addr(addr: &L4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(addr.octets().into(), addr.host_port())
}

fn frontend(
    state: &SocketLbState,
    dst: SocketAddrV4,
    protocol: Protocol,
) -> Option<(ServiceKey, &ServiceValue)> {
    let key = ServiceKey::new(dst.ip().octets(), dst.port(), ip_protocol(protocol)?);
    state.services.get(&key).map(|value| (key, value))
}

/// The backends a frontend picks from, as the kernel finds them through its slots.
pub fn reached<'a>(
    state: &'a SocketLbState,
    value: &'a ServiceValue,
) -> impl Iterator<Item = &'a L4Addr> {
    slots(value)
        .filter_map(|key| state.slots.get(&key))
        .filter_map(|id| state.backends.get(id))
}

/// The slot keys a frontend picks from.
fn slots(value: &ServiceValue) -> impl Iterator<Item = SlotKey> + '_ {
    (0..value.backend_count).map(move |slot| SlotKey {
        service_id: value.service_id,
        slot: value.first_slot() + slot,
    })
}
