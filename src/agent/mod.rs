//! `rolegate agent`: the node-local credentials endpoint that SDKs in pods reach over plain
//! http on a link-local address. It forwards to `rolegate server` over TLS (verifying the
//! operator CA), caches per (token, role) until shortly before expiry, coalesces concurrent
//! misses, and keeps serving cached credentials while the server is away (unreachable, or
//! answering 5xx). A refusal (401, 403, any other 4xx but 408 and 429) is not an outage: it
//! drops the cached credentials and reaches the SDK as the server gave it.

mod guard;
pub mod node;
pub mod routing;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use jiff::Timestamp;
use moka::Expiry;
use moka::future::Cache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

pub use guard::{ClientLimiter, HostPolicy, RateLimit};
pub use routing::{FixedEndpoints, Resolve, SystemResolver};

use crate::credentials::refresh_margin;
use crate::server::{Clock, SystemClock};

/// The cache key: SHA-256 over the token and the role asked for, so that the agent never keeps
/// a token, and a lookup allocates nothing.
type Key = [u8; 32];

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
    /// `credentials` as the JSON body SDKs get, serialised once when they arrive.
    body: Bytes,
    obtained: Timestamp,
    /// Set while stale credentials are served after a failed refresh: when to try again.
    retry_at: Option<Timestamp>,
}

/// Keeps an entry until its credentials expire (by the agent's clock when it was stored). Whether
/// it is still fresh, or due for a refresh, is decided on each read against the clock.
#[derive(Debug)]
struct UntilExpiry(Arc<dyn Clock>);

impl Expiry<Key, Cached> for UntilExpiry {
    fn expire_after_create(&self, _key: &Key, value: &Cached, _at: Instant) -> Option<Duration> {
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
    /// `NAME:PORT` of a headless Service over the server's replicas, to route subjects by.
    pub server_endpoints_dns: Option<String>,
    /// PEM CA that signed the server's certificate; without it, https is refused.
    pub ca_file: Option<PathBuf>,
    /// What each listener allows a client.
    pub limits: crate::server::Limits,
    /// Names besides the listen addresses that a request's `Host` may carry.
    pub allowed_hosts: Vec<String>,
    /// Where `/metrics` and `/healthz` are also served, without `/v1/credentials`.
    pub metrics_listen: Option<SocketAddr>,
    /// Per-client-address rate of `/v1/credentials`; `None` turns it off.
    pub rate_limit: Option<RateLimit>,
    /// Requests to the server in flight at once; further misses wait for a slot.
    pub max_concurrent_refreshes: usize,
    /// Remove this taint from `node` once the agent serves (the node readiness signal).
    pub startup_taint: Option<node::StartupTaint>,
}

/// One server replica: its address, and a client that connects there while keeping the server
/// URL's host name for TLS and `Host`.
#[derive(Debug, Clone)]
struct Route {
    addr: SocketAddr,
    base: String,
    client: reqwest::Client,
}

/// The agent's shared state.
#[derive(Clone)]
pub struct Agent {
    http: Arc<std::sync::RwLock<reqwest::Client>>,
    server: String,
    /// The CA bundle the server is verified with, kept to build the replicas' clients.
    ca: Arc<std::sync::RwLock<Option<Vec<u8>>>>,
    /// Where the replicas are, when the agent routes subjects to them (`--server-endpoints-dns`).
    resolver: Option<Arc<dyn Resolve>>,
    /// The replicas last resolved; empty: every request goes to `server`.
    routes: Arc<std::sync::RwLock<Vec<Route>>>,
    failovers: Counter,
    cache: Cache<Key, Cached>,
    clock: Arc<dyn Clock>,
    registry: Arc<Registry>,
    hosts: Arc<HostPolicy>,
    limiter: Option<ClientLimiter>,
    refreshes: Arc<tokio::sync::Semaphore>,
    hits: Counter,
    stale: Counter,
    misses: Counter,
    upstream_errors: Counter,
    refusals: Counter,
    connections_refused: Counter,
    wrong_host: Counter,
    rate_limited: Counter,
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
    /// Another process already serves the address: on EKS, the Pod Identity agent binds
    /// `169.254.170.23:80` and `[fd00:ec2::23]:80` on every node.
    #[error(
        "{0} is already in use on this node: is the EKS Pod Identity agent (or another credentials agent) running here? \
         Give rolegate another address or port (the chart's agent.address and agent.port, e.g. agent.port=2703 beside EKS Pod Identity; the webhook injects the URI that follows them)"
    )]
    InUse(SocketAddr),
}

