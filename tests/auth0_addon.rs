//! Auth0's SAML2 Web App add-on settings, pasted as users paste them for AWS and each on its
//! own, imported with `rolegate import auth0-addon`, loaded as a standalone config, and used
//! for the assertion of a real `/delegation` by a person. pysaml2 (xmlsec1 underneath),
//! configured as AWS's service provider, must accept each assertion, and its attributes must
//! be what Auth0 documents for the flag.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth0_support;
mod common;

use std::process::Command;

use auth0_support::{CLIENT_ID, Op, capturing_sts};
use common::{ACCOUNT, Harness, ROLE, run, unique, venv, write};
use serde_json::{Value, json};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SEED: &str = include_str!("../examples/auth0/aws-addon.json");
const SEED_WITH_ROLE_MAPPINGS: &str =
    include_str!("../examples/auth0/aws-addon-with-role-mappings.json");
const CLAIMS: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/";
const GROUP: &str = "http://schemas.xmlsoap.org/claims/Group";
const AWS_ROLE: &str = "https://aws.amazon.com/SAML/Attributes/Role";
const IDENTITY: &str = "http://schemas.auth0.com/identities/default/";

/// The resources around the imported SAMLApp `aws`: its IAMProvider, the OIDC Connection
/// `corp`, and a RoleMapping giving user `alice` the role.
fn around(app_yaml: &str, provider_name: &str, issuer: &str) -> String {
    format!(
        r#"{app_yaml}
---
apiVersion: rolegate.dev/v1alpha1
kind: IAMProvider
metadata: {{name: acct}}
spec:
  samlApp: aws
  accountId: "{ACCOUNT}"
  providerName: {provider_name}
  allowedNamespaces: {{matchLabels: {{team: a}}}}
  allowedRoles: ["arn:aws:iam::{ACCOUNT}:role/app-*"]
---
apiVersion: v1
kind: Namespace
metadata: {{name: team-a, labels: {{team: a}}}}
---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: corp}}
spec:
  oidc: {{issuer: "{issuer}", clientId: {CLIENT_ID}}}
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: people, namespace: team-a}}
spec:
  provider: acct
  roleArn: {ROLE}
  subjects: [{{kind: User, name: alice}}]
"#
    )
}

/// Alice's id_token: profile claims of each JSON type, an object (which Auth0 never maps), and
/// a claim that tries to choose its own AWS role.
fn alice(op: &Op) -> String {
    op.id_token(json!({
        "sub": "alice",
        "email": "alice@example.com",
        "email_verified": true,
        "name": "Alice Example",
        "given_name": "Alice",
        "groups": ["dev", "ops"],
        "fav_genre": "fiction",
        "logins": 42,
        "user_metadata": {"fav_streaming_service": "hulu"},
        AWS_ROLE: "arn:aws:iam::999999999999:role/evil,arn:aws:iam::999999999999:saml-provider/evil",
    }))
}

/// What pysaml2 made of one assertion, and the assertion itself.
struct Seen {
    sp: Value,
    xml: String,
    /// The role pair the RoleMapping grants.
    principal: String,
}

impl Seen {
    fn attr(&self, name: &str) -> Option<Vec<String>> {
        self.sp["attributes"].get(name).map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_owned())
                .collect()
        })
    }
    fn names(&self) -> Vec<String> {
        self.sp["attributes"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }
}

/// Imports `settings` as SAMLApp `aws`, serves it, has alice delegate through it, and returns
/// what pysaml2 saw (validated against `destination` when given).
async fn assertion_for(settings: &str, destination: Option<&str>) -> Seen {
    let imported = rolegate::auth0::import_addon(settings, "aws")
        .unwrap_or_else(|e| panic!("{settings}: {e}"));
    let op = Op::start().await;
    let (sts, captured) = capturing_sts().await;
    let provider = unique("addon");
    let h = Harness::start_with_sts(&around(&imported.yaml, &provider, &op.url), sts).await;
    let principal = format!("arn:aws:iam::{ACCOUNT}:saml-provider/{provider}");
    let (status, body) = h
        .delegation(&[
            ("grant_type", JWT_BEARER),
            ("id_token", &alice(&op)),
            ("target", "aws"),
            ("client_id", CLIENT_ID),
            ("role", ROLE),
            ("principal", &principal),
        ])
        .await;
    assert_eq!(status, 403, "the capturing STS refuses: {body}");
    let assertion = captured
        .lock()
        .unwrap()
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("STS was not called: {body}"));
    let metadata = h.metadata("aws").await;
    let md = write(h.dir.path(), "idp-metadata.xml", &metadata);
    let resp = write(h.dir.path(), "response.b64", &assertion);
    let mut validate = Command::new(venv().join("bin/python"));
    validate
        .arg(common::repo().join("tests/peers/sp_validate.py"))
        .arg("--idp-metadata")
        .arg(&md)
        .arg("--response")
        .arg(&resp)
        .arg("--now")
        .arg(jiff::Timestamp::now().as_second().to_string());
    if let Some(d) = destination {
        validate.args(["--destination", d]);
    }
    let (ok, out, err) = run(&mut validate);
    assert!(ok, "pysaml2 rejected the assertion for {settings}: {err}");
    use base64::Engine as _;
    let xml = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&assertion)
            .unwrap(),
    )
    .unwrap();
    Seen {
        sp: serde_json::from_str(&out).unwrap(),
        xml,
        principal: format!("{ROLE},{principal}"),
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text.find(open).unwrap() + open.len();
    let end = start + text[start..].find(close).unwrap();
    &text[start..end]
}

