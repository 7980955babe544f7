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
        });
        self
    }
    fn for_group(mut self, name: &str) -> Self {
        self.spec.subjects.push(SubjectRef {
            kind: SubjectKind::Group,
            name: name.into(),
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
            tags: BTreeMap::new(),
            deletion_policy: DeletionPolicy::Retain,
            adopt: false,
            allowed_namespaces: selector,
            allowed_roles: vec!["arn:aws:iam::123456789012:role/app-*".into()],
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
    let ctx = RequestContext { pod: Some("web-1") };
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
        user: "alice@example.com",
        groups: &groups,
    };
    let g = &decide(&alice, &RequestContext::default(), &s).grants[0];
    assert_eq!(g.session.session_name, "alice@example.com");
    let bob = Subject::Person {
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
