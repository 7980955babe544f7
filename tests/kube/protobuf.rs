//! Request bodies in Kubernetes' protobuf encoding
//! (<https://kubernetes.io/docs/reference/using-api/api-concepts/#protobuf-encoding>): the
//! `k8s\0` magic, a `runtime.Unknown` envelope (`typeMeta`, `raw`), and `raw` the typed message
//! of `k8s.io/api/core/v1/generated.proto`. kubectl's typed generators (`kubectl create
//! namespace|configmap|secret|serviceaccount`, `kubectl auth whoami|can-i`) send these; the
//! kinds decoded are exactly those (Namespace, ConfigMap, Secret, ServiceAccount,
//! SelfSubjectReview, SelfSubjectAccessReview), into the JSON form the rest of the server handles. Answers are always JSON, which
//! kubectl accepts (`Accept: application/vnd.kubernetes.protobuf,application/json`).

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// One field of a protobuf message: (field number, wire value).
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn fields(data: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let tag = varint(data, &mut pos)?;
        let wire = match tag & 7 {
            0 => Wire::Varint(varint(data, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(data, &mut pos)?).ok()?;
                let bytes = data.get(pos..pos.checked_add(len)?)?;
                pos += len;
                Wire::Bytes(bytes)
            }
            1 => {
                pos += 8;
                Wire::Varint(0)
            }
            5 => {
                pos += 4;
                Wire::Varint(0)
            }
            _ => return None,
        };
        out.push((tag >> 3, wire));
    }
    Some(out)
}

fn text(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

/// A `map<string, string>` (or `bytes` values, base64 as JSON has them) entry into `map`.
fn map_entry(bytes: &[u8], map: &mut Map<String, Value>, binary: bool) -> Option<()> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (n, w) in fields(bytes)? {
        match (n, w) {
            (1, Wire::Bytes(b)) => key = String::from_utf8_lossy(b).into_owned(),
            (2, Wire::Bytes(b)) if binary => {
                value = Value::String(base64::engine::general_purpose::STANDARD.encode(b));
            }
            (2, Wire::Bytes(b)) => value = text(b),
            _ => {}
        }
    }
    map.insert(key, value);
    Some(())
}

fn object_meta(bytes: &[u8]) -> Option<Value> {
    let mut meta = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    for (n, w) in fields(bytes)? {
        match (n, w) {
            (1, Wire::Bytes(b)) if !b.is_empty() => {
                meta.insert("name".into(), text(b));
            }
            (2, Wire::Bytes(b)) if !b.is_empty() => {
                meta.insert("generateName".into(), text(b));
            }
            (3, Wire::Bytes(b)) if !b.is_empty() => {
                meta.insert("namespace".into(), text(b));
            }
            (6, Wire::Bytes(b)) if !b.is_empty() => {
                meta.insert("resourceVersion".into(), text(b));
            }
            (11, Wire::Bytes(b)) => map_entry(b, &mut labels, false)?,
            (12, Wire::Bytes(b)) => map_entry(b, &mut annotations, false)?,
            (14, Wire::Bytes(b)) => finalizers.push(text(b)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), Value::Array(finalizers));
    }
    Some(Value::Object(meta))
}

/// Decodes a protobuf request body, or None if it is not one of the kinds decoded here.
pub fn decode(body: &[u8]) -> Option<Value> {
    let envelope = body.strip_prefix(b"k8s\0")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, w) in fields(envelope)? {
        match (n, w) {
            (1, Wire::Bytes(b)) => {
                for (m, v) in fields(b)? {
                    match (m, v) {
                        (1, Wire::Bytes(s)) => {
                            api_version = String::from_utf8_lossy(s).into_owned()
                        }
                        (2, Wire::Bytes(s)) => kind = String::from_utf8_lossy(s).into_owned(),
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    match (api_version.as_str(), kind.as_str()) {
        ("authentication.k8s.io/v1", "SelfSubjectReview") => {
            return Some(json!({"apiVersion": api_version, "kind": kind}));
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            return access_review(raw)
                .map(|spec| json!({"apiVersion": api_version, "kind": kind, "spec": spec}));
        }
        ("v1", "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount") => {}
        _ => return None,
    }
    let mut object = json!({"apiVersion": "v1", "kind": kind});
    let mut data = Map::new();
    let mut string_data = Map::new();
    let mut binary_data = Map::new();
    for (n, w) in fields(raw)? {
        match (kind.as_str(), n, w) {
            (_, 1, Wire::Bytes(b)) => object["metadata"] = object_meta(b)?,
            ("Namespace", 2, Wire::Bytes(b)) => {
                let finalizers: Vec<Value> = fields(b)?
                    .into_iter()
                    .filter_map(|(m, v)| match (m, v) {
                        (1, Wire::Bytes(s)) => Some(text(s)),
                        _ => None,
                    })
                    .collect();
                if !finalizers.is_empty() {
                    object["spec"] = json!({"finalizers": finalizers});
                }
            }
            ("ConfigMap", 2, Wire::Bytes(b)) => map_entry(b, &mut data, false)?,
            ("ConfigMap", 3, Wire::Bytes(b)) => map_entry(b, &mut binary_data, true)?,
            ("ConfigMap", 4, Wire::Varint(v)) | ("Secret", 5, Wire::Varint(v)) => {
                object["immutable"] = json!(v != 0);
            }
            ("Secret", 2, Wire::Bytes(b)) => map_entry(b, &mut data, true)?,
            ("Secret", 3, Wire::Bytes(b)) => object["type"] = text(b),
            ("Secret", 4, Wire::Bytes(b)) => map_entry(b, &mut string_data, false)?,
            ("ServiceAccount", 4, Wire::Varint(v)) => {
                object["automountServiceAccountToken"] = json!(v != 0);
            }
            _ => {}
        }
    }
    if !data.is_empty() {
        object["data"] = Value::Object(data);
    }
    if !string_data.is_empty() {
        object["stringData"] = Value::Object(string_data);
    }
    if !binary_data.is_empty() {
        object["binaryData"] = Value::Object(binary_data);
    }
    Some(object)
}

/// The fields of a message, by number, as strings.
fn strings(bytes: &[u8], names: &[(u64, &str)]) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    for (n, w) in fields(bytes)? {
        if let (Some((_, name)), Wire::Bytes(b)) = (names.iter().find(|(m, _)| *m == n), w) {
            out.insert((*name).to_owned(), text(b));
        }
    }
    Some(out)
}

/// A SelfSubjectAccessReview's spec (`kubectl auth can-i`): resourceAttributes or
/// nonResourceAttributes.
fn access_review(raw: &[u8]) -> Option<Value> {
    let mut spec = Map::new();
    for (n, w) in fields(raw)? {
        if let (2, Wire::Bytes(b)) = (n, w) {
            for (m, v) in fields(b)? {
                match (m, v) {
                    (1, Wire::Bytes(r)) => {
                        let names = [
                            (1, "namespace"),
                            (2, "verb"),
                            (3, "group"),
                            (4, "version"),
                            (5, "resource"),
                            (6, "subresource"),
                            (7, "name"),
                        ];
                        spec.insert(
                            "resourceAttributes".into(),
                            Value::Object(strings(r, &names)?),
                        );
                    }
                    (2, Wire::Bytes(r)) => {
                        let names = [(1, "path"), (2, "verb")];
                        spec.insert(
                            "nonResourceAttributes".into(),
                            Value::Object(strings(r, &names)?),
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    Some(Value::Object(spec))
}
