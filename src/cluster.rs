//! `rolegate server` in a cluster: the same router as standalone mode, fed by the watch index,
//! with service-account tokens checked by TokenReview. Stateless apart from caches, so several
//! replicas can run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;

use crate::aws::sdk::SdkSts;
use crate::credentials::CredentialCache;
use crate::idp::{KeyRing, keys_from_secrets};
use crate::metrics::Metrics;
use crate::server::listener::{serve as serve_on, shutdown_on_signal};
use crate::server::{AppState, Issuer, SystemClock, internal_router, public_router, router};
use crate::store::SharedSnapshot;
use crate::store::index::{Index, follow};
use crate::tokenreview::KubeTokenReviewer;
use crate::tokens::TokenVerifier;

/// A client for the cluster of the kubeconfig or the pod's service account, as
/// `Client::try_default`, that names itself in every request's `User-Agent`:
/// `rolegate/<version> (<component>; <POD_NAME, else pid-N>)`. API server audit logs then tell
/// the components, and a leader from its standby (same ServiceAccount), apart.
///
/// # Errors
/// No kubeconfig or in-cluster config.
pub async fn kube_client(component: &str) -> Result<Client, kube::Error> {
    let mut config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    let instance =
        std::env::var("POD_NAME").unwrap_or_else(|_| format!("pid-{}", std::process::id()));
    let agent = user_agent(component, &instance);
    if let Ok(value) = axum::http::HeaderValue::from_str(&agent) {
        config.headers.push((axum::http::header::USER_AGENT, value));
    }
    Client::try_from(config)
}

/// PURE: the `User-Agent` of [`kube_client`].
pub fn user_agent(component: &str, instance: &str) -> String {
    format!(
        "rolegate/{} ({component}; {instance})",
        env!("CARGO_PKG_VERSION")
    )
}

/// Options of `rolegate server`.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The cluster's name for the `rolegate-cluster` session tag.
    pub cluster_name: Option<String>,
    /// The STS region for IAMProviders without `region` (`--sts-region`).
    pub sts_region: Option<String>,
    /// How long a first request waits for a paced STS call (`--sts-max-wait-seconds`).
    pub sts_max_wait: Duration,
    /// The operator namespace, where the signing Secrets are.
    pub namespace: String,
    /// Listen address: everything, or without the sign-in pages when `public_listen` is set.
    pub listen: SocketAddr,
    /// Where only the sign-in pages, the metadata and health are served (plain http, for an
    /// Ingress).
    pub public_listen: Option<SocketAddr>,
    /// What each listener allows a client.
    pub limits: crate::server::Limits,
    /// Base URL the server is reached at.
    pub public_url: String,
    /// Proxies whose `X-Forwarded-For` names a sign-in's client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a TokenReview outcome is reused.
    pub review_ttl: Duration,
    /// Where the serving certificate comes from; `None` serves plain http.
    pub tls: Option<TlsSource>,
    /// The credentials URI the Pod webhook injects (where the node agent listens).
    pub credentials_uri: String,
    /// With `tls`: serve TLS here (node agents, the admission webhook) and plain http on
    /// `listen` (probes, metrics). Without it, `listen` serves TLS.
    pub tls_listen: Option<SocketAddr>,
}

/// Where the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files, read once.
    Files(std::path::PathBuf, std::path::PathBuf),
    /// A `kubernetes.io/tls` Secret in the operator namespace, followed through the watch index:
    /// a renewed certificate is served from the next handshake on, with no restart.
    Secret(String),
}

