//! The cluster CIDR cut into equal node blocks, and which of them are taken.
//!
//! Pure bookkeeping, like kube-controller-manager's `cidrset`: the controller feeds it every
//! Node's existing podCIDR before it hands out anything, so a restart never gives a block away
//! twice. Allocation is next-fit: it goes on after the last block handed out and wraps around,
//! so a block freed by a deleted Node is reused last, after other nodes' routes to it are gone.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The most blocks one range is cut into (kube's limit: 16 bits of difference).
const MAX_BLOCK_BITS: u8 = 16;

/// Why a block cannot be given or taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    /// The node prefix does not fit inside the cluster range.
    #[error("node prefix /{prefix} does not fit cluster CIDR {cluster}")]
    BadPrefix { cluster: Ipv4Net, prefix: u8 },
    /// The cluster range would be cut into too many blocks.
    #[error(
        "cluster CIDR {cluster} cut into /{prefix} blocks gives more than 2^{MAX_BLOCK_BITS} blocks"
    )]
    TooManyBlocks { cluster: Ipv4Net, prefix: u8 },
    /// Every block is taken.
    #[error("no free /{prefix} block left in {cluster}")]
    Exhausted { cluster: Ipv4Net, prefix: u8 },
    /// The CIDR is not inside the cluster range.
    #[error("{cidr} is outside cluster CIDR {cluster}")]
    OutsideRange { cidr: Ipv4Net, cluster: Ipv4Net },
    /// Part of the CIDR is already taken.
    #[error("{cidr} overlaps a block already in use")]
    Overlaps { cidr: Ipv4Net },
}

/// The blocks of one cluster range and which are used.
#[derive(Debug, Clone)]
pub struct CidrSet {
    cluster: Ipv4Net,
    prefix: u8,
    blocks: u32,
    used: BTreeSet<u32>,
    next: u32,
}

impl CidrSet {
    /// Cuts `cluster` into `/prefix` blocks, all free.
    pub fn new(cluster: Ipv4Net, prefix: u8) -> Result<Self, CidrError> {
        let cluster = cluster.trunc();
        if prefix < cluster.prefix_len() || prefix > 32 {
            return Err(CidrError::BadPrefix { cluster, prefix });
        }
        let bits = prefix - cluster.prefix_len();
        if bits > MAX_BLOCK_BITS {
            return Err(CidrError::TooManyBlocks { cluster, prefix });
        }
        Ok(CidrSet {
            cluster,
            prefix,
            blocks: 1 << bits,
            used: BTreeSet::new(),
            next: 0,
        })
    }

    /// Hands out the next free block.
    pub fn allocate(&mut self) -> Result<Ipv4Net, CidrError> {
        let free = (self.next..self.blocks)
            .chain(0..self.next)
            .find(|i| !self.used.contains(i))
            .ok_or(CidrError::Exhausted {
                cluster: self.cluster,
                prefix: self.prefix,
            })?;
        self.used.insert(free);
        self.next = (free + 1) % self.blocks;
        Ok(self.block(free))
    }

    /// Marks every block `cidr` touches as used; changes nothing if any of them already is.
    pub fn occupy(&mut self, cidr: Ipv4Net) -> Result<(), CidrError> {
        let range = self.covered(cidr)?;
        if range.clone().any(|i| self.used.contains(&i)) {
            return Err(CidrError::Overlaps { cidr });
        }
        self.used.extend(range);
        Ok(())
    }

    /// Frees every block `cidr` touches (a CIDR outside the range frees nothing).
    pub fn release(&mut self, cidr: Ipv4Net) {
        if let Ok(range) = self.covered(cidr) {
            for i in range {
                self.used.remove(&i);
            }
        }
    }

    /// How many blocks are used.
    pub fn used(&self) -> usize {
        self.used.len()
    }

    fn block(&self, index: u32) -> Ipv4Net {
        let base = u32::from(self.cluster.network());
        let size = 1u64 << (32 - self.prefix);
        let addr = Ipv4Addr::from((u64::from(base) + u64::from(index) * size) as u32);
        Ipv4Net::new(addr, self.prefix).expect("prefix checked in new")
    }

    /// The indices of the blocks `cidr` lies in.
    fn covered(&self, cidr: Ipv4Net) -> Result<std::ops::Range<u32>, CidrError> {
        let cidr = cidr.trunc();
        if !self.cluster.contains(&cidr) {
            return Err(CidrError::OutsideRange {
                cidr,
                cluster: self.cluster,
            });
        }
        let shift = 32 - u32::from(self.prefix);
        let base = u32::from(self.cluster.network());
        let first = (u32::from(cidr.network()) - base) >> shift;
        let last = (u32::from(cidr.broadcast()) - base) >> shift;
        Ok(first..last + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn hands_out_distinct_blocks_in_order() {
        let mut set = CidrSet::new(net("10.244.0.0/16"), 24).unwrap();
        let got: Vec<_> = (0..3)
            .map(|_| set.allocate().unwrap().to_string())
            .collect();
        assert_eq!(got, ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]);
        assert_eq!(set.used(), 3);
    }

    #[test]
    fn skips_occupied_blocks_and_reports_overlaps() {
        let mut set = CidrSet::new(net("10.244.0.0/16"), 24).unwrap();
        set.occupy(net("10.244.0.0/24")).unwrap();
        assert_eq!(
            set.occupy(net("10.244.0.0/24")),
            Err(CidrError::Overlaps {
                cidr: net("10.244.0.0/24")
            })
        );
        // A /23 spans two blocks; one of them is taken, so it takes neither.
        assert!(set.occupy(net("10.244.0.0/23")).is_err());
        assert_eq!(set.used(), 1);
        assert_eq!(set.allocate().unwrap(), net("10.244.1.0/24"));
    }

    #[test]
    fn refuses_cidrs_outside_the_range() {
        let mut set = CidrSet::new(net("10.244.0.0/16"), 24).unwrap();
        assert!(matches!(
            set.occupy(net("10.0.0.0/24")),
            Err(CidrError::OutsideRange { .. })
        ));
        assert!(matches!(
            set.occupy(net("10.0.0.0/8")),
            Err(CidrError::OutsideRange { .. })
        ));
        assert_eq!(set.used(), 0);
    }

    #[test]
    fn exhausts_then_reuses_a_released_block() {
        let mut set = CidrSet::new(net("10.244.0.0/23"), 24).unwrap();
        let a = set.allocate().unwrap();
        let b = set.allocate().unwrap();
        assert_ne!(a, b);
        assert!(matches!(set.allocate(), Err(CidrError::Exhausted { .. })));
        set.release(a);
        assert_eq!(set.allocate().unwrap(), a);
    }

    #[test]
    fn next_fit_does_not_reuse_a_freed_block_first() {
        let mut set = CidrSet::new(net("10.244.0.0/22"), 24).unwrap();
        let a = set.allocate().unwrap();
        set.allocate().unwrap();
        set.release(a);
        assert_eq!(set.allocate().unwrap(), net("10.244.2.0/24"));
    }

    #[test]
    fn rejects_bad_prefixes() {
        assert!(matches!(
            CidrSet::new(net("10.244.0.0/16"), 8),
            Err(CidrError::BadPrefix { .. })
        ));
        assert!(matches!(
            CidrSet::new(net("10.0.0.0/8"), 30),
            Err(CidrError::TooManyBlocks { .. })
        ));
        assert!(CidrSet::new(net("10.244.0.0/16"), 16).is_ok());
    }
}