/// Whatever the settings, AWS's attributes are the RoleMapping's, never the claim's.
fn assert_role_from_the_mapping(seen: &Seen) {
    assert_eq!(
        seen.attr(AWS_ROLE).unwrap(),
        std::slice::from_ref(&seen.principal),
        "{}",
        seen.sp
    );
    assert!(
        seen.attr("http://schemas.auth0.com/https://aws.amazon.com/SAML/Attributes/Role")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_seed_settings_give_the_attributes_auth0_gave() {
    let seen = assertion_for(SEED, None).await;
    assert_role_from_the_mapping(&seen);
    // nameIdentifierProbes: the email address.
    assert_eq!(seen.sp["name_id"], "alice@example.com", "{}", seen.sp);
    assert_eq!(
        seen.sp["name_id_format"],
        "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
    );
    assert_eq!(
        seen.attr(&format!("{CLAIMS}emailaddress")).unwrap(),
        ["alice@example.com"]
    );
    assert_eq!(
        seen.attr(&format!("{CLAIMS}name")).unwrap(),
        ["Alice Example"]
    );
    // Auth0's default profile mappings still apply beside the pasted ones.
    assert_eq!(
        seen.attr(&format!("{CLAIMS}nameidentifier")).unwrap(),
        ["alice"]
    );
    assert_eq!(seen.attr(&format!("{CLAIMS}givenname")).unwrap(), ["Alice"]);
    assert_eq!(seen.attr(GROUP).unwrap(), ["dev", "ops"]);
    // passthroughClaimsWithNoMapping, createUpnClaim and mapIdentities are false.
    let names = seen.names();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("http://schemas.auth0.com/")),
        "{names:?}"
    );
    assert!(seen.attr(&format!("{CLAIMS}upn")).is_none());
    // typedAttributes and includeAttributeNameFormat keep Auth0's default, true.
    assert_eq!(
        seen.sp["value_types"][GROUP],
        json!(["xs:string", "xs:string"])
    );
    assert_eq!(
        seen.sp["name_formats"][GROUP],
        "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_role_mappings_in_the_settings_give_way_to_the_rolemapping() {
    let seen = assertion_for(SEED_WITH_ROLE_MAPPINGS, None).await;
    // Role and RoleSessionName are the RoleMapping's, not the claims' `awsRole`/`awsRoleSession`.
    assert_role_from_the_mapping(&seen);
    assert_eq!(
        seen.attr("https://aws.amazon.com/SAML/Attributes/RoleSessionName")
            .unwrap(),
        ["alice"]
    );
    assert_eq!(seen.sp["name_id"], "alice@example.com");
    assert_eq!(
        seen.attr(&format!("{CLAIMS}emailaddress")).unwrap(),
        ["alice@example.com"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_setting_on_its_own_has_auth0s_documented_effect() {
    // Auth0's defaults: unmapped claims pass through under http://schemas.auth0.com/, typed;
    // a UPN from the email; the identity.
    let seen = assertion_for("{}", None).await;
    assert_role_from_the_mapping(&seen);
    assert_eq!(
        seen.attr("http://schemas.auth0.com/fav_genre").unwrap(),
        ["fiction"]
    );
    assert_eq!(
        seen.sp["value_types"]["http://schemas.auth0.com/logins"],
        json!(["xs:double"])
    );
    // pysaml2 reads an xs:double as a float; the document carries the claim's own text.
    assert_eq!(
        seen.attr("http://schemas.auth0.com/logins").unwrap(),
        ["42.0"]
    );
    assert!(
        seen.xml
            .contains("xsi:type=\"xs:double\">42</saml:AttributeValue>")
    );
    assert_eq!(
        seen.sp["value_types"]["http://schemas.auth0.com/email_verified"],
        json!(["xs:boolean"])
    );
    assert!(seen.names().iter().all(|n| !n.contains("user_metadata")));
    assert!(seen.attr("http://schemas.auth0.com/iss").is_none());
    assert_eq!(
        seen.attr(&format!("{CLAIMS}upn")).unwrap(),
        ["alice@example.com"]
    );
    assert_eq!(
        seen.attr(&format!("{IDENTITY}connection")).unwrap(),
        ["corp"]
    );
    assert_eq!(seen.attr(&format!("{IDENTITY}provider")).unwrap(), ["oidc"]);
    assert_eq!(seen.attr(&format!("{IDENTITY}user_id")).unwrap(), ["alice"]);
    assert_eq!(
        seen.attr(&format!("{IDENTITY}isSocial")).unwrap(),
        ["false"]
    );
    // Auth0's default NameID format.
    assert_eq!(
        seen.sp["name_id_format"],
        "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
    );
    assert_eq!(
        seen.sp["authn_context"],
        "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified"
    );

    let seen = assertion_for(r#"{"passthroughClaimsWithNoMapping": false}"#, None).await;
    assert!(seen.attr("http://schemas.auth0.com/fav_genre").is_none());
    assert_eq!(
        seen.attr(&format!("{CLAIMS}emailaddress")).unwrap(),
        ["alice@example.com"]
    );
    assert!(seen.attr(&format!("{CLAIMS}upn")).is_some());

    // As is: the claim's own name, and a basic NameFormat for a plain name; a claim named like
    // AWS's Role still never becomes one.
    let seen = assertion_for(r#"{"mapUnknownClaimsAsIs": true}"#, None).await;
    assert_role_from_the_mapping(&seen);
    assert_eq!(seen.attr("fav_genre").unwrap(), ["fiction"]);
    assert!(seen.attr("http://schemas.auth0.com/fav_genre").is_none());
    assert_eq!(
        seen.sp["name_formats"]["fav_genre"],
        "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
    );

    let seen = assertion_for(r#"{"createUpnClaim": false}"#, None).await;
    assert!(seen.attr(&format!("{CLAIMS}upn")).is_none());
    assert!(seen.attr("http://schemas.auth0.com/fav_genre").is_some());

    let seen = assertion_for(r#"{"mapIdentities": false}"#, None).await;
    assert!(seen.names().iter().all(|n| !n.starts_with(IDENTITY)));
    assert!(seen.attr(&format!("{CLAIMS}upn")).is_some());

    let seen = assertion_for(r#"{"typedAttributes": false}"#, None).await;
    let types = seen.sp["value_types"].as_object().unwrap();
    assert!(!types.is_empty());
    for (name, t) in types {
        assert!(
            t.as_array().unwrap().iter().all(|t| t == "xs:anyType"),
            "{name}: {t}"
        );
    }

    let seen = assertion_for(r#"{"includeAttributeNameFormat": false}"#, None).await;
    let formats = seen.sp["name_formats"].as_object().unwrap();
    // An absent NameFormat is `unspecified` (SAML core §2.7.3.1), as pysaml2 reports it.
    assert!(
        formats
            .values()
            .all(|f| f == "urn:oasis:names:tc:SAML:2.0:attrname-format:unspecified"),
        "{formats:?}"
    );
    assert!(!seen.xml.contains("NameFormat="));

    let ppt = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport";
    let seen = assertion_for(&format!(r#"{{"authnContextClassRef": "{ppt}"}}"#), None).await;
    assert_eq!(seen.sp["authn_context"], ppt);

    let to = "https://signin.aws.amazon.com/saml?SAMLSP=rolegate";
    let seen = assertion_for(&format!(r#"{{"destination": "{to}"}}"#), Some(to)).await;
    assert!(
        seen.xml
            .contains(&format!("Destination=\"{}\"", to.replace('&', "&amp;")))
    );
    assert!(
        seen.xml
            .contains("Recipient=\"https://signin.aws.amazon.com/saml\"")
    );

    let seen = assertion_for(r#"{"lifetimeInSeconds": 120}"#, None).await;
    let conditions = between(&seen.xml, "<saml:Conditions ", ">");
    let at = |attr: &str| -> i64 {
        between(conditions, &format!("{attr}=\""), "\"")
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second()
    };
    assert_eq!(at("NotOnOrAfter") - at("NotBefore"), 120);

    let seen = assertion_for(r#"{"signResponse": true}"#, None).await;
    assert_eq!(seen.sp["signed"], "response");
    let seen = assertion_for(r#"{"signResponse": false}"#, None).await;
    assert_eq!(seen.sp["signed"], "assertion");

    let seen = assertion_for(
        &format!(r#"{{"nameIdentifierProbes": ["{CLAIMS}emailaddress"]}}"#),
        None,
    )
    .await;
    assert_eq!(seen.sp["name_id"], "alice@example.com");

    let email_format = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
    let seen = assertion_for(
        &format!(r#"{{"nameIdentifierFormat": "{email_format}"}}"#),
        None,
    )
    .await;
    assert_eq!(seen.sp["name_id_format"], email_format);

    let seen = assertion_for(
        r#"{"mappings": {"fav_genre": "http://schemas.auth0.com/books"}}"#,
        None,
    )
    .await;
    assert_eq!(
        seen.attr("http://schemas.auth0.com/books").unwrap(),
        ["fiction"]
    );
    assert!(seen.attr("http://schemas.auth0.com/fav_genre").is_none());

    let seen = assertion_for(
        r#"{"signatureAlgorithm": "rsa-sha256", "digestAlgorithm": "sha256", "issuer": "urn:acme:idp",
            "logout": {"callback": "https://sp.test/slo", "slo_enabled": false},
            "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"}"#,
        None,
    )
    .await;
    assert_eq!(seen.sp["issuer"], "urn:acme:idp");
    assert!(
        seen.xml
            .contains("Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"")
    );
}

#[test]
fn the_cli_turns_the_seed_into_a_samlapp_the_crd_schema_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let seed = common::repo().join("examples/auth0/aws-addon-with-role-mappings.json");
    let out = Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args(["import", "auth0-addon"])
        .arg(&seed)
        .args(["--name", "aws"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(
            "note: mappings.awsRole → https://aws.amazon.com/SAML/Attributes/Role is left out"
        ),
        "{stderr}"
    );
    assert!(yaml.contains(
        "# mappings.awsRoleSession → https://aws.amazon.com/SAML/Attributes/RoleSessionName is left out"
    ));
    assert!(!yaml.contains("  awsRole"), "{yaml}");

    // The seed as the docs print it (trailing commas and all): the README shows exactly this
    // output.
    let out = Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args(["import", "auth0-addon"])
        .arg(common::repo().join("examples/auth0/aws-addon.json"))
        .args(["--name", "aws"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let expected =
        std::fs::read_to_string(common::repo().join("examples/auth0/aws-samlapp.yaml")).unwrap();
    assert_eq!(yaml, expected, "examples/auth0/aws-samlapp.yaml is stale");
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```json\n{}\n```", SEED.trim_end())),
        "the README's seed JSON is not examples/auth0/aws-addon.json"
    );
    assert!(
        readme.contains(&format!("```yaml\n{}\n```", yaml.trim_end())),
        "the README's SAMLApp is not the import's output"
    );

    // Every field is in the CRD's schema (none would be pruned) and the schema validates.
    let doc = write(dir.path(), "aws.yaml", &yaml);
    let check = r#"
import sys, yaml, jsonschema
crd = yaml.safe_load(open(sys.argv[1]))
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
doc = yaml.safe_load(open(sys.argv[2]))
def declared(value, schema, path):
    if isinstance(value, dict) and "properties" in schema:
        for k, v in value.items():
            if k not in schema["properties"]:
                sys.exit(f"{path}.{k} is not in the CRD schema")
            declared(v, schema["properties"][k], f"{path}.{k}")
declared(doc["spec"], schema["properties"]["spec"], "spec")
jsonschema.validate(doc, schema)
print("ok")
"#;
    let (ok, out, err) = run(Command::new(venv().join("bin/python"))
        .args(["-c", check])
        .arg(common::repo().join("crds/samlapps.rolegate.dev.yaml"))
        .arg(&doc));
    assert!(ok && out.trim() == "ok", "{out}{err}");

    // Refused settings fail, naming the key, and print no resource.
    let bad = write(
        dir.path(),
        "bad.json",
        r#"{"signatureAlgorithm": "rsa-sha1", "audience": "x"}"#,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args(["import", "auth0-addon"])
        .arg(&bad)
        .args(["--name", "aws"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "rolegate: signatureAlgorithm \"rsa-sha1\": refused: SHA-1 signatures can be forged; remove the key or write \"rsa-sha256\" (AWS accepts it)"
    );
}
