//! `rolegate agent`: the node-local credentials endpoint that SDKs in pods reach over plain
//! http on a link-local address. It forwards to `rolegate server` over TLS (verifying the
//! operator CA), caches per (token, role) until shortly before expiry, coalesces concurrent
//! misses, and keeps serving cached credentials while the server is away (unreachable, or
//! answering 5xx). A refusal (401, 403, any other 4xx but 408 and 429) is not an outage: it
//! drops the cached credentials and reaches the SDK as the server gave it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use jiff::Timestamp;
use moka::Expiry;
use moka::future::Cache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::credentials::refresh_margin;
use crate::server::{Clock, SystemClock};

/// Credentials in the container-credentials format.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCredentials {
    /// Access key ID.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token.
    pub token: String,
    /// Account of the role.
    #[serde(default)]
    pub account_id: Option<String>,
    /// Expiry, RFC 3339.
    pub expiration: Timestamp,
}

impl std::fmt::Debug for ContainerCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Cached {
    credentials: Arc<ContainerCredentials>,
    obtained: Timestamp,
    /// Set while stale credentials are served after a failed refresh: when to try again.
    retry_at: Option<Timestamp>,
}

/// Keeps an entry until its credentials expire (by the agent's clock when it was stored). Whether
/// it is still fresh, or due for a refresh, is decided on each read against the clock.
#[derive(Debug)]
struct UntilExpiry(Arc<dyn Clock>);

impl Expiry<(Vec<u8>, String), Cached> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &(Vec<u8>, String),
        value: &Cached,
        _at: Instant,
    ) -> Option<Duration> {
        let remaining = value
            .credentials
            .expiration
            .duration_since(self.0.now())
            .as_secs()
            .max(0);
        Some(Duration::from_secs(u64::try_from(remaining).unwrap_or(0)))
    }
}

impl Cached {
    /// Still usable at `now`.
    fn valid(&self, now: Timestamp) -> bool {
        now < self.credentials.expiration
    }

    /// Usable and not yet due for a refresh at `now`.
    fn fresh(&self, now: Timestamp) -> bool {
        let margin = refresh_margin(self.obtained, self.credentials.expiration);
        let margin = jiff::SignedDuration::try_from(margin).unwrap_or(jiff::SignedDuration::ZERO);
        now < self.credentials.expiration - margin
    }
}

/// An error answered to the SDK: the server's own answer, or why the server could not be asked.
#[derive(Debug, Clone)]
struct Upstream {
    status: StatusCode,
    body: serde_json::Value,
}

impl Upstream {
    /// The server refused the token or the role, rather than failing to answer: 401, 403 and
    /// the other client errors, except a timed-out (408) or throttled (429) request, which say
    /// nothing about the caller.
    fn is_refusal(&self) -> bool {
        self.status.is_client_error()
            && !matches!(
                self.status,
                StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
            )
    }
}

impl IntoResponse for Upstream {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// Options of `rolegate agent`.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Where SDKs reach the agent: one address or several (IPv4 and IPv6).
    pub listen: Vec<SocketAddr>,
    /// Base URL of `rolegate server`.
    pub server: String,
    /// PEM CA that signed the server's certificate; without it, https is refused.
    pub ca_file: Option<PathBuf>,
    /// What each listener allows a client.
    pub limits: crate::server::Limits,
}

/// The agent's shared state.
#[derive(Clone)]
pub struct Agent {
    http: Arc<std::sync::RwLock<reqwest::Client>>,
    server: String,
    cache: Cache<(Vec<u8>, String), Cached>,
    clock: Arc<dyn Clock>,
    registry: Arc<Registry>,
    hits: Counter,
    stale: Counter,
    misses: Counter,
    upstream_errors: Counter,
    refusals: Counter,
    connections_refused: Counter,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The CA file cannot be read or parsed.
    #[error("CA file {0}: {1}")]
    Ca(PathBuf, String),
    /// https without a CA, or another scheme.
    #[error("server {0:?}: {1}")]
    Server(String, &'static str),
    /// The listener failed.
    #[error("serving on {0}: {1}")]
    Serve(SocketAddr, std::io::Error),
}

/// An HTTP client for `server`, trusting only the certificates of `ca_pem` for https.
fn client(server: &str, ca_pem: Option<&[u8]>) -> Result<reqwest::Client, AgentError> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    match (server.starts_with("https://"), ca_pem) {
        (true, Some(pem)) => {
            let bundle = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| AgentError::Ca(PathBuf::from("(CA)"), e.to_string()))?;
            if bundle.is_empty() {
                return Err(AgentError::Ca(
                    PathBuf::from("(CA)"),
                    "no certificate in the bundle".into(),
                ));
            }
            builder = builder.tls_certs_only(bundle);
        }
        (true, None) => {
            return Err(AgentError::Server(
                server.into(),
                "https needs --ca-file (the operator CA)",
            ));
        }
        (false, _) if server.starts_with("http://") => {}
        (false, _) => {
            return Err(AgentError::Server(
                server.into(),
                "must be an http:// or https:// URL",
            ));
        }
    }
    builder.build().map_err(|e| {
        AgentError::Server(
            server.into(),
            if e.is_builder() {
                "cannot build an HTTP client"
            } else {
                "client error"
            },
        )
    })
}

