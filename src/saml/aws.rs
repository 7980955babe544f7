//! PURE: AWS's rules for the SAML attributes `AssumeRoleWithSAML` reads.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use base64::Engine as _;

use super::Attribute;

/// The prefix of every attribute AWS reads as a control value (Role, RoleSessionName, tags…).
pub const ATTRIBUTE_PREFIX: &str = "https://aws.amazon.com/SAML/Attributes/";
/// `Role` attribute: values `role-arn,provider-arn`.
pub const ROLE: &str = "https://aws.amazon.com/SAML/Attributes/Role";
/// `RoleSessionName` attribute.
pub const ROLE_SESSION_NAME: &str = "https://aws.amazon.com/SAML/Attributes/RoleSessionName";
/// `SessionDuration` attribute.
pub const SESSION_DURATION: &str = "https://aws.amazon.com/SAML/Attributes/SessionDuration";
/// Prefix of session tag attributes.
pub const PRINCIPAL_TAG: &str = "https://aws.amazon.com/SAML/Attributes/PrincipalTag:";
/// `TransitiveTagKeys` attribute.
pub const TRANSITIVE_TAG_KEYS: &str = "https://aws.amazon.com/SAML/Attributes/TransitiveTagKeys";
/// `SourceIdentity` attribute.
pub const SOURCE_IDENTITY: &str = "https://aws.amazon.com/SAML/Attributes/SourceIdentity";

/// A session value AWS would refuse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// RoleSessionName outside `[A-Za-z0-9_+=,.@-]{2,64}`.
    #[error("session name {value:?} is invalid: {reason}")]
    SessionName {
        /// The rejected name.
        value: String,
        /// Why.
        reason: String,
    },
    /// SessionDuration outside 900..=43200.
    #[error("session duration {0} s is outside 900..=43200")]
    Duration(u32),
    /// A tag rule is broken.
    #[error("session tags are invalid: {0}")]
    Tags(String),
    /// SourceIdentity rule is broken.
    #[error("source identity {value:?} is invalid: {reason}")]
    SourceIdentity {
        /// The rejected value.
        value: String,
        /// Why.
        reason: String,
    },
}

/// Everything about the session that becomes AWS attributes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleSession {
    /// Role to assume.
    pub role_arn: String,
    /// SAML provider the role trusts.
    pub provider_arn: String,
    /// RoleSessionName.
    pub session_name: String,
    /// SessionDuration in seconds.
    pub duration_seconds: u32,
    /// Session tags.
    pub tags: BTreeMap<String, String>,
    /// Tag keys kept through role chaining.
    pub transitive_tag_keys: Vec<String>,
    /// SourceIdentity.
    pub source_identity: Option<String>,
}

/// The longest session AWS grants through role chaining, in seconds.
pub const MAX_CHAINED_SECONDS: u32 = 3600;

/// The role a SAML session chains into at once with `sts:AssumeRole`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChainTarget {
    /// The target role.
    pub role_arn: String,
    /// `ExternalId` for the target's trust policy.
    pub external_id: Option<String>,
    /// Requested duration, at most [`MAX_CHAINED_SECONDS`].
    pub duration_seconds: u32,
}

const fn session_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

/// Checks a RoleSessionName against `[A-Za-z0-9_+=,.@-]{2,64}`.
///
/// # Errors
/// With the rule the name breaks.
pub fn check_session_name(name: &str) -> Result<(), SessionError> {
    let fail = |reason: String| SessionError::SessionName {
        value: name.chars().take(80).collect(),
        reason,
    };
    let len = name.chars().count();
    if len < 2 {
        return Err(fail(format!("{len} characters, at least 2 are needed")));
    }
    if len > 64 {
        return Err(fail(format!("{len} characters, at most 64 are allowed")));
    }
    if let Some(c) = name.chars().find(|c| !session_char(*c)) {
        return Err(fail(format!("{c:?} is not one of [A-Za-z0-9_+=,.@-]")));
    }
    Ok(())
}

