//! `rolegate explain --config DIR`, the binary itself: every verdict of the policy core (each
//! `Denial` variant, no mapping, the asked role not granted) through the command's output, a
//! grant with its session and trust policy, and the exit statuses 0, 1 and 2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{ACCOUNT, ROLE, resources, write};

/// People, tag bounds and one mapping per way a mapping can grant nothing, beside the shared
/// fixture (`acct` allows namespaces labelled `team: a` and roles `app-*`).
fn extra() -> String {
    let long = "x".repeat(300);
    format!(
        r#"
apiVersion: rolegate.dev/v1alpha1
kind: SAMLApp
metadata: {{name: people-app}}
spec:
  connections: [corp]
---
apiVersion: rolegate.dev/v1alpha1
kind: IAMProvider
metadata: {{name: people}}
spec:
  samlApp: people-app
  accountId: "{ACCOUNT}"
  providerName: people
  allowedNamespaces: {{matchLabels: {{team: a}}}}
  allowedRoles: ["arn:aws:iam::{ACCOUNT}:role/people-*"]
  allowedSessionNames: ["*@corp.example"]
  sessionTags: {{allowedKeys: [team, "cost-*"], allowSourceIdentity: false}}
---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: corp}}
spec:
  oidc: {{issuer: "https://corp.example", clientId: web}}
---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: partner}}
spec:
  oidc: {{issuer: "https://partner.example", clientId: web}}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
  namespace: team-a
  annotations: {{rolegate.dev/role: "arn:aws:iam::{ACCOUNT}:role/app-writer"}}
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: people, namespace: team-a}}
spec:
  provider: people
  roleArn: arn:aws:iam::{ACCOUNT}:role/people-reader
  subjects: [{{kind: User, name: alice@corp.example}}, {{kind: Group, name: devs}}]
  sessionTags: {{team: "{{namespace}}"}}
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: tagged, namespace: team-a}}
spec:
  provider: acct
  roleArn: arn:aws:iam::{ACCOUNT}:role/app-tagged
  subjects: [{{kind: ServiceAccount, name: tagged}}]
  sessionName: "{{namespace}}-{{serviceAccount}}-{{pod}}"
  sessionDuration: 7200
  sessionTags: {{team: "{{namespace}}"}}
  transitiveTagKeys: [team]
  sourceIdentity: "{{serviceAccount}}-id"
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: comma, namespace: team-a}}
spec:
  provider: acct
  roleArn: "arn:aws:iam::{ACCOUNT}:role/app-x,arn:aws:iam::{ACCOUNT}:saml-provider/evil"
  subjects: [{{kind: ServiceAccount, name: comma}}]
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: badname, namespace: team-a}}
spec:
  provider: acct
  roleArn: arn:aws:iam::{ACCOUNT}:role/app-badname
  subjects: [{{kind: ServiceAccount, name: badname}}]
  sessionName: "{{pod"
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: outsider, namespace: team-a}}
spec:
  provider: people
  roleArn: arn:aws:iam::{ACCOUNT}:role/people-outsider
  subjects: [{{kind: User, name: bob@else.example}}]
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: reserved, namespace: team-a}}
spec:
  provider: acct
  roleArn: arn:aws:iam::{ACCOUNT}:role/app-reserved
  subjects: [{{kind: ServiceAccount, name: reserved}}]
  sessionTags: {{kubernetes-namespace: other}}
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: unbounded, namespace: team-a}}
spec:
  provider: people
  roleArn: arn:aws:iam::{ACCOUNT}:role/people-unbounded
  subjects: [{{kind: User, name: carol@corp.example}}]
  sessionTags: {{secret-level: high}}
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: source, namespace: team-a}}
spec:
  provider: people
  roleArn: arn:aws:iam::{ACCOUNT}:role/people-source
  subjects: [{{kind: User, name: dave@corp.example}}]
  sourceIdentity: "{{user}}"
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: longtag, namespace: team-a}}
spec:
  provider: acct
  roleArn: arn:aws:iam::{ACCOUNT}:role/app-longtag
  subjects: [{{kind: ServiceAccount, name: longtag}}]
  sessionTags: {{team: "{long}"}}
"#
    )
}

struct Config(tempfile::TempDir);

fn config() -> Config {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "resources.yaml", &resources("rolegate", true));
    write(dir.path(), "extra.yaml", &extra());
    Config(dir)
}