impl Agent {
    /// An agent forwarding to `server`, trusting only `ca_pem` for https.
    ///
    /// # Errors
    /// An unusable CA, or an https server without one.
    pub fn new(server: &str, ca_pem: Option<&[u8]>) -> Result<Self, AgentError> {
        let http = client(server, ca_pem)?;
        let mut registry = Registry::with_prefix("rolegate_agent");
        let (hits, misses, upstream_errors, stale, refusals, connections_refused) = (
            Counter::default(),
            Counter::default(),
            Counter::default(),
            Counter::default(),
            Counter::default(),
            Counter::default(),
        );
        registry.register("cache_hits", "Requests served from the cache", hits.clone());
        registry.register(
            "stale_served",
            "Requests served cached credentials, due for refresh but still valid, because the server failed",
            stale.clone(),
        );
        registry.register(
            "cache_misses",
            "Requests forwarded to the server",
            misses.clone(),
        );
        registry.register(
            "upstream_errors",
            "Forwarded requests that failed",
            upstream_errors.clone(),
        );
        registry.register(
            "refusals_evicted",
            "Refreshes the server refused (401, 403, other 4xx): the cached credentials were dropped",
            refusals.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed because the listener was at its connection cap",
            connections_refused.clone(),
        );
        Ok(Self {
            http: Arc::new(std::sync::RwLock::new(http)),
            server: server.trim_end_matches('/').to_owned(),
            cache: Cache::builder()
                .max_capacity(100_000)
                .expire_after(UntilExpiry(Arc::new(SystemClock)))
                .build(),
            clock: Arc::new(SystemClock),
            registry: Arc::new(registry),
            hits,
            stale,
            misses,
            upstream_errors,
            refusals,
            connections_refused,
        })
    }

    /// The same agent reading `clock` (tests pin it); call before the first request.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.cache = Cache::builder()
            .max_capacity(100_000)
            .expire_after(UntilExpiry(Arc::clone(&clock)))
            .build();
        self.clock = clock;
        self
    }

    /// Trusts `ca_pem` (a bundle: every certificate in it) from the next request on; open
    /// connections are dropped with the old client.
    ///
    /// # Errors
    /// An unusable bundle; the previous one stays in use.
    pub fn set_ca(&self, ca_pem: &[u8]) -> Result<(), AgentError> {
        let http = client(&self.server, Some(ca_pem))?;
        *self
            .http
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = http;
        Ok(())
    }

    fn http(&self) -> reqwest::Client {
        self.http
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn fetch(&self, token: String, role: Option<String>) -> Result<Cached, Upstream> {
        self.misses.inc();
        let mut request = self
            .http()
            .get(format!("{}/v1/credentials", self.server))
            .header(header::AUTHORIZATION, token);
        if let Some(role) = &role {
            request = request.query(&[("role", role)]);
        }
        let unreachable = |e: &dyn std::fmt::Display| Upstream {
            status: StatusCode::BAD_GATEWAY,
            body: serde_json::json!({"error": "server_unreachable", "error_description": format!("rolegate server cannot be reached: {e}")}),
        };
        let response = request.send().await.map_err(|e| {
            self.upstream_errors.inc();
            unreachable(&e)
        })?;
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        if !status.is_success() {
            self.upstream_errors.inc();
            // The server answers OAuth-style JSON; something in between (a proxy, a listener
            // without the route) may not: the SDK still gets JSON it can print.
            let body = response
                .json::<serde_json::Value>()
                .await
                .ok()
                .filter(|b| b["error"].is_string())
                .unwrap_or_else(|| {
                    serde_json::json!({
                        "error": if status.is_server_error() { "server_error" } else { "invalid_request" },
                        "error_description": format!("rolegate server answered {status}"),
                    })
                });
            return Err(Upstream { status, body });
        }
        let body: serde_json::Value = response.json().await.map_err(|e| unreachable(&e))?;
        let credentials: ContainerCredentials =
            serde_json::from_value(body).map_err(|e| unreachable(&e))?;
        Ok(Cached {
            credentials: Arc::new(credentials),
            obtained: self.clock.now(),
            retry_at: None,
        })
    }

    /// Credentials for `token` and `role`: from the cache while fresh; from the server when
    /// missing or due for a refresh (concurrent misses share one request); when the server
    /// cannot be reached or fails a refresh (5xx), the cached credentials until they expire;
    /// when it refuses one (a 4xx such as 401 or 403), its refusal, with nothing left cached.
    async fn credentials(
        &self,
        token: &str,
        role: Option<String>,
    ) -> Result<Arc<ContainerCredentials>, Upstream> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
            .as_ref()
            .to_vec();
        let key = (digest, role.clone().unwrap_or_default());
        let now = self.clock.now();
        let previous = self.cache.get(&key).await;
        if let Some(hit) = &previous {
            if hit.fresh(now) {
                self.hits.inc();
                return Ok(Arc::clone(&hit.credentials));
            }
            if hit.valid(now) && hit.retry_at.is_some_and(|at| now < at) {
                self.stale.inc();
                return Ok(Arc::clone(&hit.credentials));
            }
            self.cache.invalidate(&key).await;
        }
        let error = match self
            .cache
            .try_get_with(key.clone(), self.fetch(token.to_owned(), role))
            .await
        {
            Ok(fetched) => return Ok(fetched.credentials),
            Err(error) => (*error).clone(),
        };
        let now = self.clock.now();
        match previous {
            Some(_) if error.is_refusal() => {
                // The entry was dropped before the refresh and is not put back: the next request
                // asks the server again and never gets these credentials.
                self.refusals.inc();
                tracing::info!(
                    status = error.status.as_u16(),
                    "the server refused a refresh; cached credentials dropped"
                );
                Err(error)
            }
            Some(old) if old.valid(now) => {
                // Serve what is cached until it expires; ask the server again in a while, not on
                // every request.
                self.stale.inc();
                tracing::warn!(error = %error.body, expiration = %old.credentials.expiration,
                    "refresh failed; serving cached credentials until they expire");
                let credentials = Arc::clone(&old.credentials);
                self.cache
                    .insert(
                        key,
                        Cached {
                            retry_at: Some(now + RETRY_AFTER_FAILURE),
                            ..old
                        },
                    )
                    .await;
                Ok(credentials)
            }
            Some(old) => {
                let mut answer = error;
                if let Some(description) = answer.body["error_description"].as_str() {
                    answer.body["error_description"] = serde_json::Value::String(format!(
                        "{description} (the cached credentials expired at {})",
                        old.credentials.expiration
                    ));
                }
                Err(answer)
            }
            None => Err(error),
        }
    }
}

