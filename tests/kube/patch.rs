//! PATCH bodies, by `Content-Type`, as <https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/>
//! and the API concepts page describe them:
//!
//! - `application/merge-patch+json`: RFC 7386 (the `json-patch` crate's `merge`).
//! - `application/json-patch+json`: RFC 6902 (the `json-patch` crate's `patch`); a failed `test`
//!   or a path that does not exist is 422, as `applyJSPatch` answers.
//! - `application/strategic-merge-patch+json`: for built-in kinds only (custom resources answer
//!   415, as the real server does). Implemented: merge-patch semantics, plus lists merged by their
//!   `patchMergeKey` for the fields of the kinds served here (containers, env, volumes,
//!   volumeMounts, ports, conditions, ownerReferences, webhooks, …), primitive-list union for
//!   `finalizers`, and the directives `$patch: replace|delete|merge`, `$retainKeys`,
//!   `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>` (ordering ignored). This
//!   is what `kubectl apply` (client-side) sends for built-in kinds.
//! - `application/apply-patch+yaml` (server-side apply) is not implemented: rolegate does not
//!   use it, and the tests use client-side `kubectl apply`. It answers 415.

use serde_json::{Map, Value};

use super::Status;
use super::store::bad_request;

/// The patch types this server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
}

/// The patch type of a `Content-Type`, or the 415 Status.
///
/// # Errors
/// 415 UnsupportedMediaType naming the accepted types.
pub fn patch_type(content_type: &str, custom: bool) -> Result<PatchType, Status> {
    let base = content_type.split(';').next().unwrap_or_default().trim();
    let accepted = if custom {
        "application/json-patch+json, application/merge-patch+json"
    } else {
        "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
    };
    match base {
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/strategic-merge-patch+json" if !custom => Ok(PatchType::Strategic),
        _ => Err(super::status_with(
            415,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted}"
            ),
            None,
        )),
    }
}

/// Applies `body` of type `kind` to `current`.
///
/// # Errors
/// 400 for a body that is not a patch, 422 for a JSON patch that does not apply.
pub fn apply(kind: PatchType, current: &Value, body: &[u8]) -> Result<Value, Status> {
    let mut doc = current.clone();
    match kind {
        PatchType::Merge => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| bad_request(&format!("error decoding patch: {e}")))?;
            if !patch.is_object() {
                return Err(bad_request(
                    "json: cannot unmarshal into Go value of type map[string]interface {}",
                ));
            }
            json_patch::merge(&mut doc, &patch);
        }
        PatchType::Json => {
            let mut patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| bad_request(&format!("error decoding patch: {e}")))?;
            // As evanphx/json-patch (the API server's): `test` of a path that does not exist
            // against null passes (kube-runtime's finalizer() adds the first finalizer so).
            patch.0.retain(|op| {
                !matches!(op, json_patch::PatchOperation::Test(t)
                    if t.value.is_null() && doc.pointer(t.path.as_str()).is_none())
            });
            json_patch::patch(&mut doc, &patch.0)
                .map_err(|e| super::status_with(422, "Invalid", &e.to_string(), None))?;
        }
        PatchType::Strategic => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| bad_request(&format!("error decoding patch: {e}")))?;
            if !patch.is_object() {
                return Err(bad_request(
                    "json: cannot unmarshal into Go value of type map[string]interface {}",
                ));
            }
            strategic(&mut doc, &patch);
        }
    }
    Ok(doc)
}

/// The merge key of a list field, by field name (the `patchMergeKey` of the served kinds).
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "webhooks"
        | "secrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Primitive lists with `patchStrategy: merge`.
fn primitive_merge(field: &str) -> bool {
    matches!(field, "finalizers")
}

fn strategic(doc: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *doc = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch_map.clone();
        replacement.remove("$patch");
        *doc = Value::Object(replacement);
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Value::Object(doc_map) = doc else {
        return;
    };
    for (key, value) in patch_map {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(list_field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(existing)), Some(remove)) =
                (doc_map.get_mut(list_field), value.as_array())
            {
                existing.retain(|v| !remove.contains(v));
            }
            continue;
        }
        match value {
            Value::Null => {
                doc_map.remove(key);
            }
            Value::Object(inner)
                if inner.get("$patch").and_then(Value::as_str) == Some("delete") =>
            {
                doc_map.remove(key);
            }
            Value::Object(_) => {
                let entry = doc_map.entry(key.clone()).or_insert(Value::Null);
                if entry.is_object() {
                    strategic(entry, value);
                } else {
                    let mut fresh = Value::Object(Map::new());
                    strategic(&mut fresh, value);
                    *entry = fresh;
                }
            }
            Value::Array(items) => {
                let replace_all = items
                    .iter()
                    .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
                let merge_by = merge_key(key, items);
                match (doc_map.get_mut(key), merge_by, replace_all) {
                    (Some(Value::Array(existing)), Some(mk), false) => {
                        for item in items {
                            let id = item.get(mk);
                            let position = existing
                                .iter()
                                .position(|e| id.is_some() && e.get(mk) == id);
                            let delete =
                                item.get("$patch").and_then(Value::as_str) == Some("delete");
                            match (position, delete) {
                                (Some(p), true) => {
                                    existing.remove(p);
                                }
                                (None, true) => {}
                                (Some(p), false) => strategic(&mut existing[p], item),
                                (None, false) => {
                                    let mut fresh = Value::Object(Map::new());
                                    strategic(&mut fresh, item);
                                    existing.push(fresh);
                                }
                            }
                        }
                    }
                    (Some(Value::Array(existing)), None, false) if primitive_merge(key) => {
                        for item in items {
                            if !existing.contains(item) {
                                existing.push(item.clone());
                            }
                        }
                    }
                    _ => {
                        let cleaned: Vec<Value> = items
                            .iter()
                            .filter(|i| {
                                i.get("$patch").is_none()
                                    || i.as_object().is_some_and(|o| o.len() > 1)
                            })
                            .map(|i| {
                                let mut i = i.clone();
                                if let Value::Object(m) = &mut i {
                                    m.remove("$patch");
                                }
                                i
                            })
                            .collect();
                        doc_map.insert(key.clone(), Value::Array(cleaned));
                    }
                }
            }
            other => {
                doc_map.insert(key.clone(), other.clone());
            }
        }
    }
    if let Some(Value::Array(retain)) = patch_map.get("$retainKeys") {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        doc_map.retain(|k, _| keep.contains(&k.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let current = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
                             "metadata": {"finalizers": ["f1"]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "z"}]},
                           "metadata": {"finalizers": ["f2"]}});
        let out = apply(PatchType::Strategic, &current, patch.to_string().as_bytes()).unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], "x");
        assert_eq!(out["spec"]["containers"][1]["image"], "z");
        assert_eq!(out["metadata"]["finalizers"], json!(["f1", "f2"]));
    }
}
