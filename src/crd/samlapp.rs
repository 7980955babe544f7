//! `SAMLApp`: one service provider that rolegate issues signed assertions to.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretRef;

/// The audience and recipient AWS expects.
pub const AWS_SIGNIN: &str = "https://signin.aws.amazon.com/saml";
/// SAML 2.0 persistent NameID format.
pub const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";

/// A SAML 2.0 service provider that rolegate's identity provider issues assertions to. AWS is the
/// default; every field can describe another service provider.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "rolegate.dev",
    version = "v1alpha1",
    kind = "SAMLApp",
    plural = "samlapps",
    shortname = "sapp",
    status = "SAMLAppStatus",
    printcolumn = r#"{"name":"ISSUER","type":"string","jsonPath":".status.issuer"}"#,
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SAMLAppSpec {
    /// Entity ID of the identity provider, the `Issuer` of every assertion. Defaults to
    /// `urn:rolegate:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The assertion's `Audience`. AWS accepts `https://signin.aws.amazon.com/saml` and
    /// `urn:amazon:webservices`.
    #[serde(default = "aws_signin")]
    pub audience: String,
    /// The service provider's assertion consumer service URL: the Response `Destination` and the
    /// subject confirmation `Recipient`.
    #[serde(default = "aws_signin")]
    pub recipient: String,
    /// Claim name → SAML attribute name. Each claim of the signed-in identity that is named here
    /// becomes an attribute of the assertion.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mappings: BTreeMap<String, String>,
    /// Format of the `NameID`.
    #[serde(default = "persistent")]
    pub name_identifier_format: String,
    /// Claims tried in order for a person's `NameID`; the first that is present wins. Workloads
    /// always get `system:serviceaccount:<namespace>:<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name_identifier_probes: Vec<String>,
    /// Seconds an assertion stays valid after it is issued.
    #[serde(default = "default_lifetime")]
    #[schemars(range(min = 30, max = 3600))]
    pub lifetime_seconds: u32,
    /// `false` signs the Assertion, `true` signs the Response.
    #[serde(default)]
    pub sign_response: bool,
    /// XML signature algorithm.
    #[serde(default)]
    pub signature_algorithm: SignatureAlgorithm,
    /// Digest algorithm of the signature reference.
    #[serde(default)]
    pub digest_algorithm: DigestAlgorithm,
    /// The signing key and certificate.
    #[serde(default)]
    pub signing: SigningSpec,
    /// Names of the `Connection`s that may sign people in to this app. Empty allows every
    /// Connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<String>,
    /// Web origins (`scheme://host[:port]`, as a browser sends `Origin`) whose browser
    /// applications may call `/delegation` for this app: Auth0's "Allowed Web Origins", where
    /// `scheme://*.domain[:port]` allows one subdomain label in front of `domain`. A
    /// request carrying another `Origin` is refused with 403 and nothing is issued; requests
    /// without an `Origin` (curl, SDKs) are not affected. Empty allows no browser application.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Auth0 `createUpnClaim`: give a person without a `upn` claim the UPN attribute
    /// (`http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn`) made from their email.
    #[serde(default = "yes")]
    pub create_upn_claim: bool,
    /// Auth0 `passthroughClaimsWithNoMapping`: a person's claims that neither `mappings` nor
    /// Auth0's default profile mappings name still become attributes, named
    /// `http://schemas.auth0.com/<claim>` (or `<claim>` with `mapUnknownClaimsAsIs`). Names
    /// under `https://aws.amazon.com/SAML/Attributes/` are never passed through.
    #[serde(default = "yes")]
    pub passthrough_claims_with_no_mapping: bool,
    /// Auth0 `mapUnknownClaimsAsIs`: passed-through claims keep their own name instead of
    /// the `http://schemas.auth0.com/` prefix.
    #[serde(default)]
    pub map_unknown_claims_as_is: bool,
    /// Auth0 `mapIdentities`: add the person's identity as
    /// `http://schemas.auth0.com/identities/default/{provider,connection,isSocial,user_id}`.
    /// Upstream access tokens, which Auth0 adds here, are never put in an assertion.
    #[serde(default = "yes")]
    pub map_identities: bool,
    /// Auth0 `typedAttributes`: each `AttributeValue` carries `xsi:type` inferred from the
    /// claim (`xs:string`, `xs:boolean`, `xs:double`, else `xs:anyType`); `false` types every
    /// value `xs:anyType`.
    #[serde(default = "yes")]
    pub typed_attributes: bool,
    /// Auth0 `includeAttributeNameFormat`: each `Attribute` carries a `NameFormat` inferred from
    /// its name (`uri` for a URI, `basic` for an XML name, else `unspecified`); `false` leaves
    /// `NameFormat` out.
    #[serde(default = "yes")]
    pub include_attribute_name_format: bool,
    /// Auth0 `authnContextClassRef`: the assertion's `AuthnContextClassRef`. Absent: how the
    /// subject signed in (password, or
    /// `urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified`, Auth0's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authn_context_class_ref: Option<String>,
    /// Auth0 `destination`: the Response `Destination`. Absent: `recipient`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Auth0 `logout`: the service provider's single logout service. rolegate ends only its
    /// own session at `/login/signout`; it sends no `LogoutRequest`, so `sloEnabled: true`
    /// is refused (status `InvalidSettings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logout: Option<LogoutSpec>,
}

