//! The `CNI_*` environment: which command, for which container, in which namespace.
//!
//! Parsing takes a lookup function rather than reading the process environment, so tests can
//! feed any combination without touching global state. Which variables a command needs follows
//! the reference `skel` package (the behaviour runtimes are tested against): ADD and CHECK need
//! all of container ID, netns, ifname and path; DEL may omit the netns (it may be gone); GC,
//! STATUS and VERSION need only the command. Container IDs and interface names are validated as
//! the spec words them, because both end up in file contents and kernel names.

use std::path::PathBuf;

use super::error::{CniError, ErrorCode};
use crate::ipam::Attachment;

/// A CNI command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Attach a container to the network.
    Add,
    /// Detach it; idempotent.
    Del,
    /// Verify an earlier ADD still holds.
    Check,
    /// Is the plugin ready to serve ADD?
    Status,
    /// Which versions does the plugin speak?
    Version,
    /// Release everything not in `cni.dev/valid-attachments`.
    Gc,
}

impl Command {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The parsed `CNI_*` variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`: a path to the Pod's network namespace.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`: the interface name inside the Pod.
    pub ifname: Option<String>,
    /// `CNI_ARGS`, split into `KEY=VALUE` pairs (skiff uses none of them).
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// Parses the variables `get` returns; errors are code 4.
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let get = |key: &str| get(key).filter(|v| !v.is_empty());
        let command = match get("CNI_COMMAND") {
            None => return Err(invalid("CNI_COMMAND is not set", "")),
            Some(text) => Command::parse(&text).ok_or_else(|| {
                invalid(
                    format!("unknown CNI_COMMAND {text:?}"),
                    "expected ADD, DEL, CHECK, STATUS, VERSION or GC",
                )
            })?,
        };
        let env = CniEnv {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS").map(PathBuf::from),
            ifname: get("CNI_IFNAME"),
            args: parse_args(get("CNI_ARGS").as_deref().unwrap_or(""))?,
            path: get("CNI_PATH")
                .map(|p| {
                    p.split(':')
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
        };
        env.require_for_command()?;
        Ok(env)
    }

    fn require_for_command(&self) -> Result<(), CniError> {
        let (id, netns, ifname, path) = match self.command {
            Command::Add | Command::Check => (true, true, true, true),
            Command::Del => (true, false, true, true),
            Command::Status | Command::Version | Command::Gc => (false, false, false, false),
        };
        let missing = [
            (id && self.container_id.is_none(), "CNI_CONTAINERID"),
            (netns && self.netns.is_none(), "CNI_NETNS"),
            (ifname && self.ifname.is_none(), "CNI_IFNAME"),
            (path && self.path.is_empty(), "CNI_PATH"),
        ];
        if let Some((_, name)) = missing.iter().find(|(absent, _)| *absent) {
            return Err(invalid(format!("{name} is required for this command"), ""));
        }
        if let Some(id) = &self.container_id {
            validate_container_id(id)?;
        }
        if let Some(ifname) = &self.ifname {
            validate_ifname(ifname)?;
        }
        Ok(())
    }

    /// The (container ID, ifname) pair the command is about; code 4 when either is missing.
    pub fn attachment(&self) -> Result<Attachment, CniError> {
        match (&self.container_id, &self.ifname) {
            (Some(id), Some(ifname)) => Ok(Attachment::new(id, ifname)),
            _ => Err(invalid("CNI_CONTAINERID and CNI_IFNAME are required", "")),
        }
    }

    /// `CNI_NETNS`; code 4 when missing.
    pub fn require_netns(&self) -> Result<&PathBuf, CniError> {
        self.netns
            .as_ref()
            .ok_or_else(|| invalid("CNI_NETNS is required for this command", ""))
    }
}

fn invalid(msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidEnvironment, msg, details)
}

/// `CNI_ARGS`: `K=V` pairs separated by `;`.
fn parse_args(text: &str) -> Result<Vec<(String, String)>, CniError> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(invalid(
                format!("CNI_ARGS: invalid pair {pair:?}"),
                "expected KEY=VALUE",
            )),
        })
        .collect()
}

/// The spec: an alphanumeric, then alphanumerics, `_`, `.` or `-`.
fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(invalid(
            format!("invalid CNI_CONTAINERID {id:?}"),
            "must start with a letter or digit and hold only letters, digits, '_', '.', '-'",
        ))
    }
}

/// The kernel's rules for a link name: 1..=15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad_char = name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if name.len() > 15 || name == "." || name == ".." || bad_char {
        return Err(invalid(
            format!("invalid CNI_IFNAME {name:?}"),
            "an interface name has at most 15 bytes and no '/', ':' or whitespace",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        CniEnv::parse(|k| map.get(k).cloned())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc-123"),
        ("CNI_NETNS", "/run/netns/p1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
    ];

    #[test]
    fn a_full_add_environment_parses() {
        let env = parse(ADD).unwrap();
        assert_eq!(env.command, Command::Add);
        assert_eq!(
            env.attachment().unwrap(),
            Attachment::new("abc-123", "eth0")
        );
        assert_eq!(env.path.len(), 2);
        assert_eq!(env.args[1], ("K8S_POD_NAME".into(), "web".into()));
    }

    #[test]
    fn each_missing_variable_of_add_is_error_four_naming_it() {
        for skip in [
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_PATH",
            "CNI_COMMAND",
        ] {
            let vars: Vec<_> = ADD.iter().copied().filter(|(k, _)| *k != skip).collect();
            let err = parse(&vars).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{skip}");
            assert!(err.msg.contains(skip), "{skip}: {}", err.msg);
        }
    }

    #[test]
    fn del_needs_no_netns_and_gc_needs_nothing_but_the_command() {
        let del: Vec<_> = ADD
            .iter()
            .map(|&(k, v)| {
                if k == "CNI_COMMAND" {
                    (k, "DEL")
                } else {
                    (k, v)
                }
            })
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        assert_eq!(parse(&del).unwrap().netns, None);
        assert_eq!(
            parse(&[("CNI_COMMAND", "GC")]).unwrap().command,
            Command::Gc
        );
        assert_eq!(
            parse(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }

    #[test]
    fn malformed_values_are_error_four() {
        let cases: &[(&str, &str)] = &[
            ("CNI_COMMAND", "ATTACH"),
            ("CNI_CONTAINERID", "-leading-dash"),
            ("CNI_CONTAINERID", "has/slash"),
            ("CNI_IFNAME", "much-too-long-name0"),
            ("CNI_IFNAME", "eth/0"),
            ("CNI_IFNAME", ".."),
            ("CNI_ARGS", "novalue"),
        ];
        for &(key, value) in cases {
            let vars: Vec<_> = ADD
                .iter()
                .map(|&(k, v)| if k == key { (k, value) } else { (k, v) })
                .collect();
            let err = parse(&vars).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{key}={value}");
        }
    }
}
