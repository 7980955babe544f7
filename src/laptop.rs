//! `rolegate credentials`: AWS credentials for a person on a laptop, as an AWS
//! `credential_process`. It signs the person in at the organisation's OpenID provider (the
//! authorization code flow with PKCE and a loopback redirect, or the device flow where no
//! browser is at hand), exchanges the id_token at rolegate's `POST /delegation`, prints the
//! `{"Version":1,...}` JSON the SDKs read, and caches both until shortly before they expire.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::crd::OidcConnection;
use crate::login::oidc::{Discovery, ProviderClient, authorize_url};

/// How the person signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flow {
    /// A browser on this machine, redirected back to a loopback port.
    Browser,
    /// The device flow: a code to enter on any device with a browser.
    Device,
}

/// What `rolegate credentials` needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of rolegate server.
    pub server: String,
    /// The SAMLApp (`target` at `/delegation`).
    pub app: String,
    /// The role ARN to assume.
    pub role: String,
    /// The OpenID provider's issuer.
    pub issuer: String,
    /// The public OAuth client (the Connection's `publicClientId`).
    pub client_id: String,
    /// Scopes besides `openid`.
    pub scopes: Vec<String>,
    /// How to sign in.
    pub flow: Flow,
    /// Fixed loopback port for the redirect (0: any free port).
    pub port: u16,
    /// Command that opens a URL (default: `$BROWSER`, then `xdg-open` or `open`).
    pub browser: Option<String>,
    /// Where credentials and the id_token are cached (mode 0600).
    pub cache_dir: PathBuf,
    /// PEM CA bundle for the server, when it is not publicly trusted.
    pub ca_file: Option<PathBuf>,
    /// How long to wait for the person to sign in.
    pub timeout: Duration,
}

/// Why no credentials were printed. Never carries a token, code or key.
#[derive(Debug, thiserror::Error)]
pub enum LaptopError {
    /// The OpenID provider failed or refused.
    #[error("sign-in failed: {0}")]
    SignIn(String),
    /// rolegate refused or failed the exchange.
    #[error("refused: {0}")]
    Delegation(String),
    /// The cache or CA file cannot be used.
    #[error("{0}: {1}")]
    File(PathBuf, String),
    /// Anything else local.
    #[error("{0}")]
    Local(String),
}

/// The JSON a `credential_process` prints.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessCredentials {
    /// Always 1.
    pub version: u8,
    /// Access key ID.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token.
    pub session_token: String,
    /// Expiry, RFC 3339.
    pub expiration: Timestamp,
}

impl std::fmt::Debug for ProcessCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// Credentials are reused while more than this is left: botocore refreshes credentials with
/// 15 minutes left, so handing out less would make every call ask again.
pub const REUSE_MARGIN: SignedDuration = SignedDuration::from_mins(16);

/// PURE: whether cached credentials can be handed out at `now`.
pub fn reusable(credentials: &ProcessCredentials, now: Timestamp) -> bool {
    credentials.expiration - REUSE_MARGIN > now
}

fn hex_digest(parts: &[&str]) -> String {
    let joined = parts.join("\u{0}");
    digest::digest(&digest::SHA256, joined.as_bytes())
        .as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// PURE: the cache file of the credentials for these options.
pub fn credentials_file(options: &Options) -> PathBuf {
    let key = hex_digest(&[
        &options.server,
        &options.app,
        &options.role,
        &options.issuer,
        &options.client_id,
    ]);
    options.cache_dir.join(format!("credentials-{key}.json"))
}

/// PURE: the cache file of the id_token (shared by every role of one provider and client).
pub fn id_token_file(options: &Options) -> PathBuf {
    let key = hex_digest(&[&options.issuer, &options.client_id]);
    options.cache_dir.join(format!("id-token-{key}.jwt"))
}

/// The claims of an id_token that the laptop checks; the signature is rolegate's to verify.
#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    #[serde(deserialize_with = "one_or_many")]
    aud: Vec<String>,
    exp: i64,
    #[serde(default)]
    nonce: Option<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

fn claims(id_token: &str) -> Result<Claims, String> {
    let payload = id_token
        .split('.')
        .nth(1)
        .ok_or("the id_token is not a JWT")?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "the id_token payload is not base64url")?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the id_token payload is unreadable: {e}"))
}

