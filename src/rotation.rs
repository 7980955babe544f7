//! PURE: the signing-key rotation lifecycle. A Next certificate is published in the metadata
//! before it signs anything; after the lead time it becomes Active and the old one Retiring, still
//! published for one more lead time so relying parties that cached the metadata keep accepting
//! assertions across the switch; then it is dropped.
//!
//! The state lives in the managed `kubernetes.io/tls` Secret: `tls.key`/`tls.crt` (Active),
//! `next.key`/`next.crt` (Next), `retiring.crt` (Retiring), and two annotations with the instants.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;

use crate::crd::{CertificateState, CertificateStatus};
use crate::idp::AppKeys;
use crate::keys::{self, SigningKey};
use crate::store::secret_value;

/// When the Next certificate becomes Active (RFC 3339).
pub const NEXT_ACTIVATES_AT: &str = "rolegate.dev/next-activates-at";
/// Until when the Retiring certificate stays published (RFC 3339).
pub const RETIRING_UNTIL: &str = "rolegate.dev/retiring-until";

/// What the rotation does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing is due.
    Keep,
    /// Generate a key and publish it as Next.
    PublishNext,
    /// Next becomes Active; Active becomes Retiring.
    Promote,
    /// The Retiring certificate is no longer published.
    DropRetiring,
}

/// The rotation state of one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// End of the Active certificate.
    pub active_not_after: Timestamp,
    /// A Next certificate exists, activating then.
    pub next_activates_at: Option<Timestamp>,
    /// A Retiring certificate exists, published until then.
    pub retiring_until: Option<Timestamp>,
}

/// PURE: the step due at `now` with lead time `lead`. A Next certificate is published when the
/// Active one has two lead times (at least a day) left.
pub fn plan(state: &State, lead: SignedDuration, now: Timestamp) -> Step {
    if state.next_activates_at.is_some_and(|at| now >= at) {
        return Step::Promote;
    }
    if state.retiring_until.is_some_and(|until| now >= until) {
        return Step::DropRetiring;
    }
    let window = (lead * 2).max(SignedDuration::from_hours(24));
    if state.next_activates_at.is_none() && state.active_not_after.duration_since(now) <= window {
        return Step::PublishNext;
    }
    Step::Keep
}

fn annotation(secret: &Secret, key: &str) -> Option<Timestamp> {
    secret.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

fn utf8<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret_value(secret, key).and_then(|v| std::str::from_utf8(v).ok())
}

/// The keys of a signing Secret: the Active key signs; Active, Next and Retiring certificates
/// are published, each with its state.
///
/// # Errors
/// A missing or unusable Active key, or an unusable Next or Retiring entry.
pub fn app_keys(secret: &Secret, name: &str) -> Result<(AppKeys, State), String> {
    let active = keys::from_secret(secret, name)?;
    let mut published = vec![(
        active.certificate_der_vec(),
        active.not_after(),
        CertificateState::Active,
    )];
    let next_activates_at = match (utf8(secret, "next.key"), utf8(secret, "next.crt")) {
        (Some(key), Some(crt)) => {
            let next = SigningKey::from_pem(key, crt)
                .map_err(|e| format!("Secret {name}, next key: {e}"))?;
            published.push((
                next.certificate_der_vec(),
                next.not_after(),
                CertificateState::Next,
            ));
            Some(annotation(secret, NEXT_ACTIVATES_AT).unwrap_or(Timestamp::UNIX_EPOCH))
        }
        _ => None,
    };
    let retiring_until = match utf8(secret, "retiring.crt") {
        Some(crt) => {
            let block = pem::parse(crt).map_err(|e| format!("Secret {name}, retiring.crt: {e}"))?;
            let not_after = keys::certificate_not_after(block.contents())
                .map_err(|e| format!("Secret {name}, retiring.crt: {e}"))?;
            published.push((
                block.contents().to_vec(),
                not_after,
                CertificateState::Retiring,
            ));
            Some(annotation(secret, RETIRING_UNTIL).unwrap_or(Timestamp::UNIX_EPOCH))
        }
        None => None,
    };
    let state = State {
        active_not_after: active.not_after(),
        next_activates_at,
        retiring_until,
    };
    Ok((
        AppKeys {
            active: Arc::new(active),
            published,
        },
        state,
    ))
}

