//! The table of bad inputs. Each gets its exact status and error, and nothing is signed, asked
//! of STS, or cached.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{ACCOUNT, Harness, ROLE, resources, unique};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Asserts a refusal and that it left no trace: no assertion signed, no STS call, no session
/// cached.
async fn assert_refused(
    h: &Harness,
    (status, body): (u16, serde_json::Value),
    want: u16,
    error: &str,
    cause: &str,
) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"], error, "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.contains(cause),
        "{description:?} does not say {cause:?}"
    );
    assert_eq!(
        h.metric("rolegate_assertions_signed_total"),
        0.0,
        "nothing may be signed"
    );
    assert_eq!(
        h.metric("rolegate_sts_calls_total"),
        0.0,
        "STS may not be called"
    );
    h.state.issuer.cache.sync().await;
    assert!(h.state.issuer.cache.is_empty(), "nothing may be cached");
}

fn forged(header: &serde_json::Value, claims: &serde_json::Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn claims(sub: &str) -> serde_json::Value {
    let now = jiff::Timestamp::now().as_second();
    serde_json::json!({"iss": common::ISSUER, "sub": sub, "aud": ["rolegate"], "iat": now, "exp": now + 600})
}

async fn harness() -> Harness {
    Harness::start(&resources(&unique("bad"), false)).await
}

#[tokio::test]
async fn expired_token() {
    let h = harness().await;
    let token = h.token("system:serviceaccount:team-a:app", &["rolegate"], -60);
    assert_refused(
        &h,
        h.credentials(&token, None).await,
        401,
        "invalid_token",
        "token expired at",
    )
    .await;
}

#[tokio::test]
async fn wrong_audience() {
    let h = harness().await;
    let token = h.token("system:serviceaccount:team-a:app", &["vault"], 600);
    let cause = r#"token audience "vault" is not accepted by connection "k8s""#;
    assert_refused(
        &h,
        h.credentials(&token, None).await,
        401,
        "invalid_token",
        cause,
    )
    .await;
}

#[tokio::test]
async fn wrong_issuer() {
    let h = harness().await;
    let spec = rolegate::dev::TokenSpec {
        issuer: "https://evil.example".into(),
        subject: "system:serviceaccount:team-a:app".into(),
        audiences: vec!["rolegate".into()],
        ttl_seconds: 600,
        pod: None,
        kid: None,
    };
    let token = rolegate::dev::token(&h.sa_key, &spec, jiff::Timestamp::now()).unwrap();
    let cause = r#"token issuer "https://evil.example" is not trusted by any connection"#;
    assert_refused(
        &h,
        h.credentials(&token, None).await,
        401,
        "invalid_token",
        cause,
    )
    .await;
}

#[tokio::test]
async fn unknown_kid() {
    let h = harness().await;
    let spec = rolegate::dev::TokenSpec {
        issuer: common::ISSUER.into(),
        subject: "system:serviceaccount:team-a:app".into(),
        audiences: vec!["rolegate".into()],
        ttl_seconds: 600,
        pod: None,
        kid: Some("rotated-away".into()),
    };
    let token = rolegate::dev::token(&h.sa_key, &spec, jiff::Timestamp::now()).unwrap();
    let cause = r#"token key id "rotated-away" is not in the keys of connection "k8s""#;
    assert_refused(
        &h,
        h.credentials(&token, None).await,
        401,
        "invalid_token",
        cause,
    )
    .await;
}

#[tokio::test]
async fn signed_by_another_key() {
    let h = harness().await;
    let other = rolegate::dev::generate_key().unwrap();
    let spec = rolegate::dev::TokenSpec {
        issuer: common::ISSUER.into(),
        subject: "system:serviceaccount:team-a:app".into(),
        audiences: vec!["rolegate".into()],
        ttl_seconds: 600,
        pod: None,
        kid: Some(rolegate::dev::key_id(&h.sa_key).unwrap()),
    };
    let token = rolegate::dev::token(&other, &spec, jiff::Timestamp::now()).unwrap();
    let cause = r#"token signature does not verify against connection "k8s""#;
    assert_refused(
        &h,
        h.credentials(&token, None).await,
        401,
        "invalid_token",
        cause,
    )
    .await;
}

#[tokio::test]
async fn alg_none() {
    let h = harness().await;
    let token = forged(
        &serde_json::json!({"alg": "none", "typ": "JWT"}),
        &claims("system:serviceaccount:team-a:app"),
        b"",
    );
    let cause = r#"token algorithm "none" is refused: unsigned tokens are never accepted"#;
    assert_refused(
        &h,
        h.credentials(&token, None).await,
        401,
        "invalid_token",
        cause,
    )
    .await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key() {
    let h = harness().await;
    // The classic confusion attack: HMAC keyed with the issuer's public JWKS.
    let jwks = rolegate::dev::jwks(&h.sa_key).unwrap().to_string();
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": rolegate::dev::key_id(&h.sa_key).unwrap()});
    let unsigned = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims("system:serviceaccount:team-a:app").to_string())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, jwks.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, unsigned.as_bytes());
    let token = format!("{unsigned}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    let cause = r#"token algorithm "HS256" is refused: HMAC tokens are never accepted"#;
    assert_refused(
        &h,
        h.credentials(&token, None).await,
        401,
        "invalid_token",
        cause,
    )
    .await;
}

#[tokio::test]
async fn malformed_jwt() {
    let h = harness().await;
    let cause = "token is not a well-formed JWT: 2 dot-separated parts, a JWS has 3";
    assert_refused(
        &h,
        h.credentials("not.ajwt", None).await,
        401,
        "invalid_token",
        cause,
    )
    .await;
    let cause = "token is not a well-formed JWT: bad base64url";
    assert_refused(
        &h,
        h.credentials("@@@.e30.sig", None).await,
        401,
        "invalid_token",
        cause,
    )
    .await;
}

#[tokio::test]
async fn one_mebibyte_jwt_header_is_refused_before_parsing() {
    let h = harness().await;
    let header = serde_json::json!({"alg": "RS256", "kid": "k", "x": "a".repeat(1 << 20)});
    let token = forged(&header, &claims("system:serviceaccount:team-a:app"), b"sig");
    // Through /delegation (the body limit is 64 KiB, so the request body itself is refused)...
    let (status, _) = h
        .delegation(&[
            ("grant_type", JWT_BEARER),
            ("id_token", &token),
            ("target", "aws"),
            ("client_id", "rolegate"),
        ])
        .await;
    assert_eq!(status, 413, "the body limit refuses a 1 MiB form");
    // ...and as a 17 KiB token in a header, which is refused by the token size limit.
    let header = serde_json::json!({"alg": "RS256", "kid": "k", "x": "a".repeat(17 * 1024)});
    let token = forged(&header, &claims("system:serviceaccount:team-a:app"), b"sig");
    let cause = "the limit is 16384";
    assert_refused(
        &h,
        h.credentials(&token, None).await,
        401,
        "invalid_token",
        cause,
    )
    .await;
}

#[tokio::test]
async fn one_mebibyte_authorization_header_is_refused_by_the_http_layer() {
    let h = harness().await;
    let response = reqwest::Client::new()
        .get(format!("{}/v1/credentials", h.url))
        .header("Authorization", "a".repeat(1 << 20))
        .send()
        .await;
    // hyper refuses oversized headers with 431 before any handler runs.
    assert_eq!(response.unwrap().status(), 431);
    assert_eq!(h.metric("rolegate_assertions_signed_total"), 0.0);
    assert_eq!(h.metric("rolegate_sts_calls_total"), 0.0);
}

#[tokio::test]
async fn service_account_no_mapping_names() {
    let h = harness().await;
    let token = h.sa_token("team-a", "stranger");
    let cause = "no RoleMapping names service account team-a/stranger";
    assert_refused(
        &h,
        h.credentials(&token, None).await,
        403,
        "access_denied",
        cause,
    )
    .await;
}

#[tokio::test]
async fn namespace_not_allowed() {
    let h = harness().await;
    let token = h.sa_token("team-b", "app");
    let cause = r#"RoleMapping team-b/borrowed names service account team-b/app but grants nothing: IAMProvider "acct" does not allow namespace "team-b" (NamespaceNotAllowed)"#;
    assert_refused(
        &h,
        h.credentials(&token, None).await,
        403,
        "access_denied",
        cause,
    )
    .await;
}

#[tokio::test]
async fn role_not_allowed() {
    let h = harness().await;
    let token = h.sa_token("team-a", "greedy");
    let cause = r#"IAMProvider "acct" does not allow role "arn:aws:iam::123456789012:role/admin" (RoleNotAllowed)"#;
    assert_refused(
        &h,
        h.credentials(&token, None).await,
        403,
        "access_denied",
        cause,
    )
    .await;
}

#[tokio::test]
async fn unknown_provider() {
    let h = harness().await;
    let token = h.sa_token("team-a", "lost");
    let cause = r#"IAMProvider "nowhere" does not exist (ProviderNotFound)"#;
    assert_refused(
        &h,
        h.credentials(&token, None).await,
        403,
        "access_denied",
        cause,
    )
    .await;
}

#[tokio::test]
async fn role_principal_pair_not_granted() {
    let h = harness().await;
    let token = h.sa_token("team-a", "app");
    let foreign = format!("arn:aws:iam::{ACCOUNT}:saml-provider/someone-else");
    let response = h
        .delegation(&[
            ("grant_type", JWT_BEARER),
            ("id_token", &token),
            ("target", "aws"),
            ("client_id", "rolegate"),
            ("role", ROLE),
            ("principal", &foreign),
        ])
        .await;
    let cause = format!(
        r#"role "{ROLE}" with provider "{foreign}" is not granted to service account team-a/app"#
    );
    assert_refused(&h, response, 403, "access_denied", &cause).await;
    let other_role = format!("arn:aws:iam::{ACCOUNT}:role/app-writer");
    let (status, _) = h.credentials(&token, Some(&other_role)).await;
    assert_eq!(status, 403, "?role= cannot pick an ungranted role either");
}

#[tokio::test]
async fn unknown_target() {
    let h = harness().await;
    let token = h.sa_token("team-a", "app");
    let response = h
        .delegation(&[
            ("grant_type", JWT_BEARER),
            ("id_token", &token),
            ("target", "gcp"),
            ("client_id", "rolegate"),
        ])
        .await;
    assert_refused(
        &h,
        response,
        400,
        "invalid_request",
        r#"target "gcp" is not a SAMLApp"#,
    )
    .await;
}

#[tokio::test]
async fn client_id_differs_from_token_audience() {
    let h = harness().await;
    let token = h.sa_token("team-a", "app");
    let response = h
        .delegation(&[
            ("grant_type", JWT_BEARER),
            ("id_token", &token),
            ("target", "aws"),
            ("client_id", "other-client"),
        ])
        .await;
    let cause = r#"client_id "other-client" is not the token's audience"#;
    assert_refused(&h, response, 401, "invalid_client", cause).await;
}

#[tokio::test]
async fn wrong_grant_type_and_missing_fields() {
    let h = harness().await;
    let response = h
        .delegation(&[("grant_type", "password"), ("id_token", "x")])
        .await;
    assert_refused(
        &h,
        response,
        400,
        "unsupported_grant_type",
        "grant_type must be",
    )
    .await;
    let response = h.delegation(&[("grant_type", JWT_BEARER)]).await;
    assert_refused(&h, response, 400, "invalid_request", "id_token is required").await;
    let (status, body) = h.credentials("", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_request")),
        "{body}"
    );
}

#[tokio::test]
async fn tokens_are_never_echoed() {
    let h = harness().await;
    let token = h.token("system:serviceaccount:team-a:app", &["vault"], 600);
    let (_, body) = h.credentials(&token, None).await;
    assert!(!body.to_string().contains(&token));
    assert!(!body.to_string().contains(token.split('.').nth(2).unwrap()));
}
