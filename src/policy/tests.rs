#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::*;
use crate::crd::{DeletionPolicy, IAMProviderSpec, RoleMappingSpec, SubjectRef};

/// Fixture builders, chained: `mapping("team-a", "m").for_sa("app")`.
trait MappingExt: Sized {
    fn for_sa(self, name: &str) -> Self;
    fn for_group(self, name: &str) -> Self;
    fn role(self, arn: &str) -> Self;
    fn provider(self, name: &str) -> Self;
    fn session_name(self, template: &str) -> Self;
}

fn mapping(namespace: &str, name: &str) -> RoleMapping {
    let mut m = RoleMapping::new(
        name,
        RoleMappingSpec {
            provider: "acct".into(),
            role_arn: "arn:aws:iam::123456789012:role/app-reader".into(),
            subjects: vec![],
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
    m.metadata.namespace = Some(namespace.into());
    m
}

impl MappingExt for RoleMapping {
    fn for_sa(mut self, name: &str) -> Self {
        self.spec.subjects.push(SubjectRef {
            kind: SubjectKind::ServiceAccount,
            name: name.into(),
            connection: None,
        });
        self
    }
    fn for_group(mut self, name: &str) -> Self {
        self.spec.subjects.push(SubjectRef {
            kind: SubjectKind::Group,
            name: name.into(),
            connection: None,
        });
        self
    }
    fn role(mut self, arn: &str) -> Self {
        self.spec.role_arn = arn.into();
        self
    }
    fn provider(mut self, name: &str) -> Self {
        self.spec.provider = name.into();
        self
    }
    fn session_name(mut self, template: &str) -> Self {
        self.spec.session_name = Some(template.into());
        self
    }
}

fn provider(selector: Option<LabelSelector>) -> IAMProvider {
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
            allowed_namespaces: selector,
            allowed_roles: vec!["arn:aws:iam::123456789012:role/app-*".into()],
            allowed_session_names: None,
            session_tags: None,
        },
    )
}

fn team(label: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some([("team".to_owned(), label.to_owned())].into()),
        match_expressions: None,
    }
}

fn snapshot(provider: IAMProvider, mappings: Vec<RoleMapping>) -> Snapshot {
    let mut s = Snapshot::default();
    s.providers.insert("acct".into(), provider);
    s.mappings = mappings;
    s.namespaces.insert(
        "team-a".into(),
        [("team".to_owned(), "a".to_owned())].into(),
    );
    s.namespaces.insert(
        "team-b".into(),
        [("team".to_owned(), "b".to_owned())].into(),
    );
    s
}

const APP: Subject<'static> = Subject::ServiceAccount {
    namespace: "team-a",
    name: "app",
};

#[test]
fn an_allowed_mapping_grants_its_role_through_its_provider() {
    let s = snapshot(
        provider(Some(team("a"))),
        vec![mapping("team-a", "m").for_sa("app")],
    );
    let d = decide(&APP, &RequestContext::default(), &s);
    assert!(d.denials.is_empty(), "{:?}", d.denials);
    let g = &d.grants[0];
    assert_eq!(g.mapping, "team-a/m");
    assert_eq!(g.app, "aws");
    assert_eq!(
        g.session.role_arn,
        "arn:aws:iam::123456789012:role/app-reader"
    );
    assert_eq!(
        g.session.provider_arn,
        "arn:aws:iam::123456789012:saml-provider/rolegate"
    );
    assert_eq!(g.session.session_name, "team-a.app");
    assert_eq!(APP.name_id(), "system:serviceaccount:team-a:app");
}

#[test]
fn an_absent_selector_allows_no_namespace() {
    let s = snapshot(provider(None), vec![mapping("team-a", "m").for_sa("app")]);
    let d = decide(&APP, &RequestContext::default(), &s);
    assert!(d.grants.is_empty());
    assert_eq!(d.denials[0].1.reason(), "NamespaceNotAllowed");
}

#[test]
fn an_empty_selector_allows_every_namespace() {
    let s = snapshot(
        provider(Some(LabelSelector::default())),
        vec![mapping("team-b", "m").for_sa("app")],
    );
    let sub = Subject::ServiceAccount {
        namespace: "team-b",
        name: "app",
    };
    assert_eq!(decide(&sub, &RequestContext::default(), &s).grants.len(), 1);
}

