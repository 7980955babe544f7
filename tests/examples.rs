//! examples/cluster/ stays applicable: every document parses, each rolegate resource uses only
//! fields the CRD schema in crds/ declares (with the required ones, the right types and enum
//! values, the right scope) and deserialises into the Rust types, and the resources refer to
//! each other by the names they have.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// kind → (scope, openAPIV3Schema) from crds/.
fn schemas() -> BTreeMap<String, (String, Value)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("crds")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let crd: Value = serde_saphyr::from_str(&text).unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
        let scope = crd["spec"]["scope"].as_str().unwrap().to_string();
        let schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
        out.insert(kind, (scope, schema));
    }
    out
}

/// The fields of `value` the schema does not allow, with their paths.
fn check(path: &str, value: &Value, schema: &Value, errors: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || schema.get("x-kubernetes-int-or-string").is_some()
    {
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {options:?}"));
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let ok = match (ty, value) {
        (None, _) | (Some("string"), Value::String(_)) | (Some("boolean"), Value::Bool(_)) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Some("number"), Value::Number(_)) => true,
        (Some("array"), Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                check(&format!("{path}[{i}]"), item, &schema["items"], errors);
            }
            true
        }
        (Some("object"), Value::Object(map)) => {
            let props = schema.get("properties").and_then(Value::as_object);
            for (key, child) in map {
                match (
                    props.and_then(|p| p.get(key)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(child_schema), _) => {
                        check(&format!("{path}.{key}"), child, child_schema, errors)
                    }
                    (None, Some(extra)) if extra.is_object() => {
                        check(&format!("{path}.{key}"), child, extra, errors)
                    }
                    (None, _) if props.is_none() => {}
                    (None, _) => errors.push(format!("{path}.{key}: not in the schema")),
                }
            }
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !map.contains_key(required.as_str().unwrap()) {
                    errors.push(format!("{path}: {required} is required"));
                }
            }
            true
        }
        _ => false,
    };
    if !ok {
        errors.push(format!("{path}: {value} is not of type {}", ty.unwrap()));
    }
}

fn documents() -> Vec<(String, Value)> {
    let dir = root().join("examples/cluster");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let parsed: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        docs.extend(parsed.into_iter().map(|d| (name.clone(), d)));
    }
    docs
}

#[test]
fn cluster_example_resources_match_the_crds() {
    let schemas = schemas();
    let mut errors = Vec::new();
    let mut seen = BTreeMap::<String, Vec<Value>>::new();
    for (file, doc) in documents() {
        let kind = doc["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no kind"));
        assert!(
            doc["metadata"]["name"].is_string(),
            "{file}: {kind} has no name"
        );
        seen.entry(kind.to_string()).or_default().push(doc.clone());
        if doc["apiVersion"] != "rolegate.dev/v1alpha1" {
            continue;
        }
        let (scope, schema) = schemas
            .get(kind)
            .unwrap_or_else(|| panic!("{file}: {kind} is not a rolegate CRD"));
        let namespaced = doc["metadata"].get("namespace").is_some();
        assert_eq!(
            namespaced,
            scope == "Namespaced",
            "{file}: {kind} is {scope}"
        );
        let mut body = doc.clone();
        for key in ["apiVersion", "kind", "metadata"] {
            body.as_object_mut().unwrap().remove(key);
        }
        check(&format!("{file}:{kind}"), &body, schema, &mut errors);
        let typed = match kind {
            "SAMLApp" => serde_json::from_value::<rolegate::crd::SAMLApp>(doc.clone()).err(),
            "IAMProvider" => {
                serde_json::from_value::<rolegate::crd::IAMProvider>(doc.clone()).err()
            }
            "Connection" => serde_json::from_value::<rolegate::crd::Connection>(doc.clone()).err(),
            "RoleMapping" => {
                serde_json::from_value::<rolegate::crd::RoleMapping>(doc.clone()).err()
            }
            other => panic!("{file}: {other}"),
        };
        if let Some(e) = typed {
            errors.push(format!("{file}:{kind}: {e}"));
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
    for kind in [
        "Namespace",
        "SAMLApp",
        "IAMProvider",
        "Connection",
        "RoleMapping",
        "ServiceAccount",
        "Deployment",
    ] {
        assert!(seen.contains_key(kind), "examples/cluster has no {kind}");
    }

    // The names line up: mapping → provider → app, the mapping's namespace carries the label
    // the provider selects, the pod runs as the mapped service account and asks for its role.
    let one = |kind: &str| seen[kind][0].clone();
    let (app, provider, mapping, namespace) = (
        one("SAMLApp"),
        one("IAMProvider"),
        one("RoleMapping"),
        one("Namespace"),
    );
    assert_eq!(provider["spec"]["samlApp"], app["metadata"]["name"]);
    assert_eq!(mapping["spec"]["provider"], provider["metadata"]["name"]);
    assert_eq!(
        mapping["metadata"]["namespace"],
        namespace["metadata"]["name"]
    );
    let selector = provider["spec"]["allowedNamespaces"]["matchLabels"]
        .as_object()
        .unwrap();
    for (k, v) in selector {
        assert_eq!(
            &namespace["metadata"]["labels"][k], v,
            "namespace label {k}"
        );
    }
    let role = mapping["spec"]["roleArn"].as_str().unwrap();
    let allowed = provider["spec"]["allowedRoles"][0].as_str().unwrap();
    assert!(
        role.starts_with(allowed.trim_end_matches('*')),
        "{role} is not allowed by {allowed}"
    );
    let pod = &one("Deployment")["spec"]["template"];
    assert_eq!(
        pod["spec"]["serviceAccountName"],
        mapping["spec"]["subjects"][0]["name"]
    );
    assert_eq!(pod["metadata"]["annotations"]["rolegate.dev/role"], role);
    let script = std::fs::read_to_string(root().join("examples/cluster/iam-role.sh")).unwrap();
    let provider_name = provider["spec"]["providerName"].as_str().unwrap();
    assert!(
        script.contains(provider_name),
        "iam-role.sh trusts {provider_name}"
    );
    assert!(role.ends_with(&format!(
        "role/{}",
        script
            .split("ROLE:-")
            .nth(1)
            .unwrap()
            .split('}')
            .next()
            .unwrap()
    )));
}
