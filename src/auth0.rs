//! PURE: Auth0's SAML2 Web App add-on settings, as the dashboard shows them, turned into a
//! SAMLApp (`rolegate import auth0-addon`).
//!
//! Every key Auth0 documents is either carried over under the SAMLApp field of the same name
//! (`lifetimeInSeconds` becomes `lifetimeSeconds`) or refused with the reason; an unknown key
//! is refused by name. Mappings onto AWS's own attributes (`https://aws.amazon.com/SAML/
//! Attributes/Role`, `RoleSessionName`…) are left out: in rolegate those come from
//! RoleMappings, under the IAMProvider's guard, never from a claim.

use serde_json::{Map, Value, json};

use crate::crd::SAMLApp;
use crate::saml::{AppSettings, aws};

/// Auth0's default `nameIdentifierFormat`.
pub const AUTH0_NAME_ID_FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";
const HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// Why the settings cannot become a SAMLApp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// Not JSON (even allowing the dashboard's comments and trailing commas), or not an object.
    #[error("the add-on settings are not a JSON object: {0}")]
    NotJson(String),
    /// The resource name is not a Kubernetes name.
    #[error(
        "--name {0:?} is not a valid resource name: use lower-case letters, digits, '-' and '.', at most 253 characters"
    )]
    Name(String),
    /// Keys Auth0 does not document.
    #[error("unknown key(s) in the add-on settings: {}; rolegate knows Auth0's documented SAML2 add-on settings only", .0.join(", "))]
    Unknown(Vec<String>),
    /// A key of the wrong JSON type.
    #[error("{key} must be {want}")]
    Type {
        /// The key.
        key: String,
        /// What it must be.
        want: &'static str,
    },
    /// A setting rolegate deliberately does not support.
    #[error("{key}: {reason}")]
    Unsupported {
        /// The key (and value).
        key: String,
        /// Why, and what to do instead.
        reason: String,
    },
}

/// A SAMLApp made from add-on settings.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The SAMLApp, as it would be applied.
    pub app: SAMLApp,
    /// The YAML document: comments with the notes, then the resource.
    pub yaml: String,
    /// What was left out or differs from Auth0, one line each.
    pub notes: Vec<String>,
}

/// JSON as the Auth0 dashboard's settings box takes it: `//` and `/* */` comments (its default
/// text is all comments) and trailing commas are dropped; strings are left alone.
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => out.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                out.push(' ');
            }
            (',', _) => {
                // A comma followed (after blanks and comments) by `}` or `]` is trailing.
                let rest: String = chars.clone().collect();
                let next = strip_comments_prefix(&rest);
                if !(next.starts_with('}') || next.starts_with(']')) {
                    out.push(',');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// `text` without its leading blanks and comments.
fn strip_comments_prefix(text: &str) -> &str {
    let mut rest = text.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            return rest;
        }
    }
}

fn is_resource_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn string(key: &str, value: &Value) -> Result<String, ImportError> {
    value.as_str().map(str::to_owned).ok_or(ImportError::Type {
        key: key.to_owned(),
        want: "a string",
    })
}

fn boolean(key: &str, value: &Value) -> Result<bool, ImportError> {
    value.as_bool().ok_or(ImportError::Type {
        key: key.to_owned(),
        want: "true or false",
    })
}

