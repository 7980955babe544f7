//! PURE: the identity provider's documents. Builds metadata and signed Responses; no I/O and no
//! clock (the caller passes `now`, the IDs and the signer).

pub mod aws;
pub mod profile;
mod signature;
pub mod xml;

use jiff::{SignedDuration, Timestamp};

pub use signature::{SignError, Signer, key_info};
use xml::{Element, MD, SAML, SAMLP, XS, XSI};

use crate::crd::{DigestAlgorithm, SAMLApp, SignatureAlgorithm};

/// Bearer subject confirmation method.
pub const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
/// Authentication context of a workload presenting a token.
pub const AUTHN_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified";
const URI_NAME_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri";
const BASIC_NAME_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic";
const UNSPECIFIED_NAME_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:unspecified";
const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const HTTP_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// Why a document could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SamlError {
    /// The SAMLApp asks for something rolegate will not do.
    #[error("SAMLApp {app:?}: {reason}")]
    Settings {
        /// The app.
        app: String,
        /// What is wrong.
        reason: String,
    },
    /// A claim mapping targets one of AWS's own attributes, which only the policy may set.
    #[error(
        "SAMLApp {app:?}: mappings.{claim} targets {attribute:?}; attributes under {} are set by rolegate's policy only (RoleMappings and IAMProviders), never from claims",
        aws::ATTRIBUTE_PREFIX
    )]
    ReservedAttribute {
        /// The app.
        app: String,
        /// The claim mapped.
        claim: String,
        /// The attribute it targets.
        attribute: String,
    },
    /// A value cannot be carried in XML.
    #[error("{field} contains a character that XML cannot carry")]
    InvalidText {
        /// Which value.
        field: &'static str,
    },
    /// The signer failed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// A SAMLApp's settings, with defaults applied and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSettings {
    /// IdP entity ID.
    pub issuer: String,
    /// Assertion audience.
    pub audience: String,
    /// ACS URL: `Destination` and `Recipient`.
    pub recipient: String,
    /// NameID format.
    pub name_id_format: String,
    /// Seconds an assertion is valid.
    pub lifetime_seconds: u32,
    /// Sign the Response rather than the Assertion.
    pub sign_response: bool,
    /// Reference digest.
    pub digest: DigestAlgorithm,
    /// The Response `Destination` (Auth0 `destination`; default the recipient).
    pub destination: String,
    /// `AuthnContextClassRef` of every assertion, when the app sets one.
    pub authn_context: Option<String>,
    /// `xsi:type` inferred per value (Auth0 `typedAttributes`), else `xs:anyType`.
    pub typed_attributes: bool,
    /// `NameFormat` inferred per attribute (Auth0 `includeAttributeNameFormat`), else none.
    pub name_format: bool,
}

impl AppSettings {
    /// Settings of `app`, or why rolegate refuses them.
    ///
    /// # Errors
    /// `rsa-sha1` signatures, which rolegate never produces, and a zero lifetime.
    pub fn from_app(app: &SAMLApp) -> Result<Self, SamlError> {
        let name = app.metadata.name.clone().unwrap_or_default();
        let spec = &app.spec;
        let refuse = |reason: &str| SamlError::Settings {
            app: name.clone(),
            reason: reason.to_owned(),
        };
        if spec.signature_algorithm == SignatureAlgorithm::RsaSha1 {
            return Err(refuse(
                "signatureAlgorithm rsa-sha1 is refused: SHA-1 signatures are forgeable; use rsa-sha256",
            ));
        }
        if spec.lifetime_seconds == 0 {
            return Err(refuse("lifetimeSeconds must be positive"));
        }
        if spec.logout.as_ref().is_some_and(|l| l.slo_enabled) {
            return Err(refuse(
                "logout.sloEnabled true is refused: rolegate ends only its own session and sends service providers no LogoutRequest; set it false or leave logout out",
            ));
        }
        if let Some(origin) = spec
            .allowed_origins
            .iter()
            .find(|o| crate::policy::cors::parse_allowed(o).is_none())
        {
            return Err(refuse(&format!(
                "allowedOrigins entry {origin:?} is not a web origin: write scheme://host[:port], with no path, as a browser sends Origin, or scheme://*.domain[:port] for one subdomain label"
            )));
        }
        if let Some((claim, attribute)) = spec.mappings.iter().find(|(_, attribute)| {
            attribute
                .to_ascii_lowercase()
                .starts_with(&aws::ATTRIBUTE_PREFIX.to_ascii_lowercase())
        }) {
            return Err(SamlError::ReservedAttribute {
                app: name,
                claim: claim.clone(),
                attribute: attribute.clone(),
            });
        }
        Ok(Self {
            issuer: spec
                .issuer
                .clone()
                .unwrap_or_else(|| format!("urn:rolegate:{name}")),
            audience: spec.audience.clone(),
            recipient: spec.recipient.clone(),
            name_id_format: spec.name_identifier_format.clone(),
            lifetime_seconds: spec.lifetime_seconds,
            sign_response: spec.sign_response,
            digest: spec.digest_algorithm,
            destination: spec
                .destination
                .clone()
                .unwrap_or_else(|| spec.recipient.clone()),
            authn_context: spec.authn_context_class_ref.clone(),
            typed_attributes: spec.typed_attributes,
            name_format: spec.include_attribute_name_format,
        })
    }
}