/// How long stale credentials are served before the server is asked again.
const RETRY_AFTER_FAILURE: jiff::SignedDuration = jiff::SignedDuration::from_secs(10);

#[derive(Debug, Deserialize)]
struct RoleQuery {
    role: Option<String>,
}

async fn credentials(
    State(agent): State<Agent>,
    Query(query): Query<RoleQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
    else {
        return Upstream {
            status: StatusCode::UNAUTHORIZED,
            body: serde_json::json!({"error": "invalid_request", "error_description": "no token in the Authorization header; is AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE set?"}),
        }
        .into_response();
    };
    match agent.credentials(token, query.role).await {
        Ok(c) => Json(c.as_ref().clone()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The agent's router: `/v1/credentials`, `/healthz`, `/metrics`.
pub fn router(agent: Agent) -> Router {
    Router::new()
        .route("/v1/credentials", get(credentials))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|State(agent): State<Agent>| async move {
                let mut out = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut out, &agent.registry);
                out
            }),
        )
        .with_state(agent)
}

/// Runs the agent until SIGINT or SIGTERM.
///
/// # Errors
/// An unusable CA or server URL, or a listener that cannot be bound.
pub async fn run(options: AgentOptions) -> Result<(), AgentError> {
    let ca = match &options.ca_file {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| AgentError::Ca(path.clone(), e.to_string()))?)
        }
        None => None,
    };
    let agent = Agent::new(&options.server, ca.as_deref())?;
    if let (Some(path), Some(mut current)) = (options.ca_file.clone(), ca) {
        // The bundle is a mounted ConfigMap: the kubelet updates it in place when the operator
        // renews its CA. Re-read it every minute and trust the new bundle from then on.
        let agent = agent.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                match tokio::fs::read(&path).await {
                    Ok(pem) if pem != current => match agent.set_ca(&pem) {
                        Ok(()) => {
                            tracing::info!(path = %path.display(), "CA bundle reloaded");
                            current = pem;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "new CA bundle refused; keeping the previous one")
                        }
                    },
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot re-read the CA bundle")
                    }
                }
            }
        });
    }
    let limits = options
        .limits
        .clone()
        .counting(agent.connections_refused.clone());
    let handle = crate::server::listener::shutdown_on_signal();
    let mut listeners = Vec::new();
    for addr in options.listen.iter().copied() {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| AgentError::Serve(addr, e))?;
        listeners.push((addr, listener));
    }
    let mut servers = tokio::task::JoinSet::new();
    for (addr, listener) in listeners {
        tracing::info!(listen = %addr, server = %options.server, "agent serving");
        let (app, limits, handle) = (router(agent.clone()), limits.clone(), handle.clone());
        servers.spawn(async move {
            crate::server::listener::serve(listener, app, None, &limits, handle)
                .await
                .map_err(|e| AgentError::Serve(addr, e))
        });
    }
    while let Some(done) = servers.join_next().await {
        if let Ok(Err(e)) = done {
            handle.shutdown();
            return Err(e);
        }
    }
    Ok(())
}
