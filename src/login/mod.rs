//! People signing in to SAML apps: the IdP-initiated and SP-initiated flows of `GET /samlp/{app}`
//! through an `oidc` or `static` Connection, a role picker, and the auto-submitted Response.
//!
//! Nothing of a sign-in is kept in server memory: the flow (app, RelayState, AuthnRequest, OIDC
//! state, nonce and PKCE verifier) and the session (the signed-in identity) are sealed into two
//! HttpOnly, SameSite=Lax cookies with a key every replica shares (named `__Host-…` over https,
//! so that no other host or plain-http page can plant them). Only the count of wrong passwords is
//! per replica. The handlers are in `crate::server::login`; this module holds the
//! pure parts and the one error type.

pub mod authn_request;
pub mod client;
pub mod flow;
pub mod oidc;
pub mod pages;
pub mod seal;
pub mod users;

use std::path::Path;
use std::sync::{Arc, RwLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;

pub use seal::{CookieKey, SealError};

/// The cookie holding the sign-in in progress.
pub const FLOW_COOKIE: &str = "rolegate_flow";
/// The cookie holding the signed-in person.
pub const SESSION_COOKIE: &str = "rolegate_session";
/// How long a sign-in may take, from opening the login URL to the callback.
pub const FLOW_SECONDS: i64 = 600;
/// The prefix of both cookies' names over https: the browser then keeps them only if they are
/// Secure, for Path=/ and without Domain, set by this very host.
pub const HOST_PREFIX: &str = "__Host-";
/// How long a session lasts before the person signs in again.
pub const SESSION_SECONDS: i64 = 3600;
/// In a cluster: the Secret (in the operator namespace) whose `session.key` seals the cookies.
pub const SESSION_SECRET: &str = "rolegate-session";
/// The key of [`SESSION_SECRET`] and the file name in the state directory.
pub const SESSION_KEY: &str = "session.key";
/// The key of a client-secret Secret.
pub const CLIENT_SECRET_KEY: &str = "clientSecret";

/// Shared by the sign-in handlers.
#[derive(Debug)]
pub struct LoginState {
    key: RwLock<Option<Arc<CookieKey>>>,
    /// Namespace of Secret references that name none.
    pub namespace: String,
    /// Talks to OpenID providers.
    pub provider: oidc::ProviderClient,
    /// Wrong passwords, per replica.
    pub attempts: users::Attempts,
    trusted_proxies: RwLock<Arc<client::TrustedProxies>>,
    /// bcrypt checks running at once (as many as there are cores).
    pub password_checks: Arc<Semaphore>,
    /// bcrypt checks running or waiting for a core; one more is refused with 503.
    pub password_queue: Arc<Semaphore>,
}

/// bcrypt checks that may wait for a core, besides those running.
const WAITING_PASSWORD_CHECKS: usize = 32;

impl LoginState {
    /// Sign-in with `key` sealing cookies (`None`: sign-in answers 503 until a key is set).
    pub fn new(namespace: impl Into<String>, key: Option<CookieKey>) -> Self {
        let running = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self {
            key: RwLock::new(key.map(Arc::new)),
            namespace: namespace.into(),
            provider: oidc::ProviderClient::default(),
            attempts: users::Attempts::default(),
            trusted_proxies: RwLock::default(),
            password_checks: Arc::new(Semaphore::new(running)),
            password_queue: Arc::new(Semaphore::new(running + WAITING_PASSWORD_CHECKS)),
        }
    }

    /// The proxies whose `X-Forwarded-For` names the client.
    pub fn trusted_proxies(&self) -> Arc<client::TrustedProxies> {
        match self.trusted_proxies.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Sets the proxies whose `X-Forwarded-For` names the client (`--trusted-proxies`).
    pub fn set_trusted_proxies(&self, proxies: client::TrustedProxies) {
        let proxies = Arc::new(proxies);
        match self.trusted_proxies.write() {
            Ok(mut g) => *g = proxies,
            Err(p) => *p.into_inner() = proxies,
        }
    }

    /// A turn at bcrypt: waits for a core while few wait, and is refused while many do, so
    /// that a flood of passwords neither queues without bound nor starves the runtime.
    ///
    /// # Errors
    /// [`LoginError::Busy`] when the queue is full.
    pub async fn password_turn(
        &self,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), LoginError> {
        let queued = Arc::clone(&self.password_queue)
            .try_acquire_owned()
            .map_err(|_| LoginError::Busy)?;
        let running = Arc::clone(&self.password_checks)
            .acquire_owned()
            .await
            .map_err(|_| LoginError::Busy)?;
        Ok((queued, running))
    }

    /// Sign-in with a random key that lives as long as the process (tests, single replicas).
    pub fn ephemeral(namespace: impl Into<String>) -> Self {
        let key = CookieKey::generate_material()
            .ok()
            .and_then(|m| CookieKey::from_material(m.as_bytes()).ok());
        Self::new(namespace, key)
    }

    /// Replaces the cookie key (when its Secret changes).
    pub fn set_key(&self, key: Option<CookieKey>) {
        let key = key.map(Arc::new);
        match self.key.write() {
            Ok(mut g) => *g = key,
            Err(p) => *p.into_inner() = key,
        }
    }

    /// The cookie key.
    ///
    /// # Errors
    /// 503 while there is none.
    pub fn key(&self) -> Result<Arc<CookieKey>, LoginError> {
        let key = match self.key.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        key.ok_or_else(|| {
            LoginError::Unavailable(format!(
                "sign-in has no session key yet (Secret {SESSION_SECRET} with {SESSION_KEY})"
            ))
        })
    }
}

/// Standalone mode: the cookie key in `state_dir/session.key`, generated on first use.
///
/// # Errors
/// An unreadable or unwritable state directory, or a key file that is too short.
pub fn key_from_state_dir(state_dir: &Path) -> Result<CookieKey, String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = state_dir.join(SESSION_KEY);
    if !path.exists() {
        std::fs::create_dir_all(state_dir).map_err(|e| format!("{}: {e}", state_dir.display()))?;
        let material = CookieKey::generate_material().map_err(|e| e.to_string())?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.write_all(material.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let material = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    CookieKey::from_material(material.trim_ascii()).map_err(|e| format!("{}: {e}", path.display()))
}

/// In a cluster: the cookie key from Secret [`SESSION_SECRET`] in `namespace`, if indexed.
pub fn key_from_secrets(snapshot: &crate::store::Snapshot, namespace: &str) -> Option<CookieKey> {
    let reference = crate::crd::SecretRef {
        name: SESSION_SECRET.to_owned(),
        namespace: None,
    };
    let secret = snapshot.secret(&reference, namespace)?;
    let material = crate::store::secret_value(secret, SESSION_KEY)?;
    CookieKey::from_material(material.trim_ascii())
        .inspect_err(|e| tracing::warn!(reason = %e, "the session key Secret is unusable"))
        .ok()
}

/// The name cookie `base` goes by: `__Host-base` over https, `base` over plain http (where
/// browsers refuse the prefix).
pub fn cookie_name(base: &str, secure: bool) -> String {
    if secure {
        format!("{HOST_PREFIX}{base}")
    } else {
        base.to_owned()
    }
}

/// A `Set-Cookie` value for cookie `base`: HttpOnly, SameSite=Lax, path `/`, no Domain, and over
/// https Secure with the `__Host-` name. `None` clears.
pub fn set_cookie(base: &str, value: Option<&str>, max_age: i64, secure: bool) -> String {
    let name = cookie_name(base, secure);
    let secure = if secure { "; Secure" } else { "" };
    match value {
        Some(v) => format!("{name}={v}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"),
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A random SAML ID: `_` and 32 hex digits.
///
/// # Errors
/// A failing system random source.
pub fn random_id() -> Result<String, LoginError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| LoginError::Internal("the system random source failed".into()))?;
    Ok(format!(
        "_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// Why a sign-in stops. Every variant is answered as a page that says what happened and what
/// to do; none carries a secret, token or code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// No such SAMLApp or Connection.
    #[error("{0}")]
    NotFound(String),
    /// A request that is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No flow cookie, or an expired one.
    #[error("this sign-in has expired or was not started here; open your app's sign-in link again")]
    NoFlow,
    /// A cookie that was altered or not issued by this server.
    #[error("your sign-in cookie was not issued by rolegate or was altered; sign in again")]
    BadCookie,
    /// The callback's `state` is not this sign-in's.
    #[error(
        "the answer from the identity provider does not belong to this sign-in (state mismatch); sign in again"
    )]
    StateMismatch,
    /// The provider answered the authorization request with an error.
    #[error("the identity provider did not sign you in ({error}{}): sign in again", if description.is_empty() { String::new() } else { format!(": {description}") })]
    Denied {
        /// OAuth error code.
        error: String,
        /// The provider's description.
        description: String,
    },
    /// The token endpoint refused the code (e.g. used twice).
    #[error("the identity provider refused the sign-in code ({error}{}); a code works only once, so sign in again", if description.is_empty() { String::new() } else { format!(": {description}") })]
    CodeRefused {
        /// OAuth error code.
        error: String,
        /// The provider's description.
        description: String,
    },
    /// The provider cannot be used.
    #[error("the identity provider cannot be used: {0}")]
    Provider(String),
    /// The id_token (or the response carrying it) is not acceptable.
    #[error("the identity provider's token is not accepted: {0}")]
    Token(String),
    /// The id_token's nonce is not this sign-in's.
    #[error(
        "the identity provider's token was not issued for this sign-in (nonce mismatch); sign in again"
    )]
    NonceMismatch,
    /// The app does not allow the Connection.
    #[error("{0}")]
    NotAllowed(String),
    /// A refused SAMLRequest.
    #[error(transparent)]
    Request(#[from] authn_request::RequestError),
    /// No role is mapped.
    #[error("{0}")]
    NoRole(String),
    /// Too many wrong passwords.
    #[error("too many wrong passwords {}; try again after {until}", match limit {
        users::Limit::UserAddress => "for this user from your address",
        users::Limit::User => "for this user",
        users::Limit::Address => "from your address",
    })]
    TooManyAttempts {
        /// The limit reached.
        limit: users::Limit,
        /// When to try again, as shown.
        until: String,
    },
    /// Too many passwords are being checked at once.
    #[error("too many sign-ins are being checked at once; try again in a moment")]
    Busy,
    /// A form post without this session's CSRF token, or with another.
    #[error(
        "this form did not come from your sign-in page (its CSRF token is missing or wrong); open your app's sign-in link again"
    )]
    Csrf,
    /// Not configured or not ready.
    #[error("sign-in is unavailable: {0}")]
    Unavailable(String),
    /// A fault of rolegate's.
    #[error("internal error: {0}")]
    Internal(String),
}

