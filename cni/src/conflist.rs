//! A network configuration list as a container runtime reads it (libcni's part of the spec).
//!
//! The runtime, not the plugin, completes each plugin's configuration: the list's `name` and
//! `cniVersion`, the previous plugin's result as `prevResult`, and of `runtimeConfig` only what
//! the plugin's `capabilities` turned on (e.g. `portMappings` for `portmap`). ADD and CHECK run
//! the plugins in order, DEL in reverse, so each undoes its work on top of what the ones before
//! it set up. skiff-node's runtime side and the test harness's plugin chains both run lists
//! through this one reading of the spec.

use serde_json::{Map, Value, json};

/// Why a configuration list is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfListError(pub String);

/// A network configuration list.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkList {
    /// `name`.
    pub name: String,
    /// `cniVersion`.
    pub version: String,
    /// The plugin configurations, in order.
    pub plugins: Vec<Value>,
}

impl NetworkList {
    /// Parses a `.conflist` (or a single-plugin `.conf`, wrapped as a list of one).
    pub fn parse(text: &str) -> Result<NetworkList, ConfListError> {
        let bad = |message: String| ConfListError(message);
        let value: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let name = value["name"]
            .as_str()
            .ok_or_else(|| bad("no name".into()))?;
        let version = value["cniVersion"].as_str().unwrap_or("0.4.0");
        let plugins = match value.get("plugins") {
            Some(Value::Array(list)) if !list.is_empty() => list.clone(),
            Some(_) => return Err(bad("plugins must be a non-empty list".into())),
            None => vec![value.clone()],
        };
        if let Some(p) = plugins.iter().find(|p| !p["type"].is_string()) {
            return Err(bad(format!("a plugin has no type: {p}")));
        }
        Ok(NetworkList {
            name: name.to_owned(),
            version: version.to_owned(),
            plugins,
        })
    }

    /// The configuration `plugin` (one of [`plugins`](Self::plugins)) is handed on stdin.
    pub fn plugin_config(&self, plugin: &Value, prev: Option<&Value>, runtime: &Value) -> Value {
        let mut config: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
        config.insert("name".into(), json!(self.name));
        config.insert("cniVersion".into(), json!(self.version));
        if let Some(prev) = prev {
            config.insert("prevResult".into(), prev.clone());
        }
        let wanted: Map<String, Value> = plugin["capabilities"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, on)| on.as_bool() == Some(true))
            .filter_map(|(cap, _)| Some((cap.clone(), runtime.get(cap)?.clone())))
            .collect();
        if !wanted.is_empty() {
            config.insert("runtimeConfig".into(), Value::Object(wanted));
        }
        Value::Object(config)
    }

    /// The plugins' indexes in the order `command` runs them: DEL last plugin first.
    pub fn order(&self, command: &str) -> Vec<usize> {
        let order = 0..self.plugins.len();
        if command == "DEL" {
            order.rev().collect()
        } else {
            order.collect()
        }
    }

    /// Does the list's version know GC (1.1.0 and later)?
    pub fn knows_gc(&self) -> bool {
        let mut parts = self
            .version
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (1, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conf_becomes_a_list_of_one_and_bad_ones_say_why() {
        let list =
            NetworkList::parse(r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#).unwrap();
        assert_eq!((list.name.as_str(), list.plugins.len()), ("n", 1));
        let err = NetworkList::parse(r#"{"name":"n","plugins":[{"x":1}]}"#).unwrap_err();
        assert!(err.to_string().contains("a plugin has no type"), "{err}");
        let err = NetworkList::parse(r#"{"name":"n","plugins":[]}"#).unwrap_err();
        assert_eq!(err.0, "plugins must be a non-empty list");
        assert!(NetworkList::parse("{").is_err());
    }

    #[test]
    fn plugins_get_name_version_prev_result_and_only_their_capabilities() {
        let list = NetworkList::parse(
            r#"{"cniVersion":"1.1.0","name":"skiff","plugins":[
                {"type":"skiff-cni"},
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}}]}"#,
        )
        .unwrap();
        let runtime = json!({"portMappings": [{"hostPort": 80}], "bandwidth": {"rate": 1}});
        let first = list.plugin_config(&list.plugins[0], None, &runtime);
        assert_eq!(
            first,
            json!({"type": "skiff-cni", "name": "skiff", "cniVersion": "1.1.0"})
        );
        let prev = json!({"ips": []});
        let second = list.plugin_config(&list.plugins[1], Some(&prev), &runtime);
        assert_eq!(second["prevResult"], prev);
        assert_eq!(
            second["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 80}]}),
            "only capabilities the plugin turned on"
        );
    }

    #[test]
    fn del_runs_the_chain_backwards_and_gc_needs_1_1() {
        let mut list = NetworkList::parse(
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"},{"type":"b"},{"type":"c"}]}"#,
        )
        .unwrap();
        assert_eq!(list.order("ADD"), [0, 1, 2]);
        assert_eq!(list.order("CHECK"), [0, 1, 2]);
        assert_eq!(list.order("DEL"), [2, 1, 0]);
        assert!(!list.knows_gc());
        list.version = "1.1.0".into();
        assert!(list.knows_gc());
        list.version = "0.4.0".into();
        assert!(!list.knows_gc());
    }
}