#[test]
fn match_expressions_select_namespaces() {
    let selector = LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "team".into(),
            operator: "In".into(),
            values: Some(vec!["b".into()]),
        }]),
    };
    let s = snapshot(
        provider(Some(selector)),
        vec![mapping("team-a", "m").for_sa("app")],
    );
    let denial = &decide(&APP, &RequestContext::default(), &s).denials[0].1;
    assert_eq!(
        denial,
        &Denial::NamespaceNotAllowed {
            namespace: "team-a".into(),
            provider: "acct".into()
        }
    );
}

#[test]
fn the_metadata_name_label_is_always_present() {
    let selector = LabelSelector {
        match_labels: Some(
            [(
                "kubernetes.io/metadata.name".to_owned(),
                "team-a".to_owned(),
            )]
            .into(),
        ),
        match_expressions: None,
    };
    let s = snapshot(
        provider(Some(selector)),
        vec![mapping("team-a", "m").for_sa("app")],
    );
    assert_eq!(decide(&APP, &RequestContext::default(), &s).grants.len(), 1);
}

#[test]
fn roles_outside_the_allowed_globs_are_refused() {
    let s = snapshot(
        provider(Some(team("a"))),
        vec![
            mapping("team-a", "m")
                .for_sa("app")
                .role("arn:aws:iam::123456789012:role/admin"),
        ],
    );
    let denial = &decide(&APP, &RequestContext::default(), &s).denials[0].1;
    assert_eq!(denial.reason(), "RoleNotAllowed");
    assert_eq!(
        denial.to_string(),
        "IAMProvider \"acct\" does not allow role \"arn:aws:iam::123456789012:role/admin\""
    );
}

#[test]
fn an_unknown_provider_is_named() {
    let s = snapshot(
        provider(Some(team("a"))),
        vec![mapping("team-a", "m").for_sa("app").provider("nope")],
    );
    let denial = &decide(&APP, &RequestContext::default(), &s).denials[0].1;
    assert_eq!(
        denial,
        &Denial::ProviderNotFound {
            provider: "nope".into()
        }
    );
}

#[test]
fn session_name_templates_are_rendered_sanitised_and_checked() {
    let ctx = RequestContext {
        pod: Some("web-1"),
        ..RequestContext::default()
    };
    let s = snapshot(
        provider(Some(team("a"))),
        vec![
            mapping("team-a", "m")
                .for_sa("app")
                .session_name("{serviceAccount}@{pod}/{namespace}"),
        ],
    );
    assert_eq!(
        decide(&APP, &ctx, &s).grants[0].session.session_name,
        "app@web-1-team-a"
    );
    let s = snapshot(
        provider(Some(team("a"))),
        vec![mapping("team-a", "m").for_sa("app").session_name("{pod}")],
    );
    let denial = &decide(&APP, &RequestContext::default(), &s).denials[0].1;
    assert_eq!(
        denial.reason(),
        "InvalidSessionName",
        "an empty pod renders too short a name"
    );
    let s = snapshot(
        provider(Some(team("a"))),
        vec![
            mapping("team-a", "m")
                .for_sa("app")
                .session_name("{cluster}"),
        ],
    );
    let denial = &decide(&APP, &RequestContext::default(), &s).denials[0].1;
    assert!(
        denial.to_string().contains("unknown placeholder {cluster}"),
        "{denial}"
    );
}

#[test]
fn invalid_tags_are_refused() {
    let mut m = mapping("team-a", "m").for_sa("app");
    m.spec.transitive_tag_keys = vec!["team".into()];
    let s = snapshot(provider(Some(team("a"))), vec![m]);
    assert_eq!(
        decide(&APP, &RequestContext::default(), &s).denials[0]
            .1
            .reason(),
        "InvalidTags"
    );
}

#[test]
fn a_service_account_of_another_namespace_is_never_named() {
    let s = snapshot(
        provider(Some(team("a"))),
        vec![mapping("team-a", "m").for_sa("app")],
    );
    let other = Subject::ServiceAccount {
        namespace: "team-b",
        name: "app",
    };
    let d = decide(&other, &RequestContext::default(), &s);
    assert!(d.grants.is_empty() && d.denials.is_empty());
}

