//! The operator in a real cluster. Ignored by default; run with `make e2e` where a kubeconfig
//! points at a disposable cluster (kind, k3s, ...). It applies the CRDs, creates the resources,
//! runs `rolegate controller` and `rolegate server` against the cluster (IAM and STS are moto on
//! this machine), and checks the statuses and a pod's credentials.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource as _};
use rolegate::crd::{IAMProvider, RoleMapping, SAMLApp};
use serde_json::json;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn apply<K>(api: &Api<K>, name: &str, object: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply("rolegate-e2e").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap();
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn condition(conditions: Option<&serde_json::Value>, type_: &str) -> Option<String> {
    conditions?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| c["status"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes cluster; run with `make e2e`"]
async fn operator_in_a_real_cluster() {
    let client = Client::try_default()
        .await
        .expect("a kubeconfig for a disposable cluster");
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in rolegate::crd::all() {
        let name = crd.meta().name.clone().unwrap();
        apply(&crds, &name, serde_json::to_value(&crd).unwrap()).await;
        until(&format!("CRD {name} established"), || async {
            crds.get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        })
        .await;
    }
    let namespaces = Api::<Namespace>::all(client.clone());
    apply(
        &namespaces,
        "rolegate",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "rolegate"}}),
    )
    .await;
    apply(
        &namespaces,
        "e2e-team",
        json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "e2e-team", "labels": {"rolegate.dev/aws-access": "true"}}}),
    )
    .await;
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), "e2e-team");
    apply(&sas, "app", json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "e2e-team"}})).await;

    let moto = common::moto();
    let provider_name = common::unique("e2e");
    let server_port = free_port();
    let public_url = format!("http://127.0.0.1:{server_port}");
    let apps = Api::<SAMLApp>::all(client.clone());
    let providers = Api::<IAMProvider>::all(client.clone());
    let mappings = Api::<RoleMapping>::namespaced(client.clone(), "e2e-team");
    apply(&apps, "e2e", json!({"apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp", "metadata": {"name": "e2e"}, "spec": {}})).await;
    apply(&providers, "e2e", json!({"apiVersion": "rolegate.dev/v1alpha1", "kind": "IAMProvider", "metadata": {"name": "e2e"},
        "spec": {"samlApp": "e2e", "accountId": common::ACCOUNT, "providerName": provider_name, "endpointURL": moto,
                 "deletionPolicy": "Delete",
                 "allowedNamespaces": {"matchLabels": {"rolegate.dev/aws-access": "true"}},
                 "allowedRoles": [format!("arn:aws:iam::{}:role/e2e-*", common::ACCOUNT)]}})).await;
    let connections = Api::<rolegate::crd::Connection>::all(client.clone());
    apply(
        &connections,
        "e2e-cluster",
        json!({"apiVersion": "rolegate.dev/v1alpha1", "kind": "Connection",
        "metadata": {"name": "e2e-cluster"}, "spec": {"kubernetes": {"audiences": ["rolegate"]}}}),
    )
    .await;
    apply(&mappings, "app", json!({"apiVersion": "rolegate.dev/v1alpha1", "kind": "RoleMapping",
        "metadata": {"name": "app", "namespace": "e2e-team"},
        "spec": {"provider": "e2e", "roleArn": format!("arn:aws:iam::{}:role/e2e-reader", common::ACCOUNT),
                 "subjects": [{"kind": "ServiceAccount", "name": "app"}]}})).await;

    let bin = env!("CARGO_BIN_EXE_rolegate");
    let _controller = Killed(
        Command::new(bin)
            .args([
                "controller",
                "--namespace",
                "rolegate",
                "--public-url",
                &public_url,
            ])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _server = Killed(
        Command::new(bin)
            .args([
                "server",
                "--namespace",
                "rolegate",
                "--public-url",
                &public_url,
            ])
            .args(["--listen", &format!("127.0.0.1:{server_port}")])
            .env("AWS_ENDPOINT_URL", &moto)
            .env("AWS_REGION", "us-east-1")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    until("SAMLApp Ready", || async {
        let app = apps.get("e2e").await.unwrap();
        condition(
            serde_json::to_value(&app.status).unwrap().get("conditions"),
            "Ready",
        )
        .as_deref()
            == Some("True")
    })
    .await;
    until("IAMProvider Ready", || async {
        let p = providers.get("e2e").await.unwrap();
        condition(
            serde_json::to_value(&p.status).unwrap().get("conditions"),
            "Ready",
        )
        .as_deref()
            == Some("True")
    })
    .await;
    until("RoleMapping Accepted", || async {
        let m = mappings.get("app").await.unwrap();
        condition(
            serde_json::to_value(&m.status).unwrap().get("conditions"),
            "Accepted",
        )
        .as_deref()
            == Some("True")
    })
    .await;

    // `rolegate explain` over the same kubeconfig agrees with the controller: granted, and the
    // trust policy is the one in the RoleMapping's status.
    let explained = Command::new(bin)
        .args([
            "explain",
            "--namespace",
            "e2e-team",
            "--service-account",
            "app",
        ])
        .args(["--operator-namespace", "rolegate", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(explained.status.code(), Some(0), "{explained:?}");
    let explained: serde_json::Value = serde_json::from_slice(&explained.stdout).unwrap();
    let status_policy = mappings
        .get("app")
        .await
        .unwrap()
        .status
        .unwrap()
        .trust_policy;
    assert_eq!(
        explained["mappings"][0]["trustPolicy"].as_str(),
        status_policy.as_deref()
    );
    let denied = Command::new(bin)
        .args([
            "explain",
            "--namespace",
            "default",
            "--service-account",
            "app",
        ])
        .args(["--operator-namespace", "rolegate"])
        .output()
        .unwrap();
    assert_eq!(denied.status.code(), Some(1), "{denied:?}");

    let token = sas
        .create_token_request(
            "app",
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec!["rolegate".into()],
                    expiration_seconds: Some(600),
                    bound_object_ref: None,
                },
                ..TokenRequest::default()
            },
        )
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    until("credentials from the server", || {
        let token = token.clone();
        let url = format!("{public_url}/v1/credentials");
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .header("Authorization", token)
                .send()
                .await;
            response.is_ok_and(|r| r.status() == 200)
        }
    })
    .await;

    mappings
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    providers
        .delete("e2e", &DeleteParams::default())
        .await
        .unwrap();
    until("IAMProvider finalized", || async {
        providers.get_opt("e2e").await.unwrap().is_none()
    })
    .await;
    apps.delete("e2e", &DeleteParams::default()).await.unwrap();
}
