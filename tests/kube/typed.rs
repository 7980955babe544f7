//! Unknown fields of built-in kinds. The real server decodes a built-in object into its Go type,
//! which drops every field the type does not have; with `fieldValidation=Strict` (kubectl's
//! default) an unknown field is a 400, with `Warn` a warning
//! (<https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation>). Here each
//! served built-in kind is decoded into its `k8s-openapi` type (the Kubernetes 1.33 API, the
//! version the crate is built with) and encoded again; a field of the request that did not
//! survive is unknown, and is dropped from the object (the object itself is otherwise kept as
//! sent, so formats such as timestamps are not rewritten). An object the typed decoder cannot
//! read at all (a required field missing, a wrong type) is left to the validation that follows.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use k8s_openapi::api::{
    admissionregistration::v1 as admission, apps::v1 as apps, batch::v1 as batch,
    coordination::v1 as coordination, core::v1 as core, events::v1 as events,
    networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;

fn round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> Option<Value> {
    let typed: T = serde_json::from_value(object.clone()).ok()?;
    serde_json::to_value(&typed).ok()
}

/// The object as its type encodes it, or None for a kind without a type here (or an object
/// the type cannot decode).
fn typed(group: &str, resource: &str, object: &Value) -> Option<Value> {
    match (group, resource) {
        ("", "namespaces") => round_trip::<core::Namespace>(object),
        ("", "secrets") => round_trip::<core::Secret>(object),
        ("", "configmaps") => round_trip::<core::ConfigMap>(object),
        ("", "serviceaccounts") => round_trip::<core::ServiceAccount>(object),
        ("", "pods") => round_trip::<core::Pod>(object),
        ("", "nodes") => round_trip::<core::Node>(object),
        ("", "services") => round_trip::<core::Service>(object),
        ("apps", "deployments") => round_trip::<apps::Deployment>(object),
        ("apps", "daemonsets") => round_trip::<apps::DaemonSet>(object),
        ("apps", "statefulsets") => round_trip::<apps::StatefulSet>(object),
        ("apps", "replicasets") => round_trip::<apps::ReplicaSet>(object),
        ("batch", "jobs") => round_trip::<batch::Job>(object),
        ("coordination.k8s.io", "leases") => round_trip::<coordination::Lease>(object),
        ("events.k8s.io", "events") => round_trip::<events::Event>(object),
        ("networking.k8s.io", "networkpolicies") => round_trip::<networking::NetworkPolicy>(object),
        ("networking.k8s.io", "ingresses") => round_trip::<networking::Ingress>(object),
        ("policy", "poddisruptionbudgets") => round_trip::<policy::PodDisruptionBudget>(object),
        ("rbac.authorization.k8s.io", "roles") => round_trip::<rbac::Role>(object),
        ("rbac.authorization.k8s.io", "rolebindings") => round_trip::<rbac::RoleBinding>(object),
        ("rbac.authorization.k8s.io", "clusterroles") => round_trip::<rbac::ClusterRole>(object),
        ("rbac.authorization.k8s.io", "clusterrolebindings") => {
            round_trip::<rbac::ClusterRoleBinding>(object)
        }
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations") => {
            round_trip::<admission::MutatingWebhookConfiguration>(object)
        }
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => {
            round_trip::<admission::ValidatingWebhookConfiguration>(object)
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            round_trip::<apiextensions::CustomResourceDefinition>(object)
        }
        _ => None,
    }
}

/// Drops the fields of `object` its type does not know; returns their paths
/// (`spec.template.spec.containers[0].imagePullPolicyy`).
pub fn prune_unknown(group: &str, resource: &str, object: &mut Value) -> Vec<String> {
    let Some(known) = typed(group, resource, object) else {
        return Vec::new();
    };
    let mut unknown = Vec::new();
    prune(object, &known, "", &mut unknown);
    unknown
}

/// Fields whose values are free-form JSON in their types (kept whatever they hold).
fn free_form(path: &str) -> bool {
    // CRD schemas: `default`, `example` and `enum` values are arbitrary JSON.
    path.ends_with(".default") || path.ends_with(".example") || path.contains(".enum[")
}

fn prune(object: &mut Value, known: &Value, path: &str, unknown: &mut Vec<String>) {
    if free_form(path) {
        return;
    }
    match (object, known) {
        (Value::Object(map), Value::Object(known_map)) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match known_map.get(&key) {
                    Some(k) => {
                        if let Some(v) = map.get_mut(&key) {
                            prune(v, k, &child, unknown);
                        }
                    }
                    // A null is an absent optional field to the typed decoder.
                    None if map.get(&key).is_some_and(Value::is_null) => {}
                    None => {
                        map.remove(&key);
                        unknown.push(child);
                    }
                }
            }
        }
        (Value::Array(items), Value::Array(known_items)) => {
            for (i, (item, k)) in items.iter_mut().zip(known_items).enumerate() {
                prune(item, k, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_of_a_deployment() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "bogus": 1},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "Always"}]}}}});
        let unknown = prune_unknown("apps", "deployments", &mut d);
        assert_eq!(
            unknown,
            [
                "metadata.bogus",
                "spec.template.spec.containers[0].imagePullPolicyy"
            ]
        );
        assert!(
            d["spec"]["template"]["spec"]["containers"][0]
                .get("imagePullPolicyy")
                .is_none()
        );
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "i");
    }
}
