//! The HTTP surface: `router(state) -> Router` (and its internal and public halves) with thin
//! handlers over the policy and SAML core.

mod error;
pub(crate) mod issue;
pub mod listener;
pub mod login;
pub mod pacing;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use error::ApiError;
pub use issue::{IssuedSession, Issuer};
pub use listener::Limits;

use crate::idp::{KeyRing, app_metadata};
use crate::metrics::Metrics;
use crate::store::{SharedSnapshot, Snapshot};
use crate::tokens::{Accept, TokenVerifier};

/// The source of "now" for request handling; tests pin it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Resources.
    pub store: Arc<SharedSnapshot>,
    /// Signing keys.
    pub keys: Arc<KeyRing>,
    /// Token verification.
    pub verifier: Arc<TokenVerifier>,
    /// Assertion → credentials.
    pub issuer: Arc<Issuer>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Base URL people and AWS reach this server at.
    pub public_url: String,
    /// Set once resources and keys are loaded.
    pub ready: Arc<AtomicBool>,
    /// People's sign-in: the cookie key and the wrong-password counts.
    pub login: Arc<crate::login::LoginState>,
    /// What the Pod webhook injects (the node agent's URI among it).
    pub injection: Arc<crate::webhook::Injection>,
}

/// Puts `snapshot` in place of the store's, then forgets the cached sessions of every role
/// that lost a subject ([`crate::revocation::roles_losing_subjects`]), so a subject granted
/// again gets a new session, never one issued before a revocation. The one way the server's
/// resources change, in the cluster and standalone. Returns the snapshot it replaced.
pub fn replace_snapshot(
    store: &SharedSnapshot,
    cache: &crate::credentials::CredentialCache,
    snapshot: Snapshot,
) -> Arc<Snapshot> {
    let before = store.current();
    let roles = crate::revocation::roles_losing_subjects(&before.mappings, &snapshot.mappings);
    store.replace(snapshot);
    for role in &roles {
        cache.forget_role(role);
    }
    if !roles.is_empty() {
        tracing::info!(roles = ?roles, "forgot the cached sessions of roles that lost a subject");
    }
    before
}

/// Request bodies larger than this are refused.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every listener serves: health, and the IdP metadata (public by nature: IAM and relying
/// parties read it).
fn common_routes() -> Router<AppState> {
    Router::new()
        .route("/samlp/metadata/{app}", get(metadata))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
}

/// People's sign-in: the pages their browsers reach, through an Ingress.
fn sign_in_routes() -> Router<AppState> {
    Router::new()
        .route("/samlp/{app}", get(login::sso_get).post(login::sso_post))
        .route(
            "/login/continue",
            get(login::continue_get).post(login::continue_post),
        )
        .route(
            "/login/via/{connection}",
            get(login::via_get).post(login::via_post),
        )
        .route("/login/callback", get(login::callback))
        .route("/login/signout", get(login::signout))
}

/// What workloads and the cluster reach: credentials, delegation, the Pod webhook, metrics.
fn workload_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/delegation",
            post(issue::delegation).options(issue::delegation_preflight),
        )
        .route("/v1/credentials", get(credentials))
        .route("/admission/pods", post(admit_pod))
        .route("/metrics", get(metrics))
}

