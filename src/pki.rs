//! PURE: the operator's own small PKI. A self-signed CA signs the server's serving certificate,
//! which node agents verify and the API server trusts for the admission webhook (through the
//! webhook configuration's `caBundle`). `now` is a parameter; nothing here touches the network.
//!
//! Lifetimes follow cert-manager's defaults: a CA lives 10 years and is renewed when a third
//! of its life is left; a serving certificate lives 90 days and is renewed with 30 days left.
//! After a CA renewal the published bundle keeps the previous CA until it expires, so agents
//! that have not yet re-read the bundle keep trusting the server.

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use x509_parser::prelude::{FromDer as _, GeneralName, ParsedExtension, X509Certificate};

/// The CA's lifetime.
pub const CA_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 3650);
/// The serving certificate's lifetime.
pub const SERVING_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 90);

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertifiedKey {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM PKCS#8 private key.
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Why a certificate cannot be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkiError {
    /// Generating or signing failed.
    #[error("cannot issue a certificate: {0}")]
    Issue(String),
    /// Stored PEM does not parse.
    #[error("stored certificate is unreadable: {0}")]
    Unreadable(String),
}

fn to_time(t: Timestamp) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .map_err(|e| PkiError::Issue(e.to_string()))
}

fn issue_err(e: impl std::fmt::Display) -> PkiError {
    PkiError::Issue(e.to_string())
}

/// PURE (apart from key generation): a new self-signed CA valid from `now`.
///
/// # Errors
/// Key generation or signing failed.
pub fn new_ca(now: Timestamp, common_name: &str) -> Result<CertifiedKey, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(issue_err)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "rolegate");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = to_time(now - SignedDuration::from_hours(1))?;
    params.not_after = to_time(now + CA_LIFETIME)?;
    let cert = params.self_signed(&key).map_err(issue_err)?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// PURE (apart from key generation): a serving certificate for `dns_names`, signed by `ca`.
///
/// # Errors
/// An unreadable CA, or key generation or signing failed.
pub fn issue_serving(
    ca: &CertifiedKey,
    dns_names: &[String],
    now: Timestamp,
) -> Result<CertifiedKey, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|e| PkiError::Unreadable(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)
        .map_err(|e| PkiError::Unreadable(e.to_string()))?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(issue_err)?;
    let mut params = CertificateParams::new(dns_names.to_vec()).map_err(issue_err)?;
    if let Some(first) = dns_names.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = to_time(now - SignedDuration::from_hours(1))?;
    params.not_after = to_time(now + SERVING_LIFETIME)?;
    let cert = params.signed_by(&key, &issuer).map_err(issue_err)?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What a stored certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// DER certificate.
    pub der: Vec<u8>,
}

/// PURE: reads the first certificate of `pem_text`.
///
/// # Errors
/// No certificate, or one that does not parse.
pub fn inspect(pem_text: &str) -> Result<CertInfo, PkiError> {
    let der = first_der(pem_text)?;
    let (_, cert) =
        X509Certificate::from_der(&der).map_err(|e| PkiError::Unreadable(e.to_string()))?;
    let at = |t: i64| Timestamp::from_second(t).map_err(|e| PkiError::Unreadable(e.to_string()));
    let mut dns_names = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::DNSName(dns) = name {
                    dns_names.push((*dns).to_owned());
                }
            }
        }
    }
    Ok(CertInfo {
        not_before: at(cert.validity().not_before.timestamp())?,
        not_after: at(cert.validity().not_after.timestamp())?,
        dns_names,
        der,
    })
}

/// The DER of the first certificate in `pem_text`.
fn first_der(pem_text: &str) -> Result<Vec<u8>, PkiError> {
    pem::parse_many(pem_text)
        .map_err(|e| PkiError::Unreadable(e.to_string()))?
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .ok_or_else(|| PkiError::Unreadable("no CERTIFICATE block".into()))
}

/// PURE: whether `leaf_pem` carries a valid signature by `ca_pem`'s key.
pub fn signed_by(leaf_pem: &str, ca_pem: &str) -> bool {
    let (Ok(leaf), Ok(ca)) = (first_der(leaf_pem), first_der(ca_pem)) else {
        return false;
    };
    let (Ok((_, leaf)), Ok((_, ca))) = (
        X509Certificate::from_der(&leaf),
        X509Certificate::from_der(&ca),
    ) else {
        return false;
    };
    leaf.verify_signature(Some(ca.public_key())).is_ok()
}

/// Why a certificate is (re)issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// The stored one is fine.
    Keep,
    /// A new one is needed, for this reason (said in logs and Events).
    Issue(String),
}

/// PURE: whether a stored certificate (`None` when absent) that should last `lifetime` must be
/// renewed at `now`: absent, unreadable, expired, or with less than a third of its life left.
pub fn renewal(stored: Option<&str>, now: Timestamp) -> Renewal {
    let Some(pem_text) = stored else {
        return Renewal::Issue("it does not exist".into());
    };
    let info = match inspect(pem_text) {
        Ok(info) => info,
        Err(e) => return Renewal::Issue(e.to_string()),
    };
    let life = info.not_after.duration_since(info.not_before);
    let left = info.not_after.duration_since(now);
    if left <= SignedDuration::ZERO {
        return Renewal::Issue(format!("it expired at {}", info.not_after));
    }
    if left < life / 3 {
        return Renewal::Issue(format!(
            "it expires at {}, with less than a third of its life left",
            info.not_after
        ));
    }
    Renewal::Keep
}