/// Sanitises a rendered session name: every character outside `[A-Za-z0-9_+=,.@-]` becomes
/// `-`, and the result is cut to 64 characters.
///
/// # Errors
/// When fewer than two characters remain.
pub fn sanitize_session_name(rendered: &str) -> Result<String, SessionError> {
    let clean: String = rendered
        .chars()
        .map(|c| if session_char(c) { c } else { '-' })
        .take(64)
        .collect();
    check_session_name(&clean)?;
    Ok(clean)
}

fn tag_key_char(c: char) -> bool {
    c.is_alphanumeric()
        || c.is_whitespace()
        || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
}

impl RoleSession {
    /// Checks every AWS rule on the session.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), SessionError> {
        check_session_name(&self.session_name)?;
        if !(900..=43200).contains(&self.duration_seconds) {
            return Err(SessionError::Duration(self.duration_seconds));
        }
        if self.tags.len() > 50 {
            return Err(SessionError::Tags(format!(
                "{} tags, at most 50 are allowed",
                self.tags.len()
            )));
        }
        for (key, value) in &self.tags {
            let len = key.chars().count();
            if !(1..=128).contains(&len) {
                return Err(SessionError::Tags(format!(
                    "key {key:?} has {len} characters; keys have 1 to 128"
                )));
            }
            if key.to_ascii_lowercase().starts_with("aws:") {
                return Err(SessionError::Tags(format!("key {key:?} starts with aws:")));
            }
            if !key.chars().all(tag_key_char) {
                return Err(SessionError::Tags(format!(
                    "key {key:?} has a character outside letters, digits, spaces and _.:/=+-@"
                )));
            }
            if value.chars().count() > 256 {
                return Err(SessionError::Tags(format!(
                    "value of {key:?} is longer than 256 characters"
                )));
            }
        }
        if let Some(key) = self
            .transitive_tag_keys
            .iter()
            .find(|k| !self.tags.contains_key(k.as_str()))
        {
            return Err(SessionError::Tags(format!(
                "transitive tag key {key:?} is not a session tag"
            )));
        }
        if let Some(source) = &self.source_identity {
            let fail = |reason: &str| SessionError::SourceIdentity {
                value: source.chars().take(80).collect(),
                reason: reason.to_owned(),
            };
            let len = source.chars().count();
            if !(2..=64).contains(&len) {
                return Err(fail("it must have 2 to 64 characters"));
            }
            if source.to_ascii_lowercase().starts_with("aws:") {
                return Err(fail("it must not start with aws:"));
            }
            if !source.chars().all(session_char) {
                return Err(fail("it may only use [A-Za-z0-9_+=,.@-]"));
            }
        }
        Ok(())
    }

    /// The AWS attributes of this session, Role first.
    pub fn attributes(&self) -> Vec<Attribute> {
        let mut out = vec![
            Attribute::single(ROLE, format!("{},{}", self.role_arn, self.provider_arn)),
            Attribute::single(ROLE_SESSION_NAME, self.session_name.clone()),
            Attribute::single(SESSION_DURATION, self.duration_seconds.to_string()),
        ];
        out.extend(
            self.tags
                .iter()
                .map(|(k, v)| Attribute::single(format!("{PRINCIPAL_TAG}{k}"), v.clone())),
        );
        if !self.transitive_tag_keys.is_empty() {
            out.push(Attribute::strings(
                TRANSITIVE_TAG_KEYS,
                self.transitive_tag_keys.clone(),
            ));
        }
        if let Some(source) = &self.source_identity {
            out.push(Attribute::single(SOURCE_IDENTITY, source.clone()));
        }
        out
    }
}

/// `saml:namequalifier` as AWS computes it: `base64(sha1(issuer + accountId + "/" + providerName))`.
pub fn name_qualifier(issuer: &str, account_id: &str, provider_name: &str) -> String {
    let input = format!("{issuer}{account_id}/{provider_name}");
    base64::engine::general_purpose::STANDARD.encode(digest::digest(
        &digest::SHA1_FOR_LEGACY_USE_ONLY,
        input.as_bytes(),
    ))
}
