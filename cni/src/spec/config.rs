//! The network configuration on stdin: the spec's common fields plus skiff's own.
//!
//! ```json
//! {"cniVersion":"1.1.0","name":"skiff","type":"skiff-cni",
//!  "podCIDR":"10.244.1.0/24","mtu":1500,"dataDir":"/var/lib/cni/skiff"}
//! ```
//!
//! The podCIDR comes from the config, not from the Node object: the node agent writes the
//! conflist once it knows its podCIDR (flannel's `subnet.env` idea), so the plugin needs no API
//! credentials and works the same under containerd, CRI-O or our agent. Fields:
//! - `podCIDR` (required): IPv4 network the node hands Pod addresses from; its first address is
//!   the gateway. At most /30 so one Pod address remains.
//! - `mtu` (optional, 1500): MTU of both veth ends; the agent writes the node MTU (minus 50 for
//!   VXLAN).
//! - `dataDir` (optional, `/var/lib/cni/skiff`): IPAM state lives in `<dataDir>/<name>/`.
//! - `dns` (optional): copied into the result as the spec's DNS object.
//! - `ipam` is refused (error 2): skiff does its own IPAM and silently ignoring a delegate the
//!   operator asked for would hand out addresses they did not expect.
//!
//! Unknown other fields are ignored: runtimes add `args`, `runtimeConfig` and keys for other
//! plugins of the chain.

use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{CniError, ErrorCode};
use super::result::CniResult;
use super::version::CniVersion;
use crate::ipam::Attachment;

/// Where IPAM state goes when the config names no `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/skiff";
/// The MTU when the config names none.
pub const DEFAULT_MTU: u32 = 1500;

/// A parsed, validated network configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    /// The version results and errors are written in.
    pub version: CniVersion,
    /// The network's name (also the IPAM state folder's name).
    pub name: String,
    /// The node's Pod network.
    pub pod_cidr: PodCidr,
    /// MTU of both veth ends.
    pub mtu: u32,
    /// Root of the IPAM state.
    pub data_dir: PathBuf,
    /// DNS settings passed through to the result.
    pub dns: Dns,
    /// The result of the plugins before us in the chain, if any.
    pub prev_result: Option<CniResult>,
    /// GC's `cni.dev/valid-attachments`, if present.
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// The spec's DNS object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name server addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

/// The node's Pod network; its first address is the gateway on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodCidr(Ipv4Net);

impl PodCidr {
    /// Validates `net`: a network address (no host bits) of prefix /30 or shorter.
    pub fn new(net: Ipv4Net) -> Result<Self, String> {
        if net.trunc() != net {
            return Err(format!(
                "{net} has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        if net.prefix_len() > 30 {
            return Err(format!(
                "{net} is too small: a podCIDR needs a prefix of /30 or shorter"
            ));
        }
        Ok(PodCidr(net))
    }

    /// The network.
    pub fn net(self) -> Ipv4Net {
        self.0
    }

    /// The gateway: the first address after the network address.
    pub fn gateway(self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::from(u32::from(self.0.network()) + 1)
    }
}

impl std::fmt::Display for PodCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The fields as they arrive; validation turns this into a [`NetConf`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "podCIDR")]
    pod_cidr: Option<String>,
    mtu: Option<u32>,
    data_dir: Option<PathBuf>,
    dns: Option<Dns>,
    ipam: Option<Value>,
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Parses stdin: 6 when it is not JSON of the right shape, 1 for the version, 2 for `ipam`,
    /// 7 for invalid values.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let raw: RawConf = serde_json::from_slice(stdin).map_err(|err| {
            CniError::new(
                ErrorCode::Decode,
                "cannot decode the network configuration",
                err.to_string(),
            )
        })?;
        // A config without cniVersion is 0.1.0 by the spec's rule, which we do not speak.
        let version = CniVersion::parse(raw.cni_version.as_deref().unwrap_or("0.1.0"))?;
        if raw.ipam.is_some() {
            return Err(CniError::new(
                ErrorCode::UnsupportedField,
                "the ipam field is not supported",
                "skiff-cni allocates from podCIDR itself; remove the ipam section",
            ));
        }
        let name = raw.name.unwrap_or_default();
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(invalid(
                format!("invalid network name {name:?}"),
                "letters, digits, '_', '.', '-'",
            ));
        }
        let cidr_text = raw
            .pod_cidr
            .ok_or_else(|| invalid("podCIDR is required", ""))?;
        let pod_cidr = cidr_text
            .parse::<Ipv4Net>()
            .map_err(|e| e.to_string())
            .and_then(PodCidr::new)
            .map_err(|why| invalid(format!("invalid podCIDR {cidr_text:?}"), why))?;
        let mtu = raw.mtu.unwrap_or(DEFAULT_MTU);
        if !(68..=65535).contains(&mtu) {
            return Err(invalid(
                format!("invalid mtu {mtu}"),
                "an IPv4 MTU is 68 to 65535",
            ));
        }
        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if !data_dir.is_absolute() {
            return Err(invalid(
                format!("dataDir {} is not absolute", data_dir.display()),
                "",
            ));
        }
        let prev_result = raw
            .prev_result
            .map(|value| {
                CniResult::from_json(value).map_err(|err| {
                    CniError::new(
                        ErrorCode::Decode,
                        "cannot decode prevResult",
                        err.to_string(),
                    )
                })
            })
            .transpose()?;
        Ok(NetConf {
            version,
            name,
            pod_cidr,
            mtu,
            data_dir,
            dns: raw.dns.unwrap_or_default(),
            prev_result,
            valid_attachments: raw.valid_attachments,
        })
    }

    /// The folder of this network's IPAM state.
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join(&self.name)
    }
}