/// Runs `rolegate explain --config DIR ARGS`: (exit status, stdout, stderr).
fn explain(config: &Config, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .arg("explain")
        .arg("--config")
        .arg(config.0.path())
        .args(args)
        .env_remove("ROLEGATE_CLUSTER_NAME")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sa(config: &Config, namespace: &str, name: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["--namespace", namespace, "--service-account", name];
    args.extend_from_slice(extra);
    let (code, out, err) = explain(config, &args);
    assert!(err.is_empty(), "{err}");
    (code, out)
}

fn user(config: &Config, name: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["--user", name];
    args.extend_from_slice(extra);
    let (code, out, err) = explain(config, &args);
    assert!(err.is_empty(), "{err}");
    (code, out)
}

/// Asserts a single denied mapping with `reason` and a message containing `message`, exit 1.
fn assert_denied(code: i32, out: &str, mapping: &str, reason: &str, message: &str) {
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("RoleMapping {mapping}\n")), "{out}");
    let verdict = format!("  verdict: denied ({reason}): ");
    let line = out
        .lines()
        .find(|l| l.starts_with(&verdict))
        .unwrap_or_else(|| panic!("no {verdict:?} in\n{out}"));
    assert!(line.contains(message), "{line:?} lacks {message:?}");
    assert!(!out.contains("verdict: granted"), "{out}");
    assert!(
        out.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with(&format!("denied: RoleMapping {mapping} names ")),
        "{out}"
    );
}

#[test]
fn a_granted_workload_shows_its_session_tags_source_identity_and_trust_policy() {
    let config = config();
    let (code, out) = sa(
        &config,
        "team-a",
        "tagged",
        &["--pod", "web-1", "--cluster-name", "prod"],
    );
    assert_eq!(code, 0, "{out}");
    for expected in [
        "subject: service account team-a/tagged (saml:sub system:serviceaccount:team-a:tagged)\n",
        "RoleMapping team-a/tagged\n",
        "  guard (IAMProvider acct):\n    allowedNamespaces: team=a\n",
        &format!("    allowedRoles: arn:aws:iam::{ACCOUNT}:role/app-*\n"),
        "  verdict: granted\n",
        &format!("    roleArn: arn:aws:iam::{ACCOUNT}:role/app-tagged\n"),
        &format!("    providerArn: arn:aws:iam::{ACCOUNT}:saml-provider/rolegate\n"),
        "    sessionName: team-a-tagged-web-1\n",
        "    durationSeconds: 7200\n",
        "      kubernetes-namespace=team-a  (reserved, set by rolegate)\n",
        "      kubernetes-pod-name=web-1  (reserved, set by rolegate)\n",
        "      kubernetes-service-account=tagged  (reserved, set by rolegate)\n",
        "      rolegate-cluster=prod  (reserved, set by rolegate)\n",
        "      team=team-a\n",
        "    transitiveTagKeys: team, kubernetes-namespace, kubernetes-service-account, kubernetes-pod-name, rolegate-cluster\n",
        "    sourceIdentity: tagged-id\n",
        "  trust policy the role needs:\n",
        &format!("\"Federated\": \"arn:aws:iam::{ACCOUNT}:saml-provider/rolegate\""),
        "\"SAML:aud\": \"https://signin.aws.amazon.com/saml\"",
        "\"saml:sub\": [\n                \"system:serviceaccount:team-a:tagged\"\n              ]",
        "\"sts:AssumeRoleWithSAML\"",
        &format!(
            "\ngranted: service account team-a/tagged may assume arn:aws:iam::{ACCOUNT}:role/app-tagged\n"
        ),
    ] {
        assert!(out.contains(expected), "{expected:?} missing from\n{out}");
    }
}

