//! The object store and the write semantics of the API: one global resourceVersion counter
//! (as etcd's revision), a bounded history of changes that watches replay from, and
//! create / update / delete with kube-apiserver's metadata, status and finalizer rules.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::{ApiError, FieldError};
use crate::registry::{self, Resource};
use crate::selector::Selector;
use crate::{Request, now};

/// One committed change.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub key: String,
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Value,
    /// The object before a modification, so a watch with a selector can tell an object
    /// entering or leaving it (which it sees as ADDED / DELETED).
    pub prev: Option<Value>,
}

/// An event as one watch sees it: (`ADDED`/`MODIFIED`/`DELETED`, object).
pub(crate) type WatchEvent = (&'static str, Value);

/// What open watches receive.
#[derive(Debug, Clone)]
pub(crate) enum Broadcast {
    Event(Arc<Event>),
    /// The history was dropped: open watches end with 410 Gone.
    Compacted,
}

/// The request a verb works on: a resource at one version, in a namespace (empty for
/// cluster-scoped resources), maybe one object of it, maybe its subresource.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub res: Arc<Resource>,
    pub version: String,
    pub namespace: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Options of a write that change its outcome.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WriteOptions {
    pub dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields are an error instead of being pruned.
    pub strict: bool,
}

pub(crate) struct State {
    pub rv: u64,
    pub resources: Vec<Arc<Resource>>,
    objects: HashMap<String, BTreeMap<(String, String), Value>>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Watches must start at or after this resourceVersion.
    compacted: u64,
    pub tx: broadcast::Sender<Broadcast>,
    rng: u64,
    pub failures: usize,
    /// (resource plural, subresource) that writes are refused on with 403.
    pub forbidden: Vec<(String, Option<String>)>,
    pub requests: Vec<Request>,
}

impl State {
    pub fn new(history_limit: usize) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let mut state = Self {
            rv: 0,
            resources: registry::builtins(),
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            tx: broadcast::channel(4096).0,
            rng: seed,
            failures: 0,
            forbidden: Vec::new(),
            requests: Vec::new(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let target = state
                .target("", "namespaces", "", None)
                .expect("namespaces is a built-in resource");
            let object = json!({"metadata": {"name": ns}});
            state
                .create(&target, object, WriteOptions::default())
                .expect("a fresh store accepts the default namespaces");
        }
        state
    }

    /// Finds a resource by group and plural (any served version).
    pub fn resource(&self, group: &str, plural: &str) -> Option<&Arc<Resource>> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.plural == plural)
    }

    fn target(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: Option<&str>,
    ) -> Option<Target> {
        let res = self.resource(group, plural)?.clone();
        let version = res.versions.first()?.clone();
        Some(Target {
            res,
            version,
            namespace: namespace.into(),
            name: name.map(String::from),
            subresource: None,
        })
    }

    pub fn get(&self, res: &Resource, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&res.key())?
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Objects of `res` in `namespace` (all namespaces when empty), in key order.
    pub fn list<'a>(
        &'a self,
        res: &Resource,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a (String, String), &'a Value)> {
        self.objects
            .get(&res.key())
            .into_iter()
            .flatten()
            .filter(move |((ns, _), _)| namespace.is_empty() || ns == namespace)
    }

    fn random(&mut self) -> u64 {
        // splitmix64: names and uids need to be unique, not unpredictable.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uid(&mut self) -> String {
        let (a, b) = (self.random(), self.random());
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    /// Records a change: bumps the resourceVersion, stores it, keeps it in the history and
    /// sends it to open watches.
    fn commit(
        &mut self,
        t: &Target,
        kind: &'static str,
        mut object: Value,
        prev: Option<Value>,
    ) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let slot = self.objects.entry(t.res.key()).or_default();
        let key = (t.namespace.clone(), name);
        if kind == "DELETED" {
            slot.remove(&key);
        } else {
            slot.insert(key, object.clone());
        }
        let event = Arc::new(Event {
            rv: self.rv,
            key: t.res.key(),
            namespace: t.namespace.clone(),
            kind,
            object: object.clone(),
            prev,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            self.compacted = self.history.pop_front().map_or(self.compacted, |e| e.rv);
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(Broadcast::Event(event));
        object
    }

    /// Drops the history; open watches and watches from any earlier version get 410 Gone.
    pub fn compact(&mut self) {
        // A revision of its own, so that a list right after this returns a version that
        // can be watched from while every version handed out before cannot.
        self.rv += 1;
        self.compacted = self.rv;
        self.history.clear();
        let _ = self.tx.send(Broadcast::Compacted);
    }

    /// Starts a watch from `rv` (`None`: the current state as ADDED events, then changes).
    /// Returns the events to send first and the receiver for later ones.
    pub fn watch(
        &self,
        t: &Target,
        rv: Option<u64>,
        selector: &Selector,
    ) -> Result<(Vec<WatchEvent>, broadcast::Receiver<Broadcast>), ApiError> {
        let initial = match rv {
            Some(rv) if rv < self.compacted => {
                return Err(ApiError::gone(format!(
                    "too old resource version: {rv} ({})",
                    self.compacted
                )));
            }
            Some(rv) => self
                .history
                .iter()
                .filter(|e| e.rv > rv)
                .filter_map(|e| translate(e, t, selector))
                .collect(),
            None => {
                let objects = self
                    .list(&t.res, &t.namespace)
                    .map(|(_, o)| o)
                    .filter(|o| selector.matches(o));
                objects.map(|o| ("ADDED", o.clone())).collect()
            }
        };
        Ok((initial, self.tx.subscribe()))
    }

    pub fn create(
        &mut self,
        t: &Target,
        mut object: Value,
        opts: WriteOptions,
    ) -> Result<Value, ApiError> {
        let res = t.res.clone();
        if !object.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        check_identity(t, &mut object)?;
        let meta = &mut object["metadata"];
        if meta["name"].as_str().is_none_or(str::is_empty) {
            let Some(prefix) = meta["generateName"].as_str().map(String::from) else {
                let name_err = FieldError {
                    message: "Required value: name or generateName is required".into(),
                    ..FieldError::required("metadata.name")
                };
                return Err(ApiError::invalid(&res.group, &res.kind, "", &[name_err]));
            };
            let suffix: String = (0..5)
                .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[(self.random() % 27) as usize]))
                .collect();
            object["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
        }
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        check_name(&res, &name)?;
        if self.get(&res, &t.namespace, &name).is_some() {
            return Err(ApiError::already_exists(&res.group, &res.plural, &name));
        }
        if res.namespaced
            && self
                .objects
                .get("/namespaces")
                .is_none_or(|n| !n.contains_key(&(String::new(), t.namespace.clone())))
        {
            return Err(ApiError::not_found("", "namespaces", &t.namespace));
        }
        let uid = self.uid();
        let meta = object["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        for server_set in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
        ] {
            meta.remove(server_set);
        }
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.insert("generation".into(), json!(1));
        // As kube-apiserver's create strategies: status is the controllers' to write, except a
        // Node's (the kubelet registers its node with status) and a Namespace's phase.
        if res.status && res.kind != "Node" {
            object.as_object_mut().map(|o| o.remove("status"));
        }
        if res.kind == "Namespace" {
            object["status"] = json!({"phase": "Active"});
        }
        normalize_and_validate(t, &name, &mut object, None, opts)?;
        let crd = self.prepare_crd(&res, &name, &mut object)?;
        if opts.dry_run {
            return Ok(object);
        }
        let stored = self.commit(t, "ADDED", object, None);
        self.register(crd);
        Ok(stored)
    }

    /// PUT (and the end of every PATCH): `candidate` is the full new object.
    pub fn update(
        &mut self,
        t: &Target,
        mut candidate: Value,
        opts: WriteOptions,
    ) -> Result<Value, ApiError> {
        let (res, name) = (t.res.clone(), t.name.clone().unwrap_or_default());
        let old = self
            .get(&res, &t.namespace, &name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, &name))?;
        if !candidate.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        check_identity(t, &mut candidate)?;
        let body_rv = candidate["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if !body_rv.is_empty() && body_rv != old["metadata"]["resourceVersion"] {
            let why = "the object has been modified; please apply your changes to the latest version and try again";
            return Err(ApiError::conflict(&res.group, &res.plural, &name, why));
        }
        let mut next = if t.subresource.as_deref() == Some("status") {
            let mut next = old.clone();
            set_or_remove(&mut next, "status", candidate.get("status").cloned());
            // Server-side apply to /status records its manager's fields like any write.
            if let Some(fields) = candidate["metadata"].get("managedFields") {
                next["metadata"]["managedFields"] = fields.clone();
            }
            next
        } else {
            if res.status {
                set_or_remove(&mut candidate, "status", old.get("status").cloned());
            }
            candidate
        };
        for server_set in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ] {
            set_or_remove(
                &mut next["metadata"],
                server_set,
                old["metadata"].get(server_set).cloned(),
            );
        }
        if next["metadata"].get("managedFields").is_none() {
            set_or_remove(
                &mut next["metadata"],
                "managedFields",
                old["metadata"].get("managedFields").cloned(),
            );
        }
        normalize_and_validate(t, &name, &mut next, Some(&old), opts)?;
        let crd = self.prepare_crd(&res, &name, &mut next)?;
        let spec_of = |o: &Value| {
            let mut o = o.clone();
            o.as_object_mut().map(|m| {
                (
                    m.remove("metadata"),
                    if res.status { m.remove("status") } else { None },
                )
            });
            o
        };
        if spec_of(&next) != spec_of(&old) {
            next["metadata"]["generation"] =
                json!(old["metadata"]["generation"].as_i64().unwrap_or(0) + 1);
        }
        if next == old {
            return Ok(old);
        }
        let finalized = next["metadata"]["deletionTimestamp"].is_string()
            && next["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty);
        if opts.dry_run {
            return Ok(next);
        }
        if finalized {
            return Ok(self.remove(t, next, Some(old)));
        }
        let stored = self.commit(t, "MODIFIED", next, Some(old));
        self.register(crd);
        Ok(stored)
    }

    /// DELETE with `DeleteOptions` (only `preconditions` and `dryRun` are honoured).
    pub fn delete(
        &mut self,
        t: &Target,
        options: &Value,
        opts: WriteOptions,
    ) -> Result<Value, ApiError> {
        let (res, name) = (t.res.clone(), t.name.clone().unwrap_or_default());
        let old = self
            .get(&res, &t.namespace, &name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, &name))?;
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            let want = &options["preconditions"][field];
            if want.is_string() && *want != old["metadata"][field] {
                let why = format!(
                    "Precondition failed: {label} in precondition: {}, {label} in object meta: {}",
                    want.as_str().unwrap_or_default(),
                    old["metadata"][field].as_str().unwrap_or_default()
                );
                return Err(ApiError::conflict(&res.group, &res.plural, &name, &why));
            }
        }
        let has_finalizers = old["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if opts.dry_run || (has_finalizers && old["metadata"]["deletionTimestamp"].is_string()) {
            return Ok(old);
        }
        if has_finalizers {
            let mut next = old.clone();
            next["metadata"]["deletionTimestamp"] = json!(now());
            next["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            return Ok(self.commit(t, "MODIFIED", next, Some(old)));
        }
        Ok(self.remove(t, old.clone(), Some(old)))
    }

    /// Removes an object for good, with what goes with it: a CRD's objects and resource, a
    /// Namespace's objects (finalizers of those are not waited for).
    fn remove(&mut self, t: &Target, object: Value, prev: Option<Value>) -> Value {
        let removed = self.commit(t, "DELETED", object, prev);
        let name = removed["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let doomed: Vec<(Target, Value)> = if t.res.is_crd() {
            let gone = self
                .resources
                .iter()
                .find(|r| format!("{}.{}", r.plural, r.group) == name)
                .cloned();
            self.resources
                .retain(|r| format!("{}.{}", r.plural, r.group) != name);
            gone.into_iter()
                .flat_map(|res| self.owned(&res, ""))
                .collect()
        } else if t.res.kind == "Namespace" && t.res.group.is_empty() {
            let namespaced: Vec<Arc<Resource>> = self
                .resources
                .iter()
                .filter(|r| r.namespaced)
                .cloned()
                .collect();
            namespaced
                .iter()
                .flat_map(|res| self.owned(res, &name))
                .collect()
        } else {
            Vec::new()
        };
        for (target, object) in doomed {
            self.commit(&target, "DELETED", object.clone(), Some(object));
        }
        removed
    }

    fn owned(&self, res: &Arc<Resource>, namespace: &str) -> Vec<(Target, Value)> {
        let version = res.versions.first().cloned().unwrap_or_default();
        self.list(res, namespace)
            .map(|((ns, name), o)| {
                let t = Target {
                    res: res.clone(),
                    version: version.clone(),
                    namespace: ns.clone(),
                    name: Some(name.clone()),
                    subresource: None,
                };
                (t, o.clone())
            })
            .collect()
    }

    /// For CRDs: checks the definition and fills in the status a registered CRD has.
    fn prepare_crd(
        &self,
        res: &Resource,
        name: &str,
        object: &mut Value,
    ) -> Result<Option<Resource>, ApiError> {
        if !res.is_crd() {
            return Ok(None);
        }
        let defined = registry::from_crd(object)
            .map_err(|errors| ApiError::invalid(&res.group, &res.kind, name, &errors))?;
        if self
            .resources
            .iter()
            .any(|r| r.group == defined.group && r.plural == defined.plural && r.schemas.is_empty())
        {
            let err = FieldError::invalid(
                "spec.names.plural",
                &json!(defined.plural),
                "is a built-in resource",
            );
            return Err(ApiError::invalid(&res.group, &res.kind, name, &[err]));
        }
        // Kept when the names did not change, so re-applying an unchanged CRD stores nothing.
        let status = registry::crd_status(object);
        let same = |k: &str| object["status"][k] == status[k];
        if !(same("acceptedNames") && same("storedVersions")) {
            object["status"] = status;
        }
        Ok(Some(defined))
    }

    fn register(&mut self, defined: Option<Resource>) {
        if let Some(defined) = defined {
            self.resources
                .retain(|r| !(r.group == defined.group && r.plural == defined.plural));
            self.resources.push(Arc::new(defined));
        }
    }
}

