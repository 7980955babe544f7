//! The whole operator, as a cluster runs it: one scenario ([`scenario`]) of what a platform
//! team and an application team do, over a small [`Cluster`] abstraction with two
//! implementations.
//!
//! - **Local** (`system_on_the_test_api_server`, in `make test`): the strict test API server of
//!   `tests/kube/` (RBAC, admission webhooks, TokenRequest/TokenReview), moto, and `rolegate
//!   controller` (two replicas), `rolegate server` and `rolegate agent` as separate processes.
//!   Everything they get is read from `helm template` of `charts/rolegate`: every object of the
//!   render (ServiceAccounts, Roles and bindings, the MutatingWebhookConfiguration, Services,
//!   Deployments, the DaemonSet) is applied with the real `kubectl` as helm would, and the
//!   processes are the workloads' pods: each runs with its container's `args` and `env` and a
//!   kubeconfig for its pod's ServiceAccount. Only what must be local is rewritten, in
//!   [`localize`].
//! - **Real** (`system_on_a_real_cluster`, `make e2e`): the chart installed with `helm` into
//!   the cluster of `ROLEGATE_E2E_KUBECONFIG` (or `KUBECONFIG` with `ROLEGATE_E2E=1`), the image
//!   `ROLEGATE_E2E_IMAGE` already loaded into its nodes (`kind load docker-image`).
//!
//! On the test API server the run ends with its audit log: no component ever got 403, the two
//! controller replicas never wrote at once, and every RBAC rule of the chart was used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "kube/mod.rs"]
mod kube_server;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use common::{ACCOUNT, repo, run, venv};

const RELEASE: &str = "rg";
const NAMESPACE: &str = "rolegate";
const TEAM: &str = "e2e-team";
/// A namespace the IAMProvider does not allow.
const OTHER: &str = "e2e-other";

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn system_on_the_test_api_server() {
    let mut cluster = Cluster::Local(Box::new(Local::start().await));
    scenario(&mut cluster).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a disposable Kubernetes cluster with the image loaded: run with `make e2e`"]
async fn system_on_a_real_cluster() {
    let mut cluster = Cluster::Real(Real::from_env());
    scenario(&mut cluster).await;
    cluster.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The scenario.

async fn scenario(cluster: &mut Cluster) {
    let started = Instant::now();
    let step = |what: &str| println!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let account = ACCOUNT;
    let provider_name = common::unique("e2e");
    let dir = cluster.dir().to_owned();

    step("kubectl apply the CRDs");
    cluster.kubectl_ok(&["apply", "-f", "charts/rolegate/crds/"]);
    cluster.kubectl_wait(&[
        "--for=condition=Established",
        "--timeout=60s",
        "crd/samlapps.rolegate.dev",
        "crd/iamproviders.rolegate.dev",
        "crd/rolemappings.rolegate.dev",
        "crd/connections.rolegate.dev",
    ]);

    step("an earlier version's CA, left in the release namespace");
    // Versions before the Secrets namespace kept the operator CA beside the server's Secrets:
    // the controller moves it (the same CA, so agents keep trusting the server) and deletes it.
    let legacy_ca = rolegate::pki::new_ca(jiff::Timestamp::now(), "rolegate CA").unwrap();
    let legacy = json!([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": format!("{RELEASE}-ca"), "namespace": NAMESPACE,
                      "labels": {"app.kubernetes.io/managed-by": "rolegate"}},
         "stringData": {"tls.crt": legacy_ca.cert_pem, "tls.key": legacy_ca.key_pem}},
    ]);
    let legacy_file = common::write(
        &dir,
        "legacy-ca.yaml",
        &legacy
            .as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n---\n"),
    );
    cluster.kubectl_ok(&["apply", "-f", legacy_file.to_str().unwrap()]);

    step("install the chart");
    let values = values(&cluster.moto_for_workloads(), cluster.image());
    let values_file = common::write(&dir, "values.yaml", &values.to_string());
    let chart = Chart::render(&values_file);
    cluster.install(&chart, &values_file).await;

    step("kubectl apply the resources");
    let resources = format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {TEAM}, labels: {{rolegate.dev/aws-access: "true"}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {OTHER}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: app, namespace: {TEAM}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: app, namespace: {OTHER}}}
---
apiVersion: rolegate.dev/v1alpha1
kind: SAMLApp
metadata: {{name: e2e}}
spec: {{}}
---
apiVersion: rolegate.dev/v1alpha1
kind: IAMProvider
metadata: {{name: e2e}}
spec:
  samlApp: e2e
  accountId: "{account}"
  providerName: {provider_name}
  deletionPolicy: Delete
  allowedNamespaces: {{matchLabels: {{rolegate.dev/aws-access: "true"}}}}
  allowedRoles: ["arn:aws:iam::{account}:role/e2e-*"]
---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: e2e-cluster}}
spec: {{kubernetes: {{audiences: [rolegate]}}}}
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: app, namespace: {TEAM}}}
spec:
  provider: e2e
  roleArn: arn:aws:iam::{account}:role/e2e-reader
  subjects: [{{kind: ServiceAccount, name: app}}]
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: borrowed, namespace: {OTHER}}}
spec:
  provider: e2e
  roleArn: arn:aws:iam::{account}:role/e2e-reader
  subjects: [{{kind: ServiceAccount, name: app}}]
