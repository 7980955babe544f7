//! Reconcilers against kube's tower-test mock API server, as scenarios: the exact requests and
//! patches, finalizer add and remove, status patches and Events. IAMProvider reconciles call a
//! real moto server for IAM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::apiserver::{self, Expect};
use common::{ACCOUNT, moto, unique};
use kube::runtime::controller::Action;
use prometheus_client::registry::Registry;
use rolegate::aws::SamlProviders as _;
use rolegate::aws::sdk::{IamAccess, SdkSamlProviders};
use rolegate::controller::{Context, SdkConnector, certs, iamprovider, rolemapping};
use rolegate::crd::{IAMProvider, RoleMapping};
use serde_json::json;

const PROVIDERS: &str = "/apis/rolegate.dev/v1alpha1/iamproviders";

/// The controller's Secrets namespace in these scenarios (the CA, IAM access keys).
const CONTROLLER_NS: &str = "rolegate-controller";
/// The cluster name in the ownership tags these scenarios write.
const CLUSTER: &str = "test-cluster";

fn context(client: kube::Client) -> Arc<Context> {
    let mut registry = Registry::default();
    Arc::new(
        Context::new(
            client,
            Arc::new(SdkConnector),
            "rolegate".into(),
            "https://rolegate.example".into(),
            &mut registry,
        )
        .with_secrets_namespace(CONTROLLER_NS)
        .with_cluster_name(CLUSTER),
    )
}

fn mapping(status: Option<serde_json::Value>) -> RoleMapping {
    let mut m = json!({
        "apiVersion": "rolegate.dev/v1alpha1", "kind": "RoleMapping",
        "metadata": {"name": "reader", "namespace": "team-a", "generation": 1, "uid": "u1",
                     "finalizers": [rolemapping::FINALIZER]},
        "spec": {"provider": "acct", "roleArn": format!("arn:aws:iam::{ACCOUNT}:role/app-reader"),
                 "subjects": [{"kind": "ServiceAccount", "name": "app"}]},
    });
    if let Some(s) = status {
        m["status"] = s;
    }
    serde_json::from_value(m).unwrap()
}

fn provider_json(provider_name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut p = json!({
        "apiVersion": "rolegate.dev/v1alpha1", "kind": "IAMProvider",
        "metadata": {"name": "acct", "generation": 1, "uid": "u2", "resourceVersion": "7"},
        "spec": {"samlApp": "aws", "accountId": ACCOUNT, "providerName": provider_name,
                 "endpointURL": moto(),
                 "allowedNamespaces": {"matchLabels": {"team": "a"}},
                 "allowedRoles": [format!("arn:aws:iam::{ACCOUNT}:role/app-*")]},
    });
    merge(&mut p, extra);
    p
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn namespace(team: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": {"team": team}}})
}

fn saml_app() -> serde_json::Value {
    json!({"apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp", "metadata": {"name": "aws"}, "spec": {}})
}

fn signing_secret() -> serde_json::Value {
    let (_, pem) =
        rolegate::keys::SigningKey::generate("urn:rolegate:aws", 2048, 30, jiff::Timestamp::now())
            .unwrap();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": "aws-signing", "namespace": "rolegate"},
           "stringData": {"tls.key": pem.key_pem, "tls.crt": pem.cert_pem}})
}

#[tokio::test]
async fn rolemapping_is_accepted_with_status_and_an_event() {
    let (client, handle) = apiserver::client();
    let ctx = context(client);
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::get(
                &format!("{PROVIDERS}/acct"),
                provider_json("rolegate", json!({})),
            ),
            Expect::get("/api/v1/namespaces/team-a", namespace("a")),
            Expect::get("/apis/rolegate.dev/v1alpha1/samlapps/aws", saml_app()),
            Expect::patch(
                "/apis/rolegate.dev/v1alpha1/namespaces/team-a/rolemappings/reader/status",
                serde_json::to_value(mapping(None)).unwrap(),
            ),
            Expect::event("team-a"),
        ],
    );
    let action = rolemapping::reconcile(Arc::new(mapping(None)), ctx)
        .await
        .unwrap();
    assert_eq!(
        action,
        Action::requeue(std::time::Duration::from_secs(3600))
    );
    let (seen, mut handle) = verifier.await.unwrap();
    let patch = &seen[3];
    assert_eq!(patch.content_type, "application/merge-patch+json");
    let status = &patch.body["status"];
    assert_eq!(
        status["providerArn"],
        format!("arn:aws:iam::{ACCOUNT}:saml-provider/rolegate")
    );
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["conditions"][0]["type"], "Accepted");
    assert_eq!(status["conditions"][0]["status"], "True");
    let trust: serde_json::Value =
        serde_json::from_str(status["trustPolicy"].as_str().unwrap()).unwrap();
    assert_eq!(
        trust["Statement"][0]["Condition"]["StringEquals"]["saml:sub"][0],
        "system:serviceaccount:team-a:app"
    );
    let event = &seen[4].body;
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Normal"), Some("Accepted"))
    );
    assert_eq!(event["regarding"]["name"], "reader");
    apiserver::no_more(&mut handle).await;
}

#[tokio::test]
async fn rolemapping_in_a_namespace_the_provider_does_not_select_is_refused() {
    let (client, handle) = apiserver::client();
    let ctx = context(client);
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::get(
                &format!("{PROVIDERS}/acct"),
                provider_json("rolegate", json!({})),
            ),
            Expect::get("/api/v1/namespaces/team-a", namespace("b")),
            Expect::get("/apis/rolegate.dev/v1alpha1/samlapps/aws", saml_app()),
            Expect::patch(
                "/apis/rolegate.dev/v1alpha1/namespaces/team-a/rolemappings/reader/status",
                serde_json::to_value(mapping(None)).unwrap(),
            ),
            Expect::event("team-a"),
        ],
    );
    rolemapping::reconcile(Arc::new(mapping(None)), ctx)
        .await
        .unwrap();
    let (seen, _) = verifier.await.unwrap();
    let condition = &seen[3].body["status"]["conditions"][0];
    assert_eq!(
        (condition["status"].as_str(), condition["reason"].as_str()),
        (Some("False"), Some("NamespaceNotAllowed"))
    );
    assert_eq!(
        condition["message"],
        "IAMProvider \"acct\" does not allow namespace \"team-a\""
    );
    assert!(seen[3].body["status"].get("providerArn").is_none());
    assert_eq!(
        (
            seen[4].body["type"].as_str(),
            seen[4].body["reason"].as_str()
        ),
        (Some("Warning"), Some("NamespaceNotAllowed"))
    );
}

#[tokio::test]
async fn rolemapping_naming_a_missing_provider_says_so_and_an_unchanged_status_is_not_rewritten() {
    let (client, handle) = apiserver::client();
    let ctx = context(client);
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::not_found(&format!("{PROVIDERS}/acct")),
            Expect::get("/api/v1/namespaces/team-a", namespace("a")),
            Expect::patch(
                "/apis/rolegate.dev/v1alpha1/namespaces/team-a/rolemappings/reader/status",
                serde_json::to_value(mapping(None)).unwrap(),
            ),
            Expect::event("team-a"),
        ],
    );
    rolemapping::reconcile(Arc::new(mapping(None)), Arc::clone(&ctx))
        .await
        .unwrap();
    let (seen, _) = verifier.await.unwrap();
    let status = seen[2].body["status"].clone();
    assert_eq!(status["conditions"][0]["reason"], "ProviderNotFound");

    // Reconciled again with that status in place: reads only, no patch, no Event.
    let (client, handle) = apiserver::client();
    let ctx = context(client);
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::not_found(&format!("{PROVIDERS}/acct")),
            Expect::get("/api/v1/namespaces/team-a", namespace("a")),
        ],
    );
    rolemapping::reconcile(Arc::new(mapping(Some(status))), ctx)
        .await
        .unwrap();
    let (_, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;
}

