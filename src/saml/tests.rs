#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::aws::{self, RoleSession, SessionError};
use super::*;
use crate::crd::SAMLAppSpec;
use crate::keys::SigningKey;

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        SigningKey::generate("urn:rolegate:test", 2048, 30, now())
            .unwrap()
            .0
    })
}

fn settings(sign_response: bool) -> AppSettings {
    AppSettings {
        issuer: "urn:rolegate:aws".into(),
        audience: "https://signin.aws.amazon.com/saml".into(),
        recipient: "https://signin.aws.amazon.com/saml".into(),
        name_id_format: crate::crd::samlapp_persistent(),
        lifetime_seconds: 300,
        sign_response,
        digest: DigestAlgorithm::Sha256,
        destination: "https://signin.aws.amazon.com/saml".into(),
        authn_context: None,
        typed_attributes: true,
        name_format: true,
    }
}

fn session() -> RoleSession {
    RoleSession {
        role_arn: "arn:aws:iam::123456789012:role/app".into(),
        provider_arn: "arn:aws:iam::123456789012:saml-provider/rolegate".into(),
        session_name: "team-a.app".into(),
        duration_seconds: 3600,
        tags: std::collections::BTreeMap::new(),
        transitive_tag_keys: vec![],
        source_identity: None,
    }
}

fn build(sign_response: bool, name_id: &str) -> Result<SignedResponse, SamlError> {
    let attributes = session().attributes();
    let content = AssertionContent {
        name_id,
        attributes: &attributes,
        authn_context: AUTHN_UNSPECIFIED,
    };
    let ids = DocumentIds {
        response: "_r".into(),
        assertion: "_a".into(),
    };
    build_response(&settings(sign_response), &content, &ids, now(), key())
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text.find(open).unwrap() + open.len();
    let end = start + text[start..].find(close).unwrap();
    &text[start..end]
}

/// Checks the signature the way a verifier does: digest of the signed element without its
/// Signature, then RSA over SignedInfo canonicalised as the apex of its own subset.
fn check_signature(xml: &str, element: &str) {
    let signature = format!(
        "<ds:Signature xmlns:ds=\"{}\">{}</ds:Signature>",
        xml::DS.uri,
        between(
            xml,
            "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">",
            "</ds:Signature>"
        )
    );
    let start = xml.find(&format!("<{element}")).unwrap();
    let close = format!("</{element}>");
    let end = xml.find(&close).unwrap() + close.len();
    let signed = xml[start..end].replacen(&signature, "", 1);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, signed.as_bytes());
    assert_eq!(
        B64.encode(digest),
        between(xml, "<ds:DigestValue>", "</ds:DigestValue>")
    );
    let signed_info = format!(
        "<ds:SignedInfo xmlns:ds=\"{}\">{}</ds:SignedInfo>",
        xml::DS.uri,
        between(xml, "<ds:SignedInfo>", "</ds:SignedInfo>")
    );
    let value = B64
        .decode(between(xml, "<ds:SignatureValue>", "</ds:SignatureValue>"))
        .unwrap();
    let cert_der = key().certificate_der().to_vec();
    let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
    let public = UnparsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        cert.public_key().subject_public_key.data.to_vec(),
    );
    public.verify(signed_info.as_bytes(), &value).unwrap();
}

#[test]
fn assertion_follows_the_aws_rules() {
    let r = build(false, "system:serviceaccount:team-a:app").unwrap();
    let xml = &r.xml;
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><samlp:Response "));
    assert_eq!(xml.matches("<saml:SubjectConfirmation ").count(), 1);
    assert!(xml.contains(
        "<saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\">\
         <saml:SubjectConfirmationData NotOnOrAfter=\"2027-01-15T08:05:00Z\" Recipient=\"https://signin.aws.amazon.com/saml\">"
    ));
    assert!(xml.contains(
        "<saml:Conditions NotBefore=\"2027-01-15T08:00:00Z\" NotOnOrAfter=\"2027-01-15T08:05:00Z\">"
    ));
    assert!(xml.contains("<saml:Audience>https://signin.aws.amazon.com/saml</saml:Audience>"));
    assert!(xml.contains("Destination=\"https://signin.aws.amazon.com/saml\""));
    assert!(xml.contains(
        "<saml:NameID Format=\"urn:oasis:names:tc:SAML:2.0:nameid-format:persistent\">system:serviceaccount:team-a:app</saml:NameID>"
    ));
    assert!(xml.contains(
        "<saml:Attribute Name=\"https://aws.amazon.com/SAML/Attributes/Role\" NameFormat=\"urn:oasis:names:tc:SAML:2.0:attrname-format:uri\">\
         <saml:AttributeValue xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"xs:string\">\
         arn:aws:iam::123456789012:role/app,arn:aws:iam::123456789012:saml-provider/rolegate</saml:AttributeValue>"
    ));
    assert_eq!(r.not_on_or_after, now() + SignedDuration::from_secs(300));
    // The signature follows the Assertion's Issuer, as the schema requires.
    assert!(xml.contains("<saml:Issuer>urn:rolegate:aws</saml:Issuer><ds:Signature "));
    assert!(xml.contains("<ds:Reference URI=\"#_a\">"));
    check_signature(xml, "saml:Assertion");
}

