//! The Helm chart, checked by the real `helm` (installed by tests/peers/install.sh): it lints,
//! renders the workloads with least-privilege RBAC, ships exactly the generated CRDs, and refuses
//! to render without a public URL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{repo, run};

fn helm() -> Command {
    let peers = std::env::var_os("ROLEGATE_PEERS")
        .map_or_else(|| repo().join(".peers"), std::path::PathBuf::from);
    let bin = peers.join("bin/helm");
    assert!(
        bin.exists(),
        "helm is missing at {}: run `make test` (or tests/peers/install.sh)",
        bin.display()
    );
    let mut command = Command::new(bin);
    command
        .current_dir(repo())
        .env("HELM_CACHE_HOME", std::env::temp_dir())
        .env("HELM_CONFIG_HOME", std::env::temp_dir());
    command
}

fn render(extra: &[&str]) -> (bool, Vec<serde_json::Value>, String) {
    let (ok, out, err) = run(helm()
        .args([
            "template",
            "rg",
            "charts/rolegate",
            "--namespace",
            "rolegate",
            "--include-crds",
        ])
        .args(extra));
    let docs: Vec<serde_json::Value> = if ok {
        serde_saphyr::from_str_multiple(&out).unwrap()
    } else {
        vec![]
    };
    (ok, docs.into_iter().filter(|d| !d.is_null()).collect(), err)
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} is not rendered"))
}

#[test]
fn the_chart_lints() {
    let (ok, out, err) = run(helm().args([
        "lint",
        "charts/rolegate",
        "--set",
        "publicURL=https://rolegate.example.com",
    ]));
    assert!(ok, "helm lint failed: {out}{err}");
}

#[test]
fn the_chart_renders_both_workloads_with_their_rbac_and_the_generated_crds() {
    let (ok, docs, err) = render(&["--set", "publicURL=https://rolegate.example.com"]);
    assert!(ok, "{err}");
    let controller = find(&docs, "Deployment", "rg-controller");
    let args = controller["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("--public-url=https://rolegate.example.com"),
        "{args}"
    );
    assert!(args.contains("--lease-name=rg-controller"), "{args}");
    let server = find(&docs, "Deployment", "rg-server");
    assert_eq!(
        server["spec"]["template"]["spec"]["serviceAccountName"],
        "rg-server"
    );
    let security = &server["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    find(&docs, "Service", "rg-server");

    // The server never writes: no verb other than reads, except creating TokenReviews.
    let server_role = find(&docs, "ClusterRole", "rg-server");
    for rule in server_role["rules"].as_array().unwrap() {
        for verb in rule["verbs"].as_array().unwrap() {
            let write = !matches!(verb.as_str().unwrap(), "get" | "list" | "watch");
            assert!(
                !write || rule["resources"] == serde_json::json!(["tokenreviews"]),
                "server may {verb} {}",
                rule["resources"]
            );
        }
    }
    // Secrets only in the release namespace, never cluster-wide.
    for role in docs.iter().filter(|d| d["kind"] == "ClusterRole") {
        assert!(
            !role["rules"].to_string().contains("secrets"),
            "{} grants Secrets cluster-wide",
            role["metadata"]["name"]
        );
    }

    // The key sealing sign-in cookies: one Secret every replica reads, labelled for the index.
    let session = find(&docs, "Secret", rolegate::login::SESSION_SECRET);
    assert_eq!(
        session["metadata"]["labels"][rolegate::store::index::LOGIN_SECRET_LABEL],
        "true"
    );
    let key = session["data"][rolegate::login::SESSION_KEY]
        .as_str()
        .unwrap();
    assert!(key.len() >= 64, "a 48-character key, base64-encoded");

    let crds: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    assert_eq!(crds.len(), 4);
    for (file, yaml) in rolegate::crd::render_files().unwrap() {
        let generated: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        assert!(
            crds.contains(&&generated),
            "{file} differs from the generated CRD"
        );
    }
}

#[test]
fn the_chart_refuses_to_render_without_a_public_url() {
    let (ok, _, err) = render(&[]);
    assert!(!ok);
    assert!(err.contains("publicURL is required"), "{err}");
}