#[tokio::test]
async fn iamprovider_gets_its_finalizer_first() {
    let (client, handle) = apiserver::client();
    let ctx = context(client);
    let provider: IAMProvider = serde_json::from_value(provider_json("unused", json!({}))).unwrap();
    let verifier = apiserver::scenario(
        handle,
        vec![Expect::patch(
            &format!("{PROVIDERS}/acct"),
            provider_json("unused", json!({})),
        )],
    );
    let action = iamprovider::reconcile(Arc::new(provider), ctx)
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    let (seen, mut handle) = verifier.await.unwrap();
    assert_eq!(seen[0].content_type, "application/json-patch+json");
    let ops = seen[0].body.as_array().unwrap();
    assert!(ops.iter().any(|op| op["op"] == "add" && op["value"].to_string().contains(iamprovider::FINALIZER)), "{ops:?}");
    apiserver::no_more(&mut handle).await;
}

/// One apply reconcile of `provider` with the given signing Secret; returns the status patch.
async fn apply_once(
    provider: serde_json::Value,
    secret: &serde_json::Value,
    event: bool,
) -> serde_json::Value {
    let (client, handle) = apiserver::client();
    let ctx = context(client);
    let mut calls = vec![
        Expect::get("/apis/rolegate.dev/v1alpha1/samlapps/aws", saml_app()),
        Expect::get(
            "/api/v1/namespaces/rolegate/secrets/aws-signing",
            secret.clone(),
        ),
        Expect::patch(&format!("{PROVIDERS}/acct/status"), provider.clone()).after_peer(),
    ];
    if event {
        calls.push(Expect::event("default"));
    }
    let verifier = apiserver::scenario(handle, calls);
    let provider: IAMProvider = serde_json::from_value(provider).unwrap();
    let result = iamprovider::reconcile(Arc::new(provider), ctx).await;
    let (seen, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;
    if event {
        let reason = seen[3].body["reason"].as_str().unwrap().to_owned();
        let status = seen[2].body["status"].clone();
        return json!({"status": status, "event": reason, "ok": result.is_ok()});
    }
    json!({"status": seen[2].body["status"].clone(), "ok": result.is_ok()})
}

#[tokio::test]
async fn iamprovider_creates_repairs_drift_and_honours_delete() {
    let name = unique("ctl");
    let arn = format!("arn:aws:iam::{ACCOUNT}:saml-provider/{name}");
    let iam = SdkSamlProviders::new(&IamAccess {
        endpoint_url: Some(moto()),
        ..IamAccess::default()
    })
    .await;
    let secret = signing_secret();
    let with_finalizer = json!({"metadata": {"finalizers": [iamprovider::FINALIZER]}});

    // Create.
    let out = apply_once(provider_json(&name, with_finalizer.clone()), &secret, true).await;
    assert_eq!(out["ok"], true);
    assert_eq!(out["event"], "Created");
    let status = out["status"].clone();
    assert_eq!(status["arn"], arn);
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["conditions"][1]["reason"], "Created");
    let held = iam.get(&arn).await.unwrap().expect("created in IAM");
    assert_eq!(
        status["metadataSHA256"],
        rolegate::registration::metadata_sha256(&held.metadata)
    );
    assert!(
        held.metadata
            .contains("Location=\"https://rolegate.example/samlp/aws\"")
    );

    // Drift: the metadata is replaced behind the operator's back; the resync restores it.
    iam.update(
        &arn,
        &held
            .metadata
            .replace("https://rolegate.example", "https://evil.example"),
    )
    .await
    .unwrap();
    let mut registered = provider_json(&name, with_finalizer.clone());
    registered["status"] = status.clone();
    let out = apply_once(registered.clone(), &secret, true).await;
    assert_eq!(out["event"], "Updated");
    assert_eq!(out["status"]["conditions"][1]["reason"], "Updated");
    assert_eq!(
        iam.get(&arn).await.unwrap().unwrap().metadata,
        held.metadata
    );

    // A new signing key: the metadata IAM holds follows it.
    let rotated = signing_secret();
    let out = apply_once(registered.clone(), &rotated, true).await;
    assert_eq!(out["event"], "Updated");
    assert_ne!(
        iam.get(&arn).await.unwrap().unwrap().metadata,
        held.metadata
    );

    // Delete with deletionPolicy Delete: IAM provider removed, then the finalizer.
    let mut deleting = registered.clone();
    merge(
        &mut deleting,
        json!({"spec": {"deletionPolicy": "Delete"}, "metadata": {"deletionTimestamp": "2026-11-26T00:00:00Z"}}),
    );
    let (client, handle) = apiserver::client();
    let ctx = context(client);
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::event("default").after_peer(),
            Expect::patch(&format!("{PROVIDERS}/acct"), deleting.clone()),
        ],
    );
    let provider: IAMProvider = serde_json::from_value(deleting).unwrap();
    iamprovider::reconcile(Arc::new(provider), ctx)
        .await
        .unwrap();
    let (seen, _) = verifier.await.unwrap();
    assert_eq!(seen[0].body["reason"], "Deleted");
    assert_eq!(seen[1].content_type, "application/json-patch+json");
    assert!(
        seen[1].body.to_string().contains("remove"),
        "{}",
        seen[1].body
    );
    assert!(iam.get(&arn).await.unwrap().is_none(), "deleted from IAM");
}

#[tokio::test]
async fn iamprovider_retain_keeps_the_iam_provider() {
    let name = unique("retain");
    let arn = format!("arn:aws:iam::{ACCOUNT}:saml-provider/{name}");
    let iam = SdkSamlProviders::new(&IamAccess {
        endpoint_url: Some(moto()),
        ..IamAccess::default()
    })
    .await;
    let out = apply_once(
        provider_json(
            &name,
            json!({"metadata": {"finalizers": [iamprovider::FINALIZER]}}),
        ),
        &signing_secret(),
        true,
    )
    .await;
    assert_eq!(out["status"]["arn"], arn);
    let mut deleting = provider_json(
        &name,
        json!({"metadata": {"finalizers": [iamprovider::FINALIZER], "deletionTimestamp": "2026-11-26T00:00:00Z"}}),
    );
    deleting["status"] = out["status"].clone();
    let (client, handle) = apiserver::client();
    let ctx = context(client);
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::event("default"),
            Expect::patch(&format!("{PROVIDERS}/acct"), deleting.clone()),
        ],
    );
    iamprovider::reconcile(Arc::new(serde_json::from_value(deleting).unwrap()), ctx)
        .await
        .unwrap();
    let (seen, _) = verifier.await.unwrap();
    assert_eq!(seen[0].body["reason"], "Retained");
    assert!(
        iam.get(&arn).await.unwrap().is_some(),
        "Retain leaves the provider in IAM"
    );
}

#[tokio::test]
async fn iamprovider_iam_errors_and_renames_become_conditions() {
    // IAM unreachable: a real SDK error, surfaced with a plain reason.
    let mut provider = provider_json(
        &unique("down"),
        json!({"metadata": {"finalizers": [iamprovider::FINALIZER]}}),
    );
    provider["spec"]["endpointURL"] = json!("http://127.0.0.1:9");
    let out = apply_once(provider, &signing_secret(), true).await;
    assert_eq!(out["ok"], false);
    assert_eq!(out["event"], "Unreachable");
    let ready = &out["status"]["conditions"][0];
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("Unreachable"))
    );
    assert!(
        ready["message"].as_str().unwrap().starts_with("IAM: "),
        "{ready}"
    );

    // providerName changed after registration: refused, IAM untouched.
    let (client, handle) = apiserver::client();
    let ctx = context(client);
    let mut renamed = provider_json(
        "new-name",
        json!({"metadata": {"finalizers": [iamprovider::FINALIZER]}}),
    );
    renamed["status"] = json!({"arn": format!("arn:aws:iam::{ACCOUNT}:saml-provider/old-name")});
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::patch(&format!("{PROVIDERS}/acct/status"), renamed.clone()),
            Expect::event("default"),
        ],
    );
    let result =
        iamprovider::reconcile(Arc::new(serde_json::from_value(renamed).unwrap()), ctx).await;
    assert!(result.is_err());
    let (seen, _) = verifier.await.unwrap();
    let synced = &seen[0].body["status"]["conditions"][1];
    assert_eq!(
        (synced["status"].as_str(), synced["reason"].as_str()),
        (Some("False"), Some("ProviderNameImmutable"))
    );
    assert_eq!(seen[1].body["reason"], "ProviderNameImmutable");
}