/// An HTTP client for `server`, trusting only the certificates of `ca_pem` for https.
fn client(server: &str, ca_pem: Option<&[u8]>) -> Result<reqwest::Client, AgentError> {
    client_with(server, ca_pem, |b| b)
}

/// A client and base URL for the replica at `addr`: the connection goes to `addr`, while TLS
/// (SNI, the certificate's name) and `Host` keep `server`'s host name.
fn route(server: &str, ca_pem: Option<&[u8]>, addr: SocketAddr) -> Result<Route, AgentError> {
    let bad = |what| AgentError::Server(server.into(), what);
    let mut url = reqwest::Url::parse(server).map_err(|_| bad("not a URL"))?;
    let host = url.host_str().ok_or_else(|| bad("has no host"))?.to_owned();
    url.set_port(Some(addr.port()))
        .map_err(|()| bad("cannot carry a port"))?;
    let by_name = host.trim_matches(['[', ']']).parse::<IpAddr>().is_err();
    if !by_name {
        url.set_ip_host(addr.ip())
            .map_err(|()| bad("cannot carry an address"))?;
    }
    let client = client_with(server, ca_pem, |b| {
        if by_name { b.resolve(&host, addr) } else { b }
    })?;
    Ok(Route {
        addr,
        base: url.as_str().trim_end_matches('/').to_owned(),
        client,
    })
}

