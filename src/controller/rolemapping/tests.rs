#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::*;
use crate::crd::{DeletionPolicy, IAMProviderSpec, RoleMappingSpec, SubjectRef};

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn mapping(subjects: Vec<SubjectRef>) -> RoleMapping {
    let mut m = RoleMapping::new(
        "reader",
        RoleMappingSpec {
            provider: "acct".into(),
            role_arn: "arn:aws:iam::123456789012:role/app-reader".into(),
            subjects,
            session_duration: 3600,
            session_name: None,
            session_tags: BTreeMap::new(),
            transitive_tag_keys: vec![],
            source_identity: None,
            disable_session_tags: false,
            target_role_arn: None,
            external_id: None,
            revoke_on_delete: true,
        },
    );
    m.metadata.namespace = Some("team-a".into());
    m.metadata.generation = Some(3);
    m
}

fn provider() -> IAMProvider {
    IAMProvider::new(
        "acct",
        IAMProviderSpec {
            saml_app: "aws".into(),
            account_id: "123456789012".into(),
            provider_name: "rolegate".into(),
            credentials: None,
            endpoint_url: None,
            region: None,
            tags: BTreeMap::new(),
            deletion_policy: DeletionPolicy::Retain,
            adopt: false,
            allowed_namespaces: Some(LabelSelector {
                match_labels: Some([("team".to_owned(), "a".to_owned())].into()),
                match_expressions: None,
            }),
            allowed_roles: vec!["arn:aws:iam::123456789012:role/app-*".into()],
            allowed_session_names: None,
            session_tags: None,
        },
    )
}

fn sa(name: &str) -> SubjectRef {
    SubjectRef {
        kind: SubjectKind::ServiceAccount,
        name: name.into(),
        connection: None,
    }
}

#[test]
fn an_allowed_mapping_is_accepted_with_arn_and_trust_policy() {
    let gathered = Gathered {
        provider: Some(provider()),
        namespace_labels: [("team".to_owned(), "a".to_owned())].into(),
        app: None,
    };
    let status = plan(&mapping(vec![sa("app")]), &gathered, now());
    assert_eq!(
        status.provider_arn.as_deref(),
        Some("arn:aws:iam::123456789012:saml-provider/rolegate")
    );
    assert_eq!(status.observed_generation, Some(3));
    let accepted = &status.conditions[0];
    assert_eq!(
        (
            accepted.type_.as_str(),
            accepted.status.as_str(),
            accepted.reason.as_str()
        ),
        ("Accepted", "True", "Accepted")
    );
    let policy: serde_json::Value =
        serde_json::from_str(status.trust_policy.as_deref().unwrap()).unwrap();
    let condition = &policy["Statement"][0]["Condition"]["StringEquals"];
    assert_eq!(condition["saml:sub"][0], "system:serviceaccount:team-a:app");
    assert_eq!(condition["SAML:aud"], "https://signin.aws.amazon.com/saml");
}

#[test]
fn every_tenant_guard_rule_has_its_reason() {
    let labelled = |team: &str| [("team".to_owned(), team.to_owned())].into();
    let cases = [
        (
            Gathered {
                provider: None,
                namespace_labels: labelled("a"),
                app: None,
            },
            mapping(vec![sa("app")]),
            "ProviderNotFound",
        ),
        (
            Gathered {
                provider: Some(provider()),
                namespace_labels: labelled("b"),
                app: None,
            },
            mapping(vec![sa("app")]),
            "NamespaceNotAllowed",
        ),
        (
            Gathered {
                provider: Some(provider()),
                namespace_labels: labelled("a"),
                app: None,
            },
            {
                let mut m = mapping(vec![sa("app")]);
                m.spec.role_arn = "arn:aws:iam::123456789012:role/admin".into();
                m
            },
            "RoleNotAllowed",
        ),
        (
            Gathered {
                provider: Some(provider()),
                namespace_labels: labelled("a"),
                app: None,
            },
            {
                let mut m = mapping(vec![sa("app")]);
                m.spec.session_name = Some("{nope}".into());
                m
            },
            "InvalidSessionName",
        ),
        (
            Gathered {
                provider: Some(provider()),
                namespace_labels: labelled("a"),
                app: None,
            },
            {
                let mut m = mapping(vec![sa("app")]);
                m.spec.transitive_tag_keys = vec!["missing".into()];
                m
            },
            "InvalidTags",
        ),
    ];
    for (gathered, m, reason) in cases {
        let status = plan(&m, &gathered, now());
        let accepted = &status.conditions[0];
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", reason),
            "{}",
            accepted.message
        );
        assert!(status.provider_arn.is_none() && status.trust_policy.is_none());
    }
}

