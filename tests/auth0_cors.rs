//! CORS on `/delegation`, over a real socket against moto: a SAMLApp's `allowedOrigins`
//! (Auth0's "Allowed Web Origins") decide which browser applications may call it.
//! - a preflight is answered for an origin some app allows, and refused without CORS headers
//!   otherwise;
//! - a POST from an origin the target app does not list is refused with 403 before anything is
//!   verified, signed, sent to STS or cached;
//! - an allowed origin gets exactly that origin back with `Vary: Origin`, never
//!   `Access-Control-Allow-Credentials`;
//! - a request with no `Origin` (curl, SDKs) works as before, with no CORS headers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ACCOUNT, Harness, ROLE, resources, unique};
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, HeaderMap, VARY,
};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const APP_ORIGIN: &str = "https://app.example.test";

async fn harness() -> (Harness, String) {
    let name = unique("cors");
    let yaml = resources(&name, false).replacen(
        "  signResponse: false\n",
        &format!("  signResponse: false\n  allowedOrigins: [\"{APP_ORIGIN}\", \"http://localhost:3000\"]\n"),
        1,
    );
    assert!(yaml.contains("allowedOrigins"));
    (Harness::start(&yaml).await, name)
}

async fn post(
    h: &Harness,
    provider: &str,
    origin: Option<&str>,
) -> (u16, HeaderMap, serde_json::Value) {
    let token = h.sa_token("team-a", "app");
    let principal = format!("arn:aws:iam::{ACCOUNT}:saml-provider/{provider}");
    let mut request = reqwest::Client::new()
        .post(format!("{}/delegation", h.url))
        .form(&[
            ("grant_type", JWT_BEARER),
            ("id_token", &token),
            ("target", "aws"),
            ("client_id", "rolegate"),
            ("role", ROLE),
            ("principal", &principal),
            // auth0.js 7 sends an empty api_type when the caller names no `api`.
            ("api_type", ""),
        ]);
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

async fn preflight(h: &Harness, origin: &str) -> (u16, HeaderMap) {
    let response = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/delegation", h.url))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.headers().clone())
}

fn assert_no_cors(headers: &HeaderMap) {
    for name in [
        &ACCESS_CONTROL_ALLOW_ORIGIN,
        &ACCESS_CONTROL_ALLOW_METHODS,
        &ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ] {
        assert!(headers.get(name).is_none(), "{name} in {headers:?}");
    }
}

#[tokio::test]
async fn a_preflight_is_answered_for_an_allowed_origin_only() {
    let (h, _) = harness().await;
    let (status, headers) = preflight(&h, APP_ORIGIN).await;
    assert_eq!(status, 204);
    assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], APP_ORIGIN);
    assert_eq!(headers[ACCESS_CONTROL_ALLOW_METHODS], "POST");
    assert_eq!(headers[ACCESS_CONTROL_ALLOW_HEADERS], "content-type");
    assert_eq!(headers[VARY], "Origin");
    assert!(headers.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());

    for other in [
        "https://evil.example.test",
        "http://app.example.test",
        "null",
    ] {
        let (status, headers) = preflight(&h, other).await;
        assert_eq!(status, 403, "{other}");
        assert_no_cors(&headers);
    }
}

#[tokio::test]
async fn a_refused_origin_gets_403_and_nothing_is_issued() {
    let (h, provider) = harness().await;
    let (status, headers, body) = post(&h, &provider, Some("https://evil.example.test")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "access_denied");
    assert_eq!(
        body["error_description"],
        "origin \"https://evil.example.test\" may not call /delegation for SAMLApp \"aws\": it is not in the app's allowedOrigins"
    );
    assert_no_cors(&headers);
    assert_eq!(h.metric("rolegate_assertions_signed_total"), 0.0);
    assert_eq!(h.metric("rolegate_sts_calls_total"), 0.0);
    assert_eq!(h.metric("rolegate_credential_cache_misses_total"), 0.0);

    // Nothing was cached for it: the same caller without an Origin is a first, fetched miss.
    let (status, headers, body) = post(&h, &provider, None).await;
    assert_eq!(status, 200, "{body}");
    assert_no_cors(&headers);
    assert_eq!(h.metric("rolegate_sts_calls_total"), 1.0);
    assert_eq!(h.metric("rolegate_credential_cache_misses_total"), 1.0);
}

#[tokio::test]
async fn an_allowed_origin_gets_exactly_its_origin_and_vary() {
    let (h, provider) = harness().await;
    for origin in [APP_ORIGIN, "http://localhost:3000"] {
        let (status, headers, body) = post(&h, &provider, Some(origin)).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["Credentials"]["AccessKeyId"]
                .as_str()
                .unwrap()
                .starts_with("ASIA")
        );
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], origin);
        assert_eq!(headers[VARY], "Origin");
        assert!(headers.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
    }
}

#[tokio::test]
async fn no_origin_works_as_before_without_cors_headers() {
    let (h, provider) = harness().await;
    let (status, headers, body) = post(&h, &provider, None).await;
    assert_eq!(status, 200, "{body}");
    assert_no_cors(&headers);
    assert!(headers.get(VARY).is_none());
}
