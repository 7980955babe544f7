#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use super::*;
use crate::crd::IAMProviderSpec;

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn provider(name: &str) -> IAMProvider {
    let mut p = IAMProvider::new(
        "acct",
        IAMProviderSpec {
            saml_app: "aws".into(),
            account_id: "123456789012".into(),
            provider_name: name.into(),
            credentials: None,
            endpoint_url: None,
            region: None,
            tags: BTreeMap::new(),
            deletion_policy: DeletionPolicy::Retain,
            adopt: false,
            allowed_namespaces: None,
            allowed_roles: vec![],
            allowed_session_names: None,
            session_tags: None,
        },
    );
    p.metadata.generation = Some(2);
    p
}

fn registration(plan: Plan) -> Registration {
    Registration {
        arn: "arn:aws:iam::123456789012:saml-provider/rolegate".into(),
        plan,
        metadata_sha256: "ab".into(),
    }
}

#[test]
fn a_registration_makes_the_provider_ready_and_synced() {
    let status = plan_status(
        &provider("rolegate"),
        &Ok(registration(Plan::Create)),
        now(),
    );
    assert_eq!(
        status.arn.as_deref(),
        Some("arn:aws:iam::123456789012:saml-provider/rolegate")
    );
    assert_eq!(status.metadata_sha256.as_deref(), Some("ab"));
    assert_eq!(
        status.last_sync_time.as_deref(),
        Some("2027-01-15T08:00:00Z")
    );
    assert_eq!(status.observed_generation, Some(2));
    let reasons: Vec<(&str, &str, &str)> = status
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("Ready", "True", "Registered"),
            ("Synced", "True", "Created")
        ]
    );
}

#[test]
fn an_iam_error_is_a_plain_condition() {
    let outcome = Err((
        "AccessDenied".to_owned(),
        "IAM: AccessDenied: not allowed".to_owned(),
    ));
    let status = plan_status(&provider("rolegate"), &outcome, now());
    let ready = &status.conditions[0];
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "AccessDenied")
    );
    assert_eq!(ready.message, "IAM: AccessDenied: not allowed");
    let mut registered = provider("rolegate");
    registered.status = Some(plan_status(
        &registered,
        &Ok(registration(Plan::Create)),
        now(),
    ));
    let status = plan_status(&registered, &outcome, now());
    assert_eq!(
        status.conditions[0].status, "True",
        "the provider still exists in IAM"
    );
    assert_eq!(
        (
            status.conditions[1].status.as_str(),
            status.conditions[1].reason.as_str()
        ),
        ("False", "AccessDenied")
    );
}

#[test]
fn a_renamed_provider_is_refused() {
    let mut p = provider("rolegate");
    assert!(renamed(&p).is_none(), "nothing registered yet");
    p.status = Some(plan_status(&p, &Ok(registration(Plan::Create)), now()));
    assert!(renamed(&p).is_none());
    p.spec.provider_name = "renamed".into();
    let message = renamed(&p).unwrap();
    assert!(
        message.starts_with("providerName is immutable"),
        "{message}"
    );
    assert!(message.contains("saml-provider/renamed"), "{message}");
}

#[test]
fn pending_revocations_show_as_a_revoking_condition_until_they_expire() {
    let mut p = provider("rolegate");
    let until = now().as_second() + 600;
    p.metadata.annotations = Some(
        [(
            "revoke.rolegate.dev/rolegate-revoke-ab".to_owned(),
            format!("app-reader {until}"),
        )]
        .into(),
    );
    let status = plan_status(&p, &Ok(registration(Plan::InSync)), now());
    let revoking = crate::controller::find(&status.conditions, "Revoking").unwrap();
    assert_eq!(revoking.status, "True");
    assert_eq!(revoking.reason, "SessionsRevoked");
    assert!(
        revoking
            .message
            .contains("rolegate-revoke-ab on app-reader"),
        "{}",
        revoking.message
    );
    let later = Timestamp::from_second(until).unwrap();
    let status = plan_status(&p, &Ok(registration(Plan::InSync)), later);
    assert!(crate::controller::find(&status.conditions, "Revoking").is_none());
}
