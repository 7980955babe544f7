//! `IAMProvider`: a SAMLApp's metadata registered as an IAM SAML provider in one AWS account.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretRef;

/// The identity provider's metadata, registered as an IAM SAML provider in one AWS account and
/// kept in sync there.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "rolegate.dev",
    version = "v1alpha1",
    kind = "IAMProvider",
    plural = "iamproviders",
    shortname = "iamp",
    status = "IAMProviderStatus",
    printcolumn = r#"{"name":"ACCOUNT","type":"string","jsonPath":".spec.accountId"}"#,
    printcolumn = r#"{"name":"ARN","type":"string","jsonPath":".status.arn"}"#,
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IAMProviderSpec {
    /// Name of the `SAMLApp` whose metadata is registered.
    pub saml_app: String,
    /// The twelve-digit AWS account ID.
    #[schemars(regex(pattern = r"^[0-9]{12}$"))]
    pub account_id: String,
    /// Name of the IAM SAML provider. Immutable: a change is refused, never a silent replace.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,128}$"))]
    pub provider_name: String,
    /// How the controller reaches IAM. Absent means the default AWS credential chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AwsCredentials>,
    /// IAM endpoint override, e.g. a local emulator. The `AWS_ENDPOINT_URL` environment variable
    /// is honoured too; this field wins.
    #[serde(
        default,
        rename = "endpointURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_url: Option<String>,
    /// The AWS region whose STS endpoint (`https://sts.<region>.amazonaws.com`) the server
    /// exchanges assertions with, so an outage of the global endpoint does not stop issuance.
    /// Absent: the server's `--sts-region` (or `AWS_REGION`), else `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: Option<String>,
    /// Tags set on the IAM SAML provider.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// What happens to the IAM provider when this resource is deleted. `Delete` only deletes a
    /// provider this IAMProvider owns (its `rolegate.dev/owner` tag); another is left in IAM.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Take over an IAM SAML provider of this name that rolegate did not create, or that another
    /// cluster or IAMProvider owns: its metadata is replaced and it is tagged
    /// `rolegate.dev/owner=<cluster>/<this IAMProvider>`. Without it such a provider is left
    /// untouched and `Synced` is False with reason `NotOwned`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,
    /// Namespaces whose RoleMappings may use this provider. Absent selects no namespace (default
    /// deny); an empty selector (`{}`) selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<LabelSelector>,
    /// Glob patterns (`*`, `?`, `[...]`) of role ARNs that RoleMappings may use through this
    /// provider. Empty allows no role. `*` and `?` never match `/` or `,`, so `role/team-*`
    /// does not reach `role/team-x/Admin`; write `role/team-*/**` to include role paths. The
    /// patterns bound the provider as a whole: every namespace that `allowedNamespaces`
    /// selects may use every role they allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_roles: Vec<String>,
    /// Glob patterns a RoleMapping's rendered session name must match. Absent allows any
    /// session name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_session_names: Option<Vec<String>>,
    /// Bounds on the session tags and source identity RoleMappings may send through this
    /// provider. Absent leaves tags unbounded (except the keys rolegate reserves) and lets
    /// mappings set `sourceIdentity`; set it on every provider that several teams share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_tags: Option<SessionTagBounds>,
}

/// What RoleMappings may put into a session. Once set, anything not allowed is refused.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionTagBounds {
    /// Glob patterns of the session tag keys (and so of the transitive tag keys) mappings may
    /// set. Empty allows none. Matched case-insensitively, as IAM treats tag keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_keys: Vec<String>,
    /// Whether mappings may set `sourceIdentity`.
    #[serde(default)]
    pub allow_source_identity: bool,
}

/// How the controller authenticates to IAM.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsCredentials {
    /// A Secret with `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
    /// `AWS_SESSION_TOKEN`. Absent means the default AWS credential chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// A role to assume with those credentials before calling IAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$"))]
    pub assume_role_arn: Option<String>,
}

/// What happens to the IAM provider when the resource is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Leave the IAM provider in place.
    #[default]
    Retain,
    /// Delete the IAM provider.
    Delete,
}

/// Observed state of an `IAMProvider`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IAMProviderStatus {
    /// ARN of the IAM SAML provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// SHA-256 (hex) of the metadata document last pushed to IAM.
    #[serde(
        default,
        rename = "metadataSHA256",
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata_sha256: Option<String>,
    /// When IAM stops trusting the registered metadata, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// Last successful comparison with IAM, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `Synced`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl IAMProvider {
    /// The ARN IAM gives this provider: `arn:aws:iam::<account>:saml-provider/<name>`.
    pub fn provider_arn(&self) -> String {
        format!(
            "arn:aws:iam::{}:saml-provider/{}",
            self.spec.account_id, self.spec.provider_name
        )
    }
}