/// PURE: whether the serving certificate must be reissued: [`renewal`], plus a different CA or
/// different DNS names.
pub fn serving_renewal(
    stored: Option<&str>,
    ca_pem: &str,
    dns_names: &[String],
    now: Timestamp,
) -> Renewal {
    match renewal(stored, now) {
        Renewal::Keep => {}
        issue => return issue,
    }
    let Some(pem_text) = stored else {
        return Renewal::Issue("it does not exist".into());
    };
    if !signed_by(pem_text, ca_pem) {
        return Renewal::Issue("it was not signed by the current CA".into());
    }
    let mut have = inspect(pem_text).map(|i| i.dns_names).unwrap_or_default();
    let mut want = dns_names.to_vec();
    have.sort();
    want.sort();
    if have != want {
        return Renewal::Issue(format!(
            "its DNS names {have:?} differ from the wanted {want:?}"
        ));
    }
    Renewal::Keep
}

/// PURE: the CA bundle to publish: the current CA, then any earlier CA still valid at `now`.
pub fn bundle(current_pem: &str, previous_pem: Option<&str>, now: Timestamp) -> String {
    let mut out = current_pem.trim_end().to_owned();
    out.push('\n');
    if let Some(previous) = previous_pem {
        let still_valid = inspect(previous).is_ok_and(|i| i.not_after > now);
        if still_valid && previous.trim() != current_pem.trim() {
            out.push_str(previous.trim_end());
            out.push('\n');
        }
    }
    out
}

/// PURE: the DNS names a Service is reached at from inside the cluster.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_790_000_000).unwrap()
    }

    fn names() -> Vec<String> {
        service_dns_names("rolegate-server", "rolegate-system")
    }

    #[test]
    fn serving_certificate_is_signed_by_the_ca_and_names_the_service() {
        let ca = new_ca(now(), "rolegate CA").unwrap();
        let serving = issue_serving(&ca, &names(), now()).unwrap();
        assert!(signed_by(&serving.cert_pem, &ca.cert_pem));
        let info = inspect(&serving.cert_pem).unwrap();
        assert_eq!(info.dns_names, names());
        assert_eq!(info.not_after, now() + SERVING_LIFETIME);
        assert_eq!(
            serving_renewal(Some(&serving.cert_pem), &ca.cert_pem, &names(), now()),
            Renewal::Keep
        );
    }

    #[test]
    fn another_ca_or_other_names_force_a_new_serving_certificate() {
        let ca = new_ca(now(), "rolegate CA").unwrap();
        let other = new_ca(now(), "rolegate CA").unwrap();
        let serving = issue_serving(&ca, &names(), now()).unwrap();
        assert!(!signed_by(&serving.cert_pem, &other.cert_pem));
        let Renewal::Issue(why) =
            serving_renewal(Some(&serving.cert_pem), &other.cert_pem, &names(), now())
        else {
            panic!("a certificate from another CA was kept")
        };
        assert!(why.contains("not signed by the current CA"), "{why}");
        let Renewal::Issue(why) = serving_renewal(
            Some(&serving.cert_pem),
            &ca.cert_pem,
            &service_dns_names("renamed", "rolegate-system"),
            now(),
        ) else {
            panic!("a certificate for other names was kept")
        };
        assert!(why.contains("DNS names"), "{why}");
    }

    #[test]
    fn renewal_happens_with_a_third_of_the_life_left() {
        let ca = new_ca(now(), "rolegate CA").unwrap();
        let serving = issue_serving(&ca, &names(), now()).unwrap();
        let pem = Some(serving.cert_pem.as_str());
        let day = SignedDuration::from_hours(24);
        assert_eq!(renewal(pem, now() + day * 59), Renewal::Keep);
        assert!(
            matches!(renewal(pem, now() + day * 61), Renewal::Issue(why) if why.contains("third"))
        );
        assert!(
            matches!(renewal(pem, now() + day * 91), Renewal::Issue(why) if why.contains("expired"))
        );
        assert!(
            matches!(renewal(None, now()), Renewal::Issue(why) if why.contains("does not exist"))
        );
        assert!(matches!(renewal(Some("garbage"), now()), Renewal::Issue(_)));
        // The CA lasts ten years and is renewed after about six and two thirds.
        assert_eq!(
            renewal(Some(&ca.cert_pem), now() + day * 2400),
            Renewal::Keep
        );
        assert!(matches!(
            renewal(Some(&ca.cert_pem), now() + day * 2500),
            Renewal::Issue(_)
        ));
    }

    #[test]
    fn the_bundle_keeps_the_previous_ca_while_it_is_valid() {
        let old = new_ca(now(), "rolegate CA").unwrap();
        let new = new_ca(now(), "rolegate CA").unwrap();
        let both = bundle(&new.cert_pem, Some(&old.cert_pem), now());
        assert_eq!(pem::parse_many(&both).unwrap().len(), 2);
        assert!(both.starts_with(new.cert_pem.trim_end()));
        let later = now() + CA_LIFETIME + SignedDuration::from_hours(1);
        assert_eq!(
            pem::parse_many(bundle(&new.cert_pem, Some(&old.cert_pem), later))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            pem::parse_many(bundle(&new.cert_pem, Some(&new.cert_pem), now()))
                .unwrap()
                .len(),
            1
        );
    }
}
