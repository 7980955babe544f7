//! `RoleMapping`: who may assume which IAM role, through which provider.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Names who may assume one IAM role through one `IAMProvider`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "rolegate.dev",
    version = "v1alpha1",
    kind = "RoleMapping",
    plural = "rolemappings",
    shortname = "rmap",
    namespaced,
    status = "RoleMappingStatus",
    printcolumn = r#"{"name":"ROLE","type":"string","jsonPath":".spec.roleArn"}"#,
    printcolumn = r#"{"name":"PROVIDER","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"ACCEPTED","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RoleMappingSpec {
    /// Name of the `IAMProvider` the role trusts.
    pub provider: String,
    /// ARN of the IAM role to assume.
    #[schemars(regex(
        pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"
    ))]
    pub role_arn: String,
    /// Who may assume the role: ServiceAccounts of this namespace, or people by Group or User.
    pub subjects: Vec<SubjectRef>,
    /// Session duration in seconds.
    #[serde(default = "default_session_duration")]
    #[schemars(range(min = 900, max = 43200))]
    pub session_duration: u32,
    /// Template of the role session name over `{namespace}`, `{serviceAccount}`, `{user}` and
    /// `{pod}`. Defaults to `{namespace}.{serviceAccount}` for workloads and `{user}` for people.
    /// The rendered value is sanitised to `[A-Za-z0-9_+=,.@-]{2,64}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// Session tags, sent as `PrincipalTag:<key>` attributes. Values are templates like
    /// `sessionName`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub session_tags: BTreeMap<String, String>,
    /// Session tag keys that persist through role chaining.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitive_tag_keys: Vec<String>,
    /// Source identity of the session; a template like `sessionName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
    /// Leave out the session tags rolegate sets itself (`kubernetes-namespace`,
    /// `kubernetes-service-account`, `kubernetes-pod-name`, `kubernetes-pod-uid`,
    /// `rolegate-cluster`), e.g. for a role whose trust policy does not allow `sts:TagSession`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_session_tags: bool,
    /// A role to chain into at once with `sts:AssumeRole` (typically in another account): the
    /// caller gets the target's credentials. The target must also match the provider's
    /// `allowedRoles`; the chained session lasts at most one hour, as AWS caps role chaining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"
    ))]
    pub target_role_arn: Option<String>,
    /// `ExternalId` sent with the chained `sts:AssumeRole`, when the target's trust policy
    /// asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9+=,.@:/_-]{2,1224}$"))]
    pub external_id: Option<String>,
    /// When the mapping (or one of its subjects) goes away, revoke that subject's sessions
    /// already issued with an inline deny policy on the role (`aws:TokenIssueTime` and
    /// `saml:sub`), removed once they have all expired.
    #[serde(default = "default_true")]
    pub revoke_on_delete: bool,
}

const fn default_session_duration() -> u32 {
    3600
}

const fn default_true() -> bool {
    true
}

/// One subject of a RoleMapping.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SubjectRef {
    /// `ServiceAccount` (in the mapping's namespace), `Group` or `User`.
    pub kind: SubjectKind,
    /// Name of the service account, group or user.
    pub name: String,
    /// For `User` and `Group`: the Connection the person must have signed in through. Without
    /// it, a person from any Connection the SAMLApp allows matches, so two Connections whose
    /// users share a name would share the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
}

/// Kind of a subject.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SubjectKind {
    /// A ServiceAccount in the RoleMapping's own namespace.
    ServiceAccount,
    /// A group claim of a person signed in through a Connection.
    Group,
    /// A person's subject, as the Connection maps it.
    User,
}

/// Observed state of a `RoleMapping`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleMappingStatus {
    /// ARN of the IAM SAML provider the mapping resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_arn: Option<String>,
    /// A suggested trust policy for the role, JSON, pinning `SAML:aud` and `saml:sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_policy: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The role and `saml:sub` values last accepted: a subject that leaves them has its
    /// sessions revoked (`revokeOnDelete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_role: Option<String>,
    /// See `grantedRole`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_subjects: Vec<String>,
    /// `Accepted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