/// Translates a stored change into what one watch sees, or nothing.
pub(crate) fn translate(e: &Event, t: &Target, selector: &Selector) -> Option<WatchEvent> {
    if e.key != t.res.key() || !(t.namespace.is_empty() || t.namespace == e.namespace) {
        return None;
    }
    let now = selector.matches(&e.object);
    let before = e.prev.as_ref().map(|p| selector.matches(p));
    let kind = match (e.kind, before, now) {
        ("MODIFIED", Some(false), true) => "ADDED",
        ("MODIFIED", Some(true), false) => "DELETED",
        (kind, _, true) => kind,
        _ => return None,
    };
    Some((kind, e.object.clone()))
}

/// Fills in and checks apiVersion, kind and metadata.namespace against the URL.
fn check_identity(t: &Target, object: &mut Value) -> Result<(), ApiError> {
    let res = &t.res;
    if object["kind"].as_str().is_some_and(|k| k != res.kind) {
        return Err(ApiError::bad_request(format!(
            "the kind of the object ({}) does not match the URL's ({})",
            object["kind"], res.kind
        )));
    }
    object["kind"] = json!(res.kind);
    object["apiVersion"] = json!(res.api_version(&t.version));
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    let meta = &mut object["metadata"];
    if let (Some(body), Some(url)) = (meta["name"].as_str(), t.name.as_deref())
        && body != url
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body}) does not match the name on the URL ({url})"
        )));
    }
    let ns = meta["namespace"].as_str().unwrap_or_default();
    if res.namespaced {
        if !ns.is_empty() && ns != t.namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta["namespace"] = json!(t.namespace);
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    Ok(())
}