const SECRETS: &str = "/api/v1/namespaces/rolegate/secrets";

fn app_with(spec: serde_json::Value, status: Option<serde_json::Value>) -> serde_json::Value {
    let mut app = json!({"apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp",
                         "metadata": {"name": "aws", "uid": "u3", "generation": 1}, "spec": spec});
    if let Some(s) = status {
        app["status"] = s;
    }
    app
}

#[tokio::test]
async fn samlapp_generates_its_key_into_a_managed_secret() {
    let (client, handle) = apiserver::client();
    let ctx = context(client);
    let app = app_with(json!({}), None);
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::not_found(&format!("{SECRETS}/aws-signing")),
            Expect::create(SECRETS).after_peer(),
            Expect::patch(
                "/apis/rolegate.dev/v1alpha1/samlapps/aws/status",
                app.clone(),
            ),
            Expect::event("default"),
        ],
    );
    rolegate::controller::samlapp::reconcile(Arc::new(serde_json::from_value(app).unwrap()), ctx)
        .await
        .unwrap();
    let (seen, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;
    let secret = &seen[1].body;
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "rolegate"
    );
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "SAMLApp");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "u3");
    assert!(secret["data"]["tls.key"].is_string() && secret["data"]["tls.crt"].is_string());
    let status = &seen[2].body["status"];
    assert_eq!(status["issuer"], "urn:rolegate:aws");
    assert_eq!(
        status["metadataUrl"],
        "https://rolegate.example/samlp/metadata/aws"
    );
    assert_eq!(status["loginUrl"], "https://rolegate.example/samlp/aws");
    assert_eq!(status["certificates"][0]["state"], "Active");
    assert_eq!(
        status["certificates"][0]["sha256Fingerprint"]
            .as_str()
            .unwrap()
            .len(),
        95
    );
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(seen[3].body["reason"], "KeyGenerated");
    // The status carries no key material.
    assert!(!status.to_string().contains("PRIVATE KEY"));
}

#[tokio::test]
async fn samlapp_never_writes_a_users_secret() {
    // A user's Secret already sits at the managed name and is not a usable key.
    let foreign = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aws-signing", "namespace": "rolegate"},
                         "stringData": {"password": "hunter2"}});
    let (client, handle) = apiserver::client();
    let ctx = context(client);
    let app = app_with(json!({}), None);
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::get(&format!("{SECRETS}/aws-signing"), foreign),
            Expect::patch(
                "/apis/rolegate.dev/v1alpha1/samlapps/aws/status",
                app.clone(),
            ),
            Expect::event("default"),
        ],
    );
    rolegate::controller::samlapp::reconcile(Arc::new(serde_json::from_value(app).unwrap()), ctx)
        .await
        .unwrap();
    let (seen, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;
    let ready = &seen[1].body["status"]["conditions"][0];
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("SecretConflict"))
    );
    assert!(
        !seen[1].body.to_string().contains("hunter2"),
        "secrets never reach the status"
    );
    assert!(!seen[2].body.to_string().contains("hunter2"), "nor Events");
}

#[tokio::test]
async fn samlapp_with_a_missing_secret_ref_says_so() {
    let (client, handle) = apiserver::client();
    let ctx = context(client);
    let app = app_with(
        json!({"signing": {"secretRef": {"name": "corp-idp", "namespace": "security"}}}),
        None,
    );
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::not_found("/api/v1/namespaces/security/secrets/corp-idp"),
            Expect::patch(
                "/apis/rolegate.dev/v1alpha1/samlapps/aws/status",
                app.clone(),
            ),
            Expect::event("default"),
        ],
    );
    rolegate::controller::samlapp::reconcile(Arc::new(serde_json::from_value(app).unwrap()), ctx)
        .await
        .unwrap();
    let (seen, _) = verifier.await.unwrap();
    let ready = &seen[1].body["status"]["conditions"][0];
    assert_eq!(ready["reason"], "SecretNotFound");
    assert_eq!(ready["message"], "Secret security/corp-idp does not exist");
    assert!(seen[1].body["status"].get("certificates").is_none());
}

#[tokio::test]
async fn connection_status_says_whether_the_spec_is_usable() {
    let users = |yaml: &str| {
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "people", "namespace": "rolegate", "labels": {"rolegate.dev/login": "true"}},
        "stringData": {"users.yaml": yaml}})
    };
    let hash = "$2b$04$0123456789012345678901uSmCu0wLPmWr0mH3SK6G95J1i1Sb7Ru";
    let two = users(&format!(
        "- {{username: carol, bcryptHash: \"{hash}\"}}\n- {{username: dave, bcryptHash: \"{hash}\"}}\n"
    ));
    let mut unlabelled = two.clone();
    unlabelled["metadata"]["labels"] = json!({});
    let static_spec = json!({"static": {"secretRef": {"name": "people"}}});
    let people = "/api/v1/namespaces/rolegate/secrets/people";
    // (spec, the Secret the reconcile reads, Ready, reason, what the message says)
    let cases: Vec<(serde_json::Value, Option<Expect>, &str, &str, &str)> = vec![
        (
            json!({"kubernetes": {"audiences": ["rolegate"]}}),
            None,
            "True",
            "Valid",
            "TokenReview",
        ),
        (
            json!({}),
            None,
            "False",
            "InvalidSpec",
            "none of oidc, kubernetes and static",
        ),
        (
            json!({"oidc": {"issuer": "http://idp.example", "clientId": "c"}}),
            None,
            "False",
            "InvalidSpec",
            "https://",
        ),
        (
            json!({"oidc": {"issuer": "http://127.0.0.1:5556", "clientId": "c"}}),
            None,
            "True",
            "Valid",
            "discovery",
        ),
        (
            static_spec.clone(),
            Some(Expect::get(people, two.clone())),
            "True",
            "Valid",
            "2 users from Secret rolegate/people",
        ),
        (
            static_spec.clone(),
            Some(Expect::not_found(people)),
            "False",
            "SecretNotFound",
            "does not exist",
        ),
        (
            static_spec.clone(),
            Some(Expect::get(people, unlabelled)),
            "False",
            "SecretNotLabelled",
            "rolegate.dev/login=true",
        ),
        (
            static_spec.clone(),
            Some(Expect::get(
                people,
                users(&format!(
                    "- {{username: carol, bcryptHash: \"{hash}\"}}\n- {{username: carol, bcryptHash: \"{hash}\"}}\n"
                )),
            )),
            "False",
            "InvalidUsers",
            "listed twice",
        ),
        (
            static_spec.clone(),
            Some(Expect::get(
                people,
                users("- {username: carol, bcryptHash: hunter2}\n"),
            )),
            "False",
            "InvalidUsers",
            "not a bcrypt hash",
        ),
        (
            static_spec.clone(),
            Some(Expect::get(
                people,
                users("carol: {password: \"$2b$secretish\"}\n"),
            )),
            "False",
            "InvalidUsers",
            "is not a list of users",
        ),
        (
            json!({"static": {"secretRef": {"name": "people", "namespace": "team-a"}}}),
            None,
            "False",
            "SecretOutsideNamespace",
            "operator namespace rolegate",
        ),
        (
            json!({"oidc": {"issuer": "https://idp.example", "clientId": "c", "clientSecretRef": {"name": "people"}}}),
            Some(Expect::get(people, two.clone())),
            "False",
            "SecretKeyMissing",
            "no clientSecret",
        ),
    ];
    for (spec, secret, status, reason, says) in cases {
        let connection = json!({"apiVersion": "rolegate.dev/v1alpha1", "kind": "Connection",
                                "metadata": {"name": "k8s", "generation": 2}, "spec": spec});
        let (client, handle) = apiserver::client();
        let ctx = context(client);
        let mut calls: Vec<Expect> = secret.into_iter().collect();
        let offset = calls.len();
        calls.push(Expect::patch(
            "/apis/rolegate.dev/v1alpha1/connections/k8s/status",
            connection.clone(),
        ));
        calls.push(Expect::event("default"));
        let verifier = apiserver::scenario(handle, calls);
        rolegate::controller::connection::reconcile(
            Arc::new(serde_json::from_value(connection).unwrap()),
            ctx,
        )
        .await
        .unwrap();
        let (seen, mut handle) = verifier.await.unwrap();
        apiserver::no_more(&mut handle).await;
        let ready = &seen[offset].body["status"]["conditions"][0];
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some(status), Some(reason)),
            "{ready}"
        );
        let message = ready["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        assert!(
            !message.contains("$2b$"),
            "no hash reaches the status: {message}"
        );
        assert_eq!(seen[offset].body["status"]["observedGeneration"], 2);
        let event = if status == "True" {
            "Normal"
        } else {
            "Warning"
        };
        assert_eq!(seen[offset + 1].body["type"], event);
    }
}

