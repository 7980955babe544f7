//! PURE: a person's claims as the attributes of their assertion, the way Auth0's SAML2 add-on
//! turns a user profile into attributes: Auth0's default profile mappings overlaid by the app's
//! `mappings`, then `passthroughClaimsWithNoMapping` / `mapUnknownClaimsAsIs`,
//! `createUpnClaim` and `mapIdentities`; and the NameID from `nameIdentifierProbes`.
//!
//! One rule Auth0 does not have: no claim ever becomes an attribute under
//! `https://aws.amazon.com/SAML/Attributes/`. Those (Role, RoleSessionName, tags…) come from
//! RoleMappings, whose IAMProvider guard a claim would otherwise bypass.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Attribute, ValueKind, aws};
use crate::crd::SAMLAppSpec;

/// `http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier`.
pub const NAME_IDENTIFIER: &str =
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier";
/// `…/claims/emailaddress`.
pub const EMAIL_ADDRESS: &str =
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress";
/// `…/claims/name`.
pub const NAME: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
/// `…/claims/upn`.
pub const UPN: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn";
/// Where Auth0 puts claims no mapping names, unless `mapUnknownClaimsAsIs`.
pub const AUTH0_PREFIX: &str = "http://schemas.auth0.com/";
/// Prefix of the `mapIdentities` attributes.
pub const IDENTITY_PREFIX: &str = "http://schemas.auth0.com/identities/default/";

/// Auth0's default profile mappings (profile field → attribute), which the app's `mappings`
/// extend and override.
pub const DEFAULT_MAPPINGS: &[(&str, &str)] = &[
    ("user_id", NAME_IDENTIFIER),
    ("email", EMAIL_ADDRESS),
    ("name", NAME),
    (
        "given_name",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
    ),
    (
        "family_name",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
    ),
    ("upn", UPN),
    ("groups", "http://schemas.xmlsoap.org/claims/Group"),
];

/// The NameID probes Auth0 uses when an app lists none.
pub const DEFAULT_PROBES: &[&str] = &[NAME_IDENTIFIER, EMAIL_ADDRESS, NAME];

/// Token claims that describe the token, not the person; never part of the profile.
pub const PROTOCOL_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "azp",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "s_hash",
    "sid",
    "jti",
    "auth_time",
    "acr",
    "amr",
];

/// A signed-in person as a profile.
#[derive(Debug, Clone, Copy)]
pub struct Profile<'a> {
    /// The subject, Auth0's `user_id`.
    pub user_id: &'a str,
    /// The Connection that vouched for them.
    pub connection: &'a str,
    /// The kind of that Connection (`oidc`, `static`…), Auth0's identity `provider`.
    pub provider: &'a str,
    /// Their claims (strings, numbers, booleans and arrays of them; objects are left out, as
    /// Auth0 leaves out `user_metadata`).
    pub claims: &'a serde_json::Map<String, Value>,
}

/// A claim's values and their kind, or `None` for what cannot be an attribute (objects, null,
/// empty arrays).
fn values(value: &Value) -> Option<(Vec<String>, ValueKind)> {
    let one = |v: &Value| match v {
        Value::String(s) => Some((s.clone(), ValueKind::String)),
        Value::Bool(b) => Some((b.to_string(), ValueKind::Boolean)),
        Value::Number(n) => Some((n.to_string(), ValueKind::Double)),
        _ => None,
    };
    let items: Vec<(String, ValueKind)> = match value {
        Value::Array(a) => a.iter().filter_map(one).collect(),
        v => one(v).into_iter().collect(),
    };
    let first = items.first()?.1;
    let kind = if items.iter().all(|(_, k)| *k == first) {
        first
    } else {
        ValueKind::Any
    };
    Some((items.into_iter().map(|(v, _)| v).collect(), kind))
}

fn is_aws(name: &str) -> bool {
    name.to_ascii_lowercase()
        .starts_with(&aws::ATTRIBUTE_PREFIX.to_ascii_lowercase())
}