fn client_with(
    server: &str,
    ca_pem: Option<&[u8]>,
    extra: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, AgentError> {
    // A replica that is gone fails fast, so the next one is asked within the SDK's patience.
    let mut builder = extra(
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(2)),
    );
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
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let hits = counter(
            &mut registry,
            "cache_hits",
            "Requests served from the cache",
        );
        let stale = counter(
            &mut registry,
            "stale_served",
            "Requests served cached credentials, due for refresh but still valid, because the server failed",
        );
        let misses = counter(
            &mut registry,
            "cache_misses",
            "Requests forwarded to the server",
        );
        let upstream_errors = counter(
            &mut registry,
            "upstream_errors",
            "Forwarded requests that failed",
        );
        let refusals = counter(
            &mut registry,
            "refusals_evicted",
            "Refreshes the server refused (401, 403, other 4xx): the cached credentials were dropped",
        );
        let connections_refused = counter(
            &mut registry,
            "connections_refused",
            "Connections closed because the listener was at its connection cap",
        );
        let wrong_host = counter(
            &mut registry,
            "wrong_host",
            "Requests refused (403) because their Host is not one of the agent's addresses (DNS rebinding)",
        );
        let rate_limited = counter(
            &mut registry,
            "rate_limited",
            "Requests refused (429) because their client address was over its rate",
        );
        let failovers = counter(
            &mut registry,
            "server_failovers",
            "Requests passed to the next server replica because the one a subject hashes to failed",
        );
        Ok(Self {
            http: Arc::new(std::sync::RwLock::new(http)),
            server: server.trim_end_matches('/').to_owned(),
            ca: Arc::new(std::sync::RwLock::new(ca_pem.map(<[u8]>::to_vec))),
            resolver: None,
            routes: Arc::default(),
            failovers,
            cache: Cache::builder()
                .max_capacity(100_000)
                .expire_after(UntilExpiry(Arc::new(SystemClock)))
                .build(),
            clock: Arc::new(SystemClock),
            registry: Arc::new(registry),
            hosts: Arc::new(HostPolicy::default()),
            limiter: Some(ClientLimiter::new(RateLimit::default())),
            refreshes: Arc::new(tokio::sync::Semaphore::new(usize::from(
                DEFAULT_CONCURRENT_REFRESHES,
            ))),
            hits,
            stale,
            misses,
            upstream_errors,
            refusals,
            connections_refused,
            wrong_host,
            rate_limited,
        })
    }

    /// Answers only requests whose `Host` `hosts` allows (before: any IP literal).
    #[must_use]
    pub fn with_hosts(mut self, hosts: HostPolicy) -> Self {
        self.hosts = Arc::new(hosts);
        self
    }

    /// Limits each client address to `limit` (`None`: no limit). The default is
    /// [`RateLimit::default`].
    #[must_use]
    pub fn with_rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.limiter = limit.map(ClientLimiter::new);
        self
    }

    /// At most `slots` requests to the server in flight at once (at least one).
    #[must_use]
    pub fn with_max_concurrent_refreshes(mut self, slots: usize) -> Self {
        self.refreshes = Arc::new(tokio::sync::Semaphore::new(
            slots.clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        ));
        self
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
        let routes = self
            .routes()
            .iter()
            .map(|r| route(&self.server, Some(ca_pem), r.addr))
            .collect::<Result<Vec<_>, _>>()?;
        *self
            .ca
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ca_pem.to_vec());
        *self
            .routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = routes;
        *self
            .http
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = http;
        Ok(())
    }

    /// Routes each subject to one server replica of those `resolver` finds (rendezvous
    /// hashing), falling back to the next on failure; [`Self::refresh_endpoints`] resolves them.
    #[must_use]
    pub fn with_endpoints(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Resolves the replicas again. A failed or empty answer keeps the previous ones; replicas
    /// still there keep their clients (and open connections).
    pub async fn refresh_endpoints(&self) {
        let Some(resolver) = &self.resolver else {
            return;
        };
        let addrs = match resolver.resolve().await {
            Ok(addrs) if !addrs.is_empty() => addrs,
            Ok(_) => {
                tracing::warn!("no server replica resolved; keeping the previous ones");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot resolve the server replicas; keeping the previous ones");
                return;
            }
        };
        let current = self.routes();
        let ca = self
            .ca
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut routes = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if let Some(existing) = current.iter().find(|r| r.addr == addr) {
                routes.push(existing.clone());
                continue;
            }
            match route(&self.server, ca.as_deref(), addr) {
                Ok(r) => routes.push(r),
                Err(e) => tracing::warn!(%addr, error = %e, "cannot reach this replica"),
            }
        }
        if routes
            .iter()
            .map(|r| r.addr)
            .ne(current.iter().map(|r| r.addr))
        {
            tracing::info!(replicas = ?routes.iter().map(|r| r.addr).collect::<Vec<_>>(), "server replicas");
        }
        *self
            .routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = routes;
    }

    fn routes(&self) -> Vec<Route> {
        self.routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Where to ask for `token` and `role`, in order: the replicas in the subject's rendezvous
    /// order, then the server URL itself (the Service), last.
    fn candidates(&self, token: &str, role: Option<&str>) -> Vec<(String, reqwest::Client)> {
        let routes = self.routes();
        let mut out = Vec::with_capacity(routes.len() + 1);
        if !routes.is_empty() {
            let key = routing::routing_key(token, role);
            let addrs: Vec<SocketAddr> = routes.iter().map(|r| r.addr).collect();
            for addr in routing::rendezvous_order(&key, &addrs) {
                if let Some(r) = routes.iter().find(|r| r.addr == addr) {
                    out.push((r.base.clone(), r.client.clone()));
                }
            }
        }
        out.push((self.server.clone(), self.http()));
        out
    }

    fn http(&self) -> reqwest::Client {
        self.http
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn fetch(&self, token: String, role: Option<String>) -> Result<Cached, Upstream> {
        self.misses.inc();
        // A node full of pods starting at once must not open a connection each: misses wait
        // here for a slot (the request's own timeout bounds the wait).
        let Ok(_slot) = self.refreshes.acquire().await else {
            return Err(Upstream {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: serde_json::json!({"error": "server_error", "error_description": "the agent is shutting down"}),
            });
        };
        let unreachable = |e: &dyn std::fmt::Display| Upstream {
            status: StatusCode::BAD_GATEWAY,
            body: serde_json::json!({"error": "server_unreachable", "error_description": format!("rolegate server cannot be reached: {e}")}),
        };
        let candidates = self.candidates(&token, role.as_deref());
        let last = candidates.len().saturating_sub(1);
        let mut answer = None;
        for (i, (base, http)) in candidates.into_iter().enumerate() {
            if i > 0 {
                self.failovers.inc();
            }
            let mut request = http
                .get(format!("{base}/v1/credentials"))
                .header(header::AUTHORIZATION, &token);
            if let Some(role) = &role {
                request = request.query(&[("role", role)]);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    self.upstream_errors.inc();
                    if i == last {
                        return Err(unreachable(&e));
                    }
                    tracing::warn!(server = %base, error = %e, "server replica unreachable; asking the next");
                    continue;
                }
            };
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            // A 503 with Retry-After is STS throttling, paced by that replica: another
            // replica would only add to what STS refuses.
            let paced = status == StatusCode::SERVICE_UNAVAILABLE
                && response.headers().contains_key(header::RETRY_AFTER);
            if status.is_server_error() && !paced && i < last {
                self.upstream_errors.inc();
                tracing::warn!(server = %base, %status, "server replica failed; asking the next");
                continue;
            }
            answer = Some(response);
            break;
        }
        let Some(response) = answer else {
            return Err(unreachable(&"no server to ask"));
        };
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
        let body = Bytes::from(serde_json::to_vec(&credentials).map_err(|e| unreachable(&e))?);
        Ok(Cached {
            credentials: Arc::new(credentials),
            body,
            obtained: self.clock.now(),
            retry_at: None,
        })
    }

    /// Credentials for `token` and `role`: from the cache while fresh; from the server when
    /// missing or due for a refresh (concurrent misses share one request); when the server
    /// cannot be reached or fails a refresh (5xx), the cached credentials until they expire;
    /// when it refuses one (a 4xx such as 401 or 403), its refusal, with nothing left cached.
    async fn credentials(&self, token: &str, role: Option<String>) -> Result<Bytes, Upstream> {
        let key = cache_key(token, role.as_deref());
        let now = self.clock.now();
        let previous = self.cache.get(&key).await;
        if let Some(hit) = &previous {
            if hit.fresh(now) {
                self.hits.inc();
                return Ok(hit.body.clone());
            }
            if hit.valid(now) && hit.retry_at.is_some_and(|at| now < at) {
                self.stale.inc();
                return Ok(hit.body.clone());
            }
            self.cache.invalidate(&key).await;
        }
        let error = match self
            .cache
            .try_get_with(key, self.fetch(token.to_owned(), role))
            .await
        {
            Ok(fetched) => return Ok(fetched.body),
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
                let body = old.body.clone();
                self.cache
                    .insert(
                        key,
                        Cached {
                            retry_at: Some(now + RETRY_AFTER_FAILURE),
                            ..old
                        },
                    )
                    .await;
                Ok(body)
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

/// Requests to the server in flight at once, by default.
pub const DEFAULT_CONCURRENT_REFRESHES: u16 = 32;

fn cache_key(token: &str, role: Option<&str>) -> Key {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(token.as_bytes());
    // A token never holds a NUL; the role follows it unambiguously, absent or empty alike.
    context.update(&[0]);
    context.update(role.unwrap_or_default().as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

#[derive(Debug, Deserialize)]
struct RoleQuery {
    role: Option<String>,
}

fn refused(status: StatusCode, error: &str, description: String) -> Response {
    Upstream {
        status,
        body: serde_json::json!({"error": error, "error_description": description}),
    }
    .into_response()
}

/// The caller's address, when the listener recorded it (`ConnectInfo`); a router driven
/// without a listener (tests) has none.
struct ClientAddress(Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

async fn credentials(
    State(agent): State<Arc<Agent>>,
    ClientAddress(client): ClientAddress,
    Query(query): Query<RoleQuery>,
    headers: HeaderMap,
) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if !agent.hosts.allows(host) {
        agent.wrong_host.inc();
        let shown: String = host.unwrap_or("(none)").chars().take(100).collect();
        return refused(
            StatusCode::FORBIDDEN,
            "invalid_request",
            format!(
                "Host {shown:?} is not an address of this agent; call the URI in AWS_CONTAINER_CREDENTIALS_FULL_URI"
            ),
        );
    }
    if let Some(limiter) = &agent.limiter {
        let address = client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        if let Err(wait) = limiter.check(address) {
            agent.rate_limited.inc();
            let seconds = wait.as_secs_f64().ceil().max(1.0);
            let mut response = refused(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                format!("too many credential requests from {address}; retry in {seconds} s"),
            );
            if let Ok(value) = HeaderValue::from_str(&format!("{seconds}")) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
    }
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
    else {
        return refused(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "no token in the Authorization header; is AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE set?"
                .into(),
        );
    };
    match agent.credentials(token, query.role).await {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The agent's router: `/v1/credentials`, `/healthz`, `/metrics`.
pub fn router(agent: Agent) -> Router {
    observability(
        Router::new().route("/v1/credentials", get(credentials)),
        agent,
    )
}

/// `/healthz` and `/metrics` only: what the agent serves on `--metrics-listen`.
pub fn metrics_router(agent: Agent) -> Router {
    observability(Router::new(), agent)
}

fn observability(routes: Router<Arc<Agent>>, agent: Agent) -> Router {
    routes
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|State(agent): State<Arc<Agent>>| async move {
                let mut out = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut out, &agent.registry);
                out
            }),
        )
        // Shared behind one Arc: a request clones one pointer, not every field.
        .with_state(Arc::new(agent))
}

/// Binds every listen address. An IPv6 address the node cannot have (an IPv4-only node: no
/// IPv6 at all, or not that address) is skipped with a warning as long as another address
/// binds; every other failure stops the agent.
fn bind_all(listen: &[SocketAddr]) -> Result<Vec<(SocketAddr, std::net::TcpListener)>, AgentError> {
    let mut bound = Vec::new();
    let mut skipped = Vec::new();
    for addr in listen.iter().copied() {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => bound.push((addr, listener)),
            Err(e) if addr.is_ipv6() && ipv6_unavailable(&e) => skipped.push((addr, e)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(AgentError::InUse(addr));
            }
            Err(e) => return Err(AgentError::Serve(addr, e)),
        }
    }
    if bound.is_empty() && !skipped.is_empty() {
        let (addr, e) = skipped.swap_remove(0);
        return Err(AgentError::Serve(addr, e));
    }
    for (addr, e) in skipped {
        tracing::warn!(listen = %addr, error = %e,
            "this node cannot serve this IPv6 address (IPv4-only?); serving the other addresses");
    }
    Ok(bound)
}

/// The errors of binding an IPv6 address on a node without IPv6 or without that address.
fn ipv6_unavailable(e: &std::io::Error) -> bool {
    // EADDRNOTAVAIL (99): not an address of this node; EAFNOSUPPORT (97): no IPv6 at all.
    e.kind() == std::io::ErrorKind::AddrNotAvailable || matches!(e.raw_os_error(), Some(97 | 99))
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
    let listeners = bind_all(&options.listen)?;
    let bound: Vec<SocketAddr> = listeners
        .iter()
        .map(|(addr, l)| l.local_addr().unwrap_or(*addr))
        .collect();
    let agent = Agent::new(&options.server, ca.as_deref())?
        .with_hosts(HostPolicy::for_listeners(&bound, &options.allowed_hosts))
        .with_rate_limit(options.rate_limit)
        .with_max_concurrent_refreshes(options.max_concurrent_refreshes);
    let agent = match &options.server_endpoints_dns {
        Some(name) => {
            let agent = agent.with_endpoints(Arc::new(SystemResolver(name.clone())));
            agent.refresh_endpoints().await;
            let every = agent.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    every.refresh_endpoints().await;
                }
            });
            agent
        }
        None => agent,
    };
    if let Some(limiter) = agent.limiter.clone() {
        // Addresses of pods long gone are forgotten, so the limiter's memory follows the node's
        // live pods.
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                limiter.forget_idle();
            }
        });
    }
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
    let mut servers = tokio::task::JoinSet::new();
    if let Some(addr) = options.metrics_listen {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| AgentError::Serve(addr, e))?;
        tracing::info!(listen = %addr, "agent metrics serving");
        let (app, limits, handle) = (
            metrics_router(agent.clone()),
            limits.clone(),
            handle.clone(),
        );
        servers.spawn(async move {
            crate::server::listener::serve(listener, app, None, &limits, handle)
                .await
                .map_err(|e| AgentError::Serve(addr, e))
        });
    }
    for (addr, listener) in listeners {
        tracing::info!(listen = %addr, server = %options.server, "agent serving");
        let (app, limits, handle) = (router(agent.clone()), limits.clone(), handle.clone());
        servers.spawn(async move {
            crate::server::listener::serve(listener, app, None, &limits, handle)
                .await
                .map_err(|e| AgentError::Serve(addr, e))
        });
    }
    if let Some(taint) = options.startup_taint.clone() {
        // The listeners are bound and serving: pods may now be scheduled here.
        tokio::spawn(node::remove_startup_taint(taint));
    }
    while let Some(done) = servers.join_next().await {
        if let Ok(Err(e)) = done {
            handle.shutdown();
            return Err(e);
        }
    }
    Ok(())
}
