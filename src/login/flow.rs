//! PURE: what the two cookies hold, how a person's claims become an identity, which roles the
//! identity may take in an app, and what the assertion says about them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::authn_request::AuthnRequest;
use crate::crd::{ClaimNames, SAMLApp};
use crate::policy::{self, RequestContext, RoleGrant, Subject};
use crate::saml::Attribute;
use crate::store::Snapshot;

/// The sign-in in progress (the short-lived flow cookie).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// The SAMLApp being signed in to.
    pub app: String,
    /// `RelayState` to return to the service provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_state: Option<String>,
    /// The AuthnRequest being answered (SP-initiated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<AuthnRequest>,
    /// The pending OpenID Connect redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcPending>,
    /// Started by an IdP-initiated GET that came from another site (or from a client that
    /// does not say): the Response is posted only after the person clicks to continue, so a
    /// link elsewhere cannot sign them in to the app with a RelayState of its choosing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirm: bool,
}

/// What the callback must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcPending {
    /// The Connection signed in through.
    pub connection: String,
    /// `state` sent to the provider.
    pub state: String,
    /// `nonce` sent to the provider.
    pub nonce: String,
    /// The PKCE verifier.
    pub verifier: String,
}

/// A signed-in person (the session cookie).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The Connection that vouched for them.
    pub connection: String,
    /// The subject, matched by RoleMapping `User` subjects.
    pub user: String,
    /// Email, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Display name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Groups, matched by RoleMapping `Group` subjects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Claims by name (strings and lists of strings), for NameID probes and attribute mappings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, Vec<String>>,
    /// The token the session's forms carry back (CSRF), drawn when the session cookie is made;
    /// empty in a session from before it existed, whose posts are refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub csrf: String,
}

/// The most claim text a session keeps beyond the identity itself, to stay inside a cookie.
const MAX_EXTRA_CLAIM_BYTES: usize = 1500;

/// A claim's values as strings: a string, each string of an array, or a number or boolean.
pub fn claim_strings(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        serde_json::Value::Number(n) => vec![n.to_string()],
        serde_json::Value::Bool(b) => vec![b.to_string()],
        _ => Vec::new(),
    }
}

/// The identity in `claims` as the Connection's claim names say.
///
/// # Errors
/// When the subject claim is missing or empty.
pub fn identity_from_claims(
    connection: &str,
    names: &ClaimNames,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<Identity, String> {
    let one = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let user = one(&names.subject).ok_or_else(|| {
        format!(
            "the identity provider's token has no {:?} claim",
            names.subject
        )
    })?;
    let groups = claims
        .get(&names.groups)
        .map(claim_strings)
        .unwrap_or_default();
    let mut kept = BTreeMap::new();
    let mut budget = MAX_EXTRA_CLAIM_BYTES;
    for (name, value) in claims {
        // Protocol claims say nothing about the person and are not kept; `sub` is, since a
        // mapping may name it.
        let protocol =
            name != "sub" && crate::saml::profile::PROTOCOL_CLAIMS.contains(&name.as_str());
        if protocol || *name == names.groups {
            continue;
        }
        let values = claim_strings(value);
        let size = name.len() + values.iter().map(String::len).sum::<usize>();
        if values.is_empty() || size > budget {
            continue;
        }
        budget -= size;
        kept.insert(name.clone(), values);
    }
    if !groups.is_empty() {
        kept.insert(names.groups.clone(), groups.clone());
    }
    Ok(Identity {
        connection: connection.to_owned(),
        user,
        email: one(&names.email),
        name: one(&names.name),
        groups,
        claims: kept,
        csrf: String::new(),
    })
}

/// What happens after sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
// `Issue` is the common outcome and lives for one request; boxing it buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum RoleStep {
    /// Sign an assertion: with this role, or with none for a service provider that is not AWS.
    Issue(Option<RoleGrant>),
    /// Ask which of these roles.
    Pick(Vec<RoleGrant>),
    /// No role is mapped; the text says why, for the person.
    NoRole(String),
    /// The role chosen is not one of theirs.
    NotYours(String),
}

/// Whether `app` signs for AWS: some IAMProvider registers it. Apps no provider names are other
/// service providers, signed in to without a role.
pub fn app_needs_role(app: &str, snapshot: &Snapshot) -> bool {
    snapshot.providers.values().any(|p| p.spec.saml_app == app)
}