#[test]
fn the_transition_time_moves_only_when_the_status_changes() {
    let gathered = Gathered {
        provider: Some(provider()),
        namespace_labels: [("team".to_owned(), "a".to_owned())].into(),
        app: None,
    };
    let mut m = mapping(vec![sa("app")]);
    let first = plan(&m, &gathered, now());
    m.status = Some(first.clone());
    let later = now() + jiff::SignedDuration::from_secs(60);
    assert_eq!(
        plan(&m, &gathered, later),
        first,
        "an unchanged status is not rewritten"
    );
    let denied = Gathered {
        namespace_labels: BTreeMap::new(),
        ..gathered
    };
    let changed = plan(&m, &denied, later);
    assert_eq!(changed.conditions[0].last_transition_time.0, later);
}

// Security finding 2: the provider's tag bounds show in the status of a mapping that names only
// groups (no workload to render a session for), and a reserved key is refused there too.
#[test]
fn tag_bounds_and_reserved_keys_reach_the_status() {
    let group = SubjectRef {
        kind: SubjectKind::Group,
        name: "ops".into(),
        connection: Some("corp".into()),
    };
    let mut bounded = provider();
    bounded.spec.session_tags = Some(crate::crd::SessionTagBounds {
        allowed_keys: vec!["cost-*".into()],
        allow_source_identity: false,
    });
    let gathered = Gathered {
        provider: Some(bounded),
        namespace_labels: [("team".to_owned(), "a".to_owned())].into(),
        app: None,
    };
    let mut m = mapping(vec![group]);
    m.spec.session_tags = [("team".to_owned(), "b".to_owned())].into();
    let accepted = &plan(&m, &gathered, now()).conditions[0];
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("False", "InvalidTags")
    );
    assert_eq!(
        accepted.message,
        "session tag key \"team\" is not allowed by IAMProvider \"acct\" (sessionTags.allowedKeys)"
    );
    m.spec.session_tags = [("rolegate-cluster".to_owned(), "prod".to_owned())].into();
    let accepted = &plan(&m, &gathered, now()).conditions[0];
    assert_eq!(
        accepted.message,
        "session tag key \"rolegate-cluster\" is reserved: rolegate sets it itself"
    );
    m.spec.session_tags = [("cost-center".to_owned(), "42".to_owned())].into();
    assert_eq!(plan(&m, &gathered, now()).conditions[0].reason, "Accepted");
}

#[test]
fn subjects_that_leave_the_accepted_status_are_the_ones_revoked() {
    let granted = |role: &str, subjects: &[&str]| RoleMappingStatus {
        granted_role: Some(role.into()),
        granted_subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        ..RoleMappingStatus::default()
    };
    let before = granted("arn:aws:iam::1:role/a", &["sa:app", "sa:job"]);
    let (role, dropped) =
        dropped_subjects(&before, &granted("arn:aws:iam::1:role/a", &["sa:app"])).unwrap();
    assert_eq!(role, "arn:aws:iam::1:role/a");
    assert_eq!(dropped, ["sa:job".to_owned()].into());
    let (_, moved) =
        dropped_subjects(&before, &granted("arn:aws:iam::1:role/b", &["sa:app"])).unwrap();
    assert_eq!(
        moved.len(),
        2,
        "a new role revokes every session on the old one"
    );
    assert!(dropped_subjects(&before, &before).is_none());
    assert!(dropped_subjects(&RoleMappingStatus::default(), &before).is_none());
}
