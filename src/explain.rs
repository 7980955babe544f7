//! PURE: "why does (or doesn't) this subject get this role?", answered by the policy core the
//! server runs ([`policy::decide`]) over one [`Snapshot`]. `rolegate explain` prints the
//! [`Explanation`]; it reads the snapshot from the cluster or a config directory.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::controller::rolemapping::{Gathered, plan};
use crate::crd::RoleMapping;
use crate::policy::{self, RequestContext, Subject};
use crate::store::Snapshot;

/// What `rolegate explain` is asked.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Who asks.
    pub subject: Subject<'a>,
    /// The role asked for; `None` asks for any (or the service account's `rolegate.dev/role`).
    pub role: Option<&'a str>,
    /// Request facts the session templates and reserved tags use.
    pub ctx: RequestContext<'a>,
}

/// The answer: every mapping that names the subject, its guard and verdict, and the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// Who asked, as the server's messages name them.
    pub subject: String,
    /// The SAML `NameID` (`saml:sub`) the assertion would carry.
    pub name_id: String,
    /// The role asked for, if any.
    pub role: Option<String>,
    /// Where the asked role came from: `--role`, or the service account's annotation.
    pub role_source: Option<String>,
    /// Each RoleMapping that names the subject, in snapshot order.
    pub mappings: Vec<MappingVerdict>,
    /// Whether a role is granted: the asked one, or any when none is asked.
    pub granted: bool,
    /// One line: what the server would answer.
    pub outcome: String,
}

/// One RoleMapping naming the subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MappingVerdict {
    /// `namespace/name`.
    pub mapping: String,
    /// The role it maps to.
    pub role_arn: String,
    /// The IAMProvider it names.
    pub provider: String,
    /// The provider's tenant guard, when the provider exists.
    pub guard: Option<Guard>,
    /// Granted, or the policy's denial (flattened: `"verdict": "granted"` or `"denied"`).
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// An IAMProvider's tenant guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Guard {
    /// `allowedNamespaces`, as a label selector expression (`None` allows no namespace).
    pub allowed_namespaces: Option<String>,
    /// `allowedRoles` patterns.
    pub allowed_roles: Vec<String>,
    /// `allowedSessionNames` patterns, when set.
    pub allowed_session_names: Option<Vec<String>>,
    /// `sessionTags.allowedKeys`, when the provider bounds tags.
    pub allowed_tag_keys: Option<Vec<String>>,
    /// `sessionTags.allowSourceIdentity`, when the provider bounds tags.
    pub allow_source_identity: Option<bool>,
    /// The SAMLApp that signs for the provider.
    pub saml_app: String,
}

/// A mapping's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "camelCase")]
pub enum Verdict {
    /// The mapping grants the role.
    #[serde(rename_all = "camelCase")]
    Granted {
        /// The session that would be sent to STS.
        session: Session,
        /// The trust policy the role needs, as RoleMapping status shows it.
        trust_policy: Option<String>,
    },
    /// The mapping grants nothing.
    #[serde(rename_all = "camelCase")]
    Denied {
        /// The policy's reason, e.g. `NamespaceNotAllowed`.
        reason: String,
        /// The policy's message.
        message: String,
    },
}

/// The session attributes of a grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// Role to assume.
    pub role_arn: String,
    /// SAML provider the role trusts.
    pub provider_arn: String,
    /// RoleSessionName.
    pub session_name: String,
    /// SessionDuration in seconds.
    pub duration_seconds: u32,
    /// Session tags, reserved ones included.
    pub tags: BTreeMap<String, String>,
    /// Transitive tag keys.
    pub transitive_tag_keys: Vec<String>,
    /// SourceIdentity.
    pub source_identity: Option<String>,
}

fn mapping_key(mapping: &RoleMapping) -> String {
    format!(
        "{}/{}",
        mapping.metadata.namespace.as_deref().unwrap_or_default(),
        mapping.metadata.name.as_deref().unwrap_or_default()
    )
}

fn who(subject: &Subject<'_>) -> String {
    match subject {
        Subject::ServiceAccount { namespace, name } => {
            format!("service account {namespace}/{name}")
        }
        Subject::Person {
            user, connection, ..
        } => format!("user {user:?} of connection {connection:?}"),
    }
}

fn selector_text(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => format!("{} {} ({values})", e.key, op.to_lowercase()),
        });
    }
    if parts.is_empty() {
        "(every namespace)".into()
    } else {
        parts.join(", ")
    }
}