// ---- the operator's certificates ----

const CONFIGMAPS: &str = "/api/v1/namespaces/rolegate/configmaps";
/// Where the CA Secret lives: the controller-only namespace, out of the server's reach.
const CA_SECRETS: &str = "/api/v1/namespaces/rolegate-controller/secrets";
const WEBHOOKS: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

fn cert_options(mode: certs::CertMode) -> certs::CertOptions {
    certs::CertOptions {
        mode,
        namespace: "rolegate".into(),
        ca_namespace: CONTROLLER_NS.into(),
        ca_secret: "rolegate-ca".into(),
        ca_configmap: "rolegate-ca".into(),
        serving_secret: "rolegate-server-tls".into(),
        service: "rolegate-server".into(),
        webhook: Some("rolegate".into()),
    }
}

fn webhook_config(ca_bundle: Option<&str>) -> serde_json::Value {
    let hook = |name: &str| {
        let mut client_config = json!({"service": {"name": "rolegate-server", "namespace": "rolegate", "path": "/admission/pods"}});
        if let Some(b) = ca_bundle {
            client_config["caBundle"] = json!(b64(b));
        }
        json!({"name": name, "clientConfig": client_config, "admissionReviewVersions": ["v1"],
               "sideEffects": "None", "failurePolicy": "Ignore"})
    };
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
           "metadata": {"name": "rolegate", "resourceVersion": "7"},
           "webhooks": [hook("pods.rolegate.dev"), hook("pods-opt-in.rolegate.dev")]})
}

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn unb64(value: &serde_json::Value) -> String {
    use base64::Engine as _;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

fn cert_now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_790_000_000).unwrap()
}

/// Runs a fresh self-signed pass and returns the CA Secret, serving Secret and ConfigMap it wrote.
async fn fresh_certificates() -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let (client, handle) = apiserver::client();
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::not_found(&format!("{CA_SECRETS}/rolegate-ca")),
            // Where earlier versions kept it: nothing to move.
            Expect::not_found(&format!("{SECRETS}/rolegate-ca")),
            Expect::not_found(&format!("{SECRETS}/rolegate-server-tls")),
            Expect::not_found(&format!("{CONFIGMAPS}/rolegate-ca")),
            Expect::get(&format!("{WEBHOOKS}/rolegate"), webhook_config(None)),
            Expect::not_found(&format!("{CA_SECRETS}/rolegate-ca")),
            Expect::create(CA_SECRETS),
            Expect::not_found(&format!("{SECRETS}/rolegate-server-tls")),
            Expect::create(SECRETS),
            Expect::replace(&format!("{WEBHOOKS}/rolegate")),
            Expect::not_found(&format!("{CONFIGMAPS}/rolegate-ca")),
            Expect::create(CONFIGMAPS),
        ],
    );
    let outcome = certs::reconcile(
        &client,
        &cert_options(certs::CertMode::SelfSigned),
        cert_now(),
    )
    .await
    .unwrap();
    assert_eq!(outcome.changes.len(), 4, "{outcome:?}");
    let (seen, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;

    let (ca, serving, webhook, configmap) =
        (&seen[6].body, &seen[8].body, &seen[9].body, &seen[11].body);
    assert_eq!(
        ca["type"], "Opaque",
        "the CA key is kept out of the server's TLS index"
    );
    // The CA key is written only where the server has no access; the serving Secret (which the
    // server needs) stays in the operator namespace.
    assert_eq!(seen[6].path, CA_SECRETS);
    assert_eq!(ca["metadata"]["namespace"], CONTROLLER_NS);
    assert_eq!(seen[8].path, SECRETS);
    for request in &seen {
        if request.path.starts_with(SECRETS) && request.method != http::Method::GET {
            assert!(
                !request
                    .body
                    .to_string()
                    .contains(&ca["data"]["tls.key"].to_string()),
                "the CA key reached {} {}",
                request.method,
                request.path
            );
        }
    }
    assert_eq!(serving["type"], "kubernetes.io/tls");
    let ca_pem = unb64(&ca["data"]["tls.crt"]);
    let serving_pem = unb64(&serving["data"]["tls.crt"]);
    assert!(rolegate::pki::signed_by(&serving_pem, &ca_pem));
    let names = rolegate::pki::inspect(&serving_pem).unwrap().dns_names;
    assert!(
        names.contains(&"rolegate-server.rolegate.svc".to_owned()),
        "{names:?}"
    );
    // Agents mount only the ConfigMap: the CA certificate, no key.
    let bundle = configmap["data"]["ca.crt"].as_str().unwrap();
    assert_eq!(bundle.trim(), ca_pem.trim());
    assert!(!bundle.contains("PRIVATE KEY"));
    assert_eq!(unb64(&serving["data"]["ca.crt"]), bundle);
    // Both webhooks trust the bundle, and the write carries the version that was read.
    assert_eq!(webhook["metadata"]["resourceVersion"], "7");
    for hook in webhook["webhooks"].as_array().unwrap() {
        assert_eq!(unb64(&hook["clientConfig"]["caBundle"]), bundle);
    }
    (ca.clone(), serving.clone(), configmap.clone())
}

#[tokio::test]
async fn certificates_are_made_published_and_written_into_the_webhook() {
    fresh_certificates().await;
}

