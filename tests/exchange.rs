//! The whole chain against moto: metadata registered with CreateSAMLProvider/UpdateSAMLProvider,
//! and tokens exchanged through `/delegation` and `/v1/credentials` for moto's credentials.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ACCOUNT, Harness, ROLE, moto, resources, unique};
use rolegate::aws::SamlProviders as _;
use rolegate::aws::sdk::{IamAccess, SdkSamlProviders};
use rolegate::registration::{Plan, register};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

#[tokio::test]
async fn moto_accepts_the_metadata_and_registration_creates_then_updates() {
    let name = unique("registered");
    let h = Harness::start(&resources(&name, false)).await;
    let snapshot = h.state.store.current();
    let provider = &snapshot.providers["acct"];
    let iam = SdkSamlProviders::new(&IamAccess {
        endpoint_url: Some(moto()),
        ..IamAccess::default()
    })
    .await;
    let metadata = h.metadata("aws").await;

    let first = register(provider, &metadata, "standalone/acct", &iam)
        .await
        .unwrap();
    assert_eq!(first.plan, Plan::Create);
    assert_eq!(
        first.arn,
        format!("arn:aws:iam::{ACCOUNT}:saml-provider/{name}")
    );
    let held = iam
        .get(&first.arn)
        .await
        .unwrap()
        .expect("provider exists in IAM");
    assert_eq!(
        held.metadata, metadata,
        "IAM holds exactly the served metadata"
    );

    let again = register(provider, &metadata, "standalone/acct", &iam)
        .await
        .unwrap();
    assert_eq!(again.plan, Plan::InSync);

    // Drift: someone replaces the metadata behind rolegate's back; the next pass restores it.
    let other = Harness::start(&resources(&name, false))
        .await
        .metadata("aws")
        .await;
    assert_ne!(other, metadata, "a second harness has another key");
    iam.update(&first.arn, &other).await.unwrap();
    let repaired = register(provider, &metadata, "standalone/acct", &iam)
        .await
        .unwrap();
    assert_eq!(repaired.plan, Plan::Update);
    assert_eq!(
        iam.get(&first.arn).await.unwrap().unwrap().metadata,
        metadata
    );

    iam.delete(&first.arn).await.unwrap();
    assert!(iam.get(&first.arn).await.unwrap().is_none());
}

