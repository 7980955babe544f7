//! PURE: (subject, RoleMappings, IAMProviders) → the roles the subject may assume, or the exact
//! reason it may not. The tenant guard lives here: a provider's `allowedNamespaces` and
//! `allowedRoles` bound every mapping that names it.

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt as _};

use crate::crd::{IAMProvider, RoleMapping, SubjectKind};
use crate::saml::aws::{RoleSession, SessionError, sanitize_session_name};
use crate::store::Snapshot;

/// Who asks for a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A Kubernetes service account.
    ServiceAccount {
        /// Its namespace.
        namespace: &'a str,
        /// Its name.
        name: &'a str,
    },
    /// A person signed in through a Connection.
    Person {
        /// The person's subject (the `User` name RoleMappings match).
        user: &'a str,
        /// The person's groups.
        groups: &'a [String],
    },
}

impl Subject<'_> {
    /// The `NameID` of a workload, `system:serviceaccount:<ns>:<name>`; a person's user.
    pub fn name_id(&self) -> String {
        match self {
            Self::ServiceAccount { namespace, name } => {
                format!("system:serviceaccount:{namespace}:{name}")
            }
            Self::Person { user, .. } => (*user).to_owned(),
        }
    }

    /// Whether `mapping` names this subject.
    pub fn is_named_by(&self, mapping: &RoleMapping) -> bool {
        let namespace = mapping.metadata.namespace.as_deref().unwrap_or_default();
        mapping.spec.subjects.iter().any(|s| match (self, s.kind) {
            (
                Self::ServiceAccount {
                    namespace: ns,
                    name,
                },
                SubjectKind::ServiceAccount,
            ) => *ns == namespace && s.name == *name,
            (Self::Person { user, .. }, SubjectKind::User) => s.name == *user,
            (Self::Person { groups, .. }, SubjectKind::Group) => groups.contains(&s.name),
            _ => false,
        })
    }
}

/// Why a mapping grants nothing. The variant names are the `Accepted` condition reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The mapping names an IAMProvider that does not exist.
    #[error("IAMProvider {provider:?} does not exist")]
    ProviderNotFound {
        /// The provider named.
        provider: String,
    },
    /// The provider's `allowedNamespaces` does not select the mapping's namespace.
    #[error("IAMProvider {provider:?} does not allow namespace {namespace:?}")]
    NamespaceNotAllowed {
        /// The mapping's namespace.
        namespace: String,
        /// The provider.
        provider: String,
    },
    /// The role matches none of the provider's `allowedRoles`.
    #[error("IAMProvider {provider:?} does not allow role {role:?}")]
    RoleNotAllowed {
        /// The role.
        role: String,
        /// The provider.
        provider: String,
    },
    /// The session name template renders to nothing AWS accepts.
    #[error("{0}")]
    InvalidSessionName(String),
    /// Session tags, transitive keys, source identity or duration break an AWS rule.
    #[error("{0}")]
    InvalidTags(String),
}

impl Denial {
    /// The condition reason, e.g. `NamespaceNotAllowed`.
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::ProviderNotFound { .. } => "ProviderNotFound",
            Self::NamespaceNotAllowed { .. } => "NamespaceNotAllowed",
            Self::RoleNotAllowed { .. } => "RoleNotAllowed",
            Self::InvalidSessionName(_) => "InvalidSessionName",
            Self::InvalidTags(_) => "InvalidTags",
        }
    }
}

impl From<SessionError> for Denial {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::SessionName { .. } => Self::InvalidSessionName(e.to_string()),
            _ => Self::InvalidTags(e.to_string()),
        }
    }
}

/// Request facts that session templates may use.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestContext<'a> {
    /// The calling pod's name, when known.
    pub pod: Option<&'a str>,
}

/// One role a subject may assume, with everything the assertion needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleGrant {
    /// `namespace/name` of the RoleMapping.
    pub mapping: String,
    /// The IAMProvider's name.
    pub provider: String,
    /// The SAMLApp that signs for the provider.
    pub app: String,
    /// The session attributes.
    pub session: RoleSession,
}

/// The outcome of a decision for one subject.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    /// Roles granted.
    pub grants: Vec<RoleGrant>,
    /// Mappings that name the subject but grant nothing, with the reason.
    pub denials: Vec<(String, Denial)>,
}

