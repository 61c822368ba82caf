//! Reading the `Accept` header the way kubectl writes it.
//!
//! kubectl asks for alternatives in one header — `application/json;as=Table;v=v1;g=meta.k8s.io,
//! application/json` — and discovery clients for the aggregated form. The first alternative we
//! can produce wins; plain JSON is always possible.

use axum::http::{HeaderMap, header};

/// What form of answer the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// The plain object or list.
    Json,
    /// A `meta.k8s.io` Table, of this version (`v1` or `v1beta1`).
    Table(&'static str),
    /// Aggregated discovery, of this `apidiscovery.k8s.io` version (`v2` or `v2beta1`).
    AggregatedDiscovery(&'static str),
}

/// The first acceptable alternative of the `Accept` header.
pub fn wanted(headers: &HeaderMap) -> Wanted {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for alternative in accept.split(',') {
        let mut parts = alternative.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if media != "application/json" && media != "*/*" && !media.is_empty() {
            continue;
        }
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let param = |k: &str| params.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        match (param("as"), param("g"), param("v")) {
            (None, _, _) => return Wanted::Json,
            (Some("Table"), Some("meta.k8s.io"), Some("v1")) => return Wanted::Table("v1"),
            (Some("Table"), Some("meta.k8s.io"), Some("v1beta1")) => {
                return Wanted::Table("v1beta1");
            }
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2")) => {
                return Wanted::AggregatedDiscovery("v2");
            }
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2beta1")) => {
                return Wanted::AggregatedDiscovery("v2beta1");
            }
            _ => continue,
        }
    }
    Wanted::Json
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn kubectl_headers() {
        assert_eq!(
            wanted(&accept(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            )),
            Wanted::Table("v1")
        );
        assert_eq!(
            wanted(&accept(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
            )),
            Wanted::AggregatedDiscovery("v2")
        );
        assert_eq!(
            wanted(&accept(
                "application/vnd.kubernetes.protobuf,application/json"
            )),
            Wanted::Json
        );
        assert_eq!(wanted(&HeaderMap::new()), Wanted::Json);
    }
}
