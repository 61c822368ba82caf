//! Calling CNI plugins as a container runtime does (libcni's job): find the network
//! configuration, run its plugin chain with the `CNI_*` variables and the config on stdin, and
//! remember each attachment's result on disk, because DEL must hand the plugins the result ADD
//! gave (`prevResult`) even after the agent restarted.
//!
//! The configuration is the first `*.conflist`, `*.conf` or `*.json` file, in name order, of
//! the conf dir (kubelet's and containerd's rule); how each plugin's configuration is completed
//! and in which order the chain runs is [`skiff_cni::conflist`]'s. DEL carries on past errors
//! of plugins whose state is already gone, so a Pod can always be torn down. GC passes every attachment still cached as valid, so a plugin frees
//! what an agent crash left behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use skiff_cni::conflist::NetworkList;

/// How long one plugin may run.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong calling the plugins.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// No usable configuration in the conf dir.
    #[error("no CNI network configuration in {0}")]
    NoConfig(PathBuf),
    /// A configuration file could not be read or parsed.
    #[error("invalid CNI configuration {path}: {message}")]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The plugin binary is in none of the bin dirs.
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginNotFound {
        /// The plugin's `type`.
        plugin: String,
        /// The dirs searched, joined.
        dirs: String,
    },
    /// The plugin answered with an error object or failed.
    #[error("CNI plugin {plugin} {command} failed (code {code}): {message}")]
    Plugin {
        /// The plugin's `type`.
        plugin: String,
        /// `ADD`, `DEL`, ...
        command: String,
        /// The spec's error code (0 when it printed none).
        code: u64,
        /// Its `msg` and `details`, or its stderr.
        message: String,
    },
    /// Running the plugin or the result cache failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The first valid configuration in `dir`, by file name.
pub fn load_network(dir: &Path) -> Result<NetworkList, CniError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|_| CniError::NoConfig(dir.to_path_buf()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    let mut last_error = None;
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| CniError::Io {
            what: format!("cannot read {}", path.display()),
            source,
        })?;
        match NetworkList::parse(&text) {
            Ok(list) => return Ok(list),
            Err(err) => {
                let err = CniError::BadConfig {
                    path,
                    message: err.0,
                };
                tracing::warn!(error = %err, "skipping a CNI configuration");
                last_error = Some(err);
            }
        }
    }
    Err(last_error.unwrap_or(CniError::NoConfig(dir.to_path_buf())))
}

/// One Pod network attachment.
#[derive(Clone, Debug, PartialEq)]
pub struct Attachment {
    /// `CNI_CONTAINERID`: the sandbox's id.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` pairs (`K8S_POD_NAME`, ...).
    pub args: Vec<(String, String)>,
    /// `runtimeConfig` values by capability (e.g. `portMappings`).
    pub runtime_config: Value,
}

impl Attachment {
    fn cni_args(&self) -> String {
        let mut pairs = vec!["IgnoreUnknown=1".to_owned()];
        pairs.extend(self.args.iter().map(|(k, v)| format!("{k}={v}")));
        pairs.join(";")
    }
}

/// Runs plugin chains; the runtime's side of CNI.
#[derive(Clone, Debug)]
pub struct Cni {
    /// Where configurations are (`--cni-conf-dir`).
    pub conf_dir: PathBuf,
    /// Where plugins are (`--cni-bin-dir`, may be several).
    pub bin_dirs: Vec<PathBuf>,
    /// Where results are cached.
    pub cache_dir: PathBuf,
}

