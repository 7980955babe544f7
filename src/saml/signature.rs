//! Enveloped XML signatures (exclusive c14n, RSA-SHA256) over elements built with [`Element`].

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::xml::{DS, EC, Element};
use crate::crd::DigestAlgorithm;

const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";

/// Something that signs with RSA PKCS#1 v1.5 SHA-256 and has a certificate for it.
///
/// The core never touches key material: tests pass a fixed key, the server a loaded one.
pub trait Signer: Send + Sync {
    /// RSA-SHA256 signature of `message`.
    ///
    /// # Errors
    /// When the key cannot sign, which for a loaded RSA key means an internal failure.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
    /// The DER X.509 certificate published for this key.
    fn certificate_der(&self) -> &[u8];
}

/// Signing failed inside the key.
#[derive(Debug, thiserror::Error)]
#[error("signing failed: {0}")]
pub struct SignError(pub String);

/// Digest of `data` under `alg`.
fn digest_b64(alg: DigestAlgorithm, data: &[u8]) -> (String, &'static str) {
    let (algorithm, uri) = match alg {
        DigestAlgorithm::Sha256 => (&digest::SHA256, SHA256),
        DigestAlgorithm::Sha1 => (&digest::SHA1_FOR_LEGACY_USE_ONLY, SHA1),
    };
    (B64.encode(digest::digest(algorithm, data)), uri)
}

/// Signs `target` in place: computes the digest of its canonical form, signs the canonical
/// `SignedInfo`, and inserts the `ds:Signature` as child number `position` (SAML requires it
/// right after `Issuer`).
///
/// # Errors
/// When the signer fails.
pub fn sign_enveloped(
    target: &mut Element,
    id: &str,
    position: usize,
    digest_alg: DigestAlgorithm,
    inclusive_prefixes: Option<&str>,
    signer: &dyn Signer,
) -> Result<(), SignError> {
    let (digest_value, digest_uri) = digest_b64(digest_alg, target.canonical().as_bytes());
    let signed_info = Element::new(DS, "SignedInfo")
        .child(Element::new(DS, "CanonicalizationMethod").attr("Algorithm", EXC_C14N))
        .child(Element::new(DS, "SignatureMethod").attr("Algorithm", RSA_SHA256))
        .child(
            Element::new(DS, "Reference")
                .attr("URI", format!("#{id}"))
                .child(
                    Element::new(DS, "Transforms")
                        .child(Element::new(DS, "Transform").attr("Algorithm", ENVELOPED))
                        .child(exc_c14n_transform(inclusive_prefixes)),
                )
                .child(Element::new(DS, "DigestMethod").attr("Algorithm", digest_uri))
                .child(Element::new(DS, "DigestValue").text(digest_value)),
        );
    // As the apex of its own subset, SignedInfo carries the ds declaration in its canonical
    // form; inside ds:Signature it inherits it. Both are what a verifier computes.
    let signature_value = B64.encode(signer.sign(signed_info.canonical().as_bytes())?);
    let signature = Element::new(DS, "Signature")
        .child(signed_info)
        .child(Element::new(DS, "SignatureValue").text(signature_value))
        .child(key_info(signer.certificate_der()));
    target.insert_child(position, signature);
    Ok(())
}

/// The exclusive c14n Transform, listing `prefixes` (space-separated) as `InclusiveNamespaces`
/// when some: prefixes used only inside attribute values, such as `xs` in `xsi:type`.
fn exc_c14n_transform(prefixes: Option<&str>) -> Element {
    let transform = Element::new(DS, "Transform").attr("Algorithm", EXC_C14N);
    match prefixes {
        Some(list) => {
            transform.child(Element::new(EC, "InclusiveNamespaces").attr("PrefixList", list))
        }
        None => transform,
    }
}

/// `ds:KeyInfo` carrying one certificate.
pub fn key_info(cert_der: &[u8]) -> Element {
    Element::new(DS, "KeyInfo").child(
        Element::new(DS, "X509Data")
            .child(Element::new(DS, "X509Certificate").text(B64.encode(cert_der))),
    )
}
