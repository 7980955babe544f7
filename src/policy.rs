//! PURE: (subject, RoleMappings, IAMProviders) → the roles the subject may assume, or the exact
//! reason it may not. The tenant guard lives here: a provider's `allowedNamespaces`,
//! `allowedRoles`, `allowedSessionNames` and `sessionTags` bound every mapping that names it, a
//! SAMLApp's `connections` bound the people it serves, and the session tags rolegate sets
//! itself (`kubernetes-*`, `rolegate-cluster`) are reserved.

pub mod cors;

use std::collections::{BTreeMap, HashMap};

use kube::core::{Selector, SelectorExt as _};

use crate::crd::{IAMProvider, RoleMapping, SubjectKind};
use crate::saml::aws::{
    ChainTarget, MAX_CHAINED_SECONDS, RoleSession, SessionError, sanitize_session_name,
};
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
        /// The Connection that vouched for the person.
        connection: &'a str,
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
            (
                Self::Person {
                    user, connection, ..
                },
                SubjectKind::User,
            ) => s.name == *user && s.connection.as_deref().is_none_or(|c| c == *connection),
            (
                Self::Person {
                    groups, connection, ..
                },
                SubjectKind::Group,
            ) => {
                groups.contains(&s.name) && s.connection.as_deref().is_none_or(|c| c == *connection)
            }
            _ => false,
        })
    }

    /// The subject's kind, as the credential cache and the logs name it.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::ServiceAccount { .. } => "ServiceAccount",
            Self::Person { .. } => "Person",
        }
    }
}

/// Session tag keys rolegate sets itself, the keys EKS Pod Identity uses plus the cluster's
/// name. No RoleMapping may set them.
pub const RESERVED_TAG_KEYS: [&str; 5] = [
    "kubernetes-namespace",
    "kubernetes-service-account",
    "kubernetes-pod-name",
    "kubernetes-pod-uid",
    "rolegate-cluster",
];

/// The budget, in characters, for a session's tags (keys, values and transitive keys) at
/// their longest. AWS packs session policies and tags into a binary form whose limit it does
/// not publish (`PackedPolicyTooLarge` reports a percentage); the limit it does publish for the
/// plaintext of session policies is 2,048 characters. rolegate holds the tags to the same
/// 2,048, which stays well below the point where the packed form overflows, and checks it
/// ahead, when the mapping is accepted, rather than at run time.
pub const PACKED_TAG_BUDGET: usize = 2048;

/// The longest values the reserved tags and templates can take: a namespace (63), a service
/// account or pod name (253), a pod UID (36) and a cluster name (128).
const MAX_NAMESPACE: usize = 63;
const MAX_NAME: usize = 253;
const MAX_UID: usize = 36;
const MAX_CLUSTER: usize = 128;

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
    /// The role ARN contains `,`, which AWS's Role attribute uses as its separator.
    #[error(
        "role ARN {role:?} contains ',', which separates role and provider in AWS's Role attribute"
    )]
    InvalidRoleArn {
        /// The role.
        role: String,
    },
    /// The session name template renders to nothing AWS accepts.
    #[error("{0}")]
    InvalidSessionName(String),
    /// Session tags, transitive keys, source identity or duration break an AWS rule or the
    /// provider's `sessionTags` bounds.
    #[error("{0}")]
    InvalidTags(String),
    /// The SAMLApp does not let people from this Connection in.
    #[error("SAMLApp {app:?} does not allow connection {connection:?}")]
    ConnectionNotAllowed {
        /// The SAMLApp.
        app: String,
        /// The person's Connection.
        connection: String,
    },
}

