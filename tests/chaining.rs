//! Cross-account role chaining against moto: the SAML session is used at once for
//! `sts:AssumeRole` into a RoleMapping's `targetRoleArn`, and the caller gets the target's
//! credentials, cached and refreshed as one session with the SAML one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ACCOUNT, Harness, resources, unique, venv};

/// The other account the target roles live in.
const OTHER: &str = "210987654321";

fn chaining_resources(name: &str) -> String {
    let allowed = format!(r#"allowedRoles: ["arn:aws:iam::{ACCOUNT}:role/app-*"]"#);
    let widened = format!(
        r#"allowedRoles: ["arn:aws:iam::{ACCOUNT}:role/app-*", "arn:aws:iam::{OTHER}:role/app-*"]"#
    );
    let base = resources(name, false);
    assert!(base.contains(&allowed), "the shared fixture changed");
    base.replace(&allowed, &widened)
        + &format!(
            r#"
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: chained, namespace: team-a}}
spec:
  provider: acct
  roleArn: arn:aws:iam::{ACCOUNT}:role/app-reader
  targetRoleArn: arn:aws:iam::{OTHER}:role/app-target
  externalId: rolegate-ext-1
  sessionDuration: 7200
  subjects: [{{kind: ServiceAccount, name: chained}}]
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: escape, namespace: team-a}}
spec:
  provider: acct
  roleArn: arn:aws:iam::{ACCOUNT}:role/app-reader
  targetRoleArn: arn:aws:iam::{OTHER}:role/admin
  subjects: [{{kind: ServiceAccount, name: sneaky}}]
"#
        )
}

/// `aws sts get-caller-identity` with the credentials the server handed out.
fn caller_identity(creds: &serde_json::Value) -> serde_json::Value {
    let out = std::process::Command::new(venv().join("bin/aws"))
        .args(["sts", "get-caller-identity", "--output", "json"])
        .env("AWS_ENDPOINT_URL", common::moto())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", creds["AccessKeyId"].as_str().unwrap())
        .env(
            "AWS_SECRET_ACCESS_KEY",
            creds["SecretAccessKey"].as_str().unwrap(),
        )
        .env("AWS_SESSION_TOKEN", creds["Token"].as_str().unwrap())
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aws sts get-caller-identity failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_pod_ends_up_in_the_target_role_of_another_account() {
    let h = Harness::start(&chaining_resources(&unique("chain"))).await;
    let (status, creds) = h.credentials(&h.sa_token("team-a", "chained"), None).await;
    assert_eq!(status, 200, "{creds}");
    assert_eq!(creds["AccountId"], OTHER, "{creds}");
    let identity = caller_identity(&creds);
    assert_eq!(
        identity["Arn"],
        format!("arn:aws:sts::{OTHER}:assumed-role/app-target/team-a.chained"),
        "the caller is the target role, with the SAML session's name: {identity}"
    );
    assert_eq!(identity["Account"], OTHER);
    assert_eq!(
        h.metric("rolegate_sts_calls_total"),
        2.0,
        "AssumeRoleWithSAML then AssumeRole"
    );

    // The mapping asks for 2 h, but a chained session lasts at most 1 h.
    let expiration: jiff::Timestamp = creds["Expiration"].as_str().unwrap().parse().unwrap();
    let lifetime = expiration.duration_since(jiff::Timestamp::now()).as_secs();
    assert!(
        (3000..=3600).contains(&lifetime),
        "chained session lasts {lifetime} s"
    );

    // The pair is one cached session: a fresh token gets the same target credentials, and
    // neither hop is repeated.
    let (status, again) = h.credentials(&h.sa_token("team-a", "chained"), None).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["AccessKeyId"], creds["AccessKeyId"]);
    assert_eq!(h.metric("rolegate_sts_calls_total"), 2.0);
}

#[tokio::test]
async fn a_target_outside_allowed_roles_is_refused_without_any_sts_call() {
    let h = Harness::start(&chaining_resources(&unique("chain-deny"))).await;
    let (status, body) = h.credentials(&h.sa_token("team-a", "sneaky"), None).await;
    assert_eq!(status, 403, "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(description.contains("RoleNotAllowed"), "{body}");
    assert!(
        description.contains(&format!("arn:aws:iam::{OTHER}:role/admin")),
        "the refusal names the target: {body}"
    );
    assert_eq!(h.metric("rolegate_sts_calls_total"), 0.0);
    assert_eq!(h.metric("rolegate_assertions_signed_total"), 0.0);
}
