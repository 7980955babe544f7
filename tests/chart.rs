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

#[test]
fn pods_are_wired_to_the_agent_through_the_webhook_and_the_operator_ca() {
    let (ok, docs, err) = render(&["--set", "publicURL=https://rolegate.example.com"]);
    assert!(ok, "{err}");
    let webhook = find(&docs, "MutatingWebhookConfiguration", "rg");
    let hook = &webhook["webhooks"][0];
    assert_eq!(
        hook["failurePolicy"], "Ignore",
        "a down webhook never blocks pods"
    );
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["clientConfig"]["service"]["name"], "rg-server");
    assert_eq!(hook["clientConfig"]["service"]["path"], "/admission/pods");
    assert_eq!(hook["clientConfig"]["service"]["port"], 443);
    assert!(
        hook["clientConfig"].get("caBundle").is_none(),
        "the controller writes caBundle; Helm must not reset it"
    );
    let excluded = hook["namespaceSelector"]["matchExpressions"][0]["values"].to_string();
    assert!(
        excluded.contains("\"rolegate\"") && excluded.contains("kube-system"),
        "{excluded}"
    );

    let controller = find(&docs, "Deployment", "rg-controller");
    let args = controller["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    for want in [
        "--certificates=self-signed",
        "--serving-secret=rg-server-tls",
        "--ca-configmap=rg-ca",
        "--webhook-configuration=rg",
        "--server-service=rg-server",
    ] {
        assert!(args.contains(want), "{want} missing from {args}");
    }
    let server = find(&docs, "Deployment", "rg-server");
    let args = server["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("--tls-secret=rg-server-tls") && args.contains("--tls-listen=0.0.0.0:8443"),
        "{args}"
    );
    // The webhook injects the address the agent listens on.
    assert!(
        args.contains("--credentials-uri=http://169.254.170.23/v1/credentials"),
        "{args}"
    );

    let agent = find(&docs, "DaemonSet", "rg-agent");
    let spec = &agent["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    let link = &spec["initContainers"][0];
    assert_eq!(
        link["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN"])
    );
    assert!(
        link["args"][0]
            .as_str()
            .unwrap()
            .contains("ip addr replace 169.254.170.23/32 dev rolegate0")
    );
    let container = &spec["containers"][0];
    let args = container["args"].to_string();
    assert!(args.contains("--listen=169.254.170.23:80"), "{args}");
    assert!(
        args.contains("--server=https://rg-server.rolegate.svc:443"),
        "{args}"
    );
    assert!(args.contains("--ca-file=/etc/rolegate/ca/ca.crt"), "{args}");
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    // Agents on every node read the public bundle, never a Secret with a key.
    assert_eq!(spec["volumes"][0]["configMap"]["name"], "rg-ca");
    assert!(!spec["volumes"].to_string().contains("secret"));

    // Dual stack adds the IPv6 address and listener.
    let (ok, docs, err) = render(&[
        "--set",
        "publicURL=https://rolegate.example.com",
        "--set",
        "agent.ipv6=true",
    ]);
    assert!(ok, "{err}");
    let spec = &find(&docs, "DaemonSet", "rg-agent")["spec"]["template"]["spec"];
    assert!(
        spec["containers"][0]["args"]
            .to_string()
            .contains("--listen=[fd00:ec2::23]:80")
    );
    assert!(
        spec["initContainers"][0]["args"][0]
            .as_str()
            .unwrap()
            .contains("fd00:ec2::23/128")
    );
    let (ok, docs, err) = render(&[
        "--set",
        "publicURL=https://rolegate.example.com",
        "--set",
        "agent.port=8099",
    ]);
    assert!(ok, "{err}");
    let server = find(&docs, "Deployment", "rg-server");
    let args = server["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("--credentials-uri=http://169.254.170.23:8099/v1/credentials"),
        "{args}"
    );
}

