//! `Connection`: where identities come from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretRef;

/// An identity source. Exactly one of `oidc`, `kubernetes` and `static` is set.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "rolegate.dev",
    version = "v1alpha1",
    kind = "Connection",
    plural = "connections",
    shortname = "conn",
    status = "ConnectionStatus",
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// What people see on the sign-in page ("Continue with …"). Defaults to the Connection's
    /// name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// An OpenID Connect provider: browser login and id_token validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcConnection>,
    /// Kubernetes service-account tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesConnection>,
    /// Users with bcrypt password hashes, for small setups and demos.
    #[serde(default, rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_users: Option<StaticConnection>,
}

/// An OpenID Connect provider.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcConnection {
    /// Issuer URL; discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// OAuth client ID registered at the provider.
    pub client_id: String,
    /// Secret holding the client secret under `clientSecret`. Absent for public clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretRef>,
    /// A public client (PKCE with a loopback redirect, or the device flow) that `rolegate
    /// credentials` signs people in with on their laptops. Its id_tokens are accepted at
    /// `/delegation` as well as those of `clientId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_client_id: Option<String>,
    /// Scopes requested; `openid` is always included.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Which claims carry the subject, email, name and groups.
    #[serde(default)]
    pub claims: ClaimNames,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

/// Claim names of a person's identity.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimNames {
    /// Claim with the stable subject.
    #[serde(default = "claim_sub")]
    pub subject: String,
    /// Claim with the email address.
    #[serde(default = "claim_email")]
    pub email: String,
    /// Claim with the display name.
    #[serde(default = "claim_name")]
    pub name: String,
    /// Claim with the list of groups.
    #[serde(default = "claim_groups")]
    pub groups: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            subject: claim_sub(),
            email: claim_email(),
            name: claim_name(),
            groups: claim_groups(),
        }
    }
}

fn claim_sub() -> String {
    "sub".into()
}
fn claim_email() -> String {
    "email".into()
}
fn claim_name() -> String {
    "name".into()
}
fn claim_groups() -> String {
    "groups".into()
}

/// Kubernetes service-account tokens.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesConnection {
    /// Token audiences accepted.
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
    /// Standalone mode: the service-account token issuer (`iss`). In a cluster, TokenReview is
    /// authoritative and this is unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Standalone mode: the issuer's JWKS, as `https://…`, `http://…`, `file:///absolute/path` or
    /// `file:relative/path` (relative to the config directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
}

fn default_audiences() -> Vec<String> {
    vec!["rolegate".into()]
}

/// Users kept in a Secret, each with a bcrypt hash.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticConnection {
    /// Secret whose `users.yaml` key lists `{username, bcryptHash, email, name, groups}`.
    pub secret_ref: SecretRef,
}

/// Observed state of a `Connection`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The one kind a Connection has.
#[derive(Debug, Clone, Copy)]
pub enum ConnectionKind<'a> {
    /// See [`OidcConnection`].
    Oidc(&'a OidcConnection),
    /// See [`KubernetesConnection`].
    Kubernetes(&'a KubernetesConnection),
    /// See [`StaticConnection`].
    Static(&'a StaticConnection),
}

impl ConnectionSpec {
    /// The one kind this Connection has, or why it has not exactly one.
    ///
    /// # Errors
    /// When none or several of `oidc`, `kubernetes` and `static` are set.
    pub fn kind(&self) -> Result<ConnectionKind<'_>, String> {
        match (&self.oidc, &self.kubernetes, &self.static_users) {
            (Some(o), None, None) => Ok(ConnectionKind::Oidc(o)),
            (None, Some(k), None) => Ok(ConnectionKind::Kubernetes(k)),
            (None, None, Some(s)) => Ok(ConnectionKind::Static(s)),
            (None, None, None) => Err("none of oidc, kubernetes and static is set".into()),
            _ => Err("more than one of oidc, kubernetes and static is set".into()),
        }
    }
}
