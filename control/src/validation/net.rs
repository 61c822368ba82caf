//! IP addresses and CIDRs, parsed and judged the way apimachinery's `IsValidIP`/`IsValidCIDR`
//! and core's `ValidateNonSpecialIP` do.
//!
//! Go's sloppy parser still accepts IPv4 octets with leading zeros, which the strict checks then
//! name precisely ("must not have leading 0s") instead of calling the value unparseable.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::field::{FieldError, Path};

/// Parses like Go's `netutils.ParseIPSloppy`: IPv4 octets may carry leading zeros.
/// Returns the address and whether the text needed that leniency.
pub(crate) fn parse_ip_sloppy(s: &str) -> Option<(IpAddr, bool)> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, false));
    }
    let (head, tail) = match s.rfind(':') {
        Some(i) => (&s[..=i], &s[i + 1..]),
        None => ("", s),
    };
    if !tail.contains('.') {
        return None;
    }
    let mut octets = Vec::new();
    for part in tail.split('.') {
        if part.is_empty() || !part.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let trimmed = part.trim_start_matches('0');
        let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
        if trimmed.len() > 3 {
            return None;
        }
        octets.push(trimmed);
    }
    let normalized = format!("{head}{}", octets.join("."));
    normalized.parse::<IpAddr>().ok().map(|ip| (ip, true))
}

fn mapped_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        IpAddr::V4(_) => None,
    }
}

/// Go's `net.IP.String()` (4-in-6 addresses print as IPv4).
fn go_ip_string(ip: IpAddr) -> String {
    mapped_v4(ip)
        .map(|v4| v4.to_string())
        .unwrap_or_else(|| ip.to_string())
}

/// `IsValidIP`: a strictly parsed IP in canonical form. Returns the errors at `path`.
pub(crate) fn validate_ip(path: &Path, value: &str) -> Vec<FieldError> {
    validate_ip_with(path, value, true)
}

/// `IsValidIPForLegacyField` with strict validation (canonical form not required).
pub(crate) fn validate_ip_legacy(path: &Path, value: &str) -> Vec<FieldError> {
    validate_ip_with(path, value, false)
}

fn validate_ip_with(path: &Path, value: &str, canonical: bool) -> Vec<FieldError> {
    let Some((ip, sloppy)) = parse_ip_sloppy(value) else {
        return vec![FieldError::invalid(
            path,
            value,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        )];
    };
    let mut errs = Vec::new();
    if sloppy {
        errs.push(FieldError::invalid(path, value, "must not have leading 0s"));
    } else if mapped_v4(ip).is_some() {
        errs.push(FieldError::invalid(
            path,
            value,
            "must not be an IPv4-mapped IPv6 address",
        ));
    }
    if errs.is_empty() && canonical && value != go_ip_string(ip) {
        let detail = format!("must be in canonical form (\"{}\")", go_ip_string(ip));
        errs.push(FieldError::invalid(path, value, &detail));
    }
    errs
}

/// `ValidateNonSpecialIP`: no unspecified, loopback or link-local addresses (Endpoints, external IPs).
pub(crate) fn validate_non_special_ip(path: &Path, value: &str) -> Vec<FieldError> {
    let Some((ip, _)) = parse_ip_sloppy(value) else {
        return vec![FieldError::invalid(
            path,
            value,
            "must be a valid IP address",
        )];
    };
    let ip = mapped_v4(ip).map(IpAddr::V4).unwrap_or(ip);
    let mut errs = Vec::new();
    if ip.is_unspecified() {
        errs.push(FieldError::invalid(
            path,
            value,
            &format!("may not be unspecified ({value})"),
        ));
    }
    if ip.is_loopback() {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        ));
    }
    let (link_local, link_local_mcast) = match ip {
        IpAddr::V4(v4) => (v4.is_link_local(), v4.octets()[..3] == [224, 0, 0]),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xffc0 == 0xfe80, s[0] & 0xff0f == 0xff02)
        }
    };
    if link_local {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ));
    }
    if link_local_mcast {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}