fn finish(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The router of a listener that serves everything: `--listen` when no `--public-listen` is
/// given (standalone mode's one address).
pub fn router(state: AppState) -> Router {
    finish(
        common_routes()
            .merge(sign_in_routes())
            .merge(workload_routes()),
        state,
    )
}

/// The router of `--listen` beside a `--public-listen`: the workload endpoints
/// (`/v1/credentials`, `/delegation`, `/admission/pods`), `/metrics`, health and the metadata;
/// no sign-in page.
pub fn internal_router(state: AppState) -> Router {
    finish(common_routes().merge(workload_routes()), state)
}

/// The router of `--public-listen`, what an Ingress exposes: the sign-in pages, the metadata and
/// health; every workload endpoint and `/metrics` answer 404.
pub fn public_router(state: AppState) -> Router {
    finish(common_routes().merge(sign_in_routes()), state)
}

/// Serves `app` over TLS on `listener` with the PEM certificate chain and key, within the
/// server's default [`Limits`], until `handle` shuts it down.
///
/// # Errors
/// An unusable certificate or key, or a failing listener.
pub async fn serve_tls(
    listener: std::net::TcpListener,
    app: Router,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    handle: axum_server::Handle<std::net::SocketAddr>,
) -> std::io::Result<()> {
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(cert_pem, key_pem).await?;
    serve_tls_config(listener, app, config, handle).await
}

/// Serves `app` over TLS with `config`, which [`reload_tls`] may swap while serving, within the
/// server's default [`Limits`].
///
/// # Errors
/// The listener failed.
pub async fn serve_tls_config(
    listener: std::net::TcpListener,
    app: Router,
    config: axum_server::tls_rustls::RustlsConfig,
    handle: axum_server::Handle<std::net::SocketAddr>,
) -> std::io::Result<()> {
    listener::serve(listener, app, Some(config), &Limits::server(), handle).await
}

/// A PEM certificate chain and its key.
pub type PemPair = (Vec<u8>, Vec<u8>);

/// Swaps the certificate `config` serves with whenever `updates` carries a new pair (a renewed
/// serving Secret): new handshakes use it, open connections are untouched. A pair that does not
/// load is logged and the previous one kept.
pub async fn reload_tls(
    config: axum_server::tls_rustls::RustlsConfig,
    mut updates: tokio::sync::watch::Receiver<Option<PemPair>>,
) {
    while updates.changed().await.is_ok() {
        let pair = updates.borrow_and_update().clone();
        if let Some((cert, key)) = pair {
            match config.reload_from_pem(cert, key).await {
                Ok(()) => tracing::info!("serving certificate reloaded"),
                Err(e) => {
                    tracing::warn!(error = %e, "new serving certificate refused; keeping the previous one")
                }
            }
        }
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.issuer.cache.sync().await;
    state
        .metrics
        .cache_entries
        .set(i64::try_from(state.issuer.cache.len()).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn metadata(
    State(state): State<AppState>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    let snapshot = state.store.current();
    let saml_app = snapshot
        .apps
        .get(&app)
        .ok_or_else(|| ApiError::not_found(format!("SAMLApp {app:?} does not exist")))?;
    let keys = state
        .keys
        .get(&app)
        .ok_or_else(|| ApiError::unavailable(format!("SAMLApp {app:?} has no signing key yet")))?;
    let xml = app_metadata(saml_app, &keys, &state.public_url)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/samlmetadata+xml; charset=utf-8",
        )],
        xml,
    )
        .into_response())
}

/// `POST /admission/pods`: the mutating admission webhook for Pods (served by the server, which
/// already holds the RoleMappings in its index and runs as several replicas).
async fn admit_pod(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let snapshot = state.store.current();
    let (review, message) = crate::webhook::review(&body, &snapshot, &state.injection)
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let outcome = if message.starts_with("injected") {
        tracing::info!(%message, "admission");
        "injected"
    } else if message.starts_with("already") {
        tracing::debug!(%message, "admission");
        "already"
    } else {
        tracing::debug!(%message, "admission");
        "skipped"
    };
    state
        .metrics
        .webhook_admissions
        .get_or_create(&vec![("outcome", outcome.to_owned())])
        .inc();
    Ok(Json(review).into_response())
}

#[derive(Debug, Deserialize)]
struct CredentialsQuery {
    role: Option<String>,
}

/// `GET /v1/credentials`: the AWS container-credentials protocol.
async fn credentials(
    State(state): State<AppState>,
    Query(query): Query<CredentialsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let result = async {
        let token = headers
            .get(header::AUTHORIZATION)
            .map(|v| {
                v.to_str().map_err(|_| {
                    ApiError::unauthorized("invalid_token", "Authorization header is not ASCII")
                })
            })
            .transpose()?
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v))
            .unwrap_or_default();
        let now = state.clock.now();
        let snapshot = state.store.current();
        let token = state
            .verifier
            .verify(token, &snapshot, Accept::ServiceAccounts, now)
            .await
            .inspect_err(|e| {
                state
                    .metrics
                    .token_rejections
                    .get_or_create(&vec![("reason", e.label().to_owned())])
                    .inc();
            })?;
        let session = state
            .issuer
            .for_token(
                &state,
                &snapshot,
                &token,
                None,
                query.role.as_deref(),
                None,
                now,
            )
            .await?;
        let c = &session.credentials;
        let expiration = c.expiration.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        Ok::<_, ApiError>(
            Json(ContainerAnswer {
                access_key_id: &c.access_key_id,
                account_id: c.account_id(),
                expiration: &expiration,
                secret_access_key: &c.secret_access_key,
                token: &c.session_token,
            })
            .into_response(),
        )
    }
    .await;
    match &result {
        // The common answer counts without building its labels.
        Ok(r) if r.status() == StatusCode::OK => {
            state.metrics.credentials_ok.inc();
        }
        _ => record(&state, "/v1/credentials", &result),
    }
    result
}

/// The container-credentials answer, serialised straight from the cached session.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerAnswer<'a> {
    access_key_id: &'a str,
    account_id: Option<&'a str>,
    expiration: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
}

fn record(state: &AppState, route: &'static str, result: &Result<Response, ApiError>) {
    let status = match result {
        Ok(r) => r.status(),
        Err(e) => {
            // The audit line of a refusal; descriptions never carry tokens or secrets.
            tracing::info!(route, status = e.status.as_u16(), error = e.error, description = %e.description, "refused");
            e.status
        }
    };
    state
        .metrics
        .http_responses
        .get_or_create(&vec![
            ("route", route.to_owned()),
            ("status", status.as_u16().to_string()),
        ])
        .inc();
}
