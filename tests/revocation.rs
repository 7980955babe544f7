//! Revocation against moto: the inline deny policy `PutRolePolicy` writes when a mapping goes
//! away, with the right `aws:TokenIssueTime` and `saml:sub`, and its removal once every revoked
//! session has expired, on a pinned clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{moto, unique, venv};
use rolegate::aws::sdk::{IamAccess, SdkSamlProviders};
use rolegate::aws::{RolePolicies as _, revoke, sweep};
use rolegate::crd::RoleMapping;
use rolegate::revocation::{removed_subjects, revocation};

fn aws(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(venv().join("bin/aws"))
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

fn mapping(role_arn: &str) -> RoleMapping {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rolegate.dev/v1alpha1",
        "kind": "RoleMapping",
        "metadata": {"name": "app-reader", "namespace": "team-a"},
        "spec": {
            "provider": "acct",
            "roleArn": role_arn,
            "sessionDuration": 7200,
            "subjects": [{"kind": "ServiceAccount", "name": "app"}, {"kind": "User", "name": "ada"}],
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn a_deleted_mapping_leaves_a_deny_on_the_role_until_its_sessions_expire() {
    let role = unique("revoked");
    let trust = r#"{"Version":"2012-10-17","Statement":[]}"#;
    let created = aws(&[
        "iam",
        "create-role",
        "--role-name",
        &role,
        "--assume-role-policy-document",
        trust,
    ]);
    let role_arn = created["Role"]["Arn"].as_str().unwrap().to_owned();
    let iam = SdkSamlProviders::new(&IamAccess {
        endpoint_url: Some(moto()),
        ..IamAccess::default()
    })
    .await
    .role_policies();
    // A policy of someone else's stays whatever happens.
    iam.put(&role, "theirs", r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListBucket","Resource":"*"}]}"#)
        .await
        .unwrap();

    let deleted_at: jiff::Timestamp = "2026-12-02T18:00:00Z".parse().unwrap();
    let m = mapping(&role_arn);
    let r = revocation(
        &role_arn,
        &removed_subjects(&m, None),
        deleted_at,
        m.spec.session_duration,
    )
    .unwrap();
    revoke(&iam, &r).await.unwrap();

    let held = aws(&[
        "iam",
        "get-role-policy",
        "--role-name",
        &role,
        "--policy-name",
        &r.policy_name,
    ]);
    let statement = &held["PolicyDocument"]["Statement"][0];
    assert_eq!(statement["Effect"], "Deny", "{held}");
    assert_eq!(statement["Action"], "*");
    assert_eq!(
        statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
        "2026-12-02T18:00:00Z"
    );
    assert_eq!(
        statement["Condition"]["StringEquals"]["saml:sub"],
        serde_json::json!(["ada", "system:serviceaccount:team-a:app"])
    );

    // One second before the longest session ends, the deny stays.
    let almost: jiff::Timestamp = "2026-12-02T19:59:59Z".parse().unwrap();
    assert!(sweep(&iam, &role, almost).await.unwrap().is_empty());
    assert!(iam.get(&role, &r.policy_name).await.unwrap().is_some());

    let after: jiff::Timestamp = "2026-12-02T20:00:00Z".parse().unwrap();
    assert_eq!(
        sweep(&iam, &role, after).await.unwrap(),
        vec![r.policy_name.clone()]
    );
    assert!(iam.get(&role, &r.policy_name).await.unwrap().is_none());
    assert_eq!(iam.list(&role).await.unwrap(), vec!["theirs".to_owned()]);
}

#[tokio::test]
async fn a_missing_role_is_refused_naming_put_role_policy() {
    let iam = SdkSamlProviders::new(&IamAccess {
        endpoint_url: Some(moto()),
        ..IamAccess::default()
    })
    .await
    .role_policies();
    let role_arn = format!("arn:aws:iam::123456789012:role/{}", unique("absent"));
    let m = mapping(&role_arn);
    let r = revocation(
        &role_arn,
        &removed_subjects(&m, None),
        jiff::Timestamp::now(),
        3600,
    )
    .unwrap();
    let err = revoke(&iam, &r).await.unwrap_err();
    assert_eq!(err.action, "iam:PutRolePolicy");
    assert!(err.to_string().contains("iam:PutRolePolicy"), "{err}");
    assert_eq!(err.reason(), "RevocationFailed");
}