/// PURE: whether `id_token` was issued by `issuer` to `client_id`, for `nonce` (when the flow
/// sent one), and is valid for at least another minute at `now`.
///
/// # Errors
/// The first check that fails, in words.
pub fn check_id_token(
    id_token: &str,
    issuer: &str,
    client_id: &str,
    nonce: Option<&str>,
    now: Timestamp,
) -> Result<Timestamp, String> {
    let claims = claims(id_token)?;
    if claims.iss.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(format!(
            "the id_token comes from {:?}, not {issuer:?}",
            claims.iss
        ));
    }
    if !claims.aud.iter().any(|a| a == client_id) {
        return Err(format!("the id_token is not for client {client_id:?}"));
    }
    if nonce.is_some_and(|n| claims.nonce.as_deref() != Some(n)) {
        return Err("the id_token's nonce does not match this sign-in".into());
    }
    let exp = Timestamp::from_second(claims.exp).map_err(|e| e.to_string())?;
    if exp - SignedDuration::from_mins(1) <= now {
        return Err(format!("the id_token expired at {exp}"));
    }
    Ok(exp)
}

fn random_token() -> Result<String, LaptopError> {
    crate::login::oidc::random_token().map_err(|e| LaptopError::Local(e.to_string()))
}

fn read_file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Writes `text` to `path` readable by the owner only, atomically.
fn write_private(path: &Path, text: &str) -> Result<(), LaptopError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let fail = |e: std::io::Error| LaptopError::File(path.to_path_buf(), e.to_string());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    interval: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct DeviceAnswer {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: u64,
    interval: Option<u64>,
}

