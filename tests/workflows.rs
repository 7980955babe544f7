//! The GitHub workflows under .github/workflows cannot run here; this keeps them honest where a
//! machine can: they parse, every `make TARGET` they run exists in the Makefile, CI runs the
//! README's test command and the lints, every third-party action is pinned to a full version, and
//! the release signs with a keyless identity (`id-token: write`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn workflow(name: &str) -> Value {
    let path = root().join(".github/workflows").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn steps(workflow: &Value) -> Vec<&Value> {
    workflow["jobs"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|job| job["steps"].as_array().into_iter().flatten())
        .collect()
}

/// The `make` targets a workflow's `run:` steps invoke.
fn make_targets(workflow: &Value) -> BTreeSet<String> {
    steps(workflow)
        .iter()
        .filter_map(|s| s["run"].as_str())
        .flat_map(|run| run.lines())
        .filter_map(|line| line.trim().strip_prefix("make "))
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        .collect()
}

fn makefile_targets() -> BTreeSet<String> {
    std::fs::read_to_string(root().join("Makefile"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(['\t', '#', '.']))
        .filter_map(|l| l.split_once(':'))
        .filter(|(_, rest)| !rest.starts_with('='))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

#[test]
fn ci_runs_the_readme_test_command_and_the_lints() {
    let ci = workflow("ci.yml");
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains("make test"), "the README's test command");
    let targets = make_targets(&ci);
    assert!(
        targets.contains("test") && targets.contains("lint"),
        "{targets:?}"
    );
    let on = ci["on"].as_object().unwrap();
    for event in ["push", "pull_request", "workflow_call"] {
        assert!(on.contains_key(event), "ci.yml runs on {event}");
    }
}

#[test]
fn every_make_target_the_workflows_run_exists() {
    let known = makefile_targets();
    assert!(known.contains("image"), "{known:?}");
    for name in ["ci.yml", "release.yml", "e2e-kind.yml"] {
        for target in make_targets(&workflow(name)) {
            assert!(
                known.contains(&target),
                "{name} runs `make {target}`, not in the Makefile"
            );
        }
    }
}

#[test]
fn actions_are_pinned_to_full_versions() {
    for name in ["ci.yml", "release.yml", "e2e-kind.yml"] {
        let wf = workflow(name);
        let mut uses: Vec<&str> = steps(&wf)
            .iter()
            .filter_map(|s| s["uses"].as_str())
            .collect();
        uses.extend(
            wf["jobs"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|job| job["uses"].as_str()),
        );
        assert!(!uses.is_empty());
        for action in uses {
            if action.starts_with("./") {
                assert!(root().join(action).is_file(), "{name}: {action}");
                continue;
            }
            let (_, version) = action
                .split_once('@')
                .unwrap_or_else(|| panic!("{name}: {action} is not pinned"));
            let parts: Vec<&str> = version.trim_start_matches('v').split('.').collect();
            assert!(
                parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
                "{name}: {action} is not pinned to vX.Y.Z"
            );
        }
    }
}

#[test]
fn release_builds_both_platforms_and_signs_keyless() {
    let release = workflow("release.yml");
    assert_eq!(release["on"]["push"]["tags"][0], "v*");
    let jobs = release["jobs"].as_object().unwrap();
    let platforms: BTreeSet<&str> = jobs["image"]["strategy"]["matrix"]["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"].as_str().unwrap())
        .collect();
    assert_eq!(
        platforms,
        BTreeSet::from(["linux/amd64", "linux/arm64"]),
        "image platforms"
    );
    for signer in ["publish-image", "chart"] {
        assert_eq!(jobs[signer]["permissions"]["id-token"], "write", "{signer}");
        let runs: String = jobs[signer]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["run"].as_str())
            .collect();
        assert!(runs.contains("cosign sign --yes"), "{signer} signs");
    }
    let chart: String = jobs["chart"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect();
    assert!(
        chart.contains("helm push") && chart.contains("oci://"),
        "{chart}"
    );
    // The image jobs build with the Dockerfile and attach buildx's SBOM.
    let build = jobs["image"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "build")
        .unwrap();
    assert_eq!(build["with"]["sbom"], true);
    assert!(root().join("Dockerfile").is_file());
}

/// The release builds the image from the Dockerfile, `make image` from scripts/image.sh: the
/// two give the same entrypoint, user and CA bundle, and both carry `sh` and `ip` for the
/// agent's init container.
#[test]
fn dockerfile_and_image_script_make_the_same_layout() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let script = std::fs::read_to_string(root().join("scripts/image.sh")).unwrap();
    for (docker, umoci) in [
        (
            r#"ENTRYPOINT ["/usr/local/bin/rolegate"]"#,
            "--config.entrypoint /usr/local/bin/rolegate",
        ),
        ("USER 65532:65532", "--config.user 65532:65532"),
        (
            "COPY --from=build /src/target/release/rolegate /usr/local/bin/rolegate",
            "/usr/local/bin/rolegate",
        ),
        (
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        ),
        ("iproute2", "iproute2"),
    ] {
        assert!(dockerfile.contains(docker), "Dockerfile: {docker}");
        assert!(script.contains(umoci), "scripts/image.sh: {umoci}");
    }
}

#[test]
fn e2e_kind_builds_the_image_loads_it_into_kind_and_runs_make_e2e() {
    let wf = workflow("e2e-kind.yml");
    let runs: Vec<&str> = steps(&wf)
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect();
    let all = runs.join("\n");
    assert!(make_targets(&wf).contains("e2e"), "{all}");
    let image = wf["env"]["IMAGE"].as_str().unwrap();
    assert!(
        image.contains(':') && !image.ends_with(":latest"),
        "a pinned tag kind's node keeps: {image}"
    );
    assert!(
        all.contains("docker build --tag \"$IMAGE\" ."),
        "built from the Dockerfile"
    );
    assert!(all.contains("kind load docker-image \"$IMAGE\" --name \"$CLUSTER\""));
    let e2e = steps(&wf)
        .into_iter()
        .find(|s| s["run"].as_str().is_some_and(|r| r.contains("make e2e")))
        .unwrap();
    assert_eq!(e2e["env"]["ROLEGATE_E2E_IMAGE"], "${{ env.IMAGE }}");
    assert!(steps(&wf).iter().any(|s| {
        s["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("helm/kind-action@"))
    }));
}
