//! Registration of a SAMLApp's metadata as an IAM SAML provider: plan (pure) then apply.
//!
//! rolegate only writes IAM SAML providers it owns. It marks what it creates with the tag
//! [`OWNER_TAG`] = `<cluster>/<IAMProvider>`, and refuses to update or delete a provider that
//! carries no such tag or another owner's (say the company's Okta provider, or the same
//! `providerName` registered by a second cluster) unless the IAMProvider asks to adopt it.

use std::collections::BTreeMap;

use aws_lc_rs::digest;

use crate::aws::{AwsError, RegisteredProvider, SamlProviders};
use crate::crd::IAMProvider;

/// The tag that marks an IAM SAML provider as rolegate's: `<cluster>/<IAMProvider name>`.
pub const OWNER_TAG: &str = "rolegate.dev/owner";

/// The [`OWNER_TAG`] value of `provider` in `cluster`.
pub fn owner(cluster: &str, provider: &str) -> String {
    format!("{cluster}/{provider}")
}

/// PURE: whether `name` can be a cluster name inside an IAM tag value (1–128 of letters, digits
/// and `_.:=+-@`; the IAMProvider name and a `/` follow it in the tag).
///
/// # Errors
/// Why it cannot.
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    let fits = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:=+-@".contains(c));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "cluster name {name:?} must be 1-128 letters, digits or _.:=+-@ (it goes into the {OWNER_TAG} tag)"
        ))
    }
}

/// What registration must do to make IAM hold `desired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The provider does not exist: `CreateSAMLProvider`, tagged with its owner.
    Create,
    /// It is ours and holds other metadata: `UpdateSAMLProvider`.
    Update,
    /// It is ours and already holds the metadata.
    InSync,
    /// It is not ours and the IAMProvider asks to adopt it: `TagSAMLProvider` with the owner
    /// tag, then `UpdateSAMLProvider` when the metadata differs.
    Adopt {
        /// Whether the metadata must be replaced too.
        update: bool,
    },
}

impl Plan {
    /// A label for logs and metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::InSync => "in_sync",
            Self::Adopt { .. } => "adopt",
        }
    }
}

/// Why registration refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// The provider exists and is not this IAMProvider's: nothing was written.
    #[error("{}", not_owned_message(arn, expected, found.as_deref()))]
    NotOwned {
        /// The provider's ARN.
        arn: String,
        /// The owner tag this IAMProvider writes.
        expected: String,
        /// The owner tag the provider carries, if any.
        found: Option<String>,
    },
    /// `spec.tags` sets the owner tag, which only rolegate sets.
    #[error("tag {OWNER_TAG} is reserved: rolegate sets it to mark the providers it owns")]
    ReservedTag,
    /// An IAM call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
}

fn not_owned_message(arn: &str, expected: &str, found: Option<&str>) -> String {
    let found = match found {
        None => format!("it has no {OWNER_TAG} tag, so rolegate did not create it"),
        Some(other) => format!("its {OWNER_TAG} tag names {other:?}"),
    };
    format!(
        "IAM SAML provider {arn} is not owned by {expected:?}: {found}; rolegate leaves it untouched (set spec.adopt: true to take it over)"
    )
}

impl RegistrationError {
    /// The condition reason: `NotOwned`, `InvalidTags`, or the AWS error code.
    pub fn reason(&self) -> String {
        match self {
            Self::NotOwned { .. } => "NotOwned".into(),
            Self::ReservedTag => "InvalidTags".into(),
            Self::Aws(e) => e.code().to_owned(),
        }
    }
}

/// PURE: the step from what IAM holds to `desired`, for the provider owned by `owner`.
///
/// # Errors
/// [`RegistrationError::NotOwned`] when the provider exists without `owner`'s tag and `adopt`
/// is not set.
pub fn plan(
    arn: &str,
    current: Option<&RegisteredProvider>,
    desired: &str,
    owner: &str,
    adopt: bool,
) -> Result<Plan, RegistrationError> {
    let Some(current) = current else {
        return Ok(Plan::Create);
    };
    let differs = current.metadata.trim() != desired.trim();
    let found = current.tags.get(OWNER_TAG);
    match (found.map(String::as_str) == Some(owner), adopt, differs) {
        (true, _, true) => Ok(Plan::Update),
        (true, _, false) => Ok(Plan::InSync),
        (false, true, update) => Ok(Plan::Adopt { update }),
        (false, false, _) => Err(RegistrationError::NotOwned {
            arn: arn.into(),
            expected: owner.into(),
            found: found.cloned(),
        }),
    }
}

