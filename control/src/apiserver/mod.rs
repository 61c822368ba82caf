//! The Kubernetes REST API over the store.
//!
//! One entry point, [`ApiServer::handle`], takes every request: it authenticates, parses the
//! path against the resource table, and hands the request to the verb's module — `read` (get,
//! list), `write` (create, update, patch, subresources), `delete`, `watch` — or to discovery and
//! OpenAPI. Errors leave as Kubernetes `Status` objects; every request is counted in metrics.

pub mod delete;
pub mod discovery;
pub mod negotiate;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod path;
pub mod query;
pub mod read;
pub mod status;
pub mod subresources;
pub mod typed;
pub mod watch;
pub mod write;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use crate::auth::tokens::{TokenAuth, User};
use crate::metrics::Metrics;
use crate::resources::Resource;
use crate::store::Store;
use crate::watch_cache::WatchCache;

use self::path::ApiPath;
use self::query::Query;
use self::status::ApiError;

/// Request bodies larger than this get 413 (Kubernetes' limit is 3 MiB too).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Everything a request needs.
pub struct ApiServer<S: Store> {
    /// Where objects live.
    pub store: Arc<S>,
    /// Fan-out of changes to watchers.
    pub cache: Arc<WatchCache>,
    /// Who may call.
    pub auth: Arc<TokenAuth>,
    /// Request counts and latencies.
    pub metrics: Arc<Metrics>,
    /// The address clients reach us at, for `/api`'s serverAddressByClientCIDRs.
    pub advertise: String,
    /// ClusterIPs and nodePorts.
    pub services: Arc<crate::allocator::ServiceAllocator>,
}

impl<S: Store> std::fmt::Debug for ApiServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("advertise", &self.advertise)
            .finish()
    }
}

/// A request on a resource, parsed.
#[derive(Debug)]
pub struct Call {
    /// The resource addressed.
    pub resource: &'static Resource,
    /// Its namespace, for namespaced resources (None = all namespaces).
    pub namespace: Option<String>,
    /// The query string.
    pub query: Query,
    /// The request headers.
    pub headers: HeaderMap,
    /// Who is calling.
    pub user: User,
}

impl Call {
    /// The store key of object `name`.
    pub fn key(&self, name: &str) -> String {
        self.resource.key(self.namespace.as_deref(), name)
    }
}

/// Paths anyone may read, as in Kubernetes' system:public-info-viewer.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/livez"
            | "/readyz"
            | "/version"
            | "/healthz/ping"
            | "/livez/ping"
            | "/readyz/ping"
    )
}

impl<S: Store> ApiServer<S> {
    /// Serves one request.
    pub async fn handle(self: Arc<Self>, request: axum::extract::Request) -> Response {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let query = Query::parse(parts.uri.query());
        let (verb, resource, response) = match self
            .route(&parts.method, &path, query, parts.headers, body)
            .await
        {
            Ok((verb, resource, response)) => (verb, resource, response),
            Err((verb, resource, err)) => (verb, resource, err.into_response()),
        };
        self.metrics.observe_request(
            verb,
            resource.unwrap_or(""),
            response.status().as_u16(),
            started.elapsed(),
        );
        tracing::debug!(%path, verb, code = response.status().as_u16(), "request");
        response
    }

    async fn route(
        &self,
        method: &Method,
        path: &str,
        query: Query,
        headers: HeaderMap,
        body: Body,
    ) -> Result<
        (&'static str, Option<&'static str>, Response),
        (&'static str, Option<&'static str>, ApiError),
    > {
        let fail =
            |verb: &'static str, res: Option<&'static str>| move |e: ApiError| (verb, res, e);
        if is_public(path) {
            return Ok(("GET", None, self.public(path)));
        }
        let user = self
            .auth
            .authenticate(&headers)
            .ok_or_else(|| fail("", None)(ApiError::unauthorized()))?;
        if path == "/metrics" {
            return Ok(("GET", None, self.metrics.render(&self.cache)));
        }
        if path == "/openapi/v2" || path == "/openapi/v3" || path.starts_with("/openapi/v3/") {
            let response = openapi::serve(path).map_err(fail("GET", None))?;
            return Ok(("GET", None, response));
        }
        let parsed = path::parse(path).ok_or_else(|| fail("", None)(ApiError::no_route(path)))?;
        let (resource, namespace, object) = match parsed {
            ApiPath::Collection {
                resource,
                namespace,
            } => (resource, namespace, None),
            ApiPath::Object {
                resource,
                namespace,
                name,
                subresource,
            } => (resource, namespace, Some((name, subresource))),
            discovery_path => {
                if method != Method::GET {
                    return Err(fail("", None)(ApiError::method_not_allowed(
                        "discovery is read-only",
                    )));
                }
                let response = discovery::serve(&discovery_path, &headers, &self.advertise);
                return Ok(("GET", None, response));
            }
        };
        let call = Call {
            resource,
            namespace,
            query,
            headers,
            user,
        };
        let res = Some(resource.plural);
        let verb = verb_of(method, &call, object.is_some());
        let body = if matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            read_body(body).await.map_err(fail(verb, res))?
        } else {
            Bytes::new()
        };
        let result = match (method.clone(), object) {
            (Method::GET, None) if verb == "WATCH" => watch::watch(self, &call).await,
            (Method::GET, None) => read::list(self, &call).await,
            (Method::GET, Some((name, sub))) => read::get(self, &call, &name, sub).await,
            (Method::POST, None) => write::create(self, &call, &body).await,
            (Method::POST, Some((name, Some(crate::resources::Subresource::Binding)))) => {
                subresources::bind(self, &call, &name, &body).await
            }
            (Method::PUT, Some((name, sub))) => write::update(self, &call, &name, sub, &body).await,
            (Method::PATCH, Some((name, sub))) => {
                patch::patch(self, &call, &name, sub, &body).await
            }
            (Method::DELETE, Some((name, None))) => delete::delete(self, &call, &name, &body).await,
            (Method::DELETE, None) => delete::delete_collection(self, &call, &body).await,
            (m, _) => Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({m})"
            ))),
        };
        result.map(|r| (verb, res, r)).map_err(fail(verb, res))
    }

    fn public(&self, path: &str) -> Response {
        if path == "/version" {
            return json(StatusCode::OK, &discovery::version());
        }
        (StatusCode::OK, "ok").into_response()
    }
}

fn verb_of(method: &Method, call: &Call, object: bool) -> &'static str {
    match *method {
        Method::GET if object => "GET",
        Method::GET if call.query.flag("watch") => "WATCH",
        Method::GET => "LIST",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => {
            if call
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("application/apply-patch"))
            {
                "APPLY"
            } else {
                "PATCH"
            }
        }
        Method::DELETE if object => "DELETE",
        Method::DELETE => "DELETECOLLECTION",
        _ => "OTHER",
    }
}

/// Past the limit, a body is still read (and dropped) up to this much, so the client hears
/// the 413 instead of a connection torn down under its upload.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut kept = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > DRAIN_LIMIT {
            break;
        }
        if seen <= MAX_BODY {
            kept.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    Ok(kept.freeze())
}

/// A JSON response.
pub fn json(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A JSON response with warnings (the `Warning` header clients print).
pub fn json_with_warnings(code: StatusCode, value: &Value, warnings: &[String]) -> Response {
    let mut response = json(code, value);
    for warning in warnings {
        let text = format!(
            "299 - {}",
            serde_json::to_string(warning).unwrap_or_default()
        );
        if let Ok(v) = header::HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}
