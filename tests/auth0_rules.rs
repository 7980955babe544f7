//! The Auth0 AWS Rule's three forms as RoleMappings, the files of `examples/auth0/` served by
//! `rolegate serve --config` (the binary) against moto: a fixed role for a user, a
//! `{group → roleArn,providerArn}` table, and a session name from a user attribute. And the
//! pattern refused on purpose: a claim naming its own role pair grants nothing.
//!
//! The example directory is loaded as it is, except `connection.yaml`, whose issuer is the
//! test's OpenID provider instead of `https://login.example.com`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth0_support;
mod common;

use auth0_support::{CLIENT_ID, Op};
use common::{Serve, moto};
use serde_json::{Value, json};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ACCOUNT: &str = "123456789012";
const PROVIDER: &str = "arn:aws:iam::123456789012:saml-provider/auth0-migrated";

/// Copies `examples/auth0` into `config`, pointing the Connection at `issuer`.
fn example_config(config: &std::path::Path, issuer: &str) {
    std::fs::create_dir_all(config).unwrap();
    let examples = common::repo().join("examples/auth0");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = if name == "connection.yaml" {
            assert!(text.contains("https://login.example.com"));
            text.replace("https://login.example.com", issuer)
        } else {
            text
        };
        std::fs::write(config.join(name), text).unwrap();
    }
}

async fn serve(dir: &std::path::Path) -> Serve {
    Serve::start(&dir.join("config"), &dir.join("state"), &moto(), &[]).await
}

async fn delegate(server: &Serve, token: &str, role: Option<&str>) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", JWT_BEARER.to_owned()),
        ("id_token", token.to_owned()),
        ("target", "aws".to_owned()),
        ("client_id", CLIENT_ID.to_owned()),
        ("api_type", "aws".to_owned()),
    ];
    if let Some(role) = role {
        form.push(("role", role.to_owned()));
        form.push(("principal", PROVIDER.to_owned()));
    }
    let response = reqwest::Client::new()
        .post(format!("{}/delegation", server.url))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn person(op: &Op, email: &str, groups: &[&str], extra: Value) -> String {
    let mut claims = json!({
        "sub": format!("auth0|{email}"), "email": email, "email_verified": true, "groups": groups,
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    op.id_token(claims)
}

fn role(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_form_of_the_auth0_rule_works_as_a_rolemapping() {
    let op = Op::start().await;
    let dir = tempfile::tempdir().unwrap();
    example_config(&dir.path().join("config"), &op.url);
    let server = serve(dir.path()).await;

    // Form 1: a fixed role for a user.
    let alice = person(&op, "alice@example.com", &[], json!({}));
    let (status, body) = delegate(&server, &alice, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["AssumedRoleUser"]["Arn"],
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/auth0-admin/alice@example.com")
    );

    // Form 2: the group table. In both groups, carol chooses; each row grants its role.
    let carol = person(
        &op,
        "carol@example.com",
        &["developers", "operators"],
        json!({}),
    );
    let (status, body) = delegate(&server, &carol, None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("may assume 2 roles"),
        "{body}"
    );
    for name in ["auth0-developer", "auth0-operator"] {
        let (status, body) = delegate(&server, &carol, Some(&role(name))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["AssumedRoleUser"]["Arn"],
            format!("arn:aws:sts::{ACCOUNT}:assumed-role/{name}/carol@example.com")
        );
    }
    // A group with no row gets nothing, and no row is another's.
    let dan = person(&op, "dan@example.com", &["sales"], json!({}));
    let (status, body) = delegate(&server, &dan, None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = delegate(&server, &carol, Some(&role("auth0-admin"))).await;
    assert_eq!(status, 403, "{body}");

    // Form 3: the session name from the user's email.
    let erin = person(&op, "erin@example.com", &["uploaders"], json!({}));
    let (status, body) = delegate(&server, &erin, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["AssumedRoleUser"]["Arn"],
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/auth0-uploader/web-erin@example.com")
    );

    // Refused on purpose: the Auth0 pattern where a claim carries the role pair
    // (`user.awsrole = user.app_metadata.aws_role`). A claim naming the admin pair, asked for
    // by name, grants nothing: only RoleMappings, under the IAMProvider's guard, do.
    let admin_pair = format!("{},{PROVIDER}", role("auth0-admin"));
    let mallory = person(
        &op,
        "mallory@example.com",
        &[],
        json!({"awsrole": admin_pair, "https://aws.amazon.com/SAML/Attributes/Role": admin_pair}),
    );
    let (status, body) = delegate(&server, &mallory, Some(&role("auth0-admin"))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "access_denied", "{body}");
}