#[test]
fn people_are_named_by_group_and_user() {
    let s = snapshot(
        provider(Some(team("a"))),
        vec![mapping("team-a", "m").for_group("ops")],
    );
    let groups = vec!["dev".to_owned(), "ops".to_owned()];
    let alice = Subject::Person {
        connection: "corp",
        user: "alice@example.com",
        groups: &groups,
    };
    let g = &decide(&alice, &RequestContext::default(), &s).grants[0];
    assert_eq!(g.session.session_name, "alice@example.com");
    let bob = Subject::Person {
        connection: "corp",
        user: "bob",
        groups: &[],
    };
    assert!(
        decide(&bob, &RequestContext::default(), &s)
            .grants
            .is_empty()
    );
}

#[test]
fn trust_policy_pins_audience_and_subject() {
    let policy: serde_json::Value = serde_json::from_str(&trust_policy(
        "arn:aws:iam::123456789012:saml-provider/rolegate",
        "https://signin.aws.amazon.com/saml",
        &["system:serviceaccount:team-a:app".into()],
    ))
    .unwrap();
    let statement = &policy["Statement"][0];
    assert_eq!(
        statement["Principal"]["Federated"],
        "arn:aws:iam::123456789012:saml-provider/rolegate"
    );
    assert_eq!(
        statement["Condition"]["StringEquals"]["SAML:aud"],
        "https://signin.aws.amazon.com/saml"
    );
    assert_eq!(
        statement["Condition"]["StringEquals"]["saml:sub"][0],
        "system:serviceaccount:team-a:app"
    );
}

fn for_user(mut m: RoleMapping, name: &str, connection: Option<&str>) -> RoleMapping {
    m.spec.subjects.push(SubjectRef {
        kind: SubjectKind::User,
        name: name.into(),
        connection: connection.map(str::to_owned),
    });
    m
}

fn person<'a>(connection: &'a str, user: &'a str) -> Subject<'a> {
    Subject::Person {
        connection,
        user,
        groups: &[],
    }
}

fn app_allowing(connections: &[&str]) -> crate::crd::SAMLApp {
    let mut app: crate::crd::SAMLApp = serde_json::from_value(serde_json::json!({
        "apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp",
        "metadata": {"name": "aws"}, "spec": {}
    }))
    .unwrap();
    app.spec.connections = connections.iter().map(|c| (*c).to_owned()).collect();
    app
}

// Finding 1: a `User` subject pinned to a Connection matches only people of that Connection.
#[test]
fn a_user_pinned_to_a_connection_is_not_matched_from_another() {
    let s = snapshot(
        provider(Some(team("a"))),
        vec![for_user(mapping("team-a", "m"), "alice", Some("corp"))],
    );
    let ctx = RequestContext::default();
    assert_eq!(decide(&person("corp", "alice"), &ctx, &s).grants.len(), 1);
    let d = decide(&person("partner", "alice"), &ctx, &s);
    assert!(d.grants.is_empty() && d.denials.is_empty(), "{d:?}");
    let mut groups_mapping = mapping("team-a", "g").for_group("ops");
    groups_mapping.spec.subjects[0].connection = Some("corp".into());
    let s = snapshot(provider(Some(team("a"))), vec![groups_mapping]);
    let ops = vec!["ops".to_owned()];
    let from = |connection| Subject::Person {
        connection,
        user: "xavier",
        groups: &ops,
    };
    assert_eq!(decide(&from("corp"), &ctx, &s).grants.len(), 1);
    assert!(decide(&from("partner"), &ctx, &s).grants.is_empty());
}