#[test]
fn response_signing_signs_the_whole_response() {
    let r = build(true, "system:serviceaccount:team-a:app").unwrap();
    assert!(r.xml.contains("<ds:Reference URI=\"#_r\">"));
    let issuer = "<saml:Issuer xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\">urn:rolegate:aws</saml:Issuer><ds:Signature ";
    assert!(
        r.xml.contains(issuer),
        "the signature follows the Response's Issuer"
    );
    check_signature(&r.xml, "samlp:Response");
}

#[test]
fn signing_is_deterministic_for_fixed_inputs() {
    assert_eq!(
        build(false, "a").unwrap().xml,
        build(false, "a").unwrap().xml
    );
}

#[test]
fn text_is_escaped_and_still_verifies() {
    let r = build(false, "x</saml:NameID><evil>&amp;").unwrap();
    assert!(
        r.xml
            .contains(">x&lt;/saml:NameID&gt;&lt;evil&gt;&amp;amp;</saml:NameID>")
    );
    assert!(!r.xml.contains("<evil>"));
    check_signature(&r.xml, "saml:Assertion");
}

#[test]
fn characters_xml_cannot_carry_are_refused() {
    let err = build(false, "bad\u{1}name").unwrap_err();
    assert_eq!(
        err.to_string(),
        "NameID contains a character that XML cannot carry"
    );
}

#[test]
fn rsa_sha1_is_refused() {
    let mut app = SAMLApp::new(
        "legacy",
        serde_json::from_value::<SAMLAppSpec>(serde_json::json!({
            "audience": "urn:amazon:webservices",
            "signatureAlgorithm": "rsa-sha256",
        }))
        .unwrap(),
    );
    let settings = AppSettings::from_app(&app).unwrap();
    assert_eq!(settings.issuer, "urn:rolegate:legacy");
    app.spec.signature_algorithm = SignatureAlgorithm::RsaSha1;
    let err = AppSettings::from_app(&app).unwrap_err().to_string();
    assert!(err.contains("rsa-sha1 is refused"), "{err}");
}

