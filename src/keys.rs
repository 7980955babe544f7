//! Signing keys of the identity provider: PEM loading, RSA generation with a self-signed
//! certificate, and the [`Signer`] implementation the SAML core signs through.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use jiff::{SignedDuration, Timestamp};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::saml::{SignError, Signer};

/// A key or certificate that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not PEM, or the wrong PEM block.
    #[error("{what} is not valid PEM: {reason}")]
    Pem {
        /// `tls.key` or `tls.crt`.
        what: &'static str,
        /// Parser message.
        reason: String,
    },
    /// The key is not an RSA key aws-lc accepts.
    #[error("the private key is not a usable RSA key: {0}")]
    Key(String),
    /// The key is shorter than AWS accepts.
    #[error("the RSA key has {0} bits; at least 2048 are required")]
    TooShort(usize),
    /// The certificate cannot be parsed.
    #[error("the certificate cannot be parsed: {0}")]
    Certificate(String),
    /// Certificate and key do not belong together.
    #[error("the certificate's public key does not match the private key")]
    Mismatch,
    /// Key generation failed.
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// An RSA signing key with its certificate.
pub struct SigningKey {
    key: RsaKeyPair,
    cert_der: Vec<u8>,
    not_after: Timestamp,
    fingerprint: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKey")
            .field("sha256_fingerprint", &self.fingerprint)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A generated key and certificate in PEM, for storing.
#[derive(Clone)]
pub struct KeyPem {
    /// PKCS#8 private key.
    pub key_pem: String,
    /// X.509 certificate.
    pub cert_pem: String,
}

impl std::fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPem { .. }")
    }
}

fn pem_block(what: &'static str, text: &str) -> Result<pem::Pem, KeyError> {
    pem::parse(text).map_err(|e| KeyError::Pem {
        what,
        reason: e.to_string(),
    })
}

impl SigningKey {
    /// Loads a PKCS#8 or PKCS#1 RSA key and its certificate.
    ///
    /// # Errors
    /// Unparseable input, a key under 2048 bits, or a certificate for another key.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Self, KeyError> {
        let key_block = pem_block("tls.key", key_pem)?;
        let key = match key_block.tag() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(key_block.contents()),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(key_block.contents()),
            other => {
                return Err(KeyError::Pem {
                    what: "tls.key",
                    reason: format!("unexpected PEM block {other:?}"),
                });
            }
        }
        .map_err(|e| KeyError::Key(e.to_string()))?;
        let cert_block = pem_block("tls.crt", cert_pem)?;
        Self::new(key, cert_block.contents().to_vec())
    }

    fn new(key: RsaKeyPair, cert_der: Vec<u8>) -> Result<Self, KeyError> {
        let bits = key.public_modulus_len() * 8;
        if bits < 2048 {
            return Err(KeyError::TooShort(bits));
        }
        let (_, cert) = X509Certificate::from_der(&cert_der)
            .map_err(|e| KeyError::Certificate(e.to_string()))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key().as_ref() {
            return Err(KeyError::Mismatch);
        }
        let not_after = Timestamp::from_second(cert.validity().not_after.timestamp())
            .map_err(|e| KeyError::Certificate(e.to_string()))?;
        let fingerprint = fingerprint_sha256(&cert_der);
        Ok(Self {
            key,
            cert_der,
            not_after,
            fingerprint,
        })
    }

    /// Generates an RSA key and a self-signed certificate for `common_name`, valid from an hour
    /// before `now` for `validity_days`.
    ///
    /// # Errors
    /// A key size other than 2048, 3072 or 4096, or a generation failure.
    pub fn generate(
        common_name: &str,
        bits: u32,
        validity_days: u32,
        now: Timestamp,
    ) -> Result<(Self, KeyPem), KeyError> {
        let size = match bits {
            2048 => rcgen::RsaKeySize::_2048,
            3072 => rcgen::RsaKeySize::_3072,
            4096 => rcgen::RsaKeySize::_4096,
            other => {
                return Err(KeyError::Generate(format!(
                    "rolegate generates 2048, 3072 or 4096-bit keys, not {other}"
                )));
            }
        };
        let generated = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let to_time = |t: Timestamp| {
            time::OffsetDateTime::from_unix_timestamp(t.as_second())
                .map_err(|e| KeyError::Generate(e.to_string()))
        };
        params.not_before = to_time(now - SignedDuration::from_hours(1))?;
        params.not_after =
            to_time(now + SignedDuration::from_hours(24 * i64::from(validity_days)))?;
        let cert = params
            .self_signed(&generated)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let key = RsaKeyPair::from_pkcs8(&generated.serialize_der())
            .map_err(|e| KeyError::Key(e.to_string()))?;
        let pem = KeyPem {
            key_pem: generated.serialize_pem(),
            cert_pem: cert.pem(),
        };
        Ok((Self::new(key, cert.der().to_vec())?, pem))
    }

    /// The DER certificate, owned.
    pub fn certificate_der_vec(&self) -> Vec<u8> {
        self.cert_der.clone()
    }

    /// SHA-256 fingerprint of the certificate, colon-separated upper-case hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// End of the certificate's validity.
    pub const fn not_after(&self) -> Timestamp {
        self.not_after
    }
}

/// End of validity of a DER certificate.
///
/// # Errors
/// An unparseable certificate.
pub fn certificate_not_after(der: &[u8]) -> Result<Timestamp, KeyError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| KeyError::Certificate(e.to_string()))?;
    Timestamp::from_second(cert.validity().not_after.timestamp())
        .map_err(|e| KeyError::Certificate(e.to_string()))
}

/// SHA-256 fingerprint of a DER certificate, as `AB:CD:...`.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Signer for SigningKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|e| SignError(e.to_string()))?;
        Ok(signature)
    }

    fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }
}

/// The key of a `kubernetes.io/tls` Secret (`tls.key` and `tls.crt`), or why it has none.
/// `name` only labels the message; nothing of the Secret's content is ever put in it.
///
/// # Errors
/// A missing field or an unusable key.
pub fn from_secret(
    secret: &k8s_openapi::api::core::v1::Secret,
    name: &str,
) -> Result<SigningKey, String> {
    let field = |k: &str| {
        crate::store::secret_value(secret, k)
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or_else(|| format!("Secret {name} has no {k}"))
    };
    SigningKey::from_pem(field("tls.key")?, field("tls.crt")?)
        .map_err(|e| format!("Secret {name}: {e}"))
}
