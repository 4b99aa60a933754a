//! The HTTP face: URL routing, query parameters, the verbs, discovery, and watch streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

use crate::error::ApiError;
use crate::patch::{self, ApplyRequest, PatchType};
use crate::registry;
use crate::selector::Selector;
use crate::store::{Broadcast, State, Target, WriteOptions, translate};
use crate::{Request, Verb, now};

/// What every request handler shares; it outlives server restarts.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub bookmark_interval: Duration,
    pub watches: AtomicUsize,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug already reported by that panic; the
        // store is still usable for the rest of the test.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

type AppState = (Arc<Shared>, watch::Receiver<bool>);

/// `stop` turns true when this run of the server stops; open watches end then.
pub(crate) fn router(shared: Arc<Shared>, stop: watch::Receiver<bool>) -> axum::Router {
    axum::Router::new()
        .fallback(handle)
        .with_state((shared, stop))
}

async fn handle(
    AxumState((shared, stop)): AxumState<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = serve(&shared, stop, &method, &uri, &headers, &body);
    match result {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(%method, %uri, error = %e, "test API server: request failed");
            json_response(e.code, &e.status())
        }
    }
}

fn json_response(code: u16, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn serve(
    shared: &Arc<Shared>,
    stop: watch::Receiver<bool>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let q = query(uri.query().unwrap_or_default());
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let mut state = shared.lock();
    let discovery = match segments.as_slice() {
        ["version"] => Some(
            json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-petrel-testserver",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "",
            "platform": "linux/amd64"}),
        ),
        ["api"] => Some(
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        ),
        ["apis"] => Some(registry::api_group_list(&state.resources)),
        ["apis", group] => registry::api_group(&state.resources, group),
        ["api", version] => registry::resource_list(&state.resources, "", version),
        ["apis", group, version] => registry::resource_list(&state.resources, group, version),
        _ => None,
    };
    if let Some(doc) = discovery {
        return Ok(json_response(200, &doc));
    }
    let t = route(&state, &segments)?;
    let verb = match (method.as_str(), t.name.is_some()) {
        ("GET", true) => Verb::Get,
        ("GET", false) if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) => {
            Verb::Watch
        }
        ("GET", false) => Verb::List,
        ("POST", false) => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        (m, _) => return Err(ApiError::method_not_allowed(m)),
    };
    state.requests.push(Request {
        verb,
        group: t.res.group.clone(),
        resource: t.res.plural.clone(),
        namespace: Some(t.namespace.clone()).filter(|ns| !ns.is_empty()),
        name: t.name.clone(),
        subresource: t.subresource.clone(),
    });
    let write = matches!(
        verb,
        Verb::Create | Verb::Update | Verb::Patch | Verb::Delete | Verb::DeleteCollection
    );
    if write
        && state
            .forbidden
            .iter()
            .any(|(r, sub)| *r == t.res.plural && *sub == t.subresource)
    {
        let name = t.name.clone().unwrap_or_default();
        let verb_name = format!("{verb:?}").to_lowercase();
        return Err(ApiError::forbidden(
            &verb_name,
            &t.res.group,
            &t.res.plural,
            t.subresource.as_deref(),
            &name,
        ));
    }
    if state.failures > 0 {
        state.failures -= 1;
        return Err(ApiError::internal(
            "injected failure (TestServer::inject_failures)",
        ));
    }
    let opts = WriteOptions {
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
    };
    let name = t.name.clone().unwrap_or_default();
    let (code, object) = match verb {
        Verb::Watch => return start_watch(shared, &mut state, stop, t, &q),
        Verb::List => return Ok(json_response(200, &list(&state, &t, &q)?)),
        Verb::Get => {
            let object = state.get(&t.res, &t.namespace, &name);
            (
                200,
                object
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(&t.res.group, &t.res.plural, &name))?,
            )
        }
        Verb::Create => (201, state.create(&t, parse_json(body)?, opts)?),
        Verb::Update => (200, state.update(&t, parse_json(body)?, opts)?),
        Verb::Patch => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let kind = PatchType::from_content_type(content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
            if kind == PatchType::Apply {
                apply(&mut state, &t, &q, body, opts)?
            } else {
                let old = state.get(&t.res, &t.namespace, &name).cloned();
                let old =
                    old.ok_or_else(|| ApiError::not_found(&t.res.group, &t.res.plural, &name))?;
                let patched = patch::patch(kind, &old, &parse_json(body)?)?;
                (200, state.update(&t, patched, opts)?)
            }
        }
        Verb::Delete => {
            let options = if body.is_empty() {
                json!({})
            } else {
                parse_json(body)?
            };
            (200, state.delete(&t, &options, opts)?)
        }
        Verb::DeleteCollection => {
            let mut result = list(&state, &t, &q)?;
            let items = result["items"]
                .as_array_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            let mut deleted = Vec::new();
            for item in items {
                let meta = &item["metadata"];
                let one = Target {
                    name: meta["name"].as_str().map(String::from),
                    namespace: meta["namespace"].as_str().unwrap_or_default().into(),
                    ..t.clone()
                };
                deleted.push(state.delete(&one, &json!({}), opts)?);
            }
            result["items"] = Value::Array(deleted);
            (200, result)
        }
    };
    Ok(json_response(code, &present(&t, object)))
}

