//! The Helm chart, checked by the real `helm` (installed by tests/peers/install.sh): it lints,
//! renders the workloads with least-privilege RBAC, ships exactly the generated CRDs, and refuses
//! to render without a public URL. Every documented option combination is rendered and validated
//! against the Kubernetes OpenAPI schemas with `kubernetes-validate` (from the peers venv).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{repo, run, venv};

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
    // The pod audit (pods admitted without credentials) is the controller's: it reads pods and
    // what the policy reads, and publishes Events.
    for verb in ["list", "watch"] {
        for resource in ["pods", "serviceaccounts", "namespaces"] {
            assert!(
                may(&docs, "rg-controller", verb, resource, "team-a"),
                "{verb} {resource}"
            );
        }
    }
    assert!(!may(&docs, "rg-server", "watch", "pods", "team-a"));
    // Secrets only in the release namespace, never cluster-wide.
    for role in docs.iter().filter(|d| d["kind"] == "ClusterRole") {
        assert!(
            !role["rules"].to_string().contains("secrets"),
            "{} grants Secrets cluster-wide",
            role["metadata"]["name"]
        );
    }

    // The key sealing sign-in cookies: by default the controller creates it at run time; with
    // session.create the chart renders one Secret every replica reads, labelled for the index.
    assert!(!docs.iter().any(|d| d["kind"] == "Secret"));
    let (ok, docs, err) = render(&[
        "--set",
        "publicURL=https://rolegate.example.com",
        "--set",
        "session.create=true",
    ]);
    assert!(ok, "{err}");
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

const URL: [&str; 2] = ["--set", "publicURL=https://rolegate.example.com"];

/// Renders with the public URL and `sets` (each `key=value`), asserting success.
fn rendered(sets: &[&str]) -> Vec<serde_json::Value> {
    let mut args: Vec<&str> = URL.to_vec();
    for set in sets {
        args.extend(["--set", set]);
    }
    let (ok, docs, err) = render(&args);
    assert!(ok, "helm template {sets:?} failed: {err}");
    docs
}

/// Every pod template of the rendered workloads, by kind/name.
fn pod_specs(docs: &[serde_json::Value]) -> Vec<(String, &serde_json::Value)> {
    docs.iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "DaemonSet")
        .map(|d| {
            (
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                ),
                &d["spec"]["template"],
            )
        })
        .collect()
}

/// Every container and init container of a pod template.
fn containers(template: &serde_json::Value) -> Vec<&serde_json::Value> {
    let spec = &template["spec"];
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[k].as_array())
        .flatten()
        .collect()
}

/// The documented option combinations (README, values.yaml), each rendered and validated.
const COMBINATIONS: &[&[&str]] = &[
    &[],
    &["certificates.mode=cert-manager"],
    &[
        "certificates.mode=cert-manager",
        "certificates.certManager.issuerRef.name=corp-ca",
        "certificates.certManager.issuerRef.kind=ClusterIssuer",
    ],
    &[
        "ingress.enabled=true",
        "ingress.className=nginx",
        "ingress.delegation=true",
        "ingress.tls[0].secretName=rolegate-tls",
        "ingress.tls[0].hosts[0]=rolegate.example.com",
    ],
    &[
        "networkPolicy.enabled=true",
        "networkPolicy.nodeCIDRs[0]=10.0.0.0/16",
        "networkPolicy.apiServerCIDRs[0]=10.1.0.0/24",
        "ingress.enabled=true",
        "ingress.delegation=true",
    ],
    &[
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.dashboard.enabled=true",
    ],
    &[
        "agent.startupTaint.enabled=true",
        "agent.allowedHosts[0]=creds.local",
    ],
    &[
        "agent.port=2703",
        "agent.ipv6=true",
        "agent.setupAddress=false",
    ],
    &["agent.address=fd00:ec2::23"],
    &["controller.aws.irsaRoleARN=arn:aws:iam::123456789012:role/rolegate"],
    &["controller.aws.webIdentity.roleARN=arn:aws:iam::123456789012:role/rolegate"],
    &[
        "session.create=true",
        "crds.install=true",
        "crds.keep=false",
    ],
    &[
        "crds.install=true",
        "controller.createSecretsNamespace=false",
    ],
    &[
        "imagePullSecrets[0].name=regcred",
        "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "logFormat=json",
        "logLevel=rolegate=debug",
        "server.nodeSelector.pool=system",
        "server.tolerations[0].operator=Exists",
        "server.priorityClassName=high",
        "server.podAnnotations.a=b",
        "server.extraEnv[0].name=X",
        "server.extraEnv[0].value=y",
        "controller.replicas=1",
        "server.replicas=3",
        "agent.priorityClassName=",
        "webhook.objectSelector.matchLabels.team=a",
        "webhook.namespaceSelector.matchLabels.env=prod",
        "webhook.timeoutSeconds=10",
    ],
    &["webhook.enabled=false", "agent.enabled=false"],
];