/// The attributes of `profile`'s assertion under `spec`'s Auth0 settings, in a stable order:
/// mapped and passed-through claims by claim name, then the UPN, then the identity.
pub fn attributes(spec: &SAMLAppSpec, profile: &Profile<'_>) -> Vec<Attribute> {
    let mut mappings: BTreeMap<&str, &str> = DEFAULT_MAPPINGS.iter().copied().collect();
    for (claim, attribute) in &spec.mappings {
        mappings.insert(claim, attribute);
    }
    let mut claims: BTreeMap<&str, &Value> = profile
        .claims
        .iter()
        .filter(|(name, _)| !PROTOCOL_CLAIMS.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str(), value))
        .collect();
    let user_id = Value::String(profile.user_id.to_owned());
    claims.insert("user_id", &user_id);

    let mut out: Vec<Attribute> = Vec::new();
    for (claim, value) in &claims {
        let name = match mappings.get(claim) {
            Some(attribute) => (*attribute).to_owned(),
            None if !spec.passthrough_claims_with_no_mapping => continue,
            None if spec.map_unknown_claims_as_is => (*claim).to_owned(),
            None => format!("{AUTH0_PREFIX}{claim}"),
        };
        // A claim named like one of AWS's attributes is not passed on under any name.
        if is_aws(claim) || is_aws(&name) || out.iter().any(|a| a.name == name) {
            continue;
        }
        if let Some((values, kind)) = values(value).filter(|(v, _)| !v.is_empty()) {
            out.push(Attribute { name, values, kind });
        }
    }
    if spec.create_upn_claim
        && !out.iter().any(|a| a.name == UPN)
        && let Some(Value::String(email)) = claims.get("email")
    {
        out.push(Attribute::single(UPN, email.clone()));
    }
    if spec.map_identities {
        let identity = |field: &str| format!("{IDENTITY_PREFIX}{field}");
        out.push(Attribute::single(identity("provider"), profile.provider));
        out.push(Attribute::single(
            identity("connection"),
            profile.connection,
        ));
        out.push(Attribute {
            name: identity("isSocial"),
            values: vec!["false".to_owned()],
            kind: ValueKind::Boolean,
        });
        out.push(Attribute::single(identity("user_id"), profile.user_id));
    }
    out
}

