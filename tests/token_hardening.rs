//! What an unauthenticated token can cost, and what an id_token must prove at `/delegation`:
//! - `oidc` discovery (finding 5) against a real OpenID-shaped issuer on loopback that counts
//!   every request: forged tokens cost no fetch, one discovery serves many tokens, and a hostile
//!   document (another issuer, a redirect, a local `file:` jwks_uri, an oversized body) is
//!   refused plainly;
//! - `azp` and `email_verified` at `/delegation` (finding 9), with locally signed id_tokens;
//! - TokenReview (finding 7) through a counting reviewer: tokens that cannot pass never reach
//!   it, a rejected token is remembered by hash, and reviews in flight are bounded.
//!
//! Every refusal is asserted with its status and description, and nothing is signed or sent
//! to STS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::{ACCOUNT, Harness, ROLE, resources, unique};
use rolegate::tokenreview::{Reviewed, TokenReviewer};
use rolegate::tokens::TokenVerifier;
use serde_json::json;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// What the test issuer answers at its discovery URL.
#[derive(Clone)]
enum Doc {
    /// A correct document naming `/jwks`.
    Good,
    /// A document that names another issuer.
    Issuer(String),
    /// `302 Found` to this URL.
    Redirect(String),
    /// A correct document whose `jwks_uri` is this.
    JwksUri(String),
    /// A correct document padded beyond a mebibyte, sent chunked (no Content-Length).
    Huge,
    /// `500`.
    Broken,
}

/// An OpenID issuer on loopback: a discovery document and a JWKS, each request counted.
struct Op {
    url: String,
    key: String,
    discovery: Arc<AtomicUsize>,
    jwks: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Op {
    async fn start(doc: Doc, huge_jwks: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let key = rolegate::dev::generate_key().unwrap();
        let jwks_body = rolegate::dev::jwks(&key).unwrap().to_string();
        let (discovery, jwks) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let discovery_route = {
            let (count, url) = (Arc::clone(&discovery), url.clone());
            move || {
                let (doc, url) = (doc.clone(), url.clone());
                count.fetch_add(1, Ordering::SeqCst);
                async move { discovery_answer(&doc, &url) }
            }
        };
        let jwks_route = {
            let count = Arc::clone(&jwks);
            move || {
                count.fetch_add(1, Ordering::SeqCst);
                let body = if huge_jwks {
                    json!({"keys": [], "padding": "x".repeat(2 * 1024 * 1024)}).to_string()
                } else {
                    jwks_body.clone()
                };
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }
        };
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(discovery_route),
            )
            .route("/jwks", axum::routing::get(jwks_route));
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            key,
            discovery,
            jwks,
            _task: task,
        }
    }

    fn fetches(&self) -> (usize, usize) {
        (
            self.discovery.load(Ordering::SeqCst),
            self.jwks.load(Ordering::SeqCst),
        )
    }

    /// An id_token with `claims` over a valid `iss`, `exp` and `iat`, signed with this issuer's
    /// key (or `key`).
    fn token_with(&self, key: &str, claims: serde_json::Value) -> String {
        let now = jiff::Timestamp::now().as_second();
        let mut all = json!({"iss": self.url, "iat": now, "exp": now + 600});
        for (k, v) in claims.as_object().unwrap() {
            all[k] = v.clone();
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(rolegate::dev::key_id(&self.key).unwrap());
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(key.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &all, &key).unwrap()
    }

    fn token(&self, claims: serde_json::Value) -> String {
        self.token_with(&self.key, claims)
    }
}

fn discovery_answer(doc: &Doc, url: &str) -> Response {
    let document = |issuer: &str, jwks_uri: &str| {
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{url}/auth"),
            "token_endpoint": format!("{url}/token"),
            "jwks_uri": jwks_uri,
        })
    };
    let good = document(url, &format!("{url}/jwks"));
    match doc {
        Doc::Good => axum::Json(good).into_response(),
        Doc::Issuer(other) => axum::Json(document(other, &format!("{url}/jwks"))).into_response(),
        Doc::JwksUri(uri) => axum::Json(document(url, uri)).into_response(),
        Doc::Redirect(to) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::LOCATION, to.parse().unwrap());
            (StatusCode::FOUND, headers).into_response()
        }
        Doc::Huge => {
            let mut padded = good;
            padded["padding"] = json!("x".repeat(2 * 1024 * 1024));
            let text = padded.to_string().into_bytes();
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                text.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
            let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Doc::Broken => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The standard resources plus `oidc` Connections on `issuer`: `corp` (client `web`, people
/// named by `sub`) and `mail` (client `mailapp`, people named by `email`); a second SAMLApp
/// `aws-mail` whose NameID is probed from `email`; and mappings granting `alice` and
/// `alice@example.com` the role through each.
fn people(provider_name: &str, issuer: &str) -> String {
    format!(
        r#"{base}
---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: corp}}
spec:
  oidc: {{issuer: "{issuer}", clientId: web}}
---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: mail}}
spec:
  oidc: {{issuer: "{issuer}", clientId: mailapp, claims: {{subject: email}}}}
