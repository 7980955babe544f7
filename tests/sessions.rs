//! Security issue 9, findings 1, 2 and 10, end to end: every authorisation check runs before the
//! credential cache, and the cache key covers everything that shapes a session. Two real
//! OpenID providers (`oidc-provider`) whose users share a subject, pods of one service account
//! with `sessionName: "{pod}"`, and a mapping edited while its sessions are cached, all against
//! moto's STS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod login_support;

use common::{ACCOUNT, Harness, ISSUER, ROLE, unique};
use login_support::{Agent, CLIENT_ID, CLIENT_SECRET, Peer, free_port, op_sign_in_to, param};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const CALLBACK: &str = "http://127.0.0.1:9/callback";
const PEOPLE_ROLE: &str = "arn:aws:iam::123456789012:role/app-people";

fn start_op() -> Peer {
    loop {
        if let Some(op) = login_support::start_op(free_port(), CALLBACK) {
            return op;
        }
    }
}

fn issuer(op: &Peer) -> String {
    op.ready["issuer"].as_str().unwrap().to_owned()
}

/// Signs `user` in at `op` with the authorization-code flow (PKCE) and returns the id_token,
/// exactly as a legacy app would obtain the token it sends to `/delegation`.
async fn id_token(op: &Peer, user: &str, password: &str) -> String {
    let issuer = issuer(op);
    let verifier = "a-pkce-verifier-long-enough-for-rfc-7636-at-43-characters";
    let challenge = {
        use base64::Engine as _;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    };
    let mut authorize = reqwest::Url::parse(&format!("{issuer}/auth")).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", CALLBACK)
        .append_pair("scope", "openid email profile groups")
        .append_pair("state", "s")
        .append_pair("nonce", "n")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let mut agent = Agent::new();
    let landed = op_sign_in_to(&mut agent, authorize.as_str(), user, password, CALLBACK).await;
    let code = param(&landed, "code").unwrap_or_else(|| panic!("no code in {landed}"));
    let tokens: serde_json::Value = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no id_token: {tokens}"))
        .to_owned()
}

/// The SAMLApp `aws` (with `app_spec`), the IAMProvider `acct` registering it as
/// `provider_name` for roles `app-*` of namespaces labelled `team=a`, and the namespace `team-a`.
fn account(provider_name: &str, app_spec: &str) -> String {
    format!(
        r#"
apiVersion: rolegate.dev/v1alpha1
kind: SAMLApp
metadata: {{name: aws}}
spec: {app_spec}
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
"#
    )
}

/// Two oidc Connections, `corp` and `partner`, each with its own real OpenID provider whose
/// user `alice` has the subject `alice`; the SAMLApp lets only `corp` in, and a mapping grants
/// the user `alice` (from any Connection the app allows) a role.
fn two_connections(corp: &str, partner: &str, provider_name: &str, pinned: bool) -> String {
    let connection = if pinned { ", connection: corp" } else { "" };
    let allowed = if pinned { "[corp, partner]" } else { "[corp]" };
    let account = account(provider_name, &format!("{{connections: {allowed}}}"));
    format!(
        r#"{account}---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: corp}}
spec:
  oidc: {{issuer: "{corp}", clientId: {CLIENT_ID}, clientSecretRef: {{name: op-client}}}}
---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: partner}}
spec:
  oidc: {{issuer: "{partner}", clientId: {CLIENT_ID}, clientSecretRef: {{name: op-client}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: op-client, namespace: rolegate}}
stringData: {{clientSecret: {CLIENT_SECRET}}}
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: people, namespace: team-a}}
spec:
  provider: acct
  roleArn: {PEOPLE_ROLE}
  subjects: [{{kind: User, name: alice{connection}}}]
"#
    )
}

async fn delegate(h: &Harness, token: &str) -> (u16, serde_json::Value) {
    h.delegation(&[
        ("grant_type", JWT_BEARER),
        ("id_token", token),
        ("target", "aws"),
        ("client_id", CLIENT_ID),
    ])
    .await
}

/// What must not move when a request is refused: signatures, STS calls, cached sessions.
fn counters(h: &Harness) -> (f64, f64, u64) {
    (
        h.metric("rolegate_assertions_signed_total"),
        h.metric("rolegate_sts_calls_total"),
        h.state.issuer.cache.len(),
    )
}

async fn settle(h: &Harness) {
    h.state.issuer.cache.run_pending_tasks().await;
}