/// Names must be RFC 1123 subdomains (lowercase alphanumerics, `-` and `.`).
fn check_name(res: &Resource, name: &str) -> Result<(), ApiError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.len() <= 253
        && name.chars().all(ok_char)
        && ends_ok(name.chars().next())
        && ends_ok(name.chars().last())
    {
        return Ok(());
    }
    let detail = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
    Err(ApiError::invalid(
        &res.group,
        &res.kind,
        name,
        &[FieldError::invalid("metadata.name", &json!(name), detail)],
    ))
}

/// Custom objects only: prune, default, validate against the request version's schema.
fn normalize_and_validate(
    t: &Target,
    name: &str,
    object: &mut Value,
    old: Option<&Value>,
    opts: WriteOptions,
) -> Result<(), ApiError> {
    let Some(schema) = t.res.schemas.get(&t.version) else {
        return Ok(());
    };
    let pruned = schema.normalize(object);
    if opts.strict && !pruned.is_empty() {
        let fields: Vec<String> = pruned
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect();
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            fields.join(", ")
        )));
    }
    let errors = schema.validate(object, old);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&t.res.group, &t.res.kind, name, &errors))
    }
}

fn set_or_remove(object: &mut Value, key: &str, value: Option<Value>) {
    match (value, object.as_object_mut()) {
        (Some(v), Some(m)) => _ = m.insert(key.to_string(), v),
        (None, Some(m)) => _ = m.remove(key),
        _ => {}
    }
}