impl LoginError {
    /// The HTTP status.
    pub const fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_)
            | Self::NoFlow
            | Self::BadCookie
            | Self::StateMismatch
            | Self::Denied { .. }
            | Self::CodeRefused { .. }
            | Self::Request(_) => StatusCode::BAD_REQUEST,
            Self::Token(_) | Self::NonceMismatch => StatusCode::UNAUTHORIZED,
            Self::NotAllowed(_) | Self::NoRole(_) | Self::Csrf => StatusCode::FORBIDDEN,
            Self::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Provider(_) => StatusCode::BAD_GATEWAY,
            Self::Unavailable(_) | Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short label for logs and metrics.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::NoFlow => "no_flow",
            Self::BadCookie => "bad_cookie",
            Self::StateMismatch => "state_mismatch",
            Self::Denied { .. } => "denied",
            Self::CodeRefused { .. } => "code_refused",
            Self::Provider(_) => "provider",
            Self::Token(_) => "token",
            Self::NonceMismatch => "nonce_mismatch",
            Self::NotAllowed(_) => "not_allowed",
            Self::Request(_) => "saml_request",
            Self::NoRole(_) => "no_role",
            Self::TooManyAttempts { .. } => "rate_limited",
            Self::Busy => "busy",
            Self::Csrf => "csrf",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// Where a person goes on from the error page, if anywhere but back to their app.
    const fn next(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::NoRole(_) | Self::NotAllowed(_) => {
                Some(("/login/signout", "Sign in as someone else"))
            }
            _ => None,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::NoRole(_) => "No role for you here",
            Self::TooManyAttempts { .. } | Self::Busy => "Too many attempts",
            Self::NotFound(_) => "Not found",
            Self::Unavailable(_) | Self::Provider(_) | Self::Internal(_) => {
                "Sign-in is unavailable"
            }
            _ => "Sign-in failed",
        }
    }
}