/// The person's NameID: the first of `nameIdentifierProbes` (Auth0's default probes when the
/// app lists none) that names an attribute of `attributes` or, as rolegate always allowed, a
/// claim; else the subject.
pub fn name_id(spec: &SAMLAppSpec, profile: &Profile<'_>, attributes: &[Attribute]) -> String {
    let probes: Vec<&str> = if spec.name_identifier_probes.is_empty() {
        DEFAULT_PROBES.to_vec()
    } else {
        spec.name_identifier_probes
            .iter()
            .map(String::as_str)
            .collect()
    };
    probes
        .iter()
        .find_map(|probe| {
            attributes
                .iter()
                .find(|a| a.name == *probe)
                .and_then(|a| a.values.first().cloned())
                .or_else(|| {
                    profile
                        .claims
                        .get(*probe)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
        })
        .unwrap_or_else(|| profile.user_id.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn spec(settings: Value) -> SAMLAppSpec {
        serde_json::from_value(settings).unwrap()
    }

    fn claims() -> serde_json::Map<String, Value> {
        json!({
            "iss": "https://op", "sub": "u-1", "aud": "web", "exp": 1, "iat": 1,
            "email": "alice@example.com", "name": "Alice", "groups": ["dev", "ops"],
            "fav_genre": "fiction", "email_verified": true, "logins": 42,
            "user_metadata": {"fav_streaming_service": "hulu"},
            "https://aws.amazon.com/SAML/Attributes/Role": "arn:aws:iam::1:role/x,arn:aws:iam::1:saml-provider/y",
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn run(settings: Value) -> Vec<Attribute> {
        let claims = claims();
        let profile = Profile {
            user_id: "u-1",
            connection: "corp",
            provider: "oidc",
            claims: &claims,
        };
        attributes(&spec(settings), &profile)
    }

    fn get<'a>(attributes: &'a [Attribute], name: &str) -> Option<&'a Attribute> {
        attributes.iter().find(|a| a.name == name)
    }

    #[test]
    fn auth0_defaults_pass_unmapped_claims_under_the_auth0_prefix() {
        let a = run(json!({}));
        assert_eq!(get(&a, NAME_IDENTIFIER).unwrap().values, ["u-1"]);
        assert_eq!(
            get(&a, EMAIL_ADDRESS).unwrap().values,
            ["alice@example.com"]
        );
        assert_eq!(
            get(&a, "http://schemas.xmlsoap.org/claims/Group")
                .unwrap()
                .values,
            ["dev", "ops"]
        );
        let genre = get(&a, "http://schemas.auth0.com/fav_genre").unwrap();
        assert_eq!(
            (genre.values.as_slice(), genre.kind),
            (&["fiction".to_owned()][..], ValueKind::String)
        );
        let verified = get(&a, "http://schemas.auth0.com/email_verified").unwrap();
        assert_eq!(verified.kind, ValueKind::Boolean);
        let logins = get(&a, "http://schemas.auth0.com/logins").unwrap();
        assert_eq!(
            (logins.values[0].as_str(), logins.kind),
            ("42", ValueKind::Double)
        );
        // Objects, protocol claims and AWS's own attributes never pass through.
        assert!(a.iter().all(|x| !x.name.contains("user_metadata")));
        assert!(get(&a, "http://schemas.auth0.com/iss").is_none());
        assert!(get(&a, "http://schemas.auth0.com/sub").is_none());
        assert!(
            a.iter().all(|x| !x.name.contains("aws.amazon.com")),
            "{a:?}"
        );
        // createUpnClaim and mapIdentities default to true.
        assert_eq!(get(&a, UPN).unwrap().values, ["alice@example.com"]);
        assert_eq!(
            get(&a, "http://schemas.auth0.com/identities/default/connection")
                .unwrap()
                .values,
            ["corp"]
        );
    }

    #[test]
    fn map_unknown_claims_as_is_keeps_the_claim_name_but_never_an_aws_name() {
        let a = run(json!({"mapUnknownClaimsAsIs": true}));
        assert_eq!(get(&a, "fav_genre").unwrap().values, ["fiction"]);
        assert!(get(&a, "http://schemas.auth0.com/fav_genre").is_none());
        assert!(a.iter().all(|x| !is_aws(&x.name)), "{a:?}");
    }

    #[test]
    fn without_passthrough_only_mapped_claims_remain() {
        let a = run(json!({
            "passthroughClaimsWithNoMapping": false, "createUpnClaim": false, "mapIdentities": false,
            "mappings": {"fav_genre": "http://schemas.auth0.com/books"},
        }));
        let names: Vec<&str> = a.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            [
                EMAIL_ADDRESS,
                "http://schemas.auth0.com/books",
                "http://schemas.xmlsoap.org/claims/Group",
                NAME,
                NAME_IDENTIFIER,
            ]
        );
    }

    #[test]
    fn the_name_id_follows_probes_over_attributes_then_claims() {
        let claims = claims();
        let profile = Profile {
            user_id: "u-1",
            connection: "corp",
            provider: "oidc",
            claims: &claims,
        };
        let s = spec(json!({}));
        let a = attributes(&s, &profile);
        assert_eq!(name_id(&s, &profile, &a), "u-1");
        let s = spec(json!({"nameIdentifierProbes": [EMAIL_ADDRESS]}));
        assert_eq!(name_id(&s, &profile, &a), "alice@example.com");
        let s = spec(json!({"nameIdentifierProbes": ["name"]}));
        assert_eq!(name_id(&s, &profile, &a), "Alice");
        let s = spec(json!({"nameIdentifierProbes": ["missing"]}));
        assert_eq!(name_id(&s, &profile, &a), "u-1");
    }

    #[test]
    fn names_get_their_name_format() {
        assert_eq!(
            super::super::name_format(UPN),
            super::super::URI_NAME_FORMAT
        );
        assert_eq!(
            super::super::name_format("urn:oid:0.9.2342.19200300.100.1.3"),
            super::super::URI_NAME_FORMAT
        );
        assert_eq!(
            super::super::name_format("mail"),
            super::super::BASIC_NAME_FORMAT
        );
        assert_eq!(
            super::super::name_format("two words"),
            super::super::UNSPECIFIED_NAME_FORMAT
        );
    }
}