#[tokio::test]
async fn delegation_returns_credentials_from_moto() {
    let name = unique("delegation");
    let h = Harness::start(&resources(&name, false)).await;
    let token = h.sa_token("team-a", "app");
    let principal = format!("arn:aws:iam::{ACCOUNT}:saml-provider/{name}");
    let (status, body) = h
        .delegation(&[
            ("grant_type", JWT_BEARER),
            ("id_token", &token),
            ("target", "aws"),
            ("client_id", "rolegate"),
            ("role", ROLE),
            ("principal", &principal),
            ("api_type", "aws"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    let creds = &body["Credentials"];
    assert!(
        creds["AccessKeyId"].as_str().unwrap().starts_with("ASIA"),
        "{body}"
    );
    assert!(!creds["SecretAccessKey"].as_str().unwrap().is_empty());
    assert!(!creds["SessionToken"].as_str().unwrap().is_empty());
    creds["Expiration"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    assert_eq!(
        body["AssumedRoleUser"]["Arn"],
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/app-reader/team-a.app")
    );
    for field in [
        "Subject",
        "SubjectType",
        "Issuer",
        "Audience",
        "NameQualifier",
    ] {
        assert!(body.get(field).is_some(), "{field} missing from {body}");
    }
    assert_eq!(h.metric("rolegate_assertions_signed_total"), 1.0);

    // JSON-encoded requests are accepted too.
    let response = reqwest::Client::new()
        .post(format!("{}/delegation", h.url))
        .json(&serde_json::json!({
            "grant_type": JWT_BEARER, "id_token": token, "target": "aws", "client_id": "rolegate",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn container_credentials_come_from_moto_and_are_cached() {
    let h = Harness::start(&resources(&unique("containers"), false)).await;
    let token = h.sa_token("team-a", "app");
    let (status, first) = h.credentials(&token, None).await;
    assert_eq!(status, 200, "{first}");
    assert!(first["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
    assert_eq!(first["AccountId"], ACCOUNT);
    let expiration: jiff::Timestamp = first["Expiration"].as_str().unwrap().parse().unwrap();
    assert!(expiration > jiff::Timestamp::now());
    for field in ["SecretAccessKey", "Token"] {
        assert!(!first[field].as_str().unwrap().is_empty());
    }
    assert_eq!(h.metric("rolegate_sts_calls_total"), 1.0);

    // A second request, even with a freshly minted token, is served from the cache.
    let (status, second) = h.credentials(&h.sa_token("team-a", "app"), None).await;
    assert_eq!(status, 200);
    assert_eq!(second["AccessKeyId"], first["AccessKeyId"]);
    assert_eq!(h.metric("rolegate_sts_calls_total"), 1.0);
    assert_eq!(h.metric("rolegate_credential_cache_hits_total"), 1.0);

    // The same counters are exported over HTTP, beside health and readiness.
    let metrics = reqwest::get(format!("{}/metrics", h.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rolegate_sts_calls_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rolegate_credential_cache_entries 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains(first["SecretAccessKey"].as_str().unwrap()),
        "no secret in metrics"
    );
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            reqwest::get(format!("{}{path}", h.url))
                .await
                .unwrap()
                .status(),
            200
        );
    }
}

#[tokio::test]
async fn concurrent_misses_share_one_sts_call() {
    let h = Harness::start(&resources(&unique("coalesce"), false)).await;
    let token = h.sa_token("team-a", "app");
    let requests = (0..32).map(|_| h.credentials(&token, None));
    let results = futures::future::join_all(requests).await;
    let keys: std::collections::BTreeSet<String> = results
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body["AccessKeyId"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(keys.len(), 1, "every caller got the one session");
    assert_eq!(h.metric("rolegate_sts_calls_total"), 1.0);
    assert_eq!(h.metric("rolegate_assertions_signed_total"), 1.0);
}

#[tokio::test]
async fn several_roles_are_chosen_with_the_role_parameter() {
    let h = Harness::start(&resources(&unique("multi"), false)).await;
    let token = h.sa_token("team-a", "multi");
    let (status, body) = h.credentials(&token, None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("2 roles"),
        "{body}"
    );
    let writer = format!("arn:aws:iam::{ACCOUNT}:role/app-writer");
    let (status, body) = h.credentials(&token, Some(&writer)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h.credentials(&token, Some(ROLE)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        h.metric("rolegate_sts_calls_total"),
        2.0,
        "one session per role"
    );
}

#[tokio::test]
async fn a_rotated_issuer_key_is_fetched_on_its_unknown_kid() {
    let mut h = Harness::start(&resources(&unique("rotation"), false)).await;
    let old_token = h.sa_token("team-a", "app");
    assert_eq!(h.credentials(&old_token, None).await.0, 200);

    // The issuer rotates: its JWKS now holds only the new key.
    let new_key = rolegate::dev::generate_key().unwrap();
    let jwks = rolegate::dev::jwks(&new_key).unwrap();
    std::fs::write(h.dir.path().join("config/jwks.json"), jwks.to_string()).unwrap();
    h.sa_key = new_key;
    let (status, body) = h.credentials(&h.sa_token("team-a", "app"), None).await;
    assert_eq!(status, 200, "the new kid triggers a refetch: {body}");
    let (status, body) = h.credentials(&old_token, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("is not in the keys"),
        "{body}"
    );
}

#[tokio::test]
async fn tags_that_could_overflow_the_packed_budget_are_refused_at_the_endpoint() {
    let tags: Vec<String> = (0..6)
        .map(|i| format!("owner-{i}: \"{{serviceAccount}}\""))
        .collect();
    let yaml = resources(&unique("packed"), false)
        + &format!(
            r#"
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: tagged, namespace: team-a}}
spec:
  provider: acct
  roleArn: {ROLE}
  subjects: [{{kind: ServiceAccount, name: tagged}}]
  sessionTags: {{{}}}
"#,
            tags.join(", ")
        );
    let h = Harness::start(&yaml).await;
    let (status, body) = h.credentials(&h.sa_token("team-a", "tagged"), None).await;
    assert_eq!(status, 403, "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(description.contains("InvalidTags"), "{body}");
    assert!(description.contains("2048-character budget"), "{body}");
    assert_eq!(h.metric("rolegate_sts_calls_total"), 0.0);
}
