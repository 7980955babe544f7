//! AWS behind traits the core owns: STS `AssumeRoleWithSAML` (unsigned) and IAM SAML providers.
//! `sdk` implements them with aws-sdk-rust; tests can count or fail calls through the same traits.

pub mod query;
pub mod sdk;

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;

/// An AWS call that failed, kept plain enough to show in a status condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// AWS answered with an error code, e.g. `AccessDenied`.
    #[error("{code}: {message}")]
    Service {
        /// The AWS error code.
        code: String,
        /// The AWS message.
        message: String,
    },
    /// AWS asked us to slow down.
    #[error("throttled: {0}")]
    Throttled(String),
    /// STS has been throttling calls for this account, and the next call paced for it would
    /// start later than the server's maximum wait (`--sts-max-wait-seconds`).
    #[error("calls for account {account} are paced after STS throttling; the next slot is in {} s", retry_after.as_secs().max(1))]
    Paced {
        /// The account the calls are for.
        account: String,
        /// Time until the next slot.
        retry_after: std::time::Duration,
    },
    /// AWS could not be reached or answered something unreadable.
    #[error("{0}")]
    Transport(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_is_called_at_the_regional_endpoint_of_the_chosen_region() {
        assert_eq!(
            sts_endpoint("eu-west-1"),
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            sts_endpoint("cn-north-1"),
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            sts_region(Some("eu-west-1"), Some("us-west-2")),
            "eu-west-1"
        );
        assert_eq!(sts_region(None, Some("us-west-2")), "us-west-2");
        assert_eq!(sts_region(None, None), "us-east-1");
        assert_ne!(
            sts_endpoint(sts_region(None, None)),
            "https://sts.amazonaws.com",
            "never the global endpoint"
        );
    }
}

impl AwsError {
    /// The AWS error code, or `Throttling`/`Unreachable`.
    pub fn code(&self) -> &str {
        match self {
            Self::Service { code, .. } => code,
            Self::Throttled(_) | Self::Paced { .. } => "Throttling",
            Self::Transport(_) => "Unreachable",
        }
    }
}

/// An `AssumeRoleWithSAML` request.
#[derive(Clone)]
pub struct AssumeRequest {
    /// The role.
    pub role_arn: String,
    /// The SAML provider.
    pub principal_arn: String,
    /// The base64 SAML Response.
    pub saml_assertion: String,
    /// Requested duration; the assertion's `SessionDuration` still bounds it.
    pub duration_seconds: u32,
    /// The region whose STS endpoint to call; `None` uses the server's.
    pub region: Option<String>,
}

impl std::fmt::Debug for AssumeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssumeRequest")
            .field("role_arn", &self.role_arn)
            .field("principal_arn", &self.principal_arn)
            .field("duration_seconds", &self.duration_seconds)
            .finish_non_exhaustive()
    }
}

/// PURE: the regional STS endpoint of `region`, `https://sts.<region>.amazonaws.com` (the
/// `.amazonaws.com.cn` domain in China, `.amazonaws.com` in every other partition rolegate
/// knows). Calling it instead of the global `sts.amazonaws.com` keeps issuance up when the
/// global endpoint (hosted in us-east-1) is not.
pub fn sts_endpoint(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("https://sts.{region}.amazonaws.com.cn")
    } else {
        format!("https://sts.{region}.amazonaws.com")
    }
}

/// PURE: the region the server calls STS in: the IAMProvider's `region`, else the server's
/// (`--sts-region` or `AWS_REGION`), else `us-east-1`.
pub fn sts_region<'a>(provider: Option<&'a str>, server: Option<&'a str>) -> &'a str {
    provider.or(server).unwrap_or("us-east-1")
}

/// An `sts:AssumeRole` request signed with the credentials of a SAML session (role chaining).
#[derive(Debug, Clone)]
pub struct ChainRequest {
    /// The target role.
    pub role_arn: String,
    /// The role session name, the SAML session's.
    pub session_name: String,
    /// `ExternalId`, when the target's trust policy asks for one.
    pub external_id: Option<String>,
    /// Requested duration; AWS allows at most one hour when chaining.
    pub duration_seconds: u32,
    /// The region whose STS endpoint to call; `None` uses the server's.
    pub region: Option<String>,
}

/// Temporary credentials and what STS says about them.
#[derive(Clone, PartialEq, Eq)]
pub struct StsCredentials {
    /// Access key ID.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token.
    pub session_token: String,
    /// Expiry.
    pub expiration: Timestamp,
    /// Assumed-role ARN.
    pub assumed_role_arn: String,
    /// Assumed-role ID.
    pub assumed_role_id: String,
    /// `Subject` (the NameID) as STS read it.
    pub subject: String,
    /// `SubjectType`.
    pub subject_type: String,
    /// `Issuer`.
    pub issuer: String,
    /// `Audience`.
    pub audience: String,
    /// `NameQualifier`.
    pub name_qualifier: String,
}

impl std::fmt::Debug for StsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .field("assumed_role_arn", &self.assumed_role_arn)
            .finish_non_exhaustive()
    }
}

impl StsCredentials {
    /// The account of the assumed role, from its ARN.
    pub fn account_id(&self) -> Option<&str> {
        self.assumed_role_arn
            .split(':')
            .nth(4)
            .filter(|a| !a.is_empty())
    }
}