/// Resolves `/api/v1/...` and `/apis/GROUP/VERSION/...` paths to a resource request.
fn route(state: &State, segments: &[&str]) -> Result<Target, ApiError> {
    let (group, version, rest) = match segments {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route()),
    };
    let (namespace, rest) = match rest {
        // `namespaces/NAME/status` is the Namespace's own subresource, not a resource list.
        ["namespaces", _, "status" | "finalize"] => ("", rest),
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (*ns, rest),
        _ => ("", rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Err(ApiError::no_route()),
    };
    let res = state
        .resource(group, plural)
        .filter(|r| r.versions.iter().any(|v| v == version))
        .ok_or_else(ApiError::no_route)?;
    let scope_ok = if res.namespaced {
        !namespace.is_empty() || name.is_none()
    } else {
        namespace.is_empty()
    };
    if !scope_ok || subresource.is_some_and(|s| s != "status" || !res.status) {
        return Err(ApiError::no_route());
    }
    Ok(Target {
        res: res.clone(),
        version: version.to_string(),
        namespace: namespace.to_string(),
        name: name.map(String::from),
        subresource: subresource.map(String::from),
    })
}

/// An object as served at the request's version (objects are stored version-less; like a
/// CRD with `conversion: None`, only `apiVersion` changes).
fn present(t: &Target, mut object: Value) -> Value {
    if object.get("kind").is_some_and(|k| *k == t.res.kind) {
        object["apiVersion"] = json!(t.res.api_version(&t.version));
    }
    object
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn list(state: &State, t: &Target, q: &HashMap<String, String>) -> Result<Value, ApiError> {
    let selector = Selector::parse(
        q.get("labelSelector").map(String::as_str),
        q.get("fieldSelector").map(String::as_str),
    )?;
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    // Continue tokens are `RV/NAMESPACE/NAME` of the last item sent: later pages show the
    // current state after that key (kube-apiserver would show the first page's snapshot).
    let (list_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let mut parts = token.splitn(3, '/');
            let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
            let rv = parts
                .next()
                .and_then(|rv| rv.parse::<u64>().ok())
                .ok_or_else(bad)?;
            let key = (
                parts.next().ok_or_else(bad)?.to_string(),
                parts.next().ok_or_else(bad)?.to_string(),
            );
            (rv, Some(key))
        }
        None => (state.rv, None),
    };
    let mut matching = state
        .list(&t.res, &t.namespace)
        .filter(|(key, o)| after.as_ref().is_none_or(|a| *key > a) && selector.matches(o));
    let items: Vec<(&(String, String), &Value)> = matching.by_ref().take(limit).collect();
    let remaining = matching.count();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let (true, Some(((ns, name), _))) = (remaining > 0, items.last()) {
        metadata["continue"] = json!(format!("{list_rv}/{ns}/{name}"));
        metadata["remainingItemCount"] = json!(remaining);
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|(_, o)| present(t, o.clone()))
        .collect();
    Ok(
        json!({"kind": format!("{}List", t.res.kind), "apiVersion": t.res.api_version(&t.version),
        "metadata": metadata, "items": items}),
    )
}

