//! watch: newline-delimited JSON events on a chunked response, until the timeout.
//!
//! Where a watch starts:
//! - `resourceVersion` unset or `0`: ADDED for every existing object, then changes (the classic
//!   "get state and start" of Kubernetes); with `sendInitialEvents=true` the initial events end
//!   with a BOOKMARK annotated `k8s.io/initial-events-end`, as streaming lists expect;
//! - `resourceVersion=N`: the changes after N — from the watch cache's ring when it still holds
//!   them, else from the store's history, else an ERROR event with a 410 Expired Status.
//!
//! Selectors apply to transitions, like the Kubernetes watch cache: an object that stops
//! matching is sent as DELETED, one that starts matching as ADDED.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::negotiate::{Wanted, wanted};
use super::read::{Filter, requested_revision};
use super::status::ApiError;
use super::{ApiServer, Call, objects};
use crate::resources::Resource;
use crate::store::{EventKind, Revision, Store};
use crate::table::{IncludeObject, to_table};
use crate::watch_cache::CachedEvent;

/// A watch without `timeoutSeconds` ends after this long (clients re-watch).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often a bookmark tells an idle watcher the current revision.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// What a watcher sends and how.
struct Watcher {
    resource: &'static Resource,
    prefix: String,
    filter: Filter,
    bookmarks: bool,
    table: bool,
    include: IncludeObject,
    out: mpsc::Sender<Result<Bytes, std::io::Error>>,
    /// The last revision sent (events at or below it are skipped).
    sent: Revision,
}

