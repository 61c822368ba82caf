//! [`FakeSockets`]: connected UDP sockets kept in memory, with the reverse-NAT entries the
//! socket programs would have made for them, ended by the kernel program's own rule
//! (`ends_socket`) — so a test can say "this client's socket to that Service ends, that one
//! stays" without a kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV4;

use skiff_ebpf_common::sockterm::{SockTermKey, ends_socket};
use skiff_ebpf_common::{L4Addr, RevNatKey};

use super::{SockTermError, SocketTerminator};

/// One connected UDP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FakeSocket {
    /// Its socket cookie.
    pub cookie: u64,
    /// The peer it is connected to (a backend, after translation).
    pub peer: SocketAddrV4,
}

/// Sockets of every namespace at once, and what ended them.
#[derive(Clone, Debug, Default)]
pub struct FakeSockets {
    /// Sockets still open.
    pub open: Vec<FakeSocket>,
    /// `SKIFF_REVNAT`: which frontend a socket reached its backend through.
    pub revnat: BTreeMap<RevNatKey, L4Addr>,
    /// Sockets ended, in order.
    pub ended: Vec<FakeSocket>,
    /// The departed pairs of every call, in order.
    pub calls: Vec<BTreeSet<SockTermKey>>,
    /// Fail this many calls from now, ending nothing.
    pub fail: usize,
}

impl FakeSockets {
    /// A socket connected through `frontend`, translated to `backend`.
    pub fn connect(&mut self, cookie: u64, frontend: SocketAddrV4, backend: SocketAddrV4) {
        self.revnat.insert(
            RevNatKey {
                cookie,
                backend: l4(backend),
            },
            l4(frontend),
        );
        self.connect_direct(cookie, backend);
    }

    /// A socket connected to `peer` by its address, which no program translated.
    pub fn connect_direct(&mut self, cookie: u64, peer: SocketAddrV4) {
        self.open.push(FakeSocket { cookie, peer });
    }
}

fn l4(addr: SocketAddrV4) -> L4Addr {
    L4Addr::new(addr.ip().octets(), addr.port())
}

impl SocketTerminator for FakeSockets {
    fn end_sockets(&mut self, departed: &BTreeSet<SockTermKey>) -> Result<usize, SockTermError> {
        self.calls.push(departed.clone());
        if self.fail > 0 {
            self.fail -= 1;
            return Err(SockTermError::Injected);
        }
        let revnat = &self.revnat;
        let (ended, open): (Vec<FakeSocket>, Vec<FakeSocket>) =
            self.open.iter().partition(|socket| {
                ends_socket(
                    socket.cookie,
                    l4(socket.peer),
                    |key| revnat.get(&key).copied(),
                    |key| departed.contains(&key),
                )
            });
        self.open = open;
        self.ended.extend(&ended);
        Ok(ended.len())
    }
}