fn plain(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Tells the person something: on the terminal when there is one (a `credential_process`'s
/// stderr is captured by the SDK), and on stderr.
fn tell(message: &str) {
    eprintln!("{message}");
    if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
        use std::io::Write as _;
        let _ = writeln!(tty, "{message}");
    }
}

fn open_browser(url: &str, command: Option<&str>) -> bool {
    let from_env = std::env::var("BROWSER").ok().filter(|b| !b.is_empty());
    let candidates: Vec<String> = match command.map(str::to_owned).or(from_env) {
        Some(c) => vec![c],
        None => vec!["xdg-open".into(), "open".into()],
    };
    candidates.iter().any(|c| {
        let mut words = c.split_whitespace();
        let Some(program) = words.next() else {
            return false;
        };
        std::process::Command::new(program)
            .args(words)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .is_ok()
    })
}

struct Client {
    http: reqwest::Client,
    options: Options,
}

impl Client {
    fn new(options: Options) -> Result<Self, LaptopError> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &options.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| LaptopError::File(path.clone(), e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| LaptopError::File(path.clone(), e.to_string()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| LaptopError::Local(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { http, options })
    }

    async fn sign_in(&self) -> Result<String, LaptopError> {
        let discovery = self.discover().await?;
        match self.options.flow {
            Flow::Browser => self.sign_in_with_browser(&discovery).await,
            Flow::Device => self.sign_in_with_device(&discovery).await,
        }
    }

    async fn discover(&self) -> Result<Discovery, LaptopError> {
        ProviderClient::default()
            .discover(&self.options.issuer)
            .await
            .map_err(|e| LaptopError::SignIn(e.to_string()))
    }

    /// The Connection-shaped view of the options, for the login module's URL building.
    fn connection(&self) -> OidcConnection {
        OidcConnection {
            issuer: self.options.issuer.clone(),
            client_id: self.options.client_id.clone(),
            client_secret_ref: None,
            public_client_id: None,
            scopes: self.options.scopes.clone(),
            claims: crate::crd::ClaimNames::default(),
        }
    }

    async fn token_request(
        &self,
        endpoint: &str,
        form: &[(&str, &str)],
    ) -> Result<TokenAnswer, LaptopError> {
        let response = self
            .http
            .post(endpoint)
            .form(form)
            .send()
            .await
            .map_err(|e| {
                LaptopError::SignIn(format!(
                    "the token endpoint cannot be reached: {}",
                    e.without_url()
                ))
            })?;
        let status = response.status();
        response.json().await.map_err(|_| {
            LaptopError::SignIn(format!("the token endpoint answered {status} without JSON"))
        })
    }

    fn scope(&self) -> String {
        std::iter::once("openid")
            .chain(
                self.options
                    .scopes
                    .iter()
                    .map(String::as_str)
                    .filter(|s| *s != "openid"),
            )
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The authorization code flow with PKCE, redirected to a loopback port (RFC 8252).
    async fn sign_in_with_browser(&self, discovery: &Discovery) -> Result<String, LaptopError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.options.port))
            .await
            .map_err(|e| LaptopError::Local(format!("cannot listen on loopback: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| LaptopError::Local(e.to_string()))?
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}/callback");
        let (state, nonce, verifier) = (random_token()?, random_token()?, random_token()?);
        let url = authorize_url(
            discovery,
            &self.connection(),
            &redirect_uri,
            &state,
            &nonce,
            &verifier,
        )
        .map_err(|e| LaptopError::SignIn(e.to_string()))?;
        if !open_browser(&url, self.options.browser.as_deref()) {
            tell("rolegate: no browser could be opened.");
        }
        tell(&format!("rolegate: sign in at {url}"));
        let code = tokio::time::timeout(
            self.options.timeout,
            wait_for_callback(listener, state.clone(), self.options.issuer.clone()),
        )
        .await
        .map_err(|_| {
            LaptopError::SignIn(format!(
                "nobody signed in within {} s",
                self.options.timeout.as_secs()
            ))
        })??;
        let id_token = ProviderClient::default()
            .exchange(
                discovery,
                &self.options.client_id,
                None,
                &code,
                &redirect_uri,
                &verifier,
            )
            .await
            .map_err(|e| LaptopError::SignIn(e.to_string()))?;
        check_id_token(
            &id_token,
            &self.options.issuer,
            &self.options.client_id,
            Some(&nonce),
            Timestamp::now(),
        )
        .map_err(LaptopError::SignIn)?;
        Ok(id_token)
    }

    /// The device authorization grant (RFC 8628).
    async fn sign_in_with_device(&self, discovery: &Discovery) -> Result<String, LaptopError> {
        let endpoint = discovery
            .device_authorization_endpoint
            .as_deref()
            .ok_or_else(|| {
                LaptopError::SignIn("the provider does not offer the device flow".into())
            })?;
        let scope = self.scope();
        let device: DeviceAnswer = self
            .http
            .post(endpoint)
            .form(&[
                ("client_id", self.options.client_id.as_str()),
                ("scope", &scope),
            ])
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| {
                LaptopError::SignIn(format!(
                    "the device authorization failed: {}",
                    e.without_url()
                ))
            })?
            .json()
            .await
            .map_err(|e| {
                LaptopError::SignIn(format!("the device authorization is unreadable: {e}"))
            })?;
        match &device.verification_uri_complete {
            Some(complete) => tell(&format!(
                "rolegate: sign in at {complete} (code {})",
                device.user_code
            )),
            None => tell(&format!(
                "rolegate: open {} and enter the code {}",
                device.verification_uri, device.user_code
            )),
        }
        let wait = Duration::from_secs(device.expires_in).min(self.options.timeout);
        let deadline = tokio::time::Instant::now() + wait;
        let mut interval = Duration::from_secs(device.interval.unwrap_or(5).max(1));
        loop {
            tokio::time::sleep(interval).await;
            if tokio::time::Instant::now() > deadline {
                return Err(LaptopError::SignIn(format!(
                    "nobody signed in within {} s",
                    wait.as_secs()
                )));
            }
            let answer = self
                .token_request(
                    &discovery.token_endpoint,
                    &[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                        ("device_code", &device.device_code),
                        ("client_id", &self.options.client_id),
                    ],
                )
                .await?;
            match answer.error.as_deref() {
                Some("authorization_pending") => {}
                Some("slow_down") => {
                    interval =
                        Duration::from_secs(answer.interval.unwrap_or(interval.as_secs() + 5));
                }
                _ => {
                    let id_token = id_token_of(answer)?;
                    check_id_token(
                        &id_token,
                        &self.options.issuer,
                        &self.options.client_id,
                        None,
                        Timestamp::now(),
                    )
                    .map_err(LaptopError::SignIn)?;
                    return Ok(id_token);
                }
            }
        }
    }

    async fn delegate(&self, id_token: &str) -> Result<ProcessCredentials, Exchange> {
        let url = format!("{}/delegation", self.options.server.trim_end_matches('/'));
        let response = self
            .http
            .post(&url)
            .json(&serde_json::json!({
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "id_token": id_token,
                "target": self.options.app,
                "client_id": self.options.client_id,
                "role": self.options.role,
                "api_type": "aws",
                "scope": "openid",
            }))
            .send()
            .await
            .map_err(|e| {
                Exchange::Failed(LaptopError::Delegation(format!(
                    "{url} cannot be reached: {}",
                    e.without_url()
                )))
            })?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            let description = plain(body["error_description"].as_str().unwrap_or_default());
            let error = LaptopError::Delegation(format!(
                "{status}: {} ({description})",
                plain(body["error"].as_str().unwrap_or("error"))
            ));
            return Err(if status.as_u16() == 401 {
                Exchange::TokenRefused(error)
            } else {
                Exchange::Failed(error)
            });
        }
        let credentials = &body["Credentials"];
        let text = |key: &str| credentials[key].as_str().map(str::to_owned);
        let parsed = (|| {
            Some(ProcessCredentials {
                version: 1,
                access_key_id: text("AccessKeyId")?,
                secret_access_key: text("SecretAccessKey")?,
                session_token: text("SessionToken")?,
                expiration: text("Expiration")?.parse().ok()?,
            })
        })();
        parsed.ok_or_else(|| {
            Exchange::Failed(LaptopError::Delegation(
                "the answer has no usable Credentials".into(),
            ))
        })
    }
}