/// GET with `watch=true`.
pub async fn watch<S: Store>(api: &ApiServer<S>, call: &Call) -> Result<Response, ApiError> {
    let filter = Filter::from_call(call)?;
    let timeout = call
        .query
        .int("timeoutSeconds")?
        .filter(|t| *t > 0)
        .map_or(DEFAULT_TIMEOUT, |t| {
            Duration::from_secs(t as u64).min(DEFAULT_TIMEOUT)
        });
    let send_initial = call.query.flag("sendInitialEvents");
    if send_initial && call.query.get("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::bad_request(
            "sendInitialEvents: Forbidden: sendInitialEvents is forbidden unless resourceVersionMatch is \"NotOlderThan\"",
        ));
    }
    let explicit = call.query.get("resourceVersion").filter(|rv| *rv != "0");
    let start = if explicit.is_some() && !send_initial {
        let rv: Revision = explicit
            .unwrap_or_default()
            .parse()
            .map_err(|_| ApiError::bad_request("resourceVersion: must be an integer"))?;
        Some(rv)
    } else {
        requested_revision(api, call).await?;
        None
    };
    let (tx, rx) = mpsc::channel(256);
    let mut watcher = Watcher {
        resource: call.resource,
        prefix: call.resource.list_prefix(call.namespace.as_deref()),
        filter,
        bookmarks: call.query.flag("allowWatchBookmarks"),
        table: matches!(wanted(&call.headers), Wanted::Table(_)),
        include: IncludeObject::parse(call.query.get("includeObject"))
            .unwrap_or(IncludeObject::Metadata),
        out: tx,
        sent: 0,
    };
    let store = Arc::clone(&api.store);
    let cache = Arc::clone(&api.cache);
    tokio::spawn(async move {
        let run = async {
            let from = match start {
                Some(rv) => rv,
                None => watcher.initial_events(&*store, send_initial).await?,
            };
            watcher.sent = from;
            watcher.follow(&*store, &cache).await
        };
        // The stream ends at the timeout, on a closed client, or on a lagging cut-off.
        let _ = tokio::time::timeout(timeout, run).await;
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// Why a watch stream stopped early.
enum Stop {
    Closed,
}

impl Watcher {
    async fn emit(&self, kind: &str, object_json: &str) -> Result<(), Stop> {
        let line = format!("{{\"type\":\"{kind}\",\"object\":{object_json}}}\n");
        self.out
            .send(Ok(Bytes::from(line)))
            .await
            .map_err(|_| Stop::Closed)
    }

    async fn emit_object(
        &self,
        kind: &str,
        object: &Value,
        json_text: Option<&str>,
    ) -> Result<(), Stop> {
        if self.table {
            let table = to_table(
                self.resource.strategy.table,
                std::slice::from_ref(object),
                self.include,
                crate::time::now_unix(),
                json!({}),
            );
            return self.emit(kind, &table.to_string()).await;
        }
        match json_text {
            Some(text) => self.emit(kind, text).await,
            None => self.emit(kind, &object.to_string()).await,
        }
    }

    async fn bookmark(&self, revision: Revision, initial_end: bool) -> Result<(), Stop> {
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"kind": self.resource.kind, "apiVersion": self.resource.api_version(), "metadata": meta});
        self.emit("BOOKMARK", &object.to_string()).await
    }

    async fn error(&self, err: &ApiError) -> Result<(), Stop> {
        self.emit("ERROR", &err.to_status().to_string()).await
    }

    /// ADDED for every current object; returns the revision they reflect.
    async fn initial_events<S: Store>(
        &mut self,
        store: &S,
        with_bookmark: bool,
    ) -> Result<Revision, Stop> {
        let listed = match store.list(&self.prefix, 0).await {
            Ok(listed) => listed,
            Err(err) => {
                let _ = self.error(&err.into()).await;
                return Err(Stop::Closed);
            }
        };
        for kv in &listed.kvs {
            let Ok(object) = objects::decode(self.resource, kv) else {
                continue;
            };
            if self.filter.matches(&object) {
                self.emit_object("ADDED", &object, None).await?;
            }
        }
        if with_bookmark {
            self.bookmark(listed.revision, true).await?;
        }
        Ok(listed.revision)
    }

    /// Sends changes after `self.sent`, from the cache or else the store, until stopped.
    async fn follow<S: Store>(
        &mut self,
        store: &S,
        cache: &crate::watch_cache::WatchCache,
    ) -> Result<(), Stop> {
        if let Some(subscription) = cache.subscribe(self.resource, self.sent) {
            for event in subscription.backlog {
                self.send_change(&event).await?;
            }
            return self.follow_live(subscription.live, cache).await;
        }
        // Older than the cache holds: the store's own history, or 410.
        let mut history = match store.watch(&self.prefix, self.sent).await {
            Ok(rx) => rx,
            Err(err) => {
                let api_err: ApiError = err.into();
                return self.error(&api_err).await;
            }
        };
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            tokio::select! {
                event = history.recv() => {
                    let Some(event) = event else { return Ok(()) };
                    if let Some(cached) = CachedEvent::decode(self.resource, &event) {
                        self.send_change(&cached).await?;
                    }
                }
                _ = ticker.tick() => {
                    if self.bookmarks {
                        self.bookmark(self.sent.max(cache.latest_revision()), false).await?;
                    }
                }
                () = self.out.closed() => return Err(Stop::Closed),
            }
        }
    }

    async fn follow_live(
        &mut self,
        mut live: broadcast::Receiver<Arc<CachedEvent>>,
        cache: &crate::watch_cache::WatchCache,
    ) -> Result<(), Stop> {
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            tokio::select! {
                event = live.recv() => match event {
                    Ok(event) => self.send_change(&event).await?,
                    // Fell too far behind: end the stream; the client re-watches from `sent`.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = ticker.tick() => {
                    if self.bookmarks {
                        self.bookmark(self.sent.max(cache.latest_revision()), false).await?;
                    }
                }
                () = self.out.closed() => return Err(Stop::Closed),
            }
        }
    }

    /// One change, filtered by namespace and selectors, as the event type it means here.
    async fn send_change(&mut self, event: &CachedEvent) -> Result<(), Stop> {
        if event.revision <= self.sent || !event.key.starts_with(&self.prefix) {
            return Ok(());
        }
        self.sent = event.revision;
        let now = self.filter.matches(&event.object);
        let before = event.prev.as_ref().is_some_and(|p| self.filter.matches(p));
        let kind = match (event.kind, before, now) {
            (EventKind::Delete, _, true) => "DELETED",
            (EventKind::Delete, true, false) => "DELETED",
            (EventKind::Put, false, true) => "ADDED",
            (EventKind::Put, true, true) => "MODIFIED",
            (EventKind::Put, true, false) => "DELETED",
            _ => return Ok(()),
        };
        self.emit_object(kind, &event.object, Some(&event.object_json))
            .await
    }
}
