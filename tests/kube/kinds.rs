//! What each kind adds to the generic store: names (RFC 1123 subdomain, label, path segment),
//! labels, and the per-kind strategies of the real registries (`pkg/registry/*/strategy.go` and
//! `pkg/apis/*/validation`): Secret `stringData` and base64 `data`, TLS Secret keys, ConfigMap
//! keys, Namespace label, finalizer and phase, CRD names, structural schema and status, Pod
//! defaults of status and the immutability of its spec, webhook configurations, RBAC role
//! references, events.k8s.io Event fields, and the conversion between the two Event versions
//! (<https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/>).

use std::collections::BTreeSet;

use base64::Engine as _;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::Status;
use super::resources::{self, ResourceInfo};
use super::schema::Cause;
use super::store::{CRD_CLEANUP, bad_request, field_invalid, finalizers, invalid, rfc3339};

const SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
pub const LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

pub fn name_error(info: &ResourceInfo, name: &str) -> Option<&'static str> {
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "namespaces") | ("", "services") => (!is_label(name)).then_some(LABEL),
        ("rbac.authorization.k8s.io", _) => (name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('%'))
        .then_some("may not contain '/' or '%'"),
        _ => (!is_subdomain(name)).then_some(SUBDOMAIN),
    }
}

/// The most bytes all annotations of an object may hold (`TotalAnnotationSizeLimitB`).
const ANNOTATIONS_LIMIT: usize = 256 * 1024;

/// The most bytes of data a Secret or ConfigMap may hold (`MaxSecretSize`, `MaxConfigMapSize`).
const DATA_LIMIT: usize = 1024 * 1024;