enum Exchange {
    /// The id_token was refused (expired or revoked): sign in again.
    TokenRefused(LaptopError),
    Failed(LaptopError),
}

fn id_token_of(answer: TokenAnswer) -> Result<String, LaptopError> {
    if let Some(error) = answer.error {
        return Err(LaptopError::SignIn(format!(
            "the provider refused: {} {}",
            plain(&error),
            plain(answer.error_description.as_deref().unwrap_or_default())
        )));
    }
    answer
        .id_token
        .ok_or_else(|| LaptopError::SignIn("the token response has no id_token".into()))
}

/// PURE: the authorization code of a callback's query, once its state (and, when the provider
/// names itself with RFC 9207's `iss`, its issuer) is checked.
///
/// # Errors
/// The provider's error, a state that is not this sign-in's, another issuer, or no code.
pub fn callback_code(query: &str, state: &str, issuer: &str) -> Result<String, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|_| "the callback query is unreadable")?;
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    if let Some(error) = get("error") {
        return Err(format!(
            "the provider answered {}: {}",
            plain(error),
            plain(get("error_description").unwrap_or_default())
        ));
    }
    let same = get("state").is_some_and(|s| crate::login::oidc::same_secret(s, state));
    if !same {
        return Err("the callback's state is not this sign-in's".into());
    }
    if let Some(iss) = get("iss")
        && iss.trim_end_matches('/') != issuer.trim_end_matches('/')
    {
        return Err(format!("the callback comes from issuer {:?}", plain(iss)));
    }
    get("code")
        .map(str::to_owned)
        .ok_or_else(|| "the callback has no code".into())
}