// Finding 1: a person of Connection B whose subject equals a Connection A user's does not
// receive A's cached credentials: the SAMLApp's `connections` rule runs before the cache.
#[tokio::test]
async fn a_user_of_another_connection_with_the_same_subject_gets_no_cached_credentials() {
    let (corp, partner) = (start_op(), start_op());
    let (corp_token, partner_token) = (
        id_token(&corp, "alice", "alice-pw").await,
        id_token(&partner, "alice", "alice-pw").await,
    );
    let h = Harness::start(&two_connections(
        &issuer(&corp),
        &issuer(&partner),
        &unique("two-ops"),
        false,
    ))
    .await;
    let (status, body) = delegate(&h, &corp_token).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["AssumedRoleUser"]["Arn"]
            .as_str()
            .unwrap()
            .ends_with("/app-people/alice"),
        "{body}"
    );
    settle(&h).await;
    let before = counters(&h);
    assert_eq!(before.2, 1);

    let (status, body) = delegate(&h, &partner_token).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "access_denied", "{body}");
    assert_eq!(
        body["error_description"],
        "RoleMapping team-a/people names user \"alice\" of connection \"partner\" but grants nothing: SAMLApp \"aws\" does not allow connection \"partner\" (ConnectionNotAllowed)"
    );
    assert!(body.get("Credentials").is_none());
    settle(&h).await;
    assert_eq!(
        counters(&h),
        before,
        "nothing signed, sent to STS or cached"
    );
}

// Finding 1: a subject pinned to its Connection (`connection:`) matches no one else, even where
// the SAMLApp lets both Connections in.
#[tokio::test]
async fn a_subject_pinned_to_its_connection_matches_only_that_connection() {
    let (corp, partner) = (start_op(), start_op());
    let (corp_token, partner_token) = (
        id_token(&corp, "alice", "alice-pw").await,
        id_token(&partner, "alice", "alice-pw").await,
    );
    let h = Harness::start(&two_connections(
        &issuer(&corp),
        &issuer(&partner),
        &unique("pinned"),
        true,
    ))
    .await;
    let (status, body) = delegate(&h, &corp_token).await;
    assert_eq!(status, 200, "{body}");
    settle(&h).await;
    let before = counters(&h);
    let (status, body) = delegate(&h, &partner_token).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error_description"],
        "no RoleMapping grants user \"alice\" of connection \"partner\" a role through SAMLApp \"aws\""
    );
    settle(&h).await;
    assert_eq!(counters(&h), before);
}

fn workloads(provider_name: &str, session_name: &str, tags: &str) -> String {
    let account = account(provider_name, "{}");
    format!(
        r#"{account}---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: k8s}}
spec:
  kubernetes: {{issuer: "{ISSUER}", audiences: [rolegate], jwksUri: "file:jwks.json"}}
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: app, namespace: team-a}}
spec:
  provider: acct
  roleArn: {ROLE}
  sessionName: "{session_name}"
  sessionTags: {tags}
  subjects: [{{kind: ServiceAccount, name: app}}]
"#
    )
}

// Finding 1: two pods of one service account with `sessionName: "{pod}"` get two sessions,
// each named after its own pod, through `/v1/credentials`.
#[tokio::test]
async fn two_pods_of_one_service_account_get_their_own_sessions() {
    let h = Harness::start(&workloads(&unique("pods"), "{pod}", "{}")).await;
    let subject = "system:serviceaccount:team-a:app";
    let web = h.pod_token(subject, &["rolegate"], 3600, "web-5f7c9");
    let worker = h.pod_token(subject, &["rolegate"], 3600, "worker-8d2k1");
    let (status, first) = h.credentials(&web, None).await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = h.credentials(&worker, None).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(first["AccessKeyId"], second["AccessKeyId"]);
    settle(&h).await;
    assert_eq!(h.state.issuer.cache.len(), 2);
    // The assumed-role ARN (what CloudTrail records) ends with each pod's own name: ask moto.
    for (creds, pod) in [(&first, "web-5f7c9"), (&second, "worker-8d2k1")] {
        let arn = caller_arn(creds).await;
        assert!(
            arn.ends_with(&format!(":assumed-role/app-reader/{pod}")),
            "{arn} is not {pod}'s session"
        );
    }
    // The same pod again is served from the cache.
    let (_, again) = h.credentials(&web, None).await;
    assert_eq!(again["AccessKeyId"], first["AccessKeyId"]);
}