/// PURE: the `tls.crt` and `tls.key` of Secret `name` in `namespace`, if both are there.
pub fn serving_pair(
    snapshot: &crate::store::Snapshot,
    namespace: &str,
    name: &str,
) -> Option<crate::server::PemPair> {
    let secret = snapshot
        .secrets
        .get(&(namespace.to_owned(), name.to_owned()))?;
    let cert = crate::store::secret_value(secret, "tls.crt")?;
    let key = crate::store::secret_value(secret, "tls.key")?;
    Some((cert.to_vec(), key.to_vec()))
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No kubeconfig or in-cluster config.
    #[error("cannot reach Kubernetes: {0}")]
    Client(#[from] kube::Error),
    /// The listener failed.
    #[error("serving on {0}: {1}")]
    Serve(SocketAddr, std::io::Error),
}

/// Runs the server until SIGINT or SIGTERM.
///
/// # Errors
/// No cluster, or a listener that cannot be bound.
pub async fn serve(options: ServerOptions) -> Result<(), ServerError> {
    let client = kube_client("server").await?;
    let store = Arc::new(SharedSnapshot::default());
    let cache = CredentialCache::default();
    let keys = Arc::new(KeyRing::default());
    let ready = Arc::new(AtomicBool::new(false));
    let index = Index::start(&client, &options.namespace);
    let (tls_tx, mut tls_rx) = tokio::sync::watch::channel(None);
    let login = Arc::new(crate::login::LoginState::new(
        options.namespace.clone(),
        None,
    ));
    login.set_trusted_proxies(crate::login::client::TrustedProxies::new(
        options.trusted_proxies.clone(),
    ));
    {
        let (store, cache, keys, ready, namespace, login) = (
            Arc::clone(&store),
            cache.clone(),
            Arc::clone(&keys),
            Arc::clone(&ready),
            options.namespace.clone(),
            Arc::clone(&login),
        );
        let tls_secret = match &options.tls {
            Some(TlsSource::Secret(name)) => Some(name.clone()),
            _ => None,
        };
        tokio::spawn(follow(index, Duration::from_millis(200), move |snapshot| {
            if let Some(name) = &tls_secret {
                let pair = serving_pair(&snapshot, &namespace, name);
                tls_tx.send_if_modified(|current| {
                    let changed = pair.is_some() && *current != pair;
                    if changed {
                        current.clone_from(&pair);
                    }
                    changed
                });
            }
            keys.replace(keys_from_secrets(&snapshot, &namespace));
            login.set_key(crate::login::key_from_secrets(&snapshot, &namespace));
            crate::server::replace_snapshot(&store, &cache, snapshot);
            ready.store(true, Ordering::Release);
        }));
    }
    let reviewer = Arc::new(KubeTokenReviewer::new(client, options.review_ttl));
    let state = AppState {
        store,
        keys,
        verifier: Arc::new(
            TokenVerifier::new(std::path::PathBuf::from("/")).with_token_review(reviewer),
        ),
        issuer: Arc::new(Issuer {
            sts: Arc::new(SdkSts::in_region(None, options.sts_region.as_deref()).await),
            cache,
            cluster: options.cluster_name.clone(),
            pacer: crate::server::pacing::StsPacer::new(crate::pacing::PacerSettings {
                max_wait: options.sts_max_wait,
                ..crate::pacing::PacerSettings::default()
            }),
        }),
        metrics: Arc::new(Metrics::new()),
        clock: Arc::new(SystemClock),
        public_url: options.public_url.clone(),
        ready,
        login,
        injection: Arc::new(crate::webhook::Injection {
            credentials_uri: options.credentials_uri.clone(),
            ..crate::webhook::Injection::default()
        }),
    };
    let bind = |addr: SocketAddr| {
        std::net::TcpListener::bind(addr).map_err(|e| ServerError::Serve(addr, e))
    };
    let tls_addr = options
        .tls
        .as_ref()
        .map(|_| options.tls_listen.unwrap_or(options.listen));
    // Every address is bound before anything is served, so a bad one fails the start.
    let tls_listener = tls_addr.map(bind).transpose()?;
    let plain_listener = match (&options.tls, options.tls_listen) {
        (None, _) | (Some(_), Some(_)) => Some((options.listen, bind(options.listen)?)),
        (Some(_), None) => None,
    };
    let public_listener = options
        .public_listen
        .map(|addr| bind(addr).map(|l| (addr, l)))
        .transpose()?;
    // The sign-in pages move to the public listener when there is one.
    let app = match options.public_listen {
        Some(_) => internal_router(state.clone()),
        None => router(state.clone()),
    };
    let limits_for = |listener| options.limits.for_listener(&state.metrics, listener);
    let handle = shutdown_on_signal();
    let mut servers = tokio::task::JoinSet::new();
    tracing::info!(public_url = %options.public_url, "serving");
    if let Some((addr, listener)) = public_listener {
        tracing::info!(%addr, "serving the sign-in pages and the metadata (public)");
        let (app, limits, handle) = (
            public_router(state.clone()),
            limits_for("public"),
            handle.clone(),
        );
        servers.spawn(async move {
            serve_on(listener, app, None, &limits, handle)
                .await
                .map_err(|e| ServerError::Serve(addr, e))
        });
    }
    if let Some((addr, listener)) = plain_listener {
        tracing::info!(%addr, "serving plain http");
        let (app, limits, handle) = (app.clone(), limits_for("http"), handle.clone());
        servers.spawn(async move {
            serve_on(listener, app, None, &limits, handle)
                .await
                .map_err(|e| ServerError::Serve(addr, e))
        });
    }
    if let (Some(source), Some(tls_addr), Some(listener)) = (&options.tls, tls_addr, tls_listener) {
        let tls_fail = move |e| ServerError::Serve(tls_addr, e);
        let (cert, key) = match source {
            TlsSource::Files(cert, key) => (
                std::fs::read(cert).map_err(tls_fail)?,
                std::fs::read(key).map_err(tls_fail)?,
            ),
            TlsSource::Secret(name) => {
                tracing::info!(secret = %name, "waiting for the serving certificate");
                let first = tls_rx
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| tls_fail(std::io::Error::other("the watch index stopped")))?
                    .clone();
                first.ok_or_else(|| tls_fail(std::io::Error::other("no serving certificate")))?
            }
        };
        let config = axum_server::tls_rustls::RustlsConfig::from_pem(cert, key)
            .await
            .map_err(tls_fail)?;
        tokio::spawn(crate::server::reload_tls(config.clone(), tls_rx));
        tracing::info!(addr = %tls_addr, "serving TLS");
        let (limits, handle) = (limits_for("tls"), handle.clone());
        servers.spawn(async move {
            serve_on(listener, app, Some(config), &limits, handle)
                .await
                .map_err(tls_fail)
        });
    }
    // The first listener to fail stops the server; on a signal they all drain and end.
    while let Some(done) = servers.join_next().await {
        if let Ok(Err(e)) = done {
            handle.shutdown();
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    #[test]
    fn the_user_agent_names_the_component_and_the_replica() {
        let agent = super::user_agent("controller", "rolegate-controller-7d4b9c-x2x");
        assert_eq!(
            agent,
            format!(
                "rolegate/{} (controller; rolegate-controller-7d4b9c-x2x)",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(axum::http::HeaderValue::from_str(&agent).is_ok());
    }
}