---
apiVersion: rolegate.dev/v1alpha1
kind: SAMLApp
metadata: {{name: aws-mail}}
spec:
  nameIdentifierProbes: [email]
---
apiVersion: rolegate.dev/v1alpha1
kind: IAMProvider
metadata: {{name: acct-mail}}
spec:
  samlApp: aws-mail
  accountId: "{ACCOUNT}"
  providerName: {provider_name}-mail
  allowedNamespaces: {{matchLabels: {{team: a}}}}
  allowedRoles: ["arn:aws:iam::{ACCOUNT}:role/app-*"]
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: people, namespace: team-a}}
spec:
  provider: acct
  roleArn: {ROLE}
  subjects: [{{kind: User, name: alice}}, {{kind: User, name: alice@example.com}}]
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: people-mail, namespace: team-a}}
spec:
  provider: acct-mail
  roleArn: {ROLE}
  subjects: [{{kind: User, name: alice}}]
"#,
        base = resources(provider_name, false)
    )
}

async fn harness(op: &Op) -> Harness {
    Harness::start(&people(&unique("hardening"), &op.url)).await
}

async fn delegate(h: &Harness, token: &str, client_id: &str) -> (u16, serde_json::Value) {
    delegate_to(h, token, client_id, "aws").await
}

async fn delegate_to(
    h: &Harness,
    token: &str,
    client_id: &str,
    target: &str,
) -> (u16, serde_json::Value) {
    h.delegation(&[
        ("grant_type", JWT_BEARER),
        ("id_token", token),
        ("target", target),
        ("client_id", client_id),
    ])
    .await
}