impl Denial {
    /// The condition reason, e.g. `NamespaceNotAllowed`.
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::ProviderNotFound { .. } => "ProviderNotFound",
            Self::NamespaceNotAllowed { .. } => "NamespaceNotAllowed",
            Self::RoleNotAllowed { .. } | Self::InvalidRoleArn { .. } => "RoleNotAllowed",
            Self::InvalidSessionName(_) => "InvalidSessionName",
            Self::InvalidTags(_) => "InvalidTags",
            Self::ConnectionNotAllowed { .. } => "ConnectionNotAllowed",
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
    /// The calling pod's UID, when known.
    pub pod_uid: Option<&'a str>,
    /// The cluster's name, sent as the `rolegate-cluster` tag when set.
    pub cluster: Option<&'a str>,
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
    /// The role the SAML session chains into at once, if any.
    pub chain: Option<ChainTarget>,
    /// The IAMProvider's STS `region`, if set.
    pub sts_region: Option<String>,
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
/// `ProviderNotFound`, `NamespaceNotAllowed`, `RoleNotAllowed`, or `InvalidTags` when the
/// mapping's own tags break the provider's bounds or use a reserved key.
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
    if role.contains(',') {
        return Err(Denial::InvalidRoleArn { role: role.clone() });
    }
    if !role_allowed(&provider.spec.allowed_roles, role) {
        return Err(Denial::RoleNotAllowed {
            role: role.clone(),
            provider: provider_name.clone(),
        });
    }
    if let Some(target) = &mapping.spec.target_role_arn
        && (target.contains(',') || !role_allowed(&provider.spec.allowed_roles, target))
    {
        return Err(Denial::RoleNotAllowed {
            role: target.clone(),
            provider: provider_name.clone(),
        });
    }
    check_tag_bounds(mapping, provider)?;
    Ok(provider)
}

/// Whether `role` matches one of `patterns`, where `*` and `?` never match `/`. (A role ARN
/// with `,` never gets here, so they cannot match `,` either.)
fn role_allowed(patterns: &[String], role: &str) -> bool {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    patterns
        .iter()
        .any(|p| glob::Pattern::new(p).is_ok_and(|p| p.matches_with(role, options)))
}

/// Whether `value` matches one of `patterns`, ignoring ASCII case (tag keys).
fn key_allowed(patterns: &[String], value: &str) -> bool {
    let options = glob::MatchOptions {
        case_sensitive: false,
        require_literal_separator: false,
        require_literal_leading_dot: false,
    };
    patterns
        .iter()
        .any(|p| glob::Pattern::new(p).is_ok_and(|p| p.matches_with(value, options)))
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
    let provider_name = &mapping.spec.provider;
    if let Subject::Person { connection, .. } = subject {
        let app = &provider.spec.saml_app;
        if let Some(a) = snapshot.apps.get(app)
            && !a.spec.connections.is_empty()
            && !a.spec.connections.iter().any(|c| c == connection)
        {
            return Err(Denial::ConnectionNotAllowed {
                app: app.clone(),
                connection: (*connection).to_owned(),
            });
        }
    }
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
    if let Some(patterns) = &provider.spec.allowed_session_names
        && !patterns
            .iter()
            .any(|p| glob::Pattern::new(p).is_ok_and(|p| p.matches(&session_name)))
    {
        return Err(Denial::InvalidSessionName(format!(
            "session name {session_name:?} matches none of IAMProvider {provider_name:?}'s allowedSessionNames"
        )));
    }
    let render = |t: &str| render_template(t, subject, namespace, ctx).map_err(Denial::InvalidTags);
    let mut tags = spec
        .session_tags
        .iter()
        .map(|(k, v)| Ok((k.clone(), render(v)?)))
        .collect::<Result<BTreeMap<_, _>, Denial>>()?;
    let source_identity = spec.source_identity.as_deref().map(render).transpose()?;
    let mut transitive_tag_keys = spec.transitive_tag_keys.clone();
    if !spec.disable_session_tags {
        for (key, value) in reserved_tags(subject, ctx) {
            tags.insert(key.to_owned(), value);
            transitive_tag_keys.push(key.to_owned());
        }
    }
    let session = RoleSession {
        role_arn: spec.role_arn.clone(),
        provider_arn: provider.provider_arn(),
        session_name,
        duration_seconds: spec.session_duration,
        tags,
        transitive_tag_keys,
        source_identity,
    };
    session.validate()?;
    Ok(RoleGrant {
        mapping: mapping_key(mapping),
        provider: spec.provider.clone(),
        app: provider.spec.saml_app.clone(),
        session,
        chain: spec.target_role_arn.as_ref().map(|role_arn| ChainTarget {
            role_arn: role_arn.clone(),
            external_id: spec.external_id.clone(),
            duration_seconds: spec.session_duration.min(MAX_CHAINED_SECONDS),
        }),
        sts_region: provider.spec.region.clone(),
    })
}