// Finding 1: the SAMLApp's `connections` rule is part of the decision, before any cache.
#[test]
fn a_person_from_a_connection_the_app_does_not_allow_is_denied() {
    let mut s = snapshot(
        provider(Some(team("a"))),
        vec![for_user(mapping("team-a", "m"), "alice", None)],
    );
    s.apps.insert("aws".into(), app_allowing(&["corp"]));
    let ctx = RequestContext::default();
    assert_eq!(decide(&person("corp", "alice"), &ctx, &s).grants.len(), 1);
    let d = decide(&person("partner", "alice"), &ctx, &s);
    assert!(d.grants.is_empty());
    assert_eq!(
        d.denials[0].1,
        Denial::ConnectionNotAllowed {
            app: "aws".into(),
            connection: "partner".into()
        }
    );
    assert_eq!(d.denials[0].1.reason(), "ConnectionNotAllowed");
}

// Finding 1: a person whose subject looks like a service account is still a person.
#[test]
fn a_person_named_like_a_service_account_is_not_that_service_account() {
    let s = snapshot(
        provider(Some(team("a"))),
        vec![mapping("team-a", "m").for_sa("app")],
    );
    let d = decide(
        &person("corp", "system:serviceaccount:team-a:app"),
        &RequestContext::default(),
        &s,
    );
    assert!(d.grants.is_empty() && d.denials.is_empty());
    assert_ne!(APP.kind(), person("corp", "x").kind());
}

// Finding 6: `*` never crosses `/`, and a role ARN with `,` is refused outright.
#[test]
fn role_globs_do_not_cross_slash_or_comma() {
    let deny = |role: &str| {
        let s = snapshot(
            provider(Some(team("a"))),
            vec![mapping("team-a", "m").for_sa("app").role(role)],
        );
        decide(&APP, &RequestContext::default(), &s)
            .denials
            .first()
            .map(|(_, d)| (d.reason(), d.to_string()))
    };
    let (reason, message) = deny("arn:aws:iam::123456789012:role/app-x/Admin").unwrap();
    assert_eq!(reason, "RoleNotAllowed");
    assert_eq!(
        message,
        "IAMProvider \"acct\" does not allow role \"arn:aws:iam::123456789012:role/app-x/Admin\""
    );
    let (reason, message) = deny("arn:aws:iam::123456789012:role/app-x,foo").unwrap();
    assert_eq!(reason, "RoleNotAllowed");
    assert_eq!(
        message,
        "role ARN \"arn:aws:iam::123456789012:role/app-x,foo\" contains ',', which separates role and provider in AWS's Role attribute"
    );
    assert_eq!(deny("arn:aws:iam::123456789012:role/app-x"), None);
    // `**` is how a provider opts into role paths.
    let mut p = provider(Some(team("a")));
    p.spec.allowed_roles = vec!["arn:aws:iam::123456789012:role/app-*/**".into()];
    let s = snapshot(
        p,
        vec![
            mapping("team-a", "m")
                .for_sa("app")
                .role("arn:aws:iam::123456789012:role/app-x/Admin"),
        ],
    );
    assert_eq!(decide(&APP, &RequestContext::default(), &s).grants.len(), 1);
}

fn bounded(keys: &[&str], source_identity: bool) -> IAMProvider {
    let mut p = provider(Some(team("a")));
    p.spec.session_tags = Some(crate::crd::SessionTagBounds {
        allowed_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        allow_source_identity: source_identity,
    });
    p
}

fn first_denial(s: &Snapshot) -> (String, String) {
    let d = decide(&APP, &RequestContext::default(), s);
    assert!(d.grants.is_empty(), "{:?}", d.grants);
    let (_, denial) = &d.denials[0];
    (denial.reason().to_owned(), denial.to_string())
}

// Finding 2: the provider bounds tag keys, transitive keys and source identity.
#[test]
fn the_provider_bounds_session_tags_and_source_identity() {
    let mut m = mapping("team-a", "m").for_sa("app");
    m.spec.session_tags = [("team".to_owned(), "payments".to_owned())].into();
    let s = snapshot(bounded(&["cost-*"], false), vec![m.clone()]);
    assert_eq!(
        first_denial(&s),
        (
            "InvalidTags".into(),
            "session tag key \"team\" is not allowed by IAMProvider \"acct\" (sessionTags.allowedKeys)".into()
        )
    );
    let s = snapshot(bounded(&["Team"], false), vec![m.clone()]);
    assert_eq!(
        decide(&APP, &RequestContext::default(), &s).grants.len(),
        1,
        "keys match case-insensitively"
    );
    m.spec.source_identity = Some("admin@corp".into());
    let s = snapshot(bounded(&["team"], false), vec![m.clone()]);
    assert_eq!(
        first_denial(&s),
        (
            "InvalidTags".into(),
            "IAMProvider \"acct\" does not let mappings set sourceIdentity (sessionTags.allowSourceIdentity)".into()
        )
    );
    let s = snapshot(bounded(&["team"], true), vec![m]);
    let g = &decide(&APP, &RequestContext::default(), &s).grants[0];
    assert_eq!(g.session.source_identity.as_deref(), Some("admin@corp"));
}

