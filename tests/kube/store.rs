//! The object store: every object of every kind, one cluster-wide `resourceVersion` counter,
//! and a bounded history of changes that watches replay.
//!
//! What each write does follows the generic registry of the real API server
//! (`k8s.io/apiserver/pkg/registry/generic/registry/store.go`) and the API conventions
//! (<https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md>,
//! <https://kubernetes.io/docs/reference/using-api/api-concepts/>):
//!
//! - **create:** `metadata.name` or `generateName` (5 random characters appended), the name
//!   validated (RFC 1123 subdomain; label for Namespaces; path segment for RBAC kinds); 409
//!   AlreadyExists; 404 when the namespace does not exist and 403 when it is terminating (the
//!   NamespaceLifecycle admission plugin); `uid`, `creationTimestamp`, `resourceVersion`, and
//!   `generation: 1` for kinds that keep one. With a status subresource, a create drops `status`.
//! - **update (PUT and every PATCH):** 404 when absent (unless the kind allows create-on-update);
//!   a `resourceVersion` in the new object that differs from the stored one is 409 Conflict ("the
//!   object has been modified"), none means an unconditional update; `uid`, `creationTimestamp`,
//!   `deletionTimestamp` and `generation` are the server's. With a status subresource, a write to
//!   the object keeps the stored `status` and a write to `/status` keeps everything but `status`
//!   (the apiextensions status strategy: metadata too). `generation` is bumped when anything but
//!   metadata (and status, for kinds with the subresource) changed. An update that changes nothing
//!   is not written: same `resourceVersion`, no watch event.
//! - **finalizers:** DELETE of an object with finalizers only sets `deletionTimestamp` (and
//!   `deletionGracePeriodSeconds: 0`); the update that removes the last finalizer deletes it; an
//!   object being deleted accepts no new finalizer (422).
//!   (<https://kubernetes.io/docs/concepts/overview/working-with-objects/finalizers/>)
//! - **garbage collection:** an object all of whose `ownerReferences` name uids that no longer
//!   exist is deleted (background propagation); `propagationPolicy: Orphan` strips the references
//!   instead, and `Foreground` keeps the owner (finalizer `foregroundDeletion`) until its
//!   dependents are gone. (<https://kubernetes.io/docs/concepts/architecture/garbage-collection/>)
//! - **namespaces:** a new Namespace gets the `kubernetes.io/metadata.name` label, `spec.finalizers:
//!   [kubernetes]`, `status.phase: Active`, a `default` ServiceAccount and the `kube-root-ca.crt`
//!   ConfigMap; deleting one makes it `Terminating`, deletes everything in it, and removes it once
//!   empty. (<https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/>)
//! - **CRDs:** a stored CRD gets `status.acceptedNames` and the `NamesAccepted` and `Established`
//!   conditions and is served at once; deleting one deletes its custom resources first
//!   (`customresourcecleanup.apiextensions.k8s.io` finalizer).
//! - **Secrets:** `stringData` is merged into `data` (base64) and not stored; `data` must be base64;
//!   `type` defaults to `Opaque` and is immutable.
//!
//! The per-kind rules (names, defaults, validation, immutable fields) are in [`super::kinds`].

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::Status;
use super::kinds::{
    create_rules, event_from_core, event_to_core, kind_rules, name_error, update_rules,
    validate_builtin, validate_labels,
};
use super::resources::{self, ResourceInfo};
use super::schema::Cause;
use super::selector::{FieldSelector, LabelSelector};

/// How many changes the history keeps; a watch from an older resourceVersion gets 410 Gone.
pub const HISTORY: usize = 2000;

/// (group, resource, namespace or "", name).
pub type Key = (String, String, String, String);

/// A watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub kind: ChangeKind,
    pub group: String,
    pub resource: String,
    pub namespace: String,
    pub object: Value,
    /// The object before the change (for MODIFIED), so a selector watch can tell an object that
    /// stopped matching (sent as DELETED) or started matching (sent as ADDED).
    pub previous: Option<Value>,
}

/// The committed changes a watch replays and the receiver of the later ones.
pub type Backlog = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The object (status kept where the kind has a status subresource).
    Main,
    /// The `status` subresource.
    Status,
}

/// Request options of a write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub now: Timestamp,
    pub dry_run: bool,
    /// `fieldValidation`: `Strict` fails on unknown fields, `Warn` (the default) warns, `Ignore`.
    pub field_validation: String,
    /// The write came through core/v1 Events: the legacy validation applies, not events.k8s.io's.
    pub legacy_event: bool,
}

/// A successful write: the object and the warnings for `Warning` headers.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
    pub created: bool,
}

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Change>>,
    /// Changes after this resourceVersion are all in `history`.
    oldest: u64,
    resources: Vec<ResourceInfo>,
    ca_pem: String,
    uids: u64,
}

/// The store, shared by every request.
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Change>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