#[test]
fn cert_manager_mode_issues_the_serving_certificate_and_injects_the_ca() {
    let (ok, docs, err) = render(&[
        "--set",
        "publicURL=https://rolegate.example.com",
        "--set",
        "certificates.mode=cert-manager",
    ]);
    assert!(ok, "{err}");
    let certificate = find(&docs, "Certificate", "rg-server-tls");
    assert_eq!(certificate["spec"]["secretName"], "rg-server-tls");
    let names = certificate["spec"]["dnsNames"].to_string();
    assert!(names.contains("rg-server.rolegate.svc"), "{names}");
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "rg-ca");
    find(&docs, "Issuer", "rg-selfsigned");
    let webhook = find(&docs, "MutatingWebhookConfiguration", "rg");
    assert_eq!(
        webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "rolegate/rg-server-tls"
    );
    let controller = find(&docs, "Deployment", "rg-controller");
    let args = controller["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--certificates=external"), "{args}");

    // An issuer of the platform's own replaces the chart's CA.
    let (ok, docs, err) = render(&[
        "--set",
        "publicURL=https://rolegate.example.com",
        "--set",
        "certificates.mode=cert-manager",
        "--set",
        "certificates.certManager.issuerRef.name=corp-ca",
        "--set",
        "certificates.certManager.issuerRef.kind=ClusterIssuer",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        find(&docs, "Certificate", "rg-server-tls")["spec"]["issuerRef"]["kind"],
        "ClusterIssuer"
    );
    assert!(!docs.iter().any(|d| d["kind"] == "Issuer"));
}

/// Whether ServiceAccount `rolegate/<sa>` may `verb` `resource` (core group) in `namespace`,
/// by the rendered Roles, ClusterRoles and their bindings. A rule limited by `resourceNames`
/// still counts: the question is whether any such Secret is reachable.
fn may(docs: &[serde_json::Value], sa: &str, verb: &str, resource: &str, namespace: &str) -> bool {
    let contains = |list: &serde_json::Value, want: &str| {
        list.as_array()
            .is_some_and(|l| l.iter().any(|v| v == want || v == "*"))
    };
    docs.iter()
        .filter(|b| b["kind"] == "RoleBinding" || b["kind"] == "ClusterRoleBinding")
        .filter(|b| {
            b["subjects"].as_array().is_some_and(|s| {
                s.iter().any(|s| {
                    s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == "rolegate"
                })
            })
        })
        .filter(|b| b["kind"] == "ClusterRoleBinding" || b["metadata"]["namespace"] == namespace)
        .filter_map(|b| {
            let kind = b["roleRef"]["kind"].as_str()?;
            let name = &b["roleRef"]["name"];
            docs.iter().find(|r| {
                r["kind"] == kind
                    && r["metadata"]["name"] == *name
                    && (kind == "ClusterRole" || r["metadata"]["namespace"] == namespace)
            })
        })
        .flat_map(|role| role["rules"].as_array().cloned().unwrap_or_default())
        .any(|rule| {
            contains(&rule["apiGroups"], "")
                && contains(&rule["resources"], resource)
                && contains(&rule["verbs"], verb)
        })
}

const SECRET_VERBS: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];

