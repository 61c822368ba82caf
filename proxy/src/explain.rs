//! `skiff-proxy explain <ip:port/proto>`: what this node does with a connection to an address.
//!
//! It reads the node's live rules (`iptables-save`), not the proxy's memory, so it explains what
//! the kernel will really do — also when the proxy is down or confused — using the same tracer
//! the golden tests use.

use std::fmt::Write;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::iptables::trace::{Packet, Tables, TraceError, Verdict};
use crate::model::Protocol;

/// Why an explanation failed.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The target is not `ip:port/proto`.
    #[error("bad target {0:?}: expected ip:port/proto, e.g. 10.96.0.10:53/udp")]
    BadTarget(String),
    /// The rules could not be traced.
    #[error(transparent)]
    Trace(#[from] TraceError),
}

/// Parses `ip:port/proto` (protocol defaults to TCP).
pub fn parse_target(text: &str) -> Result<(SocketAddrV4, Protocol), ExplainError> {
    let bad = || ExplainError::BadTarget(text.to_owned());
    let (addr, proto) = text.split_once('/').unwrap_or((text, "tcp"));
    let addr: SocketAddrV4 = addr.parse().map_err(|_| bad())?;
    let proto: Protocol = proto.parse().map_err(|_| bad())?;
    Ok((addr, proto))
}

/// Explains a connection from `src` to `target` over the saved rules `save`.
pub fn explain(
    save: &str,
    local: &[Ipv4Addr],
    src: Ipv4Addr,
    from_node: bool,
    target: SocketAddrV4,
    protocol: Protocol,
) -> Result<String, ExplainError> {
    let tables = Tables::parse(save).with_local(local.iter().copied());
    let trace = tables.trace(&Packet {
        src,
        dst: *target.ip(),
        protocol,
        dport: target.port(),
        from_node,
    })?;
    let mut out = String::new();
    let service = trace
        .comments
        .iter()
        .find(|c| c.contains('/') && c.contains(':'))
        .cloned()
        .unwrap_or_else(|| "no Service".into());
    let _ = writeln!(out, "{target}/{protocol} from {src}: {service}");
    let _ = writeln!(out, "path: {}", trace.path.join(" -> "));
    if trace.choices.is_empty() {
        let _ = writeln!(out, "endpoints: none (destination unchanged)");
    }
    for choice in &trace.choices {
        let _ = writeln!(
            out,
            "endpoint: {} ({:.1}%)",
            choice.endpoint,
            choice.probability * 100.0
        );
    }
    let verdict = match trace.verdict {
        Verdict::Accept => "accepted",
        Verdict::Reject => "rejected (no endpoints)",
        Verdict::Drop => "dropped",
    };
    let _ = writeln!(out, "verdict: {verdict}");
    let _ = writeln!(
        out,
        "masquerade: {}",
        if trace.masquerade { "yes" } else { "no" }
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_a_protocol() {
        let (addr, proto) = parse_target("10.96.0.10:53/udp").unwrap();
        assert_eq!(
            (addr.to_string(), proto),
            ("10.96.0.10:53".into(), Protocol::Udp)
        );
        assert_eq!(parse_target("10.96.0.10:80").unwrap().1, Protocol::Tcp);
        assert!(parse_target("10.96.0.10").is_err());
        assert!(parse_target("10.96.0.10:80/icmp").is_err());
    }

    #[test]
    fn an_explanation_names_the_service_endpoints_and_verdict() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:SKIFF-SERVICES - [0:0]\n:SKIFF-SVC-X - [0:0]\n\
            -A PREROUTING -j SKIFF-SERVICES\n\
            -A SKIFF-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment \"ns/web:http/tcp cluster IP\" -j SKIFF-SVC-X\n\
            -A SKIFF-SVC-X -p tcp -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 10.244.1.2:8080\n\
            -A SKIFF-SVC-X -p tcp -j DNAT --to-destination 10.244.2.2:8080\nCOMMIT\n";
        let target = "10.96.0.10:80".parse().unwrap();
        let text = explain(
            save,
            &[],
            Ipv4Addr::new(10, 244, 1, 9),
            false,
            target,
            Protocol::Tcp,
        )
        .unwrap();
        assert!(text.contains("ns/web:http/tcp cluster IP"), "{text}");
        assert!(text.contains("endpoint: 10.244.1.2:8080 (50.0%)"), "{text}");
        assert!(text.contains("endpoint: 10.244.2.2:8080 (50.0%)"), "{text}");
        assert!(text.contains("verdict: accepted"), "{text}");
    }

    #[test]
    fn marks_as_iptables_save_spells_them_are_understood() {
        // `--or-mark` comes back from the kernel as `--set-xmark V/V`, `--xor-mark` as `V/0x0`.
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:SKIFF-MARK-MASQ - [0:0]\n:SKIFF-POSTROUTING - [0:0]\n\
            -A PREROUTING -d 10.96.0.10/32 -j SKIFF-MARK-MASQ\n\
            -A PREROUTING -d 10.96.0.10/32 -p tcp -j DNAT --to-destination 10.244.2.2:8080\n\
            -A POSTROUTING -j SKIFF-POSTROUTING\n\
            -A SKIFF-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
            -A SKIFF-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
            -A SKIFF-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
            -A SKIFF-POSTROUTING -j MASQUERADE --random-fully\nCOMMIT\n";
        let target = "10.96.0.10:80".parse().unwrap();
        let text = explain(
            save,
            &[],
            Ipv4Addr::new(192, 0, 2, 1),
            false,
            target,
            Protocol::Tcp,
        )
        .unwrap();
        assert!(text.contains("masquerade: yes"), "{text}");
        let other = "10.96.0.11:80".parse().unwrap();
        let text = explain(
            save,
            &[],
            Ipv4Addr::new(192, 0, 2, 1),
            false,
            other,
            Protocol::Tcp,
        )
        .unwrap();
        assert!(text.contains("masquerade: no"), "{text}");
    }
}
