//! `crds/` and the chart's CRDs are exactly what the Rust types generate (`make generate`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

fn check(dir: &Path) {
    let files = rolegate::crd::render_files().unwrap();
    assert_eq!(files.len(), 4);
    for (name, yaml) in files {
        let committed = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|e| panic!("{}/{name}: {e}; run `make generate`", dir.display()));
        assert_eq!(
            committed,
            yaml,
            "{}/{name} drifted from the Rust types; run `make generate`",
            dir.display()
        );
    }
}

#[test]
fn committed_crds_match_the_types() {
    check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"));
}

#[test]
fn chart_crds_match_the_types() {
    check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/rolegate/crds"));
}

#[test]
fn every_field_is_documented() {
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                let documented = prop.get("description").is_some()
                    || prop.get("x-kubernetes-int-or-string").is_some();
                if !documented
                    && !here.contains(".metadata")
                    && !here.starts_with(".apiVersion")
                    && !here.starts_with(".kind")
                {
                    missing.push(here.clone());
                }
                walk(&here, prop, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in rolegate::crd::all() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let root = &schema["openAPIV3Schema"];
        for part in ["spec", "status"] {
            // Condition fields come documented from k8s-openapi.
            walk(
                &format!("{}.{part}", crd.spec.names.kind),
                &root["properties"][part],
                &mut missing,
            );
        }
    }
    assert!(
        missing.is_empty(),
        "fields without a `///` doc: {missing:#?}"
    );
}