fn unsupported(key: &str, reason: impl Into<String>) -> ImportError {
    ImportError::Unsupported {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// The SAMLApp `name` that `settings` (the add-on's JSON) describe.
///
/// # Errors
/// Text that is not a JSON object, a bad name, unknown keys, wrong types, and settings rolegate
/// refuses (SHA-1 signatures or digests, single logout, the HTTP-Redirect binding, signed
/// AuthnRequests), each naming the key.
pub fn import_addon(settings: &str, name: &str) -> Result<Imported, ImportError> {
    if !is_resource_name(name) {
        return Err(ImportError::Name(name.to_owned()));
    }
    let parsed: Value = serde_json::from_str(&strip_comments(settings))
        .map_err(|e| ImportError::NotJson(e.to_string()))?;
    let Value::Object(input) = parsed else {
        return Err(ImportError::NotJson(
            "the top level is not an object".into(),
        ));
    };
    let unknown: Vec<String> = input
        .keys()
        .filter(|k| !KNOWN.contains(&k.as_str()))
        .map(|k| format!("{k:?}"))
        .collect();
    if !unknown.is_empty() {
        return Err(ImportError::Unknown(unknown));
    }
    let mut spec = Map::new();
    let mut notes = Vec::new();
    for (key, value) in &input {
        let key = key.as_str();
        match key {
            "audience"
            | "recipient"
            | "issuer"
            | "destination"
            | "authnContextClassRef"
            | "nameIdentifierFormat" => {
                spec.insert(key.to_owned(), Value::String(string(key, value)?));
            }
            "createUpnClaim"
            | "passthroughClaimsWithNoMapping"
            | "mapUnknownClaimsAsIs"
            | "mapIdentities"
            | "typedAttributes"
            | "includeAttributeNameFormat"
            | "signResponse" => {
                spec.insert(key.to_owned(), Value::Bool(boolean(key, value)?));
            }
            "mappings" => {
                let Value::Object(mappings) = value else {
                    return Err(ImportError::Type {
                        key: key.to_owned(),
                        want: "an object of claim → attribute name",
                    });
                };
                let mut kept = Map::new();
                let is_aws = |name: &str| {
                    name.to_ascii_lowercase()
                        .starts_with(&aws::ATTRIBUTE_PREFIX.to_ascii_lowercase())
                };
                for (claim, attribute) in mappings {
                    let attribute = string(&format!("mappings.{claim}"), attribute)?;
                    // Either direction: the add-on writes claim → attribute, a Rule's
                    // `context.samlConfiguration.mappings` attribute → claim.
                    if is_aws(&attribute) || is_aws(claim) {
                        notes.push(format!(
                            "mappings.{claim} → {attribute} is left out: rolegate sets AWS's attributes from RoleMappings (the Auth0 Rule's job), never from a claim; see docs/auth0.md"
                        ));
                    } else {
                        kept.insert(claim.clone(), Value::String(attribute));
                    }
                }
                if !kept.is_empty() {
                    spec.insert("mappings".into(), Value::Object(kept));
                }
            }
            "nameIdentifierProbes" => {
                let probes = value
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|p| p.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or(ImportError::Type {
                        key: key.to_owned(),
                        want: "an array of strings",
                    })?;
                spec.insert(key.to_owned(), json!(probes));
            }
            "lifetimeInSeconds" => {
                let seconds = value
                    .as_u64()
                    .filter(|s| (30..=3600).contains(s))
                    .ok_or_else(|| {
                        unsupported(
                            key,
                            format!(
                                "{value} is outside 30..=3600; an assertion is only carried to the service provider, so rolegate keeps it short"
                            ),
                        )
                    })?;
                spec.insert("lifetimeSeconds".into(), json!(seconds));
            }
            "signatureAlgorithm" => match value.as_str() {
                Some("rsa-sha256") => {
                    spec.insert(key.to_owned(), json!("rsa-sha256"));
                }
                Some("rsa-sha1") => {
                    return Err(unsupported(
                        "signatureAlgorithm \"rsa-sha1\"",
                        "refused: SHA-1 signatures can be forged; remove the key or write \"rsa-sha256\" (AWS accepts it)",
                    ));
                }
                _ => {
                    return Err(ImportError::Type {
                        key: key.to_owned(),
                        want: "\"rsa-sha256\"",
                    });
                }
            },
            "digestAlgorithm" => match value.as_str() {
                Some("sha256") => {
                    spec.insert(key.to_owned(), json!("sha256"));
                }
                Some("sha1") => {
                    return Err(unsupported(
                        "digestAlgorithm \"sha1\"",
                        "refused: SHA-1 digests are collision-prone; remove the key or write \"sha256\" (AWS accepts it)",
                    ));
                }
                _ => {
                    return Err(ImportError::Type {
                        key: key.to_owned(),
                        want: "\"sha256\"",
                    });
                }
            },
            "logout" => {
                let Value::Object(logout) = value else {
                    return Err(ImportError::Type {
                        key: key.to_owned(),
                        want: "an object with callback and slo_enabled",
                    });
                };
                if let Some(other) = logout
                    .keys()
                    .find(|k| !["callback", "slo_enabled"].contains(&k.as_str()))
                {
                    return Err(ImportError::Unknown(vec![format!("\"logout.{other}\"")]));
                }
                // Auth0 notifies service providers unless slo_enabled is false.
                let slo = logout
                    .get("slo_enabled")
                    .map(|v| boolean("logout.slo_enabled", v))
                    .transpose()?
                    .unwrap_or(true);
                if slo {
                    return Err(unsupported(
                        "logout.slo_enabled",
                        "single logout is refused: rolegate ends only its own session and sends service providers no LogoutRequest; write \"slo_enabled\": false",
                    ));
                }
                let mut out = Map::new();
                if let Some(callback) = logout.get("callback") {
                    out.insert(
                        "callback".into(),
                        Value::String(string("logout.callback", callback)?),
                    );
                }
                out.insert("sloEnabled".into(), Value::Bool(false));
                spec.insert("logout".into(), Value::Object(out));
            }
            "binding" => match value.as_str() {
                Some(HTTP_POST) => {}
                Some(other) => {
                    return Err(unsupported(
                        "binding",
                        format!(
                            "{other:?} is refused: rolegate sends responses with the HTTP-POST binding only"
                        ),
                    ));
                }
                None => {
                    return Err(ImportError::Type {
                        key: key.to_owned(),
                        want: "a binding URI",
                    });
                }
            },
            "signingCert" => {
                return Err(unsupported(
                    key,
                    "refused: rolegate does not verify signed AuthnRequests; it checks an AuthnRequest's issuer and ACS against the SAMLApp instead. Remove the key",
                ));
            }
            _ => {}
        }
    }
    if !input.contains_key("nameIdentifierFormat") {
        spec.insert("nameIdentifierFormat".into(), json!(AUTH0_NAME_ID_FORMAT));
        notes.push(format!(
            "nameIdentifierFormat is absent: Auth0's default {AUTH0_NAME_ID_FORMAT} is kept"
        ));
    }
    for (key, auth0, rolegate) in [
        ("signatureAlgorithm", "rsa-sha1", "rsa-sha256"),
        ("digestAlgorithm", "sha1", "sha256"),
        ("lifetimeInSeconds", "3600", "300"),
    ] {
        if !input.contains_key(key) {
            notes.push(format!(
                "{key} is absent: rolegate uses {rolegate} where Auth0 used {auth0}"
            ));
        }
    }
    for key in ["audience", "recipient"] {
        if !input.contains_key(key) {
            notes.push(format!(
                "{key} is absent: rolegate uses AWS's https://signin.aws.amazon.com/saml, where Auth0 took it from the AuthnRequest"
            ));
        }
    }
    let resource = json!({
        "apiVersion": "rolegate.dev/v1alpha1",
        "kind": "SAMLApp",
        "metadata": {"name": name},
        "spec": spec,
    });
    let app: SAMLApp = serde_json::from_value(resource.clone())
        .map_err(|e| ImportError::NotJson(format!("the result is not a SAMLApp: {e}")))?;
    AppSettings::from_app(&app).map_err(|e| unsupported("settings", e.to_string()))?;
    let body = serde_saphyr::to_string(&resource)
        .map_err(|e| ImportError::NotJson(format!("cannot write YAML: {e}")))?;
    let mut yaml = String::from(
        "# A SAMLApp made by `rolegate import auth0-addon` from Auth0 SAML2 Web App add-on settings.\n",
    );
    for note in &notes {
        yaml.push_str("# ");
        yaml.push_str(note);
        yaml.push('\n');
    }
    yaml.push_str(&body);
    Ok(Imported { app, yaml, notes })
}

/// The keys Auth0 documents for the SAML2 Web App add-on.
pub const KNOWN: &[&str] = &[
    "audience",
    "recipient",
    "mappings",
    "createUpnClaim",
    "passthroughClaimsWithNoMapping",
    "mapUnknownClaimsAsIs",
    "mapIdentities",
    "signatureAlgorithm",
    "digestAlgorithm",
    "issuer",
    "destination",
    "lifetimeInSeconds",
    "signResponse",
    "nameIdentifierFormat",
    "nameIdentifierProbes",
    "authnContextClassRef",
    "typedAttributes",
    "includeAttributeNameFormat",
    "logout",
    "binding",
    "signingCert",
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// The settings Auth0's AWS integration tells people to paste, trailing commas and all.
    const AWS_SEED: &str = include_str!("../examples/auth0/aws-addon.json");

    #[test]
    fn the_aws_seed_becomes_a_samlapp() {
        let imported = import_addon(AWS_SEED, "aws").unwrap();
        let spec = &imported.app.spec;
        assert_eq!(spec.audience, "https://signin.aws.amazon.com/saml");
        assert!(!spec.create_upn_claim && !spec.passthrough_claims_with_no_mapping);
        assert!(!spec.map_unknown_claims_as_is && !spec.map_identities);
        assert!(spec.typed_attributes && spec.include_attribute_name_format);
        assert_eq!(spec.mappings.len(), 2);
        assert_eq!(
            spec.name_identifier_probes,
            ["http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"]
        );
        let again: SAMLApp = serde_saphyr::from_str(&imported.yaml).unwrap();
        assert_eq!(again.spec, imported.app.spec);
    }

    #[test]
    fn comments_and_trailing_commas_of_the_dashboard_are_accepted() {
        let text = "{\n  // \"audience\":  \"urn:foo\",\n  \"mappings\": {\"a\": \"b\", /* x */},\n  \"issuer\": \"urn:x//y\",\n}";
        let imported = import_addon(text, "x").unwrap();
        assert_eq!(imported.app.spec.issuer.as_deref(), Some("urn:x//y"));
        assert_eq!(imported.app.spec.mappings["a"], "b");
    }

    #[test]
    fn aws_attribute_mappings_are_left_out_with_a_note() {
        let text = r#"{"mappings": {
            "https://aws.amazon.com/SAML/Attributes/PrincipalTag:team": "team",
            "awsrole": "https://aws.amazon.com/SAML/Attributes/Role",
            "rolesessionname": "https://aws.amazon.com/SAML/Attributes/RoleSessionName",
            "email": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"}}"#;
        let imported = import_addon(text, "aws").unwrap();
        assert_eq!(imported.app.spec.mappings.len(), 1);
        assert!(imported.notes.iter().any(|n| n.starts_with(
            "mappings.awsrole → https://aws.amazon.com/SAML/Attributes/Role is left out"
        )));
        assert!(imported.yaml.contains("# mappings.rolesessionname"));
    }

    #[test]
    fn refusals_name_the_key() {
        let cases = [
            (
                r#"{"audience": "a", "bogus": 1, "other": 2}"#,
                "unknown key(s) in the add-on settings: \"bogus\", \"other\"; rolegate knows Auth0's documented SAML2 add-on settings only",
            ),
            (
                r#"{"signatureAlgorithm": "rsa-sha1"}"#,
                "signatureAlgorithm \"rsa-sha1\": refused: SHA-1 signatures can be forged; remove the key or write \"rsa-sha256\" (AWS accepts it)",
            ),
            (
                r#"{"digestAlgorithm": "sha1"}"#,
                "digestAlgorithm \"sha1\": refused: SHA-1 digests are collision-prone; remove the key or write \"sha256\" (AWS accepts it)",
            ),
            (
                r#"{"logout": {"callback": "https://sp/slo"}}"#,
                "logout.slo_enabled: single logout is refused: rolegate ends only its own session and sends service providers no LogoutRequest; write \"slo_enabled\": false",
            ),
            (
                r#"{"createUpnClaim": "yes"}"#,
                "createUpnClaim must be true or false",
            ),
            (
                r#"{"lifetimeInSeconds": 36000}"#,
                "lifetimeInSeconds: 36000 is outside 30..=3600; an assertion is only carried to the service provider, so rolegate keeps it short",
            ),
            (
                r#"{"binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"}"#,
                "binding: \"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" is refused: rolegate sends responses with the HTTP-POST binding only",
            ),
            (
                r#"{"mappings": {"groups": ["a", "b"]}}"#,
                "mappings.groups must be a string",
            ),
            (
                "[1]",
                "the add-on settings are not a JSON object: the top level is not an object",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                import_addon(text, "x").unwrap_err().to_string(),
                want,
                "{text}"
            );
        }
        assert!(matches!(
            import_addon("{}", "Bad_Name"),
            Err(ImportError::Name(_))
        ));
    }

    #[test]
    fn every_setting_is_carried_over() {
        let text = r#"{"issuer": "urn:acme", "destination": "https://sp/dest", "recipient": "https://sp/acs",
            "audience": "urn:sp", "authnContextClassRef": "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport",
            "lifetimeInSeconds": 600, "signResponse": true, "typedAttributes": false, "includeAttributeNameFormat": false,
            "signatureAlgorithm": "rsa-sha256", "digestAlgorithm": "sha256", "mapUnknownClaimsAsIs": true,
            "logout": {"callback": "https://sp/slo", "slo_enabled": false},
            "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"}"#;
        let spec = import_addon(text, "sp").unwrap().app.spec;
        assert_eq!(spec.issuer.as_deref(), Some("urn:acme"));
        assert_eq!(spec.destination.as_deref(), Some("https://sp/dest"));
        assert_eq!(spec.recipient, "https://sp/acs");
        assert_eq!(spec.audience, "urn:sp");
        assert_eq!(spec.lifetime_seconds, 600);
        assert!(
            spec.sign_response && !spec.typed_attributes && !spec.include_attribute_name_format
        );
        assert!(spec.map_unknown_claims_as_is);
        assert_eq!(
            spec.logout.unwrap().callback.as_deref(),
            Some("https://sp/slo")
        );
        assert_eq!(spec.name_identifier_format, AUTH0_NAME_ID_FORMAT);
    }
}