#[test]
fn the_ca_key_and_aws_keys_live_where_only_the_controller_reads_secrets() {
    let (ok, docs, err) = render(&["--set", "publicURL=https://rolegate.example.com"]);
    assert!(ok, "{err}");
    // The server reads the release namespace's Secrets (signing keys, serving certificate,
    // login Secrets) and nothing of the controller's Secrets namespace.
    for verb in ["get", "list", "watch"] {
        assert!(
            may(&docs, "rg-server", verb, "secrets", "rolegate"),
            "{verb}"
        );
    }
    for verb in SECRET_VERBS {
        assert!(
            !may(&docs, "rg-server", verb, "secrets", "rolegate-controller"),
            "the server may {verb} Secrets in rolegate-controller"
        );
    }
    // The controller keeps the CA and reads IAM access keys there.
    for verb in ["get", "create", "update"] {
        assert!(
            may(
                &docs,
                "rg-controller",
                verb,
                "secrets",
                "rolegate-controller"
            ),
            "the controller may not {verb} Secrets in rolegate-controller"
        );
    }
    let namespace = find(&docs, "Namespace", "rolegate-controller");
    assert_eq!(
        namespace["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "uninstalling must not delete the AWS keys and the CA"
    );
    let controller = find(&docs, "Deployment", "rg-controller");
    let args = controller["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    for want in [
        "--secrets-namespace=rolegate-controller",
        "--ca-secret=rg-ca",
        "--lease-duration-seconds=15",
        "--renew-deadline-seconds=10",
        "--retry-period-seconds=2",
    ] {
        assert!(args.contains(want), "{want} missing from {args}");
    }
    assert!(
        !args.contains("--cluster-name"),
        "no clusterName: the controller uses the kube-system UID"
    );

    // A namespace made elsewhere, and a cluster name.
    let (ok, docs, err) = render(&[
        "--set",
        "publicURL=https://rolegate.example.com",
        "--set",
        "controller.secretsNamespace=corp-rolegate-keys",
        "--set",
        "controller.createSecretsNamespace=false",
        "--set",
        "clusterName=prod-eu-1",
    ]);
    assert!(ok, "{err}");
    assert!(!docs.iter().any(|d| d["kind"] == "Namespace"));
    assert!(may(
        &docs,
        "rg-controller",
        "get",
        "secrets",
        "corp-rolegate-keys"
    ));
    for verb in SECRET_VERBS {
        assert!(!may(
            &docs,
            "rg-server",
            verb,
            "secrets",
            "corp-rolegate-keys"
        ));
    }
    let args = find(&docs, "Deployment", "rg-controller")["spec"]["template"]["spec"]["containers"]
        [0]["args"]
        .to_string();
    assert!(
        args.contains("--secrets-namespace=corp-rolegate-keys"),
        "{args}"
    );
    assert!(args.contains("--cluster-name=prod-eu-1"), "{args}");

    // The server's own namespace cannot be the controller's.
    let (ok, _, err) = render(&[
        "--set",
        "publicURL=https://rolegate.example.com",
        "--set",
        "controller.secretsNamespace=rolegate",
    ]);
    assert!(!ok);
    assert!(
        err.contains("controller.secretsNamespace must differ from the release namespace"),
        "{err}"
    );
}

/// The server Deployment's container.
fn server_container(docs: &[serde_json::Value]) -> &serde_json::Value {
    &find(docs, "Deployment", "rg-server")["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn the_ingress_routes_only_to_the_public_listener() {
    let (ok, docs, err) = render(&["--set", "publicURL=https://rolegate.example.com"]);
    assert!(ok, "{err}");
    assert!(
        !docs.iter().any(|d| d["kind"] == "Ingress"),
        "the Ingress is off by default"
    );
    // The public listener is its own container port and Service port.
    let container = server_container(&docs);
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for want in [
        "--listen=0.0.0.0:8080",
        "--public-listen=0.0.0.0:8081",
        "--tls-listen=0.0.0.0:8443",
        "--header-read-timeout-seconds=10",
        "--request-timeout-seconds=30",
        "--max-connections=4096",
    ] {
        assert!(args.contains(&want), "{want} missing from {args:?}");
    }
    let public_port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "public")
        .expect("a container port named public");
    assert_eq!(public_port["containerPort"], 8081);
    let service = find(&docs, "Service", "rg-server");
    let ports = service["spec"]["ports"].as_array().unwrap();
    let names: Vec<(&str, &str)> = ports
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["targetPort"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("http", "http"), ("https", "https"), ("public", "public")]
    );
    // The webhook and the agents use the internal TLS port, never the public one.
    let hook = &find(&docs, "MutatingWebhookConfiguration", "rg")["webhooks"][0];
    assert_eq!(hook["clientConfig"]["service"]["port"], 443);
    let agent = &find(&docs, "DaemonSet", "rg-agent")["spec"]["template"]["spec"]["containers"][0];
    let agent_args = agent["args"].to_string();
    assert!(
        agent_args.contains("--server=https://rg-server.rolegate.svc:443"),
        "{agent_args}"
    );
    assert!(
        agent_args.contains("--max-connections=1024"),
        "{agent_args}"
    );

    let ingress_backends = |docs: &[serde_json::Value]| -> Vec<(String, String, String)> {
        let ingress = find(docs, "Ingress", "rg-server");
        let rules = ingress["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0]["host"], "rolegate.example.com",
            "the publicURL's host"
        );
        rules[0]["http"]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let backend = &p["backend"]["service"];
                assert_eq!(backend["name"], "rg-server");
                assert!(
                    backend["port"].get("number").is_none(),
                    "ports are named, so they follow the Service"
                );
                (
                    p["path"].as_str().unwrap().to_owned(),
                    p["pathType"].as_str().unwrap().to_owned(),
                    backend["port"]["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let (ok, docs, err) = render(&[
        "--set",
        "publicURL=https://rolegate.example.com",
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.className=nginx",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        ingress_backends(&docs),
        [("/".to_owned(), "Prefix".to_owned(), "public".to_owned())]
    );
    assert_eq!(
        find(&docs, "Ingress", "rg-server")["spec"]["ingressClassName"],
        "nginx"
    );

    // Routing /delegation out too is a separate, explicit choice: that one exact path to the
    // internal port, everything else still to the public one.
    let (ok, docs, err) = render(&[
        "--set",
        "publicURL=https://rolegate.example.com",
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.delegation=true",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        ingress_backends(&docs),
        [
            (
                "/delegation".to_owned(),
                "Exact".to_owned(),
                "http".to_owned()
            ),
            ("/".to_owned(), "Prefix".to_owned(), "public".to_owned()),
        ]
    );
}
