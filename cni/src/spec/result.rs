//! The ADD result and its wire forms per version.
//!
//! One model (1.1.0's) holds the result; [`CniResult::to_json`] writes it in the config's
//! version. In a chain, the previous plugin's result arrives as `prevResult` and ours is
//! appended to it, so fields we do not model (another plugin's `socketPath`, a route's
//! `table`) are carried in `extra` and passed on untouched, except where the target version
//! has no such field.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::Dns;
use super::version::CniVersion;

/// A full result: what ADD prints and what CHECK and later plugins receive as `prevResult`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    /// Interfaces made or used, host and sandbox alike.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses given to interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes installed in the sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings for the sandbox.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// One interface of the result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    /// Its name (in its namespace).
    pub name: String,
    /// Its hardware address, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Its MTU (a 1.1.0 field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for a sandbox interface; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Fields of other plugins, passed on.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One address of the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address and prefix as configured on the interface.
    pub address: IpNet,
    /// The default gateway for this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// Fields of other plugins, passed on.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One route of the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; absent for on-link routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Fields of other plugins (and 1.1.0's `mtu`, `scope`, ...), passed on.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Interface fields that exist only from 1.1.0 on.
const INTERFACE_FIELDS_1_1: &[&str] = &["mtu", "socketPath", "pciID"];
/// Route fields that exist only from 1.1.0 on.
const ROUTE_FIELDS_1_1: &[&str] = &["mtu", "advmss", "priority", "table", "scope"];

impl CniResult {
    /// Reads a result (any supported version) from its JSON.
    pub fn from_json(value: Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(value)
    }

    /// Appends `ours` after this (previous) result: interface indexes of our addresses are
    /// shifted past the interfaces already listed; our DNS wins when we have one.
    pub fn append(&mut self, ours: CniResult) {
        let offset = self.interfaces.len();
        self.interfaces.extend(ours.interfaces);
        self.ips.extend(ours.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        self.routes.extend(ours.routes);
        if !ours.dns.is_empty() {
            self.dns = ours.dns;
        }
    }

    /// The result in `version`'s wire form.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Map::new()));
        let object = value
            .as_object_mut()
            .expect("a struct serializes to an object");
        object.insert("cniVersion".into(), Value::String(version.as_str().into()));
        let pre_1_1 = version < CniVersion::V1_1_0;
        for ip in array_mut(object, "ips") {
            let family = ip
                .get("address")
                .and_then(Value::as_str)
                .map(|a| a.contains(':'));
            ip.remove("version");
            if version == CniVersion::V0_4_0 {
                let family = if family == Some(true) { "6" } else { "4" };
                ip.insert("version".into(), Value::String(family.into()));
            }
        }
        if pre_1_1 {
            for iface in array_mut(object, "interfaces") {
                iface.retain(|k, _| !INTERFACE_FIELDS_1_1.contains(&k.as_str()));
            }
            for route in array_mut(object, "routes") {
                route.retain(|k, _| !ROUTE_FIELDS_1_1.contains(&k.as_str()));
            }
        }
        value
    }
}

fn array_mut<'a>(
    object: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    object
        .get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ours() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "skf0123456789a".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    mtu: Some(1450),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:02".into()),
                    mtu: Some(1450),
                    sandbox: Some("/run/netns/p1".into()),
                    ..Interface::default()
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.1.2/32".parse().unwrap(),
                gateway: Some("10.244.1.1".parse().unwrap()),
                interface: Some(1),
                extra: Map::new(),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.244.1.1".parse().unwrap()),
                extra: Map::new(),
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn version_1_1_keeps_mtu_and_has_no_ip_version() {
        let json = ours().to_json(CniVersion::V1_1_0);
        assert_eq!(json["cniVersion"], "1.1.0");
        assert_eq!(json["interfaces"][1]["mtu"], 1450);
        assert_eq!(json["interfaces"][1]["sandbox"], "/run/netns/p1");
        assert_eq!(
            json["ips"][0],
            json!({"address": "10.244.1.2/32", "gateway": "10.244.1.1", "interface": 1})
        );
        assert_eq!(
            json["routes"][0],
            json!({"dst": "0.0.0.0/0", "gw": "10.244.1.1"})
        );
        assert!(json.get("dns").is_none());
    }

    #[test]
    fn version_0_4_adds_ip_version_and_drops_1_1_fields() {
        let mut result = ours();
        result.routes[0].extra.insert("table".into(), json!(100));
        let json = result.to_json(CniVersion::V0_4_0);
        assert_eq!(json["ips"][0]["version"], "4");
        assert!(json["interfaces"][0].get("mtu").is_none());
        assert!(json["routes"][0].get("table").is_none());
        let json = result.to_json(CniVersion::V1_0_0);
        assert!(json["ips"][0].get("version").is_none());
    }

    #[test]
    fn a_0_4_prev_result_round_trips_into_1_0_without_version() {
        let prev = json!({"cniVersion": "0.4.0",
            "interfaces": [{"name": "vhost0", "socketPath": "/x"}],
            "ips": [{"version": "4", "address": "192.0.2.5/24", "interface": 0}]});
        let result = CniResult::from_json(prev).unwrap();
        let json = result.to_json(CniVersion::V1_1_0);
        assert_eq!(
            json["ips"][0],
            json!({"address": "192.0.2.5/24", "interface": 0})
        );
        assert_eq!(json["interfaces"][0]["socketPath"], "/x");
    }

    #[test]
    fn appending_shifts_our_interface_indexes_and_keeps_theirs() {
        let mut chain = CniResult::from_json(json!({
            "interfaces": [{"name": "lo0"}],
            "ips": [{"address": "192.0.2.5/24", "interface": 0}],
            "dns": {"nameservers": ["192.0.2.53"]}}))
        .unwrap();
        chain.append(ours());
        assert_eq!(chain.interfaces.len(), 3);
        assert_eq!(chain.ips[0].interface, Some(0));
        assert_eq!(chain.ips[1].interface, Some(2));
        assert_eq!(chain.interfaces[2].name, "eth0");
        assert_eq!(
            chain.dns.nameservers,
            ["192.0.2.53"],
            "an empty DNS of ours keeps theirs"
        );
    }
}
