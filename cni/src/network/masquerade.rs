//! Egress masquerade: Pods reach the world as their node, and each other as themselves.
//!
//! Pod addresses mean nothing outside the cluster (nobody routes 10.244.0.0/16 back to us), so
//! traffic from the cluster CIDR to anywhere else leaves with the node's address. Inside the
//! cluster it must not: a server Pod sees the client Pod's real IP (NetworkPolicy, logs, and the
//! Kubernetes network model all depend on it). The rules live in a chain of our own,
//! `SKIFFNET-MASQ` (not `SKIFF-*`: the Service proxy owns every `SKIFF-` chain in the same
//! namespace, rewrites its own `SKIFF-POSTROUTING` and removes them all on cleanup), rewritten whole on every ensure (restore flushes a chain it declares), and
//! one jump from `POSTROUTING` added only when `iptables -C` says it is missing — so restarts and
//! repeated ensures never stack duplicate jumps. The jump goes first in `POSTROUTING` so nobody
//! else's blanket MASQUERADE hides Pod source addresses from Pods.
//!
//! `MASQUERADE` (not `SNAT --to-source <node IP>`) picks the address of the link the packet
//! leaves by, which for traffic out of the cluster is the node IP on the underlay, and it drops
//! its connections when that address goes away. `--random-fully` avoids source-port collisions
//! between many Pods talking to one destination, as flannel does. Multicast is left alone.

use ipnet::Ipv4Net;

use skiff_iptables::{Iptables, IptablesError, Table, join_words, split_words};

/// Our chain in the `nat` table.
pub const MASQUERADE_CHAIN: &str = "SKIFFNET-MASQ";

/// The jump from `POSTROUTING` to our chain (argv words after the chain name).
fn jump_rule() -> Vec<String> {
    split_words(&format!(
        r#"-m comment --comment "skiff egress masquerade" -j {MASQUERADE_CHAIN}"#
    ))
}

/// The restore text that (re)writes our chain for `cluster_cidr`.
pub fn chain_rules(cluster_cidr: Ipv4Net) -> String {
    format!(
        "*nat\n\
         :{MASQUERADE_CHAIN} - [0:0]\n\
         -A {MASQUERADE_CHAIN} -s {cluster_cidr} -d {cluster_cidr} \
         -m comment --comment \"pod to pod: no NAT\" -j RETURN\n\
         -A {MASQUERADE_CHAIN} -s {cluster_cidr} ! -d 224.0.0.0/4 \
         -m comment --comment \"pod to outside the cluster: node IP\" \
         -j MASQUERADE --random-fully\n\
         COMMIT\n"
    )
}

/// Makes the masquerade rules for `cluster_cidr` present, exactly once.
pub fn ensure(iptables: &impl Iptables, cluster_cidr: Ipv4Net) -> Result<(), IptablesError> {
    iptables.restore(&chain_rules(cluster_cidr))?;
    let jump = jump_rule();
    if !iptables.check(Table::Nat, "POSTROUTING", &jump)? {
        iptables.restore(&format!(
            "*nat\n-I POSTROUTING 1 {}\nCOMMIT\n",
            join_words(&jump)
        ))?;
    }
    Ok(())
}

/// Removes the jump and our chain; succeeds when they are already gone.
pub fn remove(iptables: &impl Iptables) -> Result<(), IptablesError> {
    // Declaring the chain creates it if missing (and empties it), so the check below can name it
    // as a target and the final delete always has something to delete.
    iptables.restore(&format!("*nat\n:{MASQUERADE_CHAIN} - [0:0]\nCOMMIT\n"))?;
    let jump = jump_rule();
    // Loop bounded by the number of jumps that can exist; each pass removes one.
    for _ in 0..16 {
        if !iptables.check(Table::Nat, "POSTROUTING", &jump)? {
            break;
        }
        iptables.restore(&format!(
            "*nat\n-D POSTROUTING {}\nCOMMIT\n",
            join_words(&jump)
        ))?;
    }
    iptables.restore(&format!("*nat\n-X {MASQUERADE_CHAIN}\nCOMMIT\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_iptables::FakeIptables;

    fn cluster() -> Ipv4Net {
        "10.244.0.0/16".parse().unwrap()
    }

    fn postrouting(ipt: &FakeIptables) -> Vec<Vec<String>> {
        let rules = ipt.chain(Table::Nat, "POSTROUTING").unwrap();
        rules.iter().map(|r| split_words(r)).collect()
    }

    #[test]
    fn pod_to_pod_returns_before_anything_is_masqueraded() {
        let text = chain_rules(cluster());
        let rules: Vec<&str> = text.lines().filter(|l| l.starts_with("-A")).collect();
        assert_eq!(rules.len(), 2, "{text}");
        assert!(
            rules[0].contains("-s 10.244.0.0/16 -d 10.244.0.0/16") && rules[0].ends_with("RETURN")
        );
        assert!(rules[1].contains("-s 10.244.0.0/16 ! -d 224.0.0.0/4"));
        assert!(rules[1].contains("-j MASQUERADE"));
    }

    #[test]
    fn ensure_twice_leaves_one_jump_first_in_postrouting() {
        let ipt = FakeIptables::new();
        ipt.restore("*nat\n-A POSTROUTING -o eth9 -j MASQUERADE\nCOMMIT\n")
            .unwrap();
        ensure(&ipt, cluster()).unwrap();
        ensure(&ipt, cluster()).unwrap();
        let chain = postrouting(&ipt);
        assert_eq!(chain.len(), 2, "{chain:?}");
        assert_eq!(chain[0], jump_rule(), "our jump goes first");
        assert_eq!(ipt.chain(Table::Nat, MASQUERADE_CHAIN).unwrap().len(), 2);
        // Setup, then chain + jump, then the chain alone: the second ensure added no jump.
        assert_eq!(ipt.restores().len(), 4);
    }

    #[test]
    fn a_changed_cluster_cidr_replaces_the_rules_instead_of_adding_to_them() {
        let ipt = FakeIptables::new();
        ensure(&ipt, cluster()).unwrap();
        ensure(&ipt, "10.42.0.0/16".parse().unwrap()).unwrap();
        let ours = ipt.chain(Table::Nat, MASQUERADE_CHAIN).unwrap();
        assert_eq!(ours.len(), 2);
        assert!(ours.iter().all(|rule| !rule.contains("10.244.")));
    }

    #[test]
    fn remove_takes_away_only_ours_and_may_run_twice() {
        let ipt = FakeIptables::new();
        ipt.restore("*nat\n-A POSTROUTING -o eth9 -j MASQUERADE\nCOMMIT\n")
            .unwrap();
        ensure(&ipt, cluster()).unwrap();
        remove(&ipt).unwrap();
        remove(&ipt).unwrap();
        assert_eq!(ipt.chain(Table::Nat, MASQUERADE_CHAIN), None);
        assert_eq!(
            postrouting(&ipt),
            vec![split_words("-o eth9 -j MASQUERADE")]
        );
    }

    #[test]
    fn the_chain_is_outside_the_service_proxys_namespace_of_chains() {
        // skiff-proxy owns (rewrites, and on cleanup deletes) every chain named `SKIFF-*`,
        // including its own `SKIFF-POSTROUTING`; the node network runs beside it.
        assert!(!MASQUERADE_CHAIN.starts_with("SKIFF-"));
    }
}