/// Auth0's `logout` setting of the SAML2 add-on.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogoutSpec {
    /// The service provider's Single Logout Service URL (Auth0 `callback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    /// Whether the service provider is told when the session ends (Auth0 `slo_enabled`).
    /// rolegate sends no logout requests, so only `false` is accepted.
    #[serde(default)]
    pub slo_enabled: bool,
}

impl SAMLAppSpec {
    /// The fields of `spec` (a SAMLApp's raw `spec`) that the CRD schema does not declare, as
    /// dotted paths (`spec.createUPNClaim`): a misspelt Auth0 setting would otherwise be
    /// dropped without a word, as the API server prunes it.
    pub fn unknown_fields(spec: &serde_json::Value) -> Vec<String> {
        use kube::CustomResourceExt as _;
        static SCHEMA: std::sync::OnceLock<Option<serde_json::Value>> = std::sync::OnceLock::new();
        let schema = SCHEMA.get_or_init(|| {
            let crd = SAMLApp::crd();
            let version = crd.spec.versions.first()?;
            let schema = version.schema.as_ref()?.open_api_v3_schema.as_ref()?;
            serde_json::to_value(schema)
                .ok()?
                .pointer("/properties/spec")
                .cloned()
        });
        let mut out = Vec::new();
        if let Some(schema) = schema {
            undeclared(spec, schema, "spec", &mut out);
        }
        out
    }

    /// The audience an app has when it sets none: AWS sign-in.
    pub fn default_audience() -> String {
        aws_signin()
    }
}

fn undeclared(
    value: &serde_json::Value,
    schema: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    let (Some(object), Some(properties)) = (
        value.as_object(),
        schema.get("properties").and_then(|p| p.as_object()),
    ) else {
        return;
    };
    for (key, child) in object {
        let at = format!("{path}.{key}");
        match properties.get(key) {
            Some(schema) => undeclared(child, schema, &at, out),
            None => out.push(at),
        }
    }
}

const fn yes() -> bool {
    true
}
fn aws_signin() -> String {
    AWS_SIGNIN.to_owned()
}
fn persistent() -> String {
    PERSISTENT.to_owned()
}
const fn default_lifetime() -> u32 {
    300
}

/// XML signature algorithm.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SignatureAlgorithm {
    /// RSA PKCS#1 v1.5 with SHA-256.
    #[default]
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    /// RSA PKCS#1 v1.5 with SHA-1. Declared for completeness; rolegate refuses to sign with it.
    #[serde(rename = "rsa-sha1")]
    RsaSha1,
}

/// Digest algorithm of the signature reference.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DigestAlgorithm {
    /// SHA-256.
    #[default]
    #[serde(rename = "sha256")]
    Sha256,
    /// SHA-1, for legacy service providers.
    #[serde(rename = "sha1")]
    Sha1,
}

/// The identity provider's signing key.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningSpec {
    /// RSA key size in bits; 2048 or larger.
    #[serde(default = "default_key_size")]
    #[schemars(range(min = 2048, max = 8192))]
    pub key_size: u32,
    /// Validity of a generated certificate, in days.
    #[serde(default = "default_validity_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub validity_days: u32,
    /// Days a new certificate is published in the metadata before it starts signing.
    #[serde(default = "default_rotation_lead_days")]
    #[schemars(range(min = 0, max = 365))]
    pub rotation_lead_days: u32,
    /// A `kubernetes.io/tls` Secret holding `tls.key` (PKCS#8 or PKCS#1 PEM) and `tls.crt`. When
    /// absent, the key and certificate are generated into a Secret in the operator namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

impl Default for SigningSpec {
    fn default() -> Self {
        Self {
            key_size: default_key_size(),
            validity_days: default_validity_days(),
            rotation_lead_days: default_rotation_lead_days(),
            secret_ref: None,
        }
    }
}

const fn default_key_size() -> u32 {
    2048
}
const fn default_validity_days() -> u32 {
    365
}
const fn default_rotation_lead_days() -> u32 {
    7
}

/// Observed state of a `SAMLApp`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SAMLAppStatus {
    /// The issuer in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Where the identity provider metadata is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_url: Option<String>,
    /// Where people start IdP-initiated sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
    /// The signing certificates and their place in the rotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateStatus>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and friends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One signing certificate.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// SHA-256 fingerprint of the DER certificate, as colon-separated hex.
    pub sha256_fingerprint: String,
    /// End of the certificate's validity, RFC 3339.
    pub not_after: String,
    /// Place in the rotation.
    pub state: CertificateState,
}

/// Place of a certificate in the rotation.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CertificateState {
    /// Signs assertions and is published.
    Active,
    /// Published, not yet signing.
    Next,
    /// Still published, no longer signing.
    Retiring,
}