/// One SAML attribute with its values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attribute {
    /// Attribute `Name` (URI format).
    pub name: String,
    /// Values, in order.
    pub values: Vec<String>,
    /// What the values are, for `xsi:type`.
    pub kind: ValueKind,
}

/// The XML Schema type of an attribute's values, as Auth0's `typedAttributes` infers it from
/// the claim's JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ValueKind {
    /// A string: `xs:string`.
    #[default]
    String,
    /// `true` or `false`: `xs:boolean`.
    Boolean,
    /// A number: `xs:double`.
    Double,
    /// Anything else: `xs:anyType`.
    Any,
}

impl ValueKind {
    /// The `xsi:type` value.
    pub const fn xsi_type(self) -> &'static str {
        match self {
            Self::String => "xs:string",
            Self::Boolean => "xs:boolean",
            Self::Double => "xs:double",
            Self::Any => "xs:anyType",
        }
    }
}

impl Attribute {
    /// An attribute with one string value.
    pub fn single(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            values: vec![value.into()],
            kind: ValueKind::String,
        }
    }

    /// An attribute with string values.
    pub fn strings(name: impl Into<String>, values: Vec<String>) -> Self {
        Self {
            name: name.into(),
            values,
            kind: ValueKind::String,
        }
    }
}

/// The `NameFormat` Auth0 infers from an attribute's name: `uri` for an absolute URI, `basic`
/// for an XML name, `unspecified` for anything else.
pub fn name_format(name: &str) -> &'static str {
    let is_uri = name.split_once(':').is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            && !name.chars().any(char::is_whitespace)
    });
    let is_xml_name = name.starts_with(|c: char| c.is_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if is_uri {
        URI_NAME_FORMAT
    } else if is_xml_name {
        BASIC_NAME_FORMAT
    } else {
        UNSPECIFIED_NAME_FORMAT
    }
}

/// What one assertion says.
#[derive(Debug, Clone)]
pub struct AssertionContent<'a> {
    /// The subject's NameID.
    pub name_id: &'a str,
    /// Attributes in order.
    pub attributes: &'a [Attribute],
    /// `AuthnContextClassRef`.
    pub authn_context: &'a str,
}

/// Identifiers of one Response; random in production, fixed in tests.
#[derive(Debug, Clone)]
pub struct DocumentIds {
    /// `Response/@ID`.
    pub response: String,
    /// `Assertion/@ID`.
    pub assertion: String,
}

/// A signed Response ready to send.
#[derive(Debug, Clone)]
pub struct SignedResponse {
    /// The XML document, UTF-8, with an XML declaration.
    pub xml: String,
    /// End of validity of the assertion.
    pub not_on_or_after: Timestamp,
}

impl SignedResponse {
    /// The document base64-encoded, as the HTTP-POST binding and STS take it.
    pub fn to_base64(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.xml.as_bytes())
    }
}

/// SAML `xs:dateTime` in UTC with whole seconds.
pub fn saml_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn check_text(field: &'static str, value: &str) -> Result<(), SamlError> {
    if value.chars().all(xml::is_xml_char) {
        Ok(())
    } else {
        Err(SamlError::InvalidText { field })
    }
}

/// Builds and signs a `samlp:Response` carrying one `saml:Assertion`, following AWS's rules: one
/// bearer `SubjectConfirmation` with `NotOnOrAfter` and `Recipient`, an audience restriction, and
/// the attributes given. `settings.sign_response` chooses what is signed.
///
/// # Errors
/// Text XML cannot carry, or a failing signer.
pub fn build_response(
    settings: &AppSettings,
    content: &AssertionContent<'_>,
    ids: &DocumentIds,
    now: Timestamp,
    signer: &dyn Signer,
) -> Result<SignedResponse, SamlError> {
    build_response_to(settings, content, ids, None, now, signer)
}