/// The Kubernetes versions the chart supports (schemas shipped by kubernetes-validate).
const KUBERNETES_VERSIONS: [&str; 6] = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"];

/// Kinds that have no schema in kubernetes-validate: their CRDs are cert-manager's and
/// prometheus-operator's, so the validator skips them with a warning.
const CUSTOM_KINDS: [&str; 5] = [
    "Certificate",
    "Issuer",
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
];

#[test]
fn every_rendered_manifest_passes_the_kubernetes_schemas_of_each_supported_version() {
    let dir = tempfile::tempdir().unwrap();
    // Each distinct object once (most are the same in every combination), in one file.
    let mut unique = std::collections::BTreeSet::new();
    for sets in COMBINATIONS {
        let mut args: Vec<&str> = URL.to_vec();
        for set in *sets {
            args.extend(["--set", set]);
        }
        let (ok, docs, err) = render(&args);
        assert!(ok, "helm template {sets:?}: {err}");
        unique.extend(docs.iter().map(serde_json::Value::to_string));
    }
    assert!(unique.len() > 40, "{}", unique.len());
    let rendered = dir.path().join("rendered.yaml");
    std::fs::write(
        &rendered,
        unique.into_iter().collect::<Vec<_>>().join("\n---\n"),
    )
    .unwrap();
    let mut files = vec![rendered];
    // The validator must catch a wrong manifest: a misspelt field and a string for a number.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: broken}\nspec:\n  replicas: two\n  \
         selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    \
         spec: {containers: [{name: c, image: i}]}\n",
    )
    .unwrap();
    files.push(broken.clone());

    let mut validate = Command::new(venv().join("bin/kubernetes-validate"));
    validate.args(["--strict", "--quiet"]);
    for version in KUBERNETES_VERSIONS {
        validate.args(["-k", version]);
    }
    let (_, out, err) = run(validate.args(&files));
    let lines: Vec<&str> = out.lines().collect();
    assert!(err.trim().is_empty(), "{err}");
    assert!(
        !lines.iter().any(|l| l.starts_with("FATAL")),
        "a version is not supported by kubernetes-validate: {out}"
    );
    let broken_name = broken.display().to_string();
    let errors: Vec<&&str> = lines.iter().filter(|l| l.starts_with("ERROR")).collect();
    assert_eq!(
        errors.len(),
        KUBERNETES_VERSIONS.len(),
        "only the broken manifest fails, once per version: {out}"
    );
    assert!(
        errors
            .iter()
            .all(|l| l.contains(&broken_name) && l.contains("spec.replicas")),
        "{out}"
    );
    for warning in lines.iter().filter(|l| l.starts_with("WARN")) {
        assert!(
            CUSTOM_KINDS
                .iter()
                .any(|k| warning.contains(&format!("kind {k} "))),
            "only custom kinds may lack a schema: {warning}"
        );
    }
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("WARN") || l.starts_with("ERROR")),
        "{out}"
    );
}

#[test]
fn a_misspelt_or_mistyped_value_fails_naming_the_key() {
    let (ok, _, err) = render(&[
        "--set",
        "publicURL=https://rolegate.example.com",
        "--set",
        "agent.startupTaint.enable=true",
    ]);
    assert!(!ok);
    assert!(
        err.contains("/agent/startupTaint") && err.contains("'enable' not allowed"),
        "{err}"
    );
    let (ok, _, err) = render(&[
        "--set",
        "publicURL=https://rolegate.example.com",
        "--set",
        "replicas=3",
    ]);
    assert!(!ok);
    assert!(err.contains("'replicas' not allowed"), "{err}");
    let (ok, _, err) = render(&[
        "--set",
        "publicURL=https://rolegate.example.com",
        "--set",
        "logFormat=xml",
    ]);
    assert!(!ok);
    assert!(err.contains("/logFormat"), "{err}");
    let (ok, _, err) = render(&[
        "--set",
        "publicURL=https://rolegate.example.com",
        "--set-string",
        "server.replicas=two",
    ]);
    assert!(!ok);
    assert!(err.contains("/server/replicas"), "{err}");
}