fn mapping_key(mapping: &RoleMapping) -> String {
    format!(
        "{}/{}",
        mapping.metadata.namespace.as_deref().unwrap_or_default(),
        mapping.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The provider a mapping resolves to, if the tenant guard lets the mapping use it.
///
/// # Errors
/// `ProviderNotFound`, `NamespaceNotAllowed` or `RoleNotAllowed`.
pub fn admit<'s>(mapping: &RoleMapping, snapshot: &'s Snapshot) -> Result<&'s IAMProvider, Denial> {
    let provider_name = &mapping.spec.provider;
    let provider =
        snapshot
            .providers
            .get(provider_name)
            .ok_or_else(|| Denial::ProviderNotFound {
                provider: provider_name.clone(),
            })?;
    let namespace = mapping.metadata.namespace.as_deref().unwrap_or_default();
    let selected = provider
        .spec
        .allowed_namespaces
        .as_ref()
        .and_then(|s| Selector::try_from(s.clone()).ok())
        .is_some_and(|s| s.matches(&snapshot.namespace_labels(namespace)));
    if !selected {
        return Err(Denial::NamespaceNotAllowed {
            namespace: namespace.to_owned(),
            provider: provider_name.clone(),
        });
    }
    let role = &mapping.spec.role_arn;
    let allowed = provider
        .spec
        .allowed_roles
        .iter()
        .any(|pattern| glob::Pattern::new(pattern).is_ok_and(|p| p.matches(role)));
    if !allowed {
        return Err(Denial::RoleNotAllowed {
            role: role.clone(),
            provider: provider_name.clone(),
        });
    }
    Ok(provider)
}

/// Renders a template over `{namespace}`, `{serviceAccount}`, `{user}` and `{pod}`.
///
/// # Errors
/// An unknown or unclosed placeholder.
pub fn render_template(
    template: &str,
    subject: &Subject<'_>,
    namespace: &str,
    ctx: &RequestContext<'_>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("template {template:?} has an unclosed '{{'"))?;
        let value = match &after[..close] {
            "namespace" => namespace.to_owned(),
            "serviceAccount" => match subject {
                Subject::ServiceAccount { name, .. } => (*name).to_owned(),
                Subject::Person { .. } => String::new(),
            },
            "user" => subject.name_id(),
            "pod" => ctx.pod.unwrap_or_default().to_owned(),
            other => {
                return Err(format!(
                    "template {template:?} has unknown placeholder {{{other}}}"
                ));
            }
        };
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What a mapping grants `subject`, checked against the tenant guard and AWS's session rules.
///
/// # Errors
/// The reason the mapping grants nothing.
pub fn grant(
    mapping: &RoleMapping,
    subject: &Subject<'_>,
    ctx: &RequestContext<'_>,
    snapshot: &Snapshot,
) -> Result<RoleGrant, Denial> {
    let provider = admit(mapping, snapshot)?;
    let spec = &mapping.spec;
    let namespace = mapping.metadata.namespace.as_deref().unwrap_or_default();
    let default_template = match subject {
        Subject::ServiceAccount { .. } => "{namespace}.{serviceAccount}",
        Subject::Person { .. } => "{user}",
    };
    let template = spec.session_name.as_deref().unwrap_or(default_template);
    let rendered =
        render_template(template, subject, namespace, ctx).map_err(Denial::InvalidSessionName)?;
    let session_name = sanitize_session_name(&rendered)?;
    let render = |t: &str| render_template(t, subject, namespace, ctx).map_err(Denial::InvalidTags);
    let tags = spec
        .session_tags
        .iter()
        .map(|(k, v)| Ok((k.clone(), render(v)?)))
        .collect::<Result<BTreeMap<_, _>, Denial>>()?;
    let source_identity = spec.source_identity.as_deref().map(render).transpose()?;
    let session = RoleSession {
        role_arn: spec.role_arn.clone(),
        provider_arn: provider.provider_arn(),
        session_name,
        duration_seconds: spec.session_duration,
        tags,
        transitive_tag_keys: spec.transitive_tag_keys.clone(),
        source_identity,
    };
    session.validate()?;
    Ok(RoleGrant {
        mapping: mapping_key(mapping),
        provider: spec.provider.clone(),
        app: provider.spec.saml_app.clone(),
        session,
    })
}

/// Every role `subject` may assume, and why each other mapping naming it grants nothing.
pub fn decide(subject: &Subject<'_>, ctx: &RequestContext<'_>, snapshot: &Snapshot) -> Decision {
    let mut decision = Decision::default();
    for mapping in snapshot.mappings.iter().filter(|m| subject.is_named_by(m)) {
        match grant(mapping, subject, ctx, snapshot) {
            Ok(g) => decision.grants.push(g),
            Err(d) => decision.denials.push((mapping_key(mapping), d)),
        }
    }
    decision
}

/// A suggested trust policy for a mapping's role: it trusts the provider for
/// `AssumeRoleWithSAML` (plus tagging and source identity) and pins `SAML:aud` and `saml:sub`.
pub fn trust_policy(provider_arn: &str, audience: &str, subjects: &[String]) -> String {
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": ["sts:AssumeRoleWithSAML", "sts:TagSession", "sts:SetSourceIdentity"],
            "Condition": {"StringEquals": {"SAML:aud": audience, "saml:sub": subjects}},
        }],
    });
    policy.to_string()
}

#[cfg(test)]
mod tests;