// Security finding 10: claims never become AWS control attributes.
#[test]
fn mappings_onto_aws_attributes_are_refused() {
    let mut app: SAMLApp = serde_json::from_value(serde_json::json!({
        "apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp",
        "metadata": {"name": "aws"}, "spec": {}
    }))
    .unwrap();
    app.spec
        .mappings
        .insert("email".into(), "https://rolegate.dev/email".into());
    assert!(AppSettings::from_app(&app).is_ok());
    for target in [
        "https://aws.amazon.com/SAML/Attributes/Role",
        "https://aws.amazon.com/SAML/Attributes/RoleSessionName",
        "https://aws.amazon.com/SAML/Attributes/PrincipalTag:team",
        "HTTPS://AWS.AMAZON.COM/SAML/Attributes/SourceIdentity",
    ] {
        app.spec.mappings.insert("groups".into(), target.into());
        let err = AppSettings::from_app(&app).unwrap_err();
        assert!(matches!(err, SamlError::ReservedAttribute { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "SAMLApp \"aws\": mappings.groups targets {target:?}; attributes under https://aws.amazon.com/SAML/Attributes/ are set by rolegate's policy only (RoleMappings and IAMProviders), never from claims"
            )
        );
    }
}

#[test]
fn metadata_lists_every_published_certificate() {
    let other = SigningKey::generate("urn:rolegate:next", 2048, 30, now())
        .unwrap()
        .0;
    let md = metadata(
        "urn:rolegate:aws",
        &[key().certificate_der(), other.certificate_der()],
        "https://idp/samlp/aws",
        PERSISTENT_FOR_TEST,
    );
    assert_eq!(md.matches("<md:KeyDescriptor use=\"signing\">").count(), 2);
    assert!(md.contains("entityID=\"urn:rolegate:aws\""));
    assert!(
        md.len() >= 1000,
        "CreateSAMLProvider needs at least 1 000 characters"
    );
    // Schema order: KeyDescriptor, NameIDFormat, SingleSignOnService.
    let key_at = md.find("<md:KeyDescriptor").unwrap();
    let format_at = md.find("<md:NameIDFormat>").unwrap();
    let sso_at = md.find("<md:SingleSignOnService").unwrap();
    assert!(key_at < format_at && format_at < sso_at);
}

const PERSISTENT_FOR_TEST: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";

#[test]
fn session_names_are_checked_and_sanitised() {
    assert!(aws::check_session_name("team-a.app").is_ok());
    assert!(matches!(
        aws::check_session_name("a"),
        Err(SessionError::SessionName { .. })
    ));
    assert!(
        aws::check_session_name(&"a".repeat(65))
            .unwrap_err()
            .to_string()
            .contains("65 characters")
    );
    assert!(
        aws::check_session_name("a b")
            .unwrap_err()
            .to_string()
            .contains("' ' is not one of")
    );
    assert_eq!(
        aws::sanitize_session_name("ns/sa name").unwrap(),
        "ns-sa-name"
    );
    assert_eq!(
        aws::sanitize_session_name(&"x".repeat(100)).unwrap().len(),
        64
    );
    assert!(
        aws::sanitize_session_name("é").is_err(),
        "one character is too short"
    );
}

#[test]
fn session_rules_name_the_broken_rule() {
    let mut s = session();
    s.duration_seconds = 899;
    assert_eq!(s.validate().unwrap_err(), SessionError::Duration(899));
    let mut s = session();
    s.tags = (0..51).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    assert!(s.validate().unwrap_err().to_string().contains("51 tags"));
    let mut s = session();
    s.tags = [("aws:x".to_owned(), "v".to_owned())].into();
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("starts with aws:")
    );
    let mut s = session();
    s.tags = [("k".to_owned(), "v".repeat(257))].into();
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("longer than 256")
    );
    let mut s = session();
    s.transitive_tag_keys = vec!["missing".into()];
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("is not a session tag")
    );
    let mut s = session();
    s.source_identity = Some("aws:me".into());
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("must not start with aws:")
    );
    let mut s = session();
    s.source_identity = Some("x".into());
    assert!(s.validate().unwrap_err().to_string().contains("2 to 64"));
}

#[test]
fn attributes_put_role_first_and_carry_tags() {
    let mut s = session();
    s.tags = [("team".to_owned(), "a".to_owned())].into();
    s.transitive_tag_keys = vec!["team".into()];
    s.source_identity = Some("me@x".into());
    let names: Vec<String> = s.attributes().into_iter().map(|a| a.name).collect();
    assert_eq!(
        names,
        vec![
            aws::ROLE.to_owned(),
            aws::ROLE_SESSION_NAME.to_owned(),
            aws::SESSION_DURATION.to_owned(),
            format!("{}team", aws::PRINCIPAL_TAG),
            aws::TRANSITIVE_TAG_KEYS.to_owned(),
            aws::SOURCE_IDENTITY.to_owned(),
        ]
    );
}

#[test]
fn name_qualifier_matches_aws() {
    assert_eq!(
        aws::name_qualifier("urn:rolegate:aws", "123456789012", "rolegate"),
        "a1QiA8XNvLid5FwBeDA1/1kuvFI="
    );
}

#[test]
fn single_logout_and_malformed_origins_are_refused_with_the_field() {
    let app = |spec: serde_json::Value| -> SAMLApp {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp",
            "metadata": {"name": "aws"}, "spec": spec
        }))
        .unwrap()
    };
    let ok = app(serde_json::json!({
        "logout": {"callback": "https://sp/slo", "sloEnabled": false},
        "allowedOrigins": ["https://app.example.com", "http://localhost:3000"],
        "destination": "https://sp/dest",
    }));
    let settings = AppSettings::from_app(&ok).unwrap();
    assert_eq!(settings.destination, "https://sp/dest");
    let err = AppSettings::from_app(&app(serde_json::json!({"logout": {"sloEnabled": true}})))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "SAMLApp \"aws\": logout.sloEnabled true is refused: rolegate ends only its own session and sends service providers no LogoutRequest; set it false or leave logout out"
    );
    let err = AppSettings::from_app(&app(
        serde_json::json!({"allowedOrigins": ["https://app.example.com/"]}),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("allowedOrigins entry \"https://app.example.com/\" is not a web origin"),
        "{err}"
    );
}