/// The roles `identity` may take in `app`, and what to do with them. `chosen` is a picker
/// answer, `role-arn,provider-arn`.
pub fn role_step(
    app: &str,
    identity: &Identity,
    snapshot: &Snapshot,
    chosen: Option<&str>,
) -> RoleStep {
    if !app_needs_role(app, snapshot) {
        return RoleStep::Issue(None);
    }
    let subject = Subject::Person {
        connection: &identity.connection,
        user: &identity.user,
        groups: &identity.groups,
    };
    let decision = policy::decide(&subject, &RequestContext::default(), snapshot);
    let mut grants: Vec<RoleGrant> = decision
        .grants
        .into_iter()
        .filter(|g| g.app == app)
        .collect();
    grants.sort_by(|a, b| a.session.role_arn.cmp(&b.session.role_arn));
    grants.dedup_by(|a, b| {
        a.session.role_arn == b.session.role_arn && a.session.provider_arn == b.session.provider_arn
    });
    if grants.is_empty() {
        let mut message = format!(
            "No role is mapped to you ({}) in {app}; ask your platform team.",
            identity.user
        );
        if let Some((mapping, denial)) = decision.denials.first() {
            message.push_str(&format!(
                " RoleMapping {mapping} names you but grants nothing: {}.",
                denial.reason()
            ));
        }
        return RoleStep::NoRole(message);
    }
    if let Some(chosen) = chosen {
        return grants
            .into_iter()
            .find(|g| role_value(g) == chosen)
            .map_or_else(
                || {
                    RoleStep::NotYours(
                        "That role is not mapped to you; choose one of the roles offered.".into(),
                    )
                },
                |g| RoleStep::Issue(Some(g)),
            );
    }
    if grants.len() == 1 {
        RoleStep::Issue(grants.pop())
    } else {
        RoleStep::Pick(grants)
    }
}

/// The picker value of a grant: AWS's `role-arn,provider-arn`.
pub fn role_value(grant: &RoleGrant) -> String {
    format!("{},{}", grant.session.role_arn, grant.session.provider_arn)
}