// Finding 2: the reserved keys are rolegate's, set on every workload session and transitive.
#[test]
fn reserved_tags_are_set_by_rolegate_and_refused_from_mappings() {
    let mut m = mapping("team-a", "m").for_sa("app");
    m.spec.session_tags = [("Kubernetes-Namespace".to_owned(), "team-b".to_owned())].into();
    let s = snapshot(provider(Some(team("a"))), vec![m]);
    assert_eq!(
        first_denial(&s),
        (
            "InvalidTags".into(),
            "session tag key \"Kubernetes-Namespace\" is reserved: rolegate sets it itself".into()
        )
    );
    let s = snapshot(
        provider(Some(team("a"))),
        vec![mapping("team-a", "m").for_sa("app")],
    );
    let ctx = RequestContext {
        pod: Some("web-1"),
        pod_uid: Some("0b9c-uid"),
        cluster: Some("prod-eu"),
    };
    let session = &decide(&APP, &ctx, &s).grants[0].session;
    let expected: BTreeMap<String, String> = [
        ("kubernetes-namespace", "team-a"),
        ("kubernetes-service-account", "app"),
        ("kubernetes-pod-name", "web-1"),
        ("kubernetes-pod-uid", "0b9c-uid"),
        ("rolegate-cluster", "prod-eu"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(session.tags, expected);
    let mut transitive = session.transitive_tag_keys.clone();
    transitive.sort();
    assert_eq!(transitive, expected.keys().cloned().collect::<Vec<_>>());
    let mut off = mapping("team-a", "m").for_sa("app");
    off.spec.disable_session_tags = true;
    let s = snapshot(provider(Some(team("a"))), vec![off]);
    assert!(decide(&APP, &ctx, &s).grants[0].session.tags.is_empty());
}

// Finding 2: the provider may bound the rendered session name.
#[test]
fn the_provider_bounds_session_names() {
    let mut p = provider(Some(team("a")));
    p.spec.allowed_session_names = Some(vec!["team-a.*".into()]);
    let s = snapshot(
        p.clone(),
        vec![
            mapping("team-a", "m")
                .for_sa("app")
                .session_name("alice@corp"),
        ],
    );
    assert_eq!(
        first_denial(&s),
        (
            "InvalidSessionName".into(),
            "session name \"alice@corp\" matches none of IAMProvider \"acct\"'s allowedSessionNames".into()
        )
    );
    let s = snapshot(p, vec![mapping("team-a", "m").for_sa("app")]);
    assert_eq!(decide(&APP, &RequestContext::default(), &s).grants.len(), 1);
}

#[test]
fn a_chain_target_must_match_allowed_roles_and_lasts_at_most_an_hour() {
    let mut p = provider(Some(team("a")));
    p.spec
        .allowed_roles
        .push("arn:aws:iam::210987654321:role/app-*".into());
    let mut chained = mapping("team-a", "m").for_sa("app");
    chained.spec.target_role_arn = Some("arn:aws:iam::210987654321:role/app-target".into());
    chained.spec.external_id = Some("ext-1".into());
    chained.spec.session_duration = 7200;
    let mut escape = mapping("team-a", "e").for_sa("app");
    escape.spec.target_role_arn = Some("arn:aws:iam::210987654321:role/admin".into());
    let s = snapshot(p, vec![chained, escape]);
    let d = decide(&APP, &RequestContext::default(), &s);
    let chain = d.grants[0].chain.as_ref().expect("the grant chains");
    assert_eq!(chain.role_arn, "arn:aws:iam::210987654321:role/app-target");
    assert_eq!(chain.external_id.as_deref(), Some("ext-1"));
    assert_eq!(chain.duration_seconds, 3600, "AWS caps chained sessions");
    assert_eq!(d.grants[0].session.duration_seconds, 7200);
    assert_eq!(d.grants.len(), 1);
    let (mapping, denial) = &d.denials[0];
    assert_eq!(mapping, "team-a/e");
    assert_eq!(denial.reason(), "RoleNotAllowed");
    assert!(denial.to_string().contains("role/admin"), "{denial}");
}

#[test]
fn tags_that_could_overflow_the_packed_budget_are_refused_ahead_naming_the_budget() {
    let mut fits = mapping("team-a", "m").for_sa("app");
    fits.spec
        .session_tags
        .insert("team".into(), "{namespace}".into());
    let reserved_only = worst_case_tag_chars(&mapping("team-a", "r"));
    assert!(reserved_only < PACKED_TAG_BUDGET, "{reserved_only}");
    let mut big = mapping("team-a", "big").for_sa("app");
    for i in 0..6 {
        big.spec
            .session_tags
            .insert(format!("owner-{i}"), "{serviceAccount}".into());
    }
    // Short names render short: the check is on the worst case, not this request.
    let worst = worst_case_tag_chars(&big);
    assert!(worst > PACKED_TAG_BUDGET, "{worst}");
    let s = snapshot(provider(Some(team("a"))), vec![fits, big.clone()]);
    let d = decide(&APP, &RequestContext::default(), &s);
    assert_eq!(d.grants.len(), 1);
    let (name, denial) = &d.denials[0];
    assert_eq!(name, "team-a/big");
    assert_eq!(denial.reason(), "InvalidTags");
    assert!(
        denial.to_string().contains("2048-character budget"),
        "{denial}"
    );
    assert!(
        denial.to_string().contains("PackedPolicyTooLarge"),
        "{denial}"
    );
    // Without the reserved tags the same mapping fits.
    big.spec.disable_session_tags = true;
    assert!(worst_case_tag_chars(&big) <= PACKED_TAG_BUDGET);
}

#[test]
fn a_mapping_being_deleted_grants_nothing_while_its_finalizer_revokes() {
    let mut deleting = mapping("team-a", "m").for_sa("app");
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
    );
    let s = snapshot(provider(Some(team("a"))), vec![deleting]);
    let d = decide(&APP, &RequestContext::default(), &s);
    assert!(d.grants.is_empty() && d.denials.is_empty(), "{d:?}");
}

/// A world with every kind of subject entry: service accounts in two namespaces (one the
/// provider refuses), users with and without a Connection, groups with and without one, a
/// mapping naming the same subject twice, a mapping being deleted, and mappings in an order
/// that interleaves them.
fn indexed_world() -> Snapshot {
    let user = |m: RoleMapping, name: &str, connection: Option<&str>| {
        let mut m = m;
        m.spec.subjects.push(SubjectRef {
            kind: SubjectKind::User,
            name: name.into(),
            connection: connection.map(Into::into),
        });
        m
    };
    let group_via = |m: RoleMapping, name: &str, connection: &str| {
        let mut m = m;
        m.spec.subjects.push(SubjectRef {
            kind: SubjectKind::Group,
            name: name.into(),
            connection: Some(connection.into()),
        });
        m
    };
    let mut deleting = mapping("team-a", "deleting").for_sa("app").for_group("ops");
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
    );
    let mappings = vec![
        mapping("team-a", "a1").for_sa("app").for_sa("other"),
        mapping("team-b", "b1")
            .for_sa("app")
            .role("arn:aws:iam::123456789012:role/app-b"),
        user(mapping("team-a", "u1"), "alice", None).for_group("devs"),
        group_via(mapping("team-a", "g1"), "ops", "corp")
            .role("arn:aws:iam::123456789012:role/app-ops"),
        mapping("team-a", "twice")
            .for_sa("app")
            .for_sa("app")
            .role("arn:aws:iam::123456789012:role/app-twice"),
        deleting,
        user(mapping("team-a", "u2"), "alice", Some("corp"))
            .for_group("ops")
            .role("arn:aws:iam::123456789012:role/app-corp"),
        mapping("team-a", "denied")
            .for_sa("app")
            .role("arn:aws:iam::999999999999:role/elsewhere"),
        mapping("team-a", "gone").for_sa("app").provider("missing"),
    ];
    snapshot(provider(Some(team("a"))), mappings)
}