pub fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn random_suffix(n: usize) -> String {
    // The alphabet of apimachinery's rand.String (no vowels, no confusable characters).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = vec![0u8; n];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

fn rv_of(object: &Value) -> &str {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    match &mut object["metadata"] {
        Value::Object(m) => m,
        // Just made an object above.
        _ => unreachable!("metadata is an object"),
    }
}

/// What a DELETE that cannot remove the object at once does (`BeforeDelete`): sets
/// `deletionTimestamp` and `deletionGracePeriodSeconds: 0`, and bumps a kept generation.
fn mark_deleted(object: &mut Value, now: Timestamp) {
    let meta = meta_mut(object);
    meta.insert("deletionTimestamp".into(), Value::String(rfc3339(now)));
    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
    if let Some(generation) = meta
        .get("generation")
        .and_then(Value::as_i64)
        .filter(|g| *g > 0)
    {
        meta.insert("generation".into(), json!(generation + 1));
    }
}

pub fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// ----- Status objects ------------------------------------------------------------------------

fn details(info: &ResourceInfo, name: &str) -> Value {
    json!({"name": name, "group": info.group, "kind": info.resource})
}

pub fn not_found(info: &ResourceInfo, name: &str) -> Status {
    super::status_with(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", info.group_resource()),
        Some(details(info, name)),
    )
}

fn namespace_not_found(ns: &str) -> Status {
    super::status_with(
        404,
        "NotFound",
        &format!("namespaces \"{ns}\" not found"),
        Some(json!({"name": ns, "kind": "namespaces"})),
    )
}

fn already_exists(info: &ResourceInfo, name: &str) -> Status {
    super::status_with(
        409,
        "AlreadyExists",
        &format!("{} \"{name}\" already exists", info.group_resource()),
        Some(details(info, name)),
    )
}

fn conflict(info: &ResourceInfo, name: &str, why: &str) -> Status {
    super::status_with(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            info.group_resource()
        ),
        Some(details(info, name)),
    )
}

const MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// 422 Invalid with `details.causes`.
pub fn invalid(info: &ResourceInfo, name: &str, causes: &[Cause]) -> Status {
    let text = if causes.len() == 1 {
        causes[0].message.clone()
    } else {
        format!(
            "[{}]",
            causes
                .iter()
                .map(|c| c.message.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let list: Vec<Value> = causes
        .iter()
        .map(|c| {
            // A cause's message is the error without its field (`ErrorBody`); the summary has both.
            let body = c
                .message
                .strip_prefix(&format!("{}: ", c.field))
                .unwrap_or(&c.message);
            json!({"reason": c.reason, "message": body, "field": c.field})
        })
        .collect();
    super::status_with(
        422,
        "Invalid",
        &format!("{} \"{name}\" is invalid: {text}", info.group_kind()),
        Some(json!({"name": name, "group": info.group, "kind": info.kind, "causes": list})),
    )
}

pub fn field_invalid(field: &str, value: &Value, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        field: field.into(),
        message: format!("{field}: Invalid value: {value}: {detail}"),
    }
}

pub fn bad_request(message: &str) -> Status {
    super::status_with(400, "BadRequest", message, None)
}

fn forbidden(info: &ResourceInfo, name: &str, message: &str) -> Status {
    super::status_with(
        403,
        "Forbidden",
        &format!(
            "{} \"{name}\" is forbidden: {message}",
            info.group_resource()
        ),
        Some(details(info, name)),
    )
}

/// 410 Gone for a resourceVersion older than the history.
pub fn expired(requested: u64, oldest: u64) -> Status {
    super::status_with(
        410,
        "Expired",
        &format!("too old resource version: {requested} ({oldest})"),
        None,
    )
}

// ----- names -----------------------------------------------------------------------------------

/// The ObjectMeta fields; others are dropped as the typed decoder drops them.
const META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Everything but metadata (and status when it is a subresource), for the generation rule.
fn spec_part(info: &ResourceInfo, object: &Value) -> Value {
    let mut copy = object.clone();
    if let Value::Object(map) = &mut copy {
        map.remove("metadata");
        map.remove("apiVersion");
        map.remove("kind");
        if info.status {
            map.remove("status");
        }
    }
    copy
}

/// The object without the fields the server sets on every write, to tell a no-op update.
fn comparable(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(Value::Object(meta)) = copy.get_mut("metadata") {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    copy
}

impl Inner {
    fn next_uid(&mut self) -> String {
        self.uids += 1;
        let mut bytes = [0u8; 6];
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        let tail: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("{:08x}-0000-4000-8000-{tail}", self.uids)
    }

    fn info(&self, group: &str, resource: &str) -> Option<ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.resource == resource)
            .cloned()
    }

    fn rebuild_resources(&mut self) {
        let mut list = resources::builtin_resources();
        for ((group, resource, _, _), crd) in &self.objects {
            if group == "apiextensions.k8s.io"
                && resource == "customresourcedefinitions"
                && let Ok(mut served) = resources::from_crd(crd)
            {
                list.append(&mut served);
            }
        }
        self.resources = list;
    }

    fn commit(
        &mut self,
        tx: &broadcast::Sender<Arc<Change>>,
        key: &Key,
        kind: ChangeKind,
        mut object: Value,
        previous: Option<Value>,
    ) -> Value {
        self.rv += 1;
        meta_mut(&mut object).insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        match kind {
            ChangeKind::Deleted => {
                self.objects.remove(key);
            }
            _ => {
                self.objects.insert(key.clone(), object.clone());
            }
        }
        let change = Arc::new(Change {
            rv: self.rv,
            kind,
            group: key.0.clone(),
            resource: key.1.clone(),
            namespace: key.2.clone(),
            object: object.clone(),
            previous,
        });
        self.history.push_back(Arc::clone(&change));
        while self.history.len() > HISTORY {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest = dropped.rv;
            }
        }
        let _ = tx.send(change);
        if key.0 == "apiextensions.k8s.io" && key.1 == "customresourcedefinitions" {
            self.rebuild_resources();
        }
        object
    }

    fn namespace_state(&self, ns: &str) -> Option<&Value> {
        self.objects.get(&(
            String::new(),
            "namespaces".into(),
            String::new(),
            ns.to_owned(),
        ))
    }

    /// Prepares a new or updated object of `info`: type check, metadata shape, kind rules,
    /// schema (prune, default, validate), name and label validation.
    fn prepare(
        &self,
        info: &ResourceInfo,
        name: &str,
        object: &mut Value,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> Result<(), Status> {
        if !object.is_object() {
            return Err(bad_request("the object to write must be a JSON object"));
        }
        let api_version = info.api_version();
        match object.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != api_version => {
                return Err(bad_request(&format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )));
            }
            _ => {}
        }
        match object.get("kind").and_then(Value::as_str) {
            Some(k) if k != info.kind => {
                return Err(bad_request(&format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    info.kind
                )));
            }
            _ => {}
        }
        object["apiVersion"] = Value::String(api_version);
        object["kind"] = Value::String(info.kind.clone());
        // Decoding: fields the type (or the CRD's schema) does not specify are dropped, and
        // reported per `fieldValidation`.
        let meta = meta_mut(object);
        let mut dropped: Vec<String> = meta
            .keys()
            .filter(|k| !META_FIELDS.contains(&k.as_str()))
            .map(|k| format!("metadata.{k}"))
            .collect();
        meta.retain(|k, _| META_FIELDS.contains(&k.as_str()));
        meta.remove("selfLink");
        if meta.get("labels").is_some_and(Value::is_null) {
            meta.remove("labels");
        }
        if meta.get("annotations").is_some_and(Value::is_null) {
            meta.remove("annotations");
        }
        let schema = info.custom.as_ref().and_then(|c| c.schema.as_ref());
        match schema {
            Some(schema) => dropped.extend(schema.prune(object)),
            None if info.custom.is_none() => {
                dropped.extend(super::typed::prune_unknown(
                    &info.group,
                    &info.resource,
                    object,
                ));
            }
            None => {}
        }
        if opts.field_validation == "Strict" && !dropped.is_empty() {
            return Err(bad_request(&format!(
                "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                info.kind,
                info.version,
                info.kind,
                dropped
                    .iter()
                    .map(|p| format!("unknown field \"{p}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if opts.field_validation == "Warn" {
            warnings.extend(dropped.iter().map(|p| format!("unknown field \"{p}\"")));
        }
        kind_rules(info, object, opts.legacy_event)?;
        let builtin = validate_builtin(info, object);
        if !builtin.is_empty() {
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or(name)
                .to_owned();
            return Err(invalid(info, &name, &builtin));
        }
        let mut causes = Vec::new();
        if let Some(schema) = schema {
            schema.default(object);
            causes.extend(schema.validate(object));
        }
        validate_labels(object, &mut causes);
        if !causes.is_empty() {
            return Err(invalid(info, name, &causes));
        }
        Ok(())
    }

    fn create(
        &mut self,
        tx: &broadcast::Sender<Arc<Change>>,
        info: &ResourceInfo,
        ns: &str,
        mut object: Value,
        opts: &WriteOptions,
    ) -> Result<Written, Status> {
        let mut warnings = Vec::new();
        let meta_name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let generate = object["metadata"]["generateName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = if meta_name.is_empty() && !generate.is_empty() {
            format!("{generate}{}", random_suffix(5))
        } else {
            meta_name
        };
        if name.is_empty() {
            return Err(invalid(
                info,
                "",
                &[Cause {
                    reason: "FieldValueRequired".into(),
                    field: "metadata.name".into(),
                    message: "metadata.name: Required value: name or generateName is required"
                        .into(),
                }],
            ));
        }
        if let Some(why) = name_error(info, &name) {
            return Err(invalid(
                info,
                &name,
                &[field_invalid(
                    "metadata.name",
                    &Value::String(name.clone()),
                    why,
                )],
            ));
        }
        if info.namespaced {
            match object["metadata"]["namespace"].as_str() {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
            match self.namespace_state(ns) {
                None => return Err(namespace_not_found(ns)),
                Some(n) if !n["metadata"]["deletionTimestamp"].is_null() => {
                    return Err(forbidden(
                        info,
                        &name,
                        &format!(
                            "unable to create new content in namespace {ns} because it is being terminated"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let key: Key = (
            info.group.clone(),
            info.resource.clone(),
            if info.namespaced {
                ns.to_owned()
            } else {
                String::new()
            },
            name.clone(),
        );
        if object["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(super::status_with(
                500,
                "InternalError",
                "Internal error occurred: resourceVersion should not be set on objects to be created",
                Some(
                    json!({"causes": [{"message": "resourceVersion should not be set on objects to be created"}]}),
                ),
            ));
        }
        if info.namespaced && object.is_object() {
            meta_mut(&mut object).insert("namespace".into(), Value::String(ns.to_owned()));
        }
        self.prepare(info, &name, &mut object, opts, &mut warnings)?;
        if self.objects.contains_key(&key) {
            return Err(already_exists(info, &name));
        }
        if info.status
            && info.custom.is_some()
            && let Value::Object(map) = &mut object
        {
            map.remove("status");
        }
        create_rules(info, &mut object, opts.now);
        let uid = self.next_uid();
        let meta = meta_mut(&mut object);
        meta.insert("name".into(), Value::String(name));
        if info.namespaced {
            meta.insert("namespace".into(), Value::String(ns.to_owned()));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), Value::String(uid));
        meta.insert("creationTimestamp".into(), Value::String(rfc3339(opts.now)));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.remove("resourceVersion");
        if info.generation {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        if opts.dry_run {
            return Ok(Written {
                object,
                warnings,
                created: true,
            });
        }
        let object = self.commit(tx, &key, ChangeKind::Added, object, None);
        if info.group.is_empty() && info.resource == "namespaces" {
            self.seed_namespace(tx, &key.3, opts.now);
        }
        // A dependent whose owners are all gone already is collected at once.
        if object["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            self.settle(tx, opts.now);
        }
        Ok(Written {
            object,
            warnings,
            created: true,
        })
    }

    /// What the namespace controllers add to a new namespace.
    fn seed_namespace(&mut self, tx: &broadcast::Sender<Arc<Change>>, ns: &str, now: Timestamp) {
        let opts = WriteOptions {
            now,
            dry_run: false,
            field_validation: "Ignore".into(),
            legacy_event: false,
        };
        let ca = self.ca_pem.clone();
        if let Some(sa) = self.info("", "serviceaccounts") {
            let _ = self.create(tx, &sa, ns, json!({"metadata": {"name": "default"}}), &opts);
        }
        if let Some(cm) = self.info("", "configmaps") {
            let _ = self.create(
                tx,
                &cm,
                ns,
                json!({"metadata": {"name": "kube-root-ca.crt",
                    "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                    "data": {"ca.crt": ca}}),
                &opts,
            );
        }
    }

    /// Update (PUT or PATCH): `change` makes the new object from the stored one.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        tx: &broadcast::Sender<Arc<Change>>,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        part: Part,
        change: &mut dyn FnMut(Option<&Value>) -> Result<Value, Status>,
        opts: &WriteOptions,
    ) -> Result<Written, Status> {
        let key: Key = (
            info.group.clone(),
            info.resource.clone(),
            if info.namespaced {
                ns.to_owned()
            } else {
                String::new()
            },
            name.to_owned(),
        );
        let Some(old) = self.objects.get(&key).cloned() else {
            if info.create_on_update && part == Part::Main {
                let object = change(None)?;
                return self.create(tx, info, ns, object, opts);
            }
            return Err(not_found(info, name));
        };
        let mut object = change(Some(&old))?;
        if !object.is_object() {
            return Err(bad_request("the object to write must be a JSON object"));
        }
        match object["metadata"]["name"].as_str() {
            Some(n) if n != name => {
                return Err(bad_request(&format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            None if !object["metadata"]["name"].is_null() => {
                return Err(bad_request("metadata.name must be a string"));
            }
            _ => {}
        }
        if info.namespaced {
            match object["metadata"]["namespace"].as_str() {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
        }
        let sent_rv = rv_of(&object).to_owned();
        if !sent_rv.is_empty() && sent_rv != rv_of(&old) {
            return Err(conflict(info, name, MODIFIED));
        }
        match object["metadata"]["uid"].as_str() {
            Some(uid) if !uid.is_empty() && Some(uid) != old["metadata"]["uid"].as_str() => {
                return Err(conflict(
                    info,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old["metadata"]["uid"].as_str().unwrap_or_default()
                    ),
                ));
            }
            _ => {}
        }
        // The status subresource: each side keeps the other's part.
        if info.status {
            match part {
                Part::Main => match old.get("status") {
                    Some(status) => object["status"] = status.clone(),
                    None => {
                        if let Value::Object(map) = &mut object {
                            map.remove("status");
                        }
                    }
                },
                Part::Status => {
                    let status = object.get("status").cloned();
                    object = old.clone();
                    match status {
                        Some(s) => object["status"] = s,
                        None => {
                            if let Value::Object(map) = &mut object {
                                map.remove("status");
                            }
                        }
                    }
                }
            }
        }
        let mut warnings = Vec::new();
        if info.namespaced {
            meta_mut(&mut object).insert("namespace".into(), Value::String(ns.to_owned()));
        }
        self.prepare(info, name, &mut object, opts, &mut warnings)?;
        update_rules(info, &old, &mut object)?;
        // The server's fields.
        let meta = meta_mut(&mut object);
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old["metadata"].get(field) {
                Some(v) => {
                    meta.insert(field.into(), v.clone());
                }
                None => {
                    meta.remove(field);
                }
            }
        }
        meta.insert("name".into(), Value::String(name.to_owned()));
        if info.namespaced {
            meta.insert("namespace".into(), Value::String(ns.to_owned()));
        }
        meta.insert(
            "resourceVersion".into(),
            old["metadata"]["resourceVersion"].clone(),
        );
        if !old["metadata"]["deletionTimestamp"].is_null() {
            let before: BTreeSet<String> = finalizers(&old).into_iter().collect();
            let added: Vec<String> = finalizers(&object)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(invalid(
                    info,
                    name,
                    &[Cause {
                        reason: "FieldValueForbidden".into(),
                        field: "metadata.finalizers".into(),
                        message: format!(
                            "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            added
                                .iter()
                                .map(|f| format!("{f:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }],
                ));
            }
        }
        if info.generation && spec_part(info, &old) != spec_part(info, &object) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            meta_mut(&mut object).insert("generation".into(), json!(generation));
        }
        if comparable(&old) == comparable(&object) {
            return Ok(Written {
                object: old,
                warnings,
                created: false,
            });
        }
        if opts.dry_run {
            return Ok(Written {
                object,
                warnings,
                created: false,
            });
        }
        // Removing the last finalizer of an object being deleted deletes it.
        if !object["metadata"]["deletionTimestamp"].is_null()
            && finalizers(&object).is_empty()
            && !is_namespace(info)
        {
            let object = self.commit(tx, &key, ChangeKind::Deleted, object, Some(old));
            self.settle(tx, opts.now);
            return Ok(Written {
                object,
                warnings,
                created: false,
            });
        }
        let object = self.commit(tx, &key, ChangeKind::Modified, object, Some(old));
        self.settle(tx, opts.now);
        Ok(Written {
            object,
            warnings,
            created: false,
        })
    }

    fn delete(
        &mut self,
        tx: &broadcast::Sender<Arc<Change>>,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        options: &Value,
        opts: &WriteOptions,
    ) -> Result<Value, Status> {
        let key: Key = (
            info.group.clone(),
            info.resource.clone(),
            if info.namespaced {
                ns.to_owned()
            } else {
                String::new()
            },
            name.to_owned(),
        );
        let Some(old) = self.objects.get(&key).cloned() else {
            return Err(not_found(info, name));
        };
        let pre = &options["preconditions"];
        if let Some(uid) = pre["uid"].as_str() {
            let actual = old["metadata"]["uid"].as_str().unwrap_or_default();
            if uid != actual {
                return Err(conflict(
                    info,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        if let Some(rv) = pre["resourceVersion"].as_str() {
            let actual = rv_of(&old);
            if rv != actual {
                return Err(conflict(
                    info,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                    ),
                ));
            }
        }
        if opts.dry_run {
            return Ok(old);
        }
        if is_namespace(info) && matches!(name, "default" | "kube-system" | "kube-public") {
            return Err(forbidden(info, name, "this namespace may not be deleted"));
        }
        let uid = old["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let orphan = options["propagationPolicy"].as_str() == Some("Orphan")
            || options["orphanDependents"].as_bool() == Some(true);
        if orphan {
            self.orphan_dependents(tx, &uid);
        }
        let being_deleted = !old["metadata"]["deletionTimestamp"].is_null();
        let mut old = old;
        if options["propagationPolicy"].as_str() == Some("Foreground")
            && !being_deleted
            && !is_namespace(info)
            && self.objects.values().any(|o| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == json!(uid)))
            })
        {
            // Foreground: the owner stays, marked, until its dependents are gone.
            let mut f = finalizers(&old);
            f.push(FOREGROUND.into());
            old["metadata"]["finalizers"] = json!(f);
        }
        if is_namespace(info) {
            if being_deleted {
                return Ok(old);
            }
            let mut object = old.clone();
            mark_deleted(&mut object, opts.now);
            object["status"]["phase"] = json!("Terminating");
            let object = self.commit(tx, &key, ChangeKind::Modified, object, Some(old));
            self.settle(tx, opts.now);
            return Ok(self.objects.get(&key).cloned().unwrap_or(object));
        }
        if !finalizers(&old).is_empty() {
            if being_deleted {
                return Ok(old);
            }
            let mut object = old.clone();
            mark_deleted(&mut object, opts.now);
            let object = self.commit(tx, &key, ChangeKind::Modified, object, Some(old));
            self.settle(tx, opts.now);
            return Ok(object);
        }
        let object = self.commit(tx, &key, ChangeKind::Deleted, old.clone(), Some(old));
        self.settle(tx, opts.now);
        if returns_deleted_object(info) {
            return Ok(object);
        }
        // The registry's finalizeDelete for kinds without ReturnDeletedObject.
        Ok(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": info.group, "kind": info.resource,
                        "uid": object["metadata"]["uid"]},
        }))
    }

    fn orphan_dependents(&mut self, tx: &broadcast::Sender<Arc<Change>>, uid: &str) {
        let dependents: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid)))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in dependents {
            if let Some(old) = self.objects.get(&key).cloned() {
                let mut object = old.clone();
                if let Some(Value::Array(refs)) = object["metadata"].get_mut("ownerReferences") {
                    refs.retain(|r| r["uid"].as_str() != Some(uid));
                }
                self.commit(tx, &key, ChangeKind::Modified, object, Some(old));
            }
        }
    }

    /// The controllers' work that follows a write, done at once: terminating namespaces
    /// emptied and removed, CRDs being deleted cleaned up, dependents of deleted owners collected.
    fn settle(&mut self, tx: &broadcast::Sender<Arc<Change>>, now: Timestamp) {
        let opts = WriteOptions {
            now,
            dry_run: false,
            field_validation: "Ignore".into(),
            legacy_event: false,
        };
        for _ in 0..64 {
            let mut work: Vec<(ResourceInfo, String, String)> = Vec::new();
            // Objects whose deletion step is done: (key, the finalizer that held it, or "" for
            // a namespace).
            let mut finish: Vec<(Key, &str)> = Vec::new();
            // Terminating namespaces.
            let terminating: Vec<String> = self
                .objects
                .iter()
                .filter(|((g, r, _, _), o)| {
                    g.is_empty()
                        && r == "namespaces"
                        && !o["metadata"]["deletionTimestamp"].is_null()
                })
                .map(|((_, _, _, n), _)| n.clone())
                .collect();
            for ns in &terminating {
                let content: Vec<Key> = self
                    .objects
                    .keys()
                    .filter(|k| &k.2 == ns)
                    .cloned()
                    .collect();
                if content.is_empty() {
                    finish.push((
                        (
                            String::new(),
                            "namespaces".into(),
                            String::new(),
                            ns.clone(),
                        ),
                        "",
                    ));
                }
                for key in content {
                    let being_deleted = self
                        .objects
                        .get(&key)
                        .is_some_and(|o| !o["metadata"]["deletionTimestamp"].is_null());
                    if let (false, Some(info)) = (being_deleted, self.info(&key.0, &key.1)) {
                        work.push((info, key.2.clone(), key.3.clone()));
                    }
                }
            }
            // CRDs being deleted.
            let crds: Vec<(Key, Value)> = self
                .objects
                .iter()
                .filter(|((g, r, _, _), o)| {
                    g == "apiextensions.k8s.io"
                        && r == "customresourcedefinitions"
                        && !o["metadata"]["deletionTimestamp"].is_null()
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (key, crd) in &crds {
                let group = crd["spec"]["group"].as_str().unwrap_or_default().to_owned();
                let plural = crd["spec"]["names"]["plural"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let instances: Vec<Key> = self
                    .objects
                    .keys()
                    .filter(|k| k.0 == group && k.1 == plural)
                    .cloned()
                    .collect();
                if instances.is_empty() && finalizers(crd).iter().any(|f| f == CRD_CLEANUP) {
                    finish.push((key.clone(), CRD_CLEANUP));
                }
                for k in instances {
                    let being_deleted = self
                        .objects
                        .get(&k)
                        .is_some_and(|o| !o["metadata"]["deletionTimestamp"].is_null());
                    if let (false, Some(info)) = (being_deleted, self.info(&k.0, &k.1)) {
                        work.push((info, k.2.clone(), k.3.clone()));
                    }
                }
            }
            // Foreground deletion: an owner holding `foregroundDeletion` waits for its dependents.
            let foreground: Vec<(Key, String)> = self
                .objects
                .iter()
                .filter(|(_, o)| finalizers(o).iter().any(|f| f == FOREGROUND))
                .map(|(k, o)| {
                    (
                        k.clone(),
                        o["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            for (key, uid) in &foreground {
                let dependents: Vec<Key> = self
                    .objects
                    .iter()
                    .filter(|(_, o)| {
                        o["metadata"]["ownerReferences"]
                            .as_array()
                            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == json!(uid)))
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                if dependents.is_empty() {
                    finish.push((key.clone(), FOREGROUND));
                }
                for k in dependents {
                    let being_deleted = self
                        .objects
                        .get(&k)
                        .is_some_and(|o| !o["metadata"]["deletionTimestamp"].is_null());
                    if let (false, Some(info)) = (being_deleted, self.info(&k.0, &k.1)) {
                        work.push((info, k.2.clone(), k.3.clone()));
                    }
                }
            }
            // Garbage collection: every owner gone.
            let uids: HashSet<String> = self
                .objects
                .values()
                .filter_map(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
                .collect();
            for (key, object) in &self.objects {
                let Some(refs) = object["metadata"]["ownerReferences"].as_array() else {
                    continue;
                };
                if refs.is_empty() || !object["metadata"]["deletionTimestamp"].is_null() {
                    continue;
                }
                if refs
                    .iter()
                    .all(|r| !r["uid"].as_str().is_some_and(|u| uids.contains(u)))
                    && let Some(info) = self.info(&key.0, &key.1)
                {
                    work.push((info, key.2.clone(), key.3.clone()));
                }
            }
            if work.is_empty() && finish.is_empty() {
                return;
            }
            for (info, ns, name) in work {
                let _ = self.delete_one(tx, &info, &ns, &name, &opts);
            }
            for (key, done) in finish {
                if let Some(old) = self.objects.get(&key).cloned() {
                    if done.is_empty() {
                        self.commit(tx, &key, ChangeKind::Deleted, old.clone(), Some(old));
                    } else {
                        // The controller's finalizer is done.
                        let mut object = old.clone();
                        if let Some(Value::Array(f)) = object["metadata"].get_mut("finalizers") {
                            f.retain(|x| x.as_str() != Some(done));
                        }
                        let kind = if finalizers(&object).is_empty() {
                            ChangeKind::Deleted
                        } else {
                            ChangeKind::Modified
                        };
                        self.commit(tx, &key, kind, object, Some(old));
                    }
                }
            }
        }
    }

    /// A delete without the settle step (settle calls it).
    fn delete_one(
        &mut self,
        tx: &broadcast::Sender<Arc<Change>>,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &WriteOptions,
    ) -> Result<(), Status> {
        let key: Key = (
            info.group.clone(),
            info.resource.clone(),
            ns.to_owned(),
            name.to_owned(),
        );
        let Some(old) = self.objects.get(&key).cloned() else {
            return Err(not_found(info, name));
        };
        if finalizers(&old).is_empty() && !is_namespace(info) {
            self.commit(tx, &key, ChangeKind::Deleted, old.clone(), Some(old));
        } else if old["metadata"]["deletionTimestamp"].is_null() {
            let mut object = old.clone();
            mark_deleted(&mut object, opts.now);
            if is_namespace(info) {
                object["status"]["phase"] = json!("Terminating");
            }
            self.commit(tx, &key, ChangeKind::Modified, object, Some(old));
        }
        Ok(())
    }
}

pub const CRD_CLEANUP: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The finalizer of an owner in foreground deletion (`metav1.FinalizerDeleteDependents`).
const FOREGROUND: &str = "foregroundDeletion";

/// Whether an immediate DELETE answers with the deleted object (the registries that set
/// `ReturnDeletedObject`: pods, services, service accounts, custom resources) or with a Success
/// Status.
fn returns_deleted_object(info: &ResourceInfo) -> bool {
    info.custom.is_some()
        || (info.group.is_empty()
            && matches!(
                info.resource.as_str(),
                "pods" | "services" | "serviceaccounts"
            ))
}

fn is_namespace(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.resource == "namespaces"
}

impl Store {
    /// An empty cluster: the four namespaces of a fresh cluster, each with its `default`
    /// ServiceAccount and `kube-root-ca.crt`, and the objects of `seed` (bootstrap RBAC, CRDs).
    pub fn new(ca_pem: &str, now: Timestamp) -> Arc<Self> {
        let (tx, _) = broadcast::channel(16_384);
        let store = Arc::new(Self {
            inner: Mutex::new(Inner {
                rv: 1000,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                oldest: 1000,
                resources: resources::builtin_resources(),
                ca_pem: ca_pem.to_owned(),
                uids: 0,
            }),
            tx,
        });
        if let Some(ns) = store.resource("", "v1", "namespaces") {
            for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let _ = store.create(
                    &ns,
                    "",
                    json!({"metadata": {"name": name}}),
                    &WriteOptions {
                        now,
                        dry_run: false,
                        field_validation: "Ignore".into(),
                        legacy_event: false,
                    },
                );
            }
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The served resource `group/version/resource`.
    pub fn resource(&self, group: &str, version: &str, resource: &str) -> Option<ResourceInfo> {
        self.lock()
            .resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.resource == resource)
            .cloned()
    }

    /// Every served resource.
    pub fn resources(&self) -> Vec<ResourceInfo> {
        self.lock().resources.clone()
    }

    /// The newest resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// Drops the whole watch history (what etcd compaction does), so a watch from any earlier
    /// resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.oldest = inner.rv;
    }

    /// The object as `info` shows it: `apiVersion` set to the requested version (no conversion:
    /// the CRDs' `None` strategy), or converted for a view (core/v1 Events).
    pub fn as_version(info: &ResourceInfo, mut object: Value) -> Value {
        if object["kind"] == "Status" {
            return object;
        }
        if info.view_of.is_some() {
            return event_to_core(&object);
        }
        object["apiVersion"] = Value::String(info.api_version());
        object
    }

    /// The resource that stores `info`'s objects (itself, or what it is a view of).
    fn storage(&self, info: &ResourceInfo) -> ResourceInfo {
        match &info.view_of {
            Some((group, resource)) => self
                .lock()
                .info(group, resource)
                .unwrap_or_else(|| info.clone()),
            None => info.clone(),
        }
    }

    fn select(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        inner: &Inner,
    ) -> Vec<Value> {
        let (group, resource) = info
            .view_of
            .clone()
            .unwrap_or_else(|| (info.group.clone(), info.resource.clone()));
        inner
            .objects
            .iter()
            .filter(|((g, r, n, _), _)| {
                g == &group && r == &resource && ns.is_none_or(|ns| ns == n)
            })
            .map(|(_, o)| Self::as_version(info, o.clone()))
            .filter(|o| labels.matches(&super::selector::labels(o)) && fields.matches(o))
            .collect()
    }

    /// The matching objects as they were at resourceVersion `rv` (the current state with every
    /// later change undone from the history), for continue tokens and
    /// `resourceVersionMatch=Exact`; None when `rv` is older than the history.
    pub fn list_at(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        rv: u64,
    ) -> Option<Vec<Value>> {
        let inner = self.lock();
        if rv < inner.oldest || rv > inner.rv {
            return None;
        }
        let (group, resource) = info
            .view_of
            .clone()
            .unwrap_or_else(|| (info.group.clone(), info.resource.clone()));
        let mut objects: BTreeMap<(String, String), Value> = inner
            .objects
            .iter()
            .filter(|((g, r, _, _), _)| g == &group && r == &resource)
            .map(|((_, _, n, name), o)| ((n.clone(), name.clone()), o.clone()))
            .collect();
        for change in inner.history.iter().rev().take_while(|c| c.rv > rv) {
            if change.group != group || change.resource != resource {
                continue;
            }
            let name = change.object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let key = (change.namespace.clone(), name);
            match &change.previous {
                Some(previous) if change.kind != ChangeKind::Added => {
                    objects.insert(key, previous.clone());
                }
                _ => {
                    objects.remove(&key);
                }
            }
        }
        Some(
            objects
                .into_iter()
                .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
                .map(|(_, o)| Self::as_version(info, o))
                .filter(|o| labels.matches(&super::selector::labels(o)) && fields.matches(o))
                .collect(),
        )
    }

    pub fn get(&self, info: &ResourceInfo, ns: &str, name: &str) -> Result<Value, Status> {
        let storage = self.storage(info);
        let key: Key = (
            storage.group.clone(),
            storage.resource.clone(),
            if info.namespaced {
                ns.to_owned()
            } else {
                String::new()
            },
            name.to_owned(),
        );
        self.lock()
            .objects
            .get(&key)
            .cloned()
            .map(|o| Self::as_version(info, o))
            .ok_or_else(|| not_found(info, name))
    }

    /// The objects of `info` in `ns` (all namespaces when `None`) that match, and the list's
    /// resourceVersion.
    pub fn list(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = self.select(info, ns, labels, fields, &inner);
        (items, inner.rv)
    }

    pub fn create(
        &self,
        info: &ResourceInfo,
        ns: &str,
        object: Value,
        opts: &WriteOptions,
    ) -> Result<Written, Status> {
        if info.view_of.is_some() {
            let storage = self.storage(info);
            let opts = WriteOptions {
                legacy_event: true,
                ..opts.clone()
            };
            let mut written =
                self.lock()
                    .create(&self.tx, &storage, ns, event_from_core(&object), &opts)?;
            written.object = Self::as_version(info, written.object);
            return Ok(written);
        }
        let mut inner = self.lock();
        inner.create(&self.tx, info, ns, object, opts)
    }

    pub fn update(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        part: Part,
        change: &mut dyn FnMut(Option<&Value>) -> Result<Value, Status>,
        opts: &WriteOptions,
    ) -> Result<Written, Status> {
        if info.view_of.is_some() {
            let storage = self.storage(info);
            let opts = WriteOptions {
                legacy_event: true,
                ..opts.clone()
            };
            let mut through = |current: Option<&Value>| {
                let shown = current.map(event_to_core);
                change(shown.as_ref()).map(|o| event_from_core(&o))
            };
            let mut written =
                self.lock()
                    .update(&self.tx, &storage, ns, name, part, &mut through, &opts)?;
            written.object = Self::as_version(info, written.object);
            return Ok(written);
        }
        let mut inner = self.lock();
        inner.update(&self.tx, info, ns, name, part, change, opts)
    }

    pub fn delete(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        options: &Value,
        opts: &WriteOptions,
    ) -> Result<Value, Status> {
        let storage = self.storage(info);
        let mut inner = self.lock();
        inner
            .delete(&self.tx, &storage, ns, name, options, opts)
            .map(|o| Self::as_version(info, o))
    }

    /// The changes after `rv` and a receiver for those still to come, taken under one lock so
    /// none is missed or doubled; 410 Gone when `rv` is older than the history.
    pub fn watch_from(&self, rv: u64) -> Result<Backlog, Status> {
        let inner = self.lock();
        if rv < inner.oldest {
            return Err(expired(rv, inner.oldest));
        }
        let backlog = inner
            .history
            .iter()
            .filter(|c| c.rv > rv)
            .cloned()
            .collect();
        Ok((backlog, self.tx.subscribe()))
    }

    /// The current matching objects, their resourceVersion, and a receiver for the changes
    /// after it, under one lock (a watch from "" or "0", or with `sendInitialEvents`).
    pub fn watch_initial(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> (Vec<Value>, u64, broadcast::Receiver<Arc<Change>>) {
        let inner = self.lock();
        let items = self.select(info, ns, labels, fields, &inner);
        (items, inner.rv, self.tx.subscribe())
    }

    /// The oldest resourceVersion a watch or continue token may start from.
    pub fn oldest_rv(&self) -> u64 {
        self.lock().oldest
    }

    /// Objects of `group/resource` (any version), for the authorizer and admission.
    pub fn lookup_get(
        &self,
        group: &str,
        resource: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let key: Key = (
            group.to_owned(),
            resource.to_owned(),
            ns.unwrap_or_default().to_owned(),
            name.to_owned(),
        );
        self.lock().objects.get(&key).cloned()
    }

    pub fn lookup_list(&self, group: &str, resource: &str, ns: Option<&str>) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((g, r, n, _), _)| g == group && r == resource && ns.is_none_or(|ns| ns == n))
            .map(|(_, o)| o.clone())
            .collect()
    }
}

impl super::auth::Lookup for Store {
    fn get(
        &self,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.lookup_get(group, resource, namespace, name)
    }

    fn list(&self, group: &str, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        self.lookup_list(group, resource, namespace)
    }
}