/// The NameID and attributes of `identity`'s assertion: their profile under the app's Auth0
/// settings ([`crate::saml::profile`]: mappings, passthrough, UPN, identities and
/// `nameIdentifierProbes`) and, with a role, AWS's Role, RoleSessionName and SessionDuration
/// (and tags). `provider` is the kind of their Connection.
pub fn person_assertion(
    app: &SAMLApp,
    identity: &Identity,
    provider: &str,
    grant: Option<&RoleGrant>,
) -> (String, Vec<Attribute>) {
    // The session keeps claims as text; one value is a string, several an array.
    let claims: serde_json::Map<String, serde_json::Value> = identity
        .claims
        .iter()
        .map(|(name, values)| {
            let value = match values.as_slice() {
                [one] => serde_json::Value::String(one.clone()),
                many => many
                    .iter()
                    .cloned()
                    .map(serde_json::Value::String)
                    .collect(),
            };
            (name.clone(), value)
        })
        .collect();
    // Groups are kept beside the claims; Auth0's profile has them as `groups`.
    let mut claims = claims;
    if !identity.groups.is_empty() && !claims.contains_key("groups") {
        claims.insert(
            "groups".to_owned(),
            identity
                .groups
                .iter()
                .cloned()
                .map(serde_json::Value::String)
                .collect(),
        );
    }
    let profile = crate::saml::profile::Profile {
        user_id: &identity.user,
        connection: &identity.connection,
        provider,
        claims: &claims,
    };
    let claimed = crate::saml::profile::attributes(&app.spec, &profile);
    let name_id = crate::saml::profile::name_id(&app.spec, &profile, &claimed);
    let mut attributes = grant.map(|g| g.session.attributes()).unwrap_or_default();
    attributes.extend(claimed);
    (name_id, attributes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::store::files::load_text;

    const YAML: &str = r#"
apiVersion: rolegate.dev/v1alpha1
kind: SAMLApp
metadata: {name: aws}
spec:
  nameIdentifierProbes: [email]
  mappings: {email: "https://rolegate.dev/email"}
---
apiVersion: rolegate.dev/v1alpha1
kind: SAMLApp
metadata: {name: wiki}
spec: {audience: "https://wiki.test", recipient: "https://wiki.test/acs"}
---
apiVersion: rolegate.dev/v1alpha1
kind: IAMProvider
metadata: {name: acct}
spec:
  samlApp: aws
  accountId: "123456789012"
  providerName: rolegate
  allowedNamespaces: {matchLabels: {team: a}}
  allowedRoles: ["arn:aws:iam::123456789012:role/*"]
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {team: a}}
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {name: admin, namespace: team-a}
spec:
  provider: acct
  roleArn: arn:aws:iam::123456789012:role/admin
  subjects: [{kind: User, name: alice}]
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {name: readers, namespace: team-a}
spec:
  provider: acct
  roleArn: arn:aws:iam::123456789012:role/reader
  subjects: [{kind: Group, name: readers}]
"#;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        load_text(&mut s, std::path::Path::new("test.yaml"), YAML).unwrap();
        s
    }

    fn identity(user: &str, groups: &[&str]) -> Identity {
        let claims = serde_json::json!({
            "sub": user, "email": format!("{user}@example.test"), "name": "A Person",
            "groups": groups, "nonce": "n", "iss": "https://op.test",
        });
        let serde_json::Value::Object(claims) = claims else {
            unreachable!()
        };
        identity_from_claims("op", &ClaimNames::default(), &claims).unwrap()
    }

    #[test]
    fn maps_claims_as_the_connection_says() {
        let claims = serde_json::json!({"preferred_username": "al", "mail": "al@x.test", "roles": ["a", "b"], "sub": "123"});
        let serde_json::Value::Object(claims) = claims else {
            unreachable!()
        };
        let names = ClaimNames {
            subject: "preferred_username".into(),
            email: "mail".into(),
            name: "display".into(),
            groups: "roles".into(),
        };
        let id = identity_from_claims("op", &names, &claims).unwrap();
        assert_eq!(id.user, "al");
        assert_eq!(id.email.as_deref(), Some("al@x.test"));
        assert_eq!(id.name, None);
        assert_eq!(id.groups, ["a", "b"]);
        assert!(
            identity_from_claims("op", &ClaimNames::default(), &serde_json::Map::new()).is_err()
        );
        assert!(
            !identity("alice", &[]).claims.contains_key("nonce"),
            "protocol claims are dropped"
        );
    }

    #[test]
    fn one_role_is_issued_several_are_picked_none_is_explained() {
        let s = snapshot();
        let alice = identity("alice", &[]);
        match role_step("aws", &alice, &s, None) {
            RoleStep::Issue(Some(g)) => {
                assert_eq!(g.session.role_arn, "arn:aws:iam::123456789012:role/admin")
            }
            other => panic!("{other:?}"),
        }
        let both = identity("alice", &["readers"]);
        let RoleStep::Pick(grants) = role_step("aws", &both, &s, None) else {
            panic!()
        };
        assert_eq!(grants.len(), 2);
        let chosen = role_value(&grants[1]);
        assert!(
            matches!(role_step("aws", &both, &s, Some(&chosen)), RoleStep::Issue(Some(g)) if role_value(&g) == chosen)
        );
        assert!(matches!(
            role_step(
                "aws",
                &both,
                &s,
                Some("arn:aws:iam::123456789012:role/other,x")
            ),
            RoleStep::NotYours(_)
        ));
        let RoleStep::NoRole(message) =
            role_step("aws", &identity("mallory", &["nobody"]), &s, None)
        else {
            panic!()
        };
        assert!(message.contains("No role is mapped to you"), "{message}");
        assert!(message.contains("ask your platform team"), "{message}");
    }

    #[test]
    fn apps_no_provider_registers_need_no_role() {
        assert_eq!(
            role_step("wiki", &identity("mallory", &[]), &snapshot(), None),
            RoleStep::Issue(None)
        );
    }

    #[test]
    fn the_assertion_follows_probes_and_mappings() {
        let s = snapshot();
        let alice = identity("alice", &[]);
        let RoleStep::Issue(grant) = role_step("aws", &alice, &s, None) else {
            panic!()
        };
        let (name_id, attributes) =
            person_assertion(&s.apps["aws"], &alice, "oidc", grant.as_ref());
        assert_eq!(name_id, "alice@example.test");
        let names: Vec<&str> = attributes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names[..3],
            [
                crate::saml::aws::ROLE,
                crate::saml::aws::ROLE_SESSION_NAME,
                crate::saml::aws::SESSION_DURATION
            ]
        );
        assert_eq!(
            attributes[0].values,
            [
                "arn:aws:iam::123456789012:role/admin,arn:aws:iam::123456789012:saml-provider/rolegate"
            ]
        );
        assert!(
            attributes
                .iter()
                .any(|a| a.name == "https://rolegate.dev/email"
                    && a.values == ["alice@example.test"])
        );
        // With no role, no AWS attribute; the profile under Auth0's defaults.
        let (name_id, attributes) = person_assertion(&s.apps["wiki"], &alice, "oidc", None);
        assert_eq!(name_id, "alice");
        assert!(
            attributes
                .iter()
                .all(|a| !a.name.starts_with(crate::saml::aws::ATTRIBUTE_PREFIX))
        );
        assert!(
            attributes
                .iter()
                .any(|a| a.name == crate::saml::profile::NAME_IDENTIFIER && a.values == ["alice"])
        );
    }
}