/// Refuses a mapping whose own tags use a reserved key or leave the provider's `sessionTags`
/// bounds, or that sets `sourceIdentity` where the provider does not allow it.
fn check_tag_bounds(mapping: &RoleMapping, provider: &IAMProvider) -> Result<(), Denial> {
    let spec = &mapping.spec;
    let provider_name = &spec.provider;
    let keys = spec.session_tags.keys().chain(&spec.transitive_tag_keys);
    for key in keys.clone() {
        if RESERVED_TAG_KEYS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(key))
        {
            return Err(Denial::InvalidTags(format!(
                "session tag key {key:?} is reserved: rolegate sets it itself"
            )));
        }
    }
    let worst = worst_case_tag_chars(mapping);
    if worst > PACKED_TAG_BUDGET {
        return Err(Denial::InvalidTags(format!(
            "session tags could need {worst} characters (keys, values with namespace, service account and pod names at their longest, transitive keys), over the {PACKED_TAG_BUDGET}-character budget for AWS's packed policy and tags; STS would refuse such a session with PackedPolicyTooLarge"
        )));
    }
    let Some(bounds) = &provider.spec.session_tags else {
        return Ok(());
    };
    if let Some(key) = keys.clone().find(|k| !key_allowed(&bounds.allowed_keys, k)) {
        return Err(Denial::InvalidTags(format!(
            "session tag key {key:?} is not allowed by IAMProvider {provider_name:?} (sessionTags.allowedKeys)"
        )));
    }
    if spec.source_identity.is_some() && !bounds.allow_source_identity {
        return Err(Denial::InvalidTags(format!(
            "IAMProvider {provider_name:?} does not let mappings set sourceIdentity (sessionTags.allowSourceIdentity)"
        )));
    }
    Ok(())
}

/// PURE: the characters a mapping's session tags can take at most: every key, every value
/// rendered with the longest names (capped at AWS's 256 per value, beyond which the session is
/// refused anyway), the reserved tags unless disabled, and the transitive keys.
pub fn worst_case_tag_chars(mapping: &RoleMapping) -> usize {
    let spec = &mapping.spec;
    let namespace = "n".repeat(MAX_NAMESPACE);
    let name = "s".repeat(MAX_NAME);
    let pod = "p".repeat(MAX_NAME);
    let subject = Subject::ServiceAccount {
        namespace: &namespace,
        name: &name,
    };
    let ctx = RequestContext {
        pod: Some(&pod),
        pod_uid: None,
        cluster: None,
    };
    let value_len = |template: &str| {
        render_template(template, &subject, &namespace, &ctx)
            .map_or(template.chars().count(), |v| v.chars().count())
            .min(256)
    };
    let mut total: usize = spec
        .session_tags
        .iter()
        .map(|(k, v)| k.chars().count() + value_len(v))
        .sum();
    let mut transitive: usize = spec
        .transitive_tag_keys
        .iter()
        .map(|k| k.chars().count())
        .sum();
    if !spec.disable_session_tags {
        let values = [MAX_NAMESPACE, MAX_NAME, MAX_NAME, MAX_UID, MAX_CLUSTER];
        for (key, value) in RESERVED_TAG_KEYS.iter().zip(values) {
            total += key.len() + value;
            transitive += key.len();
        }
    }
    total + transitive
}

/// The tags rolegate sets itself: the workload's namespace, service account and pod, as EKS
/// Pod Identity names them, and the cluster.
fn reserved_tags(subject: &Subject<'_>, ctx: &RequestContext<'_>) -> Vec<(&'static str, String)> {
    let mut tags = Vec::new();
    if let Subject::ServiceAccount { namespace, name } = subject {
        tags.push(("kubernetes-namespace", (*namespace).to_owned()));
        tags.push(("kubernetes-service-account", (*name).to_owned()));
        if let Some(pod) = ctx.pod {
            tags.push(("kubernetes-pod-name", pod.to_owned()));
        }
        if let Some(uid) = ctx.pod_uid {
            tags.push(("kubernetes-pod-uid", uid.to_owned()));
        }
    }
    if let Some(cluster) = ctx.cluster {
        tags.push(("rolegate-cluster", cluster.to_owned()));
    }
    tags
}