fn guard(mapping: &RoleMapping, snapshot: &Snapshot) -> Option<Guard> {
    let p = &snapshot.providers.get(&mapping.spec.provider)?.spec;
    Some(Guard {
        allowed_namespaces: p.allowed_namespaces.as_ref().map(selector_text),
        allowed_roles: p.allowed_roles.clone(),
        allowed_session_names: p.allowed_session_names.clone(),
        allowed_tag_keys: p.session_tags.as_ref().map(|b| b.allowed_keys.clone()),
        allow_source_identity: p.session_tags.as_ref().map(|b| b.allow_source_identity),
        saml_app: p.saml_app.clone(),
    })
}

/// The trust policy the controller writes to the mapping's `status.trustPolicy`.
fn trust_policy(mapping: &RoleMapping, snapshot: &Snapshot) -> Option<String> {
    let namespace = mapping.metadata.namespace.as_deref().unwrap_or_default();
    let provider = snapshot.providers.get(&mapping.spec.provider).cloned();
    let app = provider
        .as_ref()
        .and_then(|p| snapshot.apps.get(&p.spec.saml_app))
        .cloned();
    let gathered = Gathered {
        provider,
        namespace_labels: snapshot
            .namespaces
            .get(namespace)
            .cloned()
            .unwrap_or_default(),
        app,
    };
    // The time only stamps conditions, which are not shown.
    plan(mapping, &gathered, jiff::Timestamp::UNIX_EPOCH).trust_policy
}