/// Serves the loopback redirect until the callback with this sign-in's state arrives.
async fn wait_for_callback(
    listener: tokio::net::TcpListener,
    state: String,
    issuer: String,
) -> Result<String, LaptopError> {
    use axum::extract::RawQuery;
    use axum::response::Html;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<String, String>>(1);
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |RawQuery(query): RawQuery| {
            let (tx, state, issuer) = (tx.clone(), state.clone(), issuer.clone());
            async move {
                let outcome =
                    callback_code(query.as_deref().unwrap_or_default(), &state, &issuer);
                let page = match &outcome {
                    Ok(_) => "<!doctype html><title>rolegate</title><p>Signed in. You can close this tab and go back to the terminal.</p>".to_owned(),
                    Err(e) => format!("<!doctype html><title>rolegate</title><p>Sign-in failed: {}</p>", html_escape(e)),
                };
                let _ = tx.send(outcome).await;
                Html(page)
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let outcome = rx.recv().await;
    server.abort();
    match outcome {
        Some(Ok(code)) => Ok(code),
        Some(Err(e)) => Err(LaptopError::SignIn(e)),
        None => Err(LaptopError::Local("the loopback listener stopped".into())),
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Prints nothing itself: returns the credentials to print, from the cache when they are still
/// good for more than [`REUSE_MARGIN`], else after a sign-in (skipped while a cached id_token
/// is valid) and an exchange at `/delegation`.
///
/// # Errors
/// A failed sign-in or exchange, or an unusable cache directory.
pub async fn credentials(options: Options) -> Result<ProcessCredentials, LaptopError> {
    let cached_path = credentials_file(&options);
    if let Some(cached) = read_file(&cached_path)
        .and_then(|t| serde_json::from_str::<ProcessCredentials>(&t).ok())
        .filter(|c| reusable(c, Timestamp::now()))
    {
        return Ok(cached);
    }
    let token_path = id_token_file(&options);
    let client = Client::new(options)?;
    let cached_token = read_file(&token_path).filter(|t| {
        check_id_token(
            t.trim(),
            &client.options.issuer,
            &client.options.client_id,
            None,
            Timestamp::now(),
        )
        .is_ok()
    });
    let mut fresh_sign_in = cached_token.is_none();
    let mut id_token = match cached_token {
        Some(t) => t.trim().to_owned(),
        None => client.sign_in().await?,
    };
    let credentials = loop {
        match client.delegate(&id_token).await {
            Ok(credentials) => break credentials,
            Err(Exchange::TokenRefused(_)) if !fresh_sign_in => {
                fresh_sign_in = true;
                id_token = client.sign_in().await?;
            }
            Err(Exchange::TokenRefused(e) | Exchange::Failed(e)) => return Err(e),
        }
    };
    write_private(&token_path, &id_token)?;
    let json =
        serde_json::to_string(&credentials).map_err(|e| LaptopError::Local(e.to_string()))?;
    write_private(&cached_path, &json)?;
    Ok(credentials)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "e30.{}.c2ln",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        )
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_790_000_000).unwrap()
    }

    #[test]
    fn the_output_is_what_credential_process_expects() {
        let c = ProcessCredentials {
            version: 1,
            access_key_id: "ASIA1".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: "tok".into(),
            expiration: now(),
        };
        let json: serde_json::Value = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"Version": 1, "AccessKeyId": "ASIA1", "SecretAccessKey": "s3cr3t",
                               "SessionToken": "tok", "Expiration": "2026-09-21T14:13:20Z"})
        );
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn credentials_are_reused_only_with_more_than_the_margin_left() {
        let mut c = ProcessCredentials {
            version: 1,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: String::new(),
            expiration: now() + SignedDuration::from_mins(17),
        };
        assert!(reusable(&c, now()));
        c.expiration = now() + SignedDuration::from_mins(15);
        assert!(!reusable(&c, now()));
    }

    #[test]
    fn the_id_token_is_checked_for_issuer_audience_nonce_and_expiry() {
        let good = serde_json::json!({"iss": "https://idp.example/", "aud": ["cli", "other"], "exp": 1_790_003_600, "nonce": "n1"});
        let token = jwt(good.clone());
        assert!(check_id_token(&token, "https://idp.example", "cli", Some("n1"), now()).is_ok());
        let err =
            check_id_token(&token, "https://idp.example", "cli", Some("n2"), now()).unwrap_err();
        assert!(err.contains("nonce"), "{err}");
        let err = check_id_token(&token, "https://evil.example", "cli", None, now()).unwrap_err();
        assert!(err.contains("comes from"), "{err}");
        let err = check_id_token(&token, "https://idp.example", "web", None, now()).unwrap_err();
        assert!(err.contains("not for client"), "{err}");
        let later = now() + SignedDuration::from_hours(1);
        let err = check_id_token(&token, "https://idp.example", "cli", None, later).unwrap_err();
        assert!(err.contains("expired"), "{err}");
        let single_aud = jwt(
            serde_json::json!({"iss": "https://idp.example", "aud": "cli", "exp": 1_790_003_600}),
        );
        assert!(check_id_token(&single_aud, "https://idp.example", "cli", None, now()).is_ok());
        assert!(check_id_token("garbage", "https://idp.example", "cli", None, now()).is_err());
    }

    #[test]
    fn the_callback_must_carry_this_sign_ins_state() {
        let op = "http://127.0.0.1:9000";
        assert_eq!(callback_code("code=abc&state=s1", "s1", op).unwrap(), "abc");
        let with_iss = "code=abc&state=s1&iss=http%3A%2F%2F127.0.0.1%3A9000";
        assert_eq!(callback_code(with_iss, "s1", op).unwrap(), "abc");
        let err = callback_code("code=abc&state=s1&iss=https%3A%2F%2Fevil", "s1", op).unwrap_err();
        assert!(err.contains("issuer"), "{err}");
        let err = callback_code("code=abc&state=s2", "s1", op).unwrap_err();
        assert!(err.contains("state"), "{err}");
        assert!(callback_code("code=abc", "s1", op).is_err());
        let denied = "error=access_denied&error_description=no%20way&state=s1";
        let err = callback_code(denied, "s1", op).unwrap_err();
        assert_eq!(err, "the provider answered access_denied: no way");
    }

    #[test]
    fn cache_files_are_private_and_keyed_by_everything_that_matters() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            server: "https://rg".into(),
            app: "aws".into(),
            role: "arn:aws:iam::1:role/a".into(),
            issuer: "https://idp".into(),
            client_id: "cli".into(),
            scopes: vec![],
            flow: Flow::Browser,
            port: 0,
            browser: None,
            cache_dir: dir.path().join("cache"),
            ca_file: None,
            timeout: Duration::from_secs(1),
        };
        let other_role = Options {
            role: "arn:aws:iam::1:role/b".into(),
            ..options.clone()
        };
        assert_ne!(credentials_file(&options), credentials_file(&other_role));
        assert_eq!(id_token_file(&options), id_token_file(&other_role));
        let path = credentials_file(&options);
        write_private(&path, "{}").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