/// PURE: the tags a new provider is created with: `spec.tags` and the owner tag.
///
/// # Errors
/// [`RegistrationError::ReservedTag`] when `spec.tags` sets the owner tag itself.
pub fn create_tags(
    spec_tags: &BTreeMap<String, String>,
    owner: &str,
) -> Result<BTreeMap<String, String>, RegistrationError> {
    if spec_tags.contains_key(OWNER_TAG) {
        return Err(RegistrationError::ReservedTag);
    }
    let mut tags = spec_tags.clone();
    tags.insert(OWNER_TAG.into(), owner.into());
    Ok(tags)
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

/// Makes IAM hold `metadata` for `provider`, owned by `owner`: create if missing, update if
/// ours and different, adopt only when `spec.adopt` says so.
///
/// # Errors
/// A provider that is not ours ([`RegistrationError::NotOwned`], nothing written), a reserved
/// tag, or the IAM call that failed.
pub async fn register(
    provider: &IAMProvider,
    metadata: &str,
    owner: &str,
    iam: &dyn SamlProviders,
) -> Result<Registration, RegistrationError> {
    let tags = create_tags(&provider.spec.tags, owner)?;
    let arn = provider.provider_arn();
    let current = iam.get(&arn).await?;
    let step = plan(&arn, current.as_ref(), metadata, owner, provider.spec.adopt)?;
    let arn = match step {
        Plan::Create => {
            iam.create(&provider.spec.provider_name, metadata, &tags)
                .await?
        }
        Plan::Update => {
            iam.update(&arn, metadata).await?;
            arn
        }
        Plan::Adopt { update } => {
            // The mark first: should the update fail, the next pass is an ordinary update.
            let mark = BTreeMap::from([(OWNER_TAG.to_owned(), owner.to_owned())]);
            iam.tag(&arn, &mark).await?;
            if update {
                iam.update(&arn, metadata).await?;
            }
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

/// What deregistration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deregistration {
    /// The provider was ours and is deleted.
    Deleted,
    /// There was nothing to delete.
    Gone,
}

/// PURE: whether the provider IAM holds may be deleted by `owner`.
///
/// # Errors
/// [`RegistrationError::NotOwned`] when it exists without `owner`'s tag.
pub fn plan_delete(
    arn: &str,
    current: Option<&RegisteredProvider>,
    owner: &str,
) -> Result<Deregistration, RegistrationError> {
    match current {
        None => Ok(Deregistration::Gone),
        Some(p) if p.tags.get(OWNER_TAG).map(String::as_str) == Some(owner) => {
            Ok(Deregistration::Deleted)
        }
        Some(p) => Err(RegistrationError::NotOwned {
            arn: arn.into(),
            expected: owner.into(),
            found: p.tags.get(OWNER_TAG).cloned(),
        }),
    }
}

/// Deletes the provider at `arn` if `owner` owns it (`deletionPolicy: Delete`).
///
/// # Errors
/// A provider that is not ours (left in place), or the IAM call that failed.
pub async fn deregister(
    arn: &str,
    owner: &str,
    iam: &dyn SamlProviders,
) -> Result<Deregistration, RegistrationError> {
    let current = iam.get(arn).await?;
    let step = plan_delete(arn, current.as_ref(), owner)?;
    if step == Deregistration::Deleted {
        iam.delete(arn).await?;
    }
    Ok(step)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:iam::123456789012:saml-provider/corp";

    fn held(metadata: &str, owner: Option<&str>) -> RegisteredProvider {
        RegisteredProvider {
            metadata: metadata.into(),
            valid_until: None,
            tags: owner
                .map(|o| BTreeMap::from([(OWNER_TAG.to_owned(), o.to_owned())]))
                .unwrap_or_default(),
        }
    }

    #[test]
    fn our_provider_is_created_updated_or_left_alone() {
        let ours = Some("c1/acct");
        assert_eq!(plan(ARN, None, "<a/>", "c1/acct", false), Ok(Plan::Create));
        for (held_md, want) in [
            ("<a/>", Plan::InSync),
            ("<a/>\n", Plan::InSync),
            ("<b/>", Plan::Update),
        ] {
            let current = held(held_md, ours);
            assert_eq!(
                plan(ARN, Some(&current), "<a/>", "c1/acct", false),
                Ok(want)
            );
        }
    }

    #[test]
    fn an_unmarked_or_foreign_provider_is_refused_unless_adopted() {
        for found in [None, Some("c2/acct"), Some("c1/other")] {
            let current = held("<okta/>", found);
            let refused = plan(ARN, Some(&current), "<a/>", "c1/acct", false).unwrap_err();
            assert_eq!(refused.reason(), "NotOwned");
            let message = refused.to_string();
            assert!(message.contains(ARN), "{message}");
            match found {
                None => assert!(
                    message.contains("has no rolegate.dev/owner tag"),
                    "{message}"
                ),
                Some(other) => assert!(message.contains(&format!("{other:?}")), "{message}"),
            }
            assert_eq!(
                plan(ARN, Some(&current), "<a/>", "c1/acct", true),
                Ok(Plan::Adopt { update: true })
            );
            assert_eq!(
                plan_delete(ARN, Some(&current), "c1/acct")
                    .unwrap_err()
                    .reason(),
                "NotOwned"
            );
        }
        let current = held("<a/>", None);
        assert_eq!(
            plan(ARN, Some(&current), "<a/>", "c1/acct", true),
            Ok(Plan::Adopt { update: false })
        );
        assert_eq!(
            plan_delete(ARN, Some(&held("<a/>", Some("c1/acct"))), "c1/acct"),
            Ok(Deregistration::Deleted)
        );
        assert_eq!(plan_delete(ARN, None, "c1/acct"), Ok(Deregistration::Gone));
    }

    #[test]
    fn the_owner_tag_is_rolegates_alone() {
        let spec = BTreeMap::from([("team".to_owned(), "platform".to_owned())]);
        let tags = create_tags(&spec, "c1/acct").unwrap();
        assert_eq!(tags.get(OWNER_TAG).map(String::as_str), Some("c1/acct"));
        assert_eq!(tags.get("team").map(String::as_str), Some("platform"));
        let forged = BTreeMap::from([(OWNER_TAG.to_owned(), "c2/acct".to_owned())]);
        assert_eq!(
            create_tags(&forged, "c1/acct"),
            Err(RegistrationError::ReservedTag)
        );
    }

    #[test]
    fn cluster_names_fit_a_tag_value() {
        assert!(check_cluster_name("prod-eu-1").is_ok());
        assert!(check_cluster_name("3f1c2a9e-8d7b-4c3a-9f00-1234567890ab").is_ok());
        assert!(check_cluster_name("").is_err());
        assert!(check_cluster_name("a/b").is_err());
        assert!(check_cluster_name(&"x".repeat(129)).is_err());
    }
}
