//! The `kubernetes` Service in `default`: how Pods find the apiserver.
//!
//! It holds the first address of the service range and points, through an Endpoints object and
//! an EndpointSlice (it has no selector, so no controller manages them), at the address the
//! apiserver advertises (none when that is a loopback address, which Kubernetes refuses as an
//! endpoint). Made at start, corrected when the advertised address changes.

use std::net::IpAddr;

use anyhow::Result;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::apiserver::query::Query;
use crate::apiserver::{ApiServer, Call, objects, write};
use crate::auth::tokens::User;
use crate::resources;
use crate::store::Store;

fn call(group: &str, plural: &str) -> Call {
    Call {
        resource: resources::find(group, "v1", plural).expect("served"),
        namespace: Some("default".into()),
        query: Query::default(),
        headers: HeaderMap::new(),
        user: User {
            name: "system:apiserver".into(),
            groups: vec!["system:masters".into()],
        },
    }
}

/// Creates or corrects the Service, its Endpoints and its EndpointSlice.
pub async fn ensure<S: Store>(api: &ApiServer<S>, advertise: IpAddr, port: u16) -> Result<()> {
    let ip = api.services.kubernetes_service_ip().to_string();
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": ip,
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}
    });
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": advertise.to_string()}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": if advertise.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [advertise.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
    });
    put(api, &call("", "services"), service, |_| false).await?;
    if advertise.is_loopback() {
        // Kubernetes refuses loopback endpoint addresses: nothing outside this host could use them.
        tracing::warn!(%advertise, "the kubernetes Service gets no endpoints: the advertised address is loopback");
        return Ok(());
    }
    put(api, &call("", "endpoints"), endpoints.clone(), |old| {
        old["subsets"] != endpoints["subsets"]
    })
    .await?;
    let wanted = slice.clone();
    put(
        api,
        &call("discovery.k8s.io", "endpointslices"),
        slice,
        move |old| old["endpoints"] != wanted["endpoints"] || old["ports"] != wanted["ports"],
    )
    .await
}

/// Creates `object` if missing; replaces it when `stale(stored)` says it is out of date.
async fn put<S: Store>(
    api: &ApiServer<S>,
    call: &Call,
    object: Value,
    stale: impl Fn(&Value) -> bool,
) -> Result<()> {
    let name = objects::name(&object).unwrap_or_default().to_owned();
    let Some(kv) = api.store.get(&call.key(&name)).await? else {
        write::create_object(api, call, object)
            .await
            .map_err(|e| anyhow::anyhow!("creating {} {name}: {e}", call.resource.kind))?;
        return Ok(());
    };
    let stored = objects::decode(call.resource, &kv).map_err(|e| anyhow::anyhow!("{e}"))?;
    if stale(&stored) {
        let mut updated = object;
        updated["metadata"] = stored["metadata"].clone();
        let bytes = objects::encode(&updated).map_err(|e| anyhow::anyhow!("{e}"))?;
        api.store
            .update(&call.key(&name), bytes, kv.mod_revision)
            .await?;
    }
    Ok(())
}