#[tokio::test]
async fn certificates_in_order_cause_no_writes_and_a_due_serving_certificate_is_reissued() {
    let (ca, serving, configmap) = fresh_certificates().await;
    let bundle = configmap["data"]["ca.crt"].as_str().unwrap().to_owned();
    let steady = |serving: &serde_json::Value| {
        vec![
            Expect::get(&format!("{CA_SECRETS}/rolegate-ca"), ca.clone()),
            Expect::get(&format!("{SECRETS}/rolegate-server-tls"), serving.clone()),
            Expect::get(&format!("{CONFIGMAPS}/rolegate-ca"), configmap.clone()),
            Expect::get(
                &format!("{WEBHOOKS}/rolegate"),
                webhook_config(Some(&bundle)),
            ),
        ]
    };
    let (client, handle) = apiserver::client();
    let verifier = apiserver::scenario(handle, steady(&serving));
    let outcome = certs::reconcile(
        &client,
        &cert_options(certs::CertMode::SelfSigned),
        cert_now(),
    )
    .await
    .unwrap();
    assert!(outcome.changes.is_empty(), "{outcome:?}");
    // What rolegate_certificate_expiry_timestamp_seconds reports: the CA's ten years and the
    // serving certificate's 90 days from when they were made.
    let expiry = |which: &str| {
        outcome
            .expiries
            .iter()
            .find(|(w, _)| *w == which)
            .map(|(_, at)| at.duration_since(cert_now()).as_hours())
            .unwrap()
    };
    assert!(expiry("ca") > 24 * 365 * 5, "{outcome:?}");
    assert_eq!(expiry("serving"), 24 * 90, "{outcome:?}");
    let (_, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;

    // 70 of 90 days later the serving certificate is reissued by the same CA; nothing else moves.
    let (client, handle) = apiserver::client();
    let mut calls = steady(&serving);
    calls.push(Expect::get(
        &format!("{SECRETS}/rolegate-server-tls"),
        serving.clone(),
    ));
    calls.push(Expect::replace(&format!("{SECRETS}/rolegate-server-tls")));
    let verifier = apiserver::scenario(handle, calls);
    let later = cert_now() + jiff::SignedDuration::from_hours(24 * 70);
    let outcome = certs::reconcile(&client, &cert_options(certs::CertMode::SelfSigned), later)
        .await
        .unwrap();
    assert_eq!(outcome.changes.len(), 1, "{outcome:?}");
    assert!(
        outcome.changes[0].contains("third of its life"),
        "{outcome:?}"
    );
    // The reissued certificate's expiry is the one reported.
    let serving_expiry = outcome
        .expiries
        .iter()
        .find(|(w, _)| *w == "serving")
        .unwrap()
        .1;
    assert_eq!(serving_expiry.duration_since(later).as_hours(), 24 * 90);
    let (seen, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;
    let renewed = unb64(&seen[5].body["data"]["tls.crt"]);
    assert_ne!(renewed, unb64(&serving["data"]["tls.crt"]));
    assert!(rolegate::pki::signed_by(
        &renewed,
        &unb64(&ca["data"]["tls.crt"])
    ));
    assert_eq!(
        rolegate::pki::inspect(&renewed).unwrap().not_before,
        later - jiff::SignedDuration::from_hours(1)
    );
}

#[tokio::test]
async fn external_certificates_only_publish_the_bundle_and_wait_for_ca_crt() {
    let options = cert_options(certs::CertMode::External);
    // cert-manager has not issued yet: a clear pending error, nothing written.
    let (client, handle) = apiserver::client();
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::not_found(&format!("{SECRETS}/rolegate-server-tls")),
            Expect::not_found(&format!("{CONFIGMAPS}/rolegate-ca")),
        ],
    );
    let error = certs::reconcile(&client, &options, cert_now())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no ca.crt yet"), "{error}");
    let (_, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;

    let ca = rolegate::pki::new_ca(cert_now(), "cert-manager CA").unwrap();
    let issued = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "rolegate-server-tls", "namespace": "rolegate"},
        "data": {"tls.crt": b64("not read"), "tls.key": b64("not read"), "ca.crt": b64(&ca.cert_pem)}});
    let (client, handle) = apiserver::client();
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::get(&format!("{SECRETS}/rolegate-server-tls"), issued),
            Expect::not_found(&format!("{CONFIGMAPS}/rolegate-ca")),
            Expect::not_found(&format!("{CONFIGMAPS}/rolegate-ca")),
            Expect::create(CONFIGMAPS),
        ],
    );
    certs::reconcile(&client, &options, cert_now())
        .await
        .unwrap();
    let (seen, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;
    assert_eq!(seen[3].body["data"]["ca.crt"], ca.cert_pem);
}

#[tokio::test]
async fn a_ca_left_in_the_operator_namespace_by_an_earlier_version_is_moved_out_of_the_servers_reach()
 {
    let (ca, serving, configmap) = fresh_certificates().await;
    let bundle = configmap["data"]["ca.crt"].as_str().unwrap().to_owned();
    let mut legacy = ca.clone();
    legacy["metadata"]["namespace"] = json!("rolegate");
    let (client, handle) = apiserver::client();
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::not_found(&format!("{CA_SECRETS}/rolegate-ca")),
            Expect::get(&format!("{SECRETS}/rolegate-ca"), legacy.clone()),
            Expect::get(&format!("{SECRETS}/rolegate-server-tls"), serving.clone()),
            Expect::get(&format!("{CONFIGMAPS}/rolegate-ca"), configmap.clone()),
            Expect::get(
                &format!("{WEBHOOKS}/rolegate"),
                webhook_config(Some(&bundle)),
            ),
            Expect::not_found(&format!("{CA_SECRETS}/rolegate-ca")),
            Expect::create(CA_SECRETS),
            Expect {
                method: http::Method::DELETE,
                ..Expect::get(&format!("{SECRETS}/rolegate-ca"), legacy.clone())
            },
        ],
    );
    let outcome = certs::reconcile(
        &client,
        &cert_options(certs::CertMode::SelfSigned),
        cert_now(),
    )
    .await
    .unwrap();
    let (seen, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;
    assert_eq!(outcome.changes.len(), 1, "{outcome:?}");
    assert!(
        outcome.changes[0].contains("moved from namespace rolegate"),
        "{outcome:?}"
    );
    // The same CA (the serving certificate and the agents' bundle stay valid), now only where
    // the controller reads Secrets.
    assert_eq!(seen[6].body["data"], ca["data"]);
    assert_eq!(seen[6].body["metadata"]["namespace"], CONTROLLER_NS);
}

/// An IAM SAML provider made outside rolegate (the company's Okta one, say), with `tags`.
async fn foreign_provider(name: &str, tags: &[(&str, &str)]) -> (String, String) {
    let iam = SdkSamlProviders::new(&IamAccess {
        endpoint_url: Some(moto()),
        ..IamAccess::default()
    })
    .await;
    let metadata = format!(
        "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" entityID=\"http://www.okta.com/{name}\">{}</md:EntityDescriptor>",
        "<!-- okta -->".repeat(100)
    );
    let tags = tags
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let arn = iam.create(name, &metadata, &tags).await.unwrap();
    (arn, metadata)
}

#[tokio::test]
async fn iamprovider_never_takes_over_a_provider_it_does_not_own() {
    let secret = signing_secret();
    let iam = SdkSamlProviders::new(&IamAccess {
        endpoint_url: Some(moto()),
        ..IamAccess::default()
    })
    .await;
    let with_finalizer = json!({"metadata": {"finalizers": [iamprovider::FINALIZER]}});
    for (tags, found) in [
        (
            vec![("team", "identity")],
            "it has no rolegate.dev/owner tag, so rolegate did not create it",
        ),
        (
            vec![("rolegate.dev/owner", "other-cluster/acct")],
            "its rolegate.dev/owner tag names \"other-cluster/acct\"",
        ),
    ] {
        let name = unique("okta");
        let (arn, metadata) = foreign_provider(&name, &tags).await;
        let before = iam.get(&arn).await.unwrap().unwrap();

        let out = apply_once(provider_json(&name, with_finalizer.clone()), &secret, true).await;
        assert_eq!(out["ok"], false);
        assert_eq!(out["event"], "NotOwned");
        let synced = &out["status"]["conditions"][1];
        assert_eq!(
            (
                synced["type"].as_str(),
                synced["status"].as_str(),
                synced["reason"].as_str()
            ),
            (Some("Synced"), Some("False"), Some("NotOwned"))
        );
        assert_eq!(
            synced["message"],
            format!(
                "IAM SAML provider {arn} is not owned by \"{CLUSTER}/acct\": {found}; rolegate leaves it untouched (set spec.adopt: true to take it over)"
            )
        );
        assert_eq!(out["status"]["conditions"][0]["status"], "False");
        assert!(out["status"].get("arn").is_none(), "{}", out["status"]);
        // IAM still holds the owner's metadata and tags.
        let after = iam.get(&arn).await.unwrap().unwrap();
        assert_eq!(after, before);
        assert_eq!(after.metadata, metadata);

        // deletionPolicy Delete on a provider that is not ours: left in IAM, the IAMProvider goes.
        let mut deleting = provider_json(&name, with_finalizer.clone());
        merge(
            &mut deleting,
            json!({"spec": {"deletionPolicy": "Delete"}, "metadata": {"deletionTimestamp": "2026-11-26T00:00:00Z"},
                   "status": {"arn": arn}}),
        );
        let (client, handle) = apiserver::client();
        let verifier = apiserver::scenario(
            handle,
            vec![
                Expect::event("default").after_peer(),
                Expect::patch(&format!("{PROVIDERS}/acct"), deleting.clone()),
            ],
        );
        iamprovider::reconcile(
            Arc::new(serde_json::from_value(deleting).unwrap()),
            context(client),
        )
        .await
        .unwrap();
        let (seen, _) = verifier.await.unwrap();
        assert_eq!(
            (
                seen[0].body["type"].as_str(),
                seen[0].body["reason"].as_str()
            ),
            (Some("Warning"), Some("NotOwned"))
        );
        assert!(
            seen[1].body.to_string().contains("remove"),
            "the finalizer goes"
        );
        assert_eq!(
            iam.get(&arn).await.unwrap().unwrap(),
            before,
            "still in IAM"
        );
    }
}

