//! PURE: SP-initiated SSO. Decodes a `SAMLRequest` (HTTP-Redirect: base64 of raw DEFLATE;
//! HTTP-POST: base64), parses the `AuthnRequest` with a real XML parser (no DTDs), and checks its
//! issuer and assertion consumer service against the SAMLApp.

use std::io::Read as _;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::saml::AppSettings;

const SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
/// The largest decoded request accepted.
const MAX_REQUEST_BYTES: u64 = 32 * 1024;

/// A SAMLRequest that is refused, and why. Messages quote only short, sanitised values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not base64, not DEFLATE, too large, or not XML.
    #[error("the SAMLRequest cannot be read: {0}")]
    Malformed(String),
    /// Not an `AuthnRequest`, or lacking what one needs.
    #[error("the SAMLRequest is not a usable AuthnRequest: {0}")]
    NotAuthnRequest(String),
    /// The issuer is not the app's service provider.
    #[error(
        "the AuthnRequest comes from {issuer:?}, which is not the service provider of SAMLApp {app:?}"
    )]
    UnknownIssuer {
        /// The issuer named.
        issuer: String,
        /// The app.
        app: String,
    },
    /// The ACS URL is not the app's recipient.
    #[error(
        "the AuthnRequest asks for the response at {acs:?}, which is not the recipient of SAMLApp {app:?}"
    )]
    ForeignAcs {
        /// The ACS URL asked for.
        acs: String,
        /// The app.
        app: String,
    },
    /// Something rolegate does not answer (e.g. another response binding).
    #[error("the AuthnRequest asks for something rolegate does not do: {0}")]
    Unsupported(String),
}

/// The parts of an `AuthnRequest` the answer depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthnRequest {
    /// `ID`: the Response's `InResponseTo`.
    pub id: String,
    /// `Issuer`: the service provider's entity ID.
    pub issuer: String,
    /// `AssertionConsumerServiceURL`, when given.
    pub acs: Option<String>,
    /// `ProtocolBinding`, when given.
    pub binding: Option<String>,
}

fn short(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

fn base64_decode(value: &str) -> Result<Vec<u8>, RequestError> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| RequestError::Malformed(format!("not base64 ({e})")))
}

fn utf8(bytes: Vec<u8>) -> Result<String, RequestError> {
    String::from_utf8(bytes).map_err(|_| RequestError::Malformed("not UTF-8".into()))
}

/// The XML of a `SAMLRequest` sent with the HTTP-Redirect binding.
///
/// # Errors
/// Not base64, not raw DEFLATE, larger than 32 KiB, or not UTF-8.
pub fn decode_redirect(saml_request: &str) -> Result<String, RequestError> {
    let compressed = base64_decode(saml_request)?;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(compressed.as_slice())
        .take(MAX_REQUEST_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| RequestError::Malformed(format!("not DEFLATE-compressed ({e})")))?;
    if out.len() as u64 > MAX_REQUEST_BYTES {
        return Err(RequestError::Malformed("larger than 32 KiB".into()));
    }
    utf8(out)
}

/// The XML of a `SAMLRequest` sent with the HTTP-POST binding.
///
/// # Errors
/// Not base64 or not UTF-8.
pub fn decode_post(saml_request: &str) -> Result<String, RequestError> {
    let bytes = base64_decode(saml_request)?;
    if bytes.len() as u64 > MAX_REQUEST_BYTES {
        return Err(RequestError::Malformed("larger than 32 KiB".into()));
    }
    utf8(bytes)
}

/// Parses an `AuthnRequest`. DTDs (and so entity expansion) are refused by the parser.
///
/// # Errors
/// Malformed XML, another root element, or a missing `ID` or `Issuer`.
pub fn parse(xml: &str) -> Result<AuthnRequest, RequestError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| {
        RequestError::Malformed(format!("not well-formed XML ({})", short(&e.to_string())))
    })?;
    let root = doc.root_element();
    if root.tag_name().namespace() != Some(SAMLP) || root.tag_name().name() != "AuthnRequest" {
        return Err(RequestError::NotAuthnRequest(format!(
            "the root element is {:?}",
            short(root.tag_name().name())
        )));
    }
    if root.attribute("Version") != Some("2.0") {
        return Err(RequestError::NotAuthnRequest("Version is not 2.0".into()));
    }
    let id = root
        .attribute("ID")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| RequestError::NotAuthnRequest("it has no ID".into()))?;
    let issuer = root
        .children()
        .find(|n| n.has_tag_name((SAML, "Issuer")))
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| RequestError::NotAuthnRequest("it has no Issuer".into()))?;
    // The ID comes back as InResponseTo; keep it to what an xs:ID can be.
    if id.len() > 256
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(RequestError::NotAuthnRequest(
            "its ID is not an xs:ID".into(),
        ));
    }
    Ok(AuthnRequest {
        id: id.to_owned(),
        issuer: issuer.to_owned(),
        acs: root
            .attribute("AssertionConsumerServiceURL")
            .map(str::to_owned),
        binding: root.attribute("ProtocolBinding").map(str::to_owned),
    })
}

