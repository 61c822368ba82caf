//! The six CNI commands, over the IPAM and kernel seams.
//!
//! [`Plugin`] is generic over both seams ([`Namespaces`] and an [`IpamStore`] opener), so every
//! command's logic — validation before any change, rollback, idempotent DEL, GC, the exact
//! error code — runs in unit tests against the fakes; `main.rs` only plugs in the real ones.
//!
//! Order of work, and why:
//! - Everything a runtime sent is validated (environment, then config) before the first change,
//!   so bad input changes nothing on the node.
//! - ADD reserves the address first and wires second: the address guard and the veth guard
//!   unwind in reverse, the link before the address, so a released address never still has a
//!   route pointing at a dying veth.
//! - DEL and GC remove links before releasing addresses, for the same reason.
//! - GC removes every host veth of ours that belongs to no valid attachment — also those a
//!   process killed mid-ADD left without a reservation record to find them by — then releases
//!   the stale reservations. It assumes the runtime does not run GC concurrently with an ADD it
//!   still counts as in flight (that ADD would lose its veth and fail, and be retried).
//! - STATUS answers 50 when the state folder is unusable or the podCIDR is full; 51 (limited
//!   connectivity) is the node agent's to judge, not the plugin's.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};
use serde_json::{Value, json};

use crate::ipam::{Attachment, Ipam, IpamError, IpamStore};
use crate::link::Namespaces;
use crate::pod::{self, PodError, PodNetwork, Wired};
use crate::spec::config::version_hint;
use crate::spec::{
    CniEnv, CniError, CniResult, CniVersion, Command, ErrorCode, Interface, IpConfig, NetConf,
    Route,
};

/// What a plugin run prints and how it exits.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// JSON for stdout (a result, VERSION's answer, or an error object), if any.
    pub stdout: Option<Value>,
    /// Exit 0 when true.
    pub success: bool,
}

/// The plugin over a [`Namespaces`] and a function opening the IPAM store of a state folder.
#[derive(Debug)]
pub struct Plugin<N, F> {
    namespaces: N,
    open_store: F,
}

impl<N, S, F> Plugin<N, F>
where
    N: Namespaces,
    S: IpamStore,
    F: Fn(&Path) -> Result<S, IpamError>,
{
    /// A plugin acting through `namespaces`, keeping IPAM state in what `open_store` opens.
    pub fn new(namespaces: N, open_store: F) -> Self {
        Plugin {
            namespaces,
            open_store,
        }
    }

    /// One invocation: `CNI_*` variables from `env`, the config on `stdin`.
    pub fn execute(&self, env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Response {
        let outcome = CniEnv::parse(env).and_then(|env| self.run(&env, stdin));
        match outcome {
            Ok(stdout) => Response {
                stdout,
                success: true,
            },
            Err(err) => Response {
                stdout: Some(err.to_json(version_hint(stdin).unwrap_or(CniVersion::LATEST))),
                success: false,
            },
        }
    }

    /// Runs the command of `env`; returns what goes to stdout on success.
    pub fn run(&self, env: &CniEnv, stdin: &[u8]) -> Result<Option<Value>, CniError> {
        if env.command == Command::Version {
            return Ok(Some(version_answer()));
        }
        let conf = NetConf::parse(stdin)?;
        require_version(env.command, conf.version)?;
        match env.command {
            Command::Add => self.add(env, &conf).map(Some),
            Command::Del => self.del(env, &conf).map(|()| None),
            Command::Check => self.check(env, &conf).map(|()| None),
            Command::Gc => self.gc(&conf).map(|()| None),
            Command::Status => self.status(&conf).map(|()| None),
            Command::Version => Ok(Some(version_answer())),
        }
    }

    fn ipam(&self, conf: &NetConf) -> Result<Ipam<S>, CniError> {
        let store = (self.open_store)(&conf.state_dir())?;
        Ok(Ipam::new(store, conf.pod_cidr))
    }

    fn add(&self, env: &CniEnv, conf: &NetConf) -> Result<Value, CniError> {
        let who = env.attachment()?;
        let netns = env.require_netns()?;
        let ipam = self.ipam(conf)?;
        let reservation = ipam.reserve(&who)?;
        let wired = pod::attach(
            &self.namespaces,
            network(conf),
            &who,
            netns,
            reservation.ip(),
        )?;
        let mut result = conf.prev_result.clone().unwrap_or_default();
        result.append(our_result(conf, &wired, netns, reservation.ip()));
        reservation.commit();
        Ok(result.to_json(conf.version))
    }

    fn del(&self, env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
        let who = env.attachment()?;
        pod::detach(&self.namespaces, &who)?;
        self.ipam(conf)?.release(&who)?;
        Ok(())
    }

    fn check(&self, env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
        let who = env.attachment()?;
        let netns = env.require_netns()?;
        let prev = conf
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::new(ErrorCode::InvalidConfig, "CHECK needs prevResult", ""))?;
        let ip = self.ipam(conf)?.lookup(&who)?.ok_or_else(|| {
            CniError::new(
                ErrorCode::UnknownContainer,
                format!(
                    "no address is reserved for {} / {}",
                    who.container_id, who.ifname
                ),
                "",
            )
        })?;
        let expected_mac = expected_in_prev(prev, &who, netns, ip)?;
        let wired = pod::check(&self.namespaces, network(conf), &who, netns, ip)?;
        let actual = wired.pod.mac.to_string();
        if let Some(mac) = expected_mac.filter(|mac| !mac.eq_ignore_ascii_case(&actual)) {
            return Err(PodError::CheckFailed(format!(
                "{} has MAC {actual}, prevResult says {mac}",
                who.ifname
            ))
            .into());
        }
        Ok(())
    }

    fn gc(&self, conf: &NetConf) -> Result<(), CniError> {
        let valid = conf.valid_attachments.as_deref().ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidConfig,
                "GC needs cni.dev/valid-attachments",
                "",
            )
        })?;
        let ipam = self.ipam(conf)?;
        let stale = ipam.stale(valid)?;
        pod::sweep(&self.namespaces, valid)?;
        for (ip, who) in &stale {
            ipam.release_exact(*ip, who)?;
        }
        Ok(())
    }

    fn status(&self, conf: &NetConf) -> Result<(), CniError> {
        let unavailable =
            |msg: String, details: String| CniError::new(ErrorCode::NotAvailable, msg, details);
        let free = self
            .ipam(conf)
            .and_then(|ipam| ipam.free().map_err(CniError::from))
            .map_err(|err| unavailable(format!("IPAM state unusable: {}", err.msg), err.details))?;
        if free == 0 {
            return Err(unavailable(
                format!("no free address left in {}", conf.pod_cidr),
                String::new(),
            ));
        }
        Ok(())
    }
}