#[tokio::test]
async fn iamprovider_adopts_a_provider_only_when_told_to_and_then_owns_it() {
    let secret = signing_secret();
    let iam = SdkSamlProviders::new(&IamAccess {
        endpoint_url: Some(moto()),
        ..IamAccess::default()
    })
    .await;
    let name = unique("adopt");
    let (arn, metadata) = foreign_provider(&name, &[("team", "identity")]).await;
    let adopting = provider_json(
        &name,
        json!({"metadata": {"finalizers": [iamprovider::FINALIZER]}, "spec": {"adopt": true}}),
    );
    let out = apply_once(adopting.clone(), &secret, true).await;
    assert_eq!(out["ok"], true);
    assert_eq!(out["event"], "Adopted");
    assert_eq!(out["status"]["conditions"][1]["reason"], "Adopted");
    assert_eq!(out["status"]["arn"], arn);
    let held = iam.get(&arn).await.unwrap().unwrap();
    assert_ne!(held.metadata, metadata, "the metadata is rolegate's now");
    assert!(held.metadata.contains("https://rolegate.example/samlp/aws"));
    assert_eq!(
        held.tags
            .get(rolegate::registration::OWNER_TAG)
            .map(String::as_str),
        Some(format!("{CLUSTER}/acct").as_str())
    );
    assert_eq!(
        held.tags.get("team").map(String::as_str),
        Some("identity"),
        "other tags stay"
    );

    // Owned from now on: without adopt, the next pass is in sync, and Delete deletes it.
    let mut owned = provider_json(
        &name,
        json!({"metadata": {"finalizers": [iamprovider::FINALIZER]}}),
    );
    owned["status"] = out["status"].clone();
    let out = apply_once(owned.clone(), &secret, false).await;
    assert_eq!(out["ok"], true);
    assert_eq!(out["status"]["conditions"][1]["reason"], "InSync");
    merge(
        &mut owned,
        json!({"spec": {"deletionPolicy": "Delete"}, "metadata": {"deletionTimestamp": "2026-11-26T00:00:00Z"}}),
    );
    let (client, handle) = apiserver::client();
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::event("default").after_peer(),
            Expect::patch(&format!("{PROVIDERS}/acct"), owned.clone()),
        ],
    );
    iamprovider::reconcile(
        Arc::new(serde_json::from_value(owned).unwrap()),
        context(client),
    )
    .await
    .unwrap();
    let (seen, _) = verifier.await.unwrap();
    assert_eq!(seen[0].body["reason"], "Deleted");
    assert!(iam.get(&arn).await.unwrap().is_none());
}

#[tokio::test]
async fn iamprovider_access_keys_are_read_only_from_the_controller_namespace() {
    // Keys in the operator namespace, which the server reads: refused before anything is read.
    let refused = provider_json(
        &unique("keys"),
        json!({"metadata": {"finalizers": [iamprovider::FINALIZER]},
               "spec": {"credentials": {"secretRef": {"name": "aws-keys", "namespace": "rolegate"}}}}),
    );
    let (client, handle) = apiserver::client();
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::patch(&format!("{PROVIDERS}/acct/status"), refused.clone()),
            Expect::event("default"),
        ],
    );
    let result = iamprovider::reconcile(
        Arc::new(serde_json::from_value(refused).unwrap()),
        context(client),
    )
    .await;
    assert!(result.is_err());
    let (seen, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;
    let synced = &seen[0].body["status"]["conditions"][1];
    assert_eq!(
        (synced["status"].as_str(), synced["reason"].as_str()),
        (Some("False"), Some("SecretReadableByServer"))
    );
    assert_eq!(
        synced["message"],
        "credentials Secret rolegate/aws-keys is in the operator namespace, whose Secrets the public-facing server can read; move it to namespace rolegate-controller, where only the controller reads Secrets"
    );
    assert_eq!(
        (
            seen[1].body["type"].as_str(),
            seen[1].body["reason"].as_str()
        ),
        (Some("Warning"), Some("SecretReadableByServer"))
    );

    // Without a namespace the reference points into the controller namespace, and registers.
    let name = unique("keys");
    let provider = provider_json(
        &name,
        json!({"metadata": {"finalizers": [iamprovider::FINALIZER]},
               "spec": {"credentials": {"secretRef": {"name": "aws-keys"}}}}),
    );
    let keys = json!({"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": "aws-keys", "namespace": CONTROLLER_NS},
                      "stringData": {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}});
    let (client, handle) = apiserver::client();
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::get("/apis/rolegate.dev/v1alpha1/samlapps/aws", saml_app()),
            Expect::get(
                "/api/v1/namespaces/rolegate/secrets/aws-signing",
                signing_secret(),
            ),
            Expect::get(&format!("{CA_SECRETS}/aws-keys"), keys),
            Expect::patch(&format!("{PROVIDERS}/acct/status"), provider.clone()).after_peer(),
            Expect::event("default"),
        ],
    );
    iamprovider::reconcile(
        Arc::new(serde_json::from_value(provider).unwrap()),
        context(client),
    )
    .await
    .unwrap();
    let (seen, _) = verifier.await.unwrap();
    assert_eq!(seen[3].body["status"]["conditions"][1]["reason"], "Created");
    assert!(!seen[3].body.to_string().contains("AWS_SECRET_ACCESS_KEY"));
}

// ---- leader election ----

/// How the API server lets the leader down once it has renewed twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseTrouble {
    /// Lease updates fail with 500.
    FailingUpdates,
    /// Lease calls are never answered (a partition).
    NoAnswer,
    /// Another replica holds the Lease.
    TakenOver,
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/rolegate/leases";

fn lease(holder: &str) -> serde_json::Value {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    serde_json::to_value(Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("rolegate-controller".into()),
            namespace: Some("rolegate".into()),
            resource_version: Some("1".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(3),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..Default::default()
        }),
    })
    .unwrap()
}

fn reply(status: u16, body: &serde_json::Value) -> http::Response<kube::client::Body> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// What the API server saw: each request, whether it came after the leader stopped, and when
/// the last Lease renewal was answered.
#[derive(Debug, Default)]
struct Seen {
    requests: Vec<(http::Method, String, bool)>,
    last_renewal: Option<std::time::Instant>,
}