fn assert_same(a: &Decision, b: &Decision, what: &str) {
    assert_eq!(a.grants, b.grants, "grants for {what}");
    assert_eq!(a.denials, b.denials, "denials for {what}");
}

#[test]
fn the_subject_index_decides_exactly_as_a_scan_of_every_mapping() {
    let s = indexed_world();
    let ctx = RequestContext::default();
    let none: Vec<String> = vec![];
    let devs = vec!["devs".to_owned()];
    let ops = vec!["ops".to_owned()];
    let both = vec!["ops".to_owned(), "devs".to_owned(), "ops".to_owned()];
    let mut subjects = vec![];
    for (namespace, name) in [
        ("team-a", "app"),
        ("team-a", "other"),
        ("team-b", "app"),
        ("team-b", "other"),
        ("team-c", "app"),
        ("team-a", "nobody"),
    ] {
        subjects.push(Subject::ServiceAccount { namespace, name });
    }
    for connection in ["corp", "github"] {
        for user in ["alice", "bob"] {
            for groups in [&none, &devs, &ops, &both] {
                subjects.push(Subject::Person {
                    connection,
                    user,
                    groups,
                });
            }
        }
    }
    let mut granted = 0;
    let mut denied = 0;
    for subject in &subjects {
        let indexed = decide(subject, &ctx, &s);
        let scanned = decide_unindexed(subject, &ctx, &s);
        assert_same(&indexed, &scanned, &format!("{subject:?}"));
        granted += indexed.grants.len();
        denied += indexed.denials.len();
    }
    // The world exercises both outcomes, so the comparison is not between two empty answers.
    assert!(
        granted >= 10 && denied >= 3,
        "{granted} granted, {denied} denied"
    );
    // The index was built once and is the one decide used.
    assert_eq!(s.subject_index.get(), Some(&SubjectIndex::new(&s.mappings)));

    // team-a/app: a1, twice (once), denied and gone as denials; b1 is another namespace's.
    let d = decide(&APP, &ctx, &s);
    let granted: Vec<&str> = d.grants.iter().map(|g| g.mapping.as_str()).collect();
    assert_eq!(granted, ["team-a/a1", "team-a/twice"]);
    let denials: Vec<&str> = d.denials.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(denials, ["team-a/denied", "team-a/gone"]);
    // alice of corp in ops: u1 by user, g1 by group, u2 by both, once each and in order.
    let alice = Subject::Person {
        connection: "corp",
        user: "alice",
        groups: &both,
    };
    let d = decide(&alice, &ctx, &s);
    let granted: Vec<&str> = d.grants.iter().map(|g| g.mapping.as_str()).collect();
    assert_eq!(granted, ["team-a/u1", "team-a/g1", "team-a/u2"]);
}

#[test]
fn a_snapshot_changed_after_indexing_is_decided_by_a_scan_and_a_clone_reindexes() {
    let mut s = indexed_world();
    let ctx = RequestContext::default();
    let newcomer = Subject::ServiceAccount {
        namespace: "team-a",
        name: "newcomer",
    };
    assert!(decide(&newcomer, &ctx, &s).grants.is_empty());
    s.mappings
        .push(mapping("team-a", "late").for_sa("newcomer"));
    assert_eq!(decide(&newcomer, &ctx, &s).grants.len(), 1);
    // A clone starts without the index and builds its own.
    let mut copy = s.clone();
    assert!(copy.subject_index.get().is_none());
    copy.mappings.pop();
    copy.mappings
        .push(mapping("team-a", "late").for_sa("someone-else"));
    assert!(decide(&newcomer, &ctx, &copy).grants.is_empty());
    assert_same(
        &decide(&newcomer, &ctx, &copy),
        &decide_unindexed(&newcomer, &ctx, &copy),
        "newcomer in the clone",
    );
}
