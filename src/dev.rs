//! `rolegate dev`: helpers that mint service-account-shaped tokens and JWKS from a PEM key, so
//! the demo and tests present real signed tokens.

use aws_lc_rs::signature::{KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// Why a dev command failed.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The key cannot be used.
    #[error("the key is not a usable RSA private key in PEM: {0}")]
    Key(String),
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

fn rsa_key(pem_text: &str) -> Result<RsaKeyPair, DevError> {
    let block = pem::parse(pem_text).map_err(|e| DevError::Key(e.to_string()))?;
    match block.tag() {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(block.contents()),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(block.contents()),
        other => return Err(DevError::Key(format!("unexpected PEM block {other:?}"))),
    }
    .map_err(|e| DevError::Key(e.to_string()))
}

/// The key id rolegate's dev helpers give a key: the first 16 hex digits of the SHA-256 of its
/// public key.
///
/// # Errors
/// An unusable key.
pub fn key_id(pem_text: &str) -> Result<String, DevError> {
    let key = rsa_key(pem_text)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().as_ref());
    Ok(digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A JWKS with the public half of the key.
///
/// # Errors
/// An unusable key.
pub fn jwks(pem_text: &str) -> Result<serde_json::Value, DevError> {
    let key = rsa_key(pem_text)?;
    let public = key.public_key();
    let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
    let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
    Ok(serde_json::json!({"keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": key_id(pem_text)?, "n": n, "e": e,
    }]}))
}

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// `iss`.
    pub issuer: String,
    /// `sub`, e.g. `system:serviceaccount:demo:app`.
    pub subject: String,
    /// `aud`.
    pub audiences: Vec<String>,
    /// Seconds from `now` to `exp`.
    pub ttl_seconds: i64,
    /// The pod the token is bound to.
    pub pod: Option<String>,
    /// `kid`; defaults to [`key_id`].
    pub kid: Option<String>,
}

/// A service-account-shaped RS256 JWT, issued at `now`.
///
/// # Errors
/// An unusable key.
pub fn token(pem_text: &str, spec: &TokenSpec, now: Timestamp) -> Result<String, DevError> {
    let kid = match &spec.kid {
        Some(k) => k.clone(),
        None => key_id(pem_text)?,
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid);
    let iat = now.as_second();
    let mut kubernetes = serde_json::json!({});
    if let Some((namespace, name)) = spec
        .subject
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        kubernetes = serde_json::json!({"namespace": namespace, "serviceaccount": {"name": name}});
        if let Some(pod) = &spec.pod {
            kubernetes["pod"] = serde_json::json!({"name": pod, "uid": pod_uid(pod)});
        }
    }
    let claims = serde_json::json!({
        "iss": spec.issuer,
        "sub": spec.subject,
        "aud": spec.audiences,
        "iat": iat,
        "nbf": iat,
        "exp": iat + spec.ttl_seconds,
        "kubernetes.io": kubernetes,
    });
    let key =
        EncodingKey::from_rsa_pem(pem_text.as_bytes()).map_err(|e| DevError::Key(e.to_string()))?;
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| DevError::Sign(e.to_string()))
}

/// A new 2048-bit RSA key in PKCS#8 PEM.
///
/// # Errors
/// Key generation failure.
pub fn generate_key() -> Result<String, DevError> {
    rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .map(|k| k.serialize_pem())
        .map_err(|e| DevError::Key(e.to_string()))
}

/// A stable, UUID-shaped pod UID derived from the pod's name, as the API server would bind a
/// real one into the token.
fn pod_uid(pod: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pod.as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