/// PURE: the positions in a snapshot's `mappings` of the mappings that may name a subject, by
/// the subject entries they hold. A lookup returns a superset of the mappings that name the
/// subject ([`Subject::is_named_by`] still decides), in the order of `mappings`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SubjectIndex {
    /// How many mappings were indexed; a snapshot with another count is not indexed by this.
    len: usize,
    /// `ServiceAccount` entries by (the mapping's namespace, name).
    service_accounts: HashMap<(String, String), Vec<usize>>,
    /// `User` entries by name.
    users: HashMap<String, Vec<usize>>,
    /// `Group` entries by name.
    groups: HashMap<String, Vec<usize>>,
}

impl SubjectIndex {
    /// Indexes `mappings` by every subject entry.
    pub fn new(mappings: &[RoleMapping]) -> Self {
        let mut index = Self {
            len: mappings.len(),
            ..Self::default()
        };
        for (i, mapping) in mappings.iter().enumerate() {
            let namespace = mapping.metadata.namespace.as_deref().unwrap_or_default();
            for s in &mapping.spec.subjects {
                let list = match s.kind {
                    SubjectKind::ServiceAccount => index
                        .service_accounts
                        .entry((namespace.to_owned(), s.name.clone()))
                        .or_default(),
                    SubjectKind::User => index.users.entry(s.name.clone()).or_default(),
                    SubjectKind::Group => index.groups.entry(s.name.clone()).or_default(),
                };
                // A mapping naming the subject twice is listed once.
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        index
    }

    /// The positions of the mappings with an entry for `subject`, ascending, without repeats.
    pub fn candidates(&self, subject: &Subject<'_>) -> Vec<usize> {
        match subject {
            Subject::ServiceAccount { namespace, name } => self
                .service_accounts
                .get(&((*namespace).to_owned(), (*name).to_owned()))
                .cloned()
                .unwrap_or_default(),
            Subject::Person { user, groups, .. } => {
                let mut all: Vec<usize> = self.users.get(*user).cloned().unwrap_or_default();
                for group in *groups {
                    all.extend(self.groups.get(group).into_iter().flatten());
                }
                all.sort_unstable();
                all.dedup();
                all
            }
        }
    }
}

/// Every role `subject` may assume, and why each other mapping naming it grants nothing.
pub fn decide(subject: &Subject<'_>, ctx: &RequestContext<'_>, snapshot: &Snapshot) -> Decision {
    let index = snapshot
        .subject_index
        .get_or_init(|| SubjectIndex::new(&snapshot.mappings));
    if index.len != snapshot.mappings.len() {
        // The snapshot changed after it was indexed: scan every mapping.
        return decide_among(subject, ctx, snapshot, snapshot.mappings.iter());
    }
    let candidates = index.candidates(subject);
    decide_among(
        subject,
        ctx,
        snapshot,
        candidates.iter().filter_map(|&i| snapshot.mappings.get(i)),
    )
}

/// [`decide`] by scanning every mapping, without the index: what the index must agree with.
pub fn decide_unindexed(
    subject: &Subject<'_>,
    ctx: &RequestContext<'_>,
    snapshot: &Snapshot,
) -> Decision {
    decide_among(subject, ctx, snapshot, snapshot.mappings.iter())
}

fn decide_among<'m>(
    subject: &Subject<'_>,
    ctx: &RequestContext<'_>,
    snapshot: &Snapshot,
    mappings: impl Iterator<Item = &'m RoleMapping>,
) -> Decision {
    let mut decision = Decision::default();
    // A mapping being deleted grants nothing, even while its finalizer (revocation) holds it.
    for mapping in
        mappings.filter(|m| m.metadata.deletion_timestamp.is_none() && subject.is_named_by(m))
    {
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