/// An API server for one leader: the Lease (healthy for two renewals, then `trouble`) and the
/// reads and writes of RoleMapping reconciles, always answered.
async fn lease_server(
    mut handle: apiserver::Handle,
    trouble: LeaseTrouble,
    stopped: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<std::sync::Mutex<Seen>>,
) {
    use http_body_util::BodyExt as _;
    use std::sync::atomic::Ordering;
    let mut renewals = 0;
    let mut unanswered = Vec::new();
    while let Some((request, send)) = handle.next_request().await {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        seen.lock().unwrap().requests.push((
            method.clone(),
            path.clone(),
            stopped.load(Ordering::SeqCst),
        ));
        let body: serde_json::Value =
            serde_json::from_slice(&request.into_body().collect().await.unwrap().to_bytes())
                .unwrap_or_default();
        let healthy = renewals < 2;
        let lease_path = format!("{LEASES}/rolegate-controller");
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "InternalError", "code": 500, "message": "etcdserver: request timed out"});
        match (method.as_str(), path.as_str()) {
            ("GET", p) if p == lease_path => match (healthy, trouble) {
                (false, LeaseTrouble::NoAnswer) => unanswered.push(send),
                (false, LeaseTrouble::TakenOver) => {
                    send.send_response(reply(200, &lease("replica-b")))
                }
                _ => send.send_response(reply(200, &lease("replica-a"))),
            },
            ("POST", LEASES) => send.send_response(reply(201, &body)),
            ("PUT", p) if p == lease_path => match (healthy, trouble) {
                (true, _) => {
                    renewals += 1;
                    seen.lock().unwrap().last_renewal = Some(std::time::Instant::now());
                    send.send_response(reply(200, &body));
                }
                (false, LeaseTrouble::NoAnswer) => unanswered.push(send),
                (false, _) => send.send_response(reply(500, &status)),
            },
            ("GET", p) if p == format!("{PROVIDERS}/acct") => {
                send.send_response(reply(200, &provider_json("rolegate", json!({}))));
            }
            ("GET", "/api/v1/namespaces/team-a") => send.send_response(reply(200, &namespace("a"))),
            ("GET", "/apis/rolegate.dev/v1alpha1/samlapps/aws") => {
                send.send_response(reply(200, &saml_app()));
            }
            ("PATCH", _) => {
                send.send_response(reply(200, &serde_json::to_value(mapping(None)).unwrap()));
            }
            ("POST", _) => send.send_response(reply(201, &body)),
            (m, p) => panic!("unexpected request {m} {p}"),
        }
    }
}

#[tokio::test]
async fn a_leader_that_cannot_renew_its_lease_stops_reconciling_before_a_standby_may_take_over() {
    use rolegate::controller::leader::{self, Attempt, LeaderTiming, LeadershipLost, LeaseLock};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    let ms = Duration::from_millis;
    let timing = LeaderTiming::new(ms(3000), ms(600), ms(100)).unwrap();
    for trouble in [
        LeaseTrouble::FailingUpdates,
        LeaseTrouble::NoAnswer,
        LeaseTrouble::TakenOver,
    ] {
        let (client, handle) = apiserver::client();
        let stopped = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
        tokio::spawn(lease_server(
            handle,
            trouble,
            Arc::clone(&stopped),
            Arc::clone(&seen),
        ));
        let lock = LeaseLock::new(
            client.clone(),
            "rolegate",
            "rolegate-controller",
            "replica-a",
            timing.lease_duration,
        );
        let acquired = std::time::Instant::now();
        assert_eq!(
            lock.try_acquire_or_renew(jiff::Timestamp::now())
                .await
                .unwrap(),
            Attempt::Held
        );
        let ctx = context(client);
        // The controller's work: RoleMapping reconciles, each ending in a status write.
        let work = async {
            loop {
                rolemapping::reconcile(Arc::new(mapping(None)), Arc::clone(&ctx))
                    .await
                    .unwrap();
                tokio::time::sleep(ms(20)).await;
            }
        };
        let clock = rolegate::server::SystemClock;
        let lost =
            rolegate::controller::run::lead(work, leader::hold(&lock, timing, &clock, acquired))
                .await
                .unwrap_err();
        let lost_at = std::time::Instant::now();
        stopped.store(true, Ordering::SeqCst);
        match (trouble, &lost) {
            (LeaseTrouble::TakenOver, LeadershipLost::TakenOver(holder)) => {
                assert_eq!(holder, "replica-b");
            }
            (LeaseTrouble::FailingUpdates, LeadershipLost::RenewDeadline { deadline, last }) => {
                assert_eq!(*deadline, timing.renew_deadline);
                assert!(last.contains("etcdserver: request timed out"), "{last}");
            }
            (LeaseTrouble::NoAnswer, LeadershipLost::RenewDeadline { last, .. }) => {
                assert_eq!(last, "the API server did not answer in time");
            }
            other => panic!("{trouble:?} ended as {other:?}"),
        }
        // It stopped before the Lease it last renewed ran out, when a standby may take over.
        let last_renewal = seen.lock().unwrap().last_renewal.unwrap();
        assert!(
            lost_at.duration_since(last_renewal) < timing.lease_duration,
            "{trouble:?}: stopped {:?} after the last renewal",
            lost_at.duration_since(last_renewal)
        );
        // It was reconciling until then, and nothing reaches the API server afterwards.
        tokio::time::sleep(ms(300)).await;
        let seen = seen.lock().unwrap();
        let writes = |after: bool| {
            seen.requests
                .iter()
                .filter(|(m, p, a)| {
                    *a == after && m == http::Method::PATCH && p.contains("rolemappings")
                })
                .count()
        };
        assert!(
            writes(false) > 0,
            "{trouble:?}: no reconcile ran while leading"
        );
        assert_eq!(
            seen.requests.iter().filter(|(_, _, after)| *after).count(),
            0,
            "{trouble:?}: requests after leadership was lost: {:?}",
            seen.requests
                .iter()
                .filter(|(_, _, a)| *a)
                .collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn the_session_key_secret_is_created_once_when_missing_and_never_replaced() {
    use rolegate::controller::session::{SessionKey, ensure};
    let path = "/api/v1/namespaces/rolegate/secrets/rolegate-session";
    let (client, handle) = apiserver::client();
    let server = apiserver::scenario(
        handle,
        vec![
            Expect::not_found(path),
            Expect::create("/api/v1/namespaces/rolegate/secrets"),
        ],
    );
    assert_eq!(
        ensure(client, "rolegate").await.unwrap(),
        SessionKey::Created
    );
    let (seen, mut handle) = server.await.unwrap();
    apiserver::no_more(&mut handle).await;
    let secret = &seen[1].body;
    assert_eq!(secret["metadata"]["name"], "rolegate-session");
    // Labelled so that the server's index watches it.
    assert_eq!(secret["metadata"]["labels"]["rolegate.dev/login"], "true");
    let material = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        secret["data"]["session.key"].as_str().unwrap(),
    )
    .unwrap();
    rolegate::login::CookieKey::from_material(&material).unwrap();

    // Present (the chart's, the team's, or the last run's): read, never written.
    let (client, handle) = apiserver::client();
    let existing = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "rolegate-session", "namespace": "rolegate"},
        "data": {"session.key": "c2VjcmV0"}});
    let server = apiserver::scenario(handle, vec![Expect::get(path, existing)]);
    assert_eq!(
        ensure(client, "rolegate").await.unwrap(),
        SessionKey::Present
    );
    let (_, mut handle) = server.await.unwrap();
    apiserver::no_more(&mut handle).await;
}

/// A clock pinned to one instant.
#[derive(Debug)]
struct Pinned(jiff::Timestamp);

impl rolegate::server::Clock for Pinned {
    fn now(&self) -> jiff::Timestamp {
        self.0
    }
}