/// The certificates of `keys` as the SAMLApp status lists them.
pub fn certificate_statuses(keys: &AppKeys) -> Vec<CertificateStatus> {
    keys.published
        .iter()
        .map(|(der, not_after, state)| CertificateStatus {
            sha256_fingerprint: keys::fingerprint_sha256(der),
            not_after: not_after.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            state: *state,
        })
        .collect()
}

/// PURE: the Secret data and annotations after `step`. `next` is the freshly generated key in
/// PEM (key, certificate) for [`Step::PublishNext`].
pub fn apply(
    secret: &Secret,
    step: Step,
    next: Option<(String, String)>,
    lead: SignedDuration,
    now: Timestamp,
) -> Secret {
    let mut out = secret.clone();
    let mut data: BTreeMap<String, k8s_openapi::ByteString> = out.data.take().unwrap_or_default();
    for (k, v) in out.string_data.take().unwrap_or_default() {
        data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
    }
    let mut annotations = out.metadata.annotations.take().unwrap_or_default();
    let at = |t: Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    match step {
        Step::Keep => {}
        Step::PublishNext => {
            if let Some((key, crt)) = next {
                data.insert("next.key".into(), k8s_openapi::ByteString(key.into_bytes()));
                data.insert("next.crt".into(), k8s_openapi::ByteString(crt.into_bytes()));
                annotations.insert(NEXT_ACTIVATES_AT.into(), at(now + lead));
            }
        }
        Step::Promote => {
            if let (Some(key), Some(crt)) = (data.remove("next.key"), data.remove("next.crt")) {
                if let Some(old) = data.insert("tls.crt".into(), crt) {
                    data.insert("retiring.crt".into(), old);
                    annotations.insert(
                        RETIRING_UNTIL.into(),
                        at(now + lead.max(SignedDuration::from_hours(1))),
                    );
                }
                data.insert("tls.key".into(), key);
            }
            annotations.remove(NEXT_ACTIVATES_AT);
        }
        Step::DropRetiring => {
            data.remove("retiring.crt");
            annotations.remove(RETIRING_UNTIL);
        }
    }
    out.data = Some(data);
    out.metadata.annotations = Some(annotations);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(days: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_hours(24 * days)
    }

    #[test]
    fn the_lifecycle_publishes_promotes_and_retires_in_order() {
        let lead = SignedDuration::from_hours(24 * 7);
        let fresh = State {
            active_not_after: t(365),
            next_activates_at: None,
            retiring_until: None,
        };
        assert_eq!(plan(&fresh, lead, t(0)), Step::Keep);
        assert_eq!(plan(&fresh, lead, t(350)), Step::Keep);
        assert_eq!(
            plan(&fresh, lead, t(351)),
            Step::PublishNext,
            "two lead times before notAfter"
        );
        let published = State {
            next_activates_at: Some(t(358)),
            ..fresh
        };
        assert_eq!(
            plan(&published, lead, t(357)),
            Step::Keep,
            "Next does not sign before its time"
        );
        assert_eq!(plan(&published, lead, t(358)), Step::Promote);
        let promoted = State {
            active_not_after: t(723),
            next_activates_at: None,
            retiring_until: Some(t(365)),
        };
        assert_eq!(plan(&promoted, lead, t(364)), Step::Keep);
        assert_eq!(plan(&promoted, lead, t(365)), Step::DropRetiring);
    }

    #[test]
    fn a_zero_lead_still_renews_a_day_ahead() {
        let state = State {
            active_not_after: t(10),
            next_activates_at: None,
            retiring_until: None,
        };
        assert_eq!(plan(&state, SignedDuration::ZERO, t(8)), Step::Keep);
        assert_eq!(plan(&state, SignedDuration::ZERO, t(9)), Step::PublishNext);
    }
}