#[test]
fn the_trust_policy_is_the_document_the_controller_writes_to_status() {
    let config = config();
    let snapshot = rolegate::store::files::load_dir(config.0.path()).unwrap();
    let mapping = snapshot
        .mappings
        .iter()
        .find(|m| m.metadata.name.as_deref() == Some("app-reader"))
        .unwrap();
    let gathered = rolegate::controller::rolemapping::Gathered {
        provider: snapshot.providers.get("acct").cloned(),
        namespace_labels: snapshot.namespaces["team-a"].clone(),
        app: snapshot.apps.get("aws").cloned(),
    };
    let status =
        rolegate::controller::rolemapping::plan(mapping, &gathered, jiff::Timestamp::UNIX_EPOCH);
    let expected: serde_json::Value =
        serde_json::from_str(status.trust_policy.as_deref().unwrap()).unwrap();

    let (code, out, _) = explain(
        &config,
        &[
            "--namespace",
            "team-a",
            "--service-account",
            "multi",
            "--role",
            ROLE,
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["granted"], true);
    let reader = json["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mapping"] == "team-a/app-reader")
        .unwrap();
    assert_eq!(reader["verdict"], "granted");
    assert_eq!(reader["session"]["sessionName"], "team-a.multi");
    let shown: serde_json::Value =
        serde_json::from_str(reader["trustPolicy"].as_str().unwrap()).unwrap();
    assert_eq!(shown, expected);
}

#[test]
fn several_grants_without_a_role_are_granted_and_named() {
    let (code, out) = sa(&config(), "team-a", "multi", &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("  verdict: granted\n").count(), 2, "{out}");
    assert!(
        out.contains("may assume 2 roles (") && out.contains("choose one with role"),
        "{out}"
    );
}