impl Cni {
    fn find(&self, plugin: &str) -> Result<PathBuf, CniError> {
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| CniError::PluginNotFound {
                plugin: plugin.to_owned(),
                dirs: self
                    .bin_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            })
    }

    fn cache_path(&self, network: &str, attachment: &Attachment) -> PathBuf {
        self.cache_dir.join(format!(
            "{network}-{}-{}.json",
            attachment.container_id, attachment.ifname
        ))
    }

    fn exec(
        &self,
        command: &str,
        plugin: &Value,
        config: &Value,
        attachment: Option<&Attachment>,
    ) -> Result<Value, CniError> {
        let kind = plugin["type"].as_str().unwrap_or_default().to_owned();
        let binary = self.find(&kind)?;
        let path = std::env::join_paths(&self.bin_dirs).unwrap_or_default();
        let mut cmd = Command::new(&binary);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(a) = attachment {
            cmd.env("CNI_CONTAINERID", &a.container_id)
                .env("CNI_NETNS", &a.netns)
                .env("CNI_IFNAME", &a.ifname)
                .env("CNI_ARGS", a.cni_args());
        }
        let io = |what: String| move |source| CniError::Io { what, source };
        let mut child = cmd
            .spawn()
            .map_err(io(format!("cannot run {}", binary.display())))?;
        let stdin = serde_json::to_vec(config).expect("JSON serializes");
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin that exits without reading its stdin is reported by its status below.
            let _ = pipe.write_all(&stdin);
        }
        let output = wait_with_timeout(child, PLUGIN_TIMEOUT)
            .map_err(io(format!("waiting for {}", binary.display())))?;
        let stdout: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        if output.status.success() {
            return Ok(stdout);
        }
        let message = match stdout["msg"].as_str() {
            Some(msg) => match stdout["details"].as_str().filter(|d| !d.is_empty()) {
                Some(details) => format!("{msg}: {details}"),
                None => msg.to_owned(),
            },
            None => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        };
        Err(CniError::Plugin {
            plugin: kind,
            command: command.to_owned(),
            code: stdout["code"].as_u64().unwrap_or(0),
            message,
        })
    }

    /// ADD through the chain; returns the final result, also cached for DEL and CHECK.
    pub fn add(&self, attachment: &Attachment) -> Result<Value, CniError> {
        let list = load_network(&self.conf_dir)?;
        let mut prev: Option<Value> = None;
        for plugin in list.order("ADD").into_iter().map(|i| &list.plugins[i]) {
            let config = list.plugin_config(plugin, prev.as_ref(), &attachment.runtime_config);
            prev = Some(self.exec("ADD", plugin, &config, Some(attachment))?);
        }
        let result = prev.unwrap_or(Value::Null);
        let cached = json!({
            "kind": "cniCacheV1", "containerId": attachment.container_id,
            "ifName": attachment.ifname, "networkName": list.name,
            "netns": attachment.netns, "runtimeConfig": attachment.runtime_config,
            "result": result,
        });
        std::fs::create_dir_all(&self.cache_dir)
            .and_then(|()| {
                std::fs::write(
                    self.cache_path(&list.name, attachment),
                    serde_json::to_vec(&cached).expect("JSON serializes"),
                )
            })
            .map_err(|source| CniError::Io {
                what: format!("cannot cache the result in {}", self.cache_dir.display()),
                source,
            })?;
        Ok(result)
    }

    /// DEL through the chain, backwards, with the cached result; idempotent. Every plugin runs
    /// even if an earlier one failed; the first failure is returned after.
    pub fn del(&self, attachment: &Attachment) -> Result<(), CniError> {
        let list = load_network(&self.conf_dir)?;
        let cache = self.cache_path(&list.name, attachment);
        let cached: Option<Value> = std::fs::read(&cache)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let prev = cached.as_ref().map(|c| c["result"].clone());
        let runtime = cached
            .as_ref()
            .map_or(attachment.runtime_config.clone(), |c| {
                c["runtimeConfig"].clone()
            });
        let mut first_error = None;
        for plugin in list.order("DEL").into_iter().map(|i| &list.plugins[i]) {
            let config = list.plugin_config(plugin, prev.as_ref(), &runtime);
            if let Err(err) = self.exec("DEL", plugin, &config, Some(attachment)) {
                tracing::warn!(error = %err, "CNI DEL");
                first_error.get_or_insert(err);
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => {
                let _ = std::fs::remove_file(cache);
                Ok(())
            }
        }
    }

    /// The cached attachments (from earlier ADDs, also by an earlier run of the agent).
    pub fn cached(&self) -> Vec<(String, String)> {
        let Ok(entries) = std::fs::read_dir(&self.cache_dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok())
            .filter_map(|c| {
                Some((
                    c["containerId"].as_str()?.to_owned(),
                    c["ifName"].as_str()?.to_owned(),
                ))
            })
            .collect()
    }

    /// GC: every plugin frees what is not in `valid` (container id, ifname); cache entries
    /// of other attachments are dropped. Needs a 1.1.0 configuration (older ones skip it).
    pub fn gc(&self, valid: &[(String, String)]) -> Result<(), CniError> {
        let list = load_network(&self.conf_dir)?;
        if !list.knows_gc() {
            return Ok(());
        }
        let attachments: Vec<Value> = valid
            .iter()
            .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
            .collect();
        for plugin in &list.plugins {
            let mut config = list.plugin_config(plugin, None, &Value::Null);
            config["cni.dev/valid-attachments"] = json!(attachments);
            self.exec("GC", plugin, &config, None)?;
        }
        for (id, ifname) in self.cached() {
            if !valid.iter().any(|(v, i)| *v == id && *i == ifname) {
                let _ = std::fs::remove_file(
                    self.cache_dir
                        .join(format!("{}-{id}-{ifname}.json", list.name)),
                );
            }
        }
        Ok(())
    }
}

/// Collects `child`'s output, killing it when it runs longer than `timeout`. The pipes are
/// drained while it runs, so a chatty plugin cannot block on a full pipe.
fn wait_with_timeout(
    child: std::process::Child,
    timeout: Duration,
) -> std::io::Result<std::process::Output> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => output,
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = rx.recv();
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("plugin still running after {timeout:?}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_valid_file_by_name_wins() {
        let dir = std::env::temp_dir().join(format!("skiff-cniconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("05-broken.conflist"), "{").unwrap();
        std::fs::write(
            dir.join("10-b.conflist"),
            r#"{"name":"b","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("20-a.conflist"),
            r#"{"name":"a","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.join("README"), "not a config").unwrap();
        assert_eq!(load_network(&dir).unwrap().name, "b");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(load_network(&dir), Err(CniError::NoConfig(_))));
    }
}