"#
    );
    let resources_file = common::write(&dir, "resources.yaml", &resources);
    cluster.kubectl_ok(&["apply", "-f", resources_file.to_str().unwrap()]);

    step("kubectl wait for Ready and Accepted");
    cluster.kubectl_wait(&[
        "--for=condition=Ready",
        "--timeout=90s",
        "samlapp/e2e",
        "iamprovider/e2e",
        "connection/e2e-cluster",
    ]);
    cluster.kubectl_wait(&[
        "--for=condition=Accepted",
        "--timeout=60s",
        "-n",
        TEAM,
        "rolemapping/app",
    ]);
    cluster.kubectl_wait(&[
        "--for=condition=Accepted=False",
        "--timeout=60s",
        "-n",
        OTHER,
        "rolemapping/borrowed",
    ]);
    let reason = cluster.kubectl_ok(&[
        "get",
        "-n",
        OTHER,
        "rolemapping/borrowed",
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="Accepted")].reason}"#,
    ]);
    assert_eq!(reason.trim(), "NamespaceNotAllowed");

    step("kubectl get prints the printer columns");
    let table = cluster.kubectl_ok(&["get", "samlapps,iamproviders,rolemappings", "-A"]);
    println!("{table}");
    assert_eq!(cell(&table, "samlapp.rolegate.dev/e2e", "READY"), "True");
    assert_eq!(
        cell(&table, "iamprovider.rolegate.dev/e2e", "READY"),
        "True"
    );
    let provider_arn = format!("arn:aws:iam::{account}:saml-provider/{provider_name}");
    assert_eq!(
        cell(&table, "iamprovider.rolegate.dev/e2e", "ARN"),
        provider_arn
    );
    assert_eq!(
        cell(&table, "rolemapping.rolegate.dev/app", "ACCEPTED"),
        "True"
    );
    assert_eq!(
        cell(&table, "rolemapping.rolegate.dev/borrowed", "ACCEPTED"),
        "False"
    );

    step("the controller's Secrets, CA bundle and the webhook's caBundle");
    let client = cluster.client().await;
    let fullname = RELEASE;
    let secrets_namespace = format!("{NAMESPACE}-controller");
    let signing = Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .get("e2e-signing")
        .await
        .expect("the SAMLApp's signing Secret");
    assert!(
        signing.data.as_ref().is_some_and(|d| !d.is_empty()),
        "the signing Secret holds the key"
    );
    let ca_secret = Api::<Secret>::namespaced(client.clone(), &secrets_namespace)
        .get(&format!("{fullname}-ca"))
        .await
        .expect("the operator CA Secret, in the controller's Secrets namespace");
    assert_eq!(
        String::from_utf8(ca_secret.data.as_ref().unwrap()["tls.crt"].0.clone()).unwrap(),
        legacy_ca.cert_pem,
        "the earlier version's CA was moved, not replaced"
    );
    assert!(
        Api::<Secret>::namespaced(client.clone(), NAMESPACE)
            .get_opt(&format!("{fullname}-ca"))
            .await
            .unwrap()
            .is_none(),
        "the CA is gone from the namespace the server reads"
    );
    let ca_bundle = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .get(&format!("{fullname}-ca"))
        .await
        .expect("the CA bundle ConfigMap")
        .data
        .unwrap_or_default()
        .remove("ca.crt")
        .expect("ca.crt in the CA bundle ConfigMap");
    let serving = Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .get(&format!("{fullname}-server-tls"))
        .await
        .expect("the serving certificate Secret");
    assert_eq!(serving.type_.as_deref(), Some("kubernetes.io/tls"));
    let serving_cert =
        String::from_utf8(serving.data.as_ref().unwrap()["tls.crt"].0.clone()).unwrap();
    let info = rolegate::pki::inspect(&serving_cert).unwrap();
    assert!(
        info.dns_names
            .contains(&format!("{fullname}-server.{NAMESPACE}.svc")),
        "the serving certificate names the Service: {:?}",
        info.dns_names
    );
    let webhook = cluster.kubectl_json(&["get", "mutatingwebhookconfiguration", fullname]);
    for hook in webhook["webhooks"].as_array().unwrap() {
        let bundle = base64_decode(hook["clientConfig"]["caBundle"].as_str().unwrap_or(""));
        assert_eq!(
            String::from_utf8(bundle).unwrap().trim(),
            ca_bundle.trim(),
            "caBundle of {} is the published CA bundle",
            hook["name"]
        );
    }

    step("IAM (moto) holds the metadata");
    let (ok, out, err) = run(aws_cli().args([
        "iam",
        "get-saml-provider",
        "--saml-provider-arn",
        &provider_arn,
        "--output",
        "json",
    ]));
    assert!(ok, "aws iam get-saml-provider: {err}");
    let document: Value = serde_json::from_str(&out).unwrap();
    let metadata = document["SAMLMetadataDocument"].as_str().unwrap();
    assert!(
        metadata.contains("EntityDescriptor") && metadata.contains("https://rolegate.e2e.test"),
        "the registered metadata is rolegate's, for the public URL: {metadata}"
    );
    let signing_cert =
        String::from_utf8(signing.data.as_ref().unwrap()["tls.crt"].0.clone()).unwrap();
    let signing_der_b64 = pem_body(&signing_cert);
    assert!(
        !signing_der_b64.is_empty()
            && metadata
                .replace(['\n', '\r'], "")
                .contains(&signing_der_b64),
        "the metadata in IAM carries the signing Secret's certificate"
    );

    step("rolegate explain over the admin kubeconfig agrees with the RoleMapping's status");
    let explained = run(Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .env("KUBECONFIG", cluster.kubeconfig())
        .args(["explain", "--namespace", TEAM, "--service-account", "app"])
        .args(["--operator-namespace", NAMESPACE, "--output", "json"]));
    assert!(explained.0, "rolegate explain: {}", explained.2);
    let explained: Value = serde_json::from_str(&explained.1).unwrap();
    let status_policy = cluster.kubectl_ok(&[
        "get",
        "-n",
        TEAM,
        "rolemapping/app",
        "-o",
        "jsonpath={.status.trustPolicy}",
    ]);
    assert_eq!(
        explained["mappings"][0]["trustPolicy"].as_str(),
        Some(status_policy.as_str())
    );
    let denied = Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .env("KUBECONFIG", cluster.kubeconfig())
        .args(["explain", "--namespace", OTHER, "--service-account", "app"])
        .args(["--operator-namespace", NAMESPACE])
        .output()
        .unwrap();
    assert_eq!(
        denied.status.code(),
        Some(1),
        "explain says the not-allowed subject gets nothing: {denied:?}"
    );
    assert!(
        String::from_utf8_lossy(&denied.stdout).contains("NamespaceNotAllowed"),
        "{denied:?}"
    );

    step("kubectl apply a Pod: through the webhook");
    let pod_file = common::write(
        &dir,
        "pod.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: app, namespace: {TEAM}}}
spec:
  serviceAccountName: app
  containers:
    - name: app
      image: registry.k8s.io/pause:3.10
"#
        ),
    );
    cluster.kubectl_ok(&["apply", "-f", pod_file.to_str().unwrap()]);
    let pod = Api::<Pod>::namespaced(client.clone(), TEAM)
        .get("app")
        .await
        .unwrap();
    let pod_json = serde_json::to_value(&pod).unwrap();
    let env: BTreeMap<String, String> = pod_json["spec"]["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let credentials_uri = env
        .get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .unwrap_or_else(|| panic!("the stored Pod has no credentials URI: {pod_json}"))
        .clone();
    let token_path = env
        .get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        .expect("the stored Pod has the token file variable")
        .clone();
    // The volume holding a token with audience rolegate, mounted where the variable points.
    let volumes = pod_json["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let token_volume = volumes
        .iter()
        .find(|v| {
            v["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["serviceAccountToken"]["audience"] == "rolegate")
        })
        .unwrap_or_else(|| panic!("no projected token with audience rolegate: {pod_json}"));
    let mount = pod_json["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == token_volume["name"])
        .unwrap_or_else(|| panic!("the rolegate token volume is not mounted: {pod_json}"));
    assert!(
        token_path.starts_with(mount["mountPath"].as_str().unwrap()),
        "{token_path} is on the rolegate token volume at {}",
        mount["mountPath"]
    );

    step("boto3 in the pod gets the mapped role through the agent");
    let token = token_request(&client, TEAM, "app", Some(&pod)).await;
    let arn = cluster.in_pod(&credentials_uri, &token, WHOAMI).await;
    assert!(
        arn.trim()
            .starts_with(&format!("arn:aws:sts::{account}:assumed-role/e2e-reader/")),
        "boto3's caller identity is the mapped role: {arn}"
    );

    step("a RoleMapping in a namespace that is not allowed: 403");
    let other_token = token_request(&client, OTHER, "app", None).await;
    let code = cluster
        .in_pod(&credentials_uri, &other_token, STATUS_CODE)
        .await;
    assert_eq!(code.trim(), "403", "the not-allowed subject is refused");

    step("the namespace is labelled: the watches of both the controller and the server fire");
    cluster.kubectl_ok(&["label", "namespace", OTHER, "rolegate.dev/aws-access=true"]);
    cluster.kubectl_wait(&[
        "--for=condition=Accepted",
        "--timeout=60s",
        "-n",
        OTHER,
        "rolemapping/borrowed",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let code = cluster
            .in_pod(&credentials_uri, &other_token, STATUS_CODE)
            .await;
        if code.trim() == "200" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server still refuses the newly allowed namespace: {code}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    step("the leader Lease: kill the leader, a standby takes over");
    let lease_name = format!("{fullname}-controller");
    let leases = Api::<Lease>::namespaced(client.clone(), NAMESPACE);
    let holder = |lease: Lease| {
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
    };
    let first = holder(leases.get(&lease_name).await.unwrap());
    assert!(!first.is_empty(), "the Lease has a holder");
    cluster.kill_controller(&first).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        let now = holder(leases.get(&lease_name).await.unwrap());
        if !now.is_empty() && now != first {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "no standby took the Lease over from {first}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("leader {first} killed; {second} leads");
    cluster.replace_killed_controller().await;
    cluster.only_leader_is(&second).await;
    // The new leader reconciles: a new mapping is accepted.
    let second_mapping = common::write(
        &dir,
        "second.yaml",
        &format!(
            r#"
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: after-failover, namespace: {TEAM}}}
spec:
  provider: e2e
  roleArn: arn:aws:iam::{account}:role/e2e-writer
  subjects: [{{kind: ServiceAccount, name: app}}]
"#
        ),
    );
    cluster.kubectl_ok(&["apply", "-f", second_mapping.to_str().unwrap()]);
    cluster.kubectl_wait(&[
        "--for=condition=Accepted",
        "--timeout=60s",
        "-n",
        TEAM,
        "rolemapping/after-failover",
    ]);
    assert_eq!(
        holder(leases.get(&lease_name).await.unwrap()),
        second,
        "the leadership stayed with {second} while the killed replica was replaced"
    );

    step("delete the IAMProvider (deletionPolicy Delete): first IAM, then the object");
    cluster.kubectl_ok(&["delete", "iamprovider/e2e", "--wait=false"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Read the object first: once it is gone, IAM must already be.
        let object_gone = cluster
            .kubectl(&["get", "iamprovider/e2e", "--ignore-not-found", "-o", "name"])
            .1
            .trim()
            .is_empty();
        let in_iam = run(aws_cli().args([
            "iam",
            "get-saml-provider",
            "--saml-provider-arn",
            &provider_arn,
        ]))
        .0;
        if object_gone {
            assert!(
                !in_iam,
                "the IAMProvider object went before its IAM provider"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the IAMProvider was never finalized"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    step("the audit log");
    cluster.check_audit(&chart);
    step("done");
}

/// boto3, unmodified, from the container-credentials variables: the caller identity's ARN.
const WHOAMI: &str = "import boto3; print(boto3.client('sts').get_caller_identity()['Arn'])";

/// The HTTP status of the credentials endpoint for the pod's token.
const STATUS_CODE: &str = r#"
import os, urllib.request, urllib.error
token = open(os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]).read().strip()
request = urllib.request.Request(os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"], headers={"Authorization": token})
try:
    print(urllib.request.urlopen(request, timeout=20).status)
except urllib.error.HTTPError as e:
    print(e.code)
"#;

/// The values both clusters install the chart with.
fn values(moto: &str, image: Option<(String, String)>) -> Value {
    let mut values = json!({
        "publicURL": "https://rolegate.e2e.test",
        "aws": {"region": "us-east-1", "endpointURL": moto},
        "controller": {
            // Quicker failover than the defaults, so the run stays short.
            "leaderElection": {"leaseDurationSeconds": 6, "renewDeadlineSeconds": 4, "retryPeriodSeconds": 1},
            "extraEnv": [
                {"name": "AWS_ACCESS_KEY_ID", "value": "test"},
                {"name": "AWS_SECRET_ACCESS_KEY", "value": "test"},
            ],
        },
        "logLevel": "info,rolegate=debug",
    });
    if let Some((repository, tag)) = image {
        values["image"] = json!({"repository": repository, "tag": tag, "pullPolicy": "Never"});
    }
    values
}

async fn token_request(client: &Client, namespace: &str, sa: &str, pod: Option<&Pod>) -> String {
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(
            sa,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec!["rolegate".into()],
                    expiration_seconds: Some(600),
                    bound_object_ref: pod.map(|pod| BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: pod.metadata.name.clone(),
                        uid: pod.metadata.uid.clone(),
                    }),
                },
                ..TokenRequest::default()
            },
        )
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// The cell in column `column` of the row named `name` in `kubectl get`'s output (several
/// tables, one per kind, separated by blank lines).
fn cell(output: &str, name: &str, column: &str) -> String {
    for table in output.split("\n\n") {
        let mut lines = table.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else { continue };
        let header: Vec<&str> = header.split_whitespace().collect();
        let (Some(name_at), Some(at)) = (
            header.iter().position(|h| *h == "NAME"),
            header.iter().position(|h| *h == column),
        ) else {
            continue;
        };
        for line in lines {
            let cells: Vec<&str> = line.split_whitespace().collect();
            if cells.get(name_at) == Some(&name) {
                return cells.get(at).map(|c| (*c).to_owned()).unwrap_or_default();
            }
        }
    }
    panic!("no {column} for {name} in:\n{output}")
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap_or_default()
}

/// The base64 body of the first PEM block, on one line.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect()
}

/// `aws` (awscli from the peers venv) against moto, as the platform team would check IAM.
fn aws_cli() -> Command {
    let mut command = Command::new(venv().join("bin/aws"));
    command
        .env("AWS_ENDPOINT_URL", common::moto())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    command
}

fn peer(name: &str) -> PathBuf {
    let peers =
        std::env::var_os("ROLEGATE_PEERS").map_or_else(|| repo().join(".peers"), PathBuf::from);
    let bin = peers.join("bin").join(name);
    assert!(
        bin.exists(),
        "{name} is missing at {}: run `make test` (or tests/peers/install.sh)",
        bin.display()
    );
    bin
}

// ---------------------------------------------------------------------------------------------
// The rendered chart.

/// `helm template` of `charts/rolegate` with the scenario's values.
struct Chart {
    docs: Vec<Value>,
}

impl Chart {
    fn render(values: &Path) -> Self {
        let (ok, out, err) = run(Command::new(peer("helm"))
            .current_dir(repo())
            .env("HELM_CACHE_HOME", std::env::temp_dir())
            .env("HELM_CONFIG_HOME", std::env::temp_dir())
            .args([
                "template",
                RELEASE,
                "charts/rolegate",
                "--namespace",
                NAMESPACE,
            ])
            .arg("--values")
            .arg(values));
        assert!(ok, "helm template: {err}");
        let docs: Vec<Value> = serde_saphyr::from_str_multiple(&out).unwrap();
        Self {
            docs: docs.into_iter().filter(|d| !d.is_null()).collect(),
        }
    }

    fn of_kind<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a Value> + 'a {
        let kind = kind.to_owned();
        self.docs.iter().filter(move |d| d["kind"] == kind.as_str())
    }

    fn find(&self, kind: &str, name: &str) -> &Value {
        self.of_kind(kind)
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} is not rendered"))
    }

    /// Every rule of every Role and ClusterRole: ("ClusterRole/name" or "Role/name", index,
    /// the rule).
    fn rules(&self) -> Vec<(String, usize, Value)> {
        let mut rules = Vec::new();
        for kind in ["ClusterRole", "Role"] {
            for role in self.of_kind(kind) {
                let name = role["metadata"]["name"].as_str().unwrap();
                for (i, rule) in role["rules"].as_array().into_iter().flatten().enumerate() {
                    rules.push((format!("{kind}/{name}"), i, rule.clone()));
                }
            }
        }
        rules
    }
}

// ---------------------------------------------------------------------------------------------
// The two clusters.

enum Cluster {
    Local(Box<Local>),
    Real(Real),
}

impl Cluster {
    fn dir(&self) -> &Path {
        match self {
            Self::Local(l) => l.dir.path(),
            Self::Real(r) => r.dir.path(),
        }
    }

    /// The admin's kubeconfig.
    fn kubeconfig(&self) -> PathBuf {
        match self {
            Self::Local(l) => l.admin_kubeconfig.clone(),
            Self::Real(r) => r.kubeconfig.clone(),
        }
    }

    async fn client(&self) -> Client {
        match self {
            Self::Local(l) => l.api.client(&kube_server::Identity::Admin).await,
            Self::Real(r) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(&r.kubeconfig).unwrap();
                let config = kube::Config::from_custom_kubeconfig(
                    kubeconfig,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .unwrap();
                Client::try_from(config).unwrap()
            }
        }
    }

    /// The real kubectl as the admin: (success, stdout, stderr).
    fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        run(Command::new(peer("kubectl"))
            .current_dir(repo())
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir())
            .args(args))
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(args);
        assert!(ok, "kubectl {}: {err}{out}", args.join(" "));
        out
    }

    /// `kubectl wait`; on a timeout, the objects as they are, to show why.
    fn kubectl_wait(&self, args: &[&str]) {
        let mut wait = vec!["wait"];
        wait.extend(args);
        let (ok, out, err) = self.kubectl(&wait);
        if !ok {
            let objects: Vec<&str> = args
                .iter()
                .copied()
                .filter(|a| !a.starts_with("--"))
                .collect();
            let mut get = vec!["get", "-o", "yaml"];
            get.extend(objects);
            let (_, now, _) = self.kubectl(&get);
            panic!(
                "kubectl {}: {err}{out}\nthe objects now:\n{now}",
                wait.join(" ")
            );
        }
    }

    fn kubectl_json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&args)).unwrap()
    }

    /// Where the workloads reach moto (the chart's `aws.endpointURL`).
    fn moto_for_workloads(&self) -> String {
        match self {
            Self::Local(_) => common::moto(),
            Self::Real(r) => r.moto.clone(),
        }
    }

    fn image(&self) -> Option<(String, String)> {
        match self {
            Self::Local(_) => None,
            Self::Real(r) => Some(r.image.clone()),
        }
    }

    async fn install(&mut self, chart: &Chart, values: &Path) {
        match self {
            Self::Local(l) => l.install(chart).await,
            Self::Real(r) => r.install(values),
        }
    }

    /// Runs the python `script` as a process in a pod on a node: only the injected variables
    /// (the credentials URI and a token file), the region and moto's endpoint. Its stdout.
    async fn in_pod(&self, credentials_uri: &str, token: &str, script: &str) -> String {
        let token_file = common::write(self.dir(), &common::unique("token"), token);
        let env = [
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                credentials_uri.to_owned(),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.display().to_string(),
            ),
            ("AWS_ENDPOINT_URL", self.moto_for_workloads()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
            ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("HOME", self.dir().display().to_string()),
        ];
        let python = venv().join("bin/python");
        let mut command = match self {
            Self::Local(_) => {
                let mut command = Command::new(python);
                command.env_clear().envs(env).args(["-c", script]);
                command
            }
            // On the node's network (where the agent's link-local address is), through the
            // prefix the CI job gives, e.g. `sudo nsenter --net=/proc/<kind node pid>/ns/net`.
            Self::Real(r) => {
                let mut command = Command::new("sh");
                command
                    .arg("-c")
                    .arg(format!("{} \"$@\"", r.node_exec))
                    .arg("sh")
                    .args(["env", "-i"])
                    .args(env.iter().map(|(k, v)| format!("{k}={v}")))
                    .arg(python)
                    .args(["-c", script]);
                command
            }
        };
        let (ok, out, err) = tokio::task::spawn_blocking(move || run(&mut command))
            .await
            .unwrap();
        assert!(ok, "the pod's process failed: {err}");
        out
    }

    async fn kill_controller(&mut self, holder: &str) {
        match self {
            Self::Local(l) => l.kill_controller(holder),
            Self::Real(_) => {
                self.kubectl_ok(&["delete", "pod", "-n", NAMESPACE, holder, "--wait=false"]);
            }
        }
    }

    /// A new replica where one was killed (a Deployment makes one by itself).
    async fn replace_killed_controller(&mut self) {
        match self {
            Self::Local(l) => l.start_controller().await,
            Self::Real(_) => {
                self.kubectl_ok(&[
                    "rollout",
                    "status",
                    "-n",
                    NAMESPACE,
                    &format!("deployment/{RELEASE}-controller"),
                    "--timeout=120s",
                ]);
            }
        }
    }

    /// Every controller replica's `/readyz` says `standby` but `leader`'s (`leading`); in a
    /// real cluster the Lease alone tells.
    async fn only_leader_is(&self, leader: &str) {
        let Self::Local(l) = self else { return };
        let mut seen = Vec::new();
        for process in &l.processes {
            let Some(metrics) = process.metrics else {
                continue;
            };
            let said = reqwest::get(format!("http://{metrics}/readyz"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let want = if process.name == leader {
                "leading"
            } else {
                "standby"
            };
            assert_eq!(said, want, "{} says {said}", process.name);
            seen.push(process.name.clone());
        }
        assert_eq!(seen.len(), 2, "two controller replicas run: {seen:?}");
    }

    /// On the test API server: no 403, one writer at a time, every RBAC rule used.
    fn check_audit(&self, chart: &Chart) {
        match self {
            Self::Local(l) => l.check_audit(chart),
            Self::Real(_) => println!(
                "the audit checks (no 403, one writer, every RBAC rule used) need the test API server's audit log"
            ),
        }
    }

    async fn stop(self) {
        match self {
            Self::Local(mut l) => l.stop(),
            Self::Real(r) => r.uninstall(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Local: the test API server and the workloads as processes.

struct Local {
    dir: tempfile::TempDir,
    api: kube_server::TestApiServer,
    admin_kubeconfig: PathBuf,
    /// The local address of each (container name, container port) of the rendered workloads.
    ports: HashMap<(String, u16), SocketAddr>,
    /// The HTTP CONNECT proxy that is the cluster network for the workloads: it maps
    /// `<service>.<namespace>.svc:<port>` to the local listener behind the Service.
    service_proxy: SocketAddr,
    chart: Option<ChartWorkloads>,
    processes: Vec<Process>,
    controllers_started: usize,
}

/// The workloads of the rendered chart.
struct ChartWorkloads {
    controller: Value,
    server: Value,
    agent: Value,
}

struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    /// The controller's metrics listener (`/readyz` says leading or standby).
    metrics: Option<SocketAddr>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Local {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The chart's fixed ports, for the containers it declares them on, and the Services in
        // front of them: read from a render with the scenario's values.
        let values_file = common::write(
            dir.path(),
            "values.yaml",
            &values(&common::moto(), None).to_string(),
        );
        let chart = Chart::render(&values_file);
        let mut ports = HashMap::new();
        for kind in ["Deployment", "DaemonSet"] {
            for workload in chart.of_kind(kind) {
                for container in containers(workload) {
                    let name = container["name"].as_str().unwrap().to_owned();
                    for port in container_listen_ports(&container) {
                        ports.insert((name.clone(), port), free_addr());
                    }
                }
            }
        }
        let services = service_map(&chart, &ports);
        let api = kube_server::TestApiServer::start(kube_server::Options {
            crds_dir: dir.path().join("no-crds"),
            services: services.clone(),
        })
        .await;
        std::fs::create_dir_all(dir.path().join("no-crds")).unwrap();
        // As most clusters (and OpenShift) run: an ownerReference with blockOwnerDeletion needs
        // update on the owner's finalizers.
        api.enforce_owner_references(true);
        let admin_kubeconfig = api.kubeconfig(dir.path(), &kube_server::Identity::Admin);
        let service_proxy = start_service_proxy(services).await;
        Self {
            dir,
            api,
            admin_kubeconfig,
            ports,
            service_proxy,
            chart: None,
            processes: Vec::new(),
            controllers_started: 0,
        }
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = run(Command::new(peer("kubectl"))
            .current_dir(repo())
            .env("KUBECONFIG", &self.admin_kubeconfig)
            .env("HOME", self.dir.path())
            .args(args));
        assert!(ok, "kubectl {}: {err}{out}", args.join(" "));
        out
    }

    /// What `helm install` does here: the namespace, then every object of the chart a cluster
    /// stores, applied as the admin with kubectl; the workloads run as processes.
    async fn install(&mut self, chart: &Chart) {
        // What every cluster has, and the release namespace (`helm install --create-namespace`).
        let namespaces: Vec<String> = [
            "default",
            "kube-system",
            "kube-public",
            "kube-node-lease",
            NAMESPACE,
        ]
        .iter()
        .map(|n| {
            format!(
                "{{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{{\"name\":\"{n}\"}}}}"
            )
        })
        .collect();
        let file = common::write(
            self.dir.path(),
            "namespaces.yaml",
            &namespaces.join("\n---\n"),
        );
        self.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
        // Every object of the release is stored, as helm install does; no kubelet runs the
        // Deployments' and the DaemonSet's pods: the processes below are those pods, and the
        // service proxy and `Options::services` are the Services' endpoints.
        let mut objects: Vec<String> = chart
            .docs
            .iter()
            .map(|doc| serde_json::to_string(doc).unwrap())
            .collect();
        // Namespaces first, as helm orders them.
        objects.sort_by_key(|o| !o.contains("\"kind\":\"Namespace\""));
        let manifest = common::write(self.dir.path(), "chart.yaml", &objects.join("\n---\n"));
        self.kubectl_ok(&["apply", "-f", manifest.to_str().unwrap()]);

        let deployment = |name: &str| chart.find("Deployment", name).clone();
        self.chart = Some(ChartWorkloads {
            controller: deployment(&format!("{RELEASE}-controller")),
            server: deployment(&format!("{RELEASE}-server")),
            agent: chart.find("DaemonSet", &format!("{RELEASE}-agent")).clone(),
        });
        let replicas = self.workloads().controller["spec"]["replicas"]
            .as_u64()
            .unwrap_or(1);
        for _ in 0..replicas {
            self.start_controller().await;
        }
        self.start_server().await;
        self.start_agent().await;
    }

    fn workloads(&self) -> &ChartWorkloads {
        self.chart.as_ref().expect("installed")
    }

    /// A kubeconfig for the pod template's ServiceAccount, if the pod mounts its token.
    fn kubeconfig_for(&self, workload: &Value) -> Option<PathBuf> {
        let spec = &workload["spec"]["template"]["spec"];
        if spec["automountServiceAccountToken"] == false {
            return None;
        }
        let name = spec["serviceAccountName"].as_str().unwrap().to_owned();
        let dir = self.dir.path().join(format!("kubeconfig-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        Some(self.api.kubeconfig(
            &dir,
            &kube_server::Identity::ServiceAccount {
                namespace: NAMESPACE.into(),
                name,
            },
        ))
    }

    fn spawn(&mut self, workload: &Value, pod_name: &str) -> &Process {
        let container = &containers(workload)[0];
        let container_name = container["name"].as_str().unwrap().to_owned();
        let env = container_env(container, pod_name);
        let args = localize(
            &container_name,
            container["args"].as_array().unwrap(),
            &env,
            &self.ports,
            self.dir.path(),
        );
        let mut command = Command::new(env!("CARGO_BIN_EXE_rolegate"));
        command.env_clear().envs(&env).args(&args);
        let home = self.dir.path().join(format!("home-{pod_name}"));
        std::fs::create_dir_all(&home).unwrap();
        command.env("HOME", &home);
        if let Some(kubeconfig) = self.kubeconfig_for(workload) {
            command.env("KUBECONFIG", kubeconfig);
        }
        // The cluster network for a process that names a Service (the agent's `--server`):
        // Service names are reached through the service proxy. Only there: kube's client would
        // take the proxy for the API server too.
        if args
            .iter()
            .any(|a| a.contains(".svc:") || a.contains(".svc/"))
        {
            command
                .env("HTTPS_PROXY", format!("http://{}", self.service_proxy))
                .env("NO_PROXY", "127.0.0.1,localhost");
        }
        let log = self.dir.path().join(format!("{pod_name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        command
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {pod_name}: {e}"));
        let metrics = (container_name == "controller").then(|| args_addr(&args, "--listen"));
        self.processes.push(Process {
            name: pod_name.to_owned(),
            child,
            log,
            metrics: metrics.flatten(),
        });
        self.processes.last().unwrap()
    }

    async fn start_controller(&mut self) {
        let pod = format!("{RELEASE}-controller-{}", self.controllers_started);
        self.controllers_started += 1;
        // Each replica is its own pod: its own metrics port.
        let workload = self.workloads().controller.clone();
        self.ports.insert(("controller".into(), 8081), free_addr());
        let metrics = self.spawn(&workload, &pod).metrics.unwrap();
        self.wait_http(&pod, &format!("http://{metrics}/healthz"))
            .await;
    }

    async fn start_server(&mut self) {
        let workload = self.workloads().server.clone();
        let pod = format!("{RELEASE}-server-0");
        self.spawn(&workload, &pod);
        let http = self.ports[&("server".to_owned(), 8080)];
        self.wait_http(&pod, &format!("http://{http}/readyz")).await;
    }

    async fn start_agent(&mut self) {
        // The kubelet's configMap volume: the CA bundle the agent mounts, once the controller
        // has published it.
        let workload = self.workloads().agent.clone();
        let client = self.api.client(&kube_server::Identity::Admin).await;
        let configmaps = Api::<ConfigMap>::namespaced(client, NAMESPACE);
        let volumes = workload["spec"]["template"]["spec"]["volumes"].clone();
        let container = containers(&workload)[0].clone();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume = volumes
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            let name = volume["configMap"]["name"]
                .as_str()
                .expect("the agent mounts ConfigMaps only");
            let deadline = Instant::now() + Duration::from_secs(60);
            let data = loop {
                if let Ok(cm) = configmaps.get(name).await {
                    break cm.data.unwrap_or_default();
                }
                self.no_forbidden();
                assert!(Instant::now() < deadline, "ConfigMap {name} never appeared");
                tokio::time::sleep(Duration::from_millis(300)).await;
            };
            let local = local_path(self.dir.path(), mount["mountPath"].as_str().unwrap());
            std::fs::create_dir_all(&local).unwrap();
            for (key, value) in data {
                std::fs::write(local.join(key), value).unwrap();
            }
        }
        let pod = format!("{RELEASE}-agent-node-0");
        self.spawn(&workload, &pod);
        let agent = self.ports[&("agent".to_owned(), 80)];
        self.wait_http(&pod, &format!("http://{agent}/healthz"))
            .await;
    }

    async fn wait_http(&mut self, pod: &str, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(url).await
                && r.status().is_success()
            {
                return;
            }
            let process = self.processes.iter_mut().find(|p| p.name == pod).unwrap();
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!(
                    "{pod} exited ({status}):\n{}",
                    std::fs::read_to_string(&process.log).unwrap_or_default()
                );
            }
            self.no_forbidden();
            assert!(Instant::now() < deadline, "{pod} is not ready at {url}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The requests of the release's ServiceAccounts the API server refused with 403.
    fn forbidden(&self) -> Vec<String> {
        let prefix = format!("system:serviceaccount:{NAMESPACE}:");
        self.api
            .audit()
            .iter()
            .filter(|e| e.user.starts_with(&prefix) && e.code == 403)
            .map(describe)
            .collect()
    }

    /// Fails at once, naming the refused requests, if a component got 403.
    fn no_forbidden(&self) {
        let forbidden = self.forbidden();
        assert!(
            forbidden.is_empty(),
            "components were refused by the chart's RBAC:\n{}",
            forbidden.join("\n")
        );
    }

    fn kill_controller(&mut self, holder: &str) {
        let at = self
            .processes
            .iter()
            .position(|p| p.name == holder)
            .unwrap_or_else(|| {
                panic!("the Lease holder {holder} is none of the controller processes")
            });
        let mut process = self.processes.remove(at);
        // A crash: no chance to release anything.
        process.child.kill().unwrap();
        process.child.wait().unwrap();
    }

    fn check_audit(&self, chart: &Chart) {
        let audit = self.api.audit();
        let components: BTreeSet<String> = chart
            .of_kind("ServiceAccount")
            .map(|sa| {
                format!(
                    "system:serviceaccount:{}:{}",
                    sa["metadata"]["namespace"].as_str().unwrap(),
                    sa["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        if std::env::var_os("ROLEGATE_SYSTEM_AUDIT").is_some() {
            for e in &audit {
                println!(
                    "audit: {} [{}] allowed_by={:?}",
                    describe(e),
                    e.user_agent,
                    e.allowed_by
                );
            }
        }
        // 1. No component ever got 403.
        let forbidden: Vec<String> = audit
            .iter()
            .filter(|e| components.contains(&e.user) && e.code == 403)
            .map(describe)
            .collect();
        assert!(
            forbidden.is_empty(),
            "components were refused by the chart's RBAC:\n{}",
            forbidden.join("\n")
        );

        // 2. One writer at a time.
        let controller_sa = format!("system:serviceaccount:{NAMESPACE}:{RELEASE}-controller");
        let (holders, by_replica) =
            one_writer_at_a_time(audit.iter().filter(|e| e.user == controller_sa))
                .unwrap_or_else(|e| panic!("{e}"));
        println!("Lease holders in order: {holders:?}; writes by replica: {by_replica:?}");
        assert!(
            holders.len() >= 2,
            "the leadership moved on the leader's death: {holders:?}"
        );

        // 3. Every rule of the chart's RBAC was used.
        let mut used: BTreeMap<(String, usize), usize> = BTreeMap::new();
        let mut used_verbs: BTreeSet<(String, usize, String, String)> = BTreeSet::new();
        for entry in audit.iter().filter(|e| components.contains(&e.user)) {
            // The authorisation's rule, then those OwnerReferencesPermissionEnforcement used.
            for allowed in entry.allowed_by.as_deref().unwrap_or("").split("; ") {
                if let Some((role, i)) = parse_allowed_by(allowed) {
                    let a = &entry.attrs;
                    let resource = if a.subresource.is_empty() {
                        a.resource.clone()
                    } else {
                        format!("{}/{}", a.resource, a.subresource)
                    };
                    used_verbs.insert((role.clone(), i, a.verb.clone(), resource));
                    *used.entry((role, i)).or_default() += 1;
                }
            }
        }
        let mut unused = Vec::new();
        println!("RBAC rules of the chart and the requests each allowed:");
        for (role, i, rule) in chart.rules() {
            let count = used.get(&(role.clone(), i)).copied().unwrap_or(0);
            println!("  {role} rule {i} {rule}: {count}");
            if count == 0 {
                unused.push((role, i, rule));
            }
        }
        // Finer, for the report only: the verb and resource pairs of used rules that no request
        // needed (a rule lists several; some serve paths this run does not take, such as renewals).
        let mut idle = Vec::new();
        for (role, i, rule) in chart.rules() {
            if !used.contains_key(&(role.clone(), i)) {
                continue;
            }
            for verb in rule["verbs"].as_array().into_iter().flatten() {
                for resource in rule["resources"].as_array().into_iter().flatten() {
                    let (verb, resource) = (verb.as_str().unwrap(), resource.as_str().unwrap());
                    if !used_verbs.contains(&(role.clone(), i, verb.into(), resource.into())) {
                        idle.push(format!("{role} rule {i}: {verb} {resource}"));
                    }
                }
            }
        }
        println!(
            "verbs of used rules that no request of the run needed:\n  {}",
            idle.join("\n  ")
        );
        let unexplained: Vec<String> = unused
            .iter()
            .filter(|(role, _, rule)| !allowed_unused(role, rule))
            .map(|(role, i, rule)| format!("{role} rule {i}: {rule}"))
            .collect();
        assert!(
            unexplained.is_empty(),
            "RBAC rules of the chart no request of the run needed (remove them from \
             charts/rolegate/templates/rbac.yaml, or name the path that needs them in \
             ALLOWED_UNUSED):\n{}",
            unexplained.join("\n")
        );
    }

    fn stop(&mut self) {
        for process in &mut self.processes {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
        if std::thread::panicking() {
            self.print_logs();
        }
    }

    fn print_logs(&self) {
        for refused in self.forbidden() {
            eprintln!("refused: {refused}");
        }
        for process in &self.processes {
            let log = std::fs::read_to_string(&process.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- {} (last lines)", process.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
    }
}

/// Every write of one ServiceAccount's requests other than the Lease's comes from the replica
/// (by `User-Agent`) that holds the Lease at that moment, as the successful Lease writes before
/// it tell. Ok: the holders in order and each replica's writes; Err: the first write of a
/// replica that did not hold the Lease.
fn one_writer_at_a_time<'a>(
    requests: impl Iterator<Item = &'a kube_server::AuditEntry>,
) -> Result<(Vec<String>, BTreeMap<String, usize>), String> {
    let writes = ["create", "update", "patch", "delete", "deletecollection"];
    let mut holder: Option<String> = None;
    let mut holders = Vec::new();
    let mut by_replica: BTreeMap<String, usize> = BTreeMap::new();
    for entry in requests {
        let replica = instance(&entry.user_agent);
        if !writes.contains(&entry.attrs.verb.as_str()) || entry.code >= 300 {
            continue;
        }
        if entry.attrs.resource == "leases" {
            if holder.as_deref() != Some(replica.as_str()) {
                holders.push(replica.clone());
            }
            holder = Some(replica);
            continue;
        }
        if holder.as_deref() != Some(replica.as_str()) {
            return Err(format!(
                "{} came from {replica}, which did not hold the Lease (held by {holder:?})",
                describe(entry)
            ));
        }
        *by_replica.entry(replica).or_default() += 1;
    }
    Ok((holders, by_replica))
}

#[test]
fn a_write_by_a_replica_without_the_lease_is_found() {
    let entry = |replica: &str, verb: &str, resource: &str, code: u16| kube_server::AuditEntry {
        user: "system:serviceaccount:rolegate:rg-controller".into(),
        groups: Vec::new(),
        attrs: kube_server::rbac::Attributes {
            verb: verb.into(),
            api_group: String::new(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: NAMESPACE.into(),
            name: "x".into(),
        },
        code,
        allowed_by: None,
        user_agent: rolegate::cluster::user_agent("controller", replica),
    };
    let handover = [
        entry("a", "create", "leases", 201),
        entry("a", "create", "secrets", 201),
        entry("b", "update", "leases", 409),
        entry("b", "get", "secrets", 200),
        entry("b", "update", "leases", 200),
        entry("b", "patch", "secrets", 200),
    ];
    let (holders, writes) = one_writer_at_a_time(handover.iter()).unwrap();
    assert_eq!(holders, ["a", "b"]);
    assert_eq!(writes, BTreeMap::from([("a".into(), 1), ("b".into(), 1)]));
    // The old leader writes on after the standby took over: two writers.
    let split = [
        entry("a", "create", "leases", 201),
        entry("b", "update", "leases", 200),
        entry("a", "patch", "secrets", 200),
    ];
    let error = one_writer_at_a_time(split.iter()).unwrap_err();
    assert!(
        error.contains("came from a, which did not hold the Lease"),
        "{error}"
    );
    // A write before anyone leads.
    assert!(one_writer_at_a_time([entry("a", "create", "secrets", 201)].iter()).is_err());
}

/// One request of the audit log: who, the verb, the resource, where, and the answer.
fn describe(e: &kube_server::AuditEntry) -> String {
    let a = &e.attrs;
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    format!(
        "{} {} {resource} (group {:?}, namespace {:?}, name {:?}) -> {}",
        e.user, a.verb, a.api_group, a.namespace, a.name, e.code
    )
}

/// The replica in a `User-Agent` of `rolegate::cluster::user_agent`: `rolegate/V (component;
/// instance)`.
fn instance(user_agent: &str) -> String {
    user_agent
        .rsplit_once("; ")
        .map(|(_, rest)| rest.trim_end_matches(')').to_owned())
        .unwrap_or_else(|| user_agent.to_owned())
}

/// `"ClusterRole/x rule 2 via ClusterRoleBinding/x"` (or `"Role/namespace/x rule 2 via
/// RoleBinding/namespace/x"`) -> ("ClusterRole/x", 2).
fn parse_allowed_by(allowed_by: &str) -> Option<(String, usize)> {
    let rule = allowed_by.split(" via ").next()?;
    let (role, index) = rule.rsplit_once(" rule ")?;
    let (kind, path) = role.split_once('/')?;
    let name = path.rsplit('/').next()?;
    Some((format!("{kind}/{name}"), index.trim().parse().ok()?))
}

/// RBAC rules of the chart the run does not exercise that are still needed: (role, the rule as
/// JSON, the path that needs it). Empty: the one such path there was, moving an earlier
/// version's CA out of the release namespace (delete of `<release>-ca`), is part of the scenario.
const ALLOWED_UNUSED: &[(&str, &str, &str)] = &[];

fn allowed_unused(role: &str, rule: &Value) -> bool {
    ALLOWED_UNUSED.iter().any(|(r, json, _why)| {
        *r == role && serde_json::from_str::<Value>(json).ok().as_ref() == Some(rule)
    })
}

// ---------------------------------------------------------------------------------------------
// What must be local, in one place.

/// The container's `args` with what cannot be as in a pod made local, and nothing else:
/// - listen addresses (`0.0.0.0:P`, the agent's link-local address): a loopback port of its
///   own for each (container, port);
/// - the credentials URI the webhook injects: the local agent's address;
/// - file paths of mounted volumes: under the test's directory;
/// - `$(VAR)` references: expanded from the container's env, as the kubelet does.
fn localize(
    container: &str,
    args: &[Value],
    env: &BTreeMap<String, String>,
    ports: &HashMap<(String, u16), SocketAddr>,
    dir: &Path,
) -> Vec<String> {
    let agent = ports[&("agent".to_owned(), 80)];
    args.iter()
        .map(|arg| {
            let arg = expand(arg.as_str().unwrap(), env);
            let Some((flag, value)) = arg.split_once('=') else {
                return arg;
            };
            let value = match flag {
                "--listen" | "--public-listen" | "--tls-listen" | "--metrics-listen" => {
                    let port: u16 = value.rsplit(':').next().unwrap().parse().unwrap();
                    ports
                        .get(&(container.to_owned(), port))
                        .copied()
                        .unwrap_or_else(|| {
                            // A listener the container declares no port for (the agent's
                            // metrics): still local.
                            free_addr()
                        })
                        .to_string()
                }
                "--credentials-uri" => format!("http://{agent}/v1/credentials"),
                "--ca-file" => local_path(dir, value).display().to_string(),
                _ => value.to_owned(),
            };
            format!("{flag}={value}")
        })
        .collect()
}

/// A pod's absolute path under the test's directory.
fn local_path(dir: &Path, path: &str) -> PathBuf {
    dir.join("volumes").join(path.trim_start_matches('/'))
}

/// `$(NAME)` expanded from `env`, as the kubelet expands container args.
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = arg.to_owned();
    for (name, value) in env {
        out = out.replace(&format!("$({name})"), value);
    }
    out
}

/// The ports a container listens on: its declared container ports, and the port of each
/// listen flag (the agent declares only its metrics port).
fn container_listen_ports(container: &Value) -> BTreeSet<u16> {
    let mut ports: BTreeSet<u16> = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["containerPort"].as_u64())
        .map(|p| u16::try_from(p).unwrap())
        .collect();
    for arg in container["args"].as_array().into_iter().flatten() {
        let arg = arg.as_str().unwrap();
        if let Some((flag, value)) = arg.split_once('=')
            && flag.ends_with("listen")
            && let Some(port) = value.rsplit(':').next().and_then(|p| p.parse().ok())
        {
            ports.insert(port);
        }
    }
    ports
}

fn containers(workload: &Value) -> Vec<Value> {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap()
}

/// The container's environment: values as written, downward-API fields as the kubelet fills
/// them for a pod `pod_name` in the release namespace on node `node-0` at 127.0.0.1.
fn container_env(container: &Value, pod_name: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            value.to_owned()
        } else {
            match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod_name.to_owned(),
                Some("metadata.namespace") => NAMESPACE.to_owned(),
                Some("spec.nodeName") => "node-0".to_owned(),
                Some("status.hostIP") => "127.0.0.1".to_owned(),
                other => panic!("env {name}: no local value for {other:?} ({var})"),
            }
        };
        env.insert(name, value);
    }
    env
}

fn args_addr(args: &[String], flag: &str) -> Option<SocketAddr> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
        .and_then(|v| v.parse().ok())
}

/// Each rendered Service port, as `(namespace, name, port)` (`Options::services`), to the local listener of the
/// container port its `targetPort` names (the pods its selector picks).
fn service_map(
    chart: &Chart,
    ports: &HashMap<(String, u16), SocketAddr>,
) -> HashMap<(String, String, u16), SocketAddr> {
    let mut map = HashMap::new();
    for service in chart.of_kind("Service") {
        let selector = &service["spec"]["selector"];
        let Some(workload) = chart
            .of_kind("Deployment")
            .chain(chart.of_kind("DaemonSet"))
            .find(|w| {
                selector
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| w["spec"]["template"]["metadata"]["labels"][k] == *v)
            })
        else {
            continue;
        };
        let container = &containers(workload)[0];
        let container_name = container["name"].as_str().unwrap().to_owned();
        for port in service["spec"]["ports"].as_array().unwrap() {
            let target = &port["targetPort"];
            let container_port = container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == *target || p["containerPort"] == *target)
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("Service port {port} targets no container port"));
            let local = ports[&(
                container_name.clone(),
                u16::try_from(container_port).unwrap(),
            )];
            map.insert(
                (
                    service["metadata"]["namespace"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    service["metadata"]["name"].as_str().unwrap().to_owned(),
                    u16::try_from(port["port"].as_u64().unwrap()).unwrap(),
                ),
                local,
            );
        }
    }
    map
}

/// An HTTP CONNECT proxy standing in for cluster DNS and kube-proxy: `CONNECT
/// <svc>.<ns>.svc:<port>` (or `.svc.cluster.local`) reaches the Service's local listener;
/// anything else is refused. The TLS inside is end to end, so the client verifies the
/// certificate for the Service name as in a cluster.
async fn start_service_proxy(services: HashMap<(String, String, u16), SocketAddr>) -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let services = std::sync::Arc::new(services);
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let services = std::sync::Arc::clone(&services);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head
                    .strip_prefix("CONNECT ")
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|authority| {
                        let (host, port) = authority.rsplit_once(':')?;
                        let host = host.trim_end_matches(".cluster.local");
                        let (name, rest) = host.split_once('.')?;
                        let namespace = rest.strip_suffix(".svc")?;
                        services
                            .get(&(namespace.to_owned(), name.to_owned(), port.parse().ok()?))
                            .copied()
                    });
                let Some(target) = target else {
                    let _ = client
                        .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    let _ = client
                        .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                };
                if client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Real: a disposable cluster with the chart installed by helm.

struct Real {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    /// (repository, tag) of the image loaded into the nodes.
    image: (String, String),
    /// moto's URL as the workloads reach it.
    moto: String,
    /// A shell prefix running a command on a node's network.
    node_exec: String,
}

impl Real {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let kubeconfig = var("ROLEGATE_E2E_KUBECONFIG")
            .or_else(|| var("ROLEGATE_E2E").and_then(|_| var("KUBECONFIG")))
            .expect(
                "no cluster: set ROLEGATE_E2E_KUBECONFIG (or KUBECONFIG and ROLEGATE_E2E=1) to a \
                 disposable cluster's kubeconfig",
            );
        let image = var("ROLEGATE_E2E_IMAGE").unwrap_or_else(|| "rolegate:e2e".into());
        let (repository, tag) = image
            .rsplit_once(':')
            .map(|(r, t)| (r.to_owned(), t.to_owned()))
            .expect("ROLEGATE_E2E_IMAGE is repository:tag");
        let moto = common::moto();
        let moto = match var("ROLEGATE_E2E_MOTO_HOST") {
            Some(host) => {
                let port = moto.rsplit(':').next().unwrap();
                format!("http://{host}:{port}")
            }
            None => moto,
        };
        Self {
            dir: tempfile::tempdir().unwrap(),
            kubeconfig: PathBuf::from(kubeconfig),
            image: (repository, tag),
            moto,
            node_exec: var("ROLEGATE_E2E_NODE_EXEC").unwrap_or_default(),
        }
    }

    fn helm(&self) -> Command {
        let mut command = Command::new(peer("helm"));
        command
            .current_dir(repo())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.path())
            .env("HELM_CONFIG_HOME", self.dir.path());
        command
    }

    fn install(&self, values: &Path) {
        let (ok, out, err) = run(self
            .helm()
            .args(["upgrade", "--install", RELEASE, "charts/rolegate"])
            .args([
                "--namespace",
                NAMESPACE,
                "--create-namespace",
                "--wait",
                "--timeout",
                "5m",
            ])
            .arg("--values")
            .arg(values));
        assert!(ok, "helm install: {err}{out}");
    }

    fn uninstall(&self) {
        // The scenario's resources while the controller still runs (it clears their
        // finalizers), the release, then what it keeps (the Secrets namespace) and the
        // namespaces, so that the next run installs afresh. The CRDs stay (crds.keep).
        let kubectl = |args: &[&str]| {
            let _ = run(Command::new(peer("kubectl"))
                .env("KUBECONFIG", &self.kubeconfig)
                .args(args)
                .arg("--ignore-not-found"));
        };
        for namespace in [TEAM, OTHER] {
            kubectl(&[
                "delete",
                "rolemappings",
                "--all",
                "-n",
                namespace,
                "--timeout=60s",
            ]);
        }
        kubectl(&[
            "delete",
            "iamprovider/e2e",
            "samlapp/e2e",
            "connection/e2e-cluster",
        ]);
        let _ = run(self
            .helm()
            .args(["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"]));
        let secrets_namespace = format!("{NAMESPACE}-controller");
        for namespace in [TEAM, OTHER, secrets_namespace.as_str(), NAMESPACE] {
            kubectl(&["delete", "namespace", namespace]);
        }
    }
}