/// The config's `cniVersion` alone, for error objects written before the rest parses.
pub fn version_hint(stdin: &[u8]) -> Option<CniVersion> {
    #[derive(Deserialize)]
    struct Only {
        #[serde(rename = "cniVersion")]
        cni_version: Option<String>,
    }
    let only: Only = serde_json::from_slice(stdin).ok()?;
    CniVersion::parse(&only.cni_version?).ok()
}

fn invalid(msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidConfig, msg, details)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: &Value) -> Result<NetConf, CniError> {
        NetConf::parse(value.to_string().as_bytes())
    }

    fn base() -> Value {
        json!({"cniVersion": "1.1.0", "name": "skiff", "type": "skiff-cni",
               "podCIDR": "10.244.1.0/24", "runtimeConfig": {"portMappings": []}})
    }

    #[test]
    fn a_minimal_config_gets_the_defaults() {
        let conf = parse(&base()).unwrap();
        assert_eq!(conf.version, CniVersion::V1_1_0);
        assert_eq!(
            conf.pod_cidr.gateway(),
            std::net::Ipv4Addr::new(10, 244, 1, 1)
        );
        assert_eq!(conf.mtu, DEFAULT_MTU);
        assert_eq!(conf.state_dir(), PathBuf::from("/var/lib/cni/skiff/skiff"));
        assert!(conf.prev_result.is_none() && conf.valid_attachments.is_none());
    }

    #[test]
    fn every_field_is_read() {
        let mut value = base();
        value["cniVersion"] = json!("0.4.0");
        value["mtu"] = json!(1450);
        value["dataDir"] = json!("/tmp/x");
        value["dns"] = json!({"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]});
        value["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
        let conf = parse(&value).unwrap();
        assert_eq!((conf.version, conf.mtu), (CniVersion::V0_4_0, 1450));
        assert_eq!(conf.dns.nameservers, ["10.96.0.10"]);
        assert_eq!(
            conf.valid_attachments.unwrap(),
            [Attachment::new("c1", "eth0")]
        );
    }

    #[test]
    fn bad_configs_get_the_specific_code() {
        let with = |key: &str, v: Value| {
            let mut value = base();
            value[key] = v;
            parse(&value).unwrap_err().code
        };
        assert_eq!(
            NetConf::parse(b"{not json").unwrap_err().code,
            ErrorCode::Decode
        );
        assert_eq!(with("mtu", json!("big")), ErrorCode::Decode);
        assert_eq!(
            with("cniVersion", json!("0.3.1")),
            ErrorCode::IncompatibleVersion
        );
        assert_eq!(
            with("ipam", json!({"type": "host-local"})),
            ErrorCode::UnsupportedField
        );
        assert_eq!(
            with("podCIDR", json!("10.244.1.5/24")),
            ErrorCode::InvalidConfig
        );
        assert_eq!(
            with("podCIDR", json!("10.244.1.0/31")),
            ErrorCode::InvalidConfig
        );
        assert_eq!(
            with("podCIDR", json!("fd00::/64")),
            ErrorCode::InvalidConfig
        );
        assert_eq!(with("mtu", json!(20)), ErrorCode::InvalidConfig);
        assert_eq!(with("name", json!("../etc")), ErrorCode::InvalidConfig);
        assert_eq!(with("dataDir", json!("relative")), ErrorCode::InvalidConfig);
        assert_eq!(with("prevResult", json!({"ips": "x"})), ErrorCode::Decode);
        let mut no_version = base();
        no_version.as_object_mut().unwrap().remove("cniVersion");
        assert_eq!(
            parse(&no_version).unwrap_err().code,
            ErrorCode::IncompatibleVersion
        );
    }

    #[test]
    fn the_version_hint_survives_an_otherwise_bad_config() {
        assert_eq!(
            version_hint(br#"{"cniVersion":"0.4.0","mtu":"x"}"#),
            Some(CniVersion::V0_4_0)
        );
        assert_eq!(version_hint(b"garbage"), None);
    }
}