/// GC and STATUS exist from 1.1.0 on; the reference `skel` refuses them for older configs.
fn require_version(command: Command, version: CniVersion) -> Result<(), CniError> {
    let needs_1_1 = matches!(command, Command::Gc | Command::Status);
    if needs_1_1 && version < CniVersion::V1_1_0 {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("config version {version} does not allow {command:?}"),
            "GC and STATUS need cniVersion 1.1.0",
        ));
    }
    Ok(())
}

fn version_answer() -> Value {
    json!({
        "cniVersion": CniVersion::LATEST,
        "supportedVersions": CniVersion::SUPPORTED.map(CniVersion::as_str),
    })
}

fn network(conf: &NetConf) -> PodNetwork {
    PodNetwork {
        cidr: conf.pod_cidr,
        mtu: conf.mtu,
    }
}

/// Our part of the result: host end, Pod end, the /32, the default route.
fn our_result(conf: &NetConf, wired: &Wired, netns: &Path, ip: Ipv4Addr) -> CniResult {
    let gateway = IpAddr::V4(conf.pod_cidr.gateway());
    CniResult {
        interfaces: vec![
            Interface {
                name: wired.host.name.clone(),
                mac: Some(wired.host.mac.to_string()),
                mtu: Some(wired.host.mtu),
                ..Interface::default()
            },
            Interface {
                name: wired.pod.name.clone(),
                mac: Some(wired.pod.mac.to_string()),
                mtu: Some(wired.pod.mtu),
                sandbox: Some(netns.to_string_lossy().into_owned()),
                ..Interface::default()
            },
        ],
        ips: vec![IpConfig {
            address: IpNet::V4(Ipv4Net::from(ip)),
            gateway: Some(gateway),
            interface: Some(1),
            extra: Default::default(),
        }],
        routes: vec![Route {
            dst: IpNet::V4(Ipv4Net::default()),
            gw: Some(gateway),
            extra: Default::default(),
        }],
        dns: conf.dns.clone(),
    }
}

/// Finds our sandbox interface and address in `prev`; returns the MAC it recorded.
fn expected_in_prev(
    prev: &CniResult,
    who: &Attachment,
    netns: &Path,
    ip: Ipv4Addr,
) -> Result<Option<String>, CniError> {
    let sandbox = netns.to_string_lossy();
    let index = prev
        .interfaces
        .iter()
        .position(|i| i.name == who.ifname && i.sandbox.as_deref() == Some(sandbox.as_ref()))
        .ok_or_else(|| {
            PodError::CheckFailed(format!(
                "prevResult has no interface {} in {sandbox}",
                who.ifname
            ))
        })?;
    let address = IpNet::V4(Ipv4Net::from(ip));
    if !prev
        .ips
        .iter()
        .any(|c| c.address == address && c.interface == Some(index))
    {
        return Err(PodError::CheckFailed(format!(
            "prevResult does not give {address} to {}",
            who.ifname
        ))
        .into());
    }
    Ok(prev.interfaces[index].mac.clone())
}

#[cfg(test)]
mod tests;
