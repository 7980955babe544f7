//! The OpenID Connect authorization code flow with PKCE: random state, nonce and verifier
//! (pure), and the calls to the provider (discovery, the token exchange, the JWKS). The id_token
//! is verified by [`crate::tokens::TokenVerifier`], which reads the issuer's keys through the
//! same [`ProviderClient`], so sign-in and `/delegation` share one hardened discovery: https only
//! (plain http to loopback), the document must name the issuer asked, no redirect is followed,
//! every body is capped, and outcomes are cached (failures briefly).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::LoginError;
use crate::crd::OidcConnection;

/// A random URL-safe value with 256 bits of entropy (state, nonce, PKCE verifier).
///
/// # Errors
/// A failing system random source.
pub fn random_token() -> Result<String, LoginError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| LoginError::Internal("the system random source failed".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The PKCE `S256` challenge of `verifier` (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

/// Compares two secrets in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// The most bytes read from a provider for one document (discovery, JWKS, token response).
pub const MAX_PROVIDER_BODY_BYTES: usize = 1024 * 1024;
/// How long a discovery document is reused.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a failed discovery is remembered, so a flood of tokens naming a broken provider
/// costs one fetch per interval, not one per token.
pub const DISCOVERY_FAILURE_TTL: Duration = Duration::from_secs(10);

/// Whether rolegate talks to `issuer` at all: https, or plain http only on loopback (for local
/// providers and tests), where nothing can listen in.
///
/// # Errors
/// Another scheme, or plain http to a host that is not loopback.
pub fn check_issuer(issuer: &str) -> Result<(), LoginError> {
    check_url("issuer", issuer).map_err(LoginError::Provider)
}

/// Whether rolegate fetches `url`, named as `what` in the error: https, or plain http to a
/// loopback host. Nothing else, `file:` least of all.
fn check_url(what: &str, url: &str) -> Result<(), String> {
    let shown = clean(url);
    let url =
        reqwest::Url::parse(url).map_err(|e| format!("{what} {shown:?} is not a URL: {e}"))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{what} {shown:?} must be an https:// URL (or http:// to a loopback address)"
        )),
    }
}

/// The endpoints of a provider, from its discovery document.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// `issuer`, which must equal the Connection's.
    pub issuer: String,
    /// `authorization_endpoint`.
    pub authorization_endpoint: String,
    /// `token_endpoint`.
    pub token_endpoint: String,
    /// `device_authorization_endpoint` (RFC 8628), for `rolegate credentials --flow device`.
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    /// `jwks_uri`: where the id_token signing keys are.
    #[serde(default)]
    pub jwks_uri: Option<String>,
}

/// The authorization request URL.
///
/// # Errors
/// An authorization endpoint that is not a URL.
pub fn authorize_url(
    discovery: &Discovery,
    connection: &OidcConnection,
    redirect_uri: &str,
    state: &str,
    nonce: &str,
    verifier: &str,
) -> Result<String, LoginError> {
    let mut scopes: Vec<&str> = vec!["openid"];
    scopes.extend(
        connection
            .scopes
            .iter()
            .map(String::as_str)
            .filter(|s| *s != "openid"),
    );
    let mut url = reqwest::Url::parse(&discovery.authorization_endpoint).map_err(|e| {
        LoginError::Provider(format!("the authorization endpoint is not a URL: {e}"))
    })?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &connection.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", &pkce_challenge(verifier))
        .append_pair("code_challenge_method", "S256");
    Ok(url.into())
}

/// A discovery outcome as cached: the document, or why there is none.
type Discovered = Result<Arc<Discovery>, String>;

/// Keeps documents for their TTL and failures for a shorter one.
struct DiscoveryExpiry {
    ok: Duration,
    failed: Duration,
}

impl moka::Expiry<String, Discovered> for DiscoveryExpiry {
    fn expire_after_create(
        &self,
        _issuer: &String,
        value: &Discovered,
        _created: Instant,
    ) -> Option<Duration> {
        Some(if value.is_ok() { self.ok } else { self.failed })
    }
}

