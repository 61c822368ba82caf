//! What every skiff binary does the same way at start: logs, its node's name, its kubeconfig,
//! and address flags.
//!
//! The node agent and a standalone proxy must agree on the node's name to the letter (the proxy
//! watches the Node the agent registered), so both take it from [`node_name`], which reads it
//! the way kubelet and kube-proxy do: the override or the kernel's hostname, trimmed and
//! lower-cased (a Node's name is a DNS subdomain, always lower case).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why a start-up step failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The hostname could not be read.
    #[error("cannot read the hostname: {0}")]
    Hostname(#[source] std::io::Error),
    /// An address flag is not `IP:port`.
    #[error("bad address {text:?}: {source}")]
    Address {
        /// The flag's value.
        text: String,
        /// Why.
        #[source]
        source: std::net::AddrParseError,
    },
    /// The kubeconfig file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No usable client configuration (in-cluster, `$KUBECONFIG` or `~/.kube/config`).
    #[error("cannot find a kubeconfig: {0}")]
    Infer(#[source] kube::config::InferConfigError),
}

/// Logs to stderr at `RUST_LOG`'s levels (default `info`), as JSON lines when `json`.
pub fn init_logging(json: bool) {
    init_logging_with(json, "info");
}

/// [`init_logging`] with `default` as the levels when `RUST_LOG` is unset (e.g. `info` with a
/// chatty library turned down).
pub fn init_logging_with(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

/// This node's name: `override_name`, or else the kernel's hostname; trimmed, lower case.
pub fn node_name(override_name: Option<&str>) -> Result<String, StartError> {
    let name = match override_name {
        Some(name) => name.to_owned(),
        None => {
            std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(StartError::Hostname)?
        }
    };
    Ok(canonical_node_name(&name))
}

/// A hostname as a Node name: trimmed and lower-cased, as kubelet registers it.
pub fn canonical_node_name(hostname: &str) -> String {
    hostname.trim().to_lowercase()
}

/// An address flag: empty means "do not serve".
pub fn optional_address(text: &str) -> Result<Option<SocketAddr>, StartError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|source| StartError::Address {
            text: text.to_owned(),
            source,
        })
}

/// The client configuration: the kubeconfig at `path`, or else what kube-rs infers
/// (in-cluster service account, `$KUBECONFIG`, `~/.kube/config`).
pub async fn kube_config(path: Option<&Path>) -> Result<kube::Config, StartError> {
    let Some(path) = path else {
        return kube::Config::infer().await.map_err(StartError::Infer);
    };
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).map_err(|source| StartError::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|source| StartError::Kubeconfig {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostname_with_capitals_names_the_node_as_kubelet_does() {
        assert_eq!(
            canonical_node_name("Worker-1.Example\n"),
            "worker-1.example"
        );
        assert_eq!(node_name(Some(" Node-A ")).unwrap(), "node-a");
    }

    #[test]
    fn an_empty_address_flag_serves_nothing_and_a_bad_one_says_which() {
        assert_eq!(optional_address("").unwrap(), None);
        assert_eq!(
            optional_address("127.0.0.1:10256").unwrap(),
            Some("127.0.0.1:10256".parse().unwrap())
        );
        let err = optional_address("localhost:80").unwrap_err();
        assert!(err.to_string().contains("\"localhost:80\""), "{err}");
    }
}