impl From<SealError> for LoginError {
    fn from(e: SealError) -> Self {
        match e {
            SealError::Invalid => Self::BadCookie,
            SealError::Expired => Self::NoFlow,
            SealError::Key(k) => Self::Internal(k),
        }
    }
}

/// Headers every sign-in page carries; `form_action` is where its forms may post.
pub fn page_headers(response: &mut Response, form_action: &str, script: bool) {
    let script_src = if script {
        format!("; script-src {}", pages::auto_submit_hash())
    } else {
        String::new()
    };
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'{script_src}"
    );
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

impl IntoResponse for LoginError {
    fn into_response(self) -> Response {
        let mut message = self.to_string();
        if let Some(first) = message.get(..1) {
            message = first.to_uppercase() + &message[1..];
        }
        if !message.ends_with('.') {
            message.push('.');
        }
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            pages::error(self.title(), &message, self.next()),
        )
            .into_response();
        page_headers(&mut response, "'none'", false);
        if matches!(self, Self::Busy) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// `now + seconds`.
pub fn later(now: Timestamp, seconds: i64) -> Timestamp {
    now + jiff::SignedDuration::from_secs(seconds)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cookies_are_http_only_lax_and_host_only_secure_over_https() {
        let c = set_cookie(SESSION_COOKIE, Some("abc"), 60, true);
        assert_eq!(
            c,
            "__Host-rolegate_session=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        assert!(!c.contains("Domain"));
        assert_eq!(
            set_cookie(SESSION_COOKIE, Some("abc"), 60, false),
            "rolegate_session=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"
        );
        assert!(set_cookie(FLOW_COOKIE, None, 0, false).contains("Max-Age=0"));
        assert_eq!(
            cookie("a=1; rolegate_flow=xyz; b=2", FLOW_COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie("a=1", FLOW_COOKIE), None);
    }

    #[test]
    fn the_state_dir_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = key_from_state_dir(dir.path()).unwrap();
        let b = key_from_state_dir(dir.path()).unwrap();
        let now = Timestamp::from_second(0).unwrap();
        let sealed = a.seal("x", &1u8, later(now, 10)).unwrap();
        assert_eq!(b.open::<u8>("x", &sealed, now).unwrap(), 1);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(SESSION_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn in_a_cluster_the_key_comes_from_the_session_secret() {
        use k8s_openapi::api::core::v1::Secret;
        let secret = |material: &str| Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(SESSION_SECRET.into()),
                namespace: Some("rolegate".into()),
                ..Default::default()
            },
            string_data: Some([(SESSION_KEY.to_owned(), material.to_owned())].into()),
            ..Secret::default()
        };
        let mut snapshot = crate::store::Snapshot::default();
        assert!(key_from_secrets(&snapshot, "rolegate").is_none());
        let material = CookieKey::generate_material().unwrap();
        snapshot.secrets.insert(
            ("rolegate".into(), SESSION_SECRET.into()),
            secret(&format!("{material}\n")),
        );
        let key = key_from_secrets(&snapshot, "rolegate").unwrap();
        let now = Timestamp::from_second(0).unwrap();
        let sealed = key.seal("x", &1u8, later(now, 10)).unwrap();
        let same = CookieKey::from_material(material.as_bytes()).unwrap();
        assert_eq!(
            same.open::<u8>("x", &sealed, now).unwrap(),
            1,
            "replicas agree"
        );
        assert!(key_from_secrets(&snapshot, "elsewhere").is_none());
        snapshot.secrets.insert(
            ("rolegate".into(), SESSION_SECRET.into()),
            secret("too-short"),
        );
        assert!(key_from_secrets(&snapshot, "rolegate").is_none());
    }

    #[test]
    fn error_pages_have_a_status_and_a_strict_policy() {
        let response = LoginError::NoRole(
            "No role is mapped to you (alice) in aws; ask your platform team.".into(),
        )
        .into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(
            response.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
}