/// Explains what the server would answer `query` over `snapshot`.
pub fn explain(snapshot: &Snapshot, query: &Query<'_>) -> Explanation {
    let subject = &query.subject;
    let who = who(subject);
    let (role, role_source) = match (query.role, subject) {
        (Some(r), _) => (Some(r.to_owned()), Some("--role".to_owned())),
        (None, Subject::ServiceAccount { namespace, name }) => {
            match snapshot
                .service_account_roles
                .get(&((*namespace).to_owned(), (*name).to_owned()))
            {
                Some(r) => (
                    Some(r.clone()),
                    Some("the service account's rolegate.dev/role annotation".to_owned()),
                ),
                None => (None, None),
            }
        }
        (None, Subject::Person { .. }) => (None, None),
    };
    let decision = policy::decide(subject, &query.ctx, snapshot);
    let mappings: Vec<MappingVerdict> = snapshot
        .mappings
        .iter()
        .filter(|m| subject.is_named_by(m))
        .map(|m| {
            let key = mapping_key(m);
            let verdict = if let Some(g) = decision.grants.iter().find(|g| g.mapping == key) {
                let s = &g.session;
                Verdict::Granted {
                    session: Session {
                        role_arn: s.role_arn.clone(),
                        provider_arn: s.provider_arn.clone(),
                        session_name: s.session_name.clone(),
                        duration_seconds: s.duration_seconds,
                        tags: s.tags.clone(),
                        transitive_tag_keys: s.transitive_tag_keys.clone(),
                        source_identity: s.source_identity.clone(),
                    },
                    trust_policy: trust_policy(m, snapshot),
                }
            } else {
                let denial = decision.denials.iter().find(|(k, _)| *k == key);
                Verdict::Denied {
                    reason: denial.map_or("Unknown", |(_, d)| d.reason()).to_owned(),
                    message: denial.map(|(_, d)| d.to_string()).unwrap_or_default(),
                }
            };
            MappingVerdict {
                mapping: key,
                role_arn: m.spec.role_arn.clone(),
                provider: m.spec.provider.clone(),
                guard: guard(m, snapshot),
                verdict,
            }
        })
        .collect();
    let granted_roles: Vec<&str> = decision
        .grants
        .iter()
        .map(|g| g.session.role_arn.as_str())
        .collect();
    // The server's own messages (src/server/issue.rs), in the order it checks.
    let (granted, outcome) = match (&role, granted_roles.as_slice()) {
        (_, []) => (
            false,
            match decision.denials.first() {
                Some((mapping, denial)) => format!(
                    "denied: RoleMapping {mapping} names {who} but grants nothing: {denial} ({})",
                    denial.reason()
                ),
                None => format!("denied: no RoleMapping names {who}"),
            },
        ),
        (Some(r), roles) if !roles.contains(&r.as_str()) => (
            false,
            format!(
                "denied: role {r:?} is not granted to {who} (granted: {})",
                roles.join(", ")
            ),
        ),
        (Some(r), _) => (true, format!("granted: {who} may assume {r}")),
        (None, [one]) => (true, format!("granted: {who} may assume {one}")),
        (None, several) => (
            true,
            format!(
                "granted: {who} may assume {} roles ({}); a request must choose one with role",
                several.len(),
                several.join(", ")
            ),
        ),
    };
    Explanation {
        subject: who,
        name_id: subject.name_id(),
        role,
        role_source,
        mappings,
        granted,
        outcome,
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let _ = writeln!(out, "subject: {} (saml:sub {})", self.subject, self.name_id);
        if let (Some(role), Some(source)) = (&self.role, &self.role_source) {
            let _ = writeln!(out, "role asked: {role} (from {source})");
        }
        if self.mappings.is_empty() {
            let _ = writeln!(out, "\nno RoleMapping names this subject");
        }
        for m in &self.mappings {
            let _ = writeln!(out, "\nRoleMapping {}", m.mapping);
            let _ = writeln!(out, "  role: {}", m.role_arn);
            let _ = writeln!(out, "  provider: {}", m.provider);
            match &m.guard {
                None => {
                    let _ = writeln!(out, "  guard: (IAMProvider {:?} not found)", m.provider);
                }
                Some(g) => {
                    let _ = writeln!(out, "  guard (IAMProvider {}):", m.provider);
                    let _ = writeln!(
                        out,
                        "    allowedNamespaces: {}",
                        g.allowed_namespaces
                            .as_deref()
                            .unwrap_or("(none: no namespace)")
                    );
                    let _ = writeln!(out, "    allowedRoles: {}", list(&g.allowed_roles));
                    if let Some(names) = &g.allowed_session_names {
                        let _ = writeln!(out, "    allowedSessionNames: {}", list(names));
                    }
                    if let Some(keys) = &g.allowed_tag_keys {
                        let _ = writeln!(out, "    sessionTags.allowedKeys: {}", list(keys));
                    }
                    if let Some(allow) = g.allow_source_identity {
                        let _ = writeln!(out, "    sessionTags.allowSourceIdentity: {allow}");
                    }
                    let _ = writeln!(out, "    samlApp: {}", g.saml_app);
                }
            }
            match &m.verdict {
                Verdict::Denied { reason, message } => {
                    let _ = writeln!(out, "  verdict: denied ({reason}): {message}");
                }
                Verdict::Granted {
                    session,
                    trust_policy,
                } => {
                    let _ = writeln!(out, "  verdict: granted");
                    let _ = writeln!(out, "  session:");
                    let _ = writeln!(out, "    roleArn: {}", session.role_arn);
                    let _ = writeln!(out, "    providerArn: {}", session.provider_arn);
                    let _ = writeln!(out, "    sessionName: {}", session.session_name);
                    let _ = writeln!(out, "    durationSeconds: {}", session.duration_seconds);
                    if session.tags.is_empty() {
                        let _ = writeln!(out, "    tags: (none)");
                    } else {
                        let _ = writeln!(out, "    tags:");
                    }
                    for (k, v) in &session.tags {
                        let reserved = if policy::RESERVED_TAG_KEYS.contains(&k.as_str()) {
                            "  (reserved, set by rolegate)"
                        } else {
                            ""
                        };
                        let _ = writeln!(out, "      {k}={v}{reserved}");
                    }
                    let _ = writeln!(
                        out,
                        "    transitiveTagKeys: {}",
                        list(&session.transitive_tag_keys)
                    );
                    let _ = writeln!(
                        out,
                        "    sourceIdentity: {}",
                        session.source_identity.as_deref().unwrap_or("(none)")
                    );
                    if let Some(policy) = trust_policy {
                        let _ = writeln!(out, "  trust policy the role needs:");
                        let pretty = serde_json::from_str::<serde_json::Value>(policy)
                            .and_then(|v| serde_json::to_string_pretty(&v))
                            .unwrap_or_else(|_| policy.clone());
                        for line in pretty.lines() {
                            let _ = writeln!(out, "    {line}");
                        }
                    }
                }
            }
        }
        let _ = writeln!(out, "\n{}", self.outcome);
        f.write_str(&out)
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

/// The Connection a person is explained through when none is given: the only one that is not
/// a Kubernetes (service-account token) Connection.
///
/// # Errors
/// No such Connection, or several.
pub fn default_connection(snapshot: &Snapshot) -> Result<String, String> {
    let people: Vec<&String> = snapshot
        .connections
        .iter()
        .filter(|(_, c)| !matches!(c.spec.kind(), Ok(crate::crd::ConnectionKind::Kubernetes(_))))
        .map(|(name, _)| name)
        .collect();
    match people.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err("no Connection signs people in; name one with --connection".into()),
        several => Err(format!(
            "{} Connections sign people in ({}); choose one with --connection",
            several.len(),
            several
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests;