#[test]
fn the_values_table_in_the_chart_readme_is_current() {
    let (ok, out, err) = run(Command::new("python3")
        .current_dir(repo())
        .args(["scripts/chart-values-table.py", "--check"]));
    assert!(ok, "{out}{err}");
    let readme = std::fs::read_to_string(repo().join("charts/rolegate/README.md")).unwrap();
    for key in [
        "`agent.startupTaint.enabled`",
        "`networkPolicy.nodeCIDRs`",
        "`session.create`",
    ] {
        assert!(readme.contains(key), "{key} missing from the values table");
    }
}

#[test]
fn workloads_are_highly_available_and_locked_down_by_default() {
    let docs = rendered(&[]);
    for component in ["server", "controller"] {
        let deployment = find(&docs, "Deployment", &format!("rg-{component}"));
        assert_eq!(deployment["spec"]["replicas"], 2, "{component}");
        let pdb = find(&docs, "PodDisruptionBudget", &format!("rg-{component}"));
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
            component
        );
        let spread =
            deployment["spec"]["template"]["spec"]["topologySpreadConstraints"].to_string();
        assert!(
            spread.contains("topology.kubernetes.io/zone")
                && spread.contains("kubernetes.io/hostname"),
            "{spread}"
        );
    }
    // One replica: no PodDisruptionBudget, which would block every drain.
    let single = rendered(&["server.replicas=1"]);
    assert!(
        !single
            .iter()
            .any(|d| d["kind"] == "PodDisruptionBudget" && d["metadata"]["name"] == "rg-server")
    );

    let agent_caps = |port: &str| {
        let docs = rendered(&[&format!("agent.port={port}")]);
        let template = &find(&docs, "DaemonSet", "rg-agent")["spec"]["template"];
        containers(template)
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["securityContext"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    for (name, template) in pod_specs(&docs) {
        assert_eq!(
            template["spec"]["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        for container in containers(template) {
            let what = format!("{name} {}", container["name"]);
            let security = &container["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{what}");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{what}");
            assert_eq!(
                security["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{what}"
            );
            assert_eq!(
                security["seccompProfile"]["type"], "RuntimeDefault",
                "{what}"
            );
            assert!(container["resources"]["requests"].is_object(), "{what}");
            assert!(
                container["resources"]["limits"]["memory"].is_string(),
                "{what}"
            );
            let added = security["capabilities"]["add"].clone();
            if name == "DaemonSet/rg-agent" {
                // Root only for what it does: the link's NET_ADMIN, port 80's NET_BIND_SERVICE.
                let want = if container["name"] == "link" {
                    "NET_ADMIN"
                } else {
                    "NET_BIND_SERVICE"
                };
                assert_eq!(added, serde_json::json!([want]), "{what}");
            } else {
                assert_eq!(security["runAsNonRoot"], true, "{what}");
                assert!(added.is_null(), "{what}");
            }
            if container["name"] != "link" {
                assert!(container["livenessProbe"]["httpGet"].is_object(), "{what}");
                assert!(container["readinessProbe"]["httpGet"].is_object(), "{what}");
            }
        }
    }
    // On a port of 1024 or more the agent needs neither root nor a capability.
    for (name, security) in agent_caps("2703") {
        if name == "agent" {
            assert_eq!(security["runAsNonRoot"], true);
            assert!(security["capabilities"]["add"].is_null(), "{security}");
        }
    }
    // The controller stays leader-elected.
    let args = find(&docs, "Deployment", "rg-controller")["spec"]["template"]["spec"]["containers"]
        [0]["args"]
        .to_string();
    assert!(args.contains("--lease-name=rg-controller"), "{args}");
}

#[test]
fn the_agent_stays_off_windows_and_fargate_and_has_its_own_service_account() {
    let docs = rendered(&[]);
    let spec = &find(&docs, "DaemonSet", "rg-agent")["spec"]["template"]["spec"];
    let terms = &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchExpressions"];
    assert!(terms.as_array().unwrap().contains(&serde_json::json!(
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}
    )));
    assert!(terms.as_array().unwrap().contains(&serde_json::json!(
        {"key": "eks.amazonaws.com/compute-type", "operator": "NotIn", "values": ["fargate"]}
    )));
    assert_eq!(spec["serviceAccountName"], "rg-agent");
    assert_eq!(
        spec["automountServiceAccountToken"], false,
        "no API access without the taint"
    );
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    find(&docs, "ServiceAccount", "rg-agent");
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "rg-agent")
    );
    let args = spec["containers"][0]["args"].to_string();
    for want in [
        "--rate-limit-per-second=100",
        "--rate-limit-burst=200",
        "--max-concurrent-refreshes=32",
    ] {
        assert!(args.contains(want), "{want} missing from {args}");
    }
    assert!(!args.contains("--remove-startup-taint"), "{args}");

    // GKE refuses system-node-critical outside kube-system without a quota: a value.
    let docs = rendered(&["agent.priorityClassName=", "agent.affinity.podAffinity.x=y"]);
    let spec = &find(&docs, "DaemonSet", "rg-agent")["spec"]["template"]["spec"];
    assert!(spec.get("priorityClassName").is_none());
    assert!(
        spec["affinity"].get("nodeAffinity").is_none(),
        "a given affinity replaces the default"
    );
}