/// Checks a request against the app: the issuer must be the app's audience (the service
/// provider's entity ID), any ACS URL must be the app's recipient, and the response binding
/// HTTP-POST.
///
/// # Errors
/// The first check that fails.
pub fn check(
    request: &AuthnRequest,
    app: &str,
    settings: &AppSettings,
) -> Result<(), RequestError> {
    if request.issuer != settings.audience {
        return Err(RequestError::UnknownIssuer {
            issuer: short(&request.issuer),
            app: app.to_owned(),
        });
    }
    if let Some(acs) = &request.acs
        && *acs != settings.recipient
    {
        return Err(RequestError::ForeignAcs {
            acs: short(acs),
            app: app.to_owned(),
        });
    }
    if let Some(binding) = &request.binding
        && binding != HTTP_POST
    {
        return Err(RequestError::Unsupported(format!(
            "response binding {:?}; only HTTP-POST is supported",
            short(binding)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write as _;

    use super::*;

    const SP: &str = "https://sp.example.test/metadata";
    const ACS: &str = "https://sp.example.test/acs";

    fn request(issuer: &str, acs: &str) -> String {
        format!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_abc123" Version="2.0" IssueInstant="2026-11-26T10:00:00Z" AssertionConsumerServiceURL="{acs}" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"><saml:Issuer>{issuer}</saml:Issuer></samlp:AuthnRequest>"#
        )
    }

    fn settings() -> AppSettings {
        AppSettings {
            issuer: "urn:rolegate:sp".into(),
            audience: SP.into(),
            recipient: ACS.into(),
            name_id_format: crate::crd::samlapp_persistent(),
            lifetime_seconds: 300,
            sign_response: false,
            digest: crate::crd::DigestAlgorithm::Sha256,
            destination: ACS.into(),
            authn_context: None,
            typed_attributes: true,
            name_format: true,
        }
    }

    fn deflate(xml: &str) -> String {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(xml.as_bytes()).unwrap();
        base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap())
    }

    #[test]
    fn reads_both_bindings() {
        let xml = request(SP, ACS);
        let via_redirect = parse(&decode_redirect(&deflate(&xml)).unwrap()).unwrap();
        let via_post =
            parse(&decode_post(&base64::engine::general_purpose::STANDARD.encode(&xml)).unwrap())
                .unwrap();
        assert_eq!(via_redirect, via_post);
        assert_eq!(via_redirect.id, "_abc123");
        assert_eq!(via_redirect.issuer, SP);
        assert_eq!(via_redirect.acs.as_deref(), Some(ACS));
        check(&via_redirect, "sp", &settings()).unwrap();
    }

    #[test]
    fn refuses_unknown_issuers_and_foreign_acs() {
        let evil = parse(&request("https://evil.test", ACS)).unwrap();
        assert!(matches!(
            check(&evil, "sp", &settings()),
            Err(RequestError::UnknownIssuer { .. })
        ));
        let foreign = parse(&request(SP, "https://evil.test/acs")).unwrap();
        let err = check(&foreign, "sp", &settings()).unwrap_err();
        assert!(matches!(err, RequestError::ForeignAcs { .. }));
        assert!(err.to_string().contains("https://evil.test/acs"));
    }

    #[test]
    fn refuses_what_is_not_an_authn_request() {
        assert!(matches!(
            decode_redirect("%%%"),
            Err(RequestError::Malformed(_))
        ));
        assert!(matches!(
            decode_redirect(&base64::engine::general_purpose::STANDARD.encode(b"plain")),
            Err(RequestError::Malformed(_))
        ));
        assert!(matches!(
            parse("<a/>"),
            Err(RequestError::NotAuthnRequest(_))
        ));
        let dtd = format!("<!DOCTYPE x [<!ENTITY e \"boom\">]>{}", request(SP, ACS));
        assert!(matches!(parse(&dtd), Err(RequestError::Malformed(_))));
        let no_issuer = request(SP, ACS).replace(&format!("<saml:Issuer>{SP}</saml:Issuer>"), "");
        assert!(matches!(
            parse(&no_issuer),
            Err(RequestError::NotAuthnRequest(_))
        ));
        let bad_id = request(SP, ACS).replace("_abc123", "a\"b");
        assert!(parse(&bad_id).is_err());
    }

    #[test]
    fn a_deflate_bomb_is_cut_off() {
        let huge = format!("<x>{}</x>", "a".repeat(200_000));
        assert!(matches!(
            decode_redirect(&deflate(&huge)),
            Err(RequestError::Malformed(m)) if m.contains("32 KiB")
        ));
    }
}