/// STS, as the server needs it.
#[async_trait]
pub trait Sts: Send + Sync + std::fmt::Debug {
    /// `sts:AssumeRoleWithSAML`; unsigned, so it needs no AWS credentials.
    async fn assume_role_with_saml(
        &self,
        request: AssumeRequest,
    ) -> Result<StsCredentials, AwsError>;

    /// `sts:AssumeRole` with `source`'s credentials: chains a SAML session into another role.
    /// Transitive session tags carry through on AWS's side. The answer keeps `source`'s
    /// `Subject`, `Issuer` and the other SAML fields, which `AssumeRole` does not return.
    async fn assume_role(
        &self,
        source: &StsCredentials,
        request: ChainRequest,
    ) -> Result<StsCredentials, AwsError>;
}

/// A SAML provider as IAM holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredProvider {
    /// The metadata document IAM holds.
    pub metadata: String,
    /// When IAM stops trusting it.
    pub valid_until: Option<Timestamp>,
    /// Its tags, as `GetSAMLProvider` returns them; the ownership mark is one of them.
    pub tags: BTreeMap<String, String>,
}

/// IAM SAML providers in one account.
#[async_trait]
pub trait SamlProviders: Send + Sync + std::fmt::Debug {
    /// `iam:CreateSAMLProvider`; returns the ARN.
    async fn create(
        &self,
        name: &str,
        metadata: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, AwsError>;
    /// `iam:UpdateSAMLProvider`.
    async fn update(&self, arn: &str, metadata: &str) -> Result<(), AwsError>;
    /// `iam:TagSAMLProvider`: adds or overwrites `tags`, leaving the others.
    async fn tag(&self, arn: &str, tags: &BTreeMap<String, String>) -> Result<(), AwsError>;
    /// `iam:GetSAMLProvider` (metadata, validity and tags); `None` when it does not exist.
    async fn get(&self, arn: &str) -> Result<Option<RegisteredProvider>, AwsError>;
    /// `iam:DeleteSAMLProvider`; deleting a missing provider succeeds.
    async fn delete(&self, arn: &str) -> Result<(), AwsError>;
}

/// Inline policies of IAM roles, as revocation needs them.
#[async_trait]
pub trait RolePolicies: Send + Sync + std::fmt::Debug {
    /// `iam:PutRolePolicy`: creates or replaces the inline policy `name` on `role`.
    async fn put(&self, role: &str, name: &str, document: &str) -> Result<(), AwsError>;
    /// `iam:ListRolePolicies`: the names of `role`'s inline policies.
    async fn list(&self, role: &str) -> Result<Vec<String>, AwsError>;
    /// `iam:GetRolePolicy`: the document (decoded JSON), `None` when it does not exist.
    async fn get(&self, role: &str, name: &str) -> Result<Option<String>, AwsError>;
    /// `iam:DeleteRolePolicy`; deleting a missing policy succeeds.
    async fn delete(&self, role: &str, name: &str) -> Result<(), AwsError>;
}

/// Why a revocation could not be written or swept: the IAM action and role, and AWS's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{action} on role {role:?} failed: {error}")]
pub struct RevocationError {
    /// The IAM action that failed, e.g. `iam:PutRolePolicy`.
    pub action: &'static str,
    /// The role's name.
    pub role: String,
    /// What AWS answered.
    pub error: AwsError,
}

impl RevocationError {
    /// The condition reason: `RevocationDenied` when IAM refused (`AccessDenied`),
    /// `RevocationFailed` otherwise.
    pub fn reason(&self) -> &'static str {
        if self.error.code().contains("AccessDenied") {
            "RevocationDenied"
        } else {
            "RevocationFailed"
        }
    }
}

/// Puts `revocation`'s deny policy on its role.
///
/// # Errors
/// `iam:PutRolePolicy` failing.
pub async fn revoke(
    iam: &dyn RolePolicies,
    revocation: &crate::revocation::Revocation,
) -> Result<(), RevocationError> {
    iam.put(
        &revocation.role_name,
        &revocation.policy_name,
        &revocation.document,
    )
    .await
    .map_err(|error| RevocationError {
        action: "iam:PutRolePolicy",
        role: revocation.role_name.clone(),
        error,
    })
}

/// Removes from `role` every revocation policy whose sessions have all expired at `now`;
/// returns the names removed. Policies rolegate did not write are left alone.
///
/// # Errors
/// The first IAM call that failed.
pub async fn sweep(
    iam: &dyn RolePolicies,
    role: &str,
    now: Timestamp,
) -> Result<Vec<String>, RevocationError> {
    let fail = |action: &'static str| {
        move |error| RevocationError {
            action,
            role: role.to_owned(),
            error,
        }
    };
    let mut removed = Vec::new();
    let names = iam.list(role).await.map_err(fail("iam:ListRolePolicies"))?;
    for name in names
        .iter()
        .filter(|n| n.starts_with(crate::revocation::POLICY_PREFIX))
    {
        let Some(document) = iam
            .get(role, name)
            .await
            .map_err(fail("iam:GetRolePolicy"))?
        else {
            continue;
        };
        if crate::revocation::due_for_removal(name, &document, now) {
            iam.delete(role, name)
                .await
                .map_err(fail("iam:DeleteRolePolicy"))?;
            removed.push(name.clone());
        }
    }
    Ok(removed)
}