/// Talks to OpenID providers. Clones share one discovery cache.
#[derive(Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    discovery: moka::future::Cache<String, Discovered>,
}

impl std::fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderClient")
            .field("cached_discoveries", &self.discovery.entry_count())
            .finish_non_exhaustive()
    }
}

impl Default for ProviderClient {
    fn default() -> Self {
        Self::with_discovery_ttl(DISCOVERY_TTL, DISCOVERY_FAILURE_TTL)
    }
}

/// Reads at most [`MAX_PROVIDER_BODY_BYTES`] of a 2xx response. A redirect is an error: the
/// client never follows one, to another scheme, host or a local file least of all.
async fn read_body(response: reqwest::Response) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt as _;
    let status = response.status();
    if status.is_redirection() {
        return Err(format!("answered {status}; redirects are not followed"));
    }
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    let too_large = || format!("the body is larger than {MAX_PROVIDER_BODY_BYTES} bytes");
    if response
        .content_length()
        .is_some_and(|n| n > MAX_PROVIDER_BODY_BYTES as u64)
    {
        return Err(too_large());
    }
    let body = reqwest::Body::from(response);
    match http_body_util::Limited::new(body, MAX_PROVIDER_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(format!("the body was cut off: {e}")),
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

impl ProviderClient {
    /// A client keeping discovery documents for `ok` and failed discoveries for `failed`.
    pub fn with_discovery_ttl(ok: Duration, failed: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            http,
            discovery: moka::future::Cache::builder()
                .max_capacity(1024)
                .expire_after(DiscoveryExpiry { ok, failed })
                .build(),
        }
    }

    /// `<issuer>/.well-known/openid-configuration`, checked to name `issuer`. Outcomes are
    /// cached per issuer (failures briefly), and concurrent callers share one fetch. Callers
    /// ask only for issuers a Connection names.
    ///
    /// # Errors
    /// An issuer that is not https (or http to loopback), an unreachable provider, a redirect,
    /// an oversized or malformed document, or one naming another issuer.
    pub async fn discover(&self, issuer: &str) -> Result<Discovery, LoginError> {
        check_issuer(issuer)?;
        let key = issuer.trim_end_matches('/').to_owned();
        self.discovery
            .get_with_by_ref(&key, self.fetch_discovery(issuer))
            .await
            .map(|d| (*d).clone())
            .map_err(LoginError::Provider)
    }

    async fn fetch_discovery(&self, issuer: &str) -> Discovered {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let fail = |e: String| format!("discovery at {} failed: {e}", clean(&url));
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        let body = read_body(response).await.map_err(fail)?;
        let discovery: Discovery = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("not a discovery document: {e}")))?;
        if discovery.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(format!(
                "the discovery document names issuer {:?}, not {:?}",
                clean(&discovery.issuer),
                clean(issuer)
            ));
        }
        Ok(Arc::new(discovery))
    }

    /// The `jwks_uri` of `issuer`'s discovery document, when it is https (or http to
    /// loopback): a remote document never points rolegate at a local file.
    ///
    /// # Errors
    /// Any failure of [`Self::discover`], and a missing or unacceptable `jwks_uri`.
    pub async fn jwks_uri(&self, issuer: &str) -> Result<String, String> {
        let discovery = self.discover(issuer).await.map_err(|e| match e {
            LoginError::Provider(reason) => reason,
            other => other.to_string(),
        })?;
        let uri = discovery
            .jwks_uri
            .ok_or_else(|| "the discovery document has no jwks_uri".to_owned())?;
        check_url("the discovery document's jwks_uri", &uri)?;
        Ok(uri)
    }

    /// GETs `url` without following redirects and reads at most [`MAX_PROVIDER_BODY_BYTES`].
    ///
    /// # Errors
    /// Transport errors, a non-2xx answer (a redirect included) or an oversized body.
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        read_body(response).await
    }

    /// Exchanges an authorization code for the id_token. The client authenticates with HTTP
    /// Basic when it has a secret, and always proves the PKCE verifier.
    ///
    /// # Errors
    /// The provider's refusal (e.g. `invalid_grant` for a code used twice), or no id_token.
    pub async fn exchange(
        &self,
        discovery: &Discovery,
        client_id: &str,
        client_secret: Option<&str>,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<String, LoginError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let mut request = self.http.post(&discovery.token_endpoint);
        match client_secret {
            Some(secret) => {
                // RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
                let enc = |s: &str| {
                    serde_urlencoded::to_string([("", s)]).unwrap_or_default()[1..].to_owned()
                };
                request = request.basic_auth(enc(client_id), Some(enc(secret)));
            }
            None => form.push(("client_id", client_id)),
        }
        let response = request.form(&form).send().await.map_err(|e| {
            LoginError::Provider(format!(
                "the token endpoint cannot be reached: {}",
                e.without_url()
            ))
        })?;
        let status = response.status();
        let body = {
            use http_body_util::BodyExt as _;
            http_body_util::Limited::new(reqwest::Body::from(response), MAX_PROVIDER_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    LoginError::Provider(format!("the token response cannot be read: {e}"))
                })?
                .to_bytes()
        };
        if !status.is_success() {
            return Err(match serde_json::from_slice::<TokenErrorResponse>(&body) {
                Ok(e) => LoginError::CodeRefused {
                    error: clean(&e.error),
                    description: e
                        .error_description
                        .as_deref()
                        .map(clean)
                        .unwrap_or_default(),
                },
                Err(_) => LoginError::Provider(format!("the token endpoint answered {status}")),
            });
        }
        serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(|t| t.id_token)
            .ok_or_else(|| LoginError::Provider("the token response has no id_token".into()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn issuers_are_https_or_loopback() {
        assert!(check_issuer("https://login.example.com").is_ok());
        assert!(check_issuer("http://127.0.0.1:8080").is_ok());
        assert!(check_issuer("http://localhost:9000/realms/x").is_ok());
        assert!(check_issuer("http://[::1]:9000").is_ok());
        assert!(check_issuer("http://login.example.com").is_err());
        assert!(check_issuer("http://10.0.0.1").is_err());
        assert!(check_issuer("ftp://login.example.com").is_err());
        assert!(check_issuer("not a url").is_err());
    }

    #[test]
    fn random_tokens_are_long_and_distinct() {
        let a = random_token().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token().unwrap());
        assert!(same_secret(&a, &a.clone()));
        assert!(!same_secret(&a, "other"));
    }

    #[test]
    fn the_authorization_request_carries_state_nonce_and_challenge() {
        let discovery = Discovery {
            issuer: "https://op.test".into(),
            authorization_endpoint: "https://op.test/auth?tenant=1".into(),
            token_endpoint: "https://op.test/token".into(),
            device_authorization_endpoint: None,
            jwks_uri: None,
        };
        let connection = OidcConnection {
            issuer: "https://op.test".into(),
            client_id: "rolegate".into(),
            client_secret_ref: None,
            public_client_id: None,
            scopes: vec!["email".into(), "openid".into(), "groups".into()],
            claims: crate::crd::ClaimNames::default(),
        };
        let url = authorize_url(
            &discovery,
            &connection,
            "https://rg.test/login/callback",
            "st",
            "no",
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        )
        .unwrap();
        let parsed = reqwest::Url::parse(&url).unwrap();
        let q: std::collections::BTreeMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(q["tenant"], "1");
        assert_eq!(q["scope"], "openid email groups");
        assert_eq!(q["state"], "st");
        assert_eq!(q["nonce"], "no");
        assert_eq!(
            q["code_challenge"],
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["redirect_uri"], "https://rg.test/login/callback");
        assert!(
            !url.contains("dBjftJeZ4CVP"),
            "the verifier never leaves the server"
        );
    }
}