fn aws_cli(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(common::venv().join("bin/aws"))
        .args(args)
        .args(["--output", "json"])
        .env("AWS_ENDPOINT_URL", moto())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[tokio::test]
async fn a_deleted_rolemapping_revokes_its_sessions_and_the_provider_removes_the_deny_later() {
    let role = unique("app-revoked");
    aws_cli(&[
        "iam",
        "create-role",
        "--role-name",
        &role,
        "--assume-role-policy-document",
        r#"{"Version":"2012-10-17","Statement":[]}"#,
    ]);
    let role_arn = format!("arn:aws:iam::{ACCOUNT}:role/{role}");
    let mut deleting = serde_json::to_value(mapping(None)).unwrap();
    deleting["spec"]["roleArn"] = json!(role_arn);
    deleting["metadata"]["deletionTimestamp"] = json!("2026-12-02T18:00:00Z");
    let deleting: RoleMapping = serde_json::from_value(deleting).unwrap();
    let deleted_at: jiff::Timestamp = "2026-12-02T18:00:00Z".parse().unwrap();

    let (client, handle) = apiserver::client();
    let ctx = Arc::new(
        Arc::try_unwrap(context(client))
            .unwrap()
            .with_clock(Arc::new(Pinned(deleted_at))),
    );
    let provider = provider_json("unused", json!({}));
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::get(&format!("{PROVIDERS}/acct"), provider.clone()),
            Expect::patch(&format!("{PROVIDERS}/acct"), provider.clone()).after_peer(),
            Expect::event("team-a"),
            Expect::event("default"),
            Expect::patch(
                "/apis/rolegate.dev/v1alpha1/namespaces/team-a/rolemappings/reader",
                serde_json::to_value(&deleting).unwrap(),
            ),
        ],
    );
    rolemapping::reconcile(Arc::new(deleting), ctx)
        .await
        .unwrap();
    let (seen, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;

    // The role holds the deny, with the deletion time and the mapping's subject.
    let policies = aws_cli(&["iam", "list-role-policies", "--role-name", &role]);
    let name = policies["PolicyNames"][0].as_str().unwrap().to_owned();
    assert!(name.starts_with("rolegate-revoke-"), "{policies}");
    let held = aws_cli(&[
        "iam",
        "get-role-policy",
        "--role-name",
        &role,
        "--policy-name",
        &name,
    ]);
    let statement = &held["PolicyDocument"]["Statement"][0];
    assert_eq!(statement["Effect"], "Deny");
    assert_eq!(
        statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
        "2026-12-02T18:00:00Z"
    );
    assert_eq!(
        statement["Condition"]["StringEquals"]["saml:sub"],
        json!(["system:serviceaccount:team-a:app"])
    );
    // Recorded on the IAMProvider, reported in Events, and the finalizer released.
    let annotation = format!("{}{name}", rolemapping::REVOCATION_ANNOTATION);
    let remove_after = deleted_at.as_second() + 3600;
    assert_eq!(
        seen[1].body["metadata"]["annotations"][&annotation],
        format!("{role} {remove_after}")
    );
    assert_eq!(seen[2].body["reason"], "Revoked");
    assert!(
        seen[2].body["note"]
            .as_str()
            .unwrap()
            .contains("system:serviceaccount:team-a:app"),
        "{}",
        seen[2].body
    );
    assert!(
        seen[4].body.to_string().contains("remove"),
        "{}",
        seen[4].body
    );

    // An hour later the IAMProvider's resync removes the deny and its annotation.
    let secret = signing_secret();
    let mut recorded = provider_json(
        &unique("ctl-rev"),
        json!({"metadata": {"finalizers": [iamprovider::FINALIZER],
                            "annotations": {annotation.clone(): format!("{role} {remove_after}")}}}),
    );
    let (client, handle) = apiserver::client();
    let later = jiff::Timestamp::from_second(remove_after).unwrap();
    let ctx = Arc::new(
        Arc::try_unwrap(context(client))
            .unwrap()
            .with_clock(Arc::new(Pinned(later))),
    );
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::get("/apis/rolegate.dev/v1alpha1/samlapps/aws", saml_app()),
            Expect::get("/api/v1/namespaces/rolegate/secrets/aws-signing", secret),
            Expect::patch(&format!("{PROVIDERS}/acct/status"), recorded.clone()).after_peer(),
            Expect::event("default"),
            Expect::event("default").after_peer(),
            Expect::patch(&format!("{PROVIDERS}/acct"), recorded.clone()),
        ],
    );
    recorded["metadata"]["uid"] = json!("u3");
    let p: IAMProvider = serde_json::from_value(recorded).unwrap();
    iamprovider::reconcile(Arc::new(p), ctx).await.unwrap();
    let (seen, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;
    assert_eq!(seen[4].body["reason"], "RevocationExpired");
    assert_eq!(
        seen[5].body["metadata"]["annotations"][&annotation],
        serde_json::Value::Null
    );
    let policies = aws_cli(&["iam", "list-role-policies", "--role-name", &role]);
    assert_eq!(policies["PolicyNames"], json!([]), "the deny is gone");
}

#[tokio::test]
async fn a_subject_removed_from_a_rolemapping_has_its_sessions_revoked() {
    let role = unique("app-dropped");
    aws_cli(&[
        "iam",
        "create-role",
        "--role-name",
        &role,
        "--assume-role-policy-document",
        r#"{"Version":"2012-10-17","Statement":[]}"#,
    ]);
    let role_arn = format!("arn:aws:iam::{ACCOUNT}:role/{role}");
    // The last accepted status granted `app` and `job`; the spec now names only `app`.
    let mut m = serde_json::to_value(mapping(Some(json!({
        "grantedRole": role_arn,
        "grantedSubjects": ["system:serviceaccount:team-a:app", "system:serviceaccount:team-a:job"],
    }))))
    .unwrap();
    m["spec"]["roleArn"] = json!(role_arn);
    let m: RoleMapping = serde_json::from_value(m).unwrap();
    let now: jiff::Timestamp = "2026-12-02T18:30:00Z".parse().unwrap();
    let (client, handle) = apiserver::client();
    let ctx = Arc::new(
        Arc::try_unwrap(context(client))
            .unwrap()
            .with_clock(Arc::new(Pinned(now))),
    );
    let provider = provider_json("unused", json!({}));
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::get(&format!("{PROVIDERS}/acct"), provider.clone()),
            Expect::get("/api/v1/namespaces/team-a", namespace("a")),
            Expect::get("/apis/rolegate.dev/v1alpha1/samlapps/aws", saml_app()),
            Expect::get(&format!("{PROVIDERS}/acct"), provider.clone()),
            Expect::patch(&format!("{PROVIDERS}/acct"), provider.clone()).after_peer(),
            Expect::event("team-a"),
            Expect::event("default"),
            Expect::patch(
                "/apis/rolegate.dev/v1alpha1/namespaces/team-a/rolemappings/reader/status",
                serde_json::to_value(&m).unwrap(),
            ),
            Expect::event("team-a"),
        ],
    );
    rolemapping::reconcile(Arc::new(m), ctx).await.unwrap();
    let (seen, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;
    assert_eq!(seen[5].body["reason"], "Revoked");
    assert_eq!(
        seen[7].body["status"]["grantedSubjects"],
        json!(["system:serviceaccount:team-a:app"])
    );
    let policies = aws_cli(&["iam", "list-role-policies", "--role-name", &role]);
    let name = policies["PolicyNames"][0].as_str().unwrap().to_owned();
    let held = aws_cli(&[
        "iam",
        "get-role-policy",
        "--role-name",
        &role,
        "--policy-name",
        &name,
    ]);
    let condition = &held["PolicyDocument"]["Statement"][0]["Condition"];
    assert_eq!(
        condition["StringEquals"]["saml:sub"],
        json!(["system:serviceaccount:team-a:job"]),
        "only the removed subject is revoked"
    );
    assert_eq!(
        condition["DateLessThan"]["aws:TokenIssueTime"],
        "2026-12-02T18:30:00Z"
    );
}