#[test]
fn the_startup_taint_is_removed_by_the_agent_with_nodes_get_and_patch_only() {
    let docs = rendered(&[
        "agent.startupTaint.enabled=true",
        "agent.allowedHosts[0]=creds.local",
        "agent.rateLimitPerSecond=0",
    ]);
    let spec = &find(&docs, "DaemonSet", "rg-agent")["spec"]["template"]["spec"];
    assert_eq!(spec["automountServiceAccountToken"], true);
    let container = &spec["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for want in [
        "--remove-startup-taint=rolegate.dev/agent-not-ready:NoSchedule",
        "--node-name=$(NODE_NAME)",
        "--allowed-host=creds.local",
        "--rate-limit-per-second=0",
    ] {
        assert!(args.contains(&want), "{want} missing from {args:?}");
    }
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(
                {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
            ))
    );
    let role = find(&docs, "ClusterRole", "rg-agent");
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}])
    );
    let binding = find(&docs, "ClusterRoleBinding", "rg-agent");
    assert_eq!(binding["subjects"][0]["name"], "rg-agent");
    assert_eq!(binding["roleRef"]["name"], "rg-agent");
}

#[test]
fn namespaces_choose_between_an_ignoring_and_a_failing_webhook() {
    let docs = rendered(&[
        "webhook.objectSelector.matchLabels.team=a",
        "webhook.namespaceSelector.matchLabels.env=prod",
        "webhook.timeoutSeconds=10",
    ]);
    let hooks = find(&docs, "MutatingWebhookConfiguration", "rg")["webhooks"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(hooks.len(), 2);
    let label = "rolegate.dev/webhook-failure-policy";
    let (ignore, fail) = (&hooks[0], &hooks[1]);
    assert_eq!(ignore["failurePolicy"], "Ignore");
    assert_eq!(fail["failurePolicy"], "Fail");
    assert_ne!(ignore["name"], fail["name"]);
    assert!(
        ignore["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"key": label, "operator": "NotIn", "values": ["Fail"]}))
    );
    assert!(
        fail["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"key": label, "operator": "In", "values": ["Fail"]}))
    );
    for hook in [ignore, fail] {
        assert_eq!(hook["timeoutSeconds"], 10);
        assert_eq!(hook["objectSelector"]["matchLabels"]["team"], "a");
        assert_eq!(hook["namespaceSelector"]["matchLabels"]["env"], "prod");
        assert_eq!(hook["clientConfig"], ignore["clientConfig"]);
        let excluded = hook["namespaceSelector"]["matchExpressions"][0]["values"].to_string();
        assert!(
            excluded.contains("kube-system") && excluded.contains("\"rolegate\""),
            "{excluded}"
        );
    }
}

#[test]
fn the_network_policy_lets_agents_and_the_api_server_in_and_only_the_ingress_to_the_public_port() {
    assert!(!rendered(&[]).iter().any(|d| d["kind"] == "NetworkPolicy"));
    let docs = rendered(&[
        "networkPolicy.enabled=true",
        "networkPolicy.nodeCIDRs[0]=10.0.0.0/16",
        "networkPolicy.apiServerCIDRs[0]=10.1.0.0/24",
    ]);
    let policy = find(&docs, "NetworkPolicy", "rg-server");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "server"
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    let ports = |rule: &serde_json::Value| -> Vec<String> {
        rule["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_str().unwrap().to_owned())
            .collect()
    };
    let internal = rules
        .iter()
        .find(|r| ports(r).contains(&"https".to_owned()))
        .unwrap();
    assert_eq!(ports(internal), ["http", "https"]);
    assert_eq!(
        internal["from"],
        serde_json::json!([{"ipBlock": {"cidr": "10.0.0.0/16"}}, {"ipBlock": {"cidr": "10.1.0.0/24"}}])
    );
    let public = rules
        .iter()
        .find(|r| ports(r).contains(&"public".to_owned()))
        .unwrap();
    assert_eq!(ports(public), ["public"]);
    assert_eq!(public["from"].as_array().unwrap().len(), 1);
    assert_eq!(
        public["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "ingress-nginx"
    );
    assert!(public["from"][0].get("ipBlock").is_none());
    // The named ports are the server container's.
    let names: Vec<&str> = server_container(&docs)["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["http", "https", "public"]);

    // With no source at all, the internal rule would have no peers, which admits every pod:
    // the chart refuses to render it.
    let (ok, _, err) = render(&[
        "--set",
        "publicURL=https://rolegate.example.com",
        "--set",
        "networkPolicy.enabled=true",
    ]);
    assert!(!ok);
    assert!(
        err.contains("networkPolicy.enabled needs networkPolicy.nodeCIDRs"),
        "{err}"
    );
    // extraInternalFrom alone is a source.
    let docs = rendered(&[
        "networkPolicy.enabled=true",
        "networkPolicy.extraInternalFrom[0].namespaceSelector.matchLabels.team=observability",
    ]);
    let policy = find(&docs, "NetworkPolicy", "rg-server");
    assert_eq!(
        policy["spec"]["ingress"][0]["from"],
        serde_json::json!([{"namespaceSelector": {"matchLabels": {"team": "observability"}}}])
    );
}

#[test]
fn upgrades_and_rerenders_keep_every_key() {
    // The signing keys, the CA, the serving certificate and (by default) the session key are
    // the controller's run-time Secrets: the chart renders none of them, so no upgrade or
    // re-render can change them, and two renders (GitOps) are identical.
    let render_text = |sets: &[&str]| {
        let mut command = helm();
        command
            .args([
                "template",
                "rg",
                "charts/rolegate",
                "--namespace",
                "rolegate",
            ])
            .args(URL);
        for set in sets {
            command.args(["--set", set]);
        }
        let (ok, out, err) = run(&mut command);
        assert!(ok, "{err}");
        out
    };
    let first = render_text(&[]);
    assert_eq!(first, render_text(&[]), "two renders differ");
    assert!(!first.contains("kind: Secret"), "no Secret rendered");

    // session.create=true renders the Secret, kept on uninstall and read back on upgrade...
    let docs = rendered(&["session.create=true"]);
    let session = find(&docs, "Secret", rolegate::login::SESSION_SECRET);
    assert_eq!(
        session["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let template =
        std::fs::read_to_string(repo().join("charts/rolegate/templates/session-secret.yaml"))
            .unwrap();
    assert!(
        template.contains("lookup \"v1\" \"Secret\" .Release.Namespace $name"),
        "helm upgrade reads the session key back"
    );
    // ... but without a cluster a generated key changes on every render: the reason it is off.
    let again = rendered(&["session.create=true"]);
    assert_ne!(
        find(&again, "Secret", rolegate::login::SESSION_SECRET)["data"],
        session["data"]
    );
}

#[test]
fn the_credentials_uri_follows_the_agent_address_for_coexistence_with_pod_identity() {
    let uri = |sets: &[&str]| {
        let docs = rendered(sets);
        let args = server_container(&docs)["args"].to_string();
        let agent = find(&docs, "DaemonSet", "rg-agent")["spec"]["template"]["spec"]["containers"]
            [0]["args"]
            .to_string();
        (args, agent)
    };
    let (server, agent) = uri(&["agent.port=2703"]);
    assert!(
        server.contains("--credentials-uri=http://169.254.170.23:2703/v1/credentials"),
        "{server}"
    );
    assert!(agent.contains("--listen=169.254.170.23:2703"), "{agent}");
    let (server, agent) = uri(&["agent.address=169.254.170.2"]);
    assert!(
        server.contains("--credentials-uri=http://169.254.170.2/v1/credentials"),
        "{server}"
    );
    assert!(agent.contains("--listen=169.254.170.2:80"), "{agent}");
    let (server, agent) = uri(&["agent.address=fd00:ec2::23", "agent.port=2703"]);
    assert!(
        server.contains("--credentials-uri=http://[fd00:ec2::23]:2703/v1/credentials"),
        "{server}"
    );
    assert!(agent.contains("--listen=[fd00:ec2::23]:2703"), "{agent}");
    let docs = rendered(&["agent.address=fd00:ec2::23"]);
    let link =
        &find(&docs, "DaemonSet", "rg-agent")["spec"]["template"]["spec"]["initContainers"][0];
    assert!(
        link["args"][0]
            .as_str()
            .unwrap()
            .contains("ip -6 addr replace fd00:ec2::23/128"),
        "{link}"
    );
}

#[test]
fn platform_settings_reach_every_workload() {
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let docs = rendered(&[
        "imagePullSecrets[0].name=regcred",
        &format!("image.digest={digest}"),
        "logFormat=json",
        "logLevel=rolegate=debug",
        "server.nodeSelector.pool=system",
        "controller.tolerations[0].operator=Exists",
        "server.priorityClassName=high",
        "server.podAnnotations.a=b",
        "server.extraEnv[0].name=X",
        "server.extraEnv[0].value=y",
        "controller.extraEnv[0].name=Y",
        "controller.extraEnv[0].value=z",
        "agent.extraEnv[0].name=Z",
        "agent.extraEnv[0].value=w",
        "agent.nodeSelector.pool=any",
    ]);
    for (name, template) in pod_specs(&docs) {
        assert_eq!(
            template["spec"]["imagePullSecrets"],
            serde_json::json!([{"name": "regcred"}]),
            "{name}"
        );
        for container in containers(template) {
            assert_eq!(
                container["image"],
                format!("ghcr.io/rolegate/rolegate@{digest}"),
                "{name}"
            );
        }
        let env = template["spec"]["containers"][0]["env"].as_array().unwrap();
        assert!(
            env.contains(&serde_json::json!({"name": "ROLEGATE_LOG_FORMAT", "value": "json"})),
            "{name}"
        );
        assert!(
            env.contains(&serde_json::json!({"name": "ROLEGATE_LOG", "value": "rolegate=debug"})),
            "{name}"
        );
        let extra = match name.as_str() {
            "Deployment/rg-server" => "X",
            "Deployment/rg-controller" => "Y",
            _ => "Z",
        };
        assert!(env.iter().any(|e| e["name"] == extra), "{name}");
    }
    let server = &find(&docs, "Deployment", "rg-server")["spec"]["template"];
    assert_eq!(server["spec"]["nodeSelector"]["pool"], "system");
    assert_eq!(server["spec"]["priorityClassName"], "high");
    assert_eq!(server["metadata"]["annotations"]["a"], "b");
    let controller = &find(&docs, "Deployment", "rg-controller")["spec"]["template"]["spec"];
    assert_eq!(
        controller["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    let agent = &find(&docs, "DaemonSet", "rg-agent")["spec"]["template"]["spec"];
    assert_eq!(agent["nodeSelector"]["pool"], "any");
    // Text logs are the binaries' default: no variable rendered.
    let docs = rendered(&[]);
    for (name, template) in pod_specs(&docs) {
        assert!(
            !template.to_string().contains("ROLEGATE_LOG_FORMAT"),
            "{name}"
        );
    }
}

#[test]
fn the_controller_reaches_iam_through_irsa_or_web_identity() {
    let role = "arn:aws:iam::123456789012:role/rolegate";
    let docs = rendered(&[&format!("controller.aws.irsaRoleARN={role}")]);
    assert_eq!(
        find(&docs, "ServiceAccount", "rg-controller")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        role
    );
    let docs = rendered(&[&format!("controller.aws.webIdentity.roleARN={role}")]);
    let spec = &find(&docs, "Deployment", "rg-controller")["spec"]["template"]["spec"];
    let token = &spec["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "sts.amazonaws.com");
    assert_eq!(token["path"], "token");
    let container = &spec["containers"][0];
    let mount = &container["volumeMounts"][0];
    assert_eq!(mount["name"], spec["volumes"][0]["name"]);
    let env = container["env"].as_array().unwrap();
    assert!(env.contains(&serde_json::json!({"name": "AWS_ROLE_ARN", "value": role})));
    let file = format!("{}/token", mount["mountPath"].as_str().unwrap());
    assert!(
        env.contains(&serde_json::json!({"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": file}))
    );
    // Neither by default.
    let docs = rendered(&[]);
    let controller = find(&docs, "Deployment", "rg-controller").to_string();
    assert!(!controller.contains("AWS_ROLE_ARN"));
}

#[test]
fn templated_crds_are_the_generated_ones_and_kept_on_uninstall() {
    // Without --include-crds: crds/ is not rendered, only the templated copy.
    let crds = |sets: &[&str]| {
        let mut args: Vec<&str> = vec![
            "template",
            "rg",
            "charts/rolegate",
            "--namespace",
            "rolegate",
        ];
        args.extend(URL);
        for set in sets {
            args.extend(["--set", set]);
        }
        let (ok, out, err) = run(helm().args(&args));
        assert!(ok, "{err}");
        let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(&out).unwrap();
        docs.into_iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .collect::<Vec<_>>()
    };
    assert!(crds(&[]).is_empty(), "off by default: crds/ installs them");
    let templated = crds(&["crds.install=true"]);
    assert_eq!(templated.len(), 4);
    for (file, yaml) in rolegate::crd::render_files().unwrap() {
        let mut generated: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        let name = generated["metadata"]["name"].clone();
        let crd = templated
            .iter()
            .find(|c| c["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{file}"));
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
        assert_eq!(
            crd["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
        let mut crd = crd.clone();
        crd["metadata"] = serde_json::Value::Null;
        generated["metadata"] = serde_json::Value::Null;
        assert_eq!(crd, generated, "{file}");
    }
    for crd in crds(&["crds.install=true", "crds.keep=false"]) {
        assert!(
            crd["metadata"].get("annotations").is_none(),
            "{}",
            crd["metadata"]
        );
    }
}

/// Every metric name rolegate exports, from the registrations in src/ (the counters also as
/// `_total`, histograms with their series).
fn exported_metrics() -> Vec<String> {
    let mut names = vec![];
    for (file, prefix) in [
        ("src/metrics.rs", "rolegate"),
        ("src/controller/mod.rs", "rolegate"),
        ("src/agent.rs", "rolegate_agent"),
        ("src/agent/mod.rs", "rolegate_agent"),
        ("src/webhook.rs", "rolegate"),
    ] {
        let Ok(source) = std::fs::read_to_string(repo().join(file)) else {
            continue;
        };
        for call in ["register(", "counter("] {
            for (at, _) in source.match_indices(call) {
                let rest = &source[at + call.len()..];
                let Some(open) = rest.find('"') else { continue };
                if rest[..open].contains(')') {
                    continue;
                }
                let name: String = rest[open + 1..].chars().take_while(|c| *c != '"').collect();
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    for suffix in ["", "_total", "_bucket", "_sum", "_count"] {
                        names.push(format!("{prefix}_{name}{suffix}"));
                    }
                }
            }
        }
    }
    names
}

/// The metric names an expression uses (identifiers starting rolegate_ or certmanager_).
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = expr;
    while let Some(at) = rest.find(|c: char| c.is_ascii_lowercase()) {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let before = rest[..at].chars().last();
        if before.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_' && c != '"' && c != '$')
            && (word.starts_with("rolegate_") || word.starts_with("certmanager_"))
        {
            out.push(word.clone());
        }
        rest = &rest[at + word.len().max(1)..];
    }
    out
}

#[test]
fn monitoring_objects_follow_their_switches_and_name_only_exported_metrics() {
    let docs = rendered(&[]);
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert!(
            !docs.iter().any(|d| d["kind"] == kind),
            "{kind} is off by default"
        );
    }
    assert!(!docs.iter().any(|d| d["metadata"]["name"] == "rg-dashboard"));
    find(&docs, "Service", "rg-controller-metrics");

    assert_eq!(
        metrics_in(r#"sum by (kind) (rate(rolegate_nope_total{kind="a"}[5m])) / certmanager_x"#),
        ["rolegate_nope_total", "certmanager_x"]
    );
    let exported = exported_metrics();
    assert!(!exported.contains(&"rolegate_nope_total".to_owned()));
    assert!(
        exported.contains(&"rolegate_sts_calls_total".to_owned()),
        "{exported:?}"
    );
    assert!(
        exported.contains(&"rolegate_agent_stale_served_total".to_owned()),
        "{exported:?}"
    );
    assert!(
        exported.contains(&"rolegate_reconcile_errors_total".to_owned()),
        "{exported:?}"
    );
    let known = |name: &str, cert_manager: bool| {
        exported.iter().any(|e| e == name)
            || (cert_manager && name == "certmanager_certificate_expiration_timestamp_seconds")
    };

    for mode in ["self-signed", "cert-manager"] {
        let docs = rendered(&[
            "monitoring.serviceMonitor.enabled=true",
            "monitoring.prometheusRule.enabled=true",
            "monitoring.dashboard.enabled=true",
            &format!("certificates.mode={mode}"),
        ]);
        let cert_manager = mode == "cert-manager";
        let monitor = find(&docs, "ServiceMonitor", "rg");
        let ports: Vec<&str> = monitor["spec"]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["port"].as_str().unwrap())
            .collect();
        assert_eq!(ports, ["http", "metrics"]);
        // Each agent is scraped on its node IP, where it serves metrics and never credentials.
        let agents = find(&docs, "PodMonitor", "rg-agent");
        assert_eq!(agents["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
        let daemonset = find(&docs, "DaemonSet", "rg-agent");
        let agent = &daemonset["spec"]["template"]["spec"]["containers"][0];
        assert!(
            agent["args"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("--metrics-listen=$(HOST_IP):9102")),
            "{agent}"
        );
        assert_eq!(agent["ports"][0]["containerPort"], 9102);
        // The ports it scrapes are the Services' own.
        assert!(
            find(&docs, "Service", "rg-server")["spec"]["ports"]
                .to_string()
                .contains("\"http\"")
        );
        assert!(
            find(&docs, "Service", "rg-controller-metrics")["spec"]["ports"]
                .to_string()
                .contains("\"metrics\"")
        );

        let rule = find(&docs, "PrometheusRule", "rg");
        let alerts = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
        let names: Vec<&str> = alerts
            .iter()
            .map(|a| a["alert"].as_str().unwrap())
            .collect();
        for want in [
            "RolegateIAMSyncFailing",
            "RolegateSTSErrorRate",
            "RolegateSTSThrottlingNotAbsorbed",
            "RolegateAgentServingStale",
        ] {
            assert!(names.contains(&want), "{want} missing: {names:?}");
        }
        assert_eq!(
            names.contains(&"RolegateServingCertificateExpiring"),
            cert_manager
        );
        for alert in alerts {
            let expr = alert["expr"].as_str().unwrap();
            let used = metrics_in(expr);
            assert!(!used.is_empty(), "{expr}");
            for metric in used {
                assert!(
                    known(&metric, cert_manager),
                    "{} uses {metric}, which nothing exports",
                    alert["alert"]
                );
            }
        }

        let dashboard = find(&docs, "ConfigMap", "rg-dashboard");
        assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
        let json: serde_json::Value =
            serde_json::from_str(dashboard["data"]["rolegate.json"].as_str().unwrap()).unwrap();
        let panels = json["panels"].as_array().unwrap();
        assert!(panels.len() >= 8);
        for panel in panels {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for metric in metrics_in(expr) {
                    assert!(
                        known(&metric, true),
                        "panel {} uses {metric}",
                        panel["title"]
                    );
                }
            }
        }
    }
}

#[test]
fn agents_route_pods_over_the_servers_headless_service_and_verify_the_service_name() {
    let docs = rendered(&[]);
    let headless = find(&docs, "Service", "rg-server-endpoints");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(
        headless["spec"]["selector"]["app.kubernetes.io/component"],
        "server"
    );
    assert_eq!(headless["spec"]["ports"][0]["port"], 8443);
    let server = find(&docs, "Deployment", "rg-server");
    assert!(
        server["spec"]["template"]["spec"]["containers"][0]["ports"]
            .to_string()
            .contains(r#""containerPort":8443"#),
        "the headless port is the server's TLS port"
    );
    let args = |docs: &[serde_json::Value]| {
        find(docs, "DaemonSet", "rg-agent")["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let on = args(&docs);
    assert!(
        on.iter()
            .any(|a| a == "--server-endpoints-dns=rg-server-endpoints.rolegate.svc:8443"),
        "{on:?}"
    );
    // TLS is still verified against the Service name the serving certificate carries.
    assert!(
        on.iter()
            .any(|a| a.starts_with("--server=https://rg-server.rolegate.svc:"))
    );
    let off = args(&rendered(&["agent.routeToReplicas=false"]));
    assert!(
        !off.iter().any(|a| a.starts_with("--server-endpoints-dns")),
        "{off:?}"
    );
}