/// `sts:GetCallerIdentity` with `creds`, through the unmodified AWS CLI against moto.
async fn caller_arn(creds: &serde_json::Value) -> String {
    let output = tokio::process::Command::new(common::venv().join("bin/aws"))
        .args(["sts", "get-caller-identity", "--output", "json"])
        .env("AWS_ENDPOINT_URL", common::moto())
        .env("AWS_ACCESS_KEY_ID", creds["AccessKeyId"].as_str().unwrap())
        .env(
            "AWS_SECRET_ACCESS_KEY",
            creds["SecretAccessKey"].as_str().unwrap(),
        )
        .env("AWS_SESSION_TOKEN", creds["Token"].as_str().unwrap())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let identity: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    identity["Arn"].as_str().unwrap().to_owned()
}

// Finding 1: a mapping edited while its session is cached is not served from the old entry:
// the new `sessionTags` shape a new session at once.
#[tokio::test]
async fn an_edited_mapping_is_not_served_from_the_old_session() {
    let provider_name = unique("edited");
    let h = Harness::start(&workloads(
        &provider_name,
        "{namespace}.{serviceAccount}",
        "{team: payments}",
    ))
    .await;
    let token = h.sa_token("team-a", "app");
    let (status, before) = h.credentials(&token, None).await;
    assert_eq!(status, 200, "{before}");
    let mut snapshot = rolegate::store::Snapshot::default();
    let path = h.dir.path().join("config/resources.yaml");
    rolegate::store::files::load_text(
        &mut snapshot,
        &path,
        &workloads(
            &provider_name,
            "{namespace}.{serviceAccount}",
            "{team: ledger}",
        ),
    )
    .unwrap();
    h.state.store.replace(snapshot);
    let (status, after) = h.credentials(&token, None).await;
    assert_eq!(status, 200, "{after}");
    assert_ne!(
        before["AccessKeyId"], after["AccessKeyId"],
        "the session tagged team=payments must not be served once the mapping says ledger"
    );
}

// Finding 2: a tenant cannot tag its sessions with a reserved key (here another namespace's),
// and nothing is signed for it.
#[tokio::test]
async fn a_mapping_setting_a_reserved_tag_is_refused_with_invalid_tags() {
    let h = Harness::start(&workloads(
        &unique("reserved"),
        "{namespace}.{serviceAccount}",
        "{kubernetes-namespace: team-b}",
    ))
    .await;
    let before = counters(&h);
    let (status, body) = h.credentials(&h.sa_token("team-a", "app"), None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error_description"],
        "RoleMapping team-a/app names service account team-a/app but grants nothing: session tag key \"kubernetes-namespace\" is reserved: rolegate sets it itself (InvalidTags)"
    );
    settle(&h).await;
    assert_eq!(counters(&h), before);
}

// Finding 10: a SAMLApp (edited in the cluster, so already in the server's index) that maps a
// claim onto one of AWS's own attributes signs nothing.
#[tokio::test]
async fn a_claim_mapped_onto_an_aws_attribute_signs_nothing() {
    let provider_name = unique("mapped");
    let yaml = workloads(&provider_name, "{namespace}.{serviceAccount}", "{}");
    let h = Harness::start(&yaml).await;
    let edited = yaml.replace(
        "kind: SAMLApp\nmetadata: {name: aws}\nspec: {}\n",
        "kind: SAMLApp\nmetadata: {name: aws}\nspec:\n  mappings: {\"kubernetes.io/namespace\": \"https://aws.amazon.com/SAML/Attributes/Role\"}\n",
    );
    let mut snapshot = rolegate::store::Snapshot::default();
    let path = h.dir.path().join("config/resources.yaml");
    rolegate::store::files::load_text(&mut snapshot, &path, &edited).unwrap();
    assert_eq!(snapshot.apps["aws"].spec.mappings.len(), 1);
    h.state.store.replace(snapshot);
    let before = counters(&h);
    let (status, body) = h.credentials(&h.sa_token("team-a", "app"), None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["error_description"],
        "SAMLApp \"aws\": mappings.kubernetes.io/namespace targets \"https://aws.amazon.com/SAML/Attributes/Role\"; attributes under https://aws.amazon.com/SAML/Attributes/ are set by rolegate's policy only (RoleMappings and IAMProviders), never from claims"
    );
    settle(&h).await;
    assert_eq!(counters(&h), before);
}