/// `IsValidCIDR`: a strict subnet CIDR in canonical form, e.g. `10.244.1.0/24`.
pub(crate) fn validate_cidr(path: &Path, value: &str) -> Vec<FieldError> {
    let invalid = || {
        vec![FieldError::invalid(
            path,
            value,
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        )]
    };
    let Some((addr, bits)) = value.split_once('/') else {
        return invalid();
    };
    let Some((ip, sloppy_ip)) = parse_ip_sloppy(addr) else {
        return invalid();
    };
    if bits.is_empty() || !bits.chars().all(|c| c.is_ascii_digit()) || bits.len() > 4 {
        return invalid();
    }
    let Ok(prefix) = bits.parse::<u32>() else {
        return invalid();
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return invalid();
    }
    let masked = mask(ip, prefix);
    if sloppy_ip || (bits.len() > 1 && bits.starts_with('0')) {
        return vec![FieldError::invalid(
            path,
            value,
            "must not have leading 0s in IP or prefix length",
        )];
    }
    if mapped_v4(ip).is_some() {
        return vec![FieldError::invalid(
            path,
            value,
            "must not have an IPv4-mapped IPv6 address",
        )];
    }
    if masked != ip {
        return vec![FieldError::invalid(
            path,
            value,
            "must not have bits set beyond the prefix length",
        )];
    }
    let canonical = format!("{masked}/{prefix}");
    if value != canonical {
        return vec![FieldError::invalid(
            path,
            value,
            &format!("must be in canonical form (\"{canonical}\")"),
        )];
    }
    Vec::new()
}

fn mask(ip: IpAddr, prefix: u32) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

/// The IP family of a CIDR or address string, if it parses.
pub(crate) fn family_of(s: &str) -> Option<&'static str> {
    let addr = s.split('/').next().unwrap_or(s);
    parse_ip_sloppy(addr).map(|(ip, _)| {
        if ip.is_ipv4() || mapped_v4(ip).is_some() {
            "IPv4"
        } else {
            "IPv6"
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(errs: Vec<FieldError>) -> Vec<String> {
        errs.into_iter().map(|e| e.message()).collect()
    }

    #[test]
    fn ips() {
        let p = Path::new("ip");
        assert!(validate_ip(&p, "10.0.0.1").is_empty());
        assert!(validate_ip(&p, "fd00::1").is_empty());
        assert_eq!(
            msgs(validate_ip(&p, "10.0.0")),
            vec![
                "ip: Invalid value: \"10.0.0\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
            ]
        );
        assert_eq!(
            msgs(validate_ip(&p, "010.0.0.1")),
            vec!["ip: Invalid value: \"010.0.0.1\": must not have leading 0s"]
        );
        assert_eq!(
            msgs(validate_ip(&p, "::ffff:1.2.3.4")),
            vec!["ip: Invalid value: \"::ffff:1.2.3.4\": must not be an IPv4-mapped IPv6 address"]
        );
        assert_eq!(
            msgs(validate_ip(&p, "FD00::1")),
            vec!["ip: Invalid value: \"FD00::1\": must be in canonical form (\"fd00::1\")"]
        );
        assert!(validate_ip_legacy(&p, "FD00::1").is_empty());
        assert_eq!(
            msgs(validate_non_special_ip(&p, "127.0.0.1")),
            vec![
                "ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)"
            ]
        );
        assert_eq!(validate_non_special_ip(&p, "169.254.1.1").len(), 1);
        assert_eq!(validate_non_special_ip(&p, "224.0.0.1").len(), 1);
        assert_eq!(validate_non_special_ip(&p, "0.0.0.0").len(), 1);
    }

    #[test]
    fn cidrs() {
        let p = Path::new("c");
        assert!(validate_cidr(&p, "10.244.1.0/24").is_empty());
        assert!(validate_cidr(&p, "fd00:10:244::/64").is_empty());
        assert_eq!(
            msgs(validate_cidr(&p, "10.244.1.1/24")),
            vec![
                "c: Invalid value: \"10.244.1.1/24\": must not have bits set beyond the prefix length"
            ]
        );
        assert_eq!(
            msgs(validate_cidr(&p, "10.244.1.0")),
            vec![
                "c: Invalid value: \"10.244.1.0\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
            ]
        );
        assert_eq!(validate_cidr(&p, "10.244.1.0/33").len(), 1);
        assert_eq!(
            msgs(validate_cidr(&p, "10.244.1.0/024")),
            vec![
                "c: Invalid value: \"10.244.1.0/024\": must not have leading 0s in IP or prefix length"
            ]
        );
        assert_eq!(
            msgs(validate_cidr(&p, "FD00::/64")),
            vec!["c: Invalid value: \"FD00::/64\": must be in canonical form (\"fd00::/64\")"]
        );
        assert_eq!(family_of("fd00::/64"), Some("IPv6"));
    }
}