#[test]
fn no_mapping_names_the_subject() {
    let (code, out) = sa(&config(), "team-a", "nobody", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no RoleMapping names this subject"), "{out}");
    assert!(
        out.ends_with("\ndenied: no RoleMapping names service account team-a/nobody\n"),
        "{out}"
    );
}

#[test]
fn provider_not_found() {
    let (code, out) = sa(&config(), "team-a", "lost", &[]);
    assert!(
        out.contains("  guard: (IAMProvider \"nowhere\" not found)\n"),
        "{out}"
    );
    assert_denied(
        code,
        &out,
        "team-a/elsewhere",
        "ProviderNotFound",
        "IAMProvider \"nowhere\" does not exist",
    );
}

#[test]
fn namespace_not_allowed_by_the_provider() {
    let (code, out) = sa(&config(), "team-b", "app", &[]);
    assert_denied(
        code,
        &out,
        "team-b/borrowed",
        "NamespaceNotAllowed",
        "IAMProvider \"acct\" does not allow namespace \"team-b\"",
    );
}

#[test]
fn role_not_allowed_by_the_provider() {
    let (code, out) = sa(&config(), "team-a", "greedy", &[]);
    assert_denied(
        code,
        &out,
        "team-a/admin",
        "RoleNotAllowed",
        &format!("IAMProvider \"acct\" does not allow role \"arn:aws:iam::{ACCOUNT}:role/admin\""),
    );
}

#[test]
fn a_role_arn_with_a_comma_is_refused() {
    let (code, out) = sa(&config(), "team-a", "comma", &[]);
    assert_denied(
        code,
        &out,
        "team-a/comma",
        "RoleNotAllowed",
        "contains ',', which separates role and provider",
    );
}

#[test]
fn an_invalid_session_name_template() {
    let (code, out) = sa(&config(), "team-a", "badname", &[]);
    assert_denied(
        code,
        &out,
        "team-a/badname",
        "InvalidSessionName",
        "has an unclosed '{'",
    );
}

#[test]
fn a_session_name_outside_the_providers_allowed_session_names() {
    let (code, out) = user(&config(), "bob@else.example", &["--connection", "corp"]);
    assert!(
        out.contains("    allowedSessionNames: *@corp.example\n"),
        "{out}"
    );
    assert_denied(
        code,
        &out,
        "team-a/outsider",
        "InvalidSessionName",
        "session name \"bob@else.example\" matches none of IAMProvider \"people\"'s allowedSessionNames",
    );
}

#[test]
fn a_reserved_tag_key() {
    let (code, out) = sa(&config(), "team-a", "reserved", &[]);
    assert_denied(
        code,
        &out,
        "team-a/reserved",
        "InvalidTags",
        "session tag key \"kubernetes-namespace\" is reserved",
    );
}

#[test]
fn a_tag_key_outside_the_providers_bounds() {
    let (code, out) = user(&config(), "carol@corp.example", &["--connection", "corp"]);
    assert!(
        out.contains("    sessionTags.allowedKeys: team, cost-*\n"),
        "{out}"
    );
    assert_denied(
        code,
        &out,
        "team-a/unbounded",
        "InvalidTags",
        "session tag key \"secret-level\" is not allowed by IAMProvider \"people\"",
    );
}

#[test]
fn a_source_identity_the_provider_does_not_allow() {
    let (code, out) = user(&config(), "dave@corp.example", &["--connection", "corp"]);
    assert!(
        out.contains("    sessionTags.allowSourceIdentity: false\n"),
        "{out}"
    );
    assert_denied(
        code,
        &out,
        "team-a/source",
        "InvalidTags",
        "does not let mappings set sourceIdentity",
    );
}

#[test]
fn a_tag_that_breaks_an_aws_rule() {
    let (code, out) = sa(&config(), "team-a", "longtag", &[]);
    assert_denied(
        code,
        &out,
        "team-a/longtag",
        "InvalidTags",
        "value of \"team\" is longer than 256 characters",
    );
}

#[test]
fn a_person_from_a_connection_the_samlapp_does_not_let_in() {
    let config = config();
    let (code, out) = user(&config, "alice@corp.example", &["--connection", "partner"]);
    assert_denied(
        code,
        &out,
        "team-a/people",
        "ConnectionNotAllowed",
        "SAMLApp \"people-app\" does not allow connection \"partner\"",
    );

    let (code, out) = user(&config, "alice@corp.example", &["--connection", "corp"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("subject: user \"alice@corp.example\" of connection \"corp\" (saml:sub alice@corp.example)\n"),
        "{out}"
    );
    assert!(
        out.contains("    sessionName: alice@corp.example\n"),
        "{out}"
    );
    // People carry no workload tags; the mapping's own tag is there.
    assert!(
        out.contains("    tags:\n      team=team-a\n    transitiveTagKeys: (none)\n"),
        "{out}"
    );
}

#[test]
fn a_person_is_named_through_a_group() {
    let (code, out) = user(
        &config(),
        "erin@corp.example",
        &["--group", "ops", "--group", "devs", "--connection", "corp"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("RoleMapping team-a/people\n"), "{out}");
    assert!(
        out.contains("    sessionName: erin@corp.example\n"),
        "{out}"
    );

    let (code, out) = user(
        &config(),
        "erin@corp.example",
        &["--group", "ops", "--connection", "corp"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("denied: no RoleMapping names user \"erin@corp.example\""),
        "{out}"
    );
}

#[test]
fn the_asked_role_is_not_granted() {
    let config = config();
    let admin = format!("arn:aws:iam::{ACCOUNT}:role/admin");
    let (code, out) = sa(&config, "team-a", "multi", &["--role", &admin]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("role asked: {admin} (from --role)\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "\ndenied: role \"{admin}\" is not granted to service account team-a/multi (granted: {ROLE}, arn:aws:iam::{ACCOUNT}:role/app-writer)\n"
        )),
        "{out}"
    );

    let (code, _) = sa(&config, "team-a", "multi", &["--role", ROLE]);
    assert_eq!(code, 0);
}

#[test]
fn the_role_a_service_account_annotation_asks_for() {
    // team-a/app is mapped to app-reader but annotated with app-writer, which it is not granted.
    let (code, out) = sa(&config(), "team-a", "app", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "role asked: arn:aws:iam::{ACCOUNT}:role/app-writer (from the service account's rolegate.dev/role annotation)\n"
        )),
        "{out}"
    );
    assert!(out.contains("  verdict: granted\n"), "{out}");
    assert!(out.contains("\ndenied: role \""), "{out}");
}

#[test]
fn usage_and_config_errors_exit_2() {
    let config = config();
    // No subject.
    let (code, _, err) = explain(&config, &[]);
    assert_eq!(code, 2, "{err}");
    // A namespace without a service account.
    let (code, _, err) = explain(&config, &["--namespace", "team-a"]);
    assert_eq!(code, 2, "{err}");
    // Two Connections sign people in and none is chosen.
    let (code, out, err) = explain(&config, &["--user", "alice@corp.example"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("2 Connections sign people in (corp, partner)"),
        "{err}"
    );
    // A config directory that does not exist.
    let out = Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args([
            "explain",
            "--config",
            "/nonexistent/rolegate",
            "--user",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    // A broken resource file.
    write(
        config.0.path(),
        "broken.yaml",
        "kind: RoleMapping\napiVersion: rolegate.dev/v1alpha1\nspec: 3\n",
    );
    let (code, out, err) = explain(
        &config,
        &["--namespace", "team-a", "--service-account", "app"],
    );
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("broken.yaml"), "{err}");
}