/// [`build_response`] answering an `AuthnRequest`: `in_response_to` (the request's ID) is set on
/// the Response and on the bearer `SubjectConfirmationData`, as SP-initiated SSO requires.
///
/// # Errors
/// Text XML cannot carry, or a failing signer.
pub fn build_response_to(
    settings: &AppSettings,
    content: &AssertionContent<'_>,
    ids: &DocumentIds,
    in_response_to: Option<&str>,
    now: Timestamp,
    signer: &dyn Signer,
) -> Result<SignedResponse, SamlError> {
    check_text("NameID", content.name_id)?;
    if let Some(id) = in_response_to {
        check_text("InResponseTo", id)?;
    }
    let answering = |e: Element| match in_response_to {
        Some(id) => e.attr("InResponseTo", id),
        None => e,
    };
    for attribute in content.attributes {
        check_text("attribute name", &attribute.name)?;
        for value in &attribute.values {
            check_text("attribute value", value)?;
        }
    }
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let issued = saml_time(now);
    let not_on_or_after = now + SignedDuration::from_secs(i64::from(settings.lifetime_seconds));
    let expires = saml_time(not_on_or_after);
    let issuer = || Element::new(SAML, "Issuer").text(settings.issuer.clone());

    let attributes = content.attributes.iter().map(|a| {
        let element = Element::new(SAML, "Attribute").attr("Name", a.name.clone());
        let element = if settings.name_format {
            element.attr("NameFormat", name_format(&a.name))
        } else {
            element
        };
        let kind = if settings.typed_attributes {
            a.kind
        } else {
            ValueKind::Any
        };
        element.children(a.values.iter().map(|v| {
            Element::new(SAML, "AttributeValue")
                .declare(XS)
                .qualified_attr(XSI, "type", kind.xsi_type())
                .text(v.clone())
        }))
    });
    // `xs` is used only inside `xsi:type` values, so the signature names it inclusive.
    let inclusive = (!content.attributes.is_empty()).then_some(XS.prefix);
    let authn_context = settings
        .authn_context
        .as_deref()
        .unwrap_or(content.authn_context);
    check_text("AuthnContextClassRef", authn_context)?;
    let mut assertion = Element::new(SAML, "Assertion")
        .attr("ID", ids.assertion.clone())
        .attr("IssueInstant", issued.clone())
        .attr("Version", "2.0")
        .child(issuer())
        .child(
            Element::new(SAML, "Subject")
                .child(
                    Element::new(SAML, "NameID")
                        .attr("Format", settings.name_id_format.clone())
                        .text(content.name_id),
                )
                .child(
                    Element::new(SAML, "SubjectConfirmation")
                        .attr("Method", BEARER)
                        .child(answering(
                            Element::new(SAML, "SubjectConfirmationData")
                                .attr("NotOnOrAfter", expires.clone())
                                .attr("Recipient", settings.recipient.clone()),
                        )),
                ),
        )
        .child(
            Element::new(SAML, "Conditions")
                .attr("NotBefore", issued.clone())
                .attr("NotOnOrAfter", expires)
                .child(
                    Element::new(SAML, "AudienceRestriction")
                        .child(Element::new(SAML, "Audience").text(settings.audience.clone())),
                ),
        )
        .child(
            Element::new(SAML, "AuthnStatement")
                .attr("AuthnInstant", issued.clone())
                .attr("SessionIndex", ids.assertion.clone())
                .child(
                    Element::new(SAML, "AuthnContext")
                        .child(Element::new(SAML, "AuthnContextClassRef").text(authn_context)),
                ),
        );
    // An AttributeStatement must hold at least one Attribute (saml-schema-assertion-2.0).
    if !content.attributes.is_empty() {
        assertion = assertion.child(Element::new(SAML, "AttributeStatement").children(attributes));
    }

    if !settings.sign_response {
        signature::sign_enveloped(
            &mut assertion,
            &ids.assertion,
            1,
            settings.digest,
            inclusive,
            signer,
        )?;
    }
    let mut response = answering(Element::new(SAMLP, "Response"))
        .attr("Destination", settings.destination.clone())
        .attr("ID", ids.response.clone())
        .attr("IssueInstant", issued)
        .attr("Version", "2.0")
        .child(issuer())
        .child(
            Element::new(SAMLP, "Status")
                .child(Element::new(SAMLP, "StatusCode").attr("Value", SUCCESS)),
        )
        .child(assertion);
    if settings.sign_response {
        signature::sign_enveloped(
            &mut response,
            &ids.response,
            1,
            settings.digest,
            inclusive,
            signer,
        )?;
    }
    let body = response.canonical();
    let mut xml = String::with_capacity(body.len() + 40);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    xml.push_str(&body);
    Ok(SignedResponse {
        xml,
        not_on_or_after,
    })
}

/// IdP metadata: an `EntityDescriptor` with an `IDPSSODescriptor` that lists every published
/// signing certificate and the single sign-on endpoint. Not signed; IAM does not ask for it.
pub fn metadata(
    issuer: &str,
    certificates: &[&[u8]],
    sso_url: &str,
    name_id_format: &str,
) -> String {
    let keys = certificates.iter().map(|der| {
        Element::new(MD, "KeyDescriptor")
            .attr("use", "signing")
            .child(key_info(der))
    });
    let descriptor = Element::new(MD, "IDPSSODescriptor")
        .attr("WantAuthnRequestsSigned", "false")
        .attr("protocolSupportEnumeration", PROTOCOL)
        .children(keys)
        .child(Element::new(MD, "NameIDFormat").text(name_id_format))
        .child(
            Element::new(MD, "SingleSignOnService")
                .attr("Binding", HTTP_REDIRECT)
                .attr("Location", sso_url),
        )
        .child(
            Element::new(MD, "SingleSignOnService")
                .attr("Binding", HTTP_POST)
                .attr("Location", sso_url),
        );
    let entity = Element::new(MD, "EntityDescriptor")
        .attr("entityID", issuer)
        .child(descriptor);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>{}",
        entity.canonical()
    )
}

#[cfg(test)]
mod tests;
