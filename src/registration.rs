//! Registration of a SAMLApp's metadata as an IAM SAML provider: plan (pure) then apply.

use aws_lc_rs::digest;

use crate::aws::{AwsError, RegisteredProvider, SamlProviders};
use crate::crd::IAMProvider;

/// What registration must do to make IAM hold `desired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The provider does not exist: `CreateSAMLProvider`.
    Create,
    /// It exists with other metadata: `UpdateSAMLProvider`.
    Update,
    /// It already holds the metadata.
    InSync,
}

impl Plan {
    /// A label for logs and metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::InSync => "in_sync",
        }
    }
}

/// PURE: the step from what IAM holds to `desired`.
pub fn plan(current: Option<&RegisteredProvider>, desired: &str) -> Plan {
    match current {
        None => Plan::Create,
        Some(p) if p.metadata.trim() == desired.trim() => Plan::InSync,
        Some(_) => Plan::Update,
    }
}

/// Hex SHA-256 of a metadata document, as `status.metadataSHA256` records it.
pub fn metadata_sha256(metadata: &str) -> String {
    digest::digest(&digest::SHA256, metadata.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The result of one registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The provider's ARN.
    pub arn: String,
    /// What was done.
    pub plan: Plan,
    /// SHA-256 of the metadata IAM now holds.
    pub metadata_sha256: String,
}

/// Makes IAM hold `metadata` for `provider`: create if missing, update if different.
///
/// # Errors
/// The IAM call that failed.
pub async fn register(
    provider: &IAMProvider,
    metadata: &str,
    iam: &dyn SamlProviders,
) -> Result<Registration, AwsError> {
    let arn = provider.provider_arn();
    let current = iam.get(&arn).await?;
    let step = plan(current.as_ref(), metadata);
    let arn = match step {
        Plan::Create => {
            iam.create(&provider.spec.provider_name, metadata, &provider.spec.tags)
                .await?
        }
        Plan::Update => {
            iam.update(&arn, metadata).await?;
            arn
        }
        Plan::InSync => arn,
    };
    Ok(Registration {
        arn,
        plan: step,
        metadata_sha256: metadata_sha256(metadata),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_creates_updates_or_leaves_alone() {
        let held = |m: &str| RegisteredProvider {
            metadata: m.into(),
            valid_until: None,
        };
        assert_eq!(plan(None, "<a/>"), Plan::Create);
        assert_eq!(plan(Some(&held("<a/>")), "<a/>"), Plan::InSync);
        assert_eq!(plan(Some(&held("<a/>\n")), "<a/>"), Plan::InSync);
        assert_eq!(plan(Some(&held("<b/>")), "<a/>"), Plan::Update);
    }
}
