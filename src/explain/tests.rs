#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use super::*;

const RESOURCES: &str = r#"
apiVersion: rolegate.dev/v1alpha1
kind: SAMLApp
metadata: {name: aws}
spec: {}
---
apiVersion: rolegate.dev/v1alpha1
kind: IAMProvider
metadata: {name: acct}
spec:
  samlApp: aws
  accountId: "123456789012"
  providerName: rolegate
  allowedNamespaces:
    matchLabels: {team: a}
    matchExpressions: [{key: tier, operator: NotIn, values: [prod, staging]}, {key: audited, operator: Exists}]
  allowedRoles: ["arn:aws:iam::123456789012:role/app-*"]
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {team: a, audited: "yes"}}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
  namespace: team-a
  annotations: {rolegate.dev/role: "arn:aws:iam::123456789012:role/app-writer"}
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {name: reader, namespace: team-a}
spec:
  provider: acct
  roleArn: arn:aws:iam::123456789012:role/app-reader
  subjects: [{kind: ServiceAccount, name: app}]
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {name: admin, namespace: team-a}
spec:
  provider: acct
  roleArn: arn:aws:iam::123456789012:role/admin
  subjects: [{kind: ServiceAccount, name: app}]
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {name: lost, namespace: team-a}
spec:
  provider: nowhere
  roleArn: arn:aws:iam::123456789012:role/app-reader
  subjects: [{kind: ServiceAccount, name: app}]
"#;

fn snapshot() -> Snapshot {
    let mut snapshot = Snapshot::default();
    crate::store::files::load_text(&mut snapshot, Path::new("resources.yaml"), RESOURCES).unwrap();
    snapshot
}

const APP: Subject<'static> = Subject::ServiceAccount {
    namespace: "team-a",
    name: "app",
};

fn query(role: Option<&str>) -> Query<'_> {
    Query {
        subject: APP,
        role,
        ctx: RequestContext::default(),
    }
}

#[test]
fn each_verdict_is_the_policys_decision() {
    let snapshot = snapshot();
    let explanation = explain(
        &snapshot,
        &query(Some("arn:aws:iam::123456789012:role/app-reader")),
    );
    let decision = policy::decide(&APP, &RequestContext::default(), &snapshot);
    assert_eq!(explanation.mappings.len(), 3);
    for m in &explanation.mappings {
        match &m.verdict {
            Verdict::Granted { session, .. } => {
                let grant = decision
                    .grants
                    .iter()
                    .find(|g| g.mapping == m.mapping)
                    .unwrap();
                assert_eq!(session.session_name, grant.session.session_name);
                assert_eq!(session.tags, grant.session.tags);
            }
            Verdict::Denied { reason, message } => {
                let (_, denial) = decision
                    .denials
                    .iter()
                    .find(|(k, _)| *k == m.mapping)
                    .unwrap();
                assert_eq!(reason, denial.reason());
                assert_eq!(message, &denial.to_string());
            }
        }
    }
    let reasons: Vec<_> = explanation
        .mappings
        .iter()
        .map(|m| match &m.verdict {
            Verdict::Granted { .. } => "Granted".to_owned(),
            Verdict::Denied { reason, .. } => reason.clone(),
        })
        .collect();
    assert_eq!(reasons, ["Granted", "RoleNotAllowed", "ProviderNotFound"]);
    assert!(explanation.granted);
    assert!(explanation.mappings[2].guard.is_none());
}

#[test]
fn the_guard_shows_the_namespace_selector() {
    let explanation = explain(&snapshot(), &query(None));
    let guard = explanation.mappings[0].guard.as_ref().unwrap();
    assert_eq!(
        guard.allowed_namespaces.as_deref(),
        Some("team=a, tier notin (prod,staging), audited")
    );
}

#[test]
fn the_annotation_asks_unless_a_role_is_given() {
    let snapshot = snapshot();
    let annotated = explain(&snapshot, &query(None));
    assert_eq!(
        annotated.role.as_deref(),
        Some("arn:aws:iam::123456789012:role/app-writer")
    );
    assert!(!annotated.granted, "{annotated}");
    assert!(
        annotated.outcome.starts_with("denied: role "),
        "{annotated}"
    );

    let asked = explain(
        &snapshot,
        &query(Some("arn:aws:iam::123456789012:role/app-reader")),
    );
    assert_eq!(asked.role_source.as_deref(), Some("--role"));
    assert!(asked.granted, "{asked}");
}

#[test]
fn the_default_connection_is_the_only_one_for_people() {
    let mut snapshot = snapshot();
    assert!(default_connection(&snapshot).is_err());
    let connections = r"
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {name: k8s}
spec: {kubernetes: {audiences: [rolegate]}}
---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {name: corp}
spec: {oidc: {issuer: 'https://corp.example', clientId: web}}
";
    crate::store::files::load_text(&mut snapshot, Path::new("c.yaml"), connections).unwrap();
    assert_eq!(default_connection(&snapshot).unwrap(), "corp");
    let partner = r"
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {name: partner}
spec: {oidc: {issuer: 'https://partner.example', clientId: web}}
";
    crate::store::files::load_text(&mut snapshot, Path::new("p.yaml"), partner).unwrap();
    let err = default_connection(&snapshot).unwrap_err();
    assert!(err.contains("(corp, partner)"), "{err}");
}