pub fn validate_labels(object: &Value, causes: &mut Vec<Cause>) {
    if let Some(annotations) = object["metadata"]["annotations"].as_object() {
        let size: usize = annotations
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if size > ANNOTATIONS_LIMIT {
            causes.push(Cause {
                reason: "FieldValueTooLong".into(),
                field: "metadata.annotations".into(),
                message: format!(
                    "metadata.annotations: Too long: may not be more than {ANNOTATIONS_LIMIT} bytes"
                ),
            });
        }
    }
    let Some(labels) = object["metadata"]["labels"].as_object() else {
        return;
    };
    for (key, value) in labels {
        let (prefix, name) = key
            .rsplit_once('/')
            .map_or(("", key.as_str()), |(p, n)| (p, n));
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !name_ok || (!prefix.is_empty() && !is_subdomain(prefix)) {
            causes.push(field_invalid(
                "metadata.labels",
                &Value::String(key.clone()),
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            ));
        }
        let v = value.as_str().unwrap_or("\u{0}");
        let value_ok = v.is_empty()
            || (v.len() <= 63
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
        if !value_ok {
            causes.push(field_invalid(
                "metadata.labels",
                value,
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            ));
        }
    }
    if let Some(annotations) = object["metadata"]["annotations"].as_object()
        && annotations.values().any(|v| !v.is_string())
    {
        causes.push(field_invalid(
            "metadata.annotations",
            &object["metadata"]["annotations"],
            "annotation values must be strings",
        ));
    }
}

/// Kind-specific shaping of every write (the types' defaulting and conversion).
pub fn kind_rules(
    info: &ResourceInfo,
    object: &mut Value,
    legacy_event: bool,
) -> Result<(), Status> {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "secrets") => {
            let b64 = base64::engine::general_purpose::STANDARD;
            if let Some(data) = object["data"].as_object() {
                for (k, v) in data {
                    let ok = v.as_str().is_some_and(|s| b64.decode(s).is_ok());
                    if !ok {
                        return Err(bad_request(&format!(
                            "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 0 (data[{k:?}])"
                        )));
                    }
                }
            }
            if let Some(Value::Object(string_data)) =
                object.as_object_mut().and_then(|m| m.remove("stringData"))
            {
                if !object["data"].is_object() {
                    object["data"] = json!({});
                }
                for (k, v) in string_data {
                    let text = v.as_str().unwrap_or_default();
                    object["data"][k] = Value::String(b64.encode(text));
                }
            }
            if object["type"].as_str().is_none_or(str::is_empty) {
                object["type"] = json!("Opaque");
            }
        }
        ("", "configmaps") => {
            if let Some(data) = object["data"].as_object()
                && let Some((k, _)) = data.iter().find(|(_, v)| !v.is_string())
            {
                return Err(bad_request(&format!(
                    "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: json: cannot unmarshal non-string into Go struct field ConfigMap.data of type string (data[{k:?}])"
                )));
            }
        }
        ("", "namespaces") => {
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = Value::String(name);

            if object["status"]["phase"].is_null() {
                object["status"]["phase"] = json!("Active");
            }
        }
        (
            "admissionregistration.k8s.io",
            kind @ ("mutatingwebhookconfigurations" | "validatingwebhookconfigurations"),
        ) => {
            // The v1 defaults the real server stores, then its validation (admission.rs).
            let causes = super::admission::default_and_validate_webhooks(
                object,
                kind == "mutatingwebhookconfigurations",
            );
            if !causes.is_empty() {
                return Err(invalid(info, &name, &causes));
            }
        }
        ("events.k8s.io", "events") if !legacy_event => {
            // The required fields of an events.k8s.io/v1 Event (ValidateEventCreate).
            let mut causes = Vec::new();
            for (field, max) in [
                ("reportingController", 100),
                ("reportingInstance", 128),
                ("action", 128),
                ("reason", 128),
            ] {
                let value = object[field].as_str().unwrap_or_default();
                if value.is_empty() {
                    causes.push(Cause {
                        reason: "FieldValueRequired".into(),
                        field: field.into(),
                        message: format!("{field}: Required value"),
                    });
                } else if value.len() > max {
                    causes.push(field_invalid(
                        field,
                        &object[field],
                        &format!("can have at most {max} characters"),
                    ));
                }
            }
            if object["eventTime"].is_null() {
                causes.push(Cause {
                    reason: "FieldValueRequired".into(),
                    field: "eventTime".into(),
                    message: "eventTime: Required value".into(),
                });
            }
            if !matches!(object["type"].as_str(), Some("Normal" | "Warning")) {
                causes.push(Cause {
                    reason: "FieldValueNotSupported".into(),
                    field: "type".into(),
                    message: format!(
                        "type: Unsupported value: {}: supported values: \"Normal\", \"Warning\"",
                        object["type"]
                    ),
                });
            }
            if object["note"].as_str().is_some_and(|n| n.len() > 1024) {
                causes.push(field_invalid(
                    "note",
                    &json!("…"),
                    "can have at most 1024 characters",
                ));
            }
            let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
            let regarding = object["regarding"]["namespace"]
                .as_str()
                .unwrap_or_default();
            if !regarding.is_empty() && !ns.is_empty() && regarding != ns {
                causes.push(field_invalid(
                    "regarding.namespace",
                    &object["regarding"]["namespace"],
                    "does not match event.namespace",
                ));
            }
            if !causes.is_empty() {
                return Err(invalid(info, &name, &causes));
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let group = object["spec"]["group"].as_str().unwrap_or_default();
            let plural = object["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or_default();
            let expected = format!("{plural}.{group}");
            if name != expected {
                return Err(invalid(
                    info,
                    &name,
                    &[field_invalid(
                        "metadata.name",
                        &Value::String(name.clone()),
                        "must be spec.names.plural+\".\"+spec.group",
                    )],
                ));
            }
            let mut causes = Vec::new();
            for (i, version) in object["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(schema) = version["schema"].get("openAPIV3Schema") {
                    let path = format!("spec.versions[{i}].schema.openAPIV3Schema");
                    for (field, message) in super::schema::structural_errors(schema, &path) {
                        causes.push(Cause {
                            reason: if message.starts_with("Required") {
                                "FieldValueRequired"
                            } else {
                                "FieldValueForbidden"
                            }
                            .into(),
                            message: format!("{field}: {message}"),
                            field,
                        });
                    }
                }
            }
            if !causes.is_empty() {
                return Err(invalid(info, &name, &causes));
            }
            if let Err(e) = resources::from_crd(object) {
                return Err(invalid(
                    info,
                    &name,
                    &[Cause {
                        reason: "FieldValueInvalid".into(),
                        field: "spec".into(),
                        message: e,
                    }],
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// What only a create sets.
pub fn create_rules(info: &ResourceInfo, object: &mut Value, now: Timestamp) {
    match (info.group.as_str(), info.resource.as_str()) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let mut f = finalizers(object);
            if !f.iter().any(|x| x == CRD_CLEANUP) {
                f.push(CRD_CLEANUP.into());
            }
            object["metadata"]["finalizers"] = json!(f);
            let names = object["spec"]["names"].clone();
            let t = rfc3339(now);
            object["status"] = json!({
                "acceptedNames": names,
                "storedVersions": object["spec"]["versions"].as_array().map(|vs| vs.iter().filter(|v| v["storage"].as_bool() == Some(true)).map(|v| v["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": t},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": t},
                ],
            });
        }
        ("", "namespaces") => {
            // The namespace registry's PrepareForCreate: the lifecycle finalizer, always.
            object["spec"]["finalizers"] = json!(["kubernetes"]);
        }
        ("", "pods") if object["status"]["phase"].is_null() => {
            object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        _ => {}
    }
}

/// Immutable fields and the like on update.
fn required(field: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired".into(),
        field: field.into(),
        message: format!("{field}: Required value"),
    }
}

fn not_supported(field: &str, value: &Value, supported: &[&str]) -> Cause {
    Cause {
        reason: "FieldValueNotSupported".into(),
        field: field.into(),
        message: format!(
            "{field}: Unsupported value: {value}: supported values: {}",
            supported
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Keys of ConfigMap and Secret data (`IsConfigMapKey`).
fn is_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && key != "."
        && key != ".."
}

/// The validation of the built-in kinds whose mistakes a chart or an operator can make (each
/// type's `Validate…` in `pkg/apis/…/validation`): data keys, TLS Secrets, Pods' containers,
/// RBAC role references (webhook configurations: `admission::default_and_validate_webhooks`,
/// from [`kind_rules`]).
pub fn validate_builtin(info: &ResourceInfo, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "secrets" | "configmaps") => {
            let b64 = base64::engine::general_purpose::STANDARD;
            let mut size = 0usize;
            for (field, binary) in [("data", info.resource == "secrets"), ("binaryData", true)] {
                for (k, v) in object[field].as_object().into_iter().flatten() {
                    let text = v.as_str().unwrap_or_default();
                    size += k.len()
                        + if binary {
                            b64.decode(text).map_or(text.len(), |b| b.len())
                        } else {
                            text.len()
                        };
                }
            }
            if size > DATA_LIMIT {
                causes.push(Cause {
                    reason: "FieldValueTooLong".into(),
                    field: "data".into(),
                    message: format!("data: Too long: may not be more than {DATA_LIMIT} bytes"),
                });
            }
            for field in ["data", "binaryData", "stringData"] {
                if let Some(map) = object[field].as_object() {
                    for key in map.keys().filter(|k| !is_config_key(k)) {
                        causes.push(field_invalid(
                            &format!("{field}[{key}]"),
                            &Value::String(key.clone()),
                            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                        ));
                    }
                }
            }
            if object["type"] == "kubernetes.io/tls" {
                for key in ["tls.crt", "tls.key"] {
                    if object["data"].get(key).is_none() {
                        causes.push(required(&format!("data[{key}]")));
                    }
                }
            }
        }
        ("", "pods") => validate_pod_spec(&object["spec"], "spec", &mut causes),
        ("", "services") => {
            // ValidateService: the type, and ports (required unless headless or ExternalName).
            let spec = &object["spec"];
            let kind = spec["type"].as_str().unwrap_or("ClusterIP");
            let types = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
            if !types.contains(&kind) {
                causes.push(not_supported("spec.type", &spec["type"], &types));
            }
            let ports = spec["ports"].as_array().cloned().unwrap_or_default();
            if ports.is_empty() && kind != "ExternalName" && spec["clusterIP"] != "None" {
                causes.push(required("spec.ports"));
            }
            let mut names = BTreeSet::new();
            for (i, port) in ports.iter().enumerate() {
                let number = port["port"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&number) {
                    causes.push(field_invalid(
                        &format!("spec.ports[{i}].port"),
                        &port["port"],
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                let name = port["name"].as_str().unwrap_or_default();
                if ports.len() > 1 && name.is_empty() {
                    causes.push(required(&format!("spec.ports[{i}].name")));
                } else if !name.is_empty() && !names.insert(name.to_owned()) {
                    causes.push(Cause {
                        reason: "FieldValueDuplicate".into(),
                        field: format!("spec.ports[{i}].name"),
                        message: format!("spec.ports[{i}].name: Duplicate value: {name:?}"),
                    });
                }
                if !port["protocol"].is_null()
                    && !matches!(port["protocol"].as_str(), Some("TCP" | "UDP" | "SCTP"))
                {
                    causes.push(not_supported(
                        &format!("spec.ports[{i}].protocol"),
                        &port["protocol"],
                        &["SCTP", "TCP", "UDP"],
                    ));
                }
            }
        }
        ("apps", "deployments" | "daemonsets" | "statefulsets" | "replicasets") => {
            // A workload's selector must select its own template (ValidateDeploymentSpec & co).
            let selector = &object["spec"]["selector"];
            if !selector.is_object() {
                causes.push(required("spec.selector"));
            } else {
                let labels = object["spec"]["template"]["metadata"]["labels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                match super::admission::selector_matches(selector, &labels) {
                    Ok(true) => {}
                    Ok(false) => causes.push(field_invalid(
                        "spec.template.metadata.labels",
                        &Value::Object(labels),
                        "`selector` does not match template `labels`",
                    )),
                    Err(e) => causes.push(field_invalid("spec.selector", selector, &e)),
                }
            }
            validate_pod_spec(
                &object["spec"]["template"]["spec"],
                "spec.template.spec",
                &mut causes,
            );
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            let role_ref = &object["roleRef"];
            if role_ref["name"].as_str().is_none_or(str::is_empty) {
                causes.push(required("roleRef.name"));
            }
            let kinds: &[&str] = if info.resource == "rolebindings" {
                &["Role", "ClusterRole"]
            } else {
                &["ClusterRole"]
            };
            if !role_ref["kind"]
                .as_str()
                .is_some_and(|k| kinds.contains(&k))
            {
                causes.push(not_supported("roleRef.kind", &role_ref["kind"], kinds));
            }
            if role_ref["apiGroup"] != "rbac.authorization.k8s.io" {
                causes.push(not_supported(
                    "roleRef.apiGroup",
                    &role_ref["apiGroup"],
                    &["rbac.authorization.k8s.io"],
                ));
            }
        }
        _ => {}
    }
    causes
}

pub fn update_rules(info: &ResourceInfo, old: &Value, object: &mut Value) -> Result<(), Status> {
    let name = old["metadata"]["name"].as_str().unwrap_or_default();
    match (info.group.as_str(), info.resource.as_str()) {
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings")
            if old["roleRef"] != object["roleRef"] =>
        {
            Err(invalid(
                info,
                name,
                &[field_invalid(
                    "roleRef",
                    &object["roleRef"],
                    "cannot change roleRef",
                )],
            ))
        }
        ("", "secrets") if old["type"] != object["type"] => Err(invalid(
            info,
            name,
            &[field_invalid("type", &object["type"], "field is immutable")],
        )),
        ("", "secrets") | ("", "configmaps")
            if old["immutable"].as_bool() == Some(true)
                && (old["data"] != object["data"] || old["binaryData"] != object["binaryData"]) =>
        {
            Err(invalid(
                info,
                name,
                &[Cause {
                    reason: "FieldValueForbidden".into(),
                    field: "data".into(),
                    message: "data: Forbidden: field is immutable when `immutable` is set".into(),
                }],
            ))
        }
        ("", "namespaces") => {
            // spec.finalizers changes only through /finalize.
            object["spec"]["finalizers"] = old["spec"]["finalizers"].clone();
            Ok(())
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            // The names are accepted again and the CRD stays Established.
            let status = old["status"].clone();
            object["status"] = status;
            object["status"]["acceptedNames"] = object["spec"]["names"].clone();
            Ok(())
        }
        ("", "pods") => {
            // Pod spec is immutable but for a few fields.
            let strip = |o: &Value| {
                let mut s = o["spec"].clone();
                if let Value::Object(m) = &mut s {
                    m.remove("activeDeadlineSeconds");
                    m.remove("tolerations");
                    m.remove("terminationGracePeriodSeconds");
                    if let Some(Value::Array(cs)) = m.get_mut("containers") {
                        for c in cs {
                            if let Value::Object(c) = c {
                                c.remove("image");
                            }
                        }
                    }
                }
                s
            };
            if strip(old) != strip(object) {
                return Err(invalid(info, name, &[Cause {
                    reason: "FieldValueForbidden".into(),
                    field: "spec".into(),
                    message: "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
                }]));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// events.k8s.io/v1 field <-> core/v1 field (the two versions of one Event type).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// An events.k8s.io/v1 Event as core/v1 shows it.
pub fn event_to_core(event: &Value) -> Value {
    let mut out = event.clone();
    if let Value::Object(map) = &mut out {
        for (new, old) in EVENT_FIELDS {
            if let Some(v) = map.remove(*new) {
                map.insert((*old).to_owned(), v);
            }
        }
        map.insert("apiVersion".into(), json!("v1"));
        map.insert("kind".into(), json!("Event"));
    }
    out
}

/// A core/v1 Event as events.k8s.io/v1 stores it.
pub fn event_from_core(event: &Value) -> Value {
    let mut out = event.clone();
    if let Value::Object(map) = &mut out {
        for (new, old) in EVENT_FIELDS {
            if let Some(v) = map.remove(*old) {
                map.insert((*new).to_owned(), v);
            }
        }
        map.insert("apiVersion".into(), json!("events.k8s.io/v1"));
        map.insert("kind".into(), json!("Event"));
    }
    out
}

/// A Kubernetes quantity (`resource.Quantity`: `100m`, `128Mi`, `1.5`, `2e3`).
fn is_quantity(text: &str) -> bool {
    let digits = text.trim_start_matches(['+', '-']);
    let number_end = digits
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(digits.len());
    let (number, suffix) = digits.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return false;
    }
    matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix.strip_prefix(['e', 'E']).is_some_and(|e| {
        !e.is_empty()
            && e.trim_start_matches(['+', '-'])
                .chars()
                .all(|c| c.is_ascii_digit())
    })
}

/// A Pod spec's containers (`ValidatePodSpec`, the parts a manifest gets wrong): present,
/// named as DNS labels and unique, with an image, ports in 1..65535, environment variable
/// names, and resource quantities.
fn validate_pod_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    if spec["containers"].as_array().is_none_or(Vec::is_empty) {
        causes.push(required(&format!("{path}.containers")));
    }
    let mut names = BTreeSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let at = |f: &str| format!("{path}.{list}[{i}].{f}");
            let name = c["name"].as_str().unwrap_or_default();
            if name.is_empty() {
                causes.push(required(&at("name")));
            } else if !is_label(name) {
                causes.push(field_invalid(&at("name"), &c["name"], LABEL));
            } else if !names.insert(name.to_owned()) {
                causes.push(Cause {
                    reason: "FieldValueDuplicate".into(),
                    field: at("name"),
                    message: format!("{}: Duplicate value: {name:?}", at("name")),
                });
            }
            if c["image"].as_str().is_none_or(str::is_empty) {
                causes.push(required(&at("image")));
            }
            for (j, port) in c["ports"].as_array().into_iter().flatten().enumerate() {
                let number = port["containerPort"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&number) {
                    causes.push(field_invalid(
                        &at(&format!("ports[{j}].containerPort")),
                        &port["containerPort"],
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            for (j, env) in c["env"].as_array().into_iter().flatten().enumerate() {
                let var = env["name"].as_str().unwrap_or_default();
                let ok = !var.is_empty()
                    && !var.starts_with(|ch: char| ch.is_ascii_digit())
                    && var
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'));
                if !ok {
                    causes.push(field_invalid(
                        &at(&format!("env[{j}].name")),
                        &env["name"],
                        "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit",
                    ));
                }
            }
            for kind in ["limits", "requests"] {
                for (resource, quantity) in c["resources"][kind].as_object().into_iter().flatten() {
                    let text = quantity
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| quantity.to_string());
                    if !is_quantity(&text) {
                        causes.push(field_invalid(
                            &at(&format!("resources.{kind}[{resource}]")),
                            quantity,
                            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                        ));
                    }
                }
            }
        }
    }
}