/// Asserts the status, error and whole description, and that nothing was signed or sent to
/// STS.
fn assert_refused(
    h: &Harness,
    (status, body): &(u16, serde_json::Value),
    want: u16,
    error: &str,
    description: &str,
) {
    assert_eq!(*status, want, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_description"], description, "{body}");
    assert_eq!(h.metric("rolegate_assertions_signed_total"), 0.0);
    assert_eq!(h.metric("rolegate_sts_calls_total"), 0.0);
}

// ---- Finding 5: discovery on the token path ----

#[tokio::test]
async fn forged_tokens_cost_no_discovery_fetch() {
    let op = Op::start(Doc::Good, false).await;
    let h = harness(&op).await;
    let now = jiff::Timestamp::now().as_second();

    let response = delegate(&h, "garbage", "web").await;
    assert_refused(
        &h,
        &response,
        401,
        "invalid_token",
        "token is not a well-formed JWT: 1 dot-separated parts, a JWS has 3",
    );
    let response = delegate(
        &h,
        &op.token(json!({"iss": "https://evil.example", "sub": "alice", "aud": "web"})),
        "web",
    )
    .await;
    assert_refused(
        &h,
        &response,
        401,
        "invalid_token",
        r#"token issuer "https://evil.example" is not trusted by any connection"#,
    );
    // A trusted issuer, but expired or for another client: refused before any key is fetched.
    let expired = op.token(json!({"sub": "alice", "aud": "web", "exp": now - 60}));
    let response = delegate(&h, &expired, "web").await;
    assert_eq!(response.0, 401, "{}", response.1);
    assert!(
        response.1["error_description"]
            .as_str()
            .unwrap()
            .starts_with("token expired at "),
        "{}",
        response.1
    );
    let response = delegate(
        &h,
        &op.token(json!({"sub": "alice", "aud": "vault"})),
        "vault",
    )
    .await;
    assert_refused(
        &h,
        &response,
        401,
        "invalid_token",
        r#"token audience "vault" is not accepted by connection "corp""#,
    );
    assert_eq!(op.fetches(), (0, 0), "no discovery and no JWKS was fetched");
}

#[tokio::test]
async fn one_discovery_serves_many_tokens() {
    let op = Op::start(Doc::Good, false).await;
    let h = harness(&op).await;
    // Twenty tokens with the issuer's kid but another key's signature, half of them at once.
    let other = rolegate::dev::generate_key().unwrap();
    let forged = op.token_with(&other, json!({"sub": "alice", "aud": "web"}));
    let at_once = (0..10).map(|_| delegate(&h, &forged, "web"));
    let mut answers = futures::future::join_all(at_once).await;
    for _ in 0..10 {
        answers.push(delegate(&h, &forged, "web").await);
    }
    for answer in &answers {
        assert_refused(
            &h,
            answer,
            401,
            "invalid_token",
            r#"token signature does not verify against connection "corp""#,
        );
    }
    assert_eq!(op.fetches(), (1, 1), "one discovery and one JWKS for all");

    let (status, body) =
        delegate(&h, &op.token(json!({"sub": "alice", "aud": "web"})), "web").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(op.fetches(), (1, 1), "the genuine token reuses both");
}

#[tokio::test]
async fn a_failing_discovery_is_remembered_briefly() {
    let op = Op::start(Doc::Broken, false).await;
    let h = harness(&op).await;
    let token = op.token(json!({"sub": "alice", "aud": "web"}));
    let want = format!(
        r#"keys of connection "corp" cannot be fetched: discovery at {}/.well-known/openid-configuration failed: answered 500 Internal Server Error"#,
        op.url
    );
    for _ in 0..5 {
        let response = delegate(&h, &token, "web").await;
        assert_refused(&h, &response, 503, "temporarily_unavailable", &want);
    }
    assert_eq!(op.fetches(), (1, 0), "one fetch for five tokens");
}

#[tokio::test]
async fn a_document_naming_another_issuer_is_refused() {
    let op = Op::start(Doc::Issuer("https://evil.example".into()), false).await;
    let h = harness(&op).await;
    let response = delegate(&h, &op.token(json!({"sub": "alice", "aud": "web"})), "web").await;
    let want = format!(
        r#"keys of connection "corp" cannot be fetched: the discovery document names issuer "https://evil.example", not "{}""#,
        op.url
    );
    assert_refused(&h, &response, 503, "temporarily_unavailable", &want);
    assert_eq!(op.fetches(), (1, 0), "its keys are never fetched");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    // The target of the redirect is a correct issuer; following it would succeed.
    let elsewhere = Op::start(Doc::Good, false).await;
    let op = Op::start(
        Doc::Redirect(format!(
            "{}/.well-known/openid-configuration",
            elsewhere.url
        )),
        false,
    )
    .await;
    let h = harness(&op).await;
    let response = delegate(&h, &op.token(json!({"sub": "alice", "aud": "web"})), "web").await;
    let want = format!(
        r#"keys of connection "corp" cannot be fetched: discovery at {}/.well-known/openid-configuration failed: answered 302 Found; redirects are not followed"#,
        op.url
    );
    assert_refused(&h, &response, 503, "temporarily_unavailable", &want);
    assert_eq!(elsewhere.fetches(), (0, 0), "the redirect was not followed");

    // The same for a jwks_uri that redirects (to the correct issuer's keys).
    let moving = Op::start(Doc::Redirect(format!("{}/jwks", elsewhere.url)), false).await;
    let op = Op::start(
        Doc::JwksUri(format!("{}/.well-known/openid-configuration", moving.url)),
        false,
    )
    .await;
    let h = harness(&op).await;
    let response = delegate(&h, &op.token(json!({"sub": "alice", "aud": "web"})), "web").await;
    assert_refused(
        &h,
        &response,
        503,
        "temporarily_unavailable",
        r#"keys of connection "corp" cannot be fetched: answered 302 Found; redirects are not followed"#,
    );
    assert_eq!(moving.fetches(), (1, 0));
    assert_eq!(elsewhere.fetches(), (0, 0));
}

#[tokio::test]
async fn a_remote_document_never_points_at_a_local_file() {
    // Files holding the issuer's real keys: reading either would let the token through.
    let dir = tempfile::tempdir().unwrap();
    let absolute = dir.path().join("jwks.json");
    for uri in [
        format!("file://{}", absolute.display()),
        "file:jwks.json".to_owned(),
    ] {
        let op = Op::start(Doc::JwksUri(uri.clone()), false).await;
        let h = harness(&op).await;
        let jwks = rolegate::dev::jwks(&op.key).unwrap().to_string();
        std::fs::write(&absolute, &jwks).unwrap();
        std::fs::write(h.dir.path().join("config/jwks.json"), &jwks).unwrap();
        let response = delegate(&h, &op.token(json!({"sub": "alice", "aud": "web"})), "web").await;
        let want = format!(
            r#"keys of connection "corp" cannot be fetched: the discovery document's jwks_uri "{uri}" must be an https:// URL (or http:// to a loopback address)"#
        );
        assert_refused(&h, &response, 503, "temporarily_unavailable", &want);
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let op = Op::start(Doc::Huge, false).await;
    let h = harness(&op).await;
    let response = delegate(&h, &op.token(json!({"sub": "alice", "aud": "web"})), "web").await;
    let want = format!(
        r#"keys of connection "corp" cannot be fetched: discovery at {}/.well-known/openid-configuration failed: the body is larger than 1048576 bytes"#,
        op.url
    );
    assert_refused(&h, &response, 503, "temporarily_unavailable", &want);

    let op = Op::start(Doc::Good, true).await;
    let h = harness(&op).await;
    let response = delegate(&h, &op.token(json!({"sub": "alice", "aud": "web"})), "web").await;
    assert_refused(
        &h,
        &response,
        503,
        "temporarily_unavailable",
        r#"keys of connection "corp" cannot be fetched: the body is larger than 1048576 bytes"#,
    );
    assert_eq!(op.fetches(), (1, 1));
}

// ---- Finding 9: azp and email_verified at /delegation ----

#[tokio::test]
async fn delegation_checks_azp_as_the_sign_in_path_does() {
    let op = Op::start(Doc::Good, false).await;
    let h = harness(&op).await;

    let several = op.token(json!({"sub": "alice", "aud": ["web", "other"]}));
    let response = delegate(&h, &several, "web").await;
    assert_refused(
        &h,
        &response,
        401,
        "invalid_client",
        r#"the token has 2 audiences and no azp; client_id "web" must be its authorized party"#,
    );
    let other_party = op.token(json!({"sub": "alice", "aud": "web", "azp": "other"}));
    let response = delegate(&h, &other_party, "web").await;
    assert_refused(
        &h,
        &response,
        401,
        "invalid_client",
        r#"client_id "web" is not the token's authorized party (azp "other")"#,
    );
    let response = delegate(
        &h,
        &op.token(json!({"sub": "alice", "aud": ["web", "other"], "azp": "other"})),
        "web",
    )
    .await;
    assert_refused(
        &h,
        &response,
        401,
        "invalid_client",
        r#"client_id "web" is not the token's authorized party (azp "other")"#,
    );

    let good = op.token(json!({"sub": "alice", "aud": ["web", "other"], "azp": "web"}));
    let (status, body) = delegate(&h, &good, "web").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_unverified_email_names_no_one() {
    let op = Op::start(Doc::Good, false).await;
    let h = harness(&op).await;

    // Connection `mail` names people by their email.
    for unverified in [json!(false), json!("false")] {
        let token = op.token(json!({
            "sub": "u-1", "aud": "mailapp", "email": "alice@example.com", "email_verified": unverified,
        }));
        let response = delegate(&h, &token, "mailapp").await;
        assert_refused(
            &h,
            &response,
            403,
            "access_denied",
            r#"connection "mail" names this person by the "email" claim, and the identity provider says that email is not verified (email_verified is false)"#,
        );
    }
    // SAMLApp `aws-mail` takes its NameID from the email, whatever the Connection's subject.
    let token = op.token(json!({
        "sub": "alice", "aud": "web", "email": "alice@example.com", "email_verified": false,
    }));
    let response = delegate_to(&h, &token, "web", "aws-mail").await;
    assert_refused(
        &h,
        &response,
        403,
        "access_denied",
        r#"connection "corp" names this person by the "email" claim, and the identity provider says that email is not verified (email_verified is false)"#,
    );

    // The same person through `aws`, named by `sub`, is not named by the email at all.
    let (status, body) = delegate(&h, &token, "web").await;
    assert_eq!(status, 200, "{body}");
    let verified = op.token(json!({
        "sub": "u-1", "aud": "mailapp", "email": "alice@example.com", "email_verified": true,
    }));
    let (status, body) = delegate(&h, &verified, "mailapp").await;
    assert_eq!(status, 200, "{body}");
}

// ---- Finding 7: TokenReview caused by unauthenticated tokens ----

/// A TokenReviewer that counts its calls, rejects every token, and (when `hold` is set) waits
/// for a permit from it before answering.
#[derive(Debug, Default)]
struct CountingReviewer {
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    hold: Option<Arc<tokio::sync::Semaphore>>,
}

#[async_trait]
impl TokenReviewer for CountingReviewer {
    async fn review(
        &self,
        _token: &str,
        _audiences: &[String],
    ) -> Result<Result<Reviewed, String>, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(hold) = &self.hold {
            hold.acquire().await.unwrap().forget();
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(Err("token has been invalidated".into()))
    }
}

async fn reviewed_harness(reviewer: &Arc<CountingReviewer>, slots: usize) -> Harness {
    let reviewer: Arc<dyn TokenReviewer> = reviewer.clone();
    Harness::start_with(&resources(&unique("review"), false), move |config| {
        TokenVerifier::new(config)
            .with_token_review(reviewer)
            .with_review_slots(slots, Duration::from_secs(60))
    })
    .await
}

#[tokio::test]
async fn tokens_that_cannot_pass_never_reach_token_review() {
    let reviewer = Arc::new(CountingReviewer::default());
    let h = reviewed_harness(&reviewer, 16).await;
    let spec = |issuer: &str, subject: &str, audience: &str, ttl: i64| rolegate::dev::TokenSpec {
        issuer: issuer.into(),
        subject: subject.into(),
        audiences: vec![audience.into()],
        ttl_seconds: ttl,
        pod: None,
        kid: None,
    };
    let mint = |s: rolegate::dev::TokenSpec| {
        rolegate::dev::token(&h.sa_key, &s, jiff::Timestamp::now()).unwrap()
    };
    let sa = "system:serviceaccount:team-a:app";
    let cases = [
        (
            "garbage".to_owned(),
            "token is not a well-formed JWT: 1 dot-separated parts, a JWS has 3".to_owned(),
        ),
        (
            mint(spec("https://evil.example", sa, "rolegate", 600)),
            r#"token issuer "https://evil.example" is not trusted by any connection"#.to_owned(),
        ),
        (
            mint(spec(common::ISSUER, sa, "vault", 600)),
            r#"token audience "vault" is not accepted by connection "k8s""#.to_owned(),
        ),
        (
            mint(spec(common::ISSUER, "alice", "rolegate", 600)),
            r#"token subject "alice" is not a service account"#.to_owned(),
        ),
    ];
    for (token, want) in &cases {
        let response = h.credentials(token, None).await;
        assert_refused(&h, &response, 401, "invalid_token", want);
    }
    let (status, body) = h
        .credentials(&mint(spec(common::ISSUER, sa, "rolegate", -60)), None)
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("token expired at "),
        "{body}"
    );
    assert_eq!(reviewer.calls.load(Ordering::SeqCst), 0, "no TokenReview");
}

#[tokio::test]
async fn a_rejected_token_is_remembered_by_hash() {
    let reviewer = Arc::new(CountingReviewer::default());
    let h = reviewed_harness(&reviewer, 16).await;
    let token = h.sa_token("team-a", "app");
    for _ in 0..5 {
        let response = h.credentials(&token, None).await;
        assert_refused(
            &h,
            &response,
            401,
            "invalid_token",
            "token was not authenticated by the Kubernetes API: token has been invalidated",
        );
    }
    assert_eq!(
        reviewer.calls.load(Ordering::SeqCst),
        1,
        "one review for five"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_reviews_in_flight_are_bounded() {
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let reviewer = Arc::new(CountingReviewer {
        hold: Some(Arc::clone(&hold)),
        ..CountingReviewer::default()
    });
    let h = Arc::new(reviewed_harness(&reviewer, 2).await);
    // Six distinct tokens at once, as a flood of fresh forgeries would come.
    let requests: Vec<_> = (0..6)
        .map(|i| {
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                h.credentials(&h.sa_token("team-a", &format!("app{i}")), None)
                    .await
            })
        })
        .collect();
    // Two are under review; the other four wait for a slot and never reach the reviewer.
    tokio::time::timeout(Duration::from_secs(30), async {
        while reviewer.in_flight.load(Ordering::SeqCst) < 2
            || h.state.verifier.reviews_waiting() < 4
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("two reviews in flight and four tokens waiting");
    assert_eq!(reviewer.calls.load(Ordering::SeqCst), 2);

    hold.add_permits(6);
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 401, "{body}");
    }
    assert_eq!(reviewer.calls.load(Ordering::SeqCst), 6);
    assert_eq!(reviewer.most_in_flight.load(Ordering::SeqCst), 2);
}