fn apply(
    state: &mut State,
    t: &Target,
    q: &HashMap<String, String>,
    body: &[u8],
    opts: WriteOptions,
) -> Result<(u16, Value), ApiError> {
    let (res, name) = (&t.res, t.name.clone().unwrap_or_default());
    let Some(manager) = q.get("fieldManager").filter(|m| !m.is_empty()) else {
        let err = crate::error::FieldError::required("fieldManager");
        return Err(ApiError::invalid("meta.k8s.io", "PatchOptions", "", &[err]));
    };
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the apply patch is not UTF-8"))?;
    let config: Value = serde_json::from_str(text)
        .or_else(|_| serde_saphyr::from_str(text))
        .map_err(|e| {
            ApiError::bad_request(format!("the apply patch is neither JSON nor YAML: {e}"))
        })?;
    let live = state.get(res, &t.namespace, &name).cloned();
    let on_status = t.subresource.as_deref() == Some("status");
    if on_status && live.is_none() {
        return Err(ApiError::not_found(&res.group, &res.plural, &name));
    }
    let scope = |p: &[String]| {
        let in_status = p.first().is_some_and(|f| f == "status");
        if on_status {
            in_status
        } else {
            !(res.status && in_status)
        }
    };
    let api_version = res.api_version(&t.version);
    let now = now();
    // Custom resources say in their schema which lists are granular; built-in kinds (no
    // schema here) use the strategic-merge keys.
    let schema = res.schemas.get(&t.version);
    let list_keys = |p: &[String]| match schema {
        Some(s) => s.list_map_keys(p),
        None => patch::builtin_list_keys(p),
    };
    let req = ApplyRequest {
        manager,
        force: q.get("force").is_some_and(|f| f == "true"),
        subresource: t.subresource.as_deref(),
        api_version: &api_version,
        now: &now,
        scope: &scope,
        list_keys: &list_keys,
    };
    let merged = patch::apply(live.as_ref(), &config, &req).map_err(|conflicts| {
        let pairs: Vec<(String, String)> =
            conflicts.into_iter().map(|c| (c.manager, c.path)).collect();
        ApiError::apply_conflict(&res.group, &res.plural, &name, &pairs)
    })?;
    match live {
        None => Ok((201, state.create(t, merged, opts)?)),
        Some(_) => Ok((200, state.update(t, merged, opts)?)),
    }
}

/// Counts open watch streams for [`crate::TestServer::watch_count`].
struct WatchGuard(Arc<Shared>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watches.fetch_sub(1, Ordering::SeqCst);
    }
}

fn start_watch(
    shared: &Arc<Shared>,
    state: &mut State,
    mut stop: watch::Receiver<bool>,
    t: Target,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let selector = Selector::parse(
        q.get("labelSelector").map(String::as_str),
        q.get("fieldSelector").map(String::as_str),
    )?;
    let initial_events = q.get("sendInitialEvents").is_some_and(|s| s == "true");
    let rv = match q.get("resourceVersion").map(String::as_str) {
        _ if initial_events => None,
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = Duration::from_secs(
        q.get("timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .unwrap_or(3600),
    );
    let (tx, out) = mpsc::channel::<Bytes>(256);
    let mut first = Vec::new();
    let mut last_rv = state.rv;
    let mut rx = match state.watch(&t, rv, &selector) {
        Ok((initial, rx)) => {
            first.extend(
                initial
                    .into_iter()
                    .map(|(kind, o)| line(kind, present(&t, o))),
            );
            if initial_events {
                first.push(bookmark(&t, last_rv, true));
            }
            Some(rx)
        }
        // As kube-apiserver's watch cache: 200 with an ERROR event, not an HTTP error.
        Err(e) => {
            first.push(line("ERROR", e.status()));
            None
        }
    };
    shared.watches.fetch_add(1, Ordering::SeqCst);
    let guard = WatchGuard(shared.clone());
    let interval = shared.bookmark_interval;
    tokio::spawn(async move {
        let _guard = guard;
        for l in first {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        let Some(rx) = rx.as_mut() else { return };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        if *stop.borrow() {
            return;
        }
        loop {
            let out = tokio::select! {
                _ = tx.closed() => return,
                _ = stop.changed() => return,
                _ = &mut deadline => return,
                _ = ticker.tick(), if bookmarks => bookmark(&t, last_rv, false),
                msg = rx.recv() => match msg {
                    Ok(Broadcast::Event(e)) => {
                        last_rv = e.rv;
                        match translate(&e, &t, &selector) {
                            Some((kind, o)) => line(kind, present(&t, o)),
                            None => continue,
                        }
                    }
                    Ok(Broadcast::Compacted) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        let gone = ApiError::gone(format!("too old resource version: {last_rv}"));
                        _ = tx.send(line("ERROR", gone.status())).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(out, |mut out| async {
        out.recv()
            .await
            .map(|l| (Ok::<_, std::convert::Infallible>(l), out))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn line(kind: &str, object: Value) -> Bytes {
    Bytes::from(format!("{}\n", json!({"type": kind, "object": object})))
}

/// A BOOKMARK event; `initial_end` marks the end of `sendInitialEvents`' initial state.
fn bookmark(t: &Target, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        json!({"kind": t.res.kind, "apiVersion": t.res.api_version(&t.version), "metadata": meta}),
    )
}

/// Parses a query string; `+` is a space and `%XX` a byte, as in HTML forms.
fn query(raw: &str) -> HashMap<String, String> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let (mut out, mut i) = (Vec::with_capacity(bytes.len()), 0);
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                (b'+', _) => out.push(b' '),
                (b, _) => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}
